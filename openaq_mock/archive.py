"""A mock of OpenAQ's public S3 archive: enough S3 for ``aqi backfill --source archive``.

A threaded HTTP server on 127.0.0.1 (a free port) that answers

- ``GET /?list-type=2&prefix=..&continuation-token=..&max-keys=..&start-after=..`` with a
  ListObjectsV2 XML page (namespace ``http://s3.amazonaws.com/doc/2006-03-01/``; ``Contents``
  with Key, LastModified, ETag (the quoted MD5 of the bytes), Size, StorageClass; KeyCount,
  MaxKeys (default and cap 1,000, or ``page_size``), IsTruncated and an opaque
  NextContinuationToken);
- ``GET /<key>`` with the file's bytes (ETag, Content-Length, ``Content-Type:
  application/octet-stream``), or 404 with S3's ``NoSuchKey`` error XML.

The files are made deterministically, and only when first asked for, from a list of
API-shaped location objects (as ``/v3/locations`` returns them: id, name, timezone,
coordinates, sensors with parameter name and units; :func:`synthetic_locations` builds some)
and a range of days: one gzip CSV per location and local day, with the archive's header
``location_id,sensors_id,location,datetime,lat,lon,parameter,units,value``; for every sensor
one row per period of that local day (hourly, or the sensor's ``intervals`` entry), its
``datetime`` the period END in the location's local offset (docs/archive.md): an hourly
day runs 01:00 ... 24:00 (00:00 of the next day). Deterministic shares of the days have no
file (``missing_percent``), of the files carry extra trailing columns ``summary,coverage``
(``extra_columns_percent``), and of the files spell their datetimes with a space and a short
offset (``2026-03-28 05:00:00+00``) and list their rows by time rather than by sensor
(``space_datetime_percent``). The first version of a file lacks a few periods
(``gap_percent``), as the archive does before a refetch.

Injections: :meth:`MockArchive.patch` (a new version: the missing periods back and some
values corrected: a new ETag, usually a new size), :meth:`MockArchive.corrupt` (``truncated``: the gzip
cut in the middle; ``garbage``: not gzip; ``bad-header``: no datetime column),
:meth:`MockArchive.cut` (the connection closed mid-body), :meth:`MockArchive.fail` (an S3
error status on a key or a listing prefix), :meth:`MockArchive.hold_files` (file requests
past the first n wait until :meth:`MockArchive.release`), and a request log.

What a test compares against: :meth:`MockArchive.readings` (every row of the current
version of one or every file, with its period) and :meth:`MockArchive.keys`.

Public surface: :class:`MockArchive`, :class:`ArchiveReading`, :class:`LoggedRequest`,
:func:`synthetic_locations`.
"""

from __future__ import annotations

import base64
import bisect
import csv
import gzip
import hashlib
import io
import random
import re
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from ingestion.archive import archive_key, parse_key
from openaq_mock.serving import MockServer, ServedInThread

__all__ = ["ArchiveReading", "LoggedRequest", "MockArchive", "synthetic_locations"]

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_KEYS = 1000
HEADER = ("location_id", "sensors_id", "location", "datetime", "lat", "lon", "parameter",
          "units", "value")  # fmt: skip
EXTRA_COLUMNS = ("summary", "coverage")
CORRUPTIONS = ("truncated", "garbage", "bad-header")
HOUR = timedelta(hours=1)
#: a listing prefix naming one location, maybe a year, maybe a month
_LOCATION_PREFIX = re.compile(
    r"^records/csv\.gz/locationid=(\d+)/(?:year=(\d{4})/(?:month=(\d{2})/)?)?$"
)
#: a day's file appears this long after the day ends (LastModified)
WRITE_DELAY = timedelta(hours=72)

