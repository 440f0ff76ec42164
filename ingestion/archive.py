"""``aqi backfill --source archive``: history from OpenAQ's public S3 archive, resumably.

Why: the archive holds OpenAQ's measurements as one gzip CSV per location and local day,
readable anonymously over plain HTTPS, with none of the API's rate limits (a year of a
location is 365 small files fetched as fast as the network allows, against ~9 pages per
sensor-year under the key's 60 requests a minute).

What the archive is (``../shared/fixtures/openaq-archive/README.md``): keys
``records/csv.gz/locationid={id}/year={yyyy}/month={mm}/location-{id}-{yyyymmdd}.csv.gz``,
listed with S3 ListObjectsV2 (XML, ``IsTruncated`` + ``NextContinuationToken``); one file per
location and local day, written 72 h after the day ends and maybe patched later; columns
``location_id,sensors_id,location,datetime,lat,lon,parameter,units,value`` (more trailing
columns seen in the wild), ``datetime`` with the location's UTC offset, spelled
``2023-02-22T01:00:00-07:00`` or ``2026-03-28 05:00:00+00``.

**The file's ``datetime`` is the period END** (docs/archive.md has the evidence; a unit test
reads it from the recorded fixtures): OpenAQ's single timestamps of a reading (a sensor's
``datetimeFirst``/``datetimeLast``, ``latest.datetime``) equal the ``period.datetimeTo`` of the
matching API measurement (sensor 3's first measurement is 00:00-00:30 local and its
``datetimeFirst`` is 00:30), and the archive's day file for location 2178 starts at 01:00 local,
the end of the day's first hour: a day file holds the periods *of* that local day, stamped
01:00 ... 24:00 (00:00 of the next day) for hourly data, as OpenAQ's ``/days`` averages the
hours "from 01:00 to 0:00 in local time". So ``period_end`` = the stamp and ``period_start`` =
end - the sensor's period length, learned from the file: the smallest positive gap between
two readings of that sensor (hourly when the file holds one reading of it).

How a run goes:

1. the scope (location ids, a country or a box, the last two through ``client.locations``)
   gives the locations; their API records (cached a day on disk) give what the file lacks:
   time zone, country, provider, mobile/monitor flags, parameter ids and units;
2. one listing per location and month of the range (continuation tokens followed), keeping
   the keys whose day is in the range (a missing day is normal);
3. a file read by an earlier run of the same job (same scope, days) with the same ETag and
   size is skipped; one whose ETag or size changed (patched since) is read again;
4. ``workers`` reader processes (the work is CPU-bound and the sending thread must not wait
   for a GIL) each download one file at a time, streamed: HTTP body -> gzip -> CSV
   rows by header name -> per sensor, the (end, value) columns of that file (the period
   length needs the whole file; the body and its text are never held whole), then build
   its events (:func:`ingestion.events.make_events`) and hand them, encoded, to this
   process in chunks of 5,000 through a bounded queue;
5. this thread sends the chunks pipelined; a file is marked read (ETag, size) in the
   ``then`` of a barrier after its last chunk, i.e. once Kafka acknowledged all of it (a
   thread with its own SQLite connection writes the marks, in order). At most
   ``max_unacknowledged`` events wait for Kafka at any time, so a crash re-sends at most
   the files they belong to; downstream keeps the latest version of a reading, so
   re-sending is safe;
6. a file that cannot be read (not gzip, cut short, no ``datetime`` column, 403/404, a
   connection cut mid-body after the retries) is reported with its reason and NOT marked (a
   rerun tries it again); unreadable rows (a bad number or date) are skipped and counted,
   with a few samples. The run goes on; :attr:`ArchiveResult.nothing_read` (failures and not
   one file of the job on Kafka) makes ``aqi backfill`` exit non-zero.

Public surface: :func:`run_archive_backfill`, :class:`ArchiveScope`, :class:`ArchiveStore`,
:class:`ArchiveObject`, :class:`ArchiveResult`, :func:`archive_job_id`, :func:`archive_key`,
:func:`month_prefix`, :func:`parse_key`, :func:`parse_archive_datetime`,
:func:`read_archive_csv`, :func:`gunzip_text`, :func:`sensor_interval`, :func:`file_events`,
:func:`file_records`, :class:`ParsedFile`, :class:`ArchiveError`, :class:`ArchiveFileError`.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import logging
import multiprocessing
import multiprocessing.forkserver
import queue
import random
import re
import signal
import threading
import time
import xml.etree.ElementTree as ET
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from itertools import groupby, islice, pairwise
from math import isfinite, isnan
from pathlib import Path
from typing import Any

import requests
import urllib3

from aqi.core.errors import AqiError
from ingestion.events import (
    PARAMETER_IDS,
    Location,
    Sensor,
    event_key,
    format_utc,
    location_from_api,
    make_event,
    make_events,
)
from ingestion.openaq_client import OpenAQClient
from ingestion.producer import EventProducer, encode_event
from ingestion.progress import Progress
from ingestion.state import IngestionState

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_WORKERS",
    "ArchiveError",
    "ArchiveFileError",
    "ArchiveObject",
    "ArchiveResult",
    "ArchiveScope",
    "ArchiveStore",
    "ParsedFile",
    "archive_job_id",
    "archive_key",
    "file_events",
    "file_records",
    "gunzip_text",
    "month_prefix",
    "parse_archive_datetime",
    "parse_key",
    "read_archive_csv",
    "run_archive_backfill",
    "sensor_interval",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://openaq-data-archive.s3.amazonaws.com"
DEFAULT_WORKERS = 4
KEY_ROOT = "records/csv.gz"
S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
#: the period of a sensor with a single reading in a file
DEFAULT_INTERVAL = timedelta(hours=1)
#: a day's file is written this long after the day ends
WRITE_DELAY = timedelta(hours=72)
#: the columns a file must have (by name; their order and any other column do not matter)
REQUIRED_COLUMNS = ("sensors_id", "datetime", "parameter", "units", "value")
#: other spellings of required columns (OpenAQ's column table says sensor_id and unit)
_ALIASES = {"sensor_id": "sensors_id", "unit": "units"}
_UNITS = {"ug/m3": "µg/m³", "μg/m³": "µg/m³", "ug/m³": "µg/m³"}  # μ (mu) -> µ (micro sign)
_KEY = re.compile(
    r"^records/csv\.gz/locationid=(\d+)/year=(\d{4})/month=(\d{2})/"
    r"(?:location|loc)-(\d+)-(\d{4})(\d{2})(\d{2})\.csv\.gz$"
)
_CHUNK_BYTES = 1 << 16
_SEND_BATCH = 5000
_SAMPLES = 8
_UNKNOWN_SENSOR = "unknown sensor (not in the location record, no parameter id for its units)"


class ArchiveError(AqiError):
    """The archive backfill cannot go on (or read nothing at all); one line says why."""


class ArchiveFileError(Exception):
    """One file (or one listing) could not be read; ``reason`` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- keys ------------------------------------------------------------------------------------


