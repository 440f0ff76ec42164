"""``aqi replay``: recorded OpenAQ responses, or the simulator, as events on Kafka.

``--fixtures DIR`` turns every recorded measurements and latest response into events, with
location and sensor metadata taken from the recorded location responses (a reading whose
location is not among them is skipped and counted: inventing a time zone would corrupt the
local-day averages downstream). ``--simulate`` streams the deterministic simulator.

Public surface: :func:`fixture_events`, :func:`simulated_records`, :func:`send_paced`,
:class:`FixtureReport`.
"""

from __future__ import annotations

import multiprocessing
import queue
import re
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from aqi.core.errors import AqiError
from ingestion.events import (
    Location,
    Sensor,
    event_from_latest,
    event_from_measurement,
    location_from_api,
    parse_utc,
)
from ingestion.fixtures import load_recorded, locations_in, sensors_by_location
from ingestion.producer import EventProducer, encode_records
from ingestion.progress import Progress
from ingestion.simulator import SimulationConfig, simulate

__all__ = ["FixtureReport", "fixture_events", "send_paced", "simulated_records"]

T = TypeVar("T")

_MEASUREMENTS = re.compile(r"^/v3/sensors/(\d+)/measurements$")
_LOCATION_LATEST = re.compile(r"^/v3/locations/(\d+)/latest$")
_PARAMETER_LATEST = re.compile(r"^/v3/parameters/(\d+)/latest$")
DEFAULT_INTERVAL = timedelta(hours=1)


@dataclass
class FixtureReport:
    """What a fixture replay did, for the user and for tests."""

    responses: int = 0
    events: int = 0
    duplicates: int = 0
    skipped_unknown_location: int = 0
    files: set[str] = field(default_factory=set)


def fixture_events(
    fixtures_dir: Path, ingested_at: datetime | None = None
) -> tuple[list[dict[str, Any]], FixtureReport]:
    """Events for every recorded reading (one per sensor and period end)."""
    responses = load_recorded(fixtures_dir)
    locations = _locations(responses)
    by_sensor = {sid: loc for loc in locations.values() for sid in loc.sensors}
    intervals: dict[int, timedelta] = {}
    report = FixtureReport(responses=len(responses))
    events: dict[tuple[int, str], dict[str, Any]] = {}

    def keep(event: dict[str, Any] | None, source: str) -> None:
        if event is None:
            report.skipped_unknown_location += 1
            return
        key = (event["sensor_id"], event["period_end"])
        if key in events:
            report.duplicates += 1
            return
        events[key] = event
        report.files.add(source)

    ordered = sorted(responses, key=lambda r: 0 if _MEASUREMENTS.match(r.path) else 1)
    for response in ordered:
        if response.status != 200:
            continue
        results = response.body.get("results") or []
        if match := _MEASUREMENTS.match(response.path):
            sensor_id = int(match.group(1))
            location = by_sensor.get(sensor_id)
            for result in results:
                if location is None:
                    keep(None, response.source)
                    continue
                period = result["period"]
                intervals[sensor_id] = parse_utc(period["datetimeTo"]["utc"]) - parse_utc(
                    period["datetimeFrom"]["utc"]
                )
                sensor = location.sensors[sensor_id]
                keep(
                    event_from_measurement(result, location, sensor, "replay", ingested_at),
                    response.source,
                )
        elif _LOCATION_LATEST.match(response.path) or _PARAMETER_LATEST.match(response.path):
            for result in results:
                location = locations.get(int(result.get("locationsId", 0)))
                if location is None:
                    keep(None, response.source)
                    continue
                interval = intervals.get(int(result["sensorsId"]), DEFAULT_INTERVAL)
                keep(
                    event_from_latest(result, location, "replay", interval, ingested_at),
                    response.source,
                )
    report.events = len(events)
    return list(events.values()), report


def send_paced(
    records: Iterable[tuple[bytes, bytes]],
    producer: EventProducer,
    progress: Progress,
    *,
    rate_per_s: float | None = None,
    batch_size: int = 2000,
) -> int:
    """Send encoded events (:func:`~ingestion.producer.encode_records`) in pipelined batches,
    at most ``rate_per_s`` a second if given.

    Returns once Kafka acknowledged every event (raises :class:`ProducerError` otherwise).
    """
    if rate_per_s is not None:
        batch_size = max(1, min(batch_size, int(rate_per_s)))
    started = time.monotonic()
    sent = 0
    for batch in _batches(records, batch_size):
        producer.send_records(batch)
        sent += len(batch)
        progress.add_events(len(batch))
        if rate_per_s is not None:
            ahead = sent / rate_per_s - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush()
    return sent


def simulated_records(config: SimulationConfig) -> Iterator[tuple[bytes, bytes]]:
    """The simulator's events, encoded, from a child process: what ``--simulate`` sends.

    Simulating and encoding cost about twice what sending costs; in one process they would
    hold the producer to ~50k events/s. The child sends chunks through a bounded queue (the
    producer's pace holds it back), in the simulator's order. Closing the iterator (an
    error, Ctrl-C) stops the child; a child that fails raises :class:`AqiError` here.
    """
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    chunks = context.Queue(maxsize=_QUEUED_CHUNKS)
    child = context.Process(target=_simulate_into, args=(chunks, config), daemon=True,
                            name="aqi-simulator")  # fmt: skip
    child.start()
    try:
        while True:
            try:
                chunk = chunks.get(timeout=1.0)
            except queue.Empty:
                if not child.is_alive():
                    raise AqiError(
                        f"the simulator process stopped unexpectedly (exit code {child.exitcode})"
                    ) from None
                continue
            if chunk is None:
                break
            if isinstance(chunk, str):
                raise AqiError(f"the simulator failed: {chunk}")
            yield from chunk
        child.join(timeout=30)
    finally:
        if child.is_alive():
            child.terminate()
            child.join(timeout=10)
        chunks.close()


_CHUNK = 2000
_QUEUED_CHUNKS = 16


def _simulate_into(chunks: Any, config: SimulationConfig) -> None:
    """The child process: encoded chunks of the simulation, then None (or the error's text)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the child
    try:
        chunk: list[tuple[bytes, bytes]] = []
        for record in encode_records(simulate(config)):
            chunk.append(record)
            if len(chunk) == _CHUNK:
                chunks.put(chunk)
                chunk = []
        if chunk:
            chunks.put(chunk)
        chunks.put(None)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        chunks.put(f"{type(exc).__name__}: {exc}")


def _batches(records: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _locations(responses) -> dict[int, Location]:
    """Recorded locations, with sensors from both location objects and sensors listings."""
    extra = sensors_by_location(responses)
    result = {}
    for location_id, obj in locations_in(responses).items():
        location = location_from_api(obj)
        sensors = dict(location.sensors)
        for s in extra.get(location_id, []):
            parameter = s.get("parameter") or {}
            sensors.setdefault(
                int(s["id"]),
                Sensor(
                    int(s["id"]),
                    int(parameter["id"]),
                    str(parameter["name"]),
                    str(parameter["units"]),
                ),
            )
        result[location_id] = Location(**{**location.__dict__, "sensors": sensors})
    return result
