"""The embedded Apache Kafka keeps every keyed message, and the producer never loses one silently.

Against the session's real broker (started by `aqi services up`), with the project's one
Kafka client (confluent-kafka): keyed messages read back by partition and offset, end offsets,
and the pipelined producer's promise (callbacks in order, only after acknowledgement, never
after a failure).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict

import pytest
from confluent_kafka import Producer
from conftest import isolated_env, read_partition, run_aqi

from aqi.core.config import load_settings
from aqi.core.connections import kafka_bootstrap_servers
from aqi.core.topics import client_config, end_offsets, ensure_topic, topic_partitions
from aqi.services.kafka import EmbeddedKafka
from ingestion.producer import EventProducer, ProducerError

pytestmark = pytest.mark.integration

MESSAGES = 10_000


def test_10k_keyed_messages_read_back_by_partition_and_offset(services: dict) -> None:
    bootstrap = services["kafka"]["bootstrap_servers"]
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    assert ensure_topic(bootstrap, topic, 3) is True
    assert ensure_topic(bootstrap, topic, 3) is False  # idempotent
    assert topic_partitions(bootstrap, topic) == [0, 1, 2]

    written: dict[int, dict[int, tuple[bytes, int]]] = defaultdict(dict)
    failures = []

    def delivered(err, msg) -> None:
        if err is not None:
            failures.append(err)
        else:
            written[msg.partition()][msg.offset()] = (msg.key(), int(msg.value()))

    producer = Producer(client_config(bootstrap, "tests", acks="all", **{"linger.ms": 5}))
    for i in range(MESSAGES):
        producer.produce(topic, value=f"{i}".encode(), key=f"sensor-{i % 97}".encode(),
                         on_delivery=delivered)  # fmt: skip
        producer.poll(0)
    assert producer.flush(30) == 0
    assert failures == []
    assert sum(len(v) for v in written.values()) == MESSAGES
    assert set(written) == {0, 1, 2}, "97 keys should spread over all partitions"

    # the end offsets equal the records written
    ends = end_offsets(bootstrap, topic)
    assert ends == {p: max(offsets) + 1 for p, offsets in written.items()}
    assert sum(ends.values()) == MESSAGES

    # reading every partition up to those ends returns every message exactly once
    seen = Counter()
    key_partition: dict[bytes, set[int]] = defaultdict(set)
    for partition, end in ends.items():
        records = read_partition(bootstrap, topic, partition, 0, end)
        assert [r.offset() for r in records] == list(range(end))
        for r in records:
            assert written[partition][r.offset()] == (r.key(), int(r.value()))
            seen[int(r.value())] += 1
            key_partition[r.key()].add(partition)
    assert len(seen) == MESSAGES and set(seen.values()) == {1}
    assert all(len(parts) == 1 for parts in key_partition.values()), "a key moved partitions"


def test_end_offsets_follow_new_writes_and_empty_partitions(services: dict) -> None:
    bootstrap = services["kafka"]["bootstrap_servers"]
    topic = f"test.ends.{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, 2)
    assert end_offsets(bootstrap, topic) == {0: 0, 1: 0}
    producer = Producer(client_config(bootstrap, "tests", acks="all"))
    for n in (1, 5, 300):
        for _ in range(n):
            producer.produce(topic, value=b"x", partition=0)
        producer.flush(10)
    assert end_offsets(bootstrap, topic) == {0: 306, 1: 0}
    assert end_offsets(bootstrap, topic, [1]) == {1: 0}


def _events(n: int, sensor: int = 7) -> list[dict]:
    return [{"sensor_id": sensor, "n": i} for i in range(n)]


def test_producer_callbacks_run_in_order_after_acknowledgement(services: dict) -> None:
    bootstrap = services["kafka"]["bootstrap_servers"]
    topic = f"test.pipelined.{uuid.uuid4().hex[:8]}"
    done: list[int] = []
    with EventProducer(bootstrap, topic, partitions=3) as producer:
        for batch in range(20):
            producer.send(_events(500, sensor=batch), then=lambda b=batch: done.append(b))
        producer.send([], then=lambda: done.append(-1))  # a barrier after everything
    assert done == [*range(20), -1]
    assert producer.sent == 20 * 500
    assert sum(end_offsets(bootstrap, topic).values()) == 20 * 500


def test_producer_failure_is_raised_and_no_later_callback_runs(tmp_path) -> None:
    """A broker that dies under the producer: the send fails loudly, checkpoints stay put."""
    env = isolated_env(tmp_path / "aq")
    settings = load_settings(env, dotenv=None)
    assert run_aqi(["services", "up"], env, tmp_path, timeout=300).returncode == 0
    try:
        bootstrap = kafka_bootstrap_servers(settings)
        done: list[int] = []
        producer = EventProducer(bootstrap, "test.dies", partitions=1, delivery_timeout_ms=4000)
        producer.send(_events(100), then=lambda: done.append(1))
        producer.flush()
        assert done == [1]
        EmbeddedKafka(settings).kill(1)
        producer.send(_events(100), then=lambda: done.append(2))
        with pytest.raises(ProducerError, match="did not acknowledge"):
            producer.flush(timeout_s=30)
        assert done == [1], "a callback ran for events Kafka never acknowledged"
    finally:
        run_aqi(["services", "down"], env, tmp_path, timeout=300)
