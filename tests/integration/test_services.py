"""`aqi services` end to end, as a user runs it: real PostgreSQL, real broker, real signals.

These tests use their own AQ_HOME and ports (not the session's services), because they kill
and stop what they start.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psycopg
import pytest
from conftest import isolated_env, run_aqi

from aqi.core.topics import topic_partitions
from aqi.services.process import PidFile, wait_until

pytestmark = pytest.mark.integration


def _our_processes(aq_home: Path) -> list[int]:
    """Live (non-zombie) processes whose command line mentions this AQ_HOME."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(aq_home).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _status(env: dict[str, str], cwd: Path) -> dict:
    result = run_aqi(["services", "status", "--json"], env, cwd)
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)


def _healthy(status: dict) -> None:
    with psycopg.connect(status["postgres"]["url"], connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    parts = topic_partitions(status["kafka"]["bootstrap_servers"], status["kafka"]["topic"])
    assert parts == [0, 1, 2]


def test_up_is_idempotent_status_names_addresses_down_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "aq"
    env = isolated_env(home)
    try:
        first = run_aqi(["services", "up"], env, tmp_path)
        assert first.returncode == 0, first.stderr
        assert "postgres: starting PostgreSQL 16" in first.stdout
        assert "created topic openaq.measurements (3 partitions)" in first.stdout
        before = _status(env, tmp_path)

        second = run_aqi(["services", "up"], env, tmp_path)
        assert second.returncode == 0, second.stderr
        assert "postgres: already running" in second.stdout
        assert "kafka: already running" in second.stdout
        assert "starting" not in second.stdout and "created topic" not in second.stdout
        after = _status(env, tmp_path)
        assert after["postgres"]["pid"] == before["postgres"]["pid"]
        assert after["kafka"]["pid"] == before["kafka"]["pid"]

        pg, kafka = after["postgres"], after["kafka"]
        assert pg["running"] and kafka["running"]
        assert (pg["host"], pg["port"], pg["database"]) == (
            "127.0.0.1",
            int(env["AQ_PG_PORT"]),
            "aq",
        )
        assert pg["url"].startswith("postgresql://aq:")
        assert pg["url"].endswith(f"@127.0.0.1:{env['AQ_PG_PORT']}/aq")
        assert kafka["bootstrap_servers"] == f"127.0.0.1:{env['AQ_KAFKA_PORT']}"
        assert pg["data_dir"].startswith(str(home))

        human = run_aqi(["services", "status"], env, tmp_path)
        assert human.returncode == 0
        assert f"127.0.0.1:{env['AQ_PG_PORT']}  database aq" in human.stdout
        assert f"bootstrap 127.0.0.1:{env['AQ_KAFKA_PORT']}" in human.stdout
        password = pg["url"].split(":")[2].split("@")[0]
        assert password not in human.stdout + first.stdout + second.stdout
        _healthy(after)
        assert _our_processes(home)
    finally:
        down = run_aqi(["services", "down"], env, tmp_path)
    assert down.returncode == 0, down.stderr
    assert "postgres: stopped" in down.stdout and "kafka: stopped" in down.stdout
    assert wait_until(lambda: not _our_processes(home), timeout=10), _our_processes(home)
    assert not (home / "run" / "postgres.pid").exists()
    stopped = run_aqi(["services", "status"], env, tmp_path)
    assert stopped.returncode == 3 and "NOT RUNNING" in stopped.stdout


def test_up_recovers_after_kill_9(tmp_path: Path) -> None:
    """PostgreSQL, then the broker, then both killed with 9 on one stack; `up` after each."""
    home = tmp_path / "aq"
    env = isolated_env(home)
    try:
        assert run_aqi(["services", "up"], env, tmp_path).returncode == 0
        # something written before the crash must survive it (PostgreSQL is durable)
        url = _status(env, tmp_path)["postgres"]["url"]
        with psycopg.connect(url) as conn:
            conn.execute("create table survivor (id int)")
            conn.execute("insert into survivor values (42)")
        for victims in (["postgres"], ["kafka"], ["postgres", "kafka"]):
            for name in victims:
                record = PidFile(home / "run" / f"{name}.pid").read()
                assert record is not None
                os.kill(record.pid, signal.SIGKILL)
                assert wait_until(lambda r=record: not r.is_alive(), timeout=10)
            status = _status(env, tmp_path)
            assert [status[name]["running"] for name in victims] == [False] * len(victims)

            again = run_aqi(["services", "up"], env, tmp_path)
            assert again.returncode == 0, (victims, again.stdout + again.stderr)
            status = _status(env, tmp_path)
            assert status["postgres"]["running"] and status["kafka"]["running"], victims
            _healthy(status)
            with psycopg.connect(status["postgres"]["url"]) as conn:
                assert conn.execute("select id from survivor").fetchall() == [(42,)], victims
    finally:
        run_aqi(["services", "down"], env, tmp_path)
    assert wait_until(lambda: not _our_processes(home), timeout=10)


def test_port_taken_by_another_program_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        env = isolated_env(tmp_path / "aq", AQ_PG_PORT=str(blocker.getsockname()[1]))
        result = run_aqi(["services", "up"], env, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "AQ_PG_PORT" in result.stderr and "already in use" in result.stderr


def test_external_services_are_used_not_started(tmp_path: Path, services: dict) -> None:
    """With AQ_DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS set, up starts nothing of its own."""
    home = tmp_path / "aq"
    env = isolated_env(
        home,
        AQ_DATABASE_URL=services["postgres"]["url"],
        KAFKA_BOOTSTRAP_SERVERS=services["kafka"]["bootstrap_servers"],
        AQ_KAFKA_TOPIC="external.check",
    )
    result = run_aqi(["services", "up"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "postgres: external (AQ_DATABASE_URL) answers; nothing started" in result.stdout
    assert "nothing started; created topic external.check" in result.stdout
    assert not (home / "run" / "postgres.pid").exists()
    assert not (home / "postgres").exists()
    assert not _our_processes(home)
    status = _status(env, tmp_path)
    assert status["postgres"]["managed"] == status["kafka"]["managed"] == "external"
    assert status["postgres"]["running"] and status["kafka"]["running"]
    down = run_aqi(["services", "down"], env, tmp_path)
    assert "left alone" in down.stdout
    # the external services are still there
    _healthy({**status, "kafka": {**status["kafka"], "topic": "external.check"}})


def test_unreachable_external_database_is_a_clear_error(tmp_path: Path) -> None:
    from conftest import free_port

    env = isolated_env(
        tmp_path / "aq", AQ_DATABASE_URL=f"postgresql://u:p@127.0.0.1:{free_port()}/db"
    )
    result = run_aqi(["services", "up"], env, tmp_path)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "aqi: error: AQ_DATABASE_URL: the external PostgreSQL does not answer"
    )
