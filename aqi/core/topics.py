"""Kafka topic helpers: the topic the pipeline uses, its partitions and their end offsets.

The project talks to Kafka through one client library, confluent-kafka (librdkafka): it is
the one that sends ~50k+ events/s from one Python process (docs/benchmarks.md measured it
beside kafka-python), and its admin and consumer APIs cover what the rest of the project needs.
:func:`client_config` is the one place that configures a client (addresses, name, logging).

The topic is created with the broker's defaults for replication (``replication_factor=-1``):
1 on the embedded single broker, 3 with ``min.insync.replicas=2`` on the embedded 3-broker
cluster (``aqi services up --kafka-brokers 3``), whatever the operator chose on a cluster of
one's own.

Public surface: :class:`KafkaUnavailable`, :func:`client_config`, :func:`ensure_topic`,
:func:`topic_partitions`, :func:`end_offsets`, :func:`wait_for_broker`, :func:`await_broker`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from aqi.core.errors import AqiError

__all__ = [
    "KafkaUnavailable",
    "await_broker",
    "client_config",
    "end_offsets",
    "ensure_topic",
    "topic_partitions",
    "wait_for_broker",
]

#: librdkafka's own log lines (connection refused while a broker restarts, ...) go to this
#: logger rather than straight to stderr: an application that configures logging (Airflow)
#: sees them; the CLI reports failures as one line of its own instead
_LOG = logging.getLogger("aqi.kafka")
_LOG.addHandler(logging.NullHandler())
_REQUEST_TIMEOUT_S = 10.0


class KafkaUnavailable(AqiError):
    """Kafka did not answer (or refused) a request within its timeout."""


def client_config(bootstrap_servers: str, client_id: str, **extra: Any) -> dict[str, Any]:
    """librdkafka settings shared by every client the project creates, plus ``extra``."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        "logger": _LOG,
        # a broker that restarts is reported once by our own code, not by every connection
        "log.connection.close": False,
        **extra,
    }


def ensure_topic(bootstrap_servers: str, topic: str, partitions: int) -> bool:
    """Create ``topic`` with ``partitions`` partitions unless it exists. True if created."""
    admin = _admin(bootstrap_servers)
    if topic in _metadata(admin, bootstrap_servers).topics:
        return False
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions)])[topic]
    try:
        future.result(timeout=_REQUEST_TIMEOUT_S)
    except KafkaException as exc:
        if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
            raise KafkaUnavailable(f"cannot create topic {topic!r}: {exc.args[0].str()}") from None
        return False
    # metadata can lag creation by a moment: wait until every partition has a leader
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        described = _metadata(admin, bootstrap_servers, topic).topics.get(topic)
        if (
            described is not None
            and described.error is None
            and len(described.partitions) == partitions
            and all(p.leader >= 0 for p in described.partitions.values())
        ):
            break
        time.sleep(0.1)
    return True


def topic_partitions(bootstrap_servers: str, topic: str) -> list[int]:
    """Partition ids of ``topic`` (empty if it does not exist)."""
    described = _metadata(_admin(bootstrap_servers), bootstrap_servers, topic).topics.get(topic)
    if described is None or described.error is not None:
        return []
    return sorted(described.partitions)


#: list_offsets errors of a partition whose leader is not elected or known yet
_NO_LEADER_YET = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
)


def end_offsets(
    bootstrap_servers: str, topic: str, partitions: Iterable[int] | None = None
) -> dict[int, int]:
    """The end offset (offset of the next record to be written) of each partition."""
    admin = _admin(bootstrap_servers)
    ids = sorted(partitions) if partitions is not None else topic_partitions(bootstrap_servers, topic)
    if not ids:
        return {}
    wanted = {TopicPartition(topic, p): OffsetSpec.latest() for p in ids}
    deadline = time.monotonic() + _REQUEST_TIMEOUT_S
    while True:
        try:
            answers = admin.list_offsets(wanted, request_timeout=_REQUEST_TIMEOUT_S)
            return {tp.partition: future.result().offset for tp, future in answers.items()}
        except KafkaException as exc:
            # a partition just created (or moving) has no leader for a moment: ask again
            error = exc.args[0]
            transient = error.retriable() or error.code() in _NO_LEADER_YET
            if transient and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise KafkaUnavailable(
                f"no end offsets for {topic} from {bootstrap_servers}: {exc.args[0].str()}"
            ) from None


def wait_for_broker(bootstrap_servers: str, timeout: float = 30.0, *, brokers: int = 1) -> None:
    """Block until the cluster answers a metadata request naming at least ``brokers`` brokers.

    Raises :class:`KafkaUnavailable` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    admin = _admin(bootstrap_servers)
    problem = "no answer"
    while True:
        left = deadline - time.monotonic()
        try:
            metadata = admin.list_topics(timeout=max(0.5, min(3.0, left)))
            if len(metadata.brokers) >= brokers:
                return
            problem = f"{len(metadata.brokers)} of {brokers} brokers registered"
        except KafkaException as exc:
            problem = exc.args[0].str()
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(f"no Kafka cluster answering at {bootstrap_servers}: {problem}")
        time.sleep(0.2)


def await_broker(bootstrap_servers: str, seconds: float) -> None:
    """:func:`wait_for_broker` at a command's start: ``seconds`` is the grace the user set
    (AQ_KAFKA_WAIT_SECONDS) for a broker still starting, and the error says so in one line."""
    try:
        wait_for_broker(bootstrap_servers, timeout=seconds)
    except KafkaUnavailable as exc:
        raise KafkaUnavailable(
            f"cannot reach Kafka: {exc} (waited {seconds:g} s, AQ_KAFKA_WAIT_SECONDS)"
        ) from None


def _admin(bootstrap_servers: str) -> AdminClient:
    return AdminClient(client_config(bootstrap_servers, "aqi-admin"))


def _metadata(admin: AdminClient, bootstrap_servers: str, topic: str | None = None):
    try:
        return admin.list_topics(topic=topic, timeout=_REQUEST_TIMEOUT_S)
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"no Kafka broker answering at {bootstrap_servers}: {exc.args[0].str()}"
        ) from None
