"""``aqi replay``: recorded OpenAQ responses, or the simulator, as events on Kafka.

``--fixtures DIR`` turns every recorded measurements and latest response into events, with
location and sensor metadata taken from the recorded location responses (a reading whose
location is not among them is skipped and counted: inventing a time zone would corrupt the
local-day averages downstream). ``--simulate`` streams the deterministic simulator.

Public surface: :func:`fixture_events`, :func:`send_paced`, :class:`FixtureReport`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ingestion.events import (
    Location,
    Sensor,
    event_from_latest,
    event_from_measurement,
    location_from_api,
    parse_utc,
)
from ingestion.fixtures import load_recorded, locations_in, sensors_by_location
from ingestion.producer import EventProducer
from ingestion.progress import Progress

__all__ = ["FixtureReport", "fixture_events", "send_paced"]

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
    events: Iterable[dict[str, Any]],
    producer: EventProducer,
    progress: Progress,
    *,
    rate_per_s: float | None = None,
    batch_size: int = 2000,
) -> int:
    """Send events in pipelined batches, at most ``rate_per_s`` a second if given.

    Returns once Kafka acknowledged every event (raises :class:`ProducerError` otherwise).
    """
    if rate_per_s is not None:
        batch_size = max(1, min(batch_size, int(rate_per_s)))
    started = time.monotonic()
    sent = 0
    for batch in _batches(events, batch_size):
        producer.send(batch)
        sent += len(batch)
        progress.add_events(len(batch))
        if rate_per_s is not None:
            ahead = sent / rate_per_s - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush()
    return sent


def _batches(events: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for event in events:
        batch.append(event)
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
