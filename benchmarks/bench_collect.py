"""Benchmark `aqi collect --world` on the mock's world profile, a simulated day on a virtual clock.

Run with `make bench-collect`. The mock API serves the world profile (>= 30,000 locations,
>= 100,000 sensors, each publishing its readings with a delay) with the free key's real rate
limits (60 requests/minute, 2,000/hour, fixed windows, 429 without Retry-After). Mock, shared
limiter and collector all read one virtual clock, so a day of 10-minute cycles runs in minutes;
HTTP, JSON and the collector's work are real, only waiting is skipped. Kafka is stood in by a
recorder of what was sent (the collector's Kafka path is the same EventProducer every
integration test uses).

Reports, against the goals of issue 15:

- requests of one full world cycle of the six parameters (goal <= 150), and of the location
  look-up (paid every 6 h);
- over the simulated day: requests in the busiest hour (goal <= 1,000, half of the key's
  2,000), 429s and requests sent while a reset was pending (goal 0);
- readings missed and readings sent twice (goal 0 and 0), compared with every reading the
  world published as some sensor's latest during the day;
- real time taken, and the collector's state size at the end (one row per sensor).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from ingestion.collector import Budget, Targets, load_catalog, run_collector
from ingestion.events import parse_utc
from ingestion.openaq_client import OpenAQClient
from ingestion.rate_limit import RateLimiter
from ingestion.state import IngestionState
from openaq_mock.api import MockOpenAQ
from openaq_mock.clock import VirtualClock
from openaq_mock.world import World, WorldProfile

KEY = "bench-key"
START = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


class Recorder:
    """Stands in for EventProducer: keeps (sensor, period end) of every event, acks at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    def send(self, events, then=None) -> int:
        batch = [(e["sensor_id"], e["period_end"]) for e in events]
        self.sent.extend(batch)
        if then is not None:
            then()
        return len(batch)

    def flush(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--locations", type=int, default=WorldProfile().locations)
    args = parser.parse_args()

    began = time.perf_counter()
    world = World(WorldProfile(locations=args.locations))
    built_s = time.perf_counter() - began
    clock = VirtualClock(START)
    targets = Targets(world=True)
    with tempfile.TemporaryDirectory() as tmp, MockOpenAQ(None, api_key=KEY, world=world,
                                                          clock=clock.time) as mock:  # fmt: skip
        state_dir = Path(tmp)
        limiter = RateLimiter(state_dir, "bench", per_minute=60, per_hour=2000, clock=clock.time,
                              sleep=clock.sleep, role="collect", share=0.5)  # fmt: skip
        client = OpenAQClient(mock.base_url, KEY, limiter, sleep=clock.sleep)
        state = IngestionState(state_dir / "state")
        recorder = Recorder()

        # one full cycle, priced on its own
        catalog = load_catalog(client, targets, clock.time())
        lines: list[str] = []
        real = time.perf_counter()
        run_collector(targets, client=client, producer=recorder, state=state, once=True,
                      budget=Budget(2000, 0.5, 600), echo=lines.append, clock=clock.time,
                      sleep=clock.sleep)  # fmt: skip
        first = state.cycles()[0]
        cycle_real_s = time.perf_counter() - real

        # the day, from a fresh state: what a new `aqi collect --world` does
        state_dir2 = state_dir / "day"
        state2 = IngestionState(state_dir2)
        recorder = Recorder()
        mock.reset_log()
        day_start = clock.time()
        real = time.perf_counter()
        run_collector(targets, client=client, producer=recorder, state=state2, once=False,
                      budget=Budget(2000, 0.5, 600), echo=lines.append, clock=clock.time,
                      sleep=clock.sleep, until=day_start + args.hours * 3600)  # fmt: skip
        day_real_s = time.perf_counter() - real
        day_end = clock.time()
        cycles = list(reversed(state2.cycles(limit=100_000)))
        last_start = parse_utc(cycles[-1]["started_at"]).timestamp()
        # a reading is surely seen when it was the latest at some instant after the first
        # cycle had read every page and before the last cycle began (each stays the latest
        # for a whole period, >= 15 min, and a page is read every 10 min); readings replaced
        # before the first cycle reached their page were published before the collector ran
        first_end = parse_utc(cycles[0]["started_at"]).timestamp() + cycles[0]["duration_s"]

        requests = mock.requests
        statuses = Counter(r.status for r in requests)
        busiest_hour = mock.max_requests_in_window(3600)
        busiest_minute = mock.max_requests_in_window(60)
        ids = world.parameter_ids(targets.parameters)
        must = world.published(ids, first_end, last_start)
        may = world.published(ids, day_start, day_end)
        sent = set(recorder.sent)
        missed = len(must - sent)
        twice = len(recorder.sent) - len(sent)
        foreign = len(sent - may)
        live_rows = len(state2.live_sensors())

    print(f"\n## Live collection, world profile ({datetime.now(UTC):%Y-%m-%d}, "
          f"{platform.machine()}, {platform.python_version()})\n")  # fmt: skip
    print(f"world: {args.locations:,} locations, {len(catalog.by_sensor):,} sensors of "
          f"{len(catalog.parameter_ids)} parameter ids (built in {built_s:.1f} s)\n")  # fmt: skip
    print("| figure | value | goal |\n|---|---|---|")
    rows = [
        ("location look-up (every 6 h)", f"{catalog.requests} requests", ""),
        ("one full cycle, 6 parameters", (f"{first['requests']} requests "
         f"({first['readings']:,} readings, {cycle_real_s:.1f} s real)"), "<= 150"),
        (f"simulated {args.hours:g} h: cycles", (f"{len(cycles)} (interval "
         f"{cycles[-1]['interval_s'] / 60:.1f} min)"), "every 10 min"),
        ("requests in the busiest hour", f"{busiest_hour}", "<= 1,000"),
        ("requests in the busiest minute", f"{busiest_minute}", "<= 60"),
        ("429 answers / requests during a pending reset",
         f"{statuses[429]} / {mock.requests_before_reset()}", "0 / 0"),
        ("readings published (latest at some instant)", f"{len(may):,}", ""),
        ("readings sent", f"{len(recorder.sent):,}", ""),
        ("missed (latest between the first and the last cycle, not sent)", f"{missed}", "0"),
        ("sent twice", f"{twice}", "0"),
        ("sent but never published", f"{foreign}", "0"),
        ("state rows at the end (one per sensor)", f"{live_rows:,}", "bounded"),
        ("real time for the simulated day", f"{day_real_s / 60:.1f} min", ""),
    ]  # fmt: skip
    for name, value, goal in rows:
        print(f"| {name} | {value} | {goal} |")
    widened = [line for line in lines if "the interval is" in line]
    if widened:
        print("\n" + widened[-1])


if __name__ == "__main__":
    main()
