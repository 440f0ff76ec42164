"""``aqi collect``: the latest readings of the world, a country, a box or some locations, each
new one sent once, within a share of the API key's budget.

How a cycle reads the API (the free key allows 60 requests a minute and 2,000 an hour):

- **bulk** (``--world``, and any scope with more locations than the bulk read costs pages):
  ``/parameters/{id}/latest`` is paged at 1,000 results a page for every parameter id of the
  chosen parameters (pm25, pm10, o3, no2, so2, co by default; a name has several ids, one per
  unit). The results are joined with the cached location metadata (``/locations`` paged,
  refreshed every :data:`LOCATIONS_REFRESH_S`) and readings of sensors outside the scope are
  dropped. At world scale (~100,000 sensors) a cycle is ~100 requests, whatever the number of
  locations.
- **per location** (a few ``--location`` ids): ``/locations/{id}/latest``, one request each,
  cheaper than paging the world for them. The choice is remade every cycle from what each
  costs (the bulk cost is learned from the ``found`` of the pages).

Which readings are new: one watermark per sensor, the newest period end sent (kept in
``AQ_HOME/state``, moved only after Kafka acknowledged the reading). A reading at or before
it was sent already. Sensors unseen for 30 days are forgotten, so the state is one row per
live sensor, not one per reading.

A sensor's period length: the latest endpoints give only a reading's period end. The period
is taken as the smallest gap seen between two successive readings of the sensor (readings a
day or more apart do not count), and one hour until a second reading shows it: most OpenAQ
sensors, and every reference monitor, report hourly, and the first reading of a 15- or
30-minute sensor is the only one that gets the hour. The former way, one ``/measurements``
request per new sensor, would cost 100,000 requests at world scale.

Budget: the collector takes at most ``AQ_COLLECT_BUDGET_SHARE`` (default 50%) of the key's
minute and hour windows (the shared limiter counts it under the role ``collect``, across
restarts), leaving the rest to backfills on the same key. Before each cycle it plans the
interval: the requests a cycle costs (the last cycle's count) plus the location refreshes,
times cycles an hour, must fit in that share; when they do not, the interval is widened and
the log says so. Each cycle's figures (requests, readings, new, already sent, lag) are logged
and kept in the state's ``collect_cycles`` table (``aqi collect --stats`` prints them).

A cycle does not end on one failure: a location or a page whose requests fail (after the
client's own retries) is logged, counted and read again next cycle, and a reading that is not
shaped as the API documents is logged, counted and skipped. What concerns every request ends
the command with one line: a rejected key (401), a gone API version (410), Kafka not
acknowledging.

Public surface: :class:`Targets`, :class:`Catalog`, :func:`load_catalog`, :class:`Budget`,
:class:`Collector`, :class:`CycleResult`, :func:`run_collector`, :data:`DEFAULT_PARAMETERS`.
"""

from __future__ import annotations

import logging
import math
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from aqi.core.errors import AqiError
from ingestion.events import (
    Location,
    Sensor,
    event_from_latest,
    format_utc,
    location_from_api,
    parse_utc,
)
from ingestion.openaq_client import (
    MAX_LIMIT,
    OpenAQAuthError,
    OpenAQClient,
    OpenAQError,
    OpenAQGoneError,
)
from ingestion.producer import EventProducer
from ingestion.state import IngestionState, LiveSensor

__all__ = [
    "DEFAULT_PARAMETERS",
    "LOCATIONS_REFRESH_S",
    "Budget",
    "Catalog",
    "Collector",
    "CycleResult",
    "Targets",
    "load_catalog",
    "run_collector",
]

log = logging.getLogger(__name__)

DEFAULT_PARAMETERS: tuple[str, ...] = ("pm25", "pm10", "o3", "no2", "so2", "co")
#: a sensor's period length until two successive readings show it
DEFAULT_PERIOD = timedelta(hours=1)
#: gaps this long or longer between two readings say nothing about the period
_LONGEST_PERIOD = timedelta(days=1)
#: how often the location metadata behind the scope is looked up again
LOCATIONS_REFRESH_S = 6 * 3600
_FATAL = (OpenAQAuthError, OpenAQGoneError)
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


