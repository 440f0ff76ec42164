"""Throw-away embedded services for benchmarks: a temporary AQ_HOME on free ports."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aqi.core.config import Settings, load_settings
from aqi.services import services_down, services_up

__all__ = ["settings_env", "temporary_services", "temporary_settings"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def temporary_settings(**overrides: str) -> Settings:
    """Settings for a fresh AQ_HOME on free ports (never the user's running services), with
    any other variables of ``overrides`` (read as the environment's would be)."""
    home = Path(tempfile.mkdtemp(prefix="aq-bench-"))
    home.chmod(0o755)  # as root, the embedded PostgreSQL runs as another user that must enter
    env = {
        "AQ_HOME": str(home),
        "AQ_PG_PORT": str(_free_port()),
        "AQ_KAFKA_PORT": str(_free_port()),
        "AQ_AIRFLOW_PORT": str(_free_port()),
        "AQ_SUPERSET_PORT": str(_free_port()),
        **overrides,
    }
    return load_settings(env, dotenv=None)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes an ``aqi`` child process use these settings."""
    return {
        **os.environ,
        "AQ_HOME": str(settings.aq_home),
        "AQ_PG_PORT": str(settings.pg_port),
        "AQ_KAFKA_PORT": str(settings.kafka_port),
        "AQ_AIRFLOW_PORT": str(settings.airflow_port),
        "AQ_SUPERSET_PORT": str(settings.superset_port),
    }


@contextmanager
def temporary_services() -> Iterator[Settings]:
    """Embedded PostgreSQL and broker, up for the block, down and deleted after it.

    A 10M-row warehouse benchmark leaves ~11 GB in its AQ_HOME: keeping them filled the disk.
    """
    settings = temporary_settings()
    try:
        services_up(settings, echo=lambda line: None)
        try:
            yield settings
        finally:
            services_down(settings, echo=lambda line: None)
    finally:
        shutil.rmtree(settings.aq_home, ignore_errors=True)