#: (name, units, OpenAQ parameter id, typical value, decimals) of the synthetic sensors
_PARAMETERS = (
    ("pm25", "µg/m³", 2, 18.0, 1),
    ("pm10", "µg/m³", 1, 35.0, 1),
    ("o3", "ppm", 10, 0.035, 3),
    ("no2", "ppb", 15, 21.0, 1),
    ("so2", "ppb", 101, 3.0, 1),
    ("co", "ppm", 8, 0.4, 2),
)
_TYPICAL = {(name, units): (typical, decimals) for name, units, _, typical, decimals in _PARAMETERS}
#: a typical value by units alone, for the pairs above do not name (no2 in ppm, ...): the
#: warehouse's gate refuses a ppm reading of 10, so the scale must follow the units
_TYPICAL_BY_UNITS = {"ppm": (0.03, 3), "ppb": (15.0, 1), "µg/m³": (25.0, 1)}
#: (IANA zone, country code, country id, latitude, longitude) of synthetic locations: whole,
#: half- and quarter-hour offsets, both hemispheres' daylight saving time, and UTC
_PLACES = (
    ("America/Denver", "US", 13, 35.1353, -106.584702),
    ("Europe/Paris", "FR", 22, 48.8566, 2.3522),
    ("Asia/Kolkata", "IN", 9, 28.6139, 77.209),
    ("Australia/Sydney", "AU", 4, -33.8688, 151.2093),
    ("America/St_Johns", "CA", 20, 47.5615, -52.7126),
    ("Asia/Kathmandu", "NP", 125, 27.7172, 85.324),
    ("UTC", "GH", 152, 5.6037, -0.187),
)


@dataclass(frozen=True)
class ArchiveReading:
    """One row of a mock file, as the backfill should turn it into an event."""

    key: str
    location_id: int
    sensor_id: int
    parameter: str
    units: str
    period_start: datetime
    period_end: datetime
    value: float | None


