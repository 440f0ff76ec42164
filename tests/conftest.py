"""Shared fixtures: an isolated AQ_HOME and the real embedded services, started once.

The session's services run in a temporary AQ_HOME on free ports, so a developer's own
`aqi services up` (default ports, ./.aq) is never touched by the tests, and a `.env` in the
checkout is not read (subprocesses run with a temporary working directory).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from aqi.config import ENV_VARS, Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
AQI = str(Path(sys.executable).parent / "aqi")


class FakeClock:
    """A clock for the rate limiter whose ``sleep`` advances time instead of waiting."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_env(aq_home: Path, **overrides: str) -> dict[str, str]:
    """os.environ without any project variable, plus a private AQ_HOME and free ports."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(
        AQ_HOME=str(aq_home),
        AQ_PG_PORT=str(free_port()),
        AQ_KAFKA_PORT=str(free_port()),
        AQ_AIRFLOW_PORT=str(free_port()),
        AQ_SUPERSET_PORT=str(free_port()),
    )
    env.update(overrides)
    return env


def run_aqi(
    args: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the real `aqi` console script."""
    return subprocess.run(
        [AQI, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_topic(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, dict]]:
    """Every record of a topic as (partition, offset, key, decoded JSON value), up to its end."""
    import json

    from kafka import KafkaConsumer, TopicPartition

    from aqi.topics import end_offsets

    ends = end_offsets(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    records = []
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        remaining = {tp: ends[tp.partition] for tp in tps}
        while any(consumer.position(tp) < end for tp, end in remaining.items()):
            batch = consumer.poll(timeout_ms=2000)
            if not batch:
                break
            for tp, recs in batch.items():
                records.extend(
                    (tp.partition, r.offset, r.key, json.loads(r.value))
                    for r in recs
                    if r.offset < remaining[tp]
                )
    finally:
        consumer.close()
    return records


@pytest.fixture(scope="session")
def aq_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment of the test session's services; also applied to os.environ."""
    home = tmp_path_factory.mktemp("aq_home")
    env = isolated_env(home)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def aq_settings(aq_env: dict[str, str]) -> Settings:
    return load_settings(aq_env, dotenv=None)


@pytest.fixture(scope="session")
def services(aq_settings: Settings) -> Iterator[dict]:
    """The real embedded PostgreSQL and broker, up for the whole session."""
    from aqi.services import services_down, services_up

    status = services_up(aq_settings, echo=lambda line: print(line, file=sys.stderr))
    try:
        yield status
    finally:
        services_down(aq_settings, echo=lambda line: None)


@contextmanager
def private_stack(root: Path) -> Iterator[dict]:
    """`aqi services up` in a private AQ_HOME under root, `aqi services down` after.

    For modules that start more on top (Airflow, Superset) and must not share the session's
    services. Yields env, cwd, settings and the warehouse url.
    """
    from aqi.connections import database_url

    env = isolated_env(root / "aq")
    result = run_aqi(["services", "up"], env, root, timeout=300)
    assert result.returncode == 0, result.stderr
    try:
        settings = load_settings(env, dotenv=None)
        yield {"env": env, "cwd": root, "settings": settings, "url": database_url(settings)}
    finally:
        run_aqi(["services", "down"], env, root, timeout=300)


@contextmanager
def temporary_database(settings: Settings, prefix: str = "test") -> Iterator[str]:
    """A new, empty database on the embedded server (owned by the app role), dropped after."""
    import uuid

    import psycopg
    from psycopg import sql

    from aqi.connections import APP_ROLE, SUPERUSER, database_url, superuser_password

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg.conninfo.make_conninfo(
        host="127.0.0.1", port=settings.pg_port, user=SUPERUSER, dbname="postgres",
        password=superuser_password(settings),
    )  # fmt: skip
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} owner {}").format(
            sql.Identifier(name), sql.Identifier(APP_ROLE)))  # fmt: skip
    try:
        yield database_url(settings, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture
def fresh_database(services: dict, aq_settings: Settings) -> Iterator[str]:
    """A new, empty database on the embedded server (owned by the app role), dropped after."""
    with temporary_database(aq_settings) as url:
        yield url


def recreate_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Delete and recreate a topic: same name and partitions, an empty log from offset 0."""
    import time

    from kafka import KafkaAdminClient

    from aqi.topics import end_offsets, ensure_topic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tests")
    try:
        admin.delete_topics([topic])
        deadline = time.monotonic() + 15
        while topic in admin.list_topics() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        admin.close()
    assert ensure_topic(bootstrap, topic, partitions)
    assert end_offsets(bootstrap, topic) == dict.fromkeys(range(partitions), 0)
