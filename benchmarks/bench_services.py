"""Benchmark the embedded services: start-up times, broker produce/read rates, end-offset probe.

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

from _services import temporary_settings
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from aqi.services import services_down, services_up
from aqi.topics import end_offsets, ensure_topic

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
        rows.append(("services up, first time (initdb + start + topic)",
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
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        start = time.perf_counter()
        for i in range(MESSAGES):
            producer.send("bench", key=str(i % 500).encode(), value=payload)
        producer.flush()
        produce_s = time.perf_counter() - start
        producer.close()
        rows.append((f"produce {MESSAGES:,} msgs of {len(payload)} B (kafka-python, acks=all)",
                     f"{MESSAGES / produce_s:,.0f} msg/s"))  # fmt: skip

        probes = []
        for _ in range(5):
            start = time.perf_counter()
            ends = end_offsets(bootstrap, "bench")
            probes.append(time.perf_counter() - start)
        assert sum(ends.values()) == MESSAGES, ends
        rows.append(("aqi.topics.end_offsets, 3 partitions (median of 5)",
                     f"{statistics.median(probes) * 1000:.0f} ms"))  # fmt: skip

        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        tps = [TopicPartition("bench", p) for p in ends]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        start, read = time.perf_counter(), 0
        while read < MESSAGES:
            read += sum(len(v) for v in consumer.poll(timeout_ms=2000).values())
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
