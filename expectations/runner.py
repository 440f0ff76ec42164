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

The gates judge new data. Raw's new-rows suite reads the rows *loaded* since the raw gate
last passed (``loaded_at``, a ``clock_timestamp()`` default); each gold suite reads the rows
dbt *rebuilt* since that table's gate last passed (``rebuilt_at``, the building transaction's
``now()``: dbt recomputes only the affected windows, days and series, so the slice is what
the run changed). The marks live in ``raw.check_watermarks`` (``raw``, ``gold.<table>``; the
column ``next_loaded_from`` holds every table's mark). On request (``since``) a run reads the
whole tables (:data:`WHOLE_TABLE`, the nightly full check: a bad row in an old slice, or a
duplicate spanning an old and a new row, is found there) or the rows stamped since a given
time. The checks that need no rows (raw's columns, types and freshness) read the table; a
gold table's column check reads the slice's description, as cheap.

Where a mark moves: when every expectation on a table passes, its mark moves to the
*horizon*, the earliest start of any transaction open in this database when the run began
(or that moment). A row is stamped inside its transaction but seen only when it commits;
both stamps are at or after the start of the writing transaction (``now()`` is that start,
``clock_timestamp()`` later). So a row this run could not see - committed after the horizon
was read - belongs to a transaction that was open then (stamped at or after its start, hence
at or after the horizon) or began later (stamped later still): the next run's window holds
it. A row stamped before the horizon was committed before it, so this run's queries (which
start after it) see it. dbt writes a gold model's delete, insert and post-hooks in one
transaction, and a full refresh builds and swaps the table in one, so either way the rows
appear at once with stamps at or after that transaction's start. This holds as long as the
writers stamp with their transaction's clock (never a time carried in from outside, such as
dbt's ``run_started_at``) and run as the role the checks see in ``pg_stat_activity`` (one
warehouse owner: the stream, dbt and the checks share it). An idle open transaction only
holds the horizon back (the next window is larger), never forward. dbt's own raw watermark
works the same way.

A table that fails keeps its mark, so the next run judges the same rows and more: its gate
stays shut until the data or the decision changes (``aqi check --since TIME``); tables of the
same run that passed move on. A failed expectation's sample rows (its table's key columns
and the offending values, at most :data:`EXAMPLE_ROWS`) are fetched with one ``LIMIT``-ed
query on what the suite read, only when it failed (:func:`sample_query`).
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

from aqi.core.config import Settings, mask_url
from aqi.core.connections import database_url
from aqi.core.errors import AqiError, first_line
from aqi.core.migrations import migrate
from expectations.reference import GROUPS, LOADED_AT, REBUILT_AT, checked_tables
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
    "Window",
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
#: sample rows fetched to illustrate a failed expectation (its key columns and values)
EXAMPLE_ROWS = 5
#: ``since`` of run_checks: the rows loaded (raw) or rebuilt (gold) since the table's gate
#: last passed (the default) ...
SINCE_LAST_PASS = "last-pass"
#: ... or every row of the checked tables
WHOLE_TABLE = "all"
#: the earliest start of a transaction open now (or now): rows committed later are stamped
#: (raw's loaded_at, a clock_timestamp() default; gold's rebuilt_at, now()) at or after it
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
class Window:
    """The rows a sliced suite judges: ``column`` at or after ``since`` (None: every row).

    ``mark`` is the table's row in ``raw.check_watermarks`` (``raw``, ``gold.daily_avg``);
    ``horizon`` is where the next run starts if this one passes; ``why`` says how the window
    was chosen, for the log and the report.
    """

    mark: str
    column: str
    since: datetime | None
    horizon: datetime
    rows: int
    why: str

    def query(self, schema: str, table: str) -> str:
        """The window as SQL (the GX query asset of a sliced suite)."""
        source = sql.Identifier(schema, table).as_string()
        if self.since is None:
            return f"select * from {source}"
        column = sql.Identifier(self.column).as_string()
        return f"select * from {source} where {column} >= '{self.since.isoformat()}'"

    def scope(self) -> str:
        """``12 rows rebuilt since 2026-...(the gate last passed)``: what was judged."""
        verb = "loaded" if self.column == LOADED_AT else "rebuilt"
        return f"{self.rows:,} {'row' if self.rows == 1 else 'rows'} {verb} {self.why}"