@dataclass(frozen=True)
class Targets:
    """Which locations to poll: the world, explicit ids, a bounding box, a country (or a mix)."""

    location_ids: tuple[int, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    country: str | None = None
    world: bool = False
    #: parameter names to read (the bulk read pages only these)
    parameters: tuple[str, ...] = DEFAULT_PARAMETERS

    def __bool__(self) -> bool:
        return bool(self.world or self.location_ids or self.bbox or self.country)

    def describe(self) -> str:
        if self.world:
            return "world"
        parts = []
        if self.country:
            parts.append(f"country {self.country}")
        if self.bbox:
            parts.append("bbox " + ",".join(f"{v:g}" for v in self.bbox))
        if self.location_ids:
            parts.append(f"{len(self.location_ids)} location(s)")
        return " + ".join(parts)


@dataclass
class Catalog:
    """The scope's locations and, for the bulk read, each wanted sensor's location."""

    locations: list[Location]
    by_sensor: dict[int, tuple[Location, Sensor]]
    #: OpenAQ parameter ids of the wanted parameters among the scope's sensors
    parameter_ids: list[int]
    #: requests the look-up cost (to plan the budget)
    requests: int
    looked_up_at: float


def load_catalog(client: OpenAQClient, targets: Targets, now: float) -> Catalog:
    """Look up the scope's locations (the world: every page of ``/locations``)."""
    before = client.requests_made
    found: dict[int, dict] = {}
    if targets.world:
        found.update((int(loc["id"]), loc) for loc in client.locations())
    for location_id in targets.location_ids:
        found[location_id] = client.location(location_id)
    if targets.bbox is not None:
        found.update((int(loc["id"]), loc) for loc in client.locations(bbox=targets.bbox))
    if targets.country is not None:
        found.update((int(loc["id"]), loc) for loc in client.locations(iso=targets.country))
    wanted = set(targets.parameters)
    locations, by_sensor = [], {}
    for obj in found.values():
        try:
            location = location_from_api(obj)
        except _MALFORMED as exc:
            log.warning("collect: location %s skipped: malformed metadata (%s)", obj.get("id"), exc)
            continue
        locations.append(location)
        for sensor in location.sensors.values():
            if sensor.parameter in wanted:
                by_sensor[sensor.id] = (location, sensor)
    parameter_ids = sorted({sensor.parameter_id for _, sensor in by_sensor.values()})
    return Catalog(locations, by_sensor, parameter_ids, client.requests_made - before, now)


@dataclass(frozen=True)
class Budget:
    """The share of the key's hourly budget the collector may use, and the interval it wants."""

    per_hour: int
    share: float
    wanted_interval_s: float

    @property
    def requests_per_hour(self) -> float:
        return self.per_hour * self.share

    def interval_s(self, requests_per_cycle: int, catalog_requests: int) -> float:
        """The interval that keeps cycles plus location refreshes within the share."""
        refreshes = catalog_requests * 3600 / LOCATIONS_REFRESH_S
        room = self.requests_per_hour - refreshes
        if room <= 0:
            return math.inf
        return max(self.wanted_interval_s, 3600 * requests_per_cycle / room)


@dataclass(frozen=True)
class CycleResult:
    locations: int
    readings: int
    sent: int
    already_sent: int
    #: locations (per-location read) or pages (bulk read) that failed; read again next cycle
    failed_locations: int = 0
    #: readings not shaped as the API documents, skipped
    malformed: int = 0
    requests: int = 0
    strategy: str = "per-location"
    #: seconds from period end to sending, of this cycle's new readings (median, max)
    lag_p50_s: float | None = None
    lag_max_s: float | None = None
    failed_pages: int = 0

    def problems(self) -> str:
        """``", 1 location(s) failed, 2 malformed reading(s) skipped"`` or ``""``."""
        parts = []
        if self.failed_locations:
            parts.append(f"{self.failed_locations} location(s) failed")
        if self.failed_pages:
            parts.append(f"{self.failed_pages} parameter read(s) failed")
        if self.malformed:
            parts.append(f"{self.malformed} malformed reading(s) skipped")
        return "".join(f", {part}" for part in parts)


@dataclass
class _Cycle:
    """Counters of one cycle in progress."""

    now: datetime
    readings: int = 0
    sent: int = 0
    already: int = 0
    failed_locations: int = 0
    failed_pages: int = 0
    malformed: int = 0
    lags: list[float] = field(default_factory=list)


class Collector:
    """Reads the latest readings of a catalog and sends the new ones (state: one row a sensor)."""

    def __init__(
        self,
        *,
        client: OpenAQClient,
        producer: EventProducer,
        state: IngestionState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.producer = producer
        self.state = state
        self.clock = clock
        #: what was acknowledged: the newest period end sent per sensor, its period
        self.sensors: dict[int, LiveSensor] = state.live_sensors()
        #: results per parameter id at the last bulk read (``found``), to price it
        self.found: dict[int, int] = {}

    # --- planning ------------------------------------------------------------------------
    def bulk_pages(self, catalog: Catalog) -> int:
        """Requests a bulk read costs: pages per parameter id (one each until known)."""
        return sum(
            max(1, math.ceil(self.found.get(p, 1) / MAX_LIMIT)) for p in catalog.parameter_ids
        )

    def strategy(self, targets: Targets, catalog: Catalog) -> str:
        if targets.world or not catalog.locations:
            return "bulk"
        return "per-location" if len(catalog.locations) <= self.bulk_pages(catalog) else "bulk"

    # --- one cycle -----------------------------------------------------------------------
    def cycle(self, targets: Targets, catalog: Catalog) -> CycleResult:
        """One polling cycle over the catalog; returns its figures."""
        before = self.client.requests_made
        run = _Cycle(now=datetime.fromtimestamp(self.clock(), UTC))
        strategy = self.strategy(targets, catalog)
        if strategy == "bulk":
            self._bulk(catalog, run)
        else:
            self._per_location(catalog, run)
        self.producer.flush()
        lags = sorted(run.lags)
        return CycleResult(
            locations=len(catalog.locations), readings=run.readings, sent=run.sent,
            already_sent=run.already, failed_locations=run.failed_locations,
            malformed=run.malformed, requests=self.client.requests_made - before,
            strategy=strategy, lag_p50_s=statistics.median(lags) if lags else None,
            lag_max_s=lags[-1] if lags else None, failed_pages=run.failed_pages,
        )  # fmt: skip

    def _bulk(self, catalog: Catalog, run: _Cycle) -> None:
        for parameter_id in catalog.parameter_ids:
            path = f"/parameters/{parameter_id}/latest"
            try:
                for page in self.client.pages(path, limit=MAX_LIMIT):
                    if page.number == 1 and isinstance(page.found, int):
                        self.found[parameter_id] = page.found
                    self._take(self._in_scope(page.results, catalog, run), run)
            except _FATAL:
                raise
            except OpenAQError as exc:
                log.warning("collect: parameter %s read again next cycle: %s", parameter_id, exc)
                run.failed_pages += 1

    def _per_location(self, catalog: Catalog, run: _Cycle) -> None:
        for location in catalog.locations:
            try:
                results = self.client.latest_for_location(location.id)
            except _FATAL:
                raise
            except OpenAQError as exc:
                log.warning("collect: location %s skipped this cycle: %s", location.id, exc)
                run.failed_locations += 1
                continue
            self._take(self._of_location(results, location, catalog, run), run)

    def _in_scope(
        self, results: list[Any], catalog: Catalog, run: _Cycle
    ) -> Iterator[tuple[Any, Location, Sensor]]:
        for result in results:
            try:
                entry = catalog.by_sensor.get(int(result["sensorsId"]))
            except _MALFORMED as exc:
                self._malformed(result, None, exc, run)
                continue
            if entry is not None:  # outside the scope, or a sensor added since the look-up
                yield result, *entry

    def _of_location(
        self, results: list[Any], location: Location, catalog: Catalog, run: _Cycle
    ) -> Iterator[tuple[Any, Location, Sensor]]:
        for result in results:
            try:
                entry = catalog.by_sensor.get(int(result["sensorsId"]))
            except _MALFORMED as exc:
                self._malformed(result, location.id, exc, run)
                continue
            if entry is not None and entry[0].id == location.id:
                yield result, *entry

    def _take(self, readings: Iterable[tuple[Any, Location, Sensor]], run: _Cycle) -> None:
        """Send the new readings of one answer; their watermarks move once Kafka has them."""
        events: dict[int, dict[str, Any]] = {}
        moved: dict[int, LiveSensor] = {}
        for result, location, sensor in readings:
            try:
                end = parse_utc(result["datetime"]["utc"])
                run.readings += 1
                known = moved.get(sensor.id) or self.sensors.get(sensor.id)
                if known is not None and end <= known.last_end:
                    run.already += 1
                    continue
                period = _period(known, end)
                length = timedelta(seconds=period) if period else DEFAULT_PERIOD
                event = event_from_latest(result, location, "live", length, run.now)
                if event is None:  # not a sensor of that location (the catalog says it is)
                    continue
            except _MALFORMED as exc:
                self._malformed(result, location.id, exc, run)
                continue
            events[sensor.id] = event
            moved[sensor.id] = LiveSensor(end, period)
            run.lags.append((run.now - end).total_seconds())
        if events:
            self.producer.send(events.values(), then=partial(self._acknowledged, moved, run.now))
            run.sent += len(events)

    def _acknowledged(self, moved: dict[int, LiveSensor], now: datetime) -> None:
        self.sensors.update(moved)
        self.state.record_live(moved, now)

    def _malformed(self, result: Any, location_id: int | None, exc: Exception, run: _Cycle) -> None:
        where = f" of location {location_id}" if location_id is not None else ""
        log.warning("collect: a malformed reading%s skipped (%s: %s): %.200r",
                    where, type(exc).__name__, exc, result)  # fmt: skip
        run.malformed += 1

    def forget_stale(self) -> int:
        """Forget sensors unseen for the state's TTL (bounded memory and state)."""
        gone = self.state.forget_live(datetime.fromtimestamp(self.clock(), UTC))
        for sensor_id in gone:
            self.sensors.pop(sensor_id, None)
        return len(gone)


def _period(known: LiveSensor | None, end: datetime) -> int | None:
    """The sensor's period in seconds: the smallest gap between successive readings seen."""
    if known is None:
        return None
    gap = int((end - known.last_end).total_seconds())
    if not 0 < gap < _LONGEST_PERIOD.total_seconds():
        return known.interval_s
    return gap if known.interval_s is None else min(gap, known.interval_s)


def run_collector(
    targets: Targets,
    *,
    client: OpenAQClient,
    producer: EventProducer,
    state: IngestionState,
    budget: Budget,
    once: bool,
    echo: Callable[[str], None],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] | None = None,
    cycles: int | None = None,
    until: float | None = None,
) -> int:
    """Poll until SIGTERM/SIGINT (or once, ``cycles`` times, or ``until`` on ``clock``).
    Returns the events sent.

    ``clock``/``sleep`` let a benchmark run a day of cycles against a mock on a virtual clock.
    """
    stop = threading.Event()
    if not once and sleep is None and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    wait = sleep or stop.wait
    collector = Collector(client=client, producer=producer, state=state, clock=clock)
    catalog: Catalog | None = None
    total = done = 0
    interval_s = budget.wanted_interval_s
    while True:
        started = clock()
        if catalog is None or started - catalog.looked_up_at > LOCATIONS_REFRESH_S:
            catalog = _refresh(client, targets, catalog, started, echo)
            forgotten = collector.forget_stale()
            if forgotten:
                echo(f"collect: forgot {forgotten} sensor(s) unseen for 30 days")
        result = collector.cycle(targets, catalog)
        duration = clock() - started
        total += result.sent
        done += 1
        planned = budget.interval_s(max(result.requests, 1), catalog.requests)
        if math.isinf(planned):
            raise AqiError(
                f"{budget.share:.0%} of {budget.per_hour} requests/hour does not even cover "
                f"refreshing the locations ({catalog.requests} requests every "
                f"{LOCATIONS_REFRESH_S // 3600} h): raise AQ_COLLECT_BUDGET_SHARE or narrow the scope"
            )
        if planned > interval_s + 1 or (
            interval_s > budget.wanted_interval_s and planned < interval_s
        ):
            echo(
                f"collect: a cycle costs {result.requests} requests; to stay within "
                f"{budget.requests_per_hour:.0f} requests/hour ({budget.share:.0%} of "
                f"{budget.per_hour}) the interval is {planned / 60:.1f} min "
                f"(asked: {budget.wanted_interval_s / 60:.1f} min)"
            )
        interval_s = planned
        _report(result, started, duration, interval_s, targets, state, echo)
        pause = max(0.0, interval_s - duration)
        if once or (cycles is not None and done >= cycles):
            return total
        if until is not None and clock() + pause >= until:
            return total
        if sleep is not None:
            sleep(pause)
        elif wait(pause):
            return total


def _refresh(
    client: OpenAQClient,
    targets: Targets,
    catalog: Catalog | None,
    now: float,
    echo: Callable[[str], None],
) -> Catalog:
    try:
        fresh = load_catalog(client, targets, now)
    except _FATAL:
        raise
    except OpenAQError as exc:
        if catalog is None:
            raise  # the first look-up: an unknown location id is the user's to fix
        log.warning("collect: keeping the %d known locations: %s", len(catalog.locations), exc)
        catalog.looked_up_at = now
        return catalog
    echo(
        f"collect: polling {len(fresh.locations)} locations ({targets.describe()}), "
        f"{len(fresh.by_sensor)} sensors of {', '.join(targets.parameters)} "
        f"({len(fresh.parameter_ids)} parameter ids; look-up: {fresh.requests} requests)"
    )
    return fresh


def _report(
    result: CycleResult,
    started: float,
    duration: float,
    interval_s: float,
    targets: Targets,
    state: IngestionState,
    echo: Callable[[str], None],
) -> None:
    lag = f", lag {result.lag_p50_s / 60:.0f} min median" if result.lag_p50_s is not None else ""
    echo(
        f"collect: {result.readings} readings from {result.locations} locations, "
        f"{result.sent} new sent, {result.already_sent} already sent{result.problems()} "
        f"({result.requests} requests, {result.strategy}{lag}, {duration:.1f} s)"
    )
    state.record_cycle({
        "started_at": format_utc(datetime.fromtimestamp(started, UTC)),
        "scope": targets.describe(), "strategy": result.strategy, "requests": result.requests,
        "readings": result.readings, "new": result.sent, "already_sent": result.already_sent,
        "failed": result.failed_locations + result.failed_pages, "malformed": result.malformed,
        "lag_p50_s": result.lag_p50_s, "lag_max_s": result.lag_max_s,
        "duration_s": round(duration, 3), "interval_s": interval_s,
    })  # fmt: skip
