"""Benchmark one openaq_elt run under the real scheduler (issue 16).

    python benchmarks/bench_dag.py tiny
    python benchmarks/bench_dag.py world --rows 10000000

``tiny``: 3 simulated locations x 2 days on the topic, drained into raw, then the embedded
Airflow (API server, scheduler, DAG processor, LocalExecutor) and runs triggered through
the REST API: the first run (empty warehouse, full build), then three runs after new data
each (the steady state, median reported): the last hour of the 3 locations simulated again
with another seed, ~30 events (a 15-minute window of 3 locations holds 0-15 events, as the
simulator holds back what would not yet be delivered, so some "steady" runs had nothing
new). Goal: start to end <= 30 s.

``world``: ``--rows`` simulated readings loaded straight into raw (like bench_warehouse.py),
one run to build the warehouse, then one world hour (150,000 readings over 30,000
locations) added to raw and one triggered run timed from drained raw to published gold,
gates and exports. Goal: <= 120 s, and the time in tests, gates and exports grows <= 1.5x
from 1M to 10M raw rows.

Each run's tasks and their seconds go to stderr; the last line is the row for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

from _services import settings_env, temporary_services

from aqi.core.connections import database_url
from aqi.services.airflow import DagRunResult, EmbeddedAirflow

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

AQI = str(Path(sys.executable).with_name("aqi"))


def _aqi(settings, *args: str, timeout: float = 1800) -> None:
    subprocess.run([AQI, *args], env=settings_env(settings), check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def _report(label: str, run: DagRunResult) -> None:
    print(f"{label}: {run.state} in {run.seconds:.1f} s", file=sys.stderr)
    for task in sorted(run.tasks, key=lambda t: t.start or datetime.max.replace(tzinfo=UTC)):
        took = f"{task.seconds:6.1f} s" if task.seconds is not None else "       -"
        begin = run.queued_at or run.start
        at = f"+{(task.start - begin).total_seconds():5.1f} s" if task.start and begin else ""
        print(f"  {at} {took}  {task.state:<8} {task.task_id}", file=sys.stderr)
    if run.state != "success":
        raise SystemExit(f"{label} failed: {run.failed_tasks()}")


def _phase_seconds(run: DagRunResult, prefixes: tuple[str, ...]) -> float:
    """Wall seconds from the first start to the last end of the tasks named ``prefixes``."""
    tasks = [t for t in run.tasks if t.task_id.startswith(prefixes) and t.start and t.end]
    if not tasks:
        return 0.0
    return (max(t.end for t in tasks) - min(t.start for t in tasks)).total_seconds()


def _dbt_test_seconds(settings, run: DagRunResult) -> float:
    """Seconds dbt spent in data tests during the run's build (summed over its threads), from
    the producer's task log (dbt's 'PASS ... in 0.31s' lines)."""
    log = (settings.airflow_home / "logs" / f"dag_id={run.dag_id}" / f"run_id={run.run_id}"
           / "task_id=dbt.dbt_producer_watcher" / "attempt=1.log")  # fmt: skip
    seconds = 0.0
    for line in log.read_text(errors="replace").splitlines():
        if match := re.search(
            r"(?:PASS|WARN|FAIL|ERROR) \S+ \.+ \S*\[\S*(?:PASS|WARN|FAIL|ERROR)\S* in ([\d.]+)s\]",
            line,
        ):
            seconds += float(match.group(1))
    return seconds


def tiny(args: argparse.Namespace) -> None:
    from spark_streaming.job import QUERY_NAME, stream_is_running

    with temporary_services() as settings:
        _aqi(settings, "replay", "--simulate", "--locations", "3", "--days", "2")
        _aqi(settings, "stream", "--available-now")
        _aqi(settings, "dbt", "parse", "--quiet")
        stream = None
        if args.stream == "running":
            # the production shape: a long-running `aqi stream`; the DAG's drain task waits
            # for it to reach the topic's end instead of starting Spark itself
            stream = subprocess.Popen([AQI, "stream"], env=settings_env(settings),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            deadline = time.monotonic() + 300
            while not stream_is_running(settings.checkpoints_dir / QUERY_NAME):
                if time.monotonic() > deadline or stream.poll() is not None:
                    raise SystemExit("aqi stream did not start")
                time.sleep(1)
        airflow = EmbeddedAirflow(settings)
        airflow.up(echo=lambda line: None)
        try:
            first = airflow.trigger(echo=lambda line: None)
            _report("first run (full build, or no new data after the schedule's run)", first)
            steady = []
            for seed in (1, 2, 3):
                _aqi(settings, "replay", "--simulate", "--locations", "3", "--days", "0.0417",
                     "--seed", str(seed))  # fmt: skip
                run = airflow.trigger(echo=lambda line: None)
                _report(f"steady run {seed} (the last hour again, seed {seed})", run)
                steady.append(run)
        finally:
            airflow.down(echo=lambda line: None)
            if stream is not None:
                stream.terminate()
                stream.wait(timeout=120)
    median = statistics.median(r.seconds for r in steady)
    print(f"| tiny (3 locations x 2 days), stream {args.stream} | {first.seconds:.1f} s | "
          f"{', '.join(f'{r.seconds:.1f}' for r in steady)} s | {median:.1f} s |")  # fmt: skip


def world(args: argparse.Namespace) -> None:
    from warehouse_support import load_raw_events

    from ingestion.simulator import SimulationConfig, simulate

    # the simulated deliveries (ingested_at) trail their readings by up to 45 min, and the raw
    # gate rejects any in the future: the world hour ends two hours ago
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    locations = 300
    days = args.rows / 122 / locations * 1.05
    with temporary_services() as settings:
        url = database_url(settings)
        started = time.perf_counter()
        history = SimulationConfig(
            locations=locations, days=days, seed=3, end=end - timedelta(hours=1)
        )
        loaded = load_raw_events(url, islice(simulate(history), args.rows))
        print(
            f"loaded {loaded:,} raw rows in {time.perf_counter() - started:.0f} s", file=sys.stderr
        )
        _aqi(settings, "dbt", "parse", "--quiet")
        airflow = EmbeddedAirflow(settings)
        airflow.up(echo=lambda line: None)
        try:
            _report("first run (full build)", airflow.trigger(echo=lambda line: None, timeout=7200))
            hour = SimulationConfig(locations=30_000, days=1 / 24, seed=5, end=end)
            added = load_raw_events(url, islice(simulate(hour), 150_000))
            added_at = datetime.now(UTC)
            print(f"added one world hour: {added:,} rows", file=sys.stderr)
            # the next run queued from now on (the schedule's if it comes first) takes it
            run = airflow.trigger(echo=lambda line: None, timeout=3600, after=added_at)
            _report("world hour run", run)
            tests_s = _dbt_test_seconds(settings, run)
        finally:
            airflow.down(echo=lambda line: None)
    gates = sum(_phase_seconds(run, (task,)) for task in ("check_raw", "check_gold"))
    exports = _phase_seconds(run, ("publish",))
    producer = _phase_seconds(run, ("dbt.dbt_producer_watcher",))
    print(f"| {loaded:,} raw + {added:,} new | {run.seconds:.1f} s | {producer:.1f} s "
          f"(tests {tests_s:.1f} s) | {gates:.1f} s | {exports:.1f} s |")  # fmt: skip


def main() -> None:
    # killed (timeout, Ctrl-C): still stop Airflow and the services of the temporary AQ_HOME
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="size", required=True)
    tiny_parser = sub.add_parser("tiny", help="3 locations x 2 days; first and steady runs")
    tiny_parser.add_argument(
        "--stream",
        choices=["running", "none"],
        default="running",
        help="running: a long-running aqi stream loads raw (the drain task waits for it); "
        "none: the drain task starts Spark (aqi stream --available-now) itself",
    )
    world_parser = sub.add_parser("world", help="--rows of history plus one world hour")
    world_parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    {"tiny": tiny, "world": world}[args.size](args)


if __name__ == "__main__":
    main()
