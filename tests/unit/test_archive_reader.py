"""The archive reader's pure parts: keys, job ids, datetimes, CSV by header, gzip, periods,
the mapping of readings to events, and the progress counters it adds."""

from __future__ import annotations

import gzip
import io
from datetime import UTC, date, datetime, timedelta

import pytest

from ingestion.archive import (
    ArchiveFileError,
    ArchiveResult,
    ArchiveScope,
    archive_job_id,
    archive_key,
    file_events,
    file_records,
    gunzip_text,
    month_prefix,
    parse_archive_datetime,
    parse_key,
    read_archive_csv,
    sensor_interval,
)
from ingestion.events import (
    Location,
    Sensor,
    event_key,
    make_event,
    make_events,
    validate_event,
)
from ingestion.producer import encode_event
from ingestion.progress import Progress
from ingestion.state import backfill_job_id

pytestmark = pytest.mark.unit

HEADER = "location_id,sensors_id,location,datetime,lat,lon,parameter,units,value"
LOCATION = Location(
    id=2178, name="Del Norte", timezone="America/Denver", latitude=35.1353,
    longitude=-106.584702, country_code="US", provider="AirNow", is_mobile=False,
    is_monitor=True, sensors={3919: Sensor(3919, 1, "pm10", "µg/m³"),
                              3920: Sensor(3920, 2, "pm25", "µg/m³")},
)  # fmt: skip
NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


def _read(*lines: str, location_id: int | None = 2178, header: str = HEADER):
    return read_archive_csv([line + "\n" for line in (header, *lines)], source="f",
                            location_id=location_id)  # fmt: skip


def _row(sensor: int = 3919, when: str = "2023-02-22T01:00:00-07:00", value: str = "14.0",
         parameter: str = "pm10", units: str = "µg/m³", location: int = 2178) -> str:  # fmt: skip
    return (
        f"{location},{sensor},Del Norte-2178,{when},35.1353,-106.584702,{parameter},{units},{value}"
    )


# --- keys, scopes, job ids ----------------------------------------------------------------


def test_keys_follow_the_archive_layout_and_parse_back() -> None:
    key = archive_key(2178, date(2022, 5, 3))
    assert key == "records/csv.gz/locationid=2178/year=2022/month=05/location-2178-20220503.csv.gz"
    assert key.startswith(month_prefix(2178, 2022, 5))
    assert parse_key(key) == (2178, date(2022, 5, 3))
    assert parse_key(key.replace("location-2178", "loc-2178")) == (2178, date(2022, 5, 3))
    for other in (
        "records/csv.gz/locationid=2178/year=2022/month=05/location-17-20220503.csv.gz",
        "records/csv.gz/locationid=2178/year=2022/month=06/location-2178-20220503.csv.gz",
        "records/csv.gz/locationid=2178/year=2022/month=02/location-2178-20220230.csv.gz",
        "records/csv.gz/locationid=2178/year=2022/month=05/location-2178-20220503.csv",
        "records/parquet/locationid=2178/year=2022/month=05/location-2178-20220503.parquet",
    ):
        assert parse_key(other) is None, other


def test_scope_takes_one_kind_and_describes_itself_canonically() -> None:
    assert ArchiveScope(location_ids=(17, 2178, 17)).describe() == "locations=17,2178"
    assert ArchiveScope(country="us").describe() == "country=US"
    assert ArchiveScope(bbox=(-10.5, 40.0, 3.25, 44.0)).describe() == "bbox=-10.5,40,3.25,44"
    for bad in (
        {},
        {"location_ids": (1,), "country": "US"},
        {"country": "US", "bbox": (0, 0, 1, 1)},
    ):
        with pytest.raises(ValueError):
            ArchiveScope(**bad)


