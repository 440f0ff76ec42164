"""Kafka topic helpers that stay correct on every broker the project runs on.

The embedded broker (Tansu 0.6) answers ListOffsets with a wrong "latest" offset: the start
of the last written batch + 1, while records past it exist. Fetch responses carry the right
high watermark. :func:`end_offsets` therefore asks ListOffsets first and then probes each
partition with one fetch from just before the reported end, reading the high watermark the
fetch returns; on a correct broker (Apache Kafka) the probe changes nothing. Any code that
needs "where does this partition end" (Spark's source, lag metrics, tests) must use it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

__all__ = ["end_offsets", "ensure_topic", "topic_partitions", "wait_for_broker"]

_PROBE_WAIT_MS = 50


def ensure_topic(bootstrap_servers: str, topic: str, partitions: int) -> bool:
    """Create ``topic`` with ``partitions`` partitions unless it exists. True if created."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="aqi-admin")
    try:
        if topic in admin.list_topics():
            return False
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])
        except TopicAlreadyExistsError:
            return False
    finally:
        admin.close()
    # metadata can lag creation by a moment; wait until the partitions are visible
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if len(topic_partitions(bootstrap_servers, topic)) == partitions:
            break
        time.sleep(0.2)
    return True


def topic_partitions(bootstrap_servers: str, topic: str) -> list[int]:
    """Partition ids of ``topic`` (empty if it does not exist)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        return sorted(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close()


def end_offsets(
    bootstrap_servers: str, topic: str, partitions: Iterable[int] | None = None
) -> dict[int, int]:
    """The true end offset (offset of the next record to be written) of each partition."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=_PROBE_WAIT_MS,
        max_partition_fetch_bytes=1024 * 1024,
    )
    try:
        ids = (
            sorted(partitions)
            if partitions is not None
            else sorted(consumer.partitions_for_topic(topic) or ())
        )
        tps = [TopicPartition(topic, p) for p in ids]
        if not tps:
            return {}
        reported = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(reported[tp] - 1, starts[tp]))
        # one fetch per partition carries its high watermark; a few polls collect them all
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            consumer.poll(timeout_ms=200, max_records=1, update_offsets=False)
            if all(consumer.highwater(tp) is not None for tp in tps):
                break
        result = {}
        for tp in tps:
            high = consumer.highwater(tp)
            if high is None:
                raise KafkaError(f"no fetch response for {tp.topic}[{tp.partition}] within 10 s")
            result[tp.partition] = max(reported[tp], high)
        return result
    finally:
        consumer.close()


def wait_for_broker(bootstrap_servers: str, timeout: float = 30.0) -> None:
    """Block until the broker answers a metadata request, or raise ``KafkaError``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap_servers, client_id="aqi-probe",
                request_timeout_ms=3000,
            )  # fmt: skip
        except KafkaError as exc:
            last = exc
            time.sleep(0.3)
            continue
        try:
            admin.list_topics()
            return
        except KafkaError as exc:
            last = exc
            time.sleep(0.3)
        finally:
            admin.close()
    raise KafkaError(f"no Kafka broker answering at {bootstrap_servers}: {last}")
