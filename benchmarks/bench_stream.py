"""Benchmark `aqi stream --available-now`: Kafka -> parse -> Bronze + raw PostgreSQL (rows/s).

Run with `make bench`. A throw-away AQ_HOME on free ports; 200,000 simulated events are put
on the embedded broker, then drained by the real command. Reports the wall time of the
whole command (Spark start-up included) and the rate over the micro-batches alone, from
raw.stream_batches.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import psycopg
from _services import temporary_services

from aqi.connections import database_url, kafka_bootstrap_servers
from ingestion.producer import EventProducer
from ingestion.simulator import SimulationConfig, simulate

EVENTS = 200_000
MAX_PER_TRIGGER = 50_000


def main() -> None:
    with temporary_services() as settings:
        bootstrap = kafka_bootstrap_servers(settings)
        with EventProducer(bootstrap, settings.kafka_topic) as producer:
            batch = []
            for event in islice(simulate(SimulationConfig(locations=80, days=30, seed=2)), EVENTS):
                batch.append(event)
                if len(batch) == 20_000:
                    producer.send(batch)
                    batch = []
            producer.send(batch)
        env = {**os.environ, "AQ_HOME": str(settings.aq_home), "AQ_PG_PORT": str(settings.pg_port),
               "AQ_KAFKA_PORT": str(settings.kafka_port)}  # fmt: skip
        aqi = str(Path(sys.executable).parent / "aqi")
        start = time.perf_counter()
        subprocess.run(
            [aqi, "stream", "--available-now", "--max-offsets-per-trigger", str(MAX_PER_TRIGGER)],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wall = time.perf_counter() - start
        with psycopg.connect(database_url(settings)) as conn:
            rows, batches_ms, batches = conn.execute(
                "select sum(rows_inserted), sum(duration_ms), count(*) from raw.stream_batches"
            ).fetchone()
    assert rows == EVENTS, rows
    print("| measurement | result |\n|---|---|")
    print(f"| aqi stream --available-now, {EVENTS:,} events, wall time incl. Spark start | "
          f"{wall:.1f} s ({EVENTS / wall:,.0f} events/s) |")  # fmt: skip
    print(f"| micro-batches only ({batches} of <= {MAX_PER_TRIGGER:,}) | "
          f"{EVENTS / (batches_ms / 1000):,.0f} events/s |")  # fmt: skip


if __name__ == "__main__":
    main()
