"""OpenAQ API v3 client on ``requests``: paging, rate limits, retries, clear errors.

What the API does (see ``ingestion/fixtures/README.md``): ``limit`` <= 1000, ``page`` from 1,
no cursor, keep paging until a page comes back short (``meta.found`` may be the string
">1000"); 60 requests/minute and 2,000/hour on the free tier, with ``x-ratelimit-remaining``
and ``x-ratelimit-reset`` (seconds) on every answer and no ``Retry-After`` on a 429; a
firewall may answer 403 "violation of rate limit policy"; a bad key gives 401; v1/v2 paths 410.

How this client behaves:

- every request first takes a slot from the shared :class:`~ingestion.rate_limit.RateLimiter`;
- 429 -> pause everyone until ``x-ratelimit-reset`` has passed, then retry;
  ``x-ratelimit-remaining: 0`` -> the same pause before the next request;
- 403 rate-limit policy -> a long pause (``policy_pause_s``, default 10 min), then retry;
- 5xx, timeouts, connection errors (a reset, a body cut mid-way), malformed JSON ->
  exponential backoff with jitter, ``max_retries`` times;
- ``x-ratelimit-reset`` that is no finite number is ignored, and no pause exceeds an hour;
- 401 -> :class:`OpenAQAuthError` at once (names ``OPENAQ_API_KEY``), 410 -> :class:`OpenAQGoneError`;
- the key travels only in the ``X-API-Key`` header and never appears in logs or errors.

Public surface: :class:`OpenAQClient`, :func:`client_from_settings`, :class:`Page`, the errors.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from aqi.core.config import Settings
from aqi.core.errors import AqiError
from ingestion.events import format_utc
from ingestion.rate_limit import MAX_PAUSE_S, RateLimiter

__all__ = [
    "MAX_LIMIT",
    "OpenAQAuthError",
    "OpenAQClient",
    "OpenAQError",
    "OpenAQGoneError",
    "Page",
    "client_from_settings",
]

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
LOCATION_CACHE_TTL_S = 24 * 3600


class OpenAQError(AqiError):
    """The API could not give an answer (after retries), or gave an unusable one."""


class OpenAQAuthError(OpenAQError):
    """401: the key is missing or wrong. Never retried."""


class OpenAQGoneError(OpenAQError):
    """410: the path belongs to a retired API version."""


@dataclass(frozen=True)
class Page:
    """One page of results, with what is needed to decide whether to ask for the next."""

    number: int
    limit: int
    results: list[dict[str, Any]]
    found: int | str | None

    @property
    def is_last(self) -> bool:
        """A short page ends the listing (``found`` is not reliable: it may be ">1000")."""
        return len(self.results) < self.limit


class OpenAQClient:
    """A thin, careful client for the endpoints the platform uses."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        limiter: RateLimiter,
        *,
        cache_dir: Path | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 6,
        max_rate_limit_waits: int = 50,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        policy_pause_s: float = 600.0,
        on_wait: Callable[[float, str], None] | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_rate_limit_waits = max_rate_limit_waits
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.policy_pause_s = policy_pause_s
        self.on_wait = on_wait
        self._sleep = sleep
        self._session = session or requests.Session()
        self._session.headers["Accept"] = "application/json"
        self._session.headers["User-Agent"] = "openaq-platform (aqi)"
        if api_key:
            self._session.headers["X-API-Key"] = api_key
        self._locations: dict[int, dict[str, Any]] = {}
        #: requests sent so far, retries included (the collector's budget counts them)
        self.requests_made = 0

    # --- endpoints --------------------------------------------------------------------
    def locations(
        self,
        *,
        bbox: tuple[float, float, float, float] | None = None,
        coordinates: tuple[float, float] | None = None,
        radius_m: int | None = None,
        iso: str | None = None,
        countries_id: int | None = None,
        limit: int = MAX_LIMIT,
    ) -> Iterator[dict[str, Any]]:
        """Every location matching the filters (all pages); each one is cached."""
        params: dict[str, Any] = {}
        if bbox is not None:
            params["bbox"] = ",".join(_num(v) for v in bbox)
        if coordinates is not None:
            params["coordinates"] = f"{_num(coordinates[0])},{_num(coordinates[1])}"
            params["radius"] = radius_m if radius_m is not None else 25_000
        if iso is not None:
            params["iso"] = iso
        if countries_id is not None:
            params["countries_id"] = countries_id
        for page in self.pages("/locations", params, limit=limit):
            for location in page.results:
                self._remember_location(location)
                yield location

    def location(self, location_id: int) -> dict[str, Any]:
        """One location, from memory, the disk cache (24 h) or the API."""
        if location_id in self._locations:
            return self._locations[location_id]
        cached = self._read_cache(location_id)
        if cached is not None:
            self._locations[location_id] = cached
            return cached
        results = self.get(f"/locations/{location_id}")["results"]
        if not results:
            raise OpenAQError(f"OpenAQ has no location {location_id}")
        self._remember_location(results[0])
        return results[0]

    def sensors(self, location_id: int) -> list[dict[str, Any]]:
        """The sensors of a location (with their latest reading and coverage)."""
        return [s for page in self.pages(f"/locations/{location_id}/sensors") for s in page.results]

    def measurements(
        self,
        sensor_id: int,
        datetime_from: datetime,
        datetime_to: datetime,
        *,
        limit: int = MAX_LIMIT,
        first_page: int = 1,
    ) -> Iterator[Page]:
        """Pages of a sensor's measurements with ``datetime_from < period end <= datetime_to``."""
        params = {
            "datetime_from": format_utc(datetime_from),
            "datetime_to": format_utc(datetime_to),
        }
        yield from self.pages(
            f"/sensors/{sensor_id}/measurements", params, limit=limit, first_page=first_page
        )

    def latest_for_location(self, location_id: int) -> list[dict[str, Any]]:
        """The newest reading of each sensor of a location."""
        return [r for page in self.pages(f"/locations/{location_id}/latest") for r in page.results]

    def latest_for_parameter(self, parameter_id: int, **filters: Any) -> Iterator[dict[str, Any]]:
        """The newest reading of every sensor measuring a parameter (all pages)."""
        for page in self.pages(f"/parameters/{parameter_id}/latest", filters):
            yield from page.results

    # --- paging and requests ------------------------------------------------------------
    def pages(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        limit: int = MAX_LIMIT,
        first_page: int = 1,
    ) -> Iterator[Page]:
        """Pages ``first_page``, ``first_page + 1``, ... until one comes back short."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be in 1..{MAX_LIMIT}, got {limit}")
        return self._pages(path, params, limit, first_page)

    def _pages(
        self, path: str, params: dict[str, Any] | None, limit: int, first_page: int
    ) -> Iterator[Page]:
        number = first_page
        while True:
            body = self.get(path, {**(params or {}), "limit": limit, "page": number})
            meta = body.get("meta") or {}
            page = Page(number, limit, list(body.get("results") or []), meta.get("found"))
            yield page
            if page.is_last:
                return
            number += 1

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET ``base_url + path`` with every rule in the module docstring applied."""
        url = self.base_url + path
        failures = 0
        rate_waits = 0
        while True:
            self.limiter.acquire()
            self.requests_made += 1
            try:
                response = self._session.get(url, params=params, timeout=self.timeout_s)
            except _TRANSIENT as exc:
                failures = self._backoff(failures, path, type(exc).__name__)
                continue
            self._note_rate_headers(response)
            status = response.status_code
            if status == 200:
                try:
                    body = response.json()
                except ValueError:
                    failures = self._backoff(failures, path, "malformed JSON")
                    continue
                if not isinstance(body, dict) or not isinstance(body.get("results", []), list):
                    failures = self._backoff(failures, path, "unexpected JSON shape")
                    continue
                return body
            if status == 401:
                raise OpenAQAuthError(
                    "the OpenAQ API rejected the key (401): set OPENAQ_API_KEY to a valid key "
                    "(https://explore.openaq.org/register)"
                )
            if status == 410:
                raise OpenAQGoneError(
                    f"{path} is gone from the OpenAQ API (410): {_detail(response)}"
                )
            if status == 429 or (status == 403 and "rate limit" in response.text.lower()):
                if status == 429:
                    reset = _reset_seconds(response)
                    wait = 60.0 if reset is None else reset
                    reason = "429 Too Many Requests"
                else:
                    wait, reason = self.policy_pause_s, "403 rate limit policy"
                # a little jitter so that parallel clients do not all come back at once; the
                # pause is recorded even when we give up, so no process comes back too early
                self.limiter.pause_for(wait + random.uniform(0.05, 0.5))
                rate_waits += 1
                if rate_waits > self.max_rate_limit_waits:
                    raise OpenAQError(f"still rate-limited after {rate_waits - 1} waits on {path}")
                log.warning("%s on %s: pausing %.0f s", reason, path, wait)
                continue
            if status >= 500:
                failures = self._backoff(failures, path, f"HTTP {status}")
                continue
            raise OpenAQError(f"OpenAQ answered {status} for {path}: {_detail(response)}")

    # --- internals -------------------------------------------------------------------
    def _backoff(self, failures: int, path: str, what: str) -> int:
        failures += 1
        if failures > self.max_retries:
            raise OpenAQError(f"{what} from OpenAQ on {path}, {self.max_retries} retries failed")
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (failures - 1))
        delay = random.uniform(delay / 2, delay)  # "equal jitter"
        log.warning(
            "%s on %s; retry %d/%d in %.1f s", what, path, failures, self.max_retries, delay
        )
        if self.on_wait is not None:
            self.on_wait(delay, f"retrying after {what}")
        self._sleep(delay)
        return failures

    def _note_rate_headers(self, response: requests.Response) -> None:
        remaining = response.headers.get("x-ratelimit-remaining")
        if remaining is not None and remaining.strip() == "0" and response.status_code != 429:
            reset = _reset_seconds(response)
            if reset:
                self.limiter.pause_for(reset)

    def _remember_location(self, location: dict[str, Any]) -> None:
        location_id = int(location["id"])
        self._locations[location_id] = location
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            path = self.cache_dir / f"location-{location_id}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(location))
            tmp.replace(path)

    def _read_cache(self, location_id: int) -> dict[str, Any] | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"location-{location_id}.json"
        try:
            if time.time() - path.stat().st_mtime > LOCATION_CACHE_TTL_S:
                return None
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None


