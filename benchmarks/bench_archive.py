"""Benchmark `aqi backfill --source archive`: mock archive files into the embedded Kafka.

Run with `make bench-archive`. Serves N generated day files from the mock archive
(openaq_mock.archive, every file made and cached before the clock starts, so the mock's
own work is only answering HTTP), the locations' records from the mock OpenAQ API, and runs
the real command against a throw-away embedded Kafka (a temporary AQ_HOME on free ports),
timed from the outside (Python start included). Checks that the topic holds exactly the
mock's rows, then reports events/s, files/s and MB/s per run and their median; the CPU the
whole machine spent per event (the command, its reader processes, the Kafka broker, the mock)
and the share the hypervisor gave to other machines (steal: on a shared VM it swings a run's
figure by 2x); and, for the record, the in-process cost of the two CPU-bound stages (reading
files, building and encoding events).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from _services import temporary_settings

from aqi.core.config import Settings
from aqi.core.connections import kafka_bootstrap_servers
from aqi.core.topics import end_offsets
from aqi.services.kafka import EmbeddedKafka
from ingestion.archive import file_events, gunzip_text, parse_key, read_archive_csv
from ingestion.events import event_key, location_from_api
from ingestion.producer import encode_event
from openaq_mock.api import MockOpenAQ
from openaq_mock.archive import MockArchive, synthetic_locations

FIRST_DAY = date(2024, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locations", type=int, default=60)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--sensors", type=int, default=6, help="per location (1-6)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="runs, each a new job and topic")
    args = parser.parse_args()
    last_day = FIRST_DAY + timedelta(days=args.days - 1)
    locations = synthetic_locations(args.locations, sensors=args.sensors)
    archive = MockArchive(locations, FIRST_DAY, last_day)
    started = time.perf_counter()
    total_bytes = archive.warm()
    expected = len(archive.readings())
    files = len(archive.keys())
    print(f"mock archive: {files:,} files, {expected:,} rows, {total_bytes / 1e6:.1f} MB "
          f"(made in {time.perf_counter() - started:.1f} s)", file=sys.stderr)  # fmt: skip
    stages = _stages(archive, locations)

    api = MockOpenAQ(fixtures=None, per_minute=100_000, per_hour=1_000_000)
    for obj in locations:
        api.add_location(obj)
    runs = []
    with api, archive, _kafka_only() as settings:
        bootstrap = kafka_bootstrap_servers(settings)
        aqi = str(Path(sys.executable).parent / "aqi")
        command = [aqi, "backfill", "--source", "archive", "--bbox", "-180,-90,180,90",
                   "--since", FIRST_DAY.isoformat(), "--until", last_day.isoformat(),
                   "--workers", str(args.workers)]  # fmt: skip
        for number in range(args.runs):
            topic = f"bench.archive.{number}"
            env = {**os.environ, "AQ_HOME": str(settings.aq_home),
                   "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "AQ_KAFKA_TOPIC": topic,
                   "OPENAQ_BASE_URL": api.base_url, "AQ_ARCHIVE_BASE_URL": archive.base_url,
                   "OPENAQ_REQUESTS_PER_MINUTE": "100000", "OPENAQ_REQUESTS_PER_HOUR": "1000000"}  # fmt: skip
            shutil.rmtree(settings.state_dir, ignore_errors=True)  # a new job, every file read
            before = _jiffies()
            start = time.perf_counter()
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            elapsed = time.perf_counter() - start
            busy, steal = _shares(before, _jiffies())
            if result.returncode != 0:
                sys.exit(f"aqi backfill failed ({result.returncode}):\n{result.stderr[-3000:]}")
            summary = result.stdout.strip().splitlines()[-1]
            sent = int(re.search(r"(\d+) events,", summary).group(1))
            on_topic = sum(end_offsets(bootstrap, topic).values())
            assert sent == expected == on_topic, (sent, expected, on_topic)
            runs.append((elapsed, busy * elapsed * (os.cpu_count() or 1), steal))
            print(f"run {number + 1}: {elapsed:.1f} s, steal {steal:.0%}", file=sys.stderr)

    label = (f"`aqi backfill --source archive` ({args.locations} locations x {args.days} days"
             f" x {args.sensors} hourly sensors = {files:,} files, {expected:,} events, "
             f"{total_bytes / 1e6:.1f} MB gzip; --workers {args.workers}), wall time")  # fmt: skip
    rows = []
    for number, (elapsed, cpu_s, steal) in enumerate(runs, start=1):
        rows.append((f"{label}, run {number}",
                     (f"{elapsed:.1f} s (**{expected / elapsed:,.0f} events/s**, "
                      f"{files / elapsed:,.0f} files/s, {total_bytes / 1e6 / elapsed:.1f} MB/s); "
                      f"machine CPU {cpu_s / expected * 1e6:.1f} µs/event; steal {steal:.0%}")))  # fmt: skip
    median = sorted(elapsed for elapsed, _, _ in runs)[len(runs) // 2]
    rows.append((f"median of {len(runs)} runs", f"**{expected / median:,.0f} events/s**"))
    rows.append(stages)

    print(f"Machine: {platform.node()} · {os.cpu_count()} cores · Python {sys.version.split()[0]}")
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\n{summary}", file=sys.stderr)


def _jiffies() -> list[int]:
    """The machine's CPU time so far by kind (user, nice, system, idle, iowait, irq, softirq,
    steal), from /proc/stat; zeros elsewhere."""
    try:
        line = Path("/proc/stat").read_text().split("\n", 1)[0]
        return [int(v) for v in line.split()[1:9]]
    except (OSError, ValueError):
        return [0] * 8


def _shares(before: list[int], after: list[int]) -> tuple[float, float]:
    """(busy, steal) shares of the machine's CPU time in between: busy = everything but idle,
    iowait and steal (all the processes of the run, and anything else running)."""
    spent = [a - b for a, b in zip(after, before, strict=True)]
    total = sum(spent)
    if total <= 0:
        return 0.0, 0.0
    idle, iowait, steal = spent[3], spent[4], spent[7]
    return (total - idle - iowait - steal) / total, steal / total


@contextmanager
def _kafka_only() -> Iterator[Settings]:
    """The embedded broker alone in a throw-away AQ_HOME on a free port (no PostgreSQL:
    the command needs none), stopped and deleted after the block."""
    settings = temporary_settings()
    kafka = EmbeddedKafka(settings)
    try:
        kafka.up(lambda line: None)
        try:
            yield settings
        finally:
            kafka.down(lambda line: None)
    finally:
        shutil.rmtree(settings.aq_home, ignore_errors=True)


def _stages(archive: MockArchive, locations: list[dict]) -> tuple[str, str]:
    """The two CPU-bound stages in this process, one after the other, on up to 500 files."""
    keys = archive.keys()[:500]
    blobs = [archive.content(key) for key in keys]
    by_id = {obj["id"]: location_from_api(obj) for obj in locations}
    start = time.perf_counter()
    parsed = [read_archive_csv(gunzip_text([blob])[0], source=key) for key, blob in zip(keys, blobs, strict=True)]
    read_s = time.perf_counter() - start
    count = sum(p.rows for p in parsed)
    now = datetime.now(UTC)
    start = time.perf_counter()
    for key, p in zip(keys, parsed, strict=True):
        for event in file_events(p, by_id[parse_key(key)[0]], ingested_at=now):
            event_key(event), encode_event(event)
    build_s = time.perf_counter() - start
    return (f"in process, {len(keys)} files ({count:,} rows): gunzip + CSV / events + JSON",
            f"{count / read_s:,.0f} rows/s / {count / build_s:,.0f} events/s")  # fmt: skip


if __name__ == "__main__":
    main()
