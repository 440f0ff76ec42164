"""Helpers for the tests that check the stream's output after a fault: unique events, what
raw and Bronze hold."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import psycopg
import pyarrow.dataset as ds

from ingestion.simulator import SimulationConfig, simulate


def unique_events(count: int, seed: int) -> list[dict]:
    """Simulated events, each (sensor, period end) once: a duplicate in raw is then an error."""
    config = SimulationConfig(locations=60, days=30, seed=seed, duplicate_share=0)
    events = []
    for event in simulate(config):
        events.append(event)
        if len(events) == count:
            break
    return events


def event_keys(events: list[dict]) -> Counter:
    return Counter((e["sensor_id"], e["period_end"]) for e in events)


def raw_keys(url: str) -> Counter:
    """(sensor, period end) -> how many times raw holds it."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("select sensor_id, period_end from raw.openaq_measurements").fetchall()
    return Counter((sensor, end.strftime("%Y-%m-%dT%H:%M:%SZ")) for sensor, end in rows)


def bronze_count(aq_home: Path) -> int:
    folder = aq_home / "bronze" / "openaq"
    return ds.dataset(folder, format="parquet", partitioning="hive").count_rows()
