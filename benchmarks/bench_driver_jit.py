"""`aqi stream --available-now` with the driver JVM's quick JIT (C1 only) and the full one.

Run with `make bench-driver-jit`. A throw-away AQ_HOME on free ports; for each backlog size,
each round puts that many simulated events on a new topic (3 partitions) and drains it with
`aqi stream --available-now --jit quick`, then the same on another topic with `--jit full`
(fresh checkpoints), so the machine's drift falls on both. Measured: the command's wall time
and the whole machine's CPU time over it (``psutil.cpu_times``: the driver JVM is the
command's grandchild). The figures behind STREAM_QUICK_JIT_MAX_BACKLOG (aqi/core/config.py).

    .venv/bin/python benchmarks/bench_driver_jit.py [--sizes 5000,120000,600000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

from _measure import machine_cpu_s
from _services import settings_env, temporary_services

from aqi.core.connections import kafka_bootstrap_servers
from ingestion.producer import EventProducer
from ingestion.simulator import SimulationConfig, simulate

#: enough locations and days for the largest default size (~1.1M events)
CONFIG = SimulationConfig(locations=400, days=30, seed=7)


def _drain(settings, env: dict[str, str], size: int, jit: str, shift: int) -> tuple[float, float]:
    """Put ``size`` events on a new topic and drain it; returns (wall s, machine CPU s)."""
    topic = f"bench.jit.{uuid.uuid4().hex[:8]}"
    events = ({**e, "sensor_id": e["sensor_id"] + shift} for e in islice(simulate(CONFIG), size))
    with EventProducer(kafka_bootstrap_servers(settings), topic, partitions=3) as producer:
        producer.send(list(events))
    shutil.rmtree(settings.checkpoints_dir, ignore_errors=True)
    aqi = str(Path(sys.executable).parent / "aqi")
    cpu, began = machine_cpu_s(), time.monotonic()
    subprocess.run([aqi, "stream", "--available-now", "--jit", jit],
                   env={**env, "AQ_KAFKA_TOPIC": topic}, check=True, capture_output=True)  # fmt: skip
    return time.monotonic() - began, machine_cpu_s() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5000,120000,600000",
                        help="backlog sizes in records, comma-separated")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="rounds per size (default 2)")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    results: dict[tuple[int, str], list[tuple[float, float]]] = {}
    with temporary_services() as settings:
        env = settings_env(settings)
        run = 0
        for size in sizes:
            for n in range(args.rounds):
                for jit in ("quick", "full"):
                    run += 1
                    wall, cpu = _drain(settings, env, size, jit, shift=run * 10**12)
                    results.setdefault((size, jit), []).append((wall, cpu))
                    print(f"{size:>9,} records, round {n + 1}, --jit {jit:<5}: "
                          f"{wall:5.1f} s wall, {cpu:6.1f} s CPU", flush=True)  # fmt: skip
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores")
    print("| backlog | quick: wall / CPU | full: wall / CPU |\n|---|---|---|")
    for size in sizes:
        cells = []
        for jit in ("quick", "full"):
            runs = results[(size, jit)]
            cells.append(f"{statistics.median(r[0] for r in runs):.1f} s / "
                         f"{statistics.median(r[1] for r in runs):.1f} s")  # fmt: skip
        print(f"| {size:,} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
