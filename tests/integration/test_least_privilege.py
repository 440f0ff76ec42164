"""Least privilege on the real embedded PostgreSQL, as in docker-compose.

Each database has its own owner role (aq: the warehouse; airflow and superset: their
metadata), only its owner may connect to it, an AQ_HOME of an older version (all three owned
by aq) is handed over on `up`, and as root nothing outside AQ_HOME changes mode.
The daemons' environments are checked where they run: tests/integration/test_airflow.py and
test_dashboards.py (warehouse_owner_leaks).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from conftest import AS_ROOT, isolated_env
from psycopg import sql

from aqi.core.config import Settings, load_settings
from aqi.core.connections import (
    APP_ROLE,
    DATABASE_OWNERS,
    DATABASES,
    SUPERUSER,
    database_url,
    superuser_password,
)
from aqi.core.errors import ServiceError
from aqi.services.postgres import EmbeddedPostgres, find_postgres_bin

pytestmark = pytest.mark.integration


def _superuser(settings: Settings, database: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1", port=settings.pg_port, user=SUPERUSER, dbname=database,
        password=superuser_password(settings), autocommit=True,
    )  # fmt: skip


def _owners(conn: psycopg.Connection, databases: list[str]) -> dict[str, str]:
    """database -> the role that owns it."""
    query = "select datname, pg_get_userbyid(datdba) from pg_database where datname = any(%s)"
    return dict(conn.execute(query, (databases,)).fetchall())


def _as(settings: Settings, role_of: str, database: str) -> str:
    """The URL of ``role_of``'s owner role, pointed at ``database``."""
    return database_url(settings, role_of).rsplit("/", 1)[0] + f"/{database}"


def test_each_role_owns_and_reaches_only_its_own_database(services: dict, aq_settings) -> None:
    settings = aq_settings
    with _superuser(settings) as conn:
        owners = _owners(conn, [*DATABASES, "postgres"])
    assert owners == {**DATABASE_OWNERS, "postgres": SUPERUSER}
    for role_of in DATABASES:
        for database in (*DATABASES, "postgres"):
            if database == role_of:
                psycopg.connect(_as(settings, role_of, database), connect_timeout=5).close()
                continue
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(_as(settings, role_of, database), connect_timeout=5)
    # and in the warehouse, Airflow's and Superset's roles hold no privilege on any table or
    # schema (they could not use one anyway, not being allowed to connect)
    with _superuser(settings, DATABASES[0]) as conn:
        conn.execute("create schema if not exists raw authorization aq")
        conn.execute("create table if not exists raw.lp_probe (id int)")
        conn.execute("alter table raw.lp_probe owner to aq")
        for role in ("airflow", "superset"):
            granted = conn.execute(
                "select n.nspname || '.' || c.relname from pg_class c "
                "join pg_namespace n on n.oid = c.relnamespace "
                "where c.relkind in ('r', 'v', 'm', 'p') and n.nspname not in "
                "('pg_catalog', 'information_schema') and (has_table_privilege(%s, c.oid, "
                "'SELECT, INSERT, UPDATE, DELETE, TRUNCATE'))",
                (role,),
            ).fetchall()
            assert granted == [], role
            creatable = conn.execute(
                "select nspname from pg_namespace where nspname not like 'pg\\_%%' "
                "and nspname <> 'information_schema' and has_schema_privilege(%s, oid, 'CREATE')",
                (role,),
            ).fetchall()
            assert creatable == [], role


@contextmanager
def _embedded(root: Path) -> Iterator[tuple[Settings, EmbeddedPostgres]]:
    settings = load_settings(isolated_env(root / "aq"), dotenv=None)
    postgres = EmbeddedPostgres(settings)
    try:
        yield settings, postgres
    finally:
        postgres.down(echo=lambda line: None)


def _modes(paths: list[Path]) -> dict[Path, int]:
    return {path: path.lstat().st_mode for path in paths}


def test_an_older_aq_home_is_handed_over_and_nothing_outside_it_changes_mode(
    tmp_path: Path,
) -> None:
    package = find_postgres_bin().parent.parent  # the pgserver wheel's folder (or Debian's)
    libs = package.with_name(package.name + ".libs")
    outside = [*(tmp_path / "aq").parents, package, *package.rglob("*")]
    outside += [libs, *libs.rglob("*")] if libs.is_dir() else []
    before = _modes(outside)
    with _embedded(tmp_path) as (settings, postgres):
        postgres.up(echo=lambda line: None)
        assert _modes(outside) == before, "a folder or file outside AQ_HOME changed mode"
        if AS_ROOT:  # the server runs from its copy inside AQ_HOME
            server = Path(f"/proc/{postgres.status()['pid']}/exe").resolve()
            assert server.is_relative_to(settings.aq_home), server

        # the state an older version left: every database owned by aq, objects of aq in the
        # metadata databases, CONNECT for PUBLIC; and a database of aq that must stay its own
        with _superuser(settings) as conn:
            conn.execute("create database lp_scratch owner aq")
            for database in DATABASES:
                conn.execute(sql.SQL("alter database {} owner to aq").format(sql.Identifier(database)))
                conn.execute(sql.SQL("grant connect on database {} to public").format(
                    sql.Identifier(database)))  # fmt: skip
        for database in ("airflow", "superset"):
            with _superuser(settings, database) as conn:
                conn.execute("set role aq")
                conn.execute("create schema legacy")
                conn.execute("create table legacy.t (id serial primary key)")
                conn.execute("create table public.alembic_probe (v text)")
                conn.execute("create view public.v as select 1 as one")

        postgres.up(echo=lambda line: None)  # running already: provisions only

        with _superuser(settings) as conn:
            owners = _owners(conn, [*DATABASES, "lp_scratch"])
        assert owners == {**DATABASE_OWNERS, "lp_scratch": APP_ROLE}
        for database in ("airflow", "superset"):
            with psycopg.connect(database_url(settings, database)) as conn:
                left = conn.execute(
                    "select c.relname from pg_class c join pg_namespace n "
                    "on n.oid = c.relnamespace where n.nspname in ('legacy', 'public') "
                    "and pg_get_userbyid(c.relowner) <> current_user"
                ).fetchall()
                assert left == [], f"{database}: objects not handed over: {left}"
                schema_owner = conn.execute(
                    "select pg_get_userbyid(nspowner) from pg_namespace where nspname = 'legacy'"
                ).fetchone()[0]
                assert schema_owner == database
                conn.execute("insert into legacy.t default values")  # its sequence too
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(_as(settings, "aq", database), connect_timeout=5)
        with psycopg.connect(database_url(settings)) as conn:
            assert conn.execute("select current_user").fetchone() == (APP_ROLE,)
        postgres.up(echo=lambda line: None)  # and again: nothing left to do, no error
    assert _modes(outside) == before


@pytest.mark.skipif(not AS_ROOT, reason="the server's system user exists only as root")
def test_an_aq_home_the_server_user_cannot_reach_is_one_line_and_left_alone(
    tmp_path: Path,
) -> None:
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    settings = load_settings(isolated_env(private / "aq"), dotenv=None)
    with pytest.raises(ServiceError) as err:
        EmbeddedPostgres(settings).up(echo=lambda line: None)
    message = str(err.value)
    assert "\n" not in message and f"cannot enter {private} (mode 700)" in message, message
    assert "non-root" in message
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert not (private / "aq" / "postgres" / "data").exists()
    assert os.listdir(private / "aq") == []
