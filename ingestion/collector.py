"""``aqi collect``: poll the latest readings of some locations and send each new one once.

A cycle asks ``/locations/{id}/latest`` for every target location (one request each), maps
the readings to events, drops those already sent (same sensor and period end, remembered in
``AQ_HOME/state`` across restarts), sends the rest and records them once Kafka acknowledged.

The latest endpoint gives a reading's period end but not its length; a sensor's period length
is learned once from one page of its measurements and remembered (hourly if it has none).

A cycle does not end on one location: a location whose requests fail (after the client's own
retries) is logged, counted and tried again next cycle, and a reading that is not shaped as
the API documents is logged, counted and skipped. What concerns every location ends the
command with one line: a rejected key (401), a gone API version (410), Kafka not
acknowledging.

Public surface: :class:`Targets`, :func:`resolve_locations`, :func:`collect_cycle`,
:func:`run_collector`, :class:`CycleResult`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from ingestion.events import Location, event_from_latest, location_from_api, parse_utc
from ingestion.openaq_client import OpenAQAuthError, OpenAQClient, OpenAQError, OpenAQGoneError
from ingestion.producer import EventProducer
from ingestion.state import IngestionState

__all__ = ["CycleResult", "Targets", "collect_cycle", "resolve_locations", "run_collector"]

log = logging.getLogger(__name__)
DEFAULT_INTERVAL = timedelta(hours=1)
#: how often the list of locations behind a bbox or a country is looked up again
LOCATIONS_REFRESH_S = 6 * 3600


@dataclass(frozen=True)
class Targets:
    """Which locations to poll: explicit ids, a bounding box, a country, or any mix."""

    location_ids: tuple[int, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    country: str | None = None

    def __bool__(self) -> bool:
        return bool(self.location_ids or self.bbox or self.country)


@dataclass(frozen=True)
class CycleResult:
    locations: int
    readings: int
    sent: int
    already_sent: int
    #: locations whose requests failed this cycle (tried again next cycle)
    failed_locations: int = 0
    #: readings not shaped as the API documents, skipped
    malformed: int = 0

    def problems(self) -> str:
        """``", 1 location failed, 2 malformed readings skipped"`` or ``""``."""
        parts = []
        if self.failed_locations:
            parts.append(f"{self.failed_locations} location(s) failed")
        if self.malformed:
            parts.append(f"{self.malformed} malformed reading(s) skipped")
        return "".join(f", {part}" for part in parts)


def resolve_locations(client: OpenAQClient, targets: Targets) -> list[Location]:
    """The locations behind the targets (metadata cached by the client)."""
    found: dict[int, dict] = {}
    for location_id in targets.location_ids:
        found[location_id] = client.location(location_id)
    if targets.bbox is not None:
        found.update((int(loc["id"]), loc) for loc in client.locations(bbox=targets.bbox))
    if targets.country is not None:
        found.update((int(loc["id"]), loc) for loc in client.locations(iso=targets.country))
    return [location_from_api(obj) for obj in found.values()]


def collect_cycle(
    locations: list[Location],
    *,
    client: OpenAQClient,
    producer: EventProducer,
    state: IngestionState,
) -> CycleResult:
    """One polling cycle over ``locations``."""
    readings = sent = already = failed = malformed = 0
    for location in locations:
        try:
            results = client.latest_for_location(location.id)
        except (OpenAQAuthError, OpenAQGoneError):
            raise
        except OpenAQError as exc:
            log.warning("collect: location %s skipped this cycle: %s", location.id, exc)
            failed += 1
            continue
        events = []
        for result in results:
            try:
                event = _event(result, location, client, state)
            except (OpenAQAuthError, OpenAQGoneError):
                raise
            except OpenAQError as exc:  # learning a sensor's period length failed
                log.warning("collect: a reading of location %s skipped: %s", location.id, exc)
                malformed += 1
                continue
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.warning("collect: a malformed reading of location %s skipped (%s: %s): %.200r",
                            location.id, type(exc).__name__, exc, result)  # fmt: skip
                malformed += 1
                continue
            if event is not None:
                events.append(event)
        readings += len(events)
        keys = {(e["sensor_id"], e["period_end"]) for e in events}
        new_keys = state.unsent(keys)
        new_events = [e for e in events if (e["sensor_id"], e["period_end"]) in new_keys]
        # the same reading twice in one answer is sent once
        unique = list({(e["sensor_id"], e["period_end"]): e for e in new_events}.values())
        already += len(events) - len(new_events)
        if unique:
            # remembered as sent once Kafka acknowledged them (pipelined with the next location)
            producer.send(unique, then=partial(state.mark_sent, new_keys))
            sent += len(unique)
    producer.flush()
    return CycleResult(len(locations), readings, sent, already, failed, malformed)


def _event(
    result: Any, location: Location, client: OpenAQClient, state: IngestionState
) -> dict[str, Any] | None:
    """The event of one latest reading, or None (no value, or a sensor not yet known)."""
    sensor_id = int(result["sensorsId"])
    if sensor_id not in location.sensors:
        return None  # a sensor added after the metadata was cached: picked up on refresh
    interval = _interval(sensor_id, parse_utc(result["datetime"]["utc"]), client, state)
    return event_from_latest(result, location, "live", interval)


def run_collector(
    targets: Targets,
    *,
    client: OpenAQClient,
    producer: EventProducer,
    state: IngestionState,
    interval_s: float,
    once: bool,
    echo: Callable[[str], None],
) -> int:
    """Poll until SIGTERM/SIGINT (or once). Returns the number of events sent."""
    stop = threading.Event()
    if not once and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    locations: list[Location] = []
    looked_up = 0.0
    total = 0
    while True:
        if not locations or time.monotonic() - looked_up > LOCATIONS_REFRESH_S:
            try:
                locations = resolve_locations(client, targets)
            except (OpenAQAuthError, OpenAQGoneError):
                raise
            except OpenAQError as exc:
                if not locations:
                    raise  # the first look-up: an unknown location id is the user's to fix
                log.warning("collect: keeping the %d known locations: %s", len(locations), exc)
            looked_up = time.monotonic()
            echo(f"collect: polling {len(locations)} locations")
        started = time.monotonic()
        result = collect_cycle(locations, client=client, producer=producer, state=state)
        total += result.sent
        echo(
            f"collect: {result.readings} readings from {result.locations} locations, "
            f"{result.sent} new sent, {result.already_sent} already sent{result.problems()} "
            f"({time.monotonic() - started:.1f} s)"
        )
        if once or stop.wait(interval_s):
            return total


def _interval(sensor_id: int, period_end, client: OpenAQClient, state: IngestionState) -> timedelta:
    """The sensor's period length: remembered, else learned from one measurements page."""
    seconds = state.sensor_interval(sensor_id)
    if seconds is None:
        seconds = int(DEFAULT_INTERVAL.total_seconds())
        page = next(
            client.measurements(sensor_id, period_end - timedelta(days=2), period_end, limit=1),
            None,
        )
        if page is not None and page.results:
            period = page.results[0]["period"]
            span = parse_utc(period["datetimeTo"]["utc"]) - parse_utc(period["datetimeFrom"]["utc"])
            if span.total_seconds() > 0:
                seconds = int(span.total_seconds())
        state.set_sensor_interval(sensor_id, seconds)
    return timedelta(seconds=seconds)