def month_prefix(location_id: int, year: int, month: int) -> str:
    """The listing prefix of one location's month: ``records/csv.gz/locationid=../year=../month=../``."""
    return f"{KEY_ROOT}/locationid={location_id}/year={year:04d}/month={month:02d}/"


def archive_key(location_id: int, day: date) -> str:
    """The key of one location's local day."""
    return (
        f"{month_prefix(location_id, day.year, day.month)}"
        f"location-{location_id}-{day:%Y%m%d}.csv.gz"
    )


def parse_key(key: str) -> tuple[int, date] | None:
    """(location id, local day) of a day file's key; None for any other key."""
    match = _KEY.match(key)
    if match is None:
        return None
    folder_id, year, month, file_id, y, m, d = match.groups()
    if folder_id != file_id or (year, month) != (y, m):
        return None
    try:
        return int(file_id), date(int(y), int(m), int(d))
    except ValueError:
        return None


def _months(since: date, until: date) -> Iterator[tuple[int, int]]:
    year, month = since.year, since.month
    while (year, month) <= (until.year, until.month):
        yield year, month
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


# --- scope and job ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveScope:
    """Which locations: explicit ids, or every location of a country, or of a box."""

    location_ids: tuple[int, ...] = ()
    country: str | None = None
    bbox: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        given = sum((bool(self.location_ids), self.country is not None, self.bbox is not None))
        if given != 1:
            raise ValueError("give exactly one of location ids, a country or a bbox")

    def describe(self) -> str:
        """A canonical text (part of the job id): ``locations=17,2178``, ``country=US``..."""
        if self.location_ids:
            return "locations=" + ",".join(str(i) for i in sorted(set(self.location_ids)))
        if self.country is not None:
            return f"country={self.country.upper()}"
        assert self.bbox is not None
        return "bbox=" + ",".join(f"{v:.6f}".rstrip("0").rstrip(".") for v in self.bbox)

    def resolve(self, client: OpenAQClient) -> list[Location]:
        """The locations, with the metadata of their API records (one cached request each)."""
        if self.location_ids:
            objects = [client.location(i) for i in dict.fromkeys(self.location_ids)]
        elif self.country is not None:
            objects = list(client.locations(iso=self.country.upper()))
        else:
            objects = list(client.locations(bbox=self.bbox))
        if not objects:
            raise ArchiveError(f"OpenAQ lists no location for {self.describe()}")
        return [location_from_api(o) for o in objects]


def archive_job_id(scope: ArchiveScope, since: date, until: date) -> str:
    """Same source, scope and days -> same job, so a rerun resumes (as ``backfill_job_id``)."""
    spec = f"archive|{scope.describe()}|{since.isoformat()}|{until.isoformat()}"
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


# --- reading one file --------------------------------------------------------------------------


def parse_archive_datetime(text: str) -> datetime:
    """``2023-02-22T01:00:00-07:00`` or ``2026-03-28 05:00:00+00`` -> an aware UTC datetime.

    Raises ``ValueError`` for anything else, including a time without a UTC offset (it names
    no instant).
    """
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        raise ValueError(f"no UTC offset in {text!r}")
    return value.astimezone(UTC)


@dataclass
class SensorRows:
    """One sensor's readings in one file: parallel columns (a NaN value is a null reading)."""

    sensor_id: int
    parameter: str
    units: str
    ends: list[datetime] = field(default_factory=list)
    values: array = field(default_factory=lambda: array("d"))
    #: per-reading (latitude, longitude), only for a mobile location
    coordinates: list[tuple[float | None, float | None]] | None = None
    #: (parameter, units) as the file first spells them
    spelled: tuple[str, str] = ("", "")


@dataclass
class ParsedFile:
    """What :func:`read_archive_csv` got from one file."""

    sensors: dict[str, SensorRows] = field(default_factory=dict)
    #: data rows in the file (read and skipped)
    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    #: compressed bytes downloaded, and the ETag of what was read (from the GET's headers)
    bytes: int = 0
    etag: str | None = None

    @property
    def readings(self) -> int:
        return sum(len(s.ends) for s in self.sensors.values())

    def skip(self, reason: str, sample: str) -> None:
        self.skipped[reason] += 1
        if len(self.samples) < _SAMPLES:
            self.samples.append(sample)


def read_archive_csv(
    lines: Iterable[str],
    *,
    source: str = "",
    location_id: int | None = None,
    coordinates: bool = False,
) -> ParsedFile:
    """Read a day file's CSV text: columns by header name, bad rows skipped and counted.

    ``lines`` is the text (a file object, or any iterable of lines). Extra columns are
    ignored; a header without a required column raises :class:`ArchiveFileError`. A row is
    skipped (reason counted, a sample kept) for a bad sensor id, date or number, a missing
    field, a row of another location than ``location_id``, or a sensor whose parameter or
    units change within the file. An empty value is a null reading (as the API's null).
    ``coordinates`` keeps each row's lat/lon (for a mobile location).

    Rows are taken in blocks: a block of clean rows is converted column by column (each
    distinct timestamp parsed once); a block with any problem is read again row by row,
    which finds and counts the bad rows.
    """
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise ArchiveFileError("empty file (no header)")
    names = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ArchiveFileError(
            f"no {', '.join(missing)} column in the header ({','.join(header)[:120]})"
        )
    reading = _Reading(
        parsed=ParsedFile(),
        source=source,
        columns=tuple(names.index(c) for c in REQUIRED_COLUMNS),
        location_column=names.index("location_id") if "location_id" in names else None,
        own_location=str(location_id) if location_id is not None else None,
        lat_column=names.index("lat") if coordinates and "lat" in names else None,
        lon_column=names.index("lon") if coordinates and "lon" in names else None,
        coordinates=coordinates,
    )
    line = 1
    while block := list(islice(reader, _BLOCK_ROWS)):
        if coordinates or not reading.block(block):
            reading.rows(block, line)
        line += len(block)
    return reading.parsed


