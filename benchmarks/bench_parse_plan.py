"""Building the stream's parse plan (`parse_records`) in a fresh driver: calls into the JVM,
time and CPU.

Every `aqi stream` builds the plan once before its first batch. Each round starts a fresh
Python process that opens the stream's SparkSession (the quick JIT, as a small drain has),
then either stops (``session``) or first builds ``parse_records`` over an empty Kafka-shaped
DataFrame (``parse``); rounds alternate, so the machine's drift falls on both. Measured: the
py4j calls and wall time of the build (in the child), and the whole machine's CPU over each
round (``psutil.cpu_times``: the JVM is the child's child and is not waited for by it); the
plan's CPU is the difference of the two medians.

    .venv/bin/python benchmarks/bench_parse_plan.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
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
import json, sys, time
from py4j.clientserver import ClientServerConnection
from spark_streaming.session import get_spark

calls = [0]
send = ClientServerConnection.send_command

def counted(self, *args, **kwargs):
    calls[0] += 1
    return send(self, *args, **kwargs)

ClientServerConnection.send_command = counted
spark = get_spark(app_name="bench-parse-plan", quick_jit=True)
result = {"calls": 0, "seconds": 0.0}
if sys.argv[1] == "parse":
    from spark_streaming.parse import parse_records

    schema = ("key binary, value binary, topic string, partition int, offset long, "
              "timestamp timestamp, timestampType int")
    frame = spark.createDataFrame([], schema)
    before, began = calls[0], time.monotonic()
    parse_records(frame)
    result = {"calls": calls[0] - before, "seconds": time.monotonic() - began}
spark.stop()
print(json.dumps(result))
"""


def _round(mode: str) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory(prefix="aq-bench-parse-") as work:
        cpu = machine_cpu_s()
        done = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=work, check=True,
                              capture_output=True, text=True,
                              env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})  # fmt: skip
        time.sleep(1.0)  # the JVM exits after its Python parent
        return json.loads(done.stdout.strip().splitlines()[-1]), machine_cpu_s() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each (default 4)")
    args = parser.parse_args()
    cpu: dict[str, list[float]] = {"session": [], "parse": []}
    builds: list[dict] = []
    for n in range(args.rounds):
        for mode in ("session", "parse"):
            built, used = _round(mode)
            cpu[mode].append(used)
            if mode == "parse":
                builds.append(built)
            print(f"round {n + 1} {mode:>7}: {used:5.1f} s machine CPU"
                  + (f", plan {built['seconds']:.2f} s, {built['calls']:,} py4j calls"
                     if mode == "parse" else ""), flush=True)  # fmt: skip
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores")
    session, parse = statistics.median(cpu["session"]), statistics.median(cpu["parse"])
    print(f"plan: median {statistics.median(b['seconds'] for b in builds):.2f} s wall, "
          f"{statistics.median(b['calls'] for b in builds):,.0f} py4j calls; machine CPU "
          f"{parse:.1f} s with it, {session:.1f} s without: {parse - session:.1f} s "
          f"({args.rounds} rounds each)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
