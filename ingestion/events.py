"""The event contract: one JSON message per measurement, shared by ingestion, streaming and dbt.

The contract is published as a JSON Schema (``ingestion/schemas/measurement_event.v1.json``);
this module is the only place that builds events, so that every producer (live collector,
backfill, fixture replay, simulator) emits exactly the same shape. ``docs/event-contract.md``
explains each field.

Public surface:

- :class:`Location`, :class:`Sensor` - the metadata an event carries, mapped from OpenAQ.
- :func:`location_from_api` - an OpenAQ v3 location object -> :class:`Location`.
- :func:`event_from_measurement` - one ``/sensors/{id}/measurements`` result -> event.
- :func:`event_from_latest` - one ``/locations/{id}/latest`` result -> event.
- :func:`make_event` - the single constructor every producer uses.
- :func:`make_events` - :func:`make_event` for many readings of one sensor (bulk readers).
- :func:`validate_event`, :data:`EVENT_SCHEMA` - validation against the published schema.
- :func:`event_key` - the Kafka key (sensor id as a string).
- :data:`PARAMETER_IDS` - (parameter, units) -> OpenAQ parameter id, for readings without one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Literal

from aqi.core.event_contract import EVENT_SCHEMA, EVENT_SCHEMA_PATH, INGEST_MODES, SCHEMA_VERSION

__all__ = [
    "EVENT_SCHEMA",
    "EVENT_SCHEMA_PATH",
    "INGEST_MODES",
    "PARAMETER_IDS",
    "SCHEMA_VERSION",
    "Location",
    "Sensor",
    "event_from_latest",
    "event_from_measurement",
    "event_key",
    "format_utc",
    "location_from_api",
    "make_event",
    "make_events",
    "parse_utc",
    "validate_event",
]

#: the schema's ingest_mode enum, for type checkers (a test holds it equal to INGEST_MODES)
IngestMode = Literal["live", "backfill", "replay", "simulate"]

#: (parameter, units) -> OpenAQ v3 parameter id, for the six pollutants in every unit the recorded
#: OpenAQ responses show (ingestion/fixtures/openaq): the id depends on the units. For a reading
#: whose sensor is missing from its location record (an archive file names only the
#: parameter and units); a pair not listed here has no known id.
PARAMETER_IDS: dict[tuple[str, str], int] = {
    ("pm10", "µg/m³"): 1,
    ("pm25", "µg/m³"): 2,
    ("o3", "µg/m³"): 3,
    ("co", "µg/m³"): 4,
    ("no2", "µg/m³"): 5,
    ("so2", "µg/m³"): 6,
    ("no2", "ppm"): 7,
    ("co", "ppm"): 8,
    ("so2", "ppm"): 9,
    ("o3", "ppm"): 10,
    ("no2", "ppb"): 15,
    ("so2", "ppb"): 101,
    ("co", "ppb"): 102,
}


@dataclass(frozen=True)
class Sensor:
    """A sensor of a location: what it measures and in which units."""

    id: int
    parameter_id: int
    parameter: str
    units: str


@dataclass(frozen=True)
class Location:
    """The location metadata every event of that location repeats."""

    id: int
    name: str | None
    timezone: str
    latitude: float | None
    longitude: float | None
    country_code: str | None
    provider: str | None
    is_mobile: bool
    is_monitor: bool
    sensors: dict[int, Sensor] = field(default_factory=dict)


def location_from_api(obj: dict[str, Any]) -> Location:
    """Map an OpenAQ v3 location (``/v3/locations`` result) to :class:`Location`."""
    coords = obj.get("coordinates") or {}
    sensors = {}
    for s in obj.get("sensors") or []:
        parameter = s.get("parameter") or {}
        sensors[int(s["id"])] = Sensor(
            id=int(s["id"]),
            parameter_id=int(parameter["id"]),
            parameter=str(parameter["name"]),
            units=str(parameter["units"]),
        )
    return Location(
        id=int(obj["id"]),
        name=obj.get("name"),
        timezone=obj.get("timezone") or "UTC",
        latitude=_float(coords.get("latitude")),
        longitude=_float(coords.get("longitude")),
        country_code=(obj.get("country") or {}).get("code"),
        provider=(obj.get("provider") or {}).get("name"),
        is_mobile=bool(obj.get("isMobile", False)),
        is_monitor=bool(obj.get("isMonitor", False)),
        sensors=sensors,
    )


def event_from_measurement(
    result: dict[str, Any],
    location: Location,
    sensor: Sensor,
    mode: IngestMode,
    ingested_at: datetime | None = None,
) -> dict[str, Any]:
    """One ``/v3/sensors/{id}/measurements`` result (which names no sensor) -> an event."""
    period = result["period"]
    parameter = result.get("parameter") or {}
    coverage = result.get("coverage") or {}
    return make_event(
        mode=mode,
        location=location,
        sensor=Sensor(
            id=sensor.id,
            parameter_id=int(parameter.get("id", sensor.parameter_id)),
            parameter=str(parameter.get("name", sensor.parameter)),
            units=str(parameter.get("units", sensor.units)),
        ),
        value=result.get("value"),
        period_start=parse_utc(period["datetimeFrom"]["utc"]),
        period_end=parse_utc(period["datetimeTo"]["utc"]),
        coordinates=result.get("coordinates"),
        flagged=bool((result.get("flagInfo") or {}).get("hasFlags", False)),
        coverage_percent=_float(coverage.get("percentComplete")),
        ingested_at=ingested_at,
    )


def event_from_latest(
    result: dict[str, Any],
    location: Location,
    mode: IngestMode,
    interval: timedelta,
    ingested_at: datetime | None = None,
) -> dict[str, Any] | None:
    """One ``/v3/locations/{id}/latest`` result -> an event, or None for an unknown sensor.

    The latest endpoint gives only the period end (``datetime``) and no flags or coverage:
    the period start is the end minus the sensor's ``interval`` (learned from its
    measurements, see :mod:`ingestion.collector`), ``flagged`` is false and
    ``coverage_percent`` null.
    """
    sensor = location.sensors.get(int(result["sensorsId"]))
    if sensor is None:
        return None
    end = parse_utc(result["datetime"]["utc"])
    return make_event(
        mode=mode,
        location=location,
        sensor=sensor,
        value=result.get("value"),
        period_start=end - interval,
        period_end=end,
        coordinates=result.get("coordinates"),
        flagged=False,
        coverage_percent=None,
        ingested_at=ingested_at,
    )


def make_event(
    *,
    mode: IngestMode,
    location: Location,
    sensor: Sensor,
    value: float | None,
    period_start: datetime,
    period_end: datetime,
    coordinates: dict[str, Any] | None = None,
    flagged: bool = False,
    coverage_percent: float | None = None,
    ingested_at: datetime | None = None,
) -> dict[str, Any]:
    """Build an event; every producer goes through here. Field order follows the contract."""
    if mode not in INGEST_MODES:
        raise ValueError(f"unknown ingest mode {mode!r}")
    latitude, longitude = _position(coordinates)
    if latitude is None or longitude is None:
        latitude, longitude = _position(
            {"latitude": location.latitude, "longitude": location.longitude}
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "source": "openaq",
        "ingest_mode": mode,
        "ingested_at": format_utc(ingested_at or datetime.now(UTC)),
        "location_id": location.id,
        "location_name": location.name,
        "sensor_id": sensor.id,
        "parameter_id": sensor.parameter_id,
        "parameter": sensor.parameter,
        "units": sensor.units,
        "value": _float(value),
        "period_start": format_utc(period_start),
        "period_end": format_utc(period_end),
        "timezone": location.timezone,
        "latitude": latitude,
        "longitude": longitude,
        "country_code": location.country_code,
        "provider": location.provider,
        "is_mobile": location.is_mobile,
        "is_monitor": location.is_monitor,
        "flagged": flagged,
        "coverage_percent": coverage_percent,
    }


def make_events(
    *,
    mode: IngestMode,
    location: Location,
    sensor: Sensor,
    readings: Iterable[tuple[float | None, datetime, datetime]],
    ingested_at: datetime | None = None,
    formatted: dict[datetime, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """:func:`make_event` for each ``(value, period_start, period_end)`` of one sensor.

    For bulk readers (the archive backfill, where formatting dominates the cost): the
    fields the readings share (location, sensor, ``ingested_at``, the location's coordinates,
    ``flagged`` false, ``coverage_percent`` null) are built once, by :func:`make_event`; each
    event is a copy of that one with its own value and period, converted exactly as
    :func:`make_event` converts them (each distinct timestamp formatted once). The result
    equals calling :func:`make_event` per reading with the same ``ingested_at`` (a unit test
    pins it). ``ingested_at`` defaults to now, once for the whole series. ``formatted`` (UTC
    instant -> its text) may be shared by the calls for the sensors of one file, whose
    readings share their timestamps.
    """
    template: dict[str, Any] | None = None
    if formatted is None:
        formatted = {}
    for value, start, end in readings:
        if template is None:
            template = make_event(
                mode=mode, location=location, sensor=sensor, value=value, period_start=start,
                period_end=end, ingested_at=ingested_at or datetime.now(UTC),
            )  # fmt: skip
            formatted[start] = template["period_start"]
            formatted[end] = template["period_end"]
            yield dict(template)
            continue
        event = template.copy()
        event["value"] = value if type(value) is float else _float(value)
        text = formatted.get(start)
        if text is None:
            text = formatted[start] = format_utc(start)
        event["period_start"] = text
        text = formatted.get(end)
        if text is None:
            text = formatted[end] = format_utc(end)
        event["period_end"] = text
        yield event


def event_key(event: dict[str, Any]) -> bytes:
    """The Kafka key: the sensor id as a decimal string (keeps a sensor in one partition)."""
    return str(event["sensor_id"]).encode()


def validate_event(event: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``event`` satisfies the published schema."""
    _validator().validate(event)


