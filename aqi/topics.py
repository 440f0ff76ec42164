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
import zlib
from collections.abc import Iterable, Mapping

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, OffsetOutOfRangeError, TopicAlreadyExistsError

__all__ = [
    "beginning_offsets",
    "end_offsets",
    "ensure_topic",
    "fingerprints",
    "record_fingerprint",
    "topic_partitions",
    "wait_for_broker",
]

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


def beginning_offsets(
    bootstrap_servers: str, topic: str, partitions: Iterable[int] | None = None
) -> dict[int, int]:
    """The earliest offset still stored in each partition (0 unless retention removed records).

    Readers compare a saved position with it: a position below it means records were deleted
    before they were read.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        ids = (
            sorted(partitions)
            if partitions is not None
            else sorted(consumer.partitions_for_topic(topic) or ())
        )
        if not ids:
            return {}
        starts = consumer.beginning_offsets([TopicPartition(topic, p) for p in ids])
        return {tp.partition: offset for tp, offset in starts.items()}
    finally:
        consumer.close()


def record_fingerprint(timestamp_ms: int, key: bytes | None, value: bytes | None) -> str:
    """A short identity of one record: its timestamp and a CRC of its key and value.

    An offset alone does not identify a record: after a topic is deleted and recreated (or the
    in-memory broker restarts) the same offset holds a different record. Comparing the
    fingerprint of the record before a saved position with the one stored next to it tells a
    reader whether the log it resumes is still the log it was reading.
    """
    return f"{timestamp_ms}:{zlib.crc32((key or b'') + (value or b''))}"


def fingerprints(
    bootstrap_servers: str,
    topic: str,
    offsets: Mapping[int, int],
    timeout_s: float = 10.0,
) -> dict[int, str | None]:
    """For each ``partition: offset``, the fingerprint of the record at ``offset - 1``.

    ``None`` when that record does not exist: the offset is 0, the partition or topic does not
    exist, the record is past the partition's end or before its beginning, or the offset holds
    no data record (a transaction marker or a compacted-away record). One fetch per partition
    (assign + seek, short fetch waits), so it costs about as much as :func:`end_offsets`.
    """
    result: dict[int, str | None] = {p: None for p, offset in offsets.items() if offset <= 0}
    wanted = {TopicPartition(topic, p): offset - 1 for p, offset in offsets.items() if offset > 0}
    if not wanted:
        return result
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="none",  # out of range must be reported, never silently reset
        fetch_max_wait_ms=_PROBE_WAIT_MS,
        max_partition_fetch_bytes=1024 * 1024,
    )
    try:
        existing = consumer.partitions_for_topic(topic) or set()
        for tp in [tp for tp in wanted if tp.partition not in existing]:
            result[tp.partition] = None
            del wanted[tp]
        if not wanted:
            return result
        consumer.assign(list(wanted))
        for tp, target in wanted.items():
            consumer.seek(tp, target)
        pending = set(wanted)

        def resolve(tp: TopicPartition, value: str | None) -> None:
            result[tp.partition] = value
            pending.discard(tp)
            consumer.pause(tp)

        deadline = time.monotonic() + timeout_s
        while pending:
            try:
                batch = consumer.poll(timeout_ms=100)
            except OffsetOutOfRangeError as exc:  # before the beginning (or past the end)
                out_of_range = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
                for tp in set(out_of_range) & pending:
                    resolve(tp, None)
                if not out_of_range:
                    raise
                continue
            for tp, records in batch.items():
                if tp in pending and records:
                    first = records[0]
                    found = first.offset == wanted[tp]
                    resolve(
                        tp,
                        record_fingerprint(first.timestamp, first.key, first.value)
                        if found
                        else None,
                    )
            for tp in list(pending):
                high = consumer.highwater(tp)
                if (high is not None and high <= wanted[tp]) or consumer.position(tp) > wanted[tp]:
                    # the fetch came back empty: the record is past the end, or skipped
                    resolve(tp, None)
            if pending and time.monotonic() > deadline:
                missing = ", ".join(f"{tp.topic}[{tp.partition}]@{wanted[tp]}" for tp in pending)
                raise KafkaError(f"no fetch response for {missing} within {timeout_s:g} s")
        return result
    finally:
        consumer.close()
