"""Run the quality checks: the one entry point of the Airflow DAG and of ``aqi check``.

:func:`run_checks` validates the suites of :mod:`expectations.suites` against the warehouse
with one GX Checkpoint per group (``raw``, ``gold``), builds Data Docs under
``AQ_HOME/gx_docs`` and returns a :class:`~expectations.report.CheckReport` whose ``text()``
names every failed expectation. :func:`require_checks` does the same and raises
:class:`~expectations.report.ExpectationsFailed` when something failed.

Why a File Data Context (``AQ_HOME/gx``) rather than an ephemeral one: the validation results
are kept, so Data Docs show the recent history of every table (when did this start failing?),
and a run of one group does not erase the other's latest results from the docs. What is
persisted is rebuilt from code on every run (suites, assets, validation definitions,
checkpoints are added-or-updated), so the directory is a cache, never a second source of
truth; the newest :data:`KEEP_RESULTS_PER_SUITE` results per table are kept. The database URL
is never written there: the datasource holds ``${AQ_GX_DATABASE_URL}``, which GX substitutes
from the context's runtime environment (in memory) when it connects. A lock under
``AQ_HOME/run`` serialises runs (the DAG and a person may check at the same time).

Before GX is even imported (it takes seconds), the tables are looked up with one query, so a
warehouse that is not built yet, or not reachable, ends in one line
(:class:`ChecksUnavailable`), not a traceback.

The raw gate judges new data: its new-rows suite reads the rows loaded since the gate last
passed (``raw.check_watermarks``), or, on request (``since``), the whole table or the rows
loaded since a given time. When every raw expectation passes, the mark moves to the earliest
start of any transaction open when the run began (rows are stamped at insert but seen at
commit, so no row committed later is stamped before it; dbt's raw watermark works the same
way). A failed run leaves the mark, so the next run judges the same rows and more: the gate
stays shut until the data or the decision changes (``aqi check --suite raw --since TIME``).
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from aqi.config import Settings, mask_url
from aqi.connections import database_url
from aqi.errors import AqiError, first_line
from aqi.migrations import migrate
from expectations.reference import GROUPS, RAW_TABLE, checked_tables
from expectations.report import CheckReport, ExpectationsFailed, Outcome, outcome_from_result

if TYPE_CHECKING:
    from expectations.suites import TableSuite

__all__ = [
    "SINCE_LAST_PASS",
    "SUITES",
    "WHOLE_TABLE",
    "CheckReport",
    "ChecksUnavailable",
    "ExpectationsFailed",
    "RawWindow",
    "require_checks",
    "run_checks",
]

Echo = Callable[[str], None]

#: the groups of checks a caller may ask for (``aqi check --suite``, the DAG's gates)
SUITES: tuple[str, ...] = GROUPS
#: GX names; the datasource's URL is this runtime variable, never the URL itself
DATASOURCE = "warehouse"
URL_VARIABLE = "AQ_GX_DATABASE_URL"
BATCH_DEFINITION = "whole_table"
DOCS_SITE = "aq_gx_docs"
#: validation results kept per table: the DAG checks every 15 minutes, so about 12 hours;
#: the Data Docs index reads every kept result on each run, so more costs time
KEEP_RESULTS_PER_SUITE = 50
#: SUMMARY gives counts and example values; the LIMIT of the example query
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 10}
#: rows fetched to illustrate a failed custom-SQL expectation
EXAMPLE_ROWS = 3
#: ``since`` of run_checks: the rows loaded since the raw gate last passed (the default) ...
SINCE_LAST_PASS = "last-pass"
#: ... or every row of raw
WHOLE_TABLE = "all"
#: the earliest start of a transaction open now (or now): rows committed later are stamped
#: (loaded_at, a clock_timestamp() default) at or after it
_HORIZON = """
select least(clock_timestamp(), coalesce((
    select min(xact_start) from pg_stat_activity
    where pid <> pg_backend_pid() and datname = current_database() and xact_start is not null
), clock_timestamp()))
"""
#: how to create each group's tables when they are missing
_BUILD_HINTS = {
    "raw": "`aqi db migrate` creates the raw table",
    "gold": "`aqi dbt build` builds gold",
}


class ChecksUnavailable(AqiError):
    """The checks could not run: warehouse unreachable, tables missing, or GX itself failed."""


@dataclass(frozen=True)
class RawWindow:
    """The raw rows the new-rows suite judges: loaded at or after ``loaded_from`` (None: all).

    ``horizon`` is where the next run starts if this one passes; ``why`` says how the window
    was chosen, for the log.
    """

    loaded_from: datetime | None
    horizon: datetime
    rows: int
    why: str

    def query(self, schema: str, table: str) -> str:
        """The window as SQL (the GX query asset of the new-rows suite)."""
        source = sql.Identifier(schema, table).as_string()
        if self.loaded_from is None:
            return f"select * from {source}"
        return f"select * from {source} where loaded_at >= '{self.loaded_from.isoformat()}'"


def run_checks(
    settings: Settings,
    suites: Sequence[str] = SUITES,
    *,
    echo: Echo = print,
    now: datetime | None = None,
    since: str | datetime = SINCE_LAST_PASS,
) -> CheckReport:
    """Validate the given groups of suites; build Data Docs; return the report.

    ``now`` (default: the current time) is the instant "in the future" and "fresh" refer to.
    ``since`` picks the raw rows the new-rows suite judges: :data:`SINCE_LAST_PASS`,
    :data:`WHOLE_TABLE`, or those loaded at or after an aware datetime.
    Raises :class:`ChecksUnavailable` when the checks cannot run at all; a failed expectation
    is not an exception here (see :func:`require_checks`).
    """
    groups = tuple(dict.fromkeys(suites))
    try:
        tables = checked_tables(list(groups))
    except ValueError as err:
        raise ChecksUnavailable(str(err)) from None
    if not tables:
        raise ChecksUnavailable(f"no suite to run; expected some of {list(SUITES)}")
    now = now or datetime.now(UTC)
    url = database_url(settings)
    _require_tables(url, tables)
    window = _raw_window(url, since) if "raw" in groups else None
    if window is not None:
        echo(f"checks: raw: judging {window.rows:,} rows loaded {window.why}")

    docs_dir = settings.gx_docs_dir
    with _lock(settings.run_dir / "gx.lock", echo), _quiet_gx():
        echo(f"checks: loading Great Expectations for {', '.join(groups)}")
        context = None
        try:
            from expectations.suites import build_suites, suite_parameters

            context = _context(settings.aq_home, _sqlalchemy_url(url), docs_dir)
            parameters = suite_parameters(now)
            outcomes: list[Outcome] = []
            new_pages: list[Any] = []  # identifiers of the suites and results of this run
            names: list[str] = []
            for group in groups:
                started = time.monotonic()
                table_suites = build_suites([group])
                names.extend(ts.name for ts in table_suites)
                results = _run_group(
                    context, group, table_suites, parameters, now, new_pages, window
                )
                mine = [_outcomes(url, ts, r, parameters, window) for ts, r in results]
                outcomes.extend(o for batch in mine for o in batch)
                failed = sum(not o.success for batch in mine for o in batch)
                if group == "raw" and window is not None and not failed:
                    _mark_passed(url, window)
                echo(
                    f"checks: {group}: {sum(map(len, mine))} expectations in "
                    f"{len(table_suites)} suite(s), {failed} failed "
                    f"({time.monotonic() - started:.1f} s)"
                )
            _prune_results(context, docs_dir)
            _build_docs(context, docs_dir, new_pages)
        except AqiError:
            raise
        except Exception as err:  # noqa: BLE001 - GX raises many types; one line, no secrets
            first = (str(err).strip().splitlines() or [""])[0]
            message = _scrub(f"{type(err).__name__}: {first}", url)
            raise ChecksUnavailable(f"Great Expectations failed: {message}") from None
        finally:
            if context is not None:
                _close_engine(context)

    index = docs_dir / "index.html"
    echo(f"checks: Data Docs at {index}")
    return CheckReport(
        success=all(o.success for o in outcomes),
        results=outcomes,
        docs_index=index,
        suites=groups,
        tables=tuple(names),
    )


def require_checks(
    settings: Settings,
    suites: Sequence[str] = SUITES,
    *,
    echo: Echo = print,
    now: datetime | None = None,
    since: str | datetime = SINCE_LAST_PASS,
) -> CheckReport:
    """:func:`run_checks`, raising :class:`ExpectationsFailed` (the report) if any failed."""
    report = run_checks(settings, suites, echo=echo, now=now, since=since)
    report.raise_for_failures()
    return report


# --- before GX: is there anything to check? ----------------------------------------------------


def _require_tables(url: str, tables: list[tuple[str, str, str]]) -> None:
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            missing = [
                (group, f"{schema}.{table}")
                for group, schema, table in tables
                if conn.execute("select to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()[0]
                is None
            ]
    except psycopg.Error as err:
        first = _scrub(first_line(err), url)
        raise ChecksUnavailable(f"cannot reach the warehouse at {mask_url(url)}: {first}") from None
    if missing:
        names = ", ".join(name for _, name in missing)
        hints = "; ".join(dict.fromkeys(_BUILD_HINTS[group] for group, _ in missing))
        raise ChecksUnavailable(f"nothing to check yet: {names} not found ({hints})")


def _raw_window(url: str, since: str | datetime) -> RawWindow:
    """Which raw rows to judge, and where the next run starts if this one passes."""
    if since not in (SINCE_LAST_PASS, WHOLE_TABLE) and not (
        isinstance(since, datetime) and since.tzinfo is not None
    ):
        raise ChecksUnavailable(
            f"since: expected {SINCE_LAST_PASS!r}, {WHOLE_TABLE!r} or an aware datetime, "
            f"got {since!r}"
        )
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            if conn.execute("select to_regclass('raw.check_watermarks')").fetchone()[0] is None:
                migrate(url, echo=lambda line: None)  # a warehouse from before the mark
            horizon = conn.execute(_HORIZON).fetchone()[0]
            if isinstance(since, datetime):
                loaded_from, why = since, f"since {since.isoformat()} (as asked)"
            elif since == WHOLE_TABLE:
                loaded_from, why = None, "ever (the whole table, as asked)"
            else:
                row = conn.execute(
                    "select next_loaded_from from raw.check_watermarks where suite = 'raw'"
                ).fetchone()
                loaded_from, why = (
                    (row[0], f"since {row[0].isoformat()} (the gate last passed)")
                    if row
                    else (None, "ever (the gate has not passed yet)")
                )
            window = RawWindow(loaded_from, horizon, 0, why)
            rows = conn.execute(f"select count(*) from ({window.query(*RAW_TABLE)}) as w")
            return replace(window, rows=rows.fetchone()[0])
    except psycopg.Error as err:
        first = _scrub(first_line(err), url)
        raise ChecksUnavailable(f"cannot read the raw gate's mark: {first}") from None


def _mark_passed(url: str, window: RawWindow) -> None:
    """The raw gate passed: the next run judges the rows loaded from ``window.horizon``."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        conn.execute(
            "insert into raw.check_watermarks (suite, next_loaded_from, judged_from) "
            "values ('raw', %s, %s) on conflict (suite) do update set "
            "next_loaded_from = excluded.next_loaded_from, judged_from = excluded.judged_from, "
            "passed_at = now()",
            (window.horizon, window.loaded_from),
        )