#: the name this class had when only raw was sliced
RawWindow = Window


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
    ``since`` picks the rows the sliced suites judge (raw's new rows, the gold tables):
    :data:`SINCE_LAST_PASS` (each table's mark), :data:`WHOLE_TABLE`, or those loaded
    (raw) or rebuilt (gold) at or after an aware datetime. A table whose expectations all
    pass gets its mark moved; a failed one keeps it.
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
    windows = _windows(url, _sliced_tables(groups), since)
    for (schema, table), window in windows.items():
        label = "raw" if window.mark == "raw" else f"{schema}.{table}"
        echo(f"checks: {label}: judging {window.scope()}")

    docs_dir = settings.gx_docs_dir
    with _lock(settings.run_dir / "gx.lock", echo), _quiet_gx():
        echo(f"checks: loading Great Expectations for {', '.join(groups)}")
        context = None
        try:
            from expectations.suites import build_suites, suite_parameters

            context = _context(settings.aq_home, _sqlalchemy_url(url), docs_dir)
            parameters = suite_parameters(now)
            outcomes: list[Outcome] = []
            scopes: dict[str, str] = {}  # what a failed sliced suite judged
            new_pages: list[Any] = []  # identifiers of the suites and results of this run
            names: list[str] = []
            for group in groups:
                started = time.monotonic()
                table_suites = build_suites([group])
                names.extend(ts.name for ts in table_suites)
                results = _run_group(
                    context, group, table_suites, parameters, now, new_pages, windows
                )
                mine = [_outcomes(url, ts, r, parameters, windows) for ts, r in results]
                outcomes.extend(o for batch in mine for o in batch)
                failed = sum(not o.success for batch in mine for o in batch)
                failed_tables: set[tuple[str, str]] = set()
                for ts, batch in zip(table_suites, mine, strict=True):
                    if all(o.success for o in batch):
                        continue
                    failed_tables.add((ts.schema, ts.table))
                    if ts.sliced_by and (window := windows.get((ts.schema, ts.table))):
                        scopes[ts.name] = window.scope()
                for key in dict.fromkeys((ts.schema, ts.table) for ts in table_suites):
                    if key in windows and key not in failed_tables:
                        _mark_passed(url, windows[key])  # a failed table keeps its mark
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
        scopes=scopes,
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


def _sliced_tables(groups: Sequence[str]) -> list[tuple[str, str, str, str]]:
    """``(mark, schema, table, column)`` of every table the groups judge in slices.

    Raw's mark keeps its first name (``raw``); each gold table has its own, so a table that
    passed moves on while one that failed is judged again.
    """
    return [
        ("raw", schema, table, LOADED_AT) if group == "raw"
        else (f"{schema}.{table}", schema, table, REBUILT_AT)
        for group, schema, table in checked_tables(list(groups))
    ]  # fmt: skip


def _windows(
    url: str, tables: list[tuple[str, str, str, str]], since: str | datetime
) -> dict[tuple[str, str], Window]:
    """Which rows of each sliced table to judge, and where its next run starts if it passes.

    One horizon for all (taken before any table is counted or validated): see the module
    docstring for why no row committed later can be stamped before it.
    """
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
            marks = dict(
                conn.execute(
                    "select suite, next_loaded_from from raw.check_watermarks "
                    "where suite = any(%s)",
                    ([mark for mark, *_ in tables],),
                ).fetchall()
            )
            windows = {}
            for mark, schema, table, column in tables:
                if isinstance(since, datetime):
                    start, why = since, f"since {since.isoformat()} (as asked)"
                elif since == WHOLE_TABLE:
                    start, why = None, "ever (the whole table, as asked)"
                elif mark in marks:
                    start = marks[mark]
                    why = f"since {start.isoformat()} (the gate last passed)"
                else:
                    start, why = None, "ever (the gate has not passed yet)"
                window = Window(mark, column, start, horizon, 0, why)
                rows = conn.execute(f"select count(*) from ({window.query(schema, table)}) as w")
                windows[schema, table] = replace(window, rows=rows.fetchone()[0])
            return windows
    except psycopg.Error as err:
        first = _scrub(first_line(err), url)
        raise ChecksUnavailable(f"cannot read the gates' marks: {first}") from None


def _mark_passed(url: str, window: Window) -> None:
    """The table passed: its next run judges the rows stamped from ``window.horizon``.

    ``next_loaded_from`` holds the mark of every table (for gold it is a ``rebuilt_at``).
    """
    with psycopg.connect(url, connect_timeout=10) as conn:
        conn.execute(
            "insert into raw.check_watermarks (suite, next_loaded_from, judged_from) "
            "values (%s, %s, %s) on conflict (suite) do update set "
            "next_loaded_from = excluded.next_loaded_from, judged_from = excluded.judged_from, "
            "passed_at = now()",
            (window.mark, window.horizon, window.since),
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
    windows: dict[tuple[str, str], Window],
) -> list[tuple[TableSuite, dict[str, Any]]]:
    """One Checkpoint over the group's tables; returns each table's result as JSON.

    A sliced suite reads its table's window (a query asset), the others their whole table.
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
        if (window := _window_of(ts, windows)) is not None:
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


def _window_of(ts: TableSuite, windows: dict[tuple[str, str], Window]) -> Window | None:
    """The window a suite reads (None: its whole table, as a table asset)."""
    return windows.get((ts.schema, ts.table)) if ts.sliced_by else None


def _outcomes(
    url: str,
    ts: TableSuite,
    suite_result: dict[str, Any],
    parameters: dict[str, str],
    windows: dict[tuple[str, str], Window],
) -> list[Outcome]:
    """The suite's results for the report, with sample rows of each failed expectation."""
    window = _window_of(ts, windows)
    outcomes = []
    for result in suite_result["results"]:
        config = result.get("expectation_config") or {}
        rows: list[dict[str, Any]] = []
        if not result.get("success") and config.get("type") == "unexpected_rows_expectation":
            query = config["kwargs"]["unexpected_rows_query"]
            rows = _example_rows(url, _batch_sql(ts, window, query), query)
        elif not result.get("success"):
            kwargs = {k: _parameter(v, parameters) for k, v in (config.get("kwargs") or {}).items()}
            source = _batch_sql(ts, window, "")
            sample = sample_query(config.get("type", ""), kwargs, ts.key, source)
            if sample is not None:
                rows = _fetch(url, *sample)
        outcomes.append(outcome_from_result(ts.name, result, parameters, rows))
    return outcomes


def _batch_sql(ts: TableSuite, window: Window | None, query: str) -> str:
    """What ``{batch}`` stands for in ``query``, as GX substitutes it: the table, or the
    window as a subquery (aliased by GX unless the query joins, when it aliases it itself)."""
    if window is None:
        return sql.Identifier(ts.schema, ts.table).as_string()
    subquery = f"({window.query(ts.schema, ts.table)})"
    return subquery if " join " in query.lower() else f"{subquery} as subselect"


def sample_query(
    kind: str, kwargs: dict[str, Any], key: Sequence[str], source: str
) -> tuple[sql.Composed, list[Any]] | None:
    """SQL for a few rows that break a column rule: the row's ``key`` and the rule's columns.

    GX (in SUMMARY mode) returns only the offending values; a person fixing the data needs
    to find the rows. ``source`` is what the suite read (the table, or its window aliased).
    The conditions restate GX's for the rule types the suites use (nulls are not judged by
    a range, a set or a comparison); other types (schema, aggregates) have no rows to show.
    """
    ident = sql.Identifier
    params: list[Any] = []
    column = kwargs.get("column")
    if kind == "expect_column_values_to_be_between" and column:
        tests = []
        for bound, op, strict_op in (("min", "<", "<="), ("max", ">", ">=")):
            if kwargs.get(f"{bound}_value") is None:
                continue
            op = strict_op if kwargs.get(f"strict_{bound}") else op
            tests.append(sql.SQL("{} " + op + " %s").format(ident(column)))
            params.append(kwargs[f"{bound}_value"])
        if not tests:
            return None
        where = sql.SQL("{} is not null and ({})").format(
            ident(column), sql.SQL(" or ").join(tests)
        )
        shown = [column]
    elif kind == "expect_column_values_to_be_in_set" and column:
        where = sql.SQL("{0} is not null and not ({0} = any(%s))").format(ident(column))
        params.append(list(kwargs.get("value_set") or []))
        shown = [column]
    elif kind == "expect_column_values_to_not_be_null" and column:
        where = sql.SQL("{} is null").format(ident(column))
        shown = [column]
    elif kind == "expect_column_pair_values_a_to_be_greater_than_b":
        a, b = ident(kwargs["column_A"]), ident(kwargs["column_B"])
        op = ">=" if kwargs.get("or_equal") else ">"
        where = sql.SQL(
            "({a} is not null or {b} is not null) and not coalesce({a} " + op + " {b}, false)"
        ).format(a=a, b=b)
        shown = [kwargs["column_A"], kwargs["column_B"]]
    elif kind == "expect_compound_columns_to_be_unique" and kwargs.get("column_list"):
        shown = list(kwargs["column_list"])
        columns = sql.SQL(", ").join(map(ident, shown))
        duplicated = "({c}) in (select {c} from {s} group by {c} having count(*) > 1)"
        where = sql.SQL(duplicated).format(c=columns, s=sql.SQL(source))
    else:
        return None
    selected = sql.SQL(", ").join(map(ident, dict.fromkeys([*key, *shown])))
    statement = sql.SQL("select {} from {} where {} limit {}").format(
        selected, sql.SQL(source), where, sql.Literal(EXAMPLE_ROWS)
    )
    return statement, params


def _parameter(value: Any, parameters: dict[str, str]) -> Any:
    """A ``{"$PARAMETER": name}`` argument's value for this run (others as they are)."""
    if isinstance(value, dict) and set(value) == {"$PARAMETER"}:
        return parameters.get(value["$PARAMETER"])
    return value


def _example_rows(url: str, batch: str, query: str) -> list[dict[str, Any]]:
    """A few rows of a failed custom query (GX keeps them only in COMPLETE mode)."""
    statement = (
        f"select * from ({query.replace('{batch}', batch)}) as unexpected limit {EXAMPLE_ROWS}"
    )
    return _fetch(url, statement, [])


def _fetch(url: str, statement: Any, params: list[Any]) -> list[dict[str, Any]]:
    """The rows of a sample query; none if it fails (the report still names the failure)."""
    try:
        with psycopg.connect(url, connect_timeout=10, row_factory=dict_row) as conn:
            return list(conn.execute(statement, params or None).fetchall())  # type: ignore[call-overload]
    except psycopg.Error:
        return []


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