def test_job_id_is_stable_and_names_source_scope_and_days() -> None:
    scope = ArchiveScope(location_ids=(2178, 17))
    since, until = date(2024, 1, 1), date(2024, 1, 31)
    job = archive_job_id(scope, since, until)
    assert job == archive_job_id(ArchiveScope(location_ids=(17, 2178)), since, until)
    assert len(job) == 16
    others = {
        archive_job_id(ArchiveScope(location_ids=(2178,)), since, until),
        archive_job_id(scope, since, date(2024, 2, 1)),
        archive_job_id(scope, date(2024, 1, 2), until),
        archive_job_id(ArchiveScope(country="US"), since, until),
        backfill_job_id(
            [17, 2178], datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 31, tzinfo=UTC)
        ),
    }
    assert job not in others and len(others) == 5


# --- datetimes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2023-02-22T01:00:00-07:00", "2023-02-22T08:00:00+00:00"),
        ("2026-03-28 05:00:00+00", "2026-03-28T05:00:00+00:00"),
        ("2021-12-16 01:00:00+00:00", "2021-12-16T01:00:00+00:00"),
        ("2024-06-01 12:00:00+05:30", "2024-06-01T06:30:00+00:00"),
        ("2024-06-01T12:00:00+05:45", "2024-06-01T06:15:00+00:00"),
        ("2024-06-01T12:00:00Z", "2024-06-01T12:00:00+00:00"),
        (" 2024-06-01T12:00:00-03:30 ", "2024-06-01T15:30:00+00:00"),
    ],
)
def test_both_datetime_spellings_and_any_offset(text: str, utc: str) -> None:
    value = parse_archive_datetime(text)
    assert value.tzinfo is UTC and value == datetime.fromisoformat(utc)


@pytest.mark.parametrize("text", ["2024-06-01 12:00:00", "yesterday", "", "2024-02-30T00:00:00Z"])
def test_a_datetime_without_an_offset_or_impossible_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_archive_datetime(text)


# --- CSV by header name --------------------------------------------------------------------


def test_columns_are_read_by_name_in_any_order_with_extra_columns_ignored() -> None:
    header = "value,units,parameter,datetime,sensors_id,location_id,summary,coverage"
    parsed = _read("14.0,µg/m³,pm10,2023-02-22T01:00:00-07:00,3919,2178,,100",
                   "4.0,µg/m³,pm10,2023-02-22 02:00:00-07,3919,2178,{},99.5",
                   header=header)  # fmt: skip
    rows = parsed.sensors["3919"]
    assert (rows.sensor_id, rows.parameter, rows.units) == (3919, "pm10", "µg/m³")
    assert list(rows.values) == [14.0, 4.0]
    assert rows.ends == [datetime(2023, 2, 22, 8, tzinfo=UTC), datetime(2023, 2, 22, 9, tzinfo=UTC)]
    assert parsed.rows == 2 and not parsed.skipped


def test_the_column_tables_spellings_sensor_id_and_unit_are_accepted() -> None:
    header = "location_id,sensor_id,location,datetime,lat,lon,parameter,unit,value"
    assert _read(_row(), header=header).sensors["3919"].units == "µg/m³"


@pytest.mark.parametrize("drop", ["datetime", "sensors_id", "value", "parameter", "units"])
def test_a_header_without_a_required_column_fails_the_file_naming_it(drop: str) -> None:
    header = ",".join(c for c in HEADER.split(",") if c != drop)
    with pytest.raises(ArchiveFileError, match=f"no {drop} column"):
        _read(header=header)