_BLOCK_ROWS = 1024


class _Stamps(dict):
    """Timestamp text -> aware UTC datetime, each distinct text parsed once (ValueError if
    it is no timestamp with an offset)."""

    def __missing__(self, text: str) -> datetime:
        value = self[text] = parse_archive_datetime(text)
        return value


@dataclass
class _Reading:
    """The state of one :func:`read_archive_csv`."""

    parsed: ParsedFile
    source: str
    #: indexes of REQUIRED_COLUMNS in the header
    columns: tuple[int, ...]
    location_column: int | None
    own_location: str | None
    lat_column: int | None
    lon_column: int | None
    coordinates: bool
    stamps: _Stamps = field(default_factory=_Stamps)

    def block(self, block: list[list[str]]) -> bool:
        """Add a block of rows column by column; False (nothing added) if any row needs a
        closer look (short, another location, a bad or empty value, a bad date...)."""
        i_sensor, i_time, i_param, i_units, i_value = self.columns
        if min(map(len, block)) <= max(self.columns):
            return False
        columns = list(zip(*block, strict=False))
        own, i_location = self.own_location, self.location_column
        if own is not None and i_location is not None and set(columns[i_location]) != {own}:
            return False
        try:
            values = array("d", map(float, columns[i_value]))
            ends = list(map(self.stamps.__getitem__, columns[i_time]))
        except ValueError:
            return False
        if not all(map(isfinite, values)):
            return False
        sensor_texts, params, units = columns[i_sensor], columns[i_param], columns[i_units]
        runs = []  # (sensor text, first row, end row) of each run of rows of one sensor
        first = 0
        for text, group in groupby(sensor_texts):
            end = first + sum(1 for _ in group)
            series = self.parsed.sensors.get(text)
            spelled = series.spelled if series is not None else (params[first], units[first])
            if series is None and not (text.isdigit() and text.isascii()):
                return False
            if (params[first:end].count(spelled[0]) != end - first
                    or units[first:end].count(spelled[1]) != end - first):  # fmt: skip
                return False
            runs.append((text, first, end))
            first = end
        sensors = self.parsed.sensors
        for text, first, end in runs:
            series = sensors.get(text)
            if series is None:
                series = sensors[text] = SensorRows(
                    int(text), params[first].strip().lower(), _units(units[first])
                )
                series.spelled = (params[first], units[first])
            series.ends.extend(ends[first:end])
            series.values.extend(values[first:end])
        self.parsed.rows += len(block)
        return True

    def rows(self, block: list[list[str]], line: int) -> None:
        """Add a block row by row, skipping (and counting) the rows that cannot be read."""
        parsed, source = self.parsed, self.source
        i_sensor, i_time, i_param, i_units, i_value = self.columns
        width = max(self.columns) + 1
        i_location, own = self.location_column, self.own_location
        i_lat, i_lon = self.lat_column, self.lon_column
        sensors, stamps = parsed.sensors, self.stamps
        for number, row in enumerate(block, start=line + 1):
            if len(row) < width:
                if any(row):
                    parsed.rows += 1
                    parsed.skip("missing fields", f"{source}:{number}: {len(row)} fields")
                continue
            parsed.rows += 1
            if i_location is not None and own is not None and row[i_location].strip() != own:
                parsed.skip("row of another location",
                            f"{source}:{number}: location_id {row[i_location][:20]!r}")  # fmt: skip
                continue
            sensor_text = row[i_sensor]
            series = sensors.get(sensor_text)
            if series is None:
                if not (sensor_text.strip().isdigit() and sensor_text.strip().isascii()):
                    parsed.skip("bad sensors_id", f"{source}:{number}: {sensor_text[:20]!r}")
                    continue
                series = sensors[sensor_text] = SensorRows(
                    int(sensor_text), row[i_param].strip().lower(), _units(row[i_units])
                )
                series.spelled = (row[i_param], row[i_units])
                if self.coordinates:
                    series.coordinates = []
            elif (row[i_param], row[i_units]) != series.spelled and (
                row[i_param].strip().lower() != series.parameter
                or _units(row[i_units]) != series.units
            ):
                parsed.skip(
                    "parameter or units change within the file",
                    f"{source}:{number}: sensor {sensor_text} {row[i_param]} {row[i_units]}",
                )
                continue
            try:
                end = stamps[row[i_time]]
            except ValueError:
                parsed.skip("bad datetime", f"{source}:{number}: {row[i_time][:40]!r}")
                continue
            text = row[i_value]
            if text == "" or text.isspace():
                value = _NAN
            else:
                try:
                    value = float(text)
                except ValueError:
                    value = _NAN
                if not isfinite(value):
                    parsed.skip("bad value", f"{source}:{number}: {text[:40]!r}")
                    continue
            series.ends.append(end)
            series.values.append(value)
            if series.coordinates is not None:
                series.coordinates.append((
                    _number(row[i_lat]) if i_lat is not None and i_lat < len(row) else None,
                    _number(row[i_lon]) if i_lon is not None and i_lon < len(row) else None,
                ))  # fmt: skip


_NAN = float("nan")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if isfinite(value) else None


def _units(text: str) -> str:
    text = text.strip()
    return _UNITS.get(text, text)


