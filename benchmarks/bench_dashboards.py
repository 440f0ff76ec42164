"""Benchmark the dashboard: every chart's data request, cold (empty results cache) and warm.

    python benchmarks/bench_dashboards.py --rows 10000000

Loads N simulated events (300 locations, ending now) straight into raw.openaq_measurements of
a throw-away embedded PostgreSQL, builds the warehouse (dbt seed + run), runs the AQI alert
step, vacuums (so that autovacuum does not run during the measurement), starts the embedded
Superset (`aqi dashboards up`) and then measures a dashboard load the way the browser makes
it: the data requests of all its charts at once (6 in flight, as a browser's per-host limit),
each timed from request to full answer.

- cold: the results cache emptied (what openaq_elt's publish task does) before each load;
- warm: loads right after another load, served from the cache;
- warm, one at a time: each chart's request alone (no other in flight), from the cache: the
  server's own time, without the wait for the other charts on 2 cores.

Reports per chart the median and p95 over the loads, and the whole load's wall time. Goal
(issue 18): warm p95 per chart <= 200 ms, cold <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import psycopg
from _services import settings_env, temporary_services

from aqi.core.connections import database_url
from aqi.core.warehouse import DBT_PROJECT_DIR, dbt_env
from aqi.services.superset import EmbeddedSuperset
from aqi.services.superset_cache import clear_results_cache
from ingestion.simulator import SimulationConfig, simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from superset_support import superset_api
from warehouse_support import load_raw_events

EVENTS_PER_LOCATION_DAY = 122  # what the simulator makes on average (bench_warehouse.py)
IN_FLIGHT = 6


def _run(args: list[str], env: dict[str, str]) -> None:
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)


def _load(api, charts: list[dict], in_flight: int = IN_FLIGHT) -> tuple[float, dict[str, float]]:
    """One dashboard load: (wall seconds, seconds per chart)."""

    def one(chart: dict) -> tuple[str, float]:
        start = time.perf_counter()
        request = urllib.request.Request(
            f"{api.base}/api/v1/chart/{chart['id']}/data/",
            headers={"Authorization": f"Bearer {api.token}"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            body = json.load(response)
        assert all(r.get("status") == "success" for r in body["result"]), body
        return chart["slice_name"], time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        times = dict(pool.map(one, charts))
    return time.perf_counter() - start, times


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--locations", type=int, default=300)
    parser.add_argument("--loads", type=int, default=20, help="loads of each kind")
    args = parser.parse_args()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    days = args.rows / EVENTS_PER_LOCATION_DAY / args.locations * 1.05
    config = SimulationConfig(locations=args.locations, days=days, seed=3, end=end)
    aqi = str(Path(sys.executable).with_name("aqi"))
    dbt = str(Path(sys.executable).with_name("dbt"))
    with temporary_services() as settings:
        env = settings_env(settings)
        started = time.perf_counter()
        loaded = load_raw_events(database_url(settings), islice(simulate(config), args.rows))
        print(f"loaded {loaded:,} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        started = time.perf_counter()
        dbt_args = ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
        for command in ("seed", "run"):
            _run([dbt, command, *dbt_args, "-q"], dbt_env(settings))
        _run([aqi, "aqi-alerts"], env)
        print(f"warehouse built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        # a warehouse that has been running is vacuumed: without this, autovacuum's pass over
        # the 10M freshly inserted raw rows would share the 2 cores with the measurement
        started = time.perf_counter()
        with psycopg.connect(database_url(settings), autocommit=True) as conn:
            conn.execute("vacuum (analyze)")
        print(f"vacuumed in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        _run([aqi, "dashboards", "up"], env)
        try:
            api = superset_api(settings)
            charts = api.get("/api/v1/dashboard/air-quality/charts")["result"]
            cold: list[tuple[float, dict[str, float]]] = []
            warm: list[tuple[float, dict[str, float]]] = []
            alone: list[tuple[float, dict[str, float]]] = []
            _load(api, charts)  # Superset's own first-request costs (imports, pools)
            for _ in range(args.loads):
                clear_results_cache(settings, echo=lambda line: None)
                cold.append(_load(api, charts))
                warm.append(_load(api, charts))
                alone.append(_load(api, charts, in_flight=1))
        finally:
            EmbeddedSuperset(settings).down(echo=lambda line: None)
    print(f"\n{loaded:,} raw rows, {args.locations} locations, {days:.0f} days; "
          f"{len(charts)} charts, {IN_FLIGHT} requests in flight, {args.loads} loads each\n")  # fmt: skip
    print("| chart | cold median | cold p95 | warm median | warm p95 | warm alone median "
          "| warm alone p95 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")

    def cells(loads: list[tuple[float, dict[str, float]]], name: str | None) -> str:
        values = [wall if name is None else times[name] for wall, times in loads]
        return f"{statistics.median(values) * 1000:.0f} ms | {_p95(values) * 1000:.0f} ms"

    for chart in charts:
        name = chart["slice_name"]
        print(f"| {name} | {cells(cold, name)} | {cells(warm, name)} | {cells(alone, name)} |")
    print(f"| **whole dashboard (wall)** | {cells(cold, None)} | {cells(warm, None)} "
          f"| {cells(alone, None)} |")  # fmt: skip


if __name__ == "__main__":
    main()
