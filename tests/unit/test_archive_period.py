"""Which end of its period an archive row's ``datetime`` stamps, decided on recorded data.

docs/archive.md gives the reasoning; these tests pin each piece of evidence to the recorded
API responses in ingestion/fixtures/openaq, and the reader to the decision: the stamp is the
period END. The archive's documented sample day file is cited in docs/archive.md, not read
here: its license does not let the project vendor it (ingestion/fixtures/openaq/SOURCES.md),
and a test that reads it only where a team folder happens to sit beside the checkout would
skip in CI.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from ingestion.archive import read_archive_csv
from ingestion.events import parse_utc
from ingestion.fixtures import load_recorded

pytestmark = pytest.mark.unit

def _body(path: str, **query: str) -> dict:
    for response in load_recorded():
        if response.path == path and all(response.query.get(k) == v for k, v in query.items()):
            return response.body
    raise AssertionError(f"no recorded response for {path} {query}")


def test_a_sensors_first_stamp_is_the_end_of_its_first_period() -> None:
    """Sensor 3 (R client's cassettes): its first measurement covers 00:00-00:30 local and
    the sensor's single timestamp ``datetimeFirst`` is 00:30 - the period end."""
    first = _body("/v3/sensors/3/measurements", limit="5")["results"][0]["period"]
    sensor = _body("/v3/locations/3/sensors")["results"][0]
    assert first["datetimeFrom"]["local"] == "2023-03-01T00:00:00-05:00"
    assert first["datetimeTo"]["local"] == "2023-03-01T00:30:00-05:00"
    first_stamp = parse_utc(sensor["datetimeFirst"]["utc"])
    assert first_stamp == parse_utc(first["datetimeTo"]["utc"])
    assert first_stamp != parse_utc(first["datetimeFrom"]["utc"])


def test_latest_and_last_stamps_are_the_same_kind_of_instant() -> None:
    """``latest.datetime`` equals ``datetimeLast`` (sensor 3; location 1 and its latest
    reading): one stamp per reading, the one the archive writes, on the same grid."""
    sensor = _body("/v3/locations/3/sensors")["results"][0]
    assert sensor["latest"]["datetime"]["utc"] == sensor["datetimeLast"]["utc"]
    location = _body("/v3/locations/1")["results"][0]
    latest = _body("/v3/locations/1/latest")["results"][0]
    assert parse_utc(latest["datetime"]["utc"]) == parse_utc(location["datetimeLast"]["utc"])


def test_the_api_periods_of_location_2178_are_hourly_and_on_the_hour() -> None:
    """Sensor 3920 (PM2.5 at location 2178, the archive sample's location): raw hourly
    periods whose ends fall on the hour; location 2178 is in America/Denver (UTC-7 in
    February), so its first hourly period of a local day ends at 01:00 local."""
    results = _body("/v3/sensors/3920/measurements", limit="1000")["results"]
    assert results
    for result in results:
        start = parse_utc(result["period"]["datetimeFrom"]["utc"])
        end = parse_utc(result["period"]["datetimeTo"]["utc"])
        assert end - start == timedelta(hours=1)
        assert end.minute == end.second == 0
    location = next(r for r in _body("/v3/locations/2178")["results"] if r["id"] == 2178)
    assert location["timezone"] == "America/Denver"


def test_the_reader_stamps_period_end_and_derives_the_start() -> None:
    """The decision as the reader applies it: period_end = the stamp, period_start = end -
    the sensor's period (from the spacing), on a file shaped like the sample."""
    from ingestion.archive import file_events
    from ingestion.events import location_from_api

    location = next(r for r in _body("/v3/locations/2178")["results"] if r["id"] == 2178)
    lines = ["location_id,sensors_id,location,datetime,lat,lon,parameter,units,value"] + [
        f"2178,3919,Del Norte-2178,2023-02-22T{h:02d}:00:00-07:00,35.1353,-106.584702,pm10,µg/m³,{h}.0"
        for h in (1, 2, 3)
    ]
    parsed = read_archive_csv([line + "\n" for line in lines], location_id=2178)
    events = list(file_events(parsed, location_from_api(location)))
    assert [(e["period_start"], e["period_end"]) for e in events] == [
        ("2023-02-22T07:00:00Z", "2023-02-22T08:00:00Z"),
        ("2023-02-22T08:00:00Z", "2023-02-22T09:00:00Z"),
        ("2023-02-22T09:00:00Z", "2023-02-22T10:00:00Z"),
    ]
    assert {e["timezone"] for e in events} == {"America/Denver"}
    assert date(2023, 2, 22) == datetime.fromisoformat("2023-02-22T01:00:00-07:00").date()
