"""The embedded broker's CPU with Kafka's JVM options and with the test suite's.

Run with `make bench-kafka-jvm`. Each round starts one broker in a throw-away AQ_HOME
(formatting its log directory, as every test stack does), then leaves it idle for a minute,
once with Kafka's own collector settings (KAFKA_JVM_PERFORMANCE_OPTS unset: G1 and the
tiered JIT) and once with the options the tests give their brokers (tests/conftest.py:
C1 only and the serial collector). Measured: the broker JVM's own CPU (``psutil``) when it
answers, and over the idle minute; the format JVM's CPU comes on top of the first figure,
as the whole machine's CPU over ``up`` (``psutil.cpu_times``). The figures behind the tests'
KAFKA_JVM_PERFORMANCE_OPTS (docs/benchmarks.md, "Test suite").

    .venv/bin/python benchmarks/bench_kafka_jvm.py [--rounds 2] [--idle 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
from _measure import machine_cpu_s
from _services import temporary_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import TEST_KAFKA_JVM_OPTIONS

from aqi.services.kafka import EmbeddedKafka
from aqi.services.process import PidFile

#: KAFKA_JVM_PERFORMANCE_OPTS of each variant ("" = unset: Kafka's own options)
VARIANTS = {"Kafka's (G1, tiered JIT)": "", "the tests' (C1, serial GC)": TEST_KAFKA_JVM_OPTIONS}


def _one(options: str, idle_s: float) -> tuple[float, float, float, float]:
    """(wall s of up, machine CPU s over up, broker CPU s when ready, broker CPU s idle)."""
    settings = temporary_settings(KAFKA_JVM_PERFORMANCE_OPTS=options)
    kafka = EmbeddedKafka(settings)
    try:
        cpu, began = machine_cpu_s(), time.monotonic()
        kafka.up(echo=lambda line: None)
        wall, machine = time.monotonic() - began, machine_cpu_s() - cpu
        pids = [PidFile(p).live().pid for p in settings.run_dir.glob("kafka*.pid")]
        broker = [psutil.Process(pid) for pid in pids]

        def broker_cpu() -> float:
            return sum(p.cpu_times().user + p.cpu_times().system for p in broker)

        ready = broker_cpu()
        time.sleep(idle_s)
        return wall, machine, ready, broker_cpu() - ready
    finally:
        kafka.down(echo=lambda line: None)
        shutil.rmtree(settings.aq_home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds per variant (default 2)")
    parser.add_argument("--idle", type=float, default=60.0, help="idle seconds (default 60)")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, float, float]]] = {v: [] for v in VARIANTS}
    for n in range(args.rounds):
        for name, options in VARIANTS.items():
            result = _one(options, args.idle)
            results[name].append(result)
            print(f"round {n + 1}, {name}: up {result[0]:.1f} s wall, {result[1]:.1f} s CPU "
                  f"(machine); broker {result[2]:.1f} s CPU when ready, "
                  f"{result[3]:.1f} s over {args.idle:.0f} s idle", flush=True)  # fmt: skip
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores,"
          f" medians of {args.rounds} rounds")  # fmt: skip
    print(f"| JVM options | up: wall / machine CPU | broker CPU when ready | "
          f"broker CPU per {args.idle:.0f} s idle |\n|---|---|---|---|")  # fmt: skip
    for name, runs in results.items():
        med = [statistics.median(r[i] for r in runs) for i in range(4)]
        print(f"| {name} | {med[0]:.1f} s / {med[1]:.1f} s | {med[2]:.1f} s | {med[3]:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
