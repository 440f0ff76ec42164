"""Hostile messages through the real stream: Kafka, Spark's Kafka source, raw, quarantine.

The nasty corpus of tests/event_fuzz.py (deep nesting, huge numbers, NaN, NUL, bytes that are
not UTF-8, a near-megabyte payload, tombstones, impossible periods, every timestamp spelling...)
and a seeded sample of the fuzzer's messages are produced between valid events. One
`aqi stream --available-now` must get through all of them (exit 0, no stop), put every
message exactly once in raw or in the quarantine with a reason, exactly as the contract's
independent judge says, and still deliver the valid events that follow.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer
from conftest import isolated_env, run_aqi
from event_fuzz import event_pool, hostile_message, judge, nasty_corpus
from stream_support import bronze_count

from aqi.core.topics import client_config, ensure_topic
from ingestion.producer import EventProducer

pytestmark = pytest.mark.integration

#: messages of the seeded fuzzer sent besides the hand-picked corpus
SAMPLE = 3000


def test_the_stream_gets_through_hostile_messages(tmp_path: Path, services, fresh_database) -> None:
    env = isolated_env(
        tmp_path / "aq",
        KAFKA_BOOTSTRAP_SERVERS=services["kafka"]["bootstrap_servers"],
        AQ_KAFKA_TOPIC=f"test.hostile.{uuid.uuid4().hex[:8]}",
        AQ_DATABASE_URL=fresh_database,
    )
    bootstrap, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["AQ_KAFKA_TOPIC"]
    ensure_topic(bootstrap, topic, 3)
    now = datetime.now(UTC)
    pool = event_pool(now)
    rng = random.Random(20261203)
    hostile = [m for _, m in nasty_corpus(pool, now)]
    hostile += [hostile_message(rng, pool, now) for _ in range(SAMPLE)]
    before, after = pool[:100], pool[100:200]

    with EventProducer(bootstrap, topic, partitions=3) as producer:
        producer.send(before)
    # (partition, offset) -> (value, Kafka timestamp) of each hostile message, as acknowledged
    sent: dict[tuple[int, int], tuple[bytes | None, datetime]] = {}

    def delivered(err, msg) -> None:
        assert err is None, err
        stamp = datetime.fromtimestamp(msg.timestamp()[1] / 1000, UTC)
        sent[(msg.partition(), msg.offset())] = (msg.value(), stamp)

    raw = Producer(client_config(bootstrap, "tests", acks="all"))
    for key, value in hostile:
        raw.produce(topic, value=value, key=key, on_delivery=delivered)
        raw.poll(0)
    assert raw.flush(60) == 0 and len(sent) == len(hostile)
    with EventProducer(bootstrap, topic, partitions=3) as producer:
        producer.send(after)

    result = run_aqi(["stream", "--available-now"], env, tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    with psycopg.connect(fresh_database) as conn:
        in_raw = {
            (p, o): ts
            for p, o, ts in conn.execute(
                "select kafka_partition, kafka_offset, kafka_timestamp from raw.openaq_measurements"
            )
        }
        quarantined = {
            (p, o): reason
            for p, o, reason in conn.execute(
                "select kafka_partition, kafka_offset, reason from raw.openaq_quarantine"
            )
        }
    # every message exactly once, in one of the two tables
    assert not set(in_raw) & set(quarantined)
    assert len(in_raw) + len(quarantined) == len(before) + len(hostile) + len(after)
    wrong = []
    for coordinates, (value, stamp) in sent.items():
        accepted = judge(value, stamp) is not None
        if accepted != (coordinates in in_raw) or (
            not accepted and not (quarantined.get(coordinates) or "").strip()
        ):
            shown = value[:100] if value is not None else None
            wrong.append((coordinates, quarantined.get(coordinates), shown))
    assert wrong == [], wrong[:10]
    # the valid events on both sides of the hostile ones all landed
    assert len(in_raw) == len(before) + len(after) + sum(
        judge(v, s) is not None for v, s in sent.values()
    )
    assert bronze_count(Path(env["AQ_HOME"])) == len(in_raw)
