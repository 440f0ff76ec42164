"""Benchmark produce -> visible in raw: a steady RATE events/s for DURATION, default trigger.

Run with `make bench`. A throw-away AQ_HOME on free ports; a long-running `aqi stream` (its
defaults: trigger, batch size) reads the embedded Kafka while this process produces simulated
events at a steady rate with the project's producer. An event's latency is the time from the
moment it was handed to the producer (its Kafka timestamp, set by the client at that moment)
to the moment its row was written to raw.openaq_measurements (``loaded_at``, the insert's
clock; the batch commits right after). Reports p50/p95/p99/max over every event.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from _services import temporary_services

from aqi.config import STREAM_TRIGGER_SECONDS
from aqi.connections import database_url, kafka_bootstrap_servers
from ingestion.producer import EventProducer
from ingestion.simulator import SimulationConfig, simulate

RATE = 1_000
DURATION_S = 300
CONFIG = SimulationConfig(locations=300, days=30, seed=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=RATE, help="events a second")
    parser.add_argument("--seconds", type=int, default=DURATION_S)
    args = parser.parse_args()
    with temporary_services() as settings:
        bootstrap = kafka_bootstrap_servers(settings)
        env = {**os.environ, "AQ_HOME": str(settings.aq_home), "AQ_PG_PORT": str(settings.pg_port),
               "AQ_KAFKA_PORT": str(settings.kafka_port)}  # fmt: skip
        aqi = str(Path(sys.executable).parent / "aqi")
        stream = subprocess.Popen([aqi, "stream"], env=env, stdout=sys.stderr,
                                  start_new_session=True)  # fmt: skip
        url = database_url(settings)
        try:
            _wait_for_stream(url, stream)
            sent = _produce_steadily(bootstrap, settings.kafka_topic, args.rate, args.seconds)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and _count(url) < sent:
                time.sleep(1)
        finally:
            os.killpg(stream.pid, signal.SIGTERM)
            stream.wait(timeout=120)
        with psycopg.connect(url) as conn:
            count, p50, p95, p99, worst = conn.execute(
                "select count(*), "
                + ", ".join(
                    f"percentile_cont({q}) within group (order by "
                    "extract(epoch from loaded_at - kafka_timestamp))"
                    for q in (0.5, 0.95, 0.99)
                )
                + ", max(extract(epoch from loaded_at - kafka_timestamp)) "
                "from raw.openaq_measurements"
            ).fetchone()
    assert count == sent, (count, sent)
    print(f"Machine: {platform.node()} · {os.cpu_count()} cores · Python {sys.version.split()[0]}")
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M')} · trigger {STREAM_TRIGGER_SECONDS:g} s\n")
    print("| measurement | result |\n|---|---|")
    print(f"| {args.rate:,} events/s for {args.seconds} s ({sent:,} events): produce -> visible "
          f"in raw, p50 / **p95** / p99 / max | {p50:.2f} / **{p95:.2f}** / {p99:.2f} / "
          f"{worst:.2f} s |")  # fmt: skip


def _wait_for_stream(url: str, stream: subprocess.Popen) -> None:
    """Until the stream's first (empty-topic) trigger ran: raw exists and Spark is warm."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if stream.poll() is not None:
            raise SystemExit("aqi stream stopped")
        try:
            _count(url)
            time.sleep(5)  # let the query start its first trigger
            return
        except psycopg.Error:
            time.sleep(1)
    raise SystemExit("aqi stream did not start")


def _produce_steadily(bootstrap: str, topic: str, rate: int, seconds: int) -> int:
    """``rate`` events a second in ten small sends a second, each on the clock."""
    events = simulate(CONFIG)
    per_tick = max(1, rate // 10)
    sent = 0
    with EventProducer(bootstrap, topic, partitions=3, linger_ms=5) as producer:
        start = time.monotonic()
        for tick in range(seconds * 10):
            batch = [next(events) for _ in range(per_tick)]
            sent += producer.send(batch)
            pause = start + (tick + 1) / 10 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    return sent


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from raw.openaq_measurements").fetchone()[0]


if __name__ == "__main__":
    main()