def client_from_settings(
    settings: Settings,
    *,
    on_wait: Callable[[float, str], None] | None = None,
    role: str | None = None,
    share: float = 1.0,
    **kwargs: Any,
) -> OpenAQClient:
    """The client configured from the environment, sharing the key's budget across processes
    (``role``/``share``: this client takes at most that share of it, see RateLimiter)."""
    limiter = RateLimiter(
        settings.state_dir,
        f"{settings.openaq_base_url}|{settings.openaq_api_key or ''}",
        per_minute=settings.openaq_requests_per_minute,
        per_hour=settings.openaq_requests_per_hour,
        on_wait=on_wait,
        role=role,
        share=share,
    )
    return OpenAQClient(
        settings.openaq_base_url,
        settings.openaq_api_key,
        limiter,
        cache_dir=settings.state_dir / "cache",
        on_wait=on_wait,
        **kwargs,
    )


#: failures worth another try: no answer, a timeout, a connection reset or cut mid-body
_TRANSIENT = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


def _reset_seconds(response: requests.Response) -> float | None:
    """``x-ratelimit-reset`` in seconds, at most :data:`MAX_PAUSE_S`; None if absent or not
    a finite number (a header that says wait forever must not stop every process on the key)."""
    raw = response.headers.get("x-ratelimit-reset")
    try:
        seconds = float(raw) if raw is not None else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        if raw is not None:
            log.warning("ignoring an x-ratelimit-reset header that is no number: %.40r", raw)
        return None
    if seconds > MAX_PAUSE_S:
        log.warning("x-ratelimit-reset of %.0f s capped at %.0f s", seconds, MAX_PAUSE_S)
    return min(max(0.0, seconds), MAX_PAUSE_S)


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        text = body.get("detail") or body.get("message") or json.dumps(body)
    else:
        text = body if isinstance(body, str) else json.dumps(body)
    return " ".join(str(text).split())[:200]


def _num(value: float) -> str:
    """A coordinate without float noise or lost precision (6 decimals is ~0.1 m)."""
    return f"{value:.6f}".rstrip("0").rstrip(".")