def test_bad_rows_are_skipped_and_counted_with_samples_the_rest_kept() -> None:
    parsed = _read(
        _row(when="2023-02-22T01:00:00-07:00"),
        _row(when="2023-02-22T02:00:00-07:00", value="n/a"),
        _row(when="2023-02-22T03:00:00-07:00", value="inf"),
        _row(when="2023-02-22 04:00:00"),
        _row(when="not a date"),
        _row(sensor="x1"),  # type: ignore[arg-type]
        _row(location=17),
        _row(when="2023-02-22T05:00:00-07:00", parameter="pm25"),
        "2178,3919,short",
        "",
        _row(when="2023-02-22T06:00:00-07:00", value=""),
        _row(when="2023-02-22T07:00:00-07:00", value="9"),
    )
    assert parsed.skipped == {
        "bad value": 2, "bad datetime": 2, "bad sensors_id": 1, "row of another location": 1,
        "parameter or units change within the file": 1, "missing fields": 1,
    }  # fmt: skip
    assert parsed.rows == 11  # the blank line is no row
    rows = parsed.sensors["3919"]
    assert len(rows.ends) == 3
    assert rows.values[0] == 14.0 and rows.values[2] == 9.0
    assert rows.values[1] != rows.values[1]  # empty value: a null reading (NaN inside)
    assert any("'n/a'" in s for s in parsed.samples)
    assert all(s.startswith("f:") for s in parsed.samples)
    events = list(file_events(parsed, LOCATION, ingested_at=NOW))
    assert [e["value"] for e in events] == [14.0, None, 9.0]


def test_clean_blocks_and_row_by_row_reading_give_the_same_result() -> None:
    lines = [_row(sensor=s, when=f"2023-02-22T{h:02d}:00:00-07:00", value=f"{h}.5",
                  parameter=p) for s, p in ((3919, "pm10"), (3920, "pm25")) for h in range(1, 24)]  # fmt: skip
    clean = _read(*lines)
    messy = _read(*lines, _row(value="oops"))  # one bad row: every block is read row by row
    assert messy.skipped == {"bad value": 1}
    for key in ("3919", "3920"):
        assert clean.sensors[key].ends == messy.sensors[key].ends
        assert list(clean.sensors[key].values) == list(messy.sensors[key].values)


def test_rows_interleaved_by_time_are_grouped_by_sensor() -> None:
    lines = [_row(sensor=s, when=f"2023-02-22 {h:02d}:00:00-07", parameter=p)
             for h in range(1, 5) for s, p in ((3919, "pm10"), (3920, "pm25"))]  # fmt: skip
    parsed = _read(*lines)
    assert {k: len(v.ends) for k, v in parsed.sensors.items()} == {"3919": 4, "3920": 4}


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(ArchiveFileError, match="empty file"):
        read_archive_csv([])


# --- gzip ------------------------------------------------------------------------------------


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def test_gzip_is_streamed_in_any_chunking_with_members_and_a_bom() -> None:
    body = "\ufeff" + "\n".join([HEADER, _row(), _row(when="2023-02-22T02:00:00-07:00")]) + "\n"
    data = _gz(body[:100]) + _gz(body[100:]) + b"\0" * 8
    for size in (1, 7, 64, len(data)):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        text, raw = gunzip_text(chunks)
        parsed = read_archive_csv(text, location_id=2178)
        assert len(parsed.sensors["3919"].ends) == 2
        assert raw.compressed == len(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_gz(HEADER + "\n" + _row() * 50)[:40], "truncated gzip"),
        (b"<html>not an archive file</html>" * 10, "not gzip"),
        (b"", "empty file"),
        (_gz(HEADER + "\n") + b"trailing garbage", "not gzip"),
    ],
)
def test_broken_gzip_fails_the_file_with_a_reason(data: bytes, reason: str) -> None:
    text, _ = gunzip_text([data])
    with pytest.raises(ArchiveFileError, match=reason):
        read_archive_csv(text)


# --- periods -------------------------------------------------------------------------------


def _t(hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 1, 1, hour, minute, tzinfo=UTC)