@dataclass(frozen=True)
class LoggedRequest:
    """One request the mock answered."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    #: body bytes written (for a cut answer: what was written before the cut)
    sent: int


@dataclass(frozen=True)
class _Sensor:
    id: int
    parameter: str
    units: str
    interval: timedelta


@dataclass(frozen=True)
class _Location:
    id: int
    name: str
    zone: ZoneInfo
    latitude: float | None
    longitude: float | None
    sensors: tuple[_Sensor, ...]


def synthetic_locations(
    count: int, *, first_id: int = 9_500_000, sensors: int = 4, seed: int = 0
) -> list[dict[str, Any]]:
    """``count`` location objects shaped like ``/v3/locations`` results, deterministic.

    Ids from ``first_id``; sensor ids ``location id * 10 + n``; ``sensors`` (1-6) of the six
    pollutants, in OpenAQ's units and parameter ids; time zones and countries cycle through
    varied offsets (whole, half and quarter hours, daylight saving time, UTC).
    """
    if not 1 <= sensors <= len(_PARAMETERS):
        raise ValueError(f"sensors must be 1..{len(_PARAMETERS)}")
    rng = random.Random(f"synthetic-locations:{seed}")
    objects = []
    for n in range(count):
        location_id = first_id + n
        zone, code, country_id, lat, lon = _PLACES[n % len(_PLACES)]
        lat, lon = round(lat + rng.uniform(-0.2, 0.2), 6), round(lon + rng.uniform(-0.2, 0.2), 6)
        objects.append({
            "id": location_id,
            "name": f"Archive test site {n}",
            "locality": None,
            "timezone": zone,
            "country": {"id": country_id, "code": code, "name": code},
            "owner": {"id": 1, "name": "Test owner"},
            "provider": {"id": 119, "name": "AirNow" if n % 2 == 0 else "Test provider"},
            "isMobile": False,
            "isMonitor": n % 3 != 2,
            "instruments": [{"id": 2, "name": "Government Monitor"}],
            "sensors": [
                {
                    "id": location_id * 10 + i,
                    "name": f"{name} {units}",
                    "parameter": {"id": pid, "name": name, "units": units, "displayName": None},
                }
                for i, (name, units, pid, _, _) in enumerate(_PARAMETERS[:sensors])
            ],
            "coordinates": {"latitude": lat, "longitude": lon},
            "licenses": [],
            "bounds": [lon, lat, lon, lat],
            "distance": None,
            "datetimeFirst": None,
            "datetimeLast": None,
        })  # fmt: skip
    return objects


class MockArchive(ServedInThread):
    """The mock archive bucket (see the module docstring); a context manager."""

    def __init__(
        self,
        locations: Iterable[Mapping[str, Any]],
        first_day: date,
        last_day: date,
        *,
        seed: int = 0,
        missing_percent: float = 3.0,
        extra_columns_percent: float = 10.0,
        space_datetime_percent: float = 10.0,
        gap_percent: float = 2.0,
        intervals: Mapping[int, timedelta] | None = None,
        page_size: int = MAX_KEYS,
        cache_files: int = 50_000,
        host: str = "127.0.0.1",
        port: int = 0,
        bucket: str = "openaq-data-archive",
    ) -> None:
        if first_day > last_day:
            raise ValueError("first_day must not be after last_day")
        if not 1 <= page_size <= MAX_KEYS:
            raise ValueError(f"page_size must be 1..{MAX_KEYS}")
        intervals = dict(intervals or {})
        self.seed = seed
        self.bucket = bucket
        self.page_size = page_size
        self._init_serving(host, port)
        self._missing = missing_percent
        self._extra = extra_columns_percent
        self._space = space_datetime_percent
        self._gaps = gap_percent
        self._cache_files = cache_files
        self._locations: dict[int, _Location] = {}
        for obj in locations:
            coords = obj.get("coordinates") or {}
            sensors = tuple(
                _Sensor(
                    int(s["id"]),
                    str(s["parameter"]["name"]),
                    str(s["parameter"]["units"]),
                    intervals.get(int(s["id"]), HOUR),
                )
                for s in obj.get("sensors") or []
            )
            self._locations[int(obj["id"])] = _Location(
                int(obj["id"]), str(obj.get("name") or ""), ZoneInfo(obj.get("timezone") or "UTC"),
                coords.get("latitude"), coords.get("longitude"), sensors,
            )  # fmt: skip
        self.first_day, self.last_day = first_day, last_day
        self._all_keys: list[str] | None = None  # every key, sorted: made when first needed
        self._lock = threading.RLock()
        self._versions: dict[str, int] = {}
        self._overrides: dict[str, bytes] = {}
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        #: (key, bytes) -> status line and headers of the answer to a GET (a new version or a
        #: corruption gets its own), at most cache_files of them
        self._heads: dict[tuple[str, bytes], bytes] = {}
        self._faults: list[list[Any]] = []  # [target, status, times left or None]
        self._cuts: dict[str, int | None] = {}
        self._log: list[LoggedRequest] = []
        self._logged = threading.Condition(self._lock)
        self._hold_after: int | None = None
        self._file_gets = 0
        self._held = 0
        self._released = threading.Event()

    # --- life cycle: start, stop, context manager, port (openaq_mock.serving) -------------
    def _make_server(self, address: tuple[str, int]) -> MockServer[MockArchive]:
        return MockServer(address, _Handler, self)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: what ``AQ_ARCHIVE_BASE_URL`` is set to."""
        return f"http://{self.host}:{self.port}"

    # --- content ---------------------------------------------------------------------------
    def keys(self, prefix: str = "") -> list[str]:
        """The keys present (days with a file), sorted as S3 lists them."""
        match = _LOCATION_PREFIX.match(prefix)
        if match is not None:  # one location (a year, a month): no need to list them all
            location_id, year, month = (int(g) if g else None for g in match.groups())
            days = []
            day = self.first_day
            while day <= self.last_day:
                if (year is None or day.year == year) and (month is None or day.month == month):
                    days.append(day)
                day += timedelta(days=1)
            return sorted(archive_key(location_id, d) for d in days
                          if self._where(archive_key(location_id, d)) is not None)  # fmt: skip
        keys = self._every_key()
        start = bisect.bisect_left(keys, prefix)
        end = bisect.bisect_left(keys, prefix + "\U0010ffff") if prefix else len(keys)
        return keys[start:end]

    def _every_key(self) -> list[str]:
        if self._all_keys is None:
            keys = []
            day = self.first_day
            while day <= self.last_day:
                keys += [archive_key(location_id, day) for location_id in self._locations
                         if not self._share("missing", self._missing, location_id, day)]  # fmt: skip
                day += timedelta(days=1)
            self._all_keys = sorted(keys)
        return self._all_keys

    def _where(self, key: str) -> tuple[int, date] | None:
        """(location id, day) of a key the mock has a file for, else None."""
        found = parse_key(key)
        if found is None:
            return None
        location_id, day = found
        if (location_id not in self._locations or not self.first_day <= day <= self.last_day
                or self._share("missing", self._missing, location_id, day)):  # fmt: skip
            return None
        return found

    def content(self, key: str) -> bytes:
        """The bytes served for ``key`` now (corrupted if :meth:`corrupt` said so)."""
        with self._lock:
            override = self._overrides.get(key)
            version = self._versions.get(key, 0)
            cached = self._cache.get((key, version))
        if override is not None:
            return override
        if cached is not None:
            return cached
        data = gzip.compress(self._csv(key, version).encode(), compresslevel=6, mtime=0)
        with self._lock:
            self._cache[(key, version)] = data
            while len(self._cache) > self._cache_files:
                self._cache.popitem(last=False)
        return data

    def etag(self, key: str) -> str:
        """The ETag S3 would give: the MD5 of the bytes, in double quotes."""
        return f'"{hashlib.md5(self.content(key)).hexdigest()}"'

    def size(self, key: str) -> int:
        return len(self.content(key))

    def warm(self) -> int:
        """Make every file now (a benchmark then measures the reader, not the mock); returns
        the bytes of all of them."""
        return sum(len(self.content(key)) for key in self._every_key())

    def readings(self, key: str | None = None) -> list[ArchiveReading]:
        """The rows of the current version of one file, or of every file, with their periods
        (what the backfill should send; a corrupted file's rows are those it would hold)."""
        keys = [key] if key is not None else self._every_key()
        with self._lock:
            versions = {k: self._versions.get(k, 0) for k in keys}
        return [r for k in keys for r in self._rows(k, versions[k])]

    # --- injections ------------------------------------------------------------------------
    def patch(self, key: str) -> str:
        """A new version of a file (the missing periods refetched, some values corrected);
        a corruption is dropped. Returns the new ETag."""
        self._known(key)
        with self._lock:
            self._versions[key] = self._versions.get(key, 0) + 1
            self._overrides.pop(key, None)
        return self.etag(key)

    def corrupt(self, key: str, kind: str) -> str:
        """Serve a broken file: ``truncated`` (the gzip cut in the middle), ``garbage`` (not
        gzip) or ``bad-header`` (valid gzip CSV without a datetime column). Returns the ETag."""
        self._known(key)
        if kind not in CORRUPTIONS:
            raise ValueError(f"kind must be one of {', '.join(CORRUPTIONS)}")
        with self._lock:
            self._overrides.pop(key, None)
        valid = self.content(key)
        if kind == "truncated":
            broken = valid[: len(valid) // 2]
        elif kind == "garbage":
            rng = random.Random(f"garbage:{key}")
            broken = b"<html>not an archive file</html>\n" + rng.randbytes(512)
        else:
            rows = list(csv.reader(io.StringIO(gzip.decompress(valid).decode())))
            column = rows[0].index("datetime")
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(
                [cell for i, cell in enumerate(row) if i != column] for row in rows
            )
            broken = gzip.compress(text.getvalue().encode(), mtime=0)
        with self._lock:
            self._overrides[key] = broken
        return self.etag(key)

    def cut(self, key: str, times: int | None = None) -> None:
        """Close the connection mid-body for ``key`` (``times`` answers, or always)."""
        self._known(key)
        with self._lock:
            self._cuts[key] = times

    def fail(self, target: str, status: int = 503, times: int | None = 1) -> None:
        """Answer ``status`` (S3's error XML) for a key, or for a listing of that exact
        prefix, ``times`` times (None: always)."""
        with self._lock:
            self._faults.append([target, status, times])

    def hold_files(self, after: int) -> None:
        """Let the first ``after`` file downloads through, hold the next ones until
        :meth:`release` (a test can then stop a run mid-way on a condition, not a timer)."""
        with self._lock:
            self._hold_after = after
            self._file_gets = 0
            self._released.clear()

    @property
    def held(self) -> int:
        """File downloads waiting for :meth:`release` right now."""
        with self._lock:
            return self._held

    def release(self) -> None:
        with self._lock:
            self._hold_after = None
            self._released.set()

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def wait_for_log(
        self, until: Callable[[list[LoggedRequest]], bool], timeout: float = 10.0
    ) -> list[LoggedRequest]:
        """The request log once ``until(log)`` holds (or as it is at ``timeout``): a request
        is logged after its response is sent, so a client can see the answer, a cut one above
        all, before the server thread has logged it."""
        with self._logged:
            self._logged.wait_for(lambda: until(self._log), timeout=timeout)
            return list(self._log)

    def file_requests(self) -> list[str]:
        """The keys of the file downloads answered 200 (in order)."""
        return [r.path[1:] for r in self.requests if r.path != "/" and r.status == 200]

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    # --- generation --------------------------------------------------------------------------
    def _known(self, key: str) -> None:
        if self._where(key) is None:
            raise KeyError(f"no such file in the mock archive: {key}")

    def _located(self, key: str) -> tuple[int, date]:
        where = self._where(key)
        if where is None:
            raise KeyError(f"no such file in the mock archive: {key}")
        return where

    def _share(self, what: str, percent: float, location_id: int, day: date) -> bool:
        digest = hashlib.blake2b(f"{self.seed}:{what}:{location_id}:{day}".encode(), digest_size=8)
        return int.from_bytes(digest.digest()) % 10_000 < percent * 100

    def _rows(self, key: str, version: int) -> list[ArchiveReading]:
        location_id, day = self._located(key)
        location = self._locations[location_id]
        zone = location.zone
        day_start = datetime.combine(day, time(0), zone).astimezone(UTC)
        day_end = datetime.combine(day + timedelta(days=1), time(0), zone).astimezone(UTC)
        rng = random.Random(f"{self.seed}:{location_id}:{day.isoformat()}")
        rows = []
        for sensor in location.sensors:
            typical, decimals = _TYPICAL.get(
                (sensor.parameter, sensor.units), _TYPICAL_BY_UNITS.get(sensor.units, (10.0, 1))
            )
            end, index = day_start + sensor.interval, 0
            while end <= day_end:
                dropped = rng.random() * 100 < self._gaps
                value = round(typical * (0.3 + 1.4 * rng.random()), decimals)
                if version and index % 7 == 0:
                    value = round(value + 0.1 * version, decimals)
                if version or not dropped:
                    rows.append(ArchiveReading(key, location_id, sensor.id, sensor.parameter,
                                               sensor.units, end - sensor.interval, end, value))  # fmt: skip
                end += sensor.interval
                index += 1
        return rows

    def _csv(self, key: str, version: int) -> str:
        location_id, day = self._located(key)
        location = self._locations[location_id]
        extra = self._share("extra", self._extra, location_id, day)
        space = self._share("space", self._space, location_id, day)
        rows = self._rows(key, version)
        if space:
            rows.sort(key=lambda r: (r.period_end, r.sensor_id))
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(HEADER + EXTRA_COLUMNS if extra else HEADER)
        lat = "" if location.latitude is None else location.latitude
        lon = "" if location.longitude is None else location.longitude
        stamps: dict[datetime, str] = {}
        for r in rows:
            stamp = stamps.get(r.period_end)
            if stamp is None:
                stamp = stamps[r.period_end] = _stamp(r.period_end.astimezone(location.zone), space)
            row = [location_id, r.sensor_id, location.name, stamp, lat, lon, r.parameter,
                   r.units, "" if r.value is None else r.value]  # fmt: skip
            if extra:
                row += ["", "100.0"]
            writer.writerow(row)
        return text.getvalue()

    def _last_modified(self, key: str) -> datetime:
        location_id, day = self._located(key)
        zone = self._locations[location_id].zone
        day_end = datetime.combine(day + timedelta(days=1), time(0), zone).astimezone(UTC)
        with self._lock:
            version = self._versions.get(key, 0)
        return day_end + WRITE_DELAY + timedelta(days=version)

    # --- HTTP --------------------------------------------------------------------------------
    def _answer(self, handler: _Handler, method: str) -> None:
        parts = urlsplit(handler.path)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path == "/":
            status, sent = self._list(handler, method, query)
        else:
            status, sent = self._file(handler, method, path[1:])
        with self._lock:
            self._log.append(LoggedRequest(method, path, query, status, sent))
            self._logged.notify_all()

    def _fault(self, target: str) -> int | None:
        with self._lock:
            for fault in self._faults:
                if fault[0] == target and (fault[2] is None or fault[2] > 0):
                    if fault[2] is not None:
                        fault[2] -= 1
                    return int(fault[1])
        return None

    def _list(self, handler: _Handler, method: str, query: dict[str, str]) -> tuple[int, int]:
        prefix = query.get("prefix", "")
        status = self._fault(prefix)
        if status is not None:
            return _error(handler, method, status, _code(status, "NoSuchBucket"), prefix)
        if query.get("list-type") != "2":
            return _error(handler, method, 400, "InvalidArgument",
                          "this mock answers ListObjectsV2 only (list-type=2)")  # fmt: skip
        try:
            max_keys = int(query.get("max-keys", MAX_KEYS))
            if max_keys < 0:
                raise ValueError
        except ValueError:
            return _error(handler, method, 400, "InvalidArgument", "Provided max-keys not an integer or within integer range")  # fmt: skip
        page = min(max_keys, self.page_size)
        keys = self.keys(prefix)
        start = 0
        token = query.get("continuation-token")
        start_after = query.get("start-after")
        if token is not None:
            try:
                last = base64.urlsafe_b64decode(token.encode()).decode()
                if not last.startswith("1:"):
                    raise ValueError
            except ValueError:
                return _error(handler, method, 400, "InvalidArgument",
                              "The continuation token provided is incorrect")  # fmt: skip
            start = max(start, bisect.bisect_right(keys, last[2:]))
        elif start_after:
            start = max(start, bisect.bisect_right(keys, start_after))
        chosen: list[str] = []
        index = start
        while index < len(keys):
            if len(chosen) == page:
                break
            chosen.append(keys[index])
            index += 1
        truncated = index < len(keys) and page > 0
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n',
            f'<ListBucketResult xmlns="{S3_NAMESPACE}">',
            f"<Name>{escape(self.bucket)}</Name><Prefix>{escape(prefix)}</Prefix>",
        ]
        if token is not None:
            parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if start_after:
            parts.append(f"<StartAfter>{escape(start_after)}</StartAfter>")
        parts.append(f"<KeyCount>{len(chosen)}</KeyCount><MaxKeys>{page}</MaxKeys>")
        parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if truncated:
            next_token = base64.urlsafe_b64encode(f"1:{chosen[-1]}".encode()).decode()
            parts.append(f"<NextContinuationToken>{next_token}</NextContinuationToken>")
        for key in chosen:
            modified = self._last_modified(key).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            etag = self.etag(key).replace('"', "&quot;")  # as S3 writes it
            parts.append(
                f"<Contents><Key>{escape(key)}</Key><LastModified>{modified}</LastModified>"
                f"<ETag>{etag}</ETag>"
                f"<Size>{self.size(key)}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            )
        parts.append("</ListBucketResult>")
        body = "".join(parts).encode()
        return _send(handler, method, 200, body, {"Content-Type": "application/xml"})

    def _file(self, handler: _Handler, method: str, key: str) -> tuple[int, int]:
        status = self._fault(key)
        if status is not None:
            return _error(handler, method, status, _code(status, "NoSuchKey"), key)
        if self._where(key) is None:
            return _error(handler, method, 404, "NoSuchKey", key)
        if method == "GET":
            self._wait_if_held()
        data = self.content(key)
        with self._lock:
            cuts = self._cuts.get(key, 0)
            if cuts is None or cuts > 0:
                if cuts is not None:
                    self._cuts[key] = cuts - 1
                cut = method == "GET"
            else:
                cut = False
            head = self._heads.get((key, data))
        if head is None:
            head = self._head(key, data)
            with self._lock:
                if len(self._heads) >= self._cache_files:
                    self._heads.clear()
                self._heads[(key, data)] = head
        if not cut:
            # one write of the answer made for these bytes (a file is asked for again and
            # again by the benchmark: the headers are not made for each request)
            handler.log_request(200)
            handler.wfile.write(head + data if method == "GET" else head)
            return 200, len(data) if method == "GET" else 0
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": self.etag(key),
            "Last-Modified": format_datetime(self._last_modified(key), usegmt=True),
            "Accept-Ranges": "bytes",
        }
        handler.send_response(200)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        half = data[: len(data) // 2]
        handler.wfile.write(half)
        handler.wfile.flush()
        handler.close_connection = True
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return 200, len(half)

    def _head(self, key: str, data: bytes) -> bytes:
        """Status line and headers of a 200 answer with these bytes."""
        lines = [
            "HTTP/1.1 200 OK",
            "Server: MockArchive",
            "Content-Type: application/octet-stream",
            f'ETag: "{hashlib.md5(data).hexdigest()}"',
            f"Last-Modified: {format_datetime(self._last_modified(key), usegmt=True)}",
            "Accept-Ranges: bytes",
            f"Content-Length: {len(data)}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _wait_if_held(self) -> None:
        with self._lock:
            self._file_gets += 1
            held = self._hold_after is not None and self._file_gets > self._hold_after
            self._held += held
        try:
            while held and not self._released.wait(0.05):
                if self._stopping.is_set():
                    return
        finally:
            with self._lock:
                self._held -= held


def _stamp(local: datetime, space: bool) -> str:
    """A period end in local time: ISO (``2023-02-22T01:00:00-07:00``) or the space spelling
    with a short offset (``2026-03-28 05:00:00+00``, ``... 05:00:00+05:30``)."""
    if not space:
        return local.isoformat(timespec="seconds")
    offset = local.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    hours, minutes = divmod(minutes, 60)
    short = f"{sign}{hours:02d}" + (f":{minutes:02d}" if minutes else "")
    return local.strftime("%Y-%m-%d %H:%M:%S") + short


def _code(status: int, not_found: str) -> str:
    return {403: "AccessDenied", 404: not_found, 500: "InternalError", 503: "SlowDown"}.get(
        status, "InternalError"
    )


def _error(handler: _Handler, method: str, status: int, code: str, detail: str) -> tuple[int, int]:
    messages = {
        "NoSuchKey": "The specified key does not exist.",
        "NoSuchBucket": "The specified bucket does not exist",
        "AccessDenied": "Access Denied",
        "InternalError": "We encountered an internal error. Please try again.",
        "SlowDown": "Please reduce your request rate.",
    }
    message = messages.get(code, detail)
    resource = "Key" if code == "NoSuchKey" else "Resource"
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
        f"<{resource}>{escape(detail)}</{resource}><RequestId>MOCK</RequestId></Error>"
    ).encode()
    return _send(handler, method, status, body, {"Content-Type": "application/xml"})


def _send(
    handler: _Handler, method: str, status: int, body: bytes, headers: Mapping[str, str]
) -> tuple[int, int]:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if method == "GET":
        handler.wfile.write(body)
        return status, len(body)
    return status, 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    server: MockServer[MockArchive]

    def setup(self) -> None:
        super().setup()
        # headers and body are two writes: without this, Nagle's algorithm holds the body
        # until the client's delayed ACK (40 ms a file, which capped a run at ~100 files/s)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self.server.mock._answer(self, "GET")

    def do_HEAD(self) -> None:
        self.server.mock._answer(self, "HEAD")

    def log_message(self, format: str, *args: Any) -> None:
        pass