class _Gunzip(io.RawIOBase):
    """A readable stream of the decompressed bytes of an iterable of gzip chunks.

    Several gzip members follow one another as ``gzip`` reads them; zero padding after the
    last is ignored. Not gzip, corrupt, or ending before the gzip stream does:
    :class:`ArchiveFileError`. ``compressed`` counts the bytes taken from ``chunks``.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._inflate = zlib.decompressobj(wbits=31)
        self._input = b""
        self._started = False
        self.compressed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        while True:
            if self._input:
                try:
                    out = self._inflate.decompress(self._input, size)
                except zlib.error as exc:
                    raise ArchiveFileError(f"not gzip or corrupt gzip data ({exc})") from None
                self._input = self._inflate.unconsumed_tail
                if self._inflate.eof:
                    rest = self._inflate.unused_data
                    if rest.strip(b"\0"):
                        self._inflate = zlib.decompressobj(wbits=31)
                    self._input = rest.lstrip(b"\0") if rest.strip(b"\0") else b""
                if out:
                    buffer[: len(out)] = out
                    return len(out)
                continue
            chunk = next(self._chunks, None)
            if chunk is None:
                if not self._started:
                    raise ArchiveFileError("empty file (0 bytes)")
                if not self._inflate.eof:
                    raise ArchiveFileError("truncated gzip (the data end inside the gzip stream)")
                return 0
            if not chunk:
                continue
            self.compressed += len(chunk)
            if self._inflate.eof:
                if not chunk.strip(b"\0"):
                    continue
                self._inflate = zlib.decompressobj(wbits=31)
            self._started = True
            self._input = chunk


def gunzip_text(chunks: Iterable[bytes]) -> tuple[io.TextIOWrapper, _Gunzip]:
    """The UTF-8 text (a BOM dropped, bad bytes replaced) of gzip ``chunks``, as a file for
    :func:`read_archive_csv`, and the raw stream (its ``compressed`` byte count)."""
    raw = _Gunzip(chunks)
    text = io.TextIOWrapper(
        io.BufferedReader(raw, _CHUNK_BYTES), encoding="utf-8-sig", errors="replace", newline=""
    )
    return text, raw


# --- from readings to events -------------------------------------------------------------------


def sensor_interval(ends: Sequence[datetime]) -> timedelta:
    """A sensor's period length: the smallest positive gap between its readings' ends, or
    :data:`DEFAULT_INTERVAL` (hourly) when there is no such gap (one reading)."""
    ordered = sorted(set(ends))
    if len(ordered) < 2:
        return DEFAULT_INTERVAL
    return min(b - a for a, b in pairwise(ordered))


def resolve_sensor(rows: SensorRows, location: Location) -> Sensor | None:
    """The sensor's metadata: its API record when the file agrees on parameter and units,
    else the parameter id of the file's (parameter, units) pair, else None (unknown)."""
    known = location.sensors.get(rows.sensor_id)
    if known is not None and known.parameter == rows.parameter and known.units == rows.units:
        return known
    parameter_id = PARAMETER_IDS.get((rows.parameter, rows.units))
    if parameter_id is None:
        return None
    return Sensor(rows.sensor_id, parameter_id, rows.parameter, rows.units)


def file_events(
    parsed: ParsedFile,
    location: Location,
    *,
    ingested_at: datetime | None = None,
    source: str = "",
) -> Iterator[dict[str, Any]]:
    """The events of one read file (``ingest_mode`` backfill), sensor by sensor.

    Rows of a sensor that the location record does not know and whose (parameter, units)
    has no known parameter id are skipped and counted in ``parsed.skipped``.
    """
    now = ingested_at or datetime.now(UTC)
    formatted: dict[datetime, str] = {}
    for sensor, rows, values, starts in _series(parsed, location, source):
        yield from _series_events(location, sensor, rows, values, starts, now, formatted)


def file_records(
    parsed: ParsedFile,
    location: Location,
    *,
    ingested_at: datetime | None = None,
    source: str = "",
) -> Iterator[tuple[bytes, bytes]]:
    """:func:`file_events` encoded for Kafka: the (key, value) pairs ``encode_records`` makes.

    The hot path of a backfill, so without a dict per reading: each sensor's first event is
    built by :func:`~ingestion.events.make_event` and encoded once; as ``make_event`` writes
    ``value``, ``period_start`` and ``period_end`` one after the other, every other reading
    of the sensor is that JSON with those three values put in (encoded and formatted as
    ``make_event`` and ``encode_event`` do). A unit test pins equality with
    :func:`file_events` encoded; if the three ever stop being neighbours, each event is
    built and encoded in full.
    """
    now = ingested_at or datetime.now(UTC)
    texts: dict[datetime, bytes] = {}
    for sensor, rows, values, starts in _series(parsed, location, source):
        if rows.coordinates is None:
            yield from _encoded_series(location, sensor, values, starts, rows.ends, now, texts)
            continue
        key = str(sensor.id).encode()
        for event in _series_events(location, sensor, rows, values, starts, now, {}):
            yield key, encode_event(event)


def _series(
    parsed: ParsedFile, location: Location, source: str
) -> Iterator[tuple[Sensor, SensorRows, list[float | None], list[datetime]]]:
    """(sensor, rows, values, period starts) of each sensor of a file with a known parameter;
    the rows of the others are counted as skipped."""
    for rows in parsed.sensors.values():
        if not rows.ends:
            continue
        sensor = resolve_sensor(rows, location)
        if sensor is None:
            parsed.skipped[_UNKNOWN_SENSOR] += len(rows.ends)
            if len(parsed.samples) < _SAMPLES:
                parsed.samples.append(
                    f"{source}: sensor {rows.sensor_id} ({rows.parameter}, {rows.units}), "
                    f"{len(rows.ends)} rows"
                )
            continue
        interval = sensor_interval(rows.ends)
        values = [None if isnan(value) else value for value in rows.values]
        yield sensor, rows, values, [end - interval for end in rows.ends]


