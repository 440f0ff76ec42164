"""Every failure a user can meet ends with one line naming the cause and a documented exit code.

Table-driven: each scenario runs the real `aqi` in a private AQ_HOME against what is really
there (nothing listening on a free port is a service that is down; a socket we hold is a port
in use; a PATH without java is a machine without Java).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import free_port, isolated_env, run_aqi

from aqi.core.errors import EXIT_ERROR, EXIT_USAGE

pytestmark = pytest.mark.integration

DEAD = "127.0.0.1:{port}"  # nothing listens there
DEAD_DB = "postgresql://aq:not-the-password@127.0.0.1:{port}/aq"

#: (id, aqi arguments, environment overrides, exit code, what the line must name)
SCENARIOS = [
    ("broker-down-replay", ["replay", "--simulate", "--days", "0.1"],
     {"KAFKA_BOOTSTRAP_SERVERS": DEAD, "AQ_KAFKA_WAIT_SECONDS": "1.5"}, EXIT_ERROR,
     "cannot reach Kafka"),
    ("postgres-down-migrate", ["db", "migrate"],
     {"AQ_DATABASE_URL": DEAD_DB}, EXIT_ERROR, "cannot reach PostgreSQL"),
    ("postgres-down-stream", ["stream", "--available-now"],
     {"AQ_DATABASE_URL": DEAD_DB, "KAFKA_BOOTSTRAP_SERVERS": DEAD}, EXIT_ERROR,
     "cannot reach PostgreSQL"),
    ("postgres-down-check", ["check"],
     {"AQ_DATABASE_URL": DEAD_DB}, EXIT_ERROR, "cannot reach the warehouse"),
    ("postgres-down-export", ["export"],
     {"AQ_DATABASE_URL": DEAD_DB}, EXIT_ERROR, "cannot reach the warehouse"),
    ("bad-option-trigger", ["stream", "--trigger-seconds", "-1"], {}, EXIT_USAGE,
     "--trigger-seconds"),
    ("bad-option-days", ["replay", "--simulate", "--days", "soon"], {}, EXIT_USAGE, "--days"),
    ("bad-option-since", ["backfill", "--location", "2178", "--since", "yesterday"], {},
     EXIT_USAGE, "--since"),
    ("bad-option-offsets", ["stream", "--starting-offsets", "{not json"], {}, EXIT_USAGE,
     "--starting-offsets"),
    ("bad-env-port", ["services", "status"], {"AQ_PG_PORT": "five"}, EXIT_USAGE, "AQ_PG_PORT"),
    ("bad-env-partitions", ["replay", "--simulate"], {"AQ_KAFKA_PARTITIONS": "0"}, EXIT_USAGE,
     "AQ_KAFKA_PARTITIONS"),
    ("bad-env-database-url", ["db", "migrate"], {"AQ_DATABASE_URL": "mysql://x@y/z"}, EXIT_USAGE,
     "AQ_DATABASE_URL"),
]  # fmt: skip


def _one_cause(stderr: str) -> str:
    """The single line that names the cause (click's usage errors keep their usage lines)."""
    assert "Traceback" not in stderr, stderr
    causes = [line for line in stderr.splitlines() if line.startswith(("aqi:", "Error:"))]
    assert len(causes) == 1, stderr
    return causes[0]


@pytest.mark.parametrize(("args", "overrides", "code", "cause"),
                         [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])  # fmt: skip
def test_failure_is_one_line_and_an_exit_code(
    tmp_path: Path, args: list[str], overrides: dict[str, str], code: int, cause: str
) -> None:
    port = free_port()
    env = isolated_env(tmp_path / "aq", **{k: v.format(port=port) for k, v in overrides.items()})
    result = run_aqi(args, env, tmp_path, timeout=300)
    assert result.returncode == code, result.stdout[-2000:] + result.stderr[-2000:]
    line = _one_cause(result.stderr)
    assert cause in line, line
    if code == EXIT_ERROR:  # nothing but that line on stderr
        assert result.stderr.strip() == line, result.stderr
    assert "not-the-password" not in result.stdout + result.stderr


@contextmanager
def _held_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("variable", ["AQ_PG_PORT", "AQ_KAFKA_PORT"])
def test_a_port_in_use_is_one_line(tmp_path: Path, variable: str) -> None:
    with _held_port() as port:
        env = isolated_env(tmp_path / "aq", **{variable: str(port)})
        try:
            result = run_aqi(["services", "up"], env, tmp_path, timeout=300)
        finally:
            run_aqi(["services", "down"], env, tmp_path, timeout=300)
    assert result.returncode == EXIT_ERROR, result.stdout[-2000:] + result.stderr[-2000:]
    line = _one_cause(result.stderr)
    assert variable in line and "already in use" in line, line


def test_no_java_is_one_line(tmp_path: Path) -> None:
    venv_bin = str(Path(sys.executable).parent)
    env = isolated_env(tmp_path / "aq", PATH=venv_bin, JAVA_HOME=str(tmp_path / "no-jdk"))
    try:
        result = run_aqi(["services", "up"], env, tmp_path, timeout=300)
    finally:
        run_aqi(["services", "down"], env, tmp_path, timeout=300)
    assert result.returncode == EXIT_ERROR, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Java 17" in _one_cause(result.stderr)


@pytest.mark.parametrize("how", ["AQ_DEBUG=1", "--debug"])
def test_debug_shows_the_trace_before_the_line(tmp_path: Path, how: str) -> None:
    env = isolated_env(tmp_path / "aq", AQ_DATABASE_URL=DEAD_DB.format(port=free_port()))
    args = ["db", "migrate"]
    if how == "--debug":
        args = ["--debug", *args]
    else:
        env["AQ_DEBUG"] = "1"
    result = run_aqi(args, env, tmp_path, timeout=120)
    assert result.returncode == EXIT_ERROR
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("aqi: error: cannot reach PostgreSQL")
    assert os.environ.get("AQ_DEBUG") is None, "the flag reaches the command, not the test"


def test_a_stream_without_a_broker_is_one_line_at_once(
    tmp_path: Path, fresh_database: str
) -> None:
    """PostgreSQL is there, Kafka is not: refused after AQ_KAFKA_WAIT_SECONDS (the grace for
    a broker still starting), not after Spark's minutes of retries and a Java trace."""
    env = isolated_env(tmp_path / "aq", AQ_DATABASE_URL=fresh_database,
                       KAFKA_BOOTSTRAP_SERVERS=DEAD.format(port=free_port()),
                       AQ_KAFKA_WAIT_SECONDS="1.5")  # fmt: skip
    result = run_aqi(["stream", "--available-now"], env, tmp_path, timeout=120)
    assert result.returncode == EXIT_ERROR, result.stderr[-3000:]
    line = _one_cause(result.stderr)
    assert line.startswith("aqi: error: cannot reach Kafka") and "aqi services up" in line, line
    assert "(waited 1.5 s, AQ_KAFKA_WAIT_SECONDS)" in line, line
