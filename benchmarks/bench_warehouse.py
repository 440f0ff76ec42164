"""Benchmark the dbt warehouse: full build vs incremental build after one more hour of data.

    python benchmarks/bench_warehouse.py --rows 1000000
    python benchmarks/bench_warehouse.py --rows 10000000

Loads N simulated events straight into raw.openaq_measurements of a throw-away embedded
PostgreSQL, times a full `dbt build` of the models (no tests), adds one more hour of data
for every location, and times the incremental build. Goal (issue): incremental <= 5% of full
at 10M rows, growing by at most 1.5x from 1M to 10M.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

from _services import temporary_services

from aqi.connections import database_url
from aqi.warehouse import DBT_PROJECT_DIR, dbt_env
from ingestion.simulator import SimulationConfig, simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from warehouse_support import load_raw_events

END = datetime(2026, 1, 1, tzinfo=UTC)
EVENTS_PER_LOCATION_DAY = 122  # what the simulator makes on average


def _dbt(settings, *args: str) -> tuple[float, float]:
    """(wall seconds of the dbt command, seconds spent in the models themselves)."""
    start = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), *args, "--project-dir", str(DBT_PROJECT_DIR),
         "--profiles-dir", str(DBT_PROJECT_DIR), "-q"],
        env=dbt_env(settings), check=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    results = json.loads((DBT_PROJECT_DIR / "target" / "run_results.json").read_text())
    return wall, sum(r["execution_time"] for r in results["results"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--locations",
        type=int,
        default=300,
        help="the same at every size, so '+1 hour' is the same amount of new data",
    )
    args = parser.parse_args()
    locations = args.locations
    days = args.rows / EVENTS_PER_LOCATION_DAY / locations * 1.05
    config = SimulationConfig(locations=locations, days=days, seed=3, end=END)
    with temporary_services() as settings:
        url = database_url(settings)
        start = time.perf_counter()
        loaded = load_raw_events(url, islice(simulate(config), args.rows))
        load_s = time.perf_counter() - start
        _dbt(settings, "seed")
        full_s, full_models = _dbt(settings, "run")
        one_hour = SimulationConfig(
            locations=locations, days=1 / 24, seed=9, end=END + timedelta(hours=1)
        )
        added = load_raw_events(url, simulate(one_hour))
        incremental_s, incremental_models = _dbt(settings, "run")
        refresh_s, _ = _dbt(settings, "run", "--full-refresh")
    print(
        f"rows={loaded} locations={locations} days={days:.1f} load={load_s:.0f}s", file=sys.stderr
    )
    print(f"| {loaded:,} ({locations} locations, {days:.0f} days) | {full_s:.1f} s ({full_models:.1f} s) "
          f"| {added:,} | {incremental_s:.1f} s ({incremental_models:.1f} s) "
          f"| {100 * incremental_s / full_s:.1f}% ({100 * incremental_models / full_models:.1f}%) "
          f"| {refresh_s:.1f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