def _series_events(
    location: Location,
    sensor: Sensor,
    rows: SensorRows,
    values: list[float | None],
    starts: list[datetime],
    now: datetime,
    formatted: dict[datetime, str],
) -> Iterator[dict[str, Any]]:
    readings = zip(values, starts, rows.ends, strict=True)
    if rows.coordinates is None:
        yield from make_events(
            mode="backfill", location=location, sensor=sensor, readings=readings,
            ingested_at=now, formatted=formatted,
        )  # fmt: skip
        return
    for (value, start, end), (lat, lon) in zip(readings, rows.coordinates, strict=True):
        yield make_event(
            mode="backfill", location=location, sensor=sensor, value=value,
            period_start=start, period_end=end, ingested_at=now,
            coordinates={"latitude": lat, "longitude": lon},
        )  # fmt: skip


def _encoded_series(
    location: Location,
    sensor: Sensor,
    values: list[float | None],
    starts: list[datetime],
    ends: list[datetime],
    now: datetime,
    texts: dict[datetime, bytes],
) -> Iterator[tuple[bytes, bytes]]:
    first = make_event(mode="backfill", location=location, sensor=sensor, value=values[0],
                       period_start=starts[0], period_end=ends[0], ingested_at=now)  # fmt: skip
    key, encoded = event_key(first), encode_event(first)
    varying = encode_event({name: first[name] for name in _VARYING})[1:-1]
    at = encoded.find(varying)
    if at < 0 or encoded.find(varying, at + 1) >= 0:  # the contract moved: no shortcut
        readings = zip(values, starts, ends, strict=True)
        for event in make_events(mode="backfill", location=location, sensor=sensor,
                                 readings=readings, ingested_at=now):  # fmt: skip
            yield key, encode_event(event)
        return
    head = encoded[:at] + b'"value":'
    tail = b'"' + encoded[at + len(varying) :]
    for value, start, end in zip(values, starts, ends, strict=True):
        start_text = texts.get(start)
        if start_text is None:
            start_text = texts[start] = format_utc(start).encode()
        end_text = texts.get(end)
        if end_text is None:
            end_text = texts[end] = format_utc(end).encode()
        yield key, b"".join((head, encode_event(value), _START, start_text, _END, end_text, tail))  # type: ignore[arg-type]


#: the fields that differ between two readings of one sensor, neighbours in make_event
_VARYING = ("value", "period_start", "period_end")
_START = b',"period_start":"'
_END = b'","period_end":"'


# --- the archive over HTTPS ------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveObject:
    """One listed day file."""

    key: str
    etag: str
    size: int
    location_id: int
    day: date


#: failures worth another try: no answer, a timeout, a connection reset or cut mid-body
_TRANSIENT: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


