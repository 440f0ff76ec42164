"""The embedded PostgreSQL, over TCP on 127.0.0.1, as every component will use it."""

from __future__ import annotations

import psycopg
import pytest

from aqi.core.connections import DATABASE_OWNERS, DATABASES, database_url

pytestmark = pytest.mark.integration


def test_query_over_tcp(services: dict, aq_settings) -> None:
    url = services["postgres"]["url"]
    assert url == database_url(aq_settings)
    with psycopg.connect(url) as conn:
        version = conn.execute("show server_version_num").fetchone()[0]
        assert int(version) >= 160000
        assert conn.execute("show listen_addresses").fetchone()[0] == "127.0.0.1"
        assert conn.execute("show timezone").fetchone()[0] == "UTC"
        assert conn.execute("select inet_server_addr()::text").fetchone()[0] in (
            "127.0.0.1/32",
            "127.0.0.1",
        )
        conn.execute("create table if not exists t_tcp (id int primary key, v text)")
        conn.execute("insert into t_tcp values (1, 'a') on conflict do nothing")
        assert conn.execute("select v from t_tcp where id = 1").fetchone() == ("a",)


def test_each_project_database_is_owned_by_its_own_role(services: dict, aq_settings) -> None:
    for name in DATABASES:
        with psycopg.connect(database_url(aq_settings, name)) as conn:
            owner, user = conn.execute(
                "select pg_get_userbyid(datdba), current_user from pg_database "
                "where datname = current_database()"
            ).fetchone()
            assert owner == user == DATABASE_OWNERS[name]
            conn.execute("create schema if not exists probe")


def test_password_is_required(services: dict) -> None:
    pg = services["postgres"]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=pg["host"], port=pg["port"], dbname="aq", user="aq", password="wrong",
            connect_timeout=5,
        )  # fmt: skip
