"""Benchmark the embedded services: start-up times, broker memory, produce/read rates.

Run with `make bench` (writes a Markdown table to stdout; copy it into docs/benchmarks.md
with the machine and date). Uses a throw-away AQ_HOME and free ports, so it never touches
running services.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

from _services import temporary_settings
from confluent_kafka import Consumer, Producer, TopicPartition

from aqi.core.topics import client_config, end_offsets, ensure_topic
from aqi.services import services_down, services_status, services_up

MESSAGES = 50_000


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    settings = temporary_settings()
    quiet = lambda line: None
    rows: list[tuple[str, str]] = []
    try:
        rows.append(("services up, first time (initdb, Kafka storage format, start, topic)",
                     f"{_timed(lambda: services_up(settings, quiet)):.2f} s"))  # fmt: skip
        rows.append(("services up, already running (no-op)",
                     f"{_timed(lambda: services_up(settings, quiet)):.2f} s"))  # fmt: skip
        services_down(settings, quiet)
        rows.append(("services up after down (existing cluster)",
                     f"{_timed(lambda: services_up(settings, quiet)):.2f} s"))  # fmt: skip
        rows.append(("services down", f"{_timed(lambda: services_down(settings, quiet)):.2f} s"))
        services_up(settings, quiet)

        bootstrap = f"127.0.0.1:{settings.kafka_port}"
        ensure_topic(bootstrap, "bench", 3)
        payload = b'{"sensor_id": 12345, "value": 12.3, "period_end": "2026-01-01T00:00:00Z"}' * 4
        producer = Producer(client_config(bootstrap, "bench", acks="all", **{
            "enable.idempotence": True, "compression.type": "lz4", "linger.ms": 5}))  # fmt: skip
        start = time.perf_counter()
        for i in range(MESSAGES):
            while True:
                try:
                    producer.produce("bench", value=payload, key=str(i % 500).encode())
                    break
                except BufferError:
                    producer.poll(0.01)
        assert producer.flush(60) == 0
        produce_s = time.perf_counter() - start
        rows.append((f"produce {MESSAGES:,} msgs of {len(payload)} B (confluent-kafka, acks=all)",
                     f"{MESSAGES / produce_s:,.0f} msg/s"))  # fmt: skip
        pid = services_status(settings)["kafka"]["pid"]
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        rss_kb = int(next(line for line in status if line.startswith("VmRSS")).split()[1])
        rows.append(("Kafka broker resident memory after that (heap capped at 512 MiB)",
                     f"{rss_kb / 1024:,.0f} MiB"))  # fmt: skip

        probes = []
        for _ in range(5):
            start = time.perf_counter()
            ends = end_offsets(bootstrap, "bench")
            probes.append(time.perf_counter() - start)
        assert sum(ends.values()) == MESSAGES, ends
        rows.append(("aqi.core.topics.end_offsets, 3 partitions (median of 5)",
                     f"{statistics.median(probes) * 1000:.0f} ms"))  # fmt: skip

        consumer = Consumer(client_config(bootstrap, "bench", **{"group.id": "bench",
                                                                 "enable.auto.commit": False}))
        consumer.assign([TopicPartition("bench", p, 0) for p in ends])
        start, read = time.perf_counter(), 0
        while read < MESSAGES:
            read += sum(1 for m in consumer.consume(10_000, timeout=2.0) if m.error() is None)
        read_s = time.perf_counter() - start
        consumer.close()
        rows.append(
            ("read back by partition/offset (assign + seek)", f"{MESSAGES / read_s:,.0f} msg/s")
        )
    finally:
        services_down(settings, quiet)

    print(f"Machine: {platform.node()} · {os.cpu_count()} cores · Python {sys.version.split()[0]}")
    print(f"Date: {time.strftime('%Y-%m-%d')}\n")
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
