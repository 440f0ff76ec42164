"""Spark driver start with and without the class archive `make jvm` writes.

Each round starts a fresh Python process that opens the stream's SparkSession
(:func:`spark_streaming.session.get_spark`), writes and reads back 1,000 rows as Parquet
(a first job), and stops. Rounds alternate with the archive (the default) and without it
(the driver's Java options replaced by a harmless one), so the machine's drift falls on both.
Measured: the child's wall time, and the whole machine's CPU time over the round
(``psutil.cpu_times``: the JVM is the child's child and is not waited for by it).

    .venv/bin/python benchmarks/bench_stream_start.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

from _measure import machine_cpu_s

CHILD = """
import sys
from pathlib import Path
from spark_streaming.session import get_spark
conf = {"spark.driver.extraJavaOptions": "-Daq.bench=off"} if sys.argv[1] == "off" else {}
spark = get_spark(app_name="bench-stream-start", **conf)
folder = str(Path.cwd() / "rows")
spark.createDataFrame([(i, str(i)) for i in range(1000)], "a long, b string").write.parquet(folder)
assert spark.read.parquet(folder).count() == 1000
spark.stop()
"""


def _round(mode: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="aq-bench-start-") as work:
        cpu, began = machine_cpu_s(), time.monotonic()
        subprocess.run([sys.executable, "-c", CHILD, mode], cwd=work, check=True,
                       capture_output=True, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})  # fmt: skip
        return time.monotonic() - began, machine_cpu_s() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each (default 4)")
    args = parser.parse_args()
    from spark_streaming.class_archive import driver_java_options

    if not driver_java_options():
        print("no class archive for this Java and pyspark: run `make jvm` first", file=sys.stderr)
        return 1
    results: dict[str, list[tuple[float, float]]] = {"archive": [], "off": []}
    for n in range(args.rounds):
        for mode in ("archive", "off"):
            wall, cpu = _round(mode)
            results[mode].append((wall, cpu))
            print(f"round {n + 1} {mode:>7}: {wall:5.1f} s wall, {cpu:5.1f} s CPU", flush=True)
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores")
    for mode, runs in results.items():
        walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
        print(f"{mode:>7}: median {statistics.median(walls):.1f} s wall, "
              f"{statistics.median(cpus):.1f} s CPU ({len(runs)} rounds)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
