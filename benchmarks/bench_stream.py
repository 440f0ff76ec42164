"""Benchmark `aqi stream --available-now`: Kafka -> parse -> Bronze + raw PostgreSQL (events/s).

Run with `make bench`. A throw-away AQ_HOME on free ports; EVENTS simulated events are put on
the embedded Kafka (3 partitions), then drained by the real command with its defaults.
Reports:

- the wall time of the whole command (Spark start-up included);
- the rate from the first micro-batch's start to the last one's end (Spark start excluded),
  from raw.stream_batches;
- the COPY-into-raw limit: the same rows COPYed by PostgreSQL alone into a table shaped and
  indexed like raw.openaq_measurements, and the stream's rate as a share of it (the
  stream cannot be faster than its sink).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from _services import temporary_services

from aqi.core.connections import database_url, kafka_bootstrap_servers
from ingestion.producer import EventProducer
from ingestion.simulator import SimulationConfig, simulate

EVENTS = 1_000_000
#: 200 locations over 45 days: ~1.06M events over 46 event dates, as a backfill would be
CONFIG = SimulationConfig(locations=200, days=45, seed=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=EVENTS)
    args = parser.parse_args()
    with temporary_services() as settings:
        bootstrap = kafka_bootstrap_servers(settings)
        sent = _produce(bootstrap, settings.kafka_topic, args.events)
        env = {**os.environ, "AQ_HOME": str(settings.aq_home), "AQ_PG_PORT": str(settings.pg_port),
               "AQ_KAFKA_PORT": str(settings.kafka_port)}  # fmt: skip
        aqi = str(Path(sys.executable).parent / "aqi")
        start = time.perf_counter()
        subprocess.run([aqi, "stream", "--available-now"], env=env, check=True,
                       stdout=sys.stderr)  # fmt: skip
        wall = time.perf_counter() - start
        url = database_url(settings)
        with psycopg.connect(url) as conn:
            rows, batches, span = conn.execute(
                "select sum(rows_inserted), count(*), "
                "extract(epoch from max(finished_at) - min(started_at)) from raw.stream_batches"
            ).fetchone()
        assert rows == sent, (rows, sent)
        copy_rate = _copy_limit(url)
    stream_rate = sent / float(span)
    print(f"Machine: {platform.node()} · {os.cpu_count()} cores · Python {sys.version.split()[0]}")
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M')} · {CONFIG}\n")
    print("| measurement | result |\n|---|---|")
    print(f"| aqi stream --available-now, {sent:,} events, wall time incl. Spark start | "
          f"{wall:.1f} s ({sent / wall:,.0f} events/s) |")  # fmt: skip
    print(f"| the same from the first micro-batch's start to the last one's end ({batches} "
          f"batches) | {float(span):.1f} s (**{stream_rate:,.0f} events/s**) |")  # fmt: skip
    print(f"| COPY of the same rows into a raw-shaped indexed table (PostgreSQL alone) | "
          f"{copy_rate:,.0f} rows/s |")  # fmt: skip
    print(f"| stream / COPY limit | {stream_rate / copy_rate:.2f} |")


def _produce(bootstrap: str, topic: str, count: int) -> int:
    sent = 0
    with EventProducer(bootstrap, topic, partitions=3) as producer:
        batch = []
        for event in simulate(CONFIG):
            batch.append(event)
            if len(batch) == 20_000:
                sent += producer.send(batch)
                batch = []
            if sent + len(batch) == count:
                break
        sent += producer.send(batch)
    return sent


def _copy_limit(url: str) -> float:
    """Rows/s PostgreSQL COPYs into a copy of raw.openaq_measurements (same indexes)."""
    with psycopg.connect(url, autocommit=True) as conn:
        buffer = io.BytesIO()
        with conn.cursor().copy("copy raw.openaq_measurements to stdout") as copy:
            for chunk in copy:
                buffer.write(chunk)
        conn.execute("create table raw.copy_limit (like raw.openaq_measurements including all)")
        try:
            start = time.perf_counter()
            with conn.transaction(), conn.cursor().copy("copy raw.copy_limit from stdin") as copy:
                copy.write(buffer.getvalue())
            elapsed = time.perf_counter() - start
            rows = conn.execute("select count(*) from raw.copy_limit").fetchone()[0]
        finally:
            conn.execute("drop table raw.copy_limit")
    return rows / elapsed


if __name__ == "__main__":
    main()
