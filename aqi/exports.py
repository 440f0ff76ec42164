"""CSV exports of the gold marts, for BI tools other than Superset (Tableau, Power BI, Excel).

Each gold table becomes ``AQ_HOME/exports/<table>.csv`` (UTF-8, header row, ISO-8601 UTC
timestamps, rows in key order so that two exports of the same data are byte-identical). A
file is written next to its final name and renamed into place, so a BI tool refreshing while
the DAG runs reads either the previous export or the new one, never half of one.

Public surface: :data:`EXPORTED_TABLES`, :func:`export_marts`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from aqi.config import Settings
from aqi.connections import database_url
from aqi.errors import AqiError, first_line

__all__ = ["EXPORTED_TABLES", "export_marts"]

#: gold table -> its key columns (the export's row order)
EXPORTED_TABLES: dict[str, tuple[str, ...]] = {
    "pm25_15min": ("location_id", "window_start"),
    "daily_avg": ("location_id", "parameter", "units", "local_date"),
    "exceedance_30d": ("location_id", "parameter", "local_date"),
    "latest": ("location_id", "parameter", "units"),
}
SCHEMA = "gold"


def export_marts(
    settings: Settings, directory: Path | None = None, echo: Callable[[str], None] = print
) -> dict[str, int]:
    """Write every gold table to ``<directory>/<table>.csv``; returns rows per table."""
    target = directory or settings.exports_dir
    target.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    try:
        with psycopg.connect(database_url(settings), connect_timeout=10) as conn:
            # UTC timestamps whatever the server's or role's default time zone is
            conn.execute("set time zone 'UTC'")
            missing = [t for t in EXPORTED_TABLES if not _exists(conn, t)]
            if missing:
                raise AqiError(
                    f"no table {', '.join(f'{SCHEMA}.{t}' for t in missing)}: "
                    "build the warehouse first (aqi dbt build)"
                )
            for table, keys in EXPORTED_TABLES.items():
                counts[table] = _export(conn, table, keys, target / f"{table}.csv")
                echo(f"export: {SCHEMA}.{table}: {counts[table]:,} rows -> {target / table}.csv")
    except psycopg.OperationalError as exc:
        raise AqiError(f"export: cannot reach the warehouse database: {first_line(exc)}") from None
    return counts


def _exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("select to_regclass(%s) is not null", (f"{SCHEMA}.{table}",)).fetchone()
    return bool(row and row[0])


def _export(conn: psycopg.Connection, table: str, keys: tuple[str, ...], path: Path) -> int:
    query = sql.SQL(
        "copy (select * from {} order by {}) to stdout with (format csv, header)"
    ).format(sql.Identifier(SCHEMA, table), sql.SQL(", ").join(map(sql.Identifier, keys)))
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