# --- the GX side -------------------------------------------------------------------------------


def _context(aq_home: Path, sqlalchemy_url: str, docs_dir: Path) -> Any:
    """The File Data Context under AQ_HOME/gx, configured from code (idempotent)."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from expectations._gx import gx

    context = gx.get_context(
        mode="file",
        project_root_dir=str(aq_home),
        runtime_environment={URL_VARIABLE: sqlalchemy_url},
    )
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    # only our site: GX's default one would build a second copy under gx/uncommitted
    context.variables.data_docs_sites = {
        DOCS_SITE: {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    }
    context.variables.save()
    context.data_sources.add_or_update_postgres(
        name=DATASOURCE, connection_string="${" + URL_VARIABLE + "}"
    )
    return context


def _run_group(
    context: Any,
    group: str,
    table_suites: list[TableSuite],
    parameters: dict[str, str],
    now: datetime,
    new_pages: list[Any],
    window: RawWindow | None,
) -> list[tuple[TableSuite, dict[str, Any]]]:
    """One Checkpoint over the group's tables; returns each table's result as JSON.

    A new-rows suite reads ``window`` (a query asset), the others their whole table.
    Appends the identifiers of the suites and results to ``new_pages`` (Data Docs to build).
    """
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    from expectations._gx import gx

    datasource = context.data_sources.get(DATASOURCE)
    definitions = []
    for ts in table_suites:
        # add_or_update_postgres in _context() left the datasource without assets
        if ts.new_rows_only and window is not None:
            asset = datasource.add_query_asset(ts.name, query=window.query(ts.schema, ts.table))
        else:
            asset = datasource.add_table_asset(
                ts.name, table_name=ts.table, schema_name=ts.schema
            )
        batch = asset.add_batch_definition_whole_table(BATCH_DEFINITION)
        suite = context.suites.add_or_update(ts.suite)
        definitions.append(
            context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=ts.name, data=batch, suite=suite)
            )
        )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=group, validation_definitions=definitions, actions=[], result_format=RESULT_FORMAT
        )
    )
    result = checkpoint.run(
        expectation_parameters=parameters, run_id=RunIdentifier(run_name=group, run_time=now)
    )
    new_pages.extend(ExpectationSuiteIdentifier(name=ts.name) for ts in table_suites)
    new_pages.extend(result.run_results)
    by_suite = {r.suite_name: r.to_json_dict() for r in result.run_results.values()}
    return [(ts, by_suite[ts.name]) for ts in table_suites]


def _outcomes(
    url: str,
    ts: TableSuite,
    suite_result: dict[str, Any],
    parameters: dict[str, str],
    window: RawWindow | None,
) -> list[Outcome]:
    outcomes = []
    for result in suite_result["results"]:
        config = result.get("expectation_config") or {}
        rows: list[dict[str, Any]] = []
        if not result.get("success") and config.get("type") == "unexpected_rows_expectation":
            query = config["kwargs"]["unexpected_rows_query"]
            rows = _example_rows(url, _batch_sql(ts, window, query), query)
        outcomes.append(outcome_from_result(ts.name, result, parameters, rows))
    return outcomes


def _batch_sql(ts: TableSuite, window: RawWindow | None, query: str) -> str:
    """What ``{batch}`` stands for in ``query``, as GX substitutes it: the table, or the
    window as a subquery (aliased by GX unless the query joins, when it aliases it itself)."""
    if not (ts.new_rows_only and window is not None):
        return sql.Identifier(ts.schema, ts.table).as_string()
    subquery = f"({window.query(ts.schema, ts.table)})"
    return subquery if " join " in query.lower() else f"{subquery} as subselect"


def _example_rows(url: str, batch: str, query: str) -> list[dict[str, Any]]:
    """A few rows of a failed custom query (GX keeps them only in COMPLETE mode)."""
    statement = (
        f"select * from ({query.replace('{batch}', batch)}) as unexpected limit {EXAMPLE_ROWS}"
    )
    try:
        with psycopg.connect(url, connect_timeout=10, row_factory=dict_row) as conn:
            return list(conn.execute(statement).fetchall())  # type: ignore[call-overload]
    except psycopg.Error:
        return []  # the report still names the failure and its count


def _build_docs(context: Any, docs_dir: Path, new_pages: list[Any]) -> None:
    """Render this run's pages and the index; everything when the site is new or gone.

    A full build renders every kept result (~0.1 s each), so it is done only when needed.
    """
    incremental = (docs_dir / "index.html").is_file()
    context.build_data_docs(
        site_names=[DOCS_SITE], resource_identifiers=new_pages if incremental else None
    )


def _prune_results(context: Any, docs_dir: Path) -> None:
    """Keep the newest results per table in the store, and their pages in Data Docs."""
    store = context.validation_results_store
    by_suite: dict[str, list[Any]] = {}
    for key in store.list_keys():
        by_suite.setdefault(key.expectation_suite_identifier.name, []).append(key)
    for keys in by_suite.values():
        keys.sort(key=lambda k: str(k.run_id.run_time), reverse=True)
        for key in keys[KEEP_RESULTS_PER_SUITE:]:
            store.remove_key(key)
            page = docs_dir.joinpath("validations", *key.to_tuple()).with_suffix(".html")
            page.unlink(missing_ok=True)


# --- plumbing ----------------------------------------------------------------------------------


def _close_engine(context: Any) -> None:
    """GX keeps an engine (and its pooled connections) on the datasource: close them."""
    with suppress(Exception):  # nothing to close when the datasource never came up
        context.data_sources.get(DATASOURCE).get_engine().dispose()


def _sqlalchemy_url(url: str) -> str:
    """``postgresql://`` (libpq) -> ``postgresql+psycopg://`` (SQLAlchemy with psycopg 3)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def _scrub(text: str, url: str) -> str:
    """Remove the URL's password (and the URL) from a message meant for logs."""
    password = urlsplit(url).password
    text = text.replace(url, mask_url(url))
    return text.replace(password, "***") if password else text


@contextmanager
def _lock(path: Path, echo: Echo) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo("checks: waiting for another check run to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _quiet_gx() -> Iterator[None]:
    """GX logs warnings and progress for every metric; the report says what matters."""
    import warnings

    logger = logging.getLogger("great_expectations")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
