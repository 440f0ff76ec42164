"""The database DDL the project owns, applied as ordered, idempotent migrations.

Each ``aqi/core/sql/NNNN_name.sql`` file is applied once, in order, inside a transaction, and
recorded in ``raw.schema_migrations``; a PostgreSQL advisory lock keeps two processes (say
``aqi stream`` and ``aqi db migrate``) from applying them at the same time. The files are
written to be idempotent too (``if not exists``), so a database created by hand converges.

Public surface: :func:`migrate`, :func:`pending`, :data:`MIGRATIONS_DIR`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

__all__ = ["MIGRATIONS_DIR", "migrate", "pending"]

MIGRATIONS_DIR = Path(__file__).parent / "sql"
#: arbitrary, fixed key of the advisory lock that serialises migrations
_LOCK_KEY = 7_141_202_601


def _files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def pending(url: str) -> list[str]:
    """Names of the migrations not applied yet."""
    with psycopg.connect(url) as conn:
        applied = _applied(conn)
    return [f.stem for f in _files() if f.stem not in applied]


def migrate(url: str, echo: Callable[[str], None] = print) -> list[str]:
    """Apply every pending migration; returns the names applied (empty when up to date)."""
    done = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("create schema if not exists raw")
            conn.execute(
                "create table if not exists raw.schema_migrations ("
                " version text primary key,"
                " applied_at timestamptz not null default now())"
            )
            applied = _applied(conn)
            for file in _files():
                if file.stem in applied:
                    continue
                with conn.transaction():
                    conn.execute(file.read_text())
                    conn.execute(
                        "insert into raw.schema_migrations (version) values (%s)", (file.stem,)
                    )
                echo(f"db: applied {file.stem}")
                done.append(file.stem)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return done


def _applied(conn: psycopg.Connection) -> set[str]:
    exists = conn.execute("select to_regclass('raw.schema_migrations')").fetchone()[0]
    if exists is None:
        return set()
    return {row[0] for row in conn.execute("select version from raw.schema_migrations")}