def test_the_period_is_the_smallest_positive_gap_hourly_for_a_single_reading() -> None:
    assert sensor_interval([_t(1), _t(2), _t(3)]) == timedelta(hours=1)
    assert sensor_interval([_t(5), _t(1), _t(3), _t(4)]) == timedelta(hours=1)  # a gap, unsorted
    assert sensor_interval([_t(1), _t(1, 30), _t(3)]) == timedelta(minutes=30)
    assert sensor_interval([_t(1), _t(1), _t(7)]) == timedelta(hours=6)  # a duplicate is no gap
    assert sensor_interval([_t(1)]) == timedelta(hours=1)
    assert sensor_interval([_t(1), _t(1)]) == timedelta(hours=1)


def test_each_sensor_of_a_file_gets_its_own_period() -> None:
    lines = [_row(sensor=3919, when=f"2023-02-22T{h:02d}:00:00-07:00") for h in (1, 2, 4)]
    lines += [_row(sensor=3920, parameter="pm25", when=f"2023-02-22T01:{m:02d}:00-07:00")
              for m in (10, 20)]  # fmt: skip
    lines += [_row(sensor=3921, parameter="o3", units="ppm")]  # one row: hourly
    events = list(file_events(_read(*lines), LOCATION, ingested_at=NOW))
    periods = {
        e["sensor_id"]: datetime.fromisoformat(e["period_end"]) - datetime.fromisoformat(e["period_start"])
        for e in events
    }  # fmt: skip
    assert periods == {
        3919: timedelta(hours=1),
        3920: timedelta(minutes=10),
        3921: timedelta(hours=1),
    }


# --- events ----------------------------------------------------------------------------------


def test_events_carry_the_location_records_metadata_and_validate() -> None:
    parsed = _read(_row(), _row(when="2023-02-22T02:00:00-07:00", value="4.0"))
    events = list(file_events(parsed, LOCATION, ingested_at=NOW))
    for event in events:
        validate_event(event)
        assert event["ingest_mode"] == "backfill" and event["ingested_at"] == "2026-12-03T12:00:00Z"
        assert (event["timezone"], event["country_code"], event["provider"]) == (
            "America/Denver", "US", "AirNow")  # fmt: skip
        assert (event["parameter_id"], event["is_monitor"], event["is_mobile"]) == (1, True, False)
        assert (event["latitude"], event["longitude"]) == (35.1353, -106.584702)
    records = list(file_records(parsed, LOCATION, ingested_at=NOW))
    assert records == [(event_key(e), encode_event(e)) for e in events]


def test_records_equal_the_events_encoded_on_every_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The template shortcut, the mobile path (per-row coordinates) and the full build when
    the varying fields are not neighbours all give encode_records' bytes."""
    import dataclasses

    from ingestion import archive

    lines = [_row(sensor=s, parameter=p, when=f"2023-02-22T{h:02d}:00:00-07:00",
                  value="" if h == 3 else f"{h}.25")
             for s, p in ((3919, "pm10"), (3920, "pm25")) for h in range(1, 6)]  # fmt: skip
    mobile = dataclasses.replace(LOCATION, is_mobile=True)
    for location in (LOCATION, mobile):
        parsed = read_archive_csv([line + "\n" for line in (HEADER, *lines)], location_id=2178,
                                  coordinates=location.is_mobile)  # fmt: skip
        events = list(file_events(parsed, location, ingested_at=NOW))
        assert len(events) == 10 and events[2]["value"] is None
        expected = [(event_key(e), encode_event(e)) for e in events]
        assert list(file_records(parsed, location, ingested_at=NOW)) == expected
        monkeypatch.setattr(archive, "_VARYING", ("value", "period_end", "period_start"))
        assert list(file_records(parsed, location, ingested_at=NOW)) == expected
        monkeypatch.undo()


