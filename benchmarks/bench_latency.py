"""Benchmark produce -> visible in raw: a steady RATE events/s for DURATION, default trigger.

Run with `make bench`. A throw-away AQ_HOME on free ports; a long-running `aqi stream` (its
defaults: trigger, batch size) reads the embedded Kafka while this process produces simulated
events at a steady rate with the project's producer. An event's latency is the time from the
moment it was handed to the producer (its Kafka timestamp, set by the client at that moment)
to the moment its row was written to raw.openaq_measurements (``loaded_at``, the insert's
clock; the batch commits right after). Reports p50/p95/p99/max over the steady phase: a
warm-up of WARM_UP_S at the same rate comes first and must be in raw before the measured
phase starts (Spark's start, its first micro-batches and the JIT are a start-up cost, not the
steady state); the figure over every event, warm-up included, is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from _services import temporary_services

from aqi.core.config import STREAM_TRIGGER_SECONDS
from aqi.core.connections import database_url, kafka_bootstrap_servers
from ingestion.producer import EventProducer
from ingestion.simulator import SimulationConfig, simulate

RATE = 1_000
DURATION_S = 300
WARM_UP_S = 30
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
        events = simulate(CONFIG)
        try:
            _wait_for_stream(url, stream)
            warm = _produce_steadily(bootstrap, settings.kafka_topic, events, args.rate, WARM_UP_S)
            _wait_for_rows(url, warm)
            with psycopg.connect(url) as conn:
                steady_from = conn.execute("select now()").fetchone()[0]
            sent = _produce_steadily(bootstrap, settings.kafka_topic, events, args.rate,
                                     args.seconds)  # fmt: skip
            _wait_for_rows(url, warm + sent)
        finally:
            # the stream stops Spark itself on SIGTERM; its process group only if it hangs
            stream.send_signal(signal.SIGTERM)
            try:
                stream.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(stream.pid, signal.SIGKILL)
        steady = _percentiles(url, "kafka_timestamp >= %s", (steady_from,))
        overall = _percentiles(url, "true", ())
    assert steady[0] == sent and overall[0] == warm + sent, (steady, overall, warm, sent)
    print(f"Machine: {platform.node()} · {os.cpu_count()} cores · Python {sys.version.split()[0]}")
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M')} · trigger {STREAM_TRIGGER_SECONDS:g} s\n")
    print("| measurement | result |\n|---|---|")
    _, p50, p95, p99, worst = steady
    print(f"| {args.rate:,} events/s for {args.seconds} s ({sent:,} events) after a "
          f"{WARM_UP_S} s warm-up: produce -> visible in raw, p50 / **p95** / p99 / max | "
          f"{p50:.2f} / **{p95:.2f}** / {p99:.2f} / {worst:.2f} s |")  # fmt: skip
    _, p50, p95, p99, worst = overall
    print(f"| the same over every event, warm-up included (Spark's first batches) | "
          f"{p50:.2f} / {p95:.2f} / {p99:.2f} / {worst:.2f} s |")  # fmt: skip


def _percentiles(url: str, where: str, params: tuple) -> tuple:
    """count, p50, p95, p99, max of produce -> raw, in seconds, over the rows ``where``."""
    latency = "extract(epoch from loaded_at - kafka_timestamp)"
    quantiles = ", ".join(
        f"percentile_cont({q}) within group (order by {latency})" for q in (0.5, 0.95, 0.99)
    )
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"select count(*), {quantiles}, max({latency}) "
            f"from raw.openaq_measurements where {where}",
            params,
        ).fetchone()


def _wait_for_rows(url: str, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _count(url) < count:
        time.sleep(1)


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


def _produce_steadily(
    bootstrap: str, topic: str, events: Iterator[dict[str, Any]], rate: int, seconds: int
) -> int:
    """``rate`` events a second in ten small sends a second, each on the clock."""
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
