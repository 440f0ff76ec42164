"""A local mock of the OpenAQ API v3: a test fixture and an offline tool for developers.

The collector must be proven against what the real API does - paging that ends on a short
page, the ``datetime_from < period end <= datetime_to`` filter, per-key fixed-window rate
limits announced in ``x-ratelimit-*`` headers, 429 without ``Retry-After``, 401/403/410 -
without touching the network or spending the free tier's 60 requests a minute. This server
serves the recorded fixtures (:mod:`ingestion.fixtures`) merged with data registered from
code, enforces the rate limits, injects faults on demand and logs every request so a test
can assert how politely a client behaved.

Public surface:

- :class:`MockOpenAQ` - the server (``with MockOpenAQ() as mock: mock.base_url``).
- :class:`LoggedRequest` - one entry of :attr:`MockOpenAQ.requests`.
- :data:`DEFAULT_PARAMETER` - PM2.5 in µg/m³, the default of
  :meth:`MockOpenAQ.generate_measurements`.
- :func:`main` - ``python -m openaq_mock.api --port 8765 [--fixtures DIR]``.

Behaviour copied from the real API (OpenAQ's API source code and the recorded responses):

- Envelope ``{"meta": {"name": "openaq-api", "website": "/", "page", "limit", "found"},
  "results": [...]}``; ``limit`` 1..1000 (default 100) and ``page`` >= 1, else 422 with a
  FastAPI-style ``detail`` list.
- ``found``: measurements are not counted by the API, so ``found`` is ``">{limit}"`` for a
  full page and the page's length otherwise (the recorded ``limit=5`` page says ``">5"``);
  locations and sensors give the total, or ``">1000"`` above 1000; latest lists give the
  exact total (the recorded PM2.5 latest says 21142).
- Rate limits per API key in fixed windows (a minute and an hour, both configurable),
  aligned on the server's start and timed by its clock (``clock=``, default ``time.time``;
  a :class:`openaq_mock.clock.VirtualClock` runs a day in seconds); requests that are
  refused do not use the quota. Every response after the key check
  carries ``x-ratelimit-limit/-used/-remaining/-reset`` (``reset`` = whole seconds until
  the tighter window ends); a 401 carries none, as on the real API, where the headers are
  set only once the key is known. 429 has no ``Retry-After``.
- 401 ``{"detail": "Invalid credentials"}`` and 429 ``{"detail": "Too many requests"}``
  are the API's own messages; ``/v1`` and ``/v2`` paths answer 410.
- ``datetime_min`` on the latest lists keeps the results whose ``datetime`` is later.

With ``world=`` (an :class:`openaq_mock.world.World`), the world answers the locations,
sensors, latest and measurements routes at the clock's time, at full scale (30,000
locations, 1000 results a page); the recorded data then serves only what the world does
not know (parameters other than the world's). Key check, rate limits and faults apply as
before.
"""

from __future__ import annotations

import argparse
import bisect
import copy
import hashlib
import json
import logging
import math
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from ingestion.fixtures import (
    DEFAULT_FIXTURES_DIR,
    RecordedResponse,
    load_recorded,
    locations_in,
    sensors_by_location,
)
from openaq_mock.serving import MockServer, ServedInThread

if TYPE_CHECKING:
    from openaq_mock.world import World

__all__ = ["DEFAULT_PARAMETER", "LoggedRequest", "MockOpenAQ", "main"]

_logger = logging.getLogger(__name__)

DEFAULT_PARAMETER: Mapping[str, Any] = MappingProxyType({"id": 2, "name": "pm25", "units": "µg/m³"})
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_RADIUS_METRES = 25_000
EARTH_RADIUS_METRES = 6_371_008.8
GONE_DETAIL = (
    "OpenAQ API v1 and v2 were retired in January 2025 and are no longer available;"
    " use /v3 (https://docs.openaq.org/errors/gone)"
)


class LoggedRequest(NamedTuple):
    """One request as the server saw it. The API key itself is never kept, only whether
    one was sent, so a log printed by a failing test cannot leak it.

    Both times are read from the server's clock (``time.time`` unless one was injected);
    ``monotonic_time`` keeps its name for the tests that use it.
    """

    monotonic_time: float
    wall_time: float
    method: str
    path: str
    query: dict[str, str]
    status: int
    api_key_present: bool


