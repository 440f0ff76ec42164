"""The event contract on the recorded OpenAQ responses: every field maps right.

Expected values are read independently from the raw fixture files (json/yaml), not from the
code under test.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import yaml

from ingestion.events import (
    EVENT_SCHEMA,
    Location,
    event_from_latest,
    event_from_measurement,
    event_key,
    format_utc,
    location_from_api,
    make_event,
    parse_utc,
    validate_event,
)
from ingestion.fixtures import DEFAULT_FIXTURES_DIR
from ingestion.replay import fixture_events

pytestmark = pytest.mark.unit

FIX = DEFAULT_FIXTURES_DIR
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _json(rel: str) -> dict:
    return json.loads((FIX / rel).read_text())


def _vcr(rel: str) -> dict:
    cassette = yaml.safe_load((FIX / rel).read_text())
    return json.loads(cassette["http_interactions"][0]["response"]["body"]["string"])


def _location(obj_id: int) -> dict:
    # the R cassettes (OpenAQ's test database) first: their location 3 is the one of sensor 3;
    # production's location 3 is another place (Nima, Ghana)
    for obj in _vcr("openaq-r-vcr/list_locations.yml")["results"]:
        if obj["id"] == obj_id:
            return obj
    for rel in (
        "openaq-python-prod-slices/locations_slice.json",
        "openaq-python-unit/locations.json",
    ):
        for obj in _json(rel)["results"]:
            if obj["id"] == obj_id:
                return obj
    raise KeyError(obj_id)


def test_schema_lists_exactly_the_contract_fields() -> None:
    contract = [
        "schema_version",
        "source",
        "ingest_mode",
        "ingested_at",
        "location_id",
        "location_name",
        "sensor_id",
        "parameter_id",
        "parameter",
        "units",
        "value",
        "period_start",
        "period_end",
        "timezone",
        "latitude",
        "longitude",
        "country_code",
        "provider",
        "is_mobile",
        "is_monitor",
        "flagged",
        "coverage_percent",
    ]
    assert EVENT_SCHEMA["required"] == contract
    assert list(EVENT_SCHEMA["properties"]) == contract


def test_null_flagged_measurement_maps_every_field() -> None:
    raw = _json("openaq-python-prod-slices/measurements_pm25_slice.json")["results"][0]
    assert raw["value"] is None and raw["flagInfo"]["hasFlags"] is True
    loc_obj = _location(2178)
    location = location_from_api(loc_obj)
    event = event_from_measurement(raw, location, location.sensors[3920], "replay", NOW)
    validate_event(event)
    assert event == {
        "schema_version": 1,
        "source": "openaq",
        "ingest_mode": "replay",
        "ingested_at": "2026-11-21T12:00:00Z",
        "location_id": 2178,
        "location_name": loc_obj["name"],
        "sensor_id": 3920,
        "parameter_id": 2,
        "parameter": "pm25",
        "units": "µg/m³",
        "value": None,
        "period_start": raw["period"]["datetimeFrom"]["utc"],
        "period_end": raw["period"]["datetimeTo"]["utc"],
        "timezone": loc_obj["timezone"],
        # the measurement has no coordinates: the location's are used
        "latitude": loc_obj["coordinates"]["latitude"],
        "longitude": loc_obj["coordinates"]["longitude"],
        "country_code": loc_obj["country"]["code"],
        "provider": loc_obj["provider"]["name"],
        "is_mobile": loc_obj["isMobile"],
        "is_monitor": loc_obj["isMonitor"],
        "flagged": True,
        "coverage_percent": raw["coverage"]["percentComplete"],
    }
    assert event_key(event) == b"3920"


def test_sensor_3_one_local_day_of_48_half_hourly_readings() -> None:
    body = _vcr("openaq-r-vcr/list_sensor_measurements_3.yml")
    assert body["meta"]["found"] == 48
    location = location_from_api(_location(3))
    sensor = location.sensors[3]
    events = [event_from_measurement(r, location, sensor, "replay", NOW) for r in body["results"]]
    assert len(events) == 48
    tz = ZoneInfo(location.timezone)
    local_days = set()
    for raw, event in zip(body["results"], events, strict=True):
        validate_event(event)
        start, end = parse_utc(event["period_start"]), parse_utc(event["period_end"])
        assert end - start == timedelta(minutes=30)
        assert event["value"] == raw["value"]
        assert event["period_end"] == format_utc(parse_utc(raw["period"]["datetimeTo"]["utc"]))
        local_days.add((end - timedelta(microseconds=1)).astimezone(tz).date())
    assert local_days == {datetime(2023, 3, 7).date()}
    ends = [e["period_end"] for e in events]
    assert ends == sorted(ends) and len(set(ends)) == 48


def test_two_pm25_sensors_and_ppb_vs_ugm3_at_location_17() -> None:
    loc_obj = _location(17)
    location = location_from_api(loc_obj)
    pm25 = sorted(s.id for s in location.sensors.values() if s.parameter == "pm25")
    assert pm25 == sorted(s["id"] for s in loc_obj["sensors"] if s["parameter"]["name"] == "pm25")
    assert len(pm25) == 2
    units = {}
    for sensor in location.sensors.values():
        event = make_event(
            mode="live", location=location, sensor=sensor, value=1.0,
            period_start=NOW - timedelta(hours=1), period_end=NOW, ingested_at=NOW,
        )  # fmt: skip
        validate_event(event)
        units.setdefault(event["parameter"], set()).add((event["parameter_id"], event["units"]))
    assert units["co"] == {(4, "µg/m³"), (102, "ppb")}
    assert units["no2"] == {(5, "µg/m³"), (15, "ppb")}
    assert location.timezone == "Asia/Kolkata" and location.country_code == "IN"


def test_sentinel_9999_passes_through_unchanged() -> None:
    raw = next(
        r
        for r in _json("openaq-python-prod-slices/latest_pm25_slice.json")["results"]
        if r["value"] == -9999.0
    )
    location = Location(
        id=raw["locationsId"], name="recorded elsewhere", timezone="UTC", latitude=None,
        longitude=None, country_code=None, provider=None, is_mobile=False, is_monitor=True,
        sensors={raw["sensorsId"]: location_from_api(_location(17)).sensors[35].__class__(
            raw["sensorsId"], 2, "pm25", "µg/m³")},
    )  # fmt: skip
    event = event_from_latest(raw, location, "live", timedelta(hours=1), NOW)
    validate_event(event)
    assert event["value"] == -9999.0
    assert event["period_end"] == raw["datetime"]["utc"]
    assert event["period_start"] == format_utc(
        parse_utc(raw["datetime"]["utc"]) - timedelta(hours=1)
    )
    assert (event["latitude"], event["longitude"]) == (
        raw["coordinates"]["latitude"],
        raw["coordinates"]["longitude"],
    )
    assert event["flagged"] is False and event["coverage_percent"] is None


def test_latest_of_unknown_sensor_is_none() -> None:
    location = location_from_api(_location(17))
    raw = {
        "datetime": {"utc": "2024-01-01T00:00:00Z"},
        "value": 1,
        "sensorsId": 1,
        "locationsId": 17,
    }
    assert event_from_latest(raw, location, "live", timedelta(hours=1)) is None


def test_longitude_past_180_is_wrapped() -> None:
    body = _vcr("openaq-r-vcr/get_sensor_5.yml")["results"][0]
    assert body["latest"]["coordinates"]["longitude"] > 180
    # sensor 5's location is not among the recordings: borrow location 1's metadata
    location = location_from_api(_location(1))
    sensor = next(iter(location.sensors.values()))
    event = make_event(
        mode="replay", location=location, sensor=sensor, value=1.0,
        period_start=NOW - timedelta(hours=1), period_end=NOW,
        coordinates=body["latest"]["coordinates"],
    )  # fmt: skip
    validate_event(event)
    assert event["longitude"] == pytest.approx(body["latest"]["coordinates"]["longitude"] - 360)


def test_every_fixture_reading_becomes_a_valid_event() -> None:
    events, report = fixture_events(FIX, ingested_at=NOW)
    assert events and report.events == len(events)
    for event in events:
        validate_event(event)
        assert event["ingest_mode"] == "replay"
    keys = [(e["sensor_id"], e["period_end"]) for e in events]
    assert len(keys) == len(set(keys))
    by_sensor = {}
    for e in events:
        by_sensor.setdefault(e["sensor_id"], []).append(e)
    day = [
        e
        for e in by_sensor[3]
        if "2023-03-07T05:00:00Z" < e["period_end"] <= "2023-03-08T05:00:00Z"
    ]
    assert len(day) == 48  # the local (America/New_York) day 2023-03-07
    assert any(e["value"] is None and e["flagged"] for e in by_sensor[3920])
    # readings of locations that were never recorded are skipped, not given a made-up zone
    assert report.skipped_unknown_location > 0
    assert report.duplicates > 0  # sensor 3 appears in two recorded responses


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.pop("period_end"),
        lambda e: e.update(value="12"),
        lambda e: e.update(schema_version=2),
        lambda e: e.update(ingest_mode="batch"),
        lambda e: e.update(period_end="2024-01-01 00:00:00"),
        lambda e: e.update(extra=1),
        lambda e: e.update(sensor_id=-1),
    ],
)
def test_schema_rejects_bad_events(mutate) -> None:
    location = location_from_api(_location(17))
    event = make_event(
        mode="live", location=location, sensor=location.sensors[35], value=1.0,
        period_start=NOW - timedelta(hours=1), period_end=NOW,
    )  # fmt: skip
    validate_event(event)
    mutate(event)
    with pytest.raises(jsonschema.ValidationError):
        validate_event(event)


def test_utc_parsing_and_formatting() -> None:
    assert format_utc(parse_utc("2023-03-07T00:00:00-05:00")) == "2023-03-07T05:00:00Z"
    assert format_utc(parse_utc("2023-03-07T00:00:00-0500")) == "2023-03-07T05:00:00Z"
    assert format_utc(parse_utc("2024-01-01T00:00:00+00:00")) == "2024-01-01T00:00:00Z"
    with pytest.raises(ValueError):
        parse_utc("2024-01-01T00:00:00")


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, 60, tzinfo=UTC),
        datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2025, 3, 30, 2, 30, tzinfo=ZoneInfo("Europe/Paris")),  # skipped by DST
        datetime(2025, 11, 2, 1, 30, fold=1, tzinfo=ZoneInfo("America/Denver")),
        datetime(2025, 1, 1, 5, 45, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=45))),
        datetime(1000, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC),  # strftime's own (unpadded) year
        datetime(9999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    ],
)
def test_format_utc_is_the_strftime_format(value: datetime) -> None:
    utc = value.astimezone(UTC)
    expected = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        expected += f".{utc.microsecond:06d}"
    assert format_utc(value) == expected + "Z"


def test_format_utc_of_a_datetime_subclass_keeps_its_own_fields() -> None:
    class Stamp(datetime):
        def isoformat(self, *args: object, **kwargs: object) -> str:
            return "not used"

    stamp = Stamp(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert format_utc(stamp) == "2024-05-06T07:08:09Z"


def test_schema_file_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(EVENT_SCHEMA)
    assert Path(EVENT_SCHEMA["$schema"]).name == "schema"