def test_a_sensor_missing_from_the_record_gets_its_parameter_id_from_its_units() -> None:
    lines = [_row(sensor=55, parameter="no2", units="ppb"),
             _row(sensor=56, parameter="co", units="ppm"),
             _row(sensor=57, parameter="pm1", units="µg/m³"),
             _row(sensor=58, parameter="pm1", units="µg/m³", when="2023-02-22T02:00:00-07:00"),
             _row(sensor=3920, parameter="pm25", units="ug/m3")]  # fmt: skip
    parsed = _read(*lines)
    events = list(file_events(parsed, LOCATION, ingested_at=NOW, source="f"))
    assert {(e["sensor_id"], e["parameter_id"], e["units"]) for e in events} == {
        (55, 15, "ppb"), (56, 8, "ppm"), (3920, 2, "µg/m³")}  # fmt: skip
    (reason,) = parsed.skipped
    assert reason.startswith("unknown sensor") and parsed.skipped[reason] == 2
    assert any("sensor 57 (pm1, µg/m³), 1 rows" in s for s in parsed.samples)


def test_a_file_disagreeing_with_the_record_keeps_its_own_parameter_and_units() -> None:
    """The value is in the file's units: its (parameter, units) pair decides the id; a pair
    without a known id is skipped rather than sent under the record's units."""
    parsed = _read(_row(sensor=3920, parameter="no2", units="ppb"),
                   _row(sensor=3919, parameter="pm10", units="ppm"))  # fmt: skip
    (event,) = file_events(parsed, LOCATION, ingested_at=NOW)
    assert (event["sensor_id"], event["parameter"], event["units"], event["parameter_id"]) == (
        3920, "no2", "ppb", 15)  # fmt: skip
    assert sum(parsed.skipped.values()) == 1


def test_make_events_equals_make_event_per_reading() -> None:
    sensor = LOCATION.sensors[3920]
    readings = [(v, _t(h) - timedelta(hours=1), _t(h)) for h, v in
                ((1, 1.5), (2, None), (3, -9999.0), (4, 7))]  # fmt: skip
    shared: dict = {}
    fast = list(make_events(mode="backfill", location=LOCATION, sensor=sensor,
                            readings=readings, ingested_at=NOW, formatted=shared))  # fmt: skip
    slow = [make_event(mode="backfill", location=LOCATION, sensor=sensor, value=v,
                       period_start=s, period_end=e, ingested_at=NOW) for v, s, e in readings]  # fmt: skip
    assert fast == slow
    fast[0]["value"] = 99  # events are independent copies
    assert [e["value"] for e in make_events(mode="backfill", location=LOCATION, sensor=sensor,
            readings=readings[:1], ingested_at=NOW)] == [1.5]  # fmt: skip


# --- summary and progress ----------------------------------------------------------------------


def test_nothing_read_only_when_something_failed_and_no_file_is_on_kafka() -> None:
    result = ArchiveResult(job_id="j", resumed=False)
    assert not result.nothing_read  # nothing listed, nothing failed
    result.failures.append(("k", "HTTP 403 AccessDenied: Access Denied"))
    assert result.nothing_read
    result.files_unchanged = 1
    assert not result.nothing_read
    result.files_unchanged, result.files_read = 0, 1
    assert not result.nothing_read
    assert any("skipped k: HTTP 403" in line for line in result.report())


def test_progress_shows_rows_megabytes_and_an_eta_only_once_used() -> None:
    quiet = io.StringIO()
    with Progress("backfill", unit="sensors", stream=quiet, line_every_s=0) as progress:
        progress.add_events(10)
    assert "MB" not in quiet.getvalue() and "rows" not in quiet.getvalue()
    assert "MB" not in progress.summary()
    loud = io.StringIO()
    with Progress("archive", total=4, unit="files", stream=loud, line_every_s=0) as progress:
        progress.bytes_total = 4_000_000
        progress.add_rows(100)
        progress.add_bytes(1_000_000)
        progress.advance()
        assert progress.eta_s is not None and progress.eta_s >= 0
    text = loud.getvalue()
    assert "1/4 files" in text and "100 rows" in text and "1.0/4.0 MB" in text and "ETA" in text
    assert "1.0 MB" in progress.summary()