class MockOpenAQ(ServedInThread):
    """A threaded OpenAQ v3 mock on 127.0.0.1 (a free port unless ``port`` is given).

    ``fixtures`` is the directory of recorded responses to serve (``None`` starts empty).
    ``api_key=None`` accepts any request; otherwise requests without ``X-API-Key: <key>``
    get 401. ``per_minute``/``per_hour`` are the quotas of the two fixed windows, whose
    lengths are ``window_seconds`` and 60 x ``window_seconds`` (shorten it in tests).
    ``fail_with_429_every=N`` answers every Nth admitted request with a 429 whose
    ``x-ratelimit-reset`` is ``reset_after_429`` seconds; until that has passed, every
    request of that key gets 429 too and counts in :meth:`requests_before_reset`.

    ``world`` serves a :class:`openaq_mock.world.World` (see the module docstring);
    ``clock`` (epoch seconds) times the rate-limit windows, the request log and the
    world's "now".
    """

    def __init__(
        self,
        fixtures: Path | None = DEFAULT_FIXTURES_DIR,
        *,
        api_key: str | None = None,
        per_minute: int = 60,
        per_hour: int = 2000,
        window_seconds: float = 60.0,
        fail_with_429_every: int | None = None,
        reset_after_429: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
        world: World | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if per_minute < 1 or per_hour < 1 or window_seconds <= 0:
            raise ValueError("per_minute, per_hour and window_seconds must be positive")
        self.api_key = api_key
        self.per_minute = per_minute
        self.per_hour = per_hour
        self.window_seconds = float(window_seconds)
        self.verbose = verbose
        self._lock = threading.RLock()
        self._init_serving(host, port)
        self._data = _Store()
        self._limits = _Limiter(self)
        self._fail_every = fail_with_429_every
        self._reset_after_429 = reset_after_429
        self._admitted = 0
        self._faults: list[_Fault] = []
        self._log: list[LoggedRequest] = []
        self._received = 0
        self._violations = 0
        self._kinds: dict[str, int] = {}
        self._clock = clock
        self.world = world
        self._world_routes = _WorldRoutes(world) if world is not None else None
        if fixtures is not None:
            self._data.load(load_recorded(Path(fixtures)))
        self._t0 = clock()  # the rate-limit windows are aligned on this instant

    # -- life cycle: start, stop, context manager, port (openaq_mock.serving) -----------

    def _make_server(self, address: tuple[str, int]) -> MockServer[MockOpenAQ]:
        return MockServer(address, _Handler, self)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v3`` - what a client uses in place of the real base URL."""
        return f"http://{self.host}:{self.port}/v3"

    # -- data -----------------------------------------------------------------------

    def add_location(self, location_obj: Mapping[str, Any]) -> None:
        """Serve an OpenAQ-shaped location (with its ``sensors``), replacing one of that id."""
        with self._lock:
            self._data.add_location(location_obj)

    def add_measurements(self, sensor_id: int, results: Sequence[Mapping[str, Any]]) -> None:
        """Serve ``/sensors/{id}/measurements`` results; one per period end, the last wins."""
        with self._lock:
            self._data.add_measurements(int(sensor_id), results)

    def generate_measurements(
        self,
        sensor_id: int,
        start: datetime,
        count: int,
        interval: timedelta = timedelta(hours=1),
        parameter: Mapping[str, Any] = DEFAULT_PARAMETER,
        seed: int = 0,
    ) -> list[dict[str, Any]]:
        """Add ``count`` deterministic measurements, the first period starting at ``start``.

        The results have the shape of real raw measurements (value, flagInfo, parameter,
        period, coordinates, summary, coverage); local times use the time zone of the
        sensor's location when it is known (add the location first), else UTC. The same
        arguments always give the same values. Returns the results it added.
        """
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if count < 0 or interval <= timedelta(0):
            raise ValueError("count must be >= 0 and interval positive")
        with self._lock:
            zone = self._data.zone_of_sensor(int(sensor_id))
            results = _generated(int(sensor_id), start, count, interval, parameter, seed, zone)
            self._data.add_measurements(int(sensor_id), results)
        return results

    # -- faults ---------------------------------------------------------------------

    def inject(
        self,
        status: int | None = None,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        malformed: bool = False,
        cut: bool = False,
        path: str | None = None,
        on_request: int | None = None,
        times: int = 1,
    ) -> None:
        """Queue a scripted fault for the next admitted request that matches.

        ``status`` answers with that code and ``body`` (default ``{"detail": <reason>}``);
        ``delay`` holds the response that many seconds (to make a client time out);
        ``malformed`` sends the real body truncated, with 200; ``cut`` announces the whole
        body, sends half of it and closes the connection (a connection lost mid-body); they
        combine. ``path``
        restricts the fault to paths containing that substring, ``on_request`` to the
        k-th request the server receives (1-based); ``times`` repeats it. Faults apply
        after the key check and the rate limiter, in the order they were queued.
        """
        if status is None and not delay and not malformed and not cut:
            raise ValueError("a fault needs a status, a delay, malformed=True or cut=True")
        if times < 1:
            raise ValueError("times must be >= 1")
        fault = _Fault(status, body, dict(headers or {}), delay, malformed, path, on_request,
                       times, cut)  # fmt: skip
        with self._lock:
            self._faults.append(fault)

    def fail_once(
        self, status: int = 500, on_request: int | None = None, path: str | None = None
    ) -> None:
        """Answer ``status`` once: to the ``on_request``-th request, or the next one."""
        self.inject(status, on_request=on_request, path=path)

    def set_fail_with_429_every(self, n: int | None, reset_after_429: int | None = None) -> None:
        """Change the periodic 429 (``None`` turns it off); restarts the count."""
        with self._lock:
            self._fail_every = n
            self._admitted = 0
            if reset_after_429 is not None:
                self._reset_after_429 = reset_after_429

    def clear_faults(self) -> None:
        """Drop every queued fault that has not fired yet."""
        with self._lock:
            self._faults.clear()

    # -- request log ----------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return sorted(self._log, key=lambda r: r.monotonic_time)

    def max_requests_in_window(self, seconds: float = 60.0) -> int:
        """The most requests that arrived within any ``seconds``-long span (sliding)."""
        times = [r.monotonic_time for r in self.requests]
        best, first = 0, 0
        for last, moment in enumerate(times):
            while moment - times[first] >= seconds:
                first += 1
            best = max(best, last - first + 1)
        return best

    def requests_before_reset(self) -> int:
        """Requests that arrived while a 429's reset was still pending (polite clients: 0)."""
        with self._lock:
            return self._violations

    def request_counts(self) -> dict[str, int]:
        """Requests received per kind of path, ids replaced by ``{id}``:
        ``{"/v3/parameters/{id}/latest": 27, "/v3/locations": 30}``."""
        with self._lock:
            return dict(self._kinds)

    def reset_log(self) -> None:
        """Forget the logged requests, their counts per path and the violations.

        Quotas, queued faults and the request numbering that ``on_request`` counts are kept.
        """
        with self._lock:
            self._log.clear()
            self._kinds.clear()
            self._violations = 0

    # -- request handling (called by the HTTP handler threads) ------------------------

    def _handle(self, method: str, target: str, api_key: str | None) -> _Reply:
        arrived = wall = self._clock()
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        query = _parse_query(split.query)
        kind = _ID_SEGMENT.sub("/{id}", path)
        with self._lock:
            self._received += 1
            self._kinds[kind] = self._kinds.get(kind, 0) + 1
            reply = self._process(method, path, query, api_key, self._received, arrived)
            self._log.append(
                LoggedRequest(arrived, wall, method, path, query, reply.status, bool(api_key))
            )
        return reply

    def _process(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        api_key: str | None,
        number: int,
        now: float,
    ) -> _Reply:
        if self.api_key is not None and api_key != self.api_key:
            return _Reply.json(401, {"detail": "Invalid credentials"})
        bucket = hashlib.sha256((api_key or "").encode()).hexdigest()
        pending = self._limits.penalty_until(bucket)
        if now < pending:
            self._violations += 1
            return self._too_many(bucket, now, max(1, math.ceil(pending - now)))
        exhausted = self._limits.exhausted_window_end(bucket, now)
        if exhausted is not None:
            self._limits.set_penalty(bucket, exhausted)
            return _Reply.json(
                429, {"detail": "Too many requests"}, self._limits.headers(bucket, now)
            )
        self._admitted += 1
        if self._fail_every and self._admitted % self._fail_every == 0:
            self._limits.set_penalty(bucket, now + self._reset_after_429)
            return self._too_many(bucket, now, self._reset_after_429)
        self._limits.count(bucket, now)
        rate_headers = self._limits.headers(bucket, now)
        fault = self._take_fault(path, number)
        if fault is not None and fault.status is not None:
            body = fault.body if fault.body is not None else {"detail": _phrase(fault.status)}
            reply = _Reply.json(fault.status, body, rate_headers)
        else:
            status, payload = self._route(method, path, query, now)
            reply = _Reply.json(status, payload, rate_headers, cache=method == "GET")
        if fault is not None:
            reply = fault.apply(reply)
        return reply

    def _too_many(self, bucket: str, now: float, reset: int) -> _Reply:
        """A 429 that says the quota is used up and resets in ``reset`` seconds."""
        headers = self._limits.headers(bucket, now)
        limit = headers["x-ratelimit-limit"]
        headers.update(
            {
                "x-ratelimit-used": limit,
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(reset),
            }
        )
        return _Reply.json(429, {"detail": "Too many requests"}, headers)

    def _take_fault(self, path: str, number: int) -> _Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.matches(path, number):
                fault.times -= 1
                if fault.times == 0:
                    del self._faults[index]
                return fault
        return None

    def _route(self, method: str, path: str, query: dict[str, str], now: float) -> tuple[int, Any]:
        if re.match(r"^/v[12](/|$)", path):
            return 410, {"detail": GONE_DETAIL}
        for pattern, name in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            if method != "GET":
                return 405, {"detail": "Method Not Allowed"}
            try:
                world = self._world_routes
                if world is not None and world.answers(name, match.groups()):
                    return 200, getattr(world, name)(query, now, *match.groups())
                return 200, getattr(self._data, name)(query, *match.groups())
            except _HTTPError as exc:
                return exc.status, {"detail": exc.detail}
            except Exception as exc:  # a bug in the mock: say so instead of hanging up
                _logger.exception("mock server error on %s", path)
                return 500, {"detail": f"mock server error: {exc!r}"}
        return 404, {"detail": "Not Found"}


# -- rate limiting ---------------------------------------------------------------------


class _Limiter:
    """Per-key counters for the minute and hour windows, aligned on the server's start.

    Keys are stored only as SHA-256 digests. Called with the mock's lock held.
    """

    def __init__(self, mock: MockOpenAQ) -> None:
        self._mock = mock
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}
        self._penalties: dict[str, float] = {}

    def _windows(self) -> list[tuple[str, int, float]]:
        """(name, quota, length in seconds) of each window."""
        m = self._mock
        return [
            ("minute", m.per_minute, m.window_seconds),
            ("hour", m.per_hour, m.window_seconds * 60),
        ]

    def _used(self, bucket: str, name: str, index: int) -> int:
        """Requests counted in window ``index`` (a stored count of an older window is stale)."""
        stored_index, used = self._counts.get((bucket, name), (index, 0))
        return used if stored_index == index else 0

    def _state(self, bucket: str, now: float) -> list[tuple[int, int, float]]:
        """(limit, used, window end) for each window at ``now``."""
        state = []
        for name, limit, length in self._windows():
            index = int((now - self._mock._t0) // length)
            end = self._mock._t0 + (index + 1) * length
            state.append((limit, self._used(bucket, name, index), end))
        return state

    def count(self, bucket: str, now: float) -> None:
        for name, _, length in self._windows():
            index = int((now - self._mock._t0) // length)
            self._counts[(bucket, name)] = (index, self._used(bucket, name, index) + 1)

    def exhausted_window_end(self, bucket: str, now: float) -> float | None:
        """When the latest-ending used-up window ends, or None if a request may pass."""
        ends = [end for limit, used, end in self._state(bucket, now) if used >= limit]
        return max(ends) if ends else None

    def headers(self, bucket: str, now: float) -> dict[str, str]:
        """The headers of the tighter window: the used-up one, else the least remaining."""
        state = self._state(bucket, now)
        exhausted = [s for s in state if s[1] >= s[0]]
        if exhausted:
            limit, used, end = max(exhausted, key=lambda s: s[2])
        else:
            limit, used, end = min(state, key=lambda s: s[0] - s[1])
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-used": str(min(used, limit)),
            "x-ratelimit-remaining": str(max(0, limit - used)),
            "x-ratelimit-reset": str(max(1, math.ceil(end - now))),
        }

    def penalty_until(self, bucket: str) -> float:
        return self._penalties.get(bucket, 0.0)

    def set_penalty(self, bucket: str, until: float) -> None:
        self._penalties[bucket] = max(self.penalty_until(bucket), until)


# -- faults and replies ----------------------------------------------------------------


@dataclass
class _Fault:
    status: int | None
    body: Any
    headers: dict[str, str]
    delay: float
    malformed: bool
    path: str | None
    on_request: int | None
    times: int
    cut: bool = False

    def matches(self, path: str, number: int) -> bool:
        if self.path is not None and self.path not in path:
            return False
        return self.on_request is None or self.on_request == number

    def apply(self, reply: _Reply) -> _Reply:
        """Add the fault's headers, truncation and delay to a reply."""
        headers = {**reply.headers, **self.headers}
        body, status = reply.body, reply.status
        if self.malformed:
            body = body[: max(1, len(body) // 2)]
            status = self.status if self.status is not None else 200
        return _Reply(status, headers, body, self.delay, self.cut)


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    delay: float = 0.0
    #: send the Content-Length of the whole body, then half of it, then close
    cut: bool = False

    @classmethod
    def json(
        cls,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
        cache: bool = False,
    ) -> _Reply:
        if isinstance(payload, bytes):
            body = payload
        elif isinstance(payload, str):
            body = payload.encode()
        else:
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        all_headers = {"content-type": "application/json"}
        if cache and status < 500:
            all_headers["cache-control"] = "public, max-age=900"
        all_headers.update(headers or {})
        return cls(status, all_headers, body)


class _HTTPError(Exception):
    """Raised by a route: answer ``status`` with ``{"detail": detail}``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(status, detail)
        self.status, self.detail = status, detail


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# -- data and routes ---------------------------------------------------------------------


@dataclass
class _Store:
    """Everything the mock serves, indexed for the routes. Used with the mock's lock held."""

    locations: dict[int, dict[str, Any]] = field(default_factory=dict)
    location_sensors: dict[int, list[int]] = field(default_factory=dict)
    sensors: dict[int, dict[str, Any]] = field(default_factory=dict)
    sensor_location: dict[int, int] = field(default_factory=dict)
    parameters: dict[int, dict[str, Any]] = field(default_factory=dict)
    measurements: dict[int, dict[datetime, dict[str, Any]]] = field(default_factory=dict)
    location_latest: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    parameter_latest: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    _sorted: dict[int, tuple[list[datetime], list[dict[str, Any]]]] = field(default_factory=dict)

    # loading

    def load(self, responses: list[RecordedResponse]) -> None:
        """Index the recorded responses: locations, sensors, measurements, latest, parameters."""
        for location_id, location in locations_in(responses).items():
            self.locations[location_id] = location
        for location_id, sensors in sensors_by_location(responses).items():
            self.location_sensors[location_id] = [int(s["id"]) for s in sensors]
            for sensor in sensors:
                self._add_sensor(sensor, location_id)
        for response in responses:
            if response.status == 200:
                self._load_one(response)

    def _load_one(self, response: RecordedResponse) -> None:
        results = response.body.get("results") or []
        if match := re.match(r"^/v3/sensors/(\d+)$", response.path):
            for sensor in results:
                self._add_sensor(sensor, self.sensor_location.get(int(match[1])))
        elif match := re.match(r"^/v3/sensors/(\d+)/measurements$", response.path):
            self.add_measurements(int(match[1]), results)
        elif match := re.match(r"^/v3/locations/(\d+)/latest$", response.path):
            table = self.location_latest.setdefault(int(match[1]), {})
            for record in results:
                _keep_newer(table, record)
        elif match := re.match(r"^/v3/parameters/(\d+)/latest$", response.path):
            table = self.parameter_latest.setdefault(int(match[1]), {})
            for record in results:
                _keep_newer(table, record)
        elif re.match(r"^/v3/parameters/(\d+)$", response.path):
            for parameter in results:
                self.parameters[int(parameter["id"])] = dict(parameter)

    def _add_sensor(self, sensor: Mapping[str, Any], location_id: int | None) -> None:
        sensor_id = int(sensor["id"])
        merged = dict(self.sensors.get(sensor_id, {}))
        merged.update({k: v for k, v in sensor.items() if v is not None or k not in merged})
        self.sensors[sensor_id] = copy.deepcopy(merged)
        if location_id is not None:
            self.sensor_location[sensor_id] = location_id
        parameter = sensor.get("parameter")
        if isinstance(parameter, Mapping) and parameter.get("id") is not None:
            self.parameters.setdefault(int(parameter["id"]), dict(parameter))

    def add_location(self, location_obj: Mapping[str, Any]) -> None:
        if not isinstance(location_obj, Mapping) or location_obj.get("id") is None:
            raise ValueError("a location needs an 'id'")
        location = copy.deepcopy(dict(location_obj))
        location_id = int(location["id"])
        self.locations[location_id] = location
        sensors = location.get("sensors") or []
        self.location_sensors[location_id] = [int(s["id"]) for s in sensors]
        for sensor in sensors:
            self._add_sensor(sensor, location_id)

    def add_measurements(self, sensor_id: int, results: Sequence[Mapping[str, Any]]) -> None:
        table = self.measurements.setdefault(sensor_id, {})
        for result in results:
            try:
                end = _parse_datetime(result["period"]["datetimeTo"]["utc"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"sensor {sensor_id}: a result without period.datetimeTo.utc"
                ) from exc
            table[end] = copy.deepcopy(dict(result))
        self._sorted.pop(sensor_id, None)

    def zone_of_sensor(self, sensor_id: int) -> tzinfo:
        location = self.locations.get(self.sensor_location.get(sensor_id, -1), {})
        return _zone(location.get("timezone"))

    # helpers

    def _series(self, sensor_id: int) -> tuple[list[datetime], list[dict[str, Any]]]:
        """The sensor's measurements ordered by period end (cached until the next add)."""
        if sensor_id not in self._sorted:
            table = self.measurements.get(sensor_id, {})
            ends = sorted(table)
            self._sorted[sensor_id] = (ends, [table[end] for end in ends])
        return self._sorted[sensor_id]

    def _location(self, raw_id: str) -> tuple[int, dict[str, Any]]:
        location_id = _path_id(raw_id, "locations_id")
        if location_id not in self.locations:
            raise _HTTPError(404, "Location not found")
        return location_id, self.locations[location_id]

    def _sensor_known(self, sensor_id: int) -> bool:
        return sensor_id in self.sensors or bool(self.measurements.get(sensor_id))

    def _sensor_detail(self, sensor_id: int) -> dict[str, Any]:
        """The ``/sensors/{id}`` object: what was recorded, widened by the measurements.

        ``datetimeFirst``/``datetimeLast`` span both, ``latest`` is the newer of the two, so
        a sensor given fresh generated data does not look years stale.
        """
        sensor = copy.deepcopy(self.sensors.get(sensor_id, {"id": sensor_id}))
        _, results = self._series(sensor_id)
        if "parameter" not in sensor and results:
            parameter = dict(results[-1].get("parameter") or {})
            sensor["parameter"] = parameter
            sensor.setdefault("name", f"{parameter.get('name')} {parameter.get('units')}")
        if results:
            first, last = results[0]["period"]["datetimeTo"], results[-1]["period"]["datetimeTo"]
            held_first = _instant(sensor.get("datetimeFirst"))
            if held_first is None or _instant(first) < held_first:
                sensor["datetimeFirst"] = copy.deepcopy(first)
            held_last = _instant(sensor.get("datetimeLast"))
            if held_last is None or _instant(last) > held_last:
                sensor["datetimeLast"] = copy.deepcopy(last)
            newest = self._newest(sensor_id)
            held_latest = _instant((sensor.get("latest") or {}).get("datetime"))
            if newest is not None and (
                held_latest is None or _instant(newest["period"]["datetimeTo"]) >= held_latest
            ):
                latest = self._latest_record(sensor_id, newest)
                sensor["latest"] = {k: latest[k] for k in ("datetime", "value", "coordinates")}
        for key in ("datetimeFirst", "datetimeLast", "coverage", "latest", "summary"):
            sensor.setdefault(key, None)
        return sensor

    def _newest(self, sensor_id: int) -> dict[str, Any] | None:
        """The newest measurement with a value (the API's latest is never null)."""
        for result in reversed(self._series(sensor_id)[1]):
            if result.get("value") is not None:
                return result
        return None

    def _latest_record(self, sensor_id: int, result: Mapping[str, Any]) -> dict[str, Any]:
        location_id = self.sensor_location.get(sensor_id)
        location = self.locations.get(location_id, {}) if location_id is not None else {}
        coordinates = result.get("coordinates") or location.get("coordinates")
        return {
            "datetime": copy.deepcopy(result["period"]["datetimeTo"]),
            "value": result.get("value"),
            "coordinates": copy.deepcopy(coordinates),
            "sensorsId": sensor_id,
            "locationsId": location_id,
        }

    def _parameter_of(self, sensor_id: int) -> int | None:
        parameter = (self.sensors.get(sensor_id) or {}).get("parameter")
        if not parameter:
            results = self._series(sensor_id)[1]
            parameter = results[-1].get("parameter") if results else None
        return int(parameter["id"]) if parameter and parameter.get("id") is not None else None

    # routes: each takes the query and the path's groups, returns the envelope

    def get_locations(self, query: dict[str, str]) -> dict[str, Any]:
        page, limit = _paging(query)
        chosen = [self.locations[i] for i in sorted(self.locations)]
        for keep in _location_filters(query):
            chosen = [loc for loc in (keep(loc) for loc in chosen) if loc is not None]
        return _counted(chosen, page, limit)

    def get_location(self, query: dict[str, str], raw_id: str) -> dict[str, Any]:
        page, limit = _paging(query)
        _, location = self._location(raw_id)
        return _counted([location], page, limit)

    def get_location_sensors(self, query: dict[str, str], raw_id: str) -> dict[str, Any]:
        page, limit = _paging(query)
        location_id, _ = self._location(raw_id)
        sensors = [self._sensor_detail(s) for s in self.location_sensors.get(location_id, [])]
        return _counted(sensors, page, limit)

    def get_location_latest(self, query: dict[str, str], raw_id: str) -> dict[str, Any]:
        """Per sensor, the newest of: recorded latest lists, sensors' ``latest``, measurements."""
        page, limit = _paging(query)
        location_id, location = self._location(raw_id)
        table: dict[int, dict[str, Any]] = {}
        for record in self.location_latest.get(location_id, {}).values():
            _keep_newer(table, record)
        for records in self.parameter_latest.values():
            for record in records.values():
                if record.get("locationsId") == location_id:
                    _keep_newer(table, record)
        for sensor_id in self.location_sensors.get(location_id, []):
            self._keep_sensor_latest(table, sensor_id)
        since = _query_datetime(query, "datetime_min", _zone(location.get("timezone")))
        return _exact(_after(table, since), page, limit)

    def get_parameter(self, query: dict[str, str], raw_id: str) -> dict[str, Any]:
        page, limit = _paging(query)
        parameter_id = _path_id(raw_id, "parameters_id")
        if parameter_id not in self.parameters:
            raise _HTTPError(404, "Parameter not found")
        return _counted([self.parameters[parameter_id]], page, limit)

    def get_parameter_latest(self, query: dict[str, str], raw_id: str) -> dict[str, Any]:
        """Per sensor of that parameter, the newest recorded or measured value."""
        page, limit = _paging(query)
        parameter_id = _path_id(raw_id, "parameters_id")
        table: dict[int, dict[str, Any]] = {}
        for record in self.parameter_latest.get(parameter_id, {}).values():
            _keep_newer(table, record)
        for sensor_id in sorted(set(self.sensor_location) | set(self.measurements)):
            if self._parameter_of(sensor_id) == parameter_id:
                self._keep_sensor_latest(table, sensor_id)
        if not table and parameter_id not in self.parameters:
            raise _HTTPError(404, "Parameter not found")
        since = _query_datetime(query, "datetime_min", UTC)
        return _exact(_after(table, since), page, limit)

    def _keep_sensor_latest(self, table: dict[int, dict[str, Any]], sensor_id: int) -> None:
        """Offer the sensor's recorded ``latest`` and its newest measurement to ``table``.

        Only sensors that belong to a location qualify: a latest record names its location.
        """
        location_id = self.sensor_location.get(sensor_id)
        if location_id is None:
            return
        recorded = (self.sensors.get(sensor_id) or {}).get("latest")
        if isinstance(recorded, Mapping) and recorded.get("datetime"):
            record = copy.deepcopy(dict(recorded))
            _keep_newer(table, {**record, "sensorsId": sensor_id, "locationsId": location_id})
        newest = self._newest(sensor_id)
        if newest is not None:
            _keep_newer(table, self._latest_record(sensor_id, newest))

    def get_sensor(self, query: dict[str, str], raw_id: str) -> dict[str, Any]:
        page, limit = _paging(query)
        sensor_id = _path_id(raw_id, "sensors_id")
        if not self._sensor_known(sensor_id):
            raise _HTTPError(404, "Sensor not found")
        return _counted([self._sensor_detail(sensor_id)], page, limit)

    def get_measurements(self, query: dict[str, str], raw_id: str) -> dict[str, Any]:
        """``datetime_from < period end <= datetime_to``, ascending by period end."""
        page, limit = _paging(query)
        sensor_id = _path_id(raw_id, "sensors_id")
        if not self._sensor_known(sensor_id):
            raise _HTTPError(404, "Sensor not found")
        zone = self.zone_of_sensor(sensor_id)
        since = _query_datetime(query, "datetime_from", zone)
        until = _query_datetime(query, "datetime_to", zone)
        ends, results = self._series(sensor_id)
        first = bisect.bisect_right(ends, since) if since is not None else 0
        last = bisect.bisect_right(ends, until) if until is not None else len(ends)
        chosen = results[first:last] if last > first else []
        rows = chosen[(page - 1) * limit : page * limit]
        found: int | str = f">{limit}" if len(rows) == limit else len(rows)
        return _envelope(page, limit, found, rows)


_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/v3/locations$"), "get_locations"),
    (re.compile(r"^/v3/locations/([^/]+)$"), "get_location"),
    (re.compile(r"^/v3/locations/([^/]+)/sensors$"), "get_location_sensors"),
    (re.compile(r"^/v3/locations/([^/]+)/latest$"), "get_location_latest"),
    (re.compile(r"^/v3/parameters/([^/]+)$"), "get_parameter"),
    (re.compile(r"^/v3/parameters/([^/]+)/latest$"), "get_parameter_latest"),
    (re.compile(r"^/v3/sensors/([^/]+)$"), "get_sensor"),
    (re.compile(r"^/v3/sensors/([^/]+)/measurements$"), "get_measurements"),
]
#: a numeric path segment, replaced by ``/{id}`` in :meth:`MockOpenAQ.request_counts`
_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


class _WorldRoutes:
    """The routes a :class:`~openaq_mock.world.World` answers, at the server clock's time.

    Same names and checks as :class:`_Store`'s routes, plus ``now``. The results are built
    fresh for each request (no deep copy) and encoded with orjson: ``json`` takes ~6 ms on
    a 1000-result page, orjson well under one.
    """

    def __init__(self, world: World) -> None:
        from openaq_mock.world import PARAMETERS

        self.world = world
        self._parameters = frozenset(PARAMETERS)

    def answers(self, name: str, groups: Sequence[str]) -> bool:
        """Whether the world answers this route (parameters it does not know go to the store)."""
        if name in {"get_parameter", "get_parameter_latest"}:
            try:
                return int(groups[0]) in self._parameters
            except ValueError:
                return False
        return True

    def _location_id(self, raw_id: str) -> int:
        location_id = _path_id(raw_id, "locations_id")
        if not self.world.has_location(location_id):
            raise _HTTPError(404, "Location not found")
        return location_id

    def _sensor_id(self, raw_id: str) -> int:
        sensor_id = _path_id(raw_id, "sensors_id")
        if not self.world.has_sensor(sensor_id):
            raise _HTTPError(404, "Sensor not found")
        return sensor_id

    def get_locations(self, query: dict[str, str], now: float) -> bytes:
        page, limit = _paging(query)
        criteria = _location_criteria(query)
        ids, flags, circle = dict(criteria.ids), dict(criteria.flags), criteria.circle
        hits = self.world.find_locations(
            iso=criteria.iso,
            countries_id=ids.get("countries_id"),
            providers_id=ids.get("providers_id"),
            parameters_id=ids.get("parameters_id"),
            bbox=criteria.bbox,
            center=circle[:2] if circle else None,
            radius=circle[2] if circle else None,
            monitor=flags.get("monitor"),
            mobile=flags.get("mobile"),
        )
        rows = [
            self.world.location_object(location_id, now, distance)
            for location_id, distance in hits[(page - 1) * limit : page * limit]
        ]
        found: int | str = len(hits) if len(hits) <= MAX_LIMIT else f">{MAX_LIMIT}"
        return _encoded(page, limit, found, rows)

    def get_location(self, query: dict[str, str], now: float, raw_id: str) -> bytes:
        page, limit = _paging(query)
        rows = [self.world.location_object(self._location_id(raw_id), now)]
        return _encoded(page, limit, 1, rows[(page - 1) * limit : page * limit])

    def get_location_sensors(self, query: dict[str, str], now: float, raw_id: str) -> bytes:
        page, limit = _paging(query)
        rows = self.world.location_sensors(self._location_id(raw_id), now)
        found: int | str = len(rows) if len(rows) <= MAX_LIMIT else f">{MAX_LIMIT}"
        return _encoded(page, limit, found, rows[(page - 1) * limit : page * limit])

    def get_location_latest(self, query: dict[str, str], now: float, raw_id: str) -> bytes:
        page, limit = _paging(query)
        location_id = self._location_id(raw_id)
        zone = _zone(self.world.location_timezone(location_id))
        since = _query_datetime(query, "datetime_min", zone)
        rows = self.world.location_latest(location_id, now, since)
        return _encoded(page, limit, len(rows), rows[(page - 1) * limit : page * limit])

    def get_parameter(self, query: dict[str, str], now: float, raw_id: str) -> bytes:
        page, limit = _paging(query)
        rows = [self.world.parameter(_path_id(raw_id, "parameters_id"))]
        return _encoded(page, limit, 1, rows[(page - 1) * limit : page * limit])

    def get_parameter_latest(self, query: dict[str, str], now: float, raw_id: str) -> bytes:
        page, limit = _paging(query)
        parameter_id = _path_id(raw_id, "parameters_id")
        since = _query_datetime(query, "datetime_min", UTC)
        total, rows = self.world.latest_page(
            parameter_id, now, offset=(page - 1) * limit, limit=limit, datetime_min=since
        )
        return _encoded(page, limit, total, rows)

    def get_sensor(self, query: dict[str, str], now: float, raw_id: str) -> bytes:
        page, limit = _paging(query)
        rows = [self.world.sensor_object(self._sensor_id(raw_id), now)]
        return _encoded(page, limit, 1, rows[(page - 1) * limit : page * limit])

    def get_measurements(self, query: dict[str, str], now: float, raw_id: str) -> bytes:
        """``datetime_from < period end <= datetime_to``, published by ``now``, oldest first."""
        page, limit = _paging(query)
        sensor_id = self._sensor_id(raw_id)
        zone = _zone(self.world.sensor(sensor_id).timezone)
        rows = self.world.measurements(
            sensor_id,
            now,
            datetime_from=_query_datetime(query, "datetime_from", zone),
            datetime_to=_query_datetime(query, "datetime_to", zone),
            offset=(page - 1) * limit,
            limit=limit,
        )
        found: int | str = f">{limit}" if len(rows) == limit else len(rows)
        return _encoded(page, limit, found, rows)


def _encoded(page: int, limit: int, found: int | str, results: list[Any]) -> bytes:
    """The envelope of results built for this reply (not shared), as JSON bytes."""
    meta = {"name": "openaq-api", "website": "/", "page": page, "limit": limit, "found": found}
    return orjson.dumps({"meta": meta, "results": results})


def _envelope(page: int, limit: int, found: int | str, results: list[Any]) -> dict[str, Any]:
    meta = {"name": "openaq-api", "website": "/", "page": page, "limit": limit, "found": found}
    return {"meta": meta, "results": copy.deepcopy(results)}


def _counted(items: list[Any], page: int, limit: int) -> dict[str, Any]:
    """Locations and sensors: the total, or ">1000" above 1000."""
    found: int | str = len(items) if len(items) <= MAX_LIMIT else f">{MAX_LIMIT}"
    return _envelope(page, limit, found, items[(page - 1) * limit : page * limit])


def _exact(items: list[Any], page: int, limit: int) -> dict[str, Any]:
    """Latest lists: the exact total."""
    return _envelope(page, limit, len(items), items[(page - 1) * limit : page * limit])


def _after(table: dict[int, dict[str, Any]], since: datetime | None) -> list[dict[str, Any]]:
    """The latest records by sensor id; with ``since``, those whose ``datetime`` is later."""
    records = [table[s] for s in sorted(table)]
    if since is None:
        return records
    return [r for r in records if (moment := _instant(r.get("datetime"))) and moment > since]


def _instant(stamp: Any) -> datetime | None:
    """The UTC instant of a ``{"utc": ..., "local": ...}`` object, or None if it has none."""
    try:
        return _parse_datetime(stamp["utc"])
    except (KeyError, TypeError, ValueError):
        return None


def _keep_newer(table: dict[int, dict[str, Any]], record: Mapping[str, Any]) -> None:
    """Keep, per sensor, the latest record with the newest ``datetime``."""
    try:
        sensor_id = int(record["sensorsId"])
        moment = _parse_datetime(record["datetime"]["utc"])
    except (KeyError, TypeError, ValueError):
        return
    held = table.get(sensor_id)
    if held is None or _parse_datetime(held["datetime"]["utc"]) <= moment:
        table[sensor_id] = dict(record)


# -- query parsing -----------------------------------------------------------------------


def _parse_query(text: str) -> dict[str, str]:
    """Decoded query; a repeated name is joined with commas (the API's lists accept both)."""
    query: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    return query


def _invalid(loc: tuple[str, str], kind: str, msg: str, value: Any) -> _HTTPError:
    """A 422 shaped like FastAPI's: ``{"detail": [{"type", "loc", "msg", "input"}]}``."""
    return _HTTPError(422, [{"type": kind, "loc": list(loc), "msg": msg, "input": value}])


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        msg = "Input should be a valid integer, unable to parse string as an integer"
        raise _invalid(("query", name), "int_parsing", msg, raw) from None


def _paging(query: dict[str, str]) -> tuple[int, int]:
    """``page`` >= 1 (default 1) and 1 <= ``limit`` <= 1000 (default 100), else 422."""
    limit = _int_param(query, "limit", DEFAULT_LIMIT)
    page = _int_param(query, "page", 1)
    if limit > MAX_LIMIT:
        msg = f"Input should be less than or equal to {MAX_LIMIT}"
        raise _invalid(("query", "limit"), "less_than_equal", msg, query["limit"])
    if limit < 1:
        raise _invalid(
            ("query", "limit"), "greater_than", "Input should be greater than 0", query["limit"]
        )
    if page < 1:
        raise _invalid(
            ("query", "page"), "greater_than", "Input should be greater than 0", query["page"]
        )
    return page, limit


def _path_id(raw: str, name: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        msg = "Input should be a valid integer, unable to parse string as an integer"
        raise _invalid(("path", name), "int_parsing", msg, raw) from None
    if value < 1:
        raise _invalid(
            ("path", name), "greater_than_equal", "Input should be greater than or equal to 1", raw
        )
    return value


def _parse_datetime(text: str) -> datetime:
    """ISO-8601 with ``Z`` or an offset -> aware UTC datetime (naive text is an error)."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return value.astimezone(UTC)


def _query_datetime(query: dict[str, str], name: str, zone: tzinfo) -> datetime | None:
    """A ``datetime_from``/``datetime_to`` value; a date or naive time is in the location's zone."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        msg = "Input should be a valid datetime or date"
        raise _invalid(("query", name), "datetime_from_date_parsing", msg, raw) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def _zone(name: Any) -> tzinfo:
    if not isinstance(name, str) or not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


@dataclass(frozen=True)
class _LocationCriteria:
    """The ``/v3/locations`` filters of a query, checked (a 422 is raised while parsing)."""

    bbox: tuple[float, float, float, float] | None = None
    #: latitude, longitude and radius in metres
    circle: tuple[float, float, int] | None = None
    iso: str | None = None
    #: (query name, wanted ids) for countries_id, providers_id, parameters_id, in that order
    ids: tuple[tuple[str, frozenset[int]], ...] = ()
    #: (query name, wanted value) for monitor and mobile
    flags: tuple[tuple[str, bool], ...] = ()


def _location_criteria(query: dict[str, str]) -> _LocationCriteria:
    has = {
        name for name in ("bbox", "coordinates", "radius", "iso", "countries_id") if name in query
    }
    if "bbox" in has and has & {"coordinates", "radius"}:
        raise _HTTPError(
            422, "Cannot pass both bounding box and coordinate/radius query in the same URL"
        )
    if "coordinates" in has and "radius" not in has:
        raise _HTTPError(422, "Coordinates must be passed with a radius")
    if "radius" in has and "coordinates" not in has:
        raise _HTTPError(422, "Radius must be passed with a coordinate pair")
    if {"iso", "countries_id"} <= has:
        raise _HTTPError(422, "Cannot pass both countries_id and iso code")
    bbox = _parse_bbox(query["bbox"]) if "bbox" in has else None
    circle = _parse_circle(query["coordinates"], query["radius"]) if "coordinates" in has else None
    ids = tuple(
        (name, frozenset(_parse_ids(query, name)))
        for name in ("countries_id", "providers_id", "parameters_id")
        if name in query
    )
    flags = tuple(
        (name, _parse_bool(query, name)) for name in ("monitor", "mobile") if name in query
    )
    return _LocationCriteria(bbox, circle, query.get("iso"), ids, flags)


def _location_filters(
    query: dict[str, str],
) -> list[Callable[[dict[str, Any]], dict[str, Any] | None]]:
    """The ``/v3/locations`` filters in use; each returns the location (maybe annotated) or None."""
    criteria = _location_criteria(query)
    filters: list[Callable[[dict[str, Any]], dict[str, Any] | None]] = []
    if criteria.bbox is not None:
        filters.append(_bbox_filter(criteria.bbox))
    if criteria.circle is not None:
        filters.append(_radius_filter(*criteria.circle))
    if criteria.iso is not None:
        iso = criteria.iso
        filters.append(lambda loc: loc if (loc.get("country") or {}).get("code") == iso else None)
    picks: dict[str, Callable[[dict[str, Any]], list[Any]]] = {
        "countries_id": lambda loc: [(loc.get("country") or {}).get("id")],
        "providers_id": lambda loc: [(loc.get("provider") or {}).get("id")],
        "parameters_id": lambda loc: [
            (s.get("parameter") or {}).get("id") for s in loc.get("sensors") or []
        ],
    }
    for name, wanted in criteria.ids:
        filters.append(_ids_filter(wanted, picks[name]))
    keys = {"monitor": "isMonitor", "mobile": "isMobile"}
    for name, value in criteria.flags:
        filters.append(_bool_filter(keys[name], value))
    return filters


def _coordinates(location: Mapping[str, Any]) -> tuple[float, float] | None:
    coords = location.get("coordinates") or {}
    lat, lon = coords.get("latitude"), coords.get("longitude")
    return (float(lat), float(lon)) if lat is not None and lon is not None else None


def _parse_bbox(raw: str) -> tuple[float, float, float, float]:
    try:
        minx, miny, maxx, maxy = (float(x) for x in raw.split(","))
    except ValueError:
        msg = "String should match pattern 'minx,miny,maxx,maxy'"
        raise _invalid(("query", "bbox"), "string_pattern_mismatch", msg, raw) from None
    errors = [
        text
        for bad, text in (
            (not -180 <= minx <= 180, "X min must be between -180 and 180"),
            (not -90 <= miny <= 90, "Y min must be between -90 and 90"),
            (not -180 <= maxx <= 180, "X max must be between -180 and 180"),
            (not -90 <= maxy <= 90, "Y max must be between -90 and 90"),
            (minx > maxx, "X max must be greater than or equal to X min"),
            (miny > maxy, "Y max must be greater than or equal to Y min"),
        )
        if bad
    ]
    if errors:
        msg = "Value error, Invalid bounding box. Error(s): " + " ".join(errors)
        raise _invalid(("query", "bbox"), "value_error", msg, raw)
    return minx, miny, maxx, maxy


def _bbox_filter(
    bbox: tuple[float, float, float, float],
) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    minx, miny, maxx, maxy = bbox

    def keep(location: dict[str, Any]) -> dict[str, Any] | None:
        point = _coordinates(location)
        if point and miny <= point[0] <= maxy and minx <= point[1] <= maxx:
            return location
        return None

    return keep


def _parse_circle(raw: str, raw_radius: str) -> tuple[float, float, int]:
    try:
        lat, lon = (float(x) for x in raw.split(","))
    except ValueError:
        msg = "Value error, coordinates must be 'latitude,longitude'"
        raise _invalid(("query", "coordinates"), "value_error", msg, raw) from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise _invalid(
            ("query", "coordinates"), "value_error", "Value error, Invalid coordinates.", raw
        )
    radius = _int_param({"radius": raw_radius}, "radius", 0)
    if not 0 < radius <= MAX_RADIUS_METRES:
        msg = f"Input should be greater than 0 and less than or equal to {MAX_RADIUS_METRES}"
        raise _invalid(("query", "radius"), "value_error", msg, raw_radius)
    return lat, lon, radius


def _radius_filter(
    lat: float, lon: float, radius: int
) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def keep(location: dict[str, Any]) -> dict[str, Any] | None:
        point = _coordinates(location)
        if point is None:
            return None
        distance = _haversine(lat, lon, *point)
        return {**location, "distance": round(distance, 3)} if distance <= radius else None

    return keep


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (the API uses PostGIS geography; close enough)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_METRES * math.asin(min(1.0, math.sqrt(a)))


def _parse_ids(query: dict[str, str], name: str) -> set[int]:
    try:
        return {int(x) for x in query[name].split(",") if x.strip()}
    except ValueError:
        msg = "Input should be a valid integer, unable to parse string as an integer"
        raise _invalid(("query", name), "int_parsing", msg, query[name]) from None


def _ids_filter(
    wanted: frozenset[int], pick: Callable[[dict[str, Any]], list[Any]]
) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    return lambda loc: loc if wanted & {v for v in pick(loc) if v is not None} else None


def _parse_bool(query: dict[str, str], name: str) -> bool:
    raw = query[name].lower()
    if raw not in {"true", "false", "1", "0"}:
        raise _invalid(
            ("query", name), "bool_parsing", "Input should be a valid boolean", query[name]
        )
    return raw in {"true", "1"}


def _bool_filter(key: str, wanted: bool) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    return lambda loc: loc if bool(loc.get(key)) == wanted else None


# -- generated measurements --------------------------------------------------------------


def _generated(
    sensor_id: int,
    start: datetime,
    count: int,
    interval: timedelta,
    parameter: Mapping[str, Any],
    seed: int,
    zone: tzinfo,
) -> list[dict[str, Any]]:
    """Deterministic raw measurements: a daily cycle plus noise, never negative.

    Values are around 12 (plausible for µg/m³ and ppb); in ppm they are a thousandth of that.
    """
    rng = random.Random(f"{seed}:{sensor_id}")
    scale, digits = (0.001, 5) if str(parameter["units"]).lower() == "ppm" else (1.0, 2)
    label = _interval_text(interval)
    param = {
        "id": int(parameter["id"]),
        "name": str(parameter["name"]),
        "units": str(parameter["units"]),
        "displayName": parameter.get("displayName"),
    }
    results = []
    for i in range(count):
        begin, end = start + i * interval, start + (i + 1) * interval
        hour = end.astimezone(UTC).hour
        value = max(0.0, 12.0 + 6.0 * math.sin(2 * math.pi * (hour - 9) / 24) + rng.gauss(0, 2.5))
        span = {"datetimeFrom": _stamp(begin, zone), "datetimeTo": _stamp(end, zone)}
        results.append(
            {
                "value": round(value * scale, digits),
                "flagInfo": {"hasFlags": False},
                "parameter": dict(param),
                "period": {"label": "raw", "interval": label, **copy.deepcopy(span)},
                "coordinates": None,
                "summary": None,
                "coverage": {
                    "expectedCount": 1,
                    "expectedInterval": label,
                    "observedCount": 1,
                    "observedInterval": label,
                    "percentComplete": 100.0,
                    "percentCoverage": 100.0,
                    **span,
                },
            }
        )
    return results


def _stamp(moment: datetime, zone: tzinfo) -> dict[str, str]:
    """``{"utc": "...Z", "local": "...-05:00"}`` as the API writes them."""
    utc = moment.astimezone(UTC)
    return {
        "utc": utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "local": utc.astimezone(zone).isoformat(timespec="seconds"),
    }


def _interval_text(interval: timedelta) -> str:
    """``timedelta(minutes=30)`` -> ``"00:30:00"`` (hours may exceed 24, as in coverage)."""
    seconds = int(interval.total_seconds())
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# -- HTTP ----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: headers and body go out in two writes; with Nagle's algorithm the second waits for
    #: the client's delayed ACK (~40 ms a request on a kept-alive connection)
    disable_nagle_algorithm = True
    server: MockServer[MockOpenAQ]

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        mock = self.server.mock
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        reply = mock._handle(method, self.path, self.headers.get("X-API-Key"))
        if reply.delay and mock._stopping.wait(reply.delay):
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.cut:
                self.wfile.write(reply.body[: len(reply.body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(reply.body)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def version_string(self) -> str:
        return "MockOpenAQ"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.mock.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")


# -- command line --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the mock until Ctrl-C (or SIGTERM), for running a collector against it."""
    parser = argparse.ArgumentParser(
        prog="python -m openaq_mock.api",
        description="Local mock of the OpenAQ API v3, serving the recorded fixtures.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port (0 = any free port; default %(default)s)"
    )
    parser.add_argument(
        "--fixtures", type=Path, default=DEFAULT_FIXTURES_DIR, help="recorded responses directory"
    )
    parser.add_argument("--no-fixtures", action="store_true", help="start with no recorded data")
    parser.add_argument(
        "--api-key", default=None, help="require this X-API-Key (default: accept any)"
    )
    parser.add_argument(
        "--per-minute", type=int, default=60, help="requests per window (default %(default)s)"
    )
    parser.add_argument(
        "--per-hour", type=int, default=2000, help="requests per 60 windows (default %(default)s)"
    )
    parser.add_argument(
        "--window-seconds", type=float, default=60.0, help="rate-limit window length"
    )
    parser.add_argument(
        "--fail-with-429-every",
        type=int,
        default=None,
        metavar="N",
        help="answer every Nth request 429",
    )
    parser.add_argument(
        "--reset-after-429",
        type=int,
        default=1,
        metavar="S",
        help="x-ratelimit-reset of those 429s",
    )
    parser.add_argument(
        "--generate-hours",
        type=int,
        default=0,
        metavar="H",
        help="add H hourly measurements, up to the current hour, for every sensor of every location",
    )
    parser.add_argument(
        "--profile",
        choices=("fixtures", "world"),
        default="fixtures",
        help="fixtures: the recorded responses; world: a generated world of --locations "
        "locations (~3.7 sensors each) publishing live, plus its S3 archive (default %(default)s)",
    )
    parser.add_argument(
        "--locations", type=int, default=30_000, help="world: number of locations (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=7, help="world: seed (default %(default)s)")
    parser.add_argument(
        "--archive-days",
        type=int,
        default=40,
        metavar="D",
        help="world: the archive holds the D days up to 3 days ago (default %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    world = archive = None
    if args.profile == "world":
        from openaq_mock.archive import MockArchive
        from openaq_mock.world import World, WorldProfile

        world = World(WorldProfile(locations=args.locations, seed=args.seed))
        last = datetime.now(UTC).date() - timedelta(days=3)
        archive = MockArchive(world.location_objects(), last - timedelta(days=args.archive_days - 1),
                              last, seed=args.seed, host=args.host)  # fmt: skip
    mock = MockOpenAQ(
        None if args.no_fixtures or world is not None else args.fixtures,
        world=world,
        api_key=args.api_key,
        per_minute=args.per_minute,
        per_hour=args.per_hour,
        window_seconds=args.window_seconds,
        fail_with_429_every=args.fail_with_429_every,
        reset_after_429=args.reset_after_429,
        host=args.host,
        port=args.port,
        verbose=args.verbose,
    )
    if args.generate_hours > 0:
        _generate_recent(mock, args.generate_hours)
    # Ctrl-C and SIGTERM both end in the ``finally`` below, even when a shell started us
    # in the background with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    mock.start()
    print(f"Mock OpenAQ API v3 at {mock.base_url} (Ctrl-C to stop)", flush=True)
    if archive is not None:
        archive.start()
        print(f"Mock OpenAQ archive at {archive.base_url}", flush=True)
        print(f"  export OPENAQ_BASE_URL={mock.base_url} AQ_ARCHIVE_BASE_URL={archive.base_url}",
              flush=True)  # fmt: skip
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        mock.stop()
        if archive is not None:
            archive.stop()
        print("stopped", flush=True)
    return 0


def _generate_recent(mock: MockOpenAQ, hours: int) -> None:
    """Give every known sensor ``hours`` hourly values ending at the current hour."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=hours)
    with mock._lock:
        sensors = {
            sensor_id: mock._data.sensors.get(sensor_id, {}).get("parameter")
            for ids in mock._data.location_sensors.values()
            for sensor_id in ids
        }
    for sensor_id, parameter in sorted(sensors.items()):
        if isinstance(parameter, Mapping) and {"id", "name", "units"} <= set(parameter):
            mock.generate_measurements(sensor_id, start, hours, parameter=parameter)


if __name__ == "__main__":
    sys.exit(main())
