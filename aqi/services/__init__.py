"""``aqi services``: the embedded PostgreSQL and Kafka, or the external ones configured.

Public surface: :func:`services_up`, :func:`services_down`, :func:`services_status`.

When ``AQ_DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` is set, nothing embedded is started
for that service: ``up`` checks that the external one answers (and creates the topic on an
external broker), ``down`` leaves it alone, ``status`` reports it. ``up`` and ``down`` hold a
lock under ``AQ_HOME/run`` so that two of them never race on the same pid files.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg

from aqi.core.config import Settings
from aqi.core.connections import database_url, kafka_bootstrap_servers
from aqi.core.errors import ServiceError
from aqi.core.topics import KafkaUnavailable, await_broker, ensure_topic, wait_for_broker
from aqi.services.kafka import EmbeddedKafka
from aqi.services.postgres import EmbeddedPostgres

__all__ = ["services_down", "services_status", "services_up"]

Echo = Callable[[str], None]


def services_up(settings: Settings, echo: Echo = print, *, kafka_brokers: int | None = None) -> dict:
    """Start what is embedded and not running yet; check what is external. Idempotent.

    ``kafka_brokers``: the size of the embedded Kafka cluster when it is first created
    (default 1); later calls keep the size it was created with.
    """
    if kafka_brokers is not None and not settings.embedded_kafka:
        raise ServiceError(
            "--kafka-brokers sizes the embedded Kafka; KAFKA_BOOTSTRAP_SERVERS names an "
            "external one: unset one of them"
        )
    with _lock(settings):
        if settings.embedded_postgres:
            EmbeddedPostgres(settings).up(echo)
        else:
            _check_external_postgres(settings, echo)
        if settings.embedded_kafka:
            EmbeddedKafka(settings, brokers=kafka_brokers).up(echo)
        else:
            _check_external_kafka(settings, echo)
    return services_status(settings)


def services_down(settings: Settings, echo: Echo = print) -> None:
    """Stop the embedded services this project started (by their recorded pids)."""
    with _lock(settings):
        # Superset and Airflow first (they need the database), then the broker: nothing of
        # ours should be using the database when it goes
        from aqi.services.airflow import EmbeddedAirflow
        from aqi.services.superset import EmbeddedSuperset

        superset = EmbeddedSuperset(settings)
        if superset.running():
            superset.down(echo)
        airflow = EmbeddedAirflow(settings)
        if airflow.any_running():
            airflow.down(echo)
        if settings.embedded_kafka:
            EmbeddedKafka(settings).down(echo)
        else:
            echo("kafka: external (KAFKA_BOOTSTRAP_SERVERS), left alone")
        if settings.embedded_postgres:
            EmbeddedPostgres(settings).down(echo)
        else:
            echo("postgres: external (AQ_DATABASE_URL), left alone")


def services_status(settings: Settings) -> dict:
    """What runs where: ``{"postgres": {...,"url"}, "kafka": {...,"bootstrap_servers"}}``."""
    if settings.embedded_postgres:
        postgres = EmbeddedPostgres(settings).status()
    else:
        parts = urlsplit(settings.database_url or "")
        postgres = {
            "managed": "external",
            "running": _postgres_answers(settings),
            "host": parts.hostname,
            "port": parts.port or 5432,
            "database": parts.path.lstrip("/"),
            "user": parts.username,
            "url": database_url(settings),
        }
    if settings.embedded_kafka:
        kafka = EmbeddedKafka(settings).status()
    else:
        kafka = {
            "managed": "external",
            "running": _kafka_answers(settings),
            "bootstrap_servers": kafka_bootstrap_servers(settings),
            "topic": settings.kafka_topic,
        }
    return {"aq_home": str(settings.aq_home), "postgres": postgres, "kafka": kafka}


def _check_external_postgres(settings: Settings, echo: Echo) -> None:
    if not _postgres_answers(settings):
        raise ServiceError("AQ_DATABASE_URL: the external PostgreSQL does not answer")
    echo("postgres: external (AQ_DATABASE_URL) answers; nothing started")


def _check_external_kafka(settings: Settings, echo: Echo) -> None:
    servers = kafka_bootstrap_servers(settings)
    try:
        await_broker(servers, settings.kafka_wait_seconds)
        created = ensure_topic(servers, settings.kafka_topic, settings.kafka_partitions)
    except KafkaUnavailable as exc:
        raise ServiceError(f"KAFKA_BOOTSTRAP_SERVERS: {exc}") from None
    echo(
        f"kafka: external ({servers}) answers; nothing started"
        + (f"; created topic {settings.kafka_topic}" if created else "")
    )


def _postgres_answers(settings: Settings) -> bool:
    try:
        with psycopg.connect(database_url(settings), connect_timeout=5):
            return True
    except psycopg.Error:
        return False


def _kafka_answers(settings: Settings) -> bool:
    try:
        wait_for_broker(kafka_bootstrap_servers(settings), timeout=3)
        return True
    except KafkaUnavailable:
        return False


@contextmanager
def _lock(settings: Settings) -> Iterator[None]:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.run_dir / "services.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