class _Retry(Exception):
    """A transient failure: wait and try again (``what`` names it)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class ArchiveStore:
    """The archive bucket over anonymous HTTPS: ListObjectsV2 listings and streamed GETs.

    5xx answers, timeouts and connection errors (before or in the middle of a body) are
    retried ``max_retries`` times with exponential backoff and jitter; 403/404 and anything
    else unexpected is an :class:`ArchiveFileError` with the reason at once. ``max_keys``
    asks for smaller listing pages (S3 answers at most 1,000 keys a page). Thread-safe: one
    ``requests`` session per thread.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout_s: float = 30.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_keys: int | None = None,
        on_wait: Callable[[float, str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_keys = max_keys
        self.on_wait = on_wait
        self._sleep = sleep
        self._local = threading.local()

    def options(self) -> dict[str, Any]:
        """The constructor's arguments (but ``on_wait`` and ``sleep``), for another process."""
        return {"base_url": self.base_url, "timeout_s": self.timeout_s,
                "max_retries": self.max_retries, "backoff_base_s": self.backoff_base_s,
                "backoff_max_s": self.backoff_max_s, "max_keys": self.max_keys}  # fmt: skip

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["User-Agent"] = "openaq-platform (aqi backfill --source archive)"
            # every request goes to one host: the proxy settings of the environment
            # (HTTPS_PROXY, NO_PROXY...) are looked up once, not on each of thousands of
            # requests (that scan of os.environ was a fifth of a file's CPU time)
            session.proxies = requests.utils.get_environ_proxies(self.base_url)
            session.trust_env = False
        return session

    # --- listing -------------------------------------------------------------------------
    def list_prefix(self, prefix: str) -> list[ArchiveObject]:
        """Every day file under ``prefix`` (all pages), in key order."""
        found: list[ArchiveObject] = []
        token: str | None = None
        while True:
            params = {"list-type": "2", "prefix": prefix}
            if token is not None:
                params["continuation-token"] = token
            if self.max_keys is not None:
                params["max-keys"] = str(self.max_keys)
            objects, token = self._retrying(partial(self._list_page, params), f"listing {prefix}")
            found.extend(objects)
            if token is None:
                return found

    def _list_page(self, params: dict[str, str]) -> tuple[list[ArchiveObject], str | None]:
        response = self._session().get(self.base_url + "/", params=params, timeout=self.timeout_s)
        with response:
            _check_status(response)
            try:
                root = ET.fromstring(response.content)
            except ET.ParseError as exc:
                raise _Retry(f"malformed listing XML ({exc})") from None
        if _local_name(root.tag) != "ListBucketResult":
            raise ArchiveFileError(f"not a ListObjectsV2 answer (<{_local_name(root.tag)}>)")
        objects, truncated, token = [], False, None
        for element in root:
            name = _local_name(element.tag)
            if name == "Contents":
                fields = {_local_name(child.tag): (child.text or "") for child in element}
                key = fields.get("Key", "")
                where = parse_key(key)
                if where is None:
                    continue
                try:
                    size = int(fields.get("Size", ""))
                except ValueError:
                    raise ArchiveFileError(f"listing: no size for {key}") from None
                objects.append(ArchiveObject(key, _etag(fields.get("ETag")), size, *where))
            elif name == "IsTruncated":
                truncated = (element.text or "").strip().lower() == "true"
            elif name == "NextContinuationToken":
                token = element.text or None
        if truncated and not token:
            raise ArchiveFileError("listing truncated without a NextContinuationToken")
        return objects, token if truncated else None

    # --- files -----------------------------------------------------------------------------
    def read(
        self,
        obj: ArchiveObject,
        parse: Callable[[Iterable[str]], ParsedFile],
        stop: threading.Event | None = None,
    ) -> ParsedFile:
        """Download one file, streamed, and ``parse`` its text; a cut is retried from scratch."""
        return self._retrying(partial(self._read_once, obj, parse, stop), obj.key)

    def _read_once(
        self,
        obj: ArchiveObject,
        parse: Callable[[Iterable[str]], ParsedFile],
        stop: threading.Event | None,
    ) -> ParsedFile:
        url = f"{self.base_url}/{obj.key}"
        response = self._session().get(url, stream=True, timeout=self.timeout_s)
        with response:
            _check_status(response)

            def chunks() -> Iterator[bytes]:
                for chunk in response.raw.stream(_CHUNK_BYTES, decode_content=False):
                    if stop is not None and stop.is_set():
                        raise ArchiveFileError("stopped")
                    yield chunk

            text, raw = gunzip_text(chunks())
            try:
                parsed = parse(text)
            except _TRANSIENT as exc:
                raise _Retry(f"connection cut mid-body ({type(exc).__name__})") from None
            except (EOFError, csv.Error) as exc:
                raise ArchiveFileError(f"unreadable CSV ({exc})") from None
            parsed.bytes = raw.compressed
            parsed.etag = _etag(response.headers.get("ETag")) or obj.etag
            return parsed

    # --- retries -----------------------------------------------------------------------------
    def _retrying(self, attempt: Callable[[], Any], what: str) -> Any:
        failures = 0
        while True:
            try:
                return attempt()
            except _Retry as exc:
                reason = exc.what
            except _TRANSIENT as exc:
                reason = f"{type(exc).__name__}"
            failures += 1
            if failures > self.max_retries:
                raise ArchiveFileError(f"{reason}; {self.max_retries} retries failed") from None
            delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (failures - 1))
            delay = random.uniform(delay / 2, delay)
            log.warning("%s on %s; retry %d/%d in %.1f s", reason, what, failures,
                        self.max_retries, delay)  # fmt: skip
            if self.on_wait is not None:
                self.on_wait(delay, f"retrying {what} after {reason}")
            self._sleep(delay)


def _check_status(response: requests.Response) -> None:
    status = response.status_code
    if status == 200:
        return
    if status >= 500 or status == 429:
        raise _Retry(f"HTTP {status}")
    code, message = _s3_error(response)
    if status == 403:
        raise ArchiveFileError(f"HTTP 403 {code or 'Forbidden'}: {message or 'access denied'}")
    if status == 404:
        raise ArchiveFileError(f"HTTP 404 {code or 'Not Found'}: {message or 'no such key'}")
    raise ArchiveFileError(f"HTTP {status} {code}: {message}".strip(": "))


def _s3_error(response: requests.Response) -> tuple[str, str]:
    """(Code, Message) of an S3 error body, or ("", "")."""
    try:
        root = ET.fromstring(response.content[:65536])
    except (ET.ParseError, requests.RequestException, urllib3.exceptions.HTTPError):
        return "", ""
    fields = {_local_name(child.tag): " ".join((child.text or "").split()) for child in root}
    return fields.get("Code", ""), fields.get("Message", "")[:200]


def _local_name(tag: str) -> str:
    """``{http://s3.amazonaws.com/doc/2006-03-01/}Key`` -> ``Key``."""
    return tag.rsplit("}", 1)[-1]


def _etag(raw: str | None) -> str:
    return (raw or "").strip().strip('"')


# --- the run -------------------------------------------------------------------------------------


@dataclass
class ArchiveResult:
    """What an archive backfill did (this run)."""

    job_id: str
    resumed: bool
    locations: int = 0
    prefixes: int = 0
    files_listed: int = 0
    #: read by an earlier run of the job, same ETag and size: skipped
    files_unchanged: int = 0
    #: read by an earlier run but changed since (patched): read again
    files_patched: int = 0
    #: read to the end and acknowledged by Kafka in this run
    files_read: int = 0
    #: (key or listing prefix, reason) of what could not be read
    failures: list[tuple[str, str]] = field(default_factory=list)
    rows: int = 0
    rows_skipped: int = 0
    skip_reasons: Counter[str] = field(default_factory=Counter)
    skip_samples: list[str] = field(default_factory=list)
    events: int = 0
    bytes: int = 0

    @property
    def nothing_read(self) -> bool:
        """Something failed and not one file of the job is on Kafka (``aqi`` exits 1)."""
        return bool(self.failures) and self.files_read == 0 and self.files_unchanged == 0

    def summary(self) -> str:
        skipped = f", {len(self.failures)} skipped" if self.failures else ""
        unchanged = f", {self.files_unchanged} already read" if self.files_unchanged else ""
        patched = f" ({self.files_patched} patched since read)" if self.files_patched else ""
        rows = f", {self.rows_skipped} rows skipped" if self.rows_skipped else ""
        return (
            f"{self.files_listed} files listed{unchanged}, {self.files_read} read{patched}"
            f"{skipped}; {self.rows} rows{rows}, {self.events} events, "
            f"{self.bytes / 1e6:.1f} MB"
        )

    def report(self, limit: int = 20) -> list[str]:
        """Lines naming what was skipped and why (files first, then row reasons)."""
        lines = [f"skipped {what}: {reason}" for what, reason in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"... and {len(self.failures) - limit} more files skipped")
        for reason, count in self.skip_reasons.most_common():
            lines.append(f"{count} rows skipped: {reason}")
        lines.extend(f"  e.g. {sample}" for sample in self.skip_samples)
        return lines


def run_archive_backfill(
    scope: ArchiveScope,
    since: date,
    until: date,
    *,
    client: OpenAQClient,
    producer: EventProducer,
    state: IngestionState,
    progress: Progress,
    store: ArchiveStore,
    workers: int = DEFAULT_WORKERS,
    max_unacknowledged: int = 50_000,
) -> ArchiveResult:
    """Send every reading of the scope's day files from ``since`` to ``until`` (local days,
    both included); resume a killed run, re-read files patched since they were read."""
    if since > until:
        raise ValueError("--since must not be after --until")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    job_id = archive_job_id(scope, since, until)
    spec = {"source": "archive", "scope": scope.describe(), "since": since.isoformat(),
            "until": until.isoformat()}  # fmt: skip
    result = ArchiveResult(job_id=job_id, resumed=not state.start_job(job_id, spec))
    if result.resumed:
        progress.note(f"resuming job {job_id}")
    _reader_context(start=True)  # the readers' fork server imports while we list
    locations = {loc.id: loc for loc in scope.resolve(client)}
    result.locations = len(locations)
    if until >= (datetime.now(UTC) - WRITE_DELAY).date():
        progress.note("the last days may have no file yet: a day is written 72 h after it ends")
    listed = _list(store, locations, since, until, workers, result, progress)
    done = state.archive_files_read(job_id)
    to_read = []
    for obj in listed:
        seen = done.get(obj.key)
        if seen == (obj.etag, obj.size):
            result.files_unchanged += 1
            continue
        if seen is not None:
            result.files_patched += 1
        to_read.append(obj)
    progress.total = len(to_read)
    progress.bytes_total = sum(obj.size for obj in to_read)
    _Sender(job_id, locations, producer, state, progress, store, result,
            max_unacknowledged).run(to_read, workers)  # fmt: skip
    producer.flush()
    return result


def _list(
    store: ArchiveStore,
    locations: dict[int, Location],
    since: date,
    until: date,
    workers: int,
    result: ArchiveResult,
    progress: Progress,
) -> list[ArchiveObject]:
    """Every day file of the locations within the days, listed ``workers`` prefixes at once."""
    prefixes = [month_prefix(loc, y, m) for loc in locations for y, m in _months(since, until)]
    result.prefixes = len(prefixes)

    def one(prefix: str) -> tuple[str, list[ArchiveObject] | str]:
        try:
            return prefix, store.list_prefix(prefix)
        except ArchiveFileError as exc:
            return prefix, exc.reason

    listed: list[ArchiveObject] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aqi-archive-list") as pool:
        for number, (prefix, found) in enumerate(pool.map(one, prefixes), start=1):
            if isinstance(found, str):
                result.failures.append((f"listing {prefix}", found))
                progress.note(f"listing {prefix} failed: {found}")
                continue
            for obj in found:
                if since <= obj.day <= until and obj.location_id in locations:
                    listed.append(obj)
            if number % 50 == 0 or number == len(prefixes):
                progress.note(f"listed {number}/{len(prefixes)} months: {len(listed)} files")
    result.files_listed = len(listed)
    return sorted(listed, key=lambda o: o.key)


class _Sender:
    """Reads files in ``workers`` processes, sends from the caller's thread, marks on ack.

    Processes, not threads: the CPU-bound part (HTTP, gunzip, CSV, events, JSON) then uses
    every core, and the sending thread never waits for the GIL behind a parsing thread
    (with threads, each of its ``poll`` calls waited ~1 ms for it: 15k events/s at best).
    A worker takes one file at a time, reads it whole (a failure sends nothing), then sends
    its encoded events in chunks and a summary; this thread sends the chunks as they come
    and, after a file's summary, a barrier whose ``then`` marks the file read.
    """

    def __init__(
        self,
        job_id: str,
        locations: dict[int, Location],
        producer: EventProducer,
        state: IngestionState,
        progress: Progress,
        store: ArchiveStore,
        result: ArchiveResult,
        max_unacknowledged: int,
    ) -> None:
        self.job_id = job_id
        self.locations = locations
        self.producer = producer
        self.progress = progress
        self.store = store
        self.result = result
        self.max_unacknowledged = max_unacknowledged
        self.sent = 0
        self.acknowledged = 0
        self.marker = _Marker(state.path.parent, job_id)
        self._events: dict[int, int] = {}  # events sent so far of each file in flight

    def run(self, objects: list[ArchiveObject], workers: int) -> None:
        if not objects:
            return
        workers = min(workers, len(objects))
        context = _reader_context()
        tasks = context.Queue()
        results = context.Queue(maxsize=8 * workers)
        processes = [
            context.Process(
                target=_worker,
                args=(tasks, results, self.store.options()),
                name=f"aqi-archive-{n}",
                daemon=True,
            )
            for n in range(workers)
        ]
        in_flight: dict[int, ArchiveObject] = {}
        todo = enumerate(objects)
        ingested_at = datetime.now(UTC)
        self.marker.start()
        failing = True
        # the chunks unpickle into tens of thousands of short-lived (key, value) tuples a
        # second, and the default collector runs every 700 new containers: ~10% of this
        # thread's CPU (measured). They hold no cycles: it may look less often while we send
        thresholds = gc.get_threshold()
        gc.set_threshold(100_000, *thresholds[1:])
        try:
            for process in processes:
                process.start()
            while True:
                while len(in_flight) < 2 * workers and (item := next(todo, None)) is not None:
                    number, obj = item
                    in_flight[number] = obj
                    self._events[number] = 0
                    tasks.put((number, obj, self.locations[obj.location_id], ingested_at))
                if not in_flight:
                    break
                try:
                    kind, number, payload = results.get(timeout=0.2)
                except queue.Empty:
                    self.producer.send_records(())  # serve acknowledgements while waiting
                    _check_alive(processes)
                    continue
                if kind == "records":
                    self._records(number, payload)
                elif kind == "done":
                    last, summary = payload
                    if last:
                        self._records(number, last)
                    self._done(in_flight.pop(number), self._events.pop(number), summary)
                elif kind == "failed":
                    self._events.pop(number)
                    self._failed(in_flight.pop(number), payload)
                elif kind == "wait":
                    self.progress.wait(*payload)
            self.producer.flush()
            failing = False
        finally:
            for _ in processes:
                tasks.put(None)
            for process in processes:
                if process.pid is not None:
                    process.join(timeout=5 if not failing else 0.5)
                    if process.is_alive():
                        process.terminate()
                        process.join(timeout=5)
            tasks.close()
            tasks.cancel_join_thread()  # what no worker took is of no use to anyone
            results.close()
            gc.set_threshold(*thresholds)
            self.marker.close(raise_error=not failing)

    def _records(self, number: int, records: list[tuple[bytes, bytes]]) -> None:
        count = self.producer.send_records(records)
        self._events[number] += count
        self.sent += count
        self.progress.add_events(count)
        if self.sent - self.acknowledged >= self.max_unacknowledged:
            self.producer.flush()

    def _done(self, obj: ArchiveObject, events: int, summary: _Summary) -> None:
        result = self.result
        result.rows += summary.rows
        result.rows_skipped += sum(summary.skipped.values())
        result.skip_reasons.update(summary.skipped)
        room = _SAMPLES - len(result.skip_samples)
        result.skip_samples.extend(summary.samples[: max(0, room)])
        result.bytes += summary.bytes
        self.progress.add_rows(summary.rows)
        self.progress.add_bytes(summary.bytes)
        # a barrier: the file is marked read once Kafka has every event of it (and all before)
        mark = partial(self._acknowledged, obj.key, summary.etag or obj.etag,
                       summary.bytes or obj.size, events)  # fmt: skip
        self.producer.send_records((), then=mark)

    def _failed(self, obj: ArchiveObject, reason: str) -> None:
        self.result.failures.append((obj.key, reason))
        self.progress.note(f"skipped {obj.key}: {reason}")
        self.progress.add_bytes(obj.size)
        self.progress.advance()

    def _acknowledged(self, key: str, etag: str, size: int, events: int) -> None:
        self.marker.mark(key, etag, size, events)
        self.acknowledged += events
        self.result.files_read += 1
        self.result.events += events
        self.progress.advance()


@dataclass(frozen=True)
class _Summary:
    """What a worker read in one file, beside its events."""

    rows: int
    skipped: Counter[str]
    samples: list[str]
    bytes: int
    etag: str | None


def _reader_context(start: bool = False) -> Any:
    """Readers are forked from a server process that imported this module once (not from
    this process, which has threads): 0.3 s of imports in all instead of 0.3 s per reader.
    ``start`` launches that server now, so that it imports while the files are listed."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    if start:
        multiprocessing.forkserver.ensure_running()
    return context


def _check_alive(processes: list[Any]) -> None:
    for process in processes:
        if process.exitcode is not None:
            raise ArchiveError(
                f"an archive reader process stopped unexpectedly (exit code {process.exitcode})"
            )


def _worker(tasks: Any, results: Any, store_options: dict[str, Any]) -> None:
    """A reader process: files from ``tasks`` (until None), messages to ``results``:
    ("records", n, chunk)... then ("done", n, (last chunk, summary)), or ("failed", n,
    reason) alone;
    ("wait", None, (seconds, reason)) before a retry. Ends when its parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops us
    parent = multiprocessing.parent_process()

    def orphaned() -> bool:
        if parent is None or parent.is_alive():
            return False
        # nobody reads our messages any more: exit without waiting to flush them (that
        # wait, on a full pipe, would keep an orphan alive for ever)
        results.cancel_join_thread()
        return True

    def put(message: tuple[str, int | None, Any]) -> None:
        while True:
            try:
                results.put(message, timeout=1.0)
                return
            except queue.Full:
                if orphaned():
                    raise SystemExit(0) from None

    store = ArchiveStore(**store_options, on_wait=lambda s, why: put(("wait", None, (s, why))))
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if orphaned():
                return
            continue
        if task is None or orphaned():
            return
        number, obj, location, ingested_at = task
        parse = partial(read_archive_csv, source=obj.key, location_id=obj.location_id,
                        coordinates=location.is_mobile)  # fmt: skip
        try:
            parsed = store.read(obj, parse)
        except ArchiveFileError as exc:
            put(("failed", number, exc.reason))
            continue
        except Exception as exc:  # noqa: BLE001 - one file's surprise must not stop the run
            put(("failed", number, f"unexpected {type(exc).__name__}: {exc}"[:300]))
            continue
        records = file_records(parsed, location, ingested_at=ingested_at, source=obj.key)
        try:
            chunk = list(islice(records, _SEND_BATCH))
            while len(chunk) == _SEND_BATCH:
                put(("records", number, chunk))
                chunk = list(islice(records, _SEND_BATCH))
        except Exception as exc:  # noqa: BLE001 - not marked: the next run reads it again
            put(("failed", number, f"unexpected {type(exc).__name__}: {exc}"[:300]))
            continue
        # the last chunk travels with the summary: one message for most files
        summary = _Summary(parsed.rows, parsed.skipped, parsed.samples, parsed.bytes, parsed.etag)
        put(("done", number, (chunk, summary)))


class _Marker:
    """Writes "file read" marks to the state from its own thread and connection.

    A mark is one SQLite transaction with a full fsync (~1 ms here): in the producer's
    callback, on the sending thread, they held a run of small files to ~300 files/s. The
    callback queues the mark instead (the file is never marked before Kafka acknowledged
    it); this thread writes them in order. The queue is short and bounded: a crash loses at
    most the marks queued, i.e. a few more acknowledged files are sent again on the rerun.
    """

    def __init__(self, state_dir: Path, job_id: str, backlog: int = 256) -> None:
        self.state_dir = state_dir
        self.job_id = job_id
        self._queue: queue.Queue[tuple[str, str, int, int] | None] = queue.Queue(backlog)
        self._thread = threading.Thread(target=self._run, name="aqi-archive-marks", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def mark(self, key: str, etag: str, size: int, events: int) -> None:
        if self.error is not None:
            raise ArchiveError(f"cannot record progress in {self.state_dir}: {self.error}")
        self._queue.put((key, etag, size, events))

    def close(self, raise_error: bool = True) -> None:
        """Write every queued mark, then stop (raises what went wrong, if asked)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if raise_error and self.error is not None:
            raise ArchiveError(f"cannot record progress in {self.state_dir}: {self.error}")

    def _run(self) -> None:
        state = None
        try:
            state = IngestionState(self.state_dir)
            while (item := self._queue.get()) is not None:
                state.mark_archive_file(self.job_id, *item)
        except Exception as exc:  # noqa: BLE001 - reported by mark() and close()
            self.error = exc
            while self._queue.get() is not None:  # let mark() and close() go on
                pass
        finally:
            if state is not None:
                state.close()
