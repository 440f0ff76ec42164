"""CSV exports of the gold marts, for BI tools other than Superset (Tableau, Power BI, Excel).

Layout under ``AQ_HOME/exports`` (or ``--dir``): one folder per partitioned gold table with
one file per day, and the small ``latest`` snapshot as one file::

    pm25_15min/pm25_15min_2025-06-09.csv        (UTC date of window_start)
    daily_avg/daily_avg_2025-06-09.csv          (local_date)
    exceedance_30d/exceedance_30d_2025-06-09.csv (local_date)
    latest.csv                                  (the whole of gold.latest)

A BI tool reads a table as "a folder of CSV files with the same columns" (Power BI's Folder
source, Tableau's union by wildcard, Excel's Get Data > From Folder). Every file is UTF-8 with a
header row, ISO-8601 UTC timestamps and its rows in key order, so that two exports of the same
data are byte-identical. A file is written next to its final name and renamed into place, so a
BI tool refreshing while the DAG runs reads either the previous file or the new one.

The files leave out ``rebuilt_at`` (when dbt last recomputed a row): it changes whenever dbt
recomputes a row, even to the same values, so with it a day whose data did not change would
differ from its previous export and from a fresh ``--all`` export. It is bookkeeping of the
warehouse, not a measurement, and is what this module uses to find the changed days.

Incremental: a run rewrites only the days having a row with ``rebuilt_at`` at or after the
table's mark in ``raw.export_marks`` (aqi/core/sql/0004_export_marks.sql), then moves the marks once
every file is written; a failed run leaves them, so the next run writes those days again.
Without a mark (first run, another folder, a missing table folder) or when the table's columns
changed since (every file must have the same header), a table is exported whole.
A row deleted without a replacement (dbt deletes a window or day whose readings all became
invalid) leaves no row to find, so its day's file keeps it until another row of that day is
rebuilt or a full export (``full=True``, ``aqi export --all``) rewrites every day and removes
the files of days no longer in the table.

Public surface: :data:`EXPORTED_TABLES`, :data:`PARTITIONS`, :func:`export_marts`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from aqi.core.config import Settings
from aqi.core.connections import database_url
from aqi.core.errors import AqiError, first_line
from aqi.core.gold_contract import GOLD_SCHEMA, gold_models, model_unique_key
from aqi.core.migrations import migrate

__all__ = ["EXPORTED_TABLES", "PARTITIONS", "export_marts"]

#: gold table -> its key columns (the export's row order): every gold model dbt documents,
#: by its grain (aqi/core/gold_contract.py)
EXPORTED_TABLES: dict[str, tuple[str, ...]] = {m: model_unique_key(m) for m in gold_models()}
#: gold table -> the column whose (UTC) date is a file's day; the others are one file each
PARTITIONS: dict[str, str] = {
    "pm25_15min": "window_start",
    "daily_avg": "local_date",
    "exceedance_30d": "local_date",
}
SCHEMA = GOLD_SCHEMA
#: when dbt last (re)computed a row: how the changed days are found; not exported
STAMP = "rebuilt_at"
#: arbitrary, fixed key of the advisory lock that serialises exports into one warehouse's marks
_LOCK_KEY = 7_141_202_616
#: the earliest start of a transaction open now (or now). dbt stamps a row (rebuilt_at) inside
#: the transaction that writes it, so at or after that transaction's start, but the row becomes
#: visible at its commit: a run that saw everything committed so far may move the mark to this
#: horizon, never further, or a row committed after the run but stamped earlier would fall
#: before the next run's mark. (The largest rebuilt_at seen is not safe: a dbt run started
#: earlier and committing later stamps rows below it.) An idle open transaction holds the
#: horizon back: later runs then rewrite some days again, which costs time, not correctness.
_HORIZON = """
select least(clock_timestamp(), coalesce((
    select min(xact_start) from pg_stat_activity
    where pid <> pg_backend_pid() and datname = current_database() and xact_start is not null
), clock_timestamp()))
"""
#: the first column of the day-split COPY: the day, as YYYY-MM-DD
_DAY = "export_day"
_TMP_FILE = re.compile(r"\.(.+)\.\d+\.tmp")
_DAY_FILE = re.compile(r"(?P<table>\w+)_(?P<day>\d{4}-\d{2}-\d{2})\.csv")

Echo = Callable[[str], None]


def export_marts(
    settings: Settings,
    directory: Path | None = None,
    echo: Echo = print,
    *,
    full: bool = False,
) -> dict[str, int]:
    """Write the gold tables' changed days (every day with ``full``) as CSV; rows per table.

    ``directory``: write there instead of ``settings.exports_dir``. Another folder than the
    default one is always exported whole and leaves the marks alone (they describe the
    default folder's files).
    """
    default = settings.exports_dir
    target = directory if directory is not None else default
    marked = _same_path(target, default)
    full = full or not marked
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AqiError(f"export: cannot create {target}: {exc.strerror or exc}") from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise AqiError(f"export: cannot write into {target}: permission denied")

    url = database_url(settings)
    counts: dict[str, int] = {}
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            # UTC timestamps and ISO dates whatever the server's or role's defaults are
            conn.execute("set time zone 'UTC'")
            conn.execute("set datestyle = 'ISO, YMD'")
            missing = [t for t in EXPORTED_TABLES if not _exists(conn, f"{SCHEMA}.{t}")]
            if missing:
                raise AqiError(
                    f"no table {', '.join(f'{SCHEMA}.{t}' for t in missing)}: "
                    "build the warehouse first (aqi dbt build)"
                )
            if not conn.execute("select pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()[0]:
                echo("export: waiting for another export of this warehouse to finish ...")
                conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
            if marked and not _exists(conn, "raw.export_marks"):
                migrate(url, echo=lambda line: None)  # a warehouse from before the marks
            # before anything is read: see _HORIZON
            horizon: datetime = conn.execute(_HORIZON).fetchone()[0]
            marks = _read_marks(conn) if marked else {}
            folder = str(target.resolve())
            new_marks: dict[str, tuple[datetime, str]] = {}
            for table, keys in EXPORTED_TABLES.items():
                columns = _columns(conn, table)
                exported = [c for c in columns if c != STAMP]
                if table not in PARTITIONS:
                    counts[table] = _write_snapshot(conn, table, exported, keys, target)
                    echo(f"export: {SCHEMA}.{table}: {counts[table]:,} rows -> "
                         f"{target / table}.csv")  # fmt: skip
                    continue
                header = ",".join(exported)
                since, why = _since(table, full, columns, header, marks.get(table), folder, target)
                counts[table], days = _write_table(conn, table, exported, keys, target, since)
                if STAMP in columns and marked:
                    new_marks[table] = (horizon, header)
                echo(f"export: {SCHEMA}.{table}: {len(days):,} days, {counts[table]:,} rows "
                     f"-> {target / table}/ ({why})")  # fmt: skip
            if new_marks:  # every file is in place: the next run starts from the horizon
                _write_marks(conn, new_marks, folder)
    except psycopg.OperationalError as exc:
        raise AqiError(f"export: cannot reach the warehouse database: {first_line(exc)}") from None
    except psycopg.Error as exc:
        raise AqiError(f"export: the warehouse refused: {first_line(exc)}") from None
    except OSError as exc:
        where = _final_name(exc.filename2 or exc.filename or target)
        raise AqiError(f"export: cannot write {where}: {exc.strerror or exc}") from None
    return counts


def _final_name(path: str | os.PathLike) -> Path:
    """The file a temporary file stands for (the file itself otherwise)."""
    path = Path(path)
    match = _TMP_FILE.fullmatch(path.name)
    return path.with_name(match[1]) if match else path


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("select to_regclass(%s) is not null", (name,)).fetchone()
    return bool(row and row[0])


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    """The table's columns in their order."""
    rows = conn.execute(
        "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0 "
        "and not attisdropped order by attnum",
        (f"{SCHEMA}.{table}",),
    ).fetchall()
    return [row[0] for row in rows]


Mark = tuple[str, datetime, str]  # directory, rebuilt_from, header


def _read_marks(conn: psycopg.Connection) -> dict[str, Mark]:
    rows = conn.execute("select table_name, directory, rebuilt_from, header from raw.export_marks")
    return {table: (directory, since, header) for table, directory, since, header in rows}


def _write_marks(
    conn: psycopg.Connection, marks: dict[str, tuple[datetime, str]], folder: str
) -> None:
    with conn.transaction():
        for table, (since, header) in marks.items():
            conn.execute(
                "insert into raw.export_marks (table_name, directory, rebuilt_from, header) "
                "values (%s, %s, %s, %s) on conflict (table_name) do update set "
                "directory = excluded.directory, rebuilt_from = excluded.rebuilt_from, "
                "header = excluded.header, exported_at = now()",
                (table, folder, since, header),
            )


def _since(
    table: str,
    full: bool,
    columns: Sequence[str],
    header: str,
    mark: Mark | None,
    folder: str,
    target: Path,
) -> tuple[datetime | None, str]:
    """The rebuilt_at from which this run exports the table's days (None: every day), and
    why, for the progress line."""
    if full:
        return None, "every day"
    if STAMP not in columns:
        return None, f"every day: no {STAMP} column yet (the next `aqi dbt build` adds it)"
    if mark is None:
        return None, "every day: first export"
    directory, since, marked_header = mark
    if directory != folder:
        return None, f"every day: the last export went to {directory}"
    if marked_header != header:
        return None, "every day: the table's columns changed"
    if not (target / table).is_dir():
        return None, f"every day: {target / table} is missing"
    return since, f"days rebuilt since {since.isoformat(timespec='seconds')}"


def _write_table(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[str],
    keys: tuple[str, ...],
    target: Path,
    since: datetime | None,
) -> tuple[int, list[str]]:
    """Write the days of ``table`` rebuilt at or after ``since`` (every day: None); returns
    the rows and days written. A full export also removes the files of days not in the table
    and the single file of the layout before the day folders."""
    day = _day_expression(table)
    folder = target / table
    if since is None:
        where, params = sql.SQL(""), ()
    else:
        # one query for the changed days, through the index on rebuilt_at
        changed = [row[0] for row in conn.execute(
            sql.SQL("select distinct {} from {} where {} >= %s order by 1").format(
                day, sql.Identifier(SCHEMA, table), sql.Identifier(STAMP)),
            (since,),
        )]  # fmt: skip
        if not changed:
            return 0, []
        # the range lets an index on the day column narrow the scan; the list is exact
        where = sql.SQL("where {col} >= %s::date and {col} < %s::date + 1 and {day} = any(%s)")
        where = where.format(col=sql.Identifier(PARTITIONS[table]), day=day)
        params = (changed[0], changed[-1], changed)
    # one COPY for all the days (ordered by day, then key), split into files as it streams:
    # two of the tables have no index leading with their day column, so a COPY per day
    # would read the whole table once per day
    query = sql.SQL(
        "copy (select to_char({day}, 'YYYY-MM-DD') as {label}, {columns} from {table} {where} "
        "order by {day}, {keys}) to stdout with (format csv, header)"
    ).format(
        day=day,
        label=sql.Identifier(_DAY),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        table=sql.Identifier(SCHEMA, table),
        where=where,
        keys=sql.SQL(", ").join(map(sql.Identifier, keys)),
    )
    folder.mkdir(exist_ok=True)
    written = _copy_days(conn, query, params, folder, table)
    if since is None:
        keep = {_day_file(table, d).name for d in written}
        for path in folder.glob(f"{table}_*.csv"):
            match = _DAY_FILE.fullmatch(path.name)
            if match and match["table"] == table and path.name not in keep:
                path.unlink(missing_ok=True)
        (target / f"{table}.csv").unlink(missing_ok=True)  # the layout before day folders
    return sum(written.values()), list(written)


def _day_expression(table: str) -> sql.Composable:
    column = sql.Identifier(PARTITIONS[table])
    # the session is in UTC: a timestamptz's date is its UTC date
    return sql.SQL("({}::date)").format(column)


def _day_file(table: str, day: str) -> Path:
    return Path(f"{table}_{day}.csv")


def _copy_days(
    conn: psycopg.Connection,
    query: sql.Composable,
    params: tuple,
    folder: Path,
    table: str,
) -> dict[str, int]:
    """Stream the COPY into one file per day; returns rows per day (YYYY-MM-DD), in order.

    PostgreSQL sends a COPY TO's data one row per message (the protocol guarantees it), so
    each message is one CSV line (or more, when a value holds a line break), starting with
    the 10-character day and a comma.
    """
    written: dict[str, int] = {}
    header = b""
    current: bytes | None = None
    handle = None
    tmp = final = None
    label = f"{_DAY},".encode()
    try:
        with conn.cursor() as cursor, cursor.copy(query, params) as copy:
            for chunk in copy:
                row = bytes(chunk)
                if not header:
                    if not row.startswith(label):
                        raise AqiError(f"export: unexpected COPY header for {table}: {row[:40]!r}")
                    header = row[len(label) :]
                    continue
                if row[10:11] != b"," or not row.endswith(b"\n"):
                    raise AqiError(f"export: unexpected COPY row for {table}: {row[:40]!r}")
                if row[:10] != current:
                    if handle is not None:
                        handle.close()
                        os.replace(tmp, final)
                        handle = None
                    current = row[:10]
                    day = current.decode()
                    final = folder / _day_file(table, day)
                    tmp = folder / f".{final.name}.{os.getpid()}.tmp"
                    handle = open(tmp, "wb")  # noqa: SIM115 - closed when the day ends
                    handle.write(header)
                    written[day] = 0
                handle.write(memoryview(row)[11:])
                written[day] += 1
        if handle is not None:
            handle.close()
            os.replace(tmp, final)
            handle = None
    finally:
        if handle is not None:
            handle.close()
            tmp.unlink(missing_ok=True)
    return written


def _write_snapshot(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[str],
    keys: tuple[str, ...],
    target: Path,
) -> int:
    """The whole table as ``<target>/<table>.csv``; returns its rows."""
    query = sql.SQL("copy (select {} from {} order by {}) to stdout with (format csv, header)")
    query = query.format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.Identifier(SCHEMA, table),
        sql.SQL(", ").join(map(sql.Identifier, keys)),
    )
    path = target / f"{table}.csv"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with conn.cursor() as cursor:
            with open(tmp, "wb") as handle, cursor.copy(query) as copy:
                handle.writelines(copy)
            rows = cursor.rowcount  # PostgreSQL's "COPY n"
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows
