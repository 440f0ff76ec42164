"""Benchmark the dbt warehouse: full build vs incremental build after one more hour of data.

    python benchmarks/bench_warehouse.py --rows 1000000
    python benchmarks/bench_warehouse.py --rows 10000000

Loads N simulated events straight into raw.openaq_measurements of a throw-away embedded
PostgreSQL, times a full `dbt run` of the models (no tests), then three times adds one more
hour of data for every location and times the incremental run (the median is reported, the
per-model times of that run go to stderr), then adds one more day for every location (a
backfill: 24x the rows of an hour) to show that the cost follows the new data. Goal (issue):
incremental <= 5% of full at 10M rows, growing by at most 1.5x from 1M to 10M.
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

from aqi.core.connections import database_url
from aqi.core.warehouse import DBT_PROJECT_DIR, dbt_env
from ingestion.simulator import SimulationConfig, simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from warehouse_support import load_raw_events

END = datetime(2026, 1, 1, tzinfo=UTC)
EVENTS_PER_LOCATION_DAY = 122  # what the simulator makes on average


def _dbt(settings, *args: str) -> tuple[float, float, dict[str, float]]:
    """(wall seconds of the dbt command, seconds in the models, seconds per model)."""
    start = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), *args, "--project-dir", str(DBT_PROJECT_DIR),
         "--profiles-dir", str(DBT_PROJECT_DIR), "-q"],
        env=dbt_env(settings), check=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    results = json.loads((DBT_PROJECT_DIR / "target" / "run_results.json").read_text())
    per_node = {r["unique_id"].rsplit(".", 1)[-1]: r["execution_time"] for r in results["results"]}
    return wall, sum(per_node.values()), per_node


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
        full_s, full_models, _ = _dbt(settings, "run")
        runs = []
        for hour in (1, 2, 3):
            one_hour = SimulationConfig(
                locations=locations, days=1 / 24, seed=8 + hour, end=END + timedelta(hours=hour)
            )
            added = load_raw_events(url, simulate(one_hour))
            runs.append((*_dbt(settings, "run"), added))
        median = sorted(runs, key=lambda run: run[0])[1]
        incremental_s, incremental_models, per_model, added = median
        one_day = SimulationConfig(
            locations=locations, days=1, seed=12, end=END + timedelta(days=1, hours=3)
        )
        day_added = load_raw_events(url, simulate(one_day))
        day_s, day_models, _ = _dbt(settings, "run")
        refresh_s, _, _ = _dbt(settings, "run", "--full-refresh")
    print(
        f"rows={loaded} locations={locations} days={days:.1f} load={load_s:.0f}s", file=sys.stderr
    )
    print(f"incremental runs (wall s): {[round(r[0], 2) for r in runs]}", file=sys.stderr)
    print("median incremental run, seconds per node:", file=sys.stderr)
    for node, seconds in per_model.items():
        print(f"  {node}: {seconds:.2f}", file=sys.stderr)
    print(f"| {loaded:,} ({locations} locations, {days:.0f} days) | {full_s:.1f} s ({full_models:.1f} s) "
          f"| {added:,} | {incremental_s:.1f} s ({incremental_models:.1f} s) "
          f"| {100 * incremental_s / full_s:.1f}% ({100 * incremental_models / full_models:.1f}%) "
          f"| {refresh_s:.1f} s | {day_added:,}: {day_s:.1f} s ({day_models:.1f} s) |")  # fmt: skip


if __name__ == "__main__":
    main()
