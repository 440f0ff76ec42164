"""The embedded broker keeps every keyed message and the project knows where partitions end.

Tansu's ListOffsets answer is wrong (it reports the start of the last batch + 1), so the
project's `aqi.topics.end_offsets` must equal what was really written, and a reader that
trusts it must skip nothing.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from aqi.topics import end_offsets, ensure_topic, topic_partitions

pytestmark = pytest.mark.integration

MESSAGES = 10_000


def _read_partition(bootstrap: str, topic: str, partition: int, start: int, end: int) -> list:
    """Every record in [start, end) of one partition, by offset."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, start)
    records = []
    try:
        while consumer.position(tp) < end:
            batch = consumer.poll(timeout_ms=2000)
            if not batch:
                break
            records.extend(r for r in batch.get(tp, []) if r.offset < end)
    finally:
        consumer.close()
    return records


def test_10k_keyed_messages_read_back_by_partition_and_offset(services: dict) -> None:
    bootstrap = services["kafka"]["bootstrap_servers"]
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    assert ensure_topic(bootstrap, topic, 3) is True
    assert ensure_topic(bootstrap, topic, 3) is False  # idempotent
    assert topic_partitions(bootstrap, topic) == [0, 1, 2]

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    futures = []
    for i in range(MESSAGES):
        key = f"sensor-{i % 97}".encode()
        futures.append((key, i, producer.send(topic, key=key, value=f"{i}".encode())))
    producer.flush()
    written: dict[int, dict[int, tuple[bytes, int]]] = defaultdict(dict)
    for key, i, future in futures:
        meta = future.get(timeout=30)
        written[meta.partition][meta.offset] = (key, i)
    producer.close()
    assert sum(len(v) for v in written.values()) == MESSAGES
    assert set(written) == {0, 1, 2}, "97 keys should spread over all partitions"

    # the end offsets the project relies on equal the records written
    ends = end_offsets(bootstrap, topic)
    assert ends == {p: max(offsets) + 1 for p, offsets in written.items()}
    assert sum(ends.values()) == MESSAGES

    # reading every partition up to those ends returns every message exactly once
    seen = Counter()
    key_partition: dict[bytes, set[int]] = defaultdict(set)
    for partition, end in ends.items():
        records = _read_partition(bootstrap, topic, partition, 0, end)
        assert [r.offset for r in records] == list(range(end))
        for r in records:
            assert written[partition][r.offset] == (r.key, int(r.value))
            seen[int(r.value)] += 1
            key_partition[r.key].add(partition)
    assert len(seen) == MESSAGES and set(seen.values()) == {1}
    assert all(len(parts) == 1 for parts in key_partition.values()), "a key moved partitions"


def test_end_offsets_follow_new_writes_and_empty_partitions(services: dict) -> None:
    bootstrap = services["kafka"]["bootstrap_servers"]
    topic = f"test.ends.{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, 2)
    assert end_offsets(bootstrap, topic) == {0: 0, 1: 0}
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for n in (1, 5, 300):
        for i in range(n):
            producer.send(topic, value=b"x", partition=0)
        producer.flush()
    producer.close()
    assert end_offsets(bootstrap, topic) == {0: 306, 1: 0}
    assert end_offsets(bootstrap, topic, [1]) == {1: 0}