def parse_utc(text: str) -> datetime:
    """ISO-8601 with Z or an offset -> aware UTC datetime."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """Aware datetime -> ``2024-01-02T03:04:05Z`` (microseconds only when present).

    A hot path (three calls per event; the simulator makes hundreds of thousands a second):
    ``isoformat`` of a UTC datetime is the same text plus ``+00:00`` and, unlike ``strftime``,
    needs no format parsing. Years before 1000 (which glibc's ``%Y`` does not pad) and
    datetime subclasses (pandas' Timestamp prints nanoseconds) keep the ``strftime`` path.
    """
    value = value.astimezone(UTC)
    if type(value) is datetime and value.year >= 1000:
        return value.isoformat()[:-6] + "Z"
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


@cache
def _validator():
    from jsonschema import Draft202012Validator, FormatChecker

    Draft202012Validator.check_schema(EVENT_SCHEMA)
    return Draft202012Validator(EVENT_SCHEMA, format_checker=FormatChecker())


def _position(coords: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """(latitude, longitude) or (None, None) when missing or impossible.

    OpenAQ sometimes reports longitudes past 180 (sensor 5: 185.199922); they are wrapped into
    [-180, 180), which names the same meridian, so maps and distance maths work.
    """
    coords = coords or {}
    lat, lon = _float(coords.get("latitude")), _float(coords.get("longitude"))
    if lat is None or lon is None or not -90 <= lat <= 90:
        return None, None
    if not -180 <= lon <= 180:
        lon = round((lon + 180) % 360 - 180, 6)
    return lat, lon


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    return float(value)
