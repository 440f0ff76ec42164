"""Fuzz the stream's parser with a million hostile messages (issue 14's figure).

Each message comes from the seeded generator of tests/event_fuzz.py (valid events, respelled
timestamps, wrong types, missing and duplicated fields, nasty text, odd numbers and
timestamps, impossible periods, mangled bytes, arbitrary bytes and JSON, deep nesting, big
payloads). Batches go through :func:`spark_streaming.parse.parse_records` in real Spark
(local); every row is compared with the contract's independent judge. Counted: messages,
escaping exceptions (a Spark job that failed on a batch), rows whose classification or typed
value differs from the judge, output text PostgreSQL would refuse (NUL), and the quarantine
reasons by kind.

    .venv/bin/python benchmarks/bench_fuzz_parse.py [--messages 1000000] [--batch 50000]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from event_fuzz import disagreements, event_pool, hostile_message

KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()

    from spark_streaming.parse import EVENT_FIELDS, parse_records
    from spark_streaming.session import get_spark

    spark = get_spark("local[2]", app_name="aqi-bench-fuzz")
    sent = datetime.now(UTC).replace(microsecond=0)
    pool = event_pool(sent)
    rng = random.Random(args.seed)
    done = escaped = accepted = 0
    wrong: list[str] = []
    nul_outputs = 0
    reasons: Counter[str] = Counter()
    started = time.monotonic()
    parse_seconds = 0.0
    while done < args.messages:
        size = min(args.batch, args.messages - done)
        messages = [hostile_message(rng, pool, sent) for _ in range(size)]
        rows = [(k, v, "t", 0, done + i, sent.replace(tzinfo=None))
                for i, (k, v) in enumerate(messages)]  # fmt: skip
        t0 = time.monotonic()
        try:
            frame = parse_records(spark.createDataFrame(rows, KAFKA_SCHEMA))
            parsed = sorted(frame.toArrow().to_pylist(), key=lambda r: r["kafka_offset"])
        except Exception as exc:  # noqa: BLE001 - what the benchmark counts
            escaped += 1
            print(f"  batch at {done:,}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            done += size
            continue
        parse_seconds += time.monotonic() - t0
        for row in parsed:
            if row["reason"] is None:
                accepted += 1
            else:
                reasons[_kind(row["reason"])] += 1
            if any("\x00" in v for v in row.values() if isinstance(v, str)):
                nul_outputs += 1
        wrong += disagreements([v for _, v in messages], parsed, sent, EVENT_FIELDS)
        done += size
        print(f"  {done:,} messages, {escaped} escaped, {len(wrong)} disagreements "
              f"({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
    spark.stop()
    elapsed = time.monotonic() - started
    print(f"machine: {platform.node()} {platform.machine()}, {_cores()} cores; "
          f"{datetime.now(UTC):%Y-%m-%d}")  # fmt: skip
    print(f"messages fuzzed: {done:,} (seed {args.seed}) in {elapsed:.0f} s "
          f"(parser {parse_seconds:.0f} s, {done / max(parse_seconds, 1e-9):,.0f} msg/s)")
    print(f"escaping exceptions: {escaped}; disagreements with the contract: {len(wrong)}; "
          f"output text with NUL: {nul_outputs}")  # fmt: skip
    print(f"accepted: {accepted:,}; quarantined: {done - accepted:,}")
    for kind, count in reasons.most_common(25):
        print(f"  {count:>9,}  {kind}")
    for line in wrong[:20]:
        print("  " + line)
    return 0 if escaped == 0 and not wrong and nul_outputs == 0 else 1


def _kind(reason: str) -> str:
    """A reason without what it quotes: 'value: expected a number or null', 'missing field(s)'."""
    for prefix in ("missing field(s)", "unexpected field(s)", "duplicate field(s)",
                   "unknown schema_version"):  # fmt: skip
        if reason.startswith(prefix):
            return prefix
    return reason.split(" (got ")[0]


def _cores() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
