"""Benchmark putting simulated events on Kafka: `aqi replay --simulate` and the two clients.

Run with `make bench`. A throw-away AQ_HOME on free ports (the embedded Kafka). Reports:

- the simulator alone (events/s, no Kafka);
- `aqi replay --simulate` as a user runs it (wall time of the command, Python start-up
  included) into the embedded Kafka;
- the client choice: the same pre-encoded events sent by kafka-python and by
  confluent-kafka, each with acks=all, the idempotent producer and its fastest compression
  that Spark's Kafka source reads. The project keeps one client (confluent-kafka): this is
  the measurement behind that choice (kafka-python is installed for this benchmark only).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

from _services import temporary_services

from aqi.core.connections import kafka_bootstrap_servers
from aqi.core.topics import client_config, end_offsets, ensure_topic
from ingestion.events import event_key
from ingestion.producer import encode_event
from ingestion.simulator import SimulationConfig, simulate

LOCATIONS, DAYS = 200, 30
CLIENT_EVENTS = 300_000


def main() -> None:
    config = SimulationConfig(locations=LOCATIONS, days=DAYS, seed=1)
    start = time.perf_counter()
    generated = sum(1 for _ in simulate(config))
    simulate_s = time.perf_counter() - start
    rows = [(f"simulator alone ({generated:,} events)", f"{generated / simulate_s:,.0f} events/s")]

    with temporary_services() as settings:
        bootstrap = kafka_bootstrap_servers(settings)
        env = {**os.environ, "AQ_HOME": str(settings.aq_home), "AQ_PG_PORT": str(settings.pg_port),
               "AQ_KAFKA_PORT": str(settings.kafka_port)}  # fmt: skip
        aqi = str(Path(sys.executable).parent / "aqi")
        start = time.perf_counter()
        result = subprocess.run(
            [aqi, "replay", "--simulate", "--locations", str(LOCATIONS), "--days", str(DAYS),
             "--seed", "1"],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        replay_s = time.perf_counter() - start
        sent = int(re.search(r"([\d,]+) events in", result.stdout).group(1).replace(",", ""))
        assert sent == sum(end_offsets(bootstrap, settings.kafka_topic).values())
        label = (f"`aqi replay --simulate --locations {LOCATIONS} --days {DAYS}` "
                 f"({sent:,} events), wall time of the command")  # fmt: skip
        rows.append((label, f"{replay_s:.1f} s (**{sent / replay_s:,.0f} events/s**)"))

        messages = [(event_key(e), encode_event(e)) for e in islice(simulate(config), CLIENT_EVENTS)]
        for name, send in (("confluent-kafka (lz4)", _confluent), ("kafka-python (gzip)", _kafka_python)):
            topic = f"bench.{name.split()[0]}"
            ensure_topic(bootstrap, topic, 3)
            start = time.perf_counter()
            send(bootstrap, topic, messages)
            elapsed = time.perf_counter() - start
            assert sum(end_offsets(bootstrap, topic).values()) == len(messages)
            rows.append((f"{name}: {len(messages):,} pre-encoded events, acks=all, idempotent",
                         f"{len(messages) / elapsed:,.0f} events/s"))  # fmt: skip

    print(f"Machine: {platform.node()} · {os.cpu_count()} cores · Python {sys.version.split()[0]}")
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def _confluent(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    producer = Producer(client_config(bootstrap, "bench", acks="all", **{
        "enable.idempotence": True, "compression.type": "lz4", "linger.ms": 20,
        "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000}))  # fmt: skip
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0


def _kafka_python(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    """kafka-python's best here: gzip (it has no lz4 without an extra package), big batches."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                             compression_type="gzip", linger_ms=20, batch_size=256 * 1024)  # fmt: skip
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


if __name__ == "__main__":
    main()
