"""The mock archive over real HTTP (S3's ListObjectsV2 and GET, its injections), and the
archive client against it: pages and tokens, retries, reasons."""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import partial

import pytest
import requests

from ingestion.archive import (
    ArchiveFileError,
    ArchiveObject,
    ArchiveStore,
    file_events,
    gunzip_text,
    month_prefix,
    parse_key,
    read_archive_csv,
)
from ingestion.events import location_from_api
from openaq_mock.archive import MockArchive, synthetic_locations

pytestmark = pytest.mark.integration

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
FIRST, LAST = date(2024, 3, 1), date(2024, 4, 30)  # spans Denver's and Paris' DST changes
LOCATIONS = synthetic_locations(3, sensors=3)


@pytest.fixture
def mock() -> Iterator[MockArchive]:
    with MockArchive(LOCATIONS, FIRST, LAST, missing_percent=5) as archive:
        yield archive


def _list(mock: MockArchive, **params: str) -> ET.Element:
    response = requests.get(mock.base_url + "/", params={"list-type": "2", **params}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/xml"
    return ET.fromstring(response.content)


def _text(root: ET.Element, name: str) -> str | None:
    element = root.find(NS + name)
    return None if element is None else element.text


def _store(mock: MockArchive, **options) -> ArchiveStore:
    return ArchiveStore(mock.base_url, backoff_base_s=0.001, backoff_max_s=0.001,
                        sleep=lambda s: None, **options)  # fmt: skip


def _object(key: str) -> ArchiveObject:
    location_id, day = parse_key(key)
    return ArchiveObject(key, "", 0, location_id, day)


# --- content ---------------------------------------------------------------------------------


def test_files_are_deterministic_and_lazily_made(mock: MockArchive) -> None:
    twin = MockArchive(LOCATIONS, FIRST, LAST, missing_percent=5)
    assert twin.keys() == mock.keys()
    key = mock.keys()[10]
    assert twin.content(key) == mock.content(key)
    days = (LAST - FIRST).days + 1
    missing = len(LOCATIONS) * days - len(mock.keys())
    assert 0 < missing < 0.15 * len(LOCATIONS) * days
    other = MockArchive(LOCATIONS, FIRST, LAST, seed=1, missing_percent=5)
    common = sorted(set(other.keys()) & set(mock.keys()))
    assert common and all(other.content(k) != mock.content(k) for k in common[:5])


def test_files_hold_every_periods_end_of_the_local_day_in_local_time(mock: MockArchive) -> None:
    location = location_from_api(LOCATIONS[0])  # America/Denver
    by_day = {parse_key(k)[1]: k for k in mock.keys(month_prefix(location.id, 2024, 3))}
    for day, hours in ((date(2024, 3, 5), 24), (date(2024, 3, 10), 23)):  # 10 March: DST
        key = by_day[day]
        text = gzip.decompress(mock.content(key)).decode()
        lines = text.splitlines()
        assert lines[0].startswith(
            "location_id,sensors_id,location,datetime,lat,lon,parameter,units,value"
        )
        assert f"{day}T01:00:00-07:00" in text or f"{day} 01:00:00-07" in text
        readings = mock.readings(key)
        per_sensor = {}
        for r in readings:
            per_sensor.setdefault(r.sensor_id, []).append(r)
        assert max(len(v) for v in per_sensor.values()) == hours
        midnight = datetime(day.year, day.month, day.day, 7, tzinfo=UTC)
        assert all(midnight < r.period_end <= midnight + timedelta(hours=hours) for r in readings)
        parsed = read_archive_csv(gunzip_text([mock.content(key)])[0], location_id=location.id)
        events = list(file_events(parsed, location))
        assert {(e["sensor_id"], e["period_end"], e["value"]) for e in events} == {
            (r.sensor_id, r.period_end.strftime("%Y-%m-%dT%H:%M:%SZ"), r.value) for r in readings
        }


def test_some_files_have_extra_columns_and_some_the_space_spelling(mock: MockArchive) -> None:
    headers, spaced, keys = set(), 0, mock.keys()
    for key in keys:
        lines = gzip.decompress(mock.content(key)).decode().splitlines()
        headers.add(lines[0])
        spaced += " " in lines[1].split(",")[3]
    assert len(headers) == 2 and any(h.endswith(",summary,coverage") for h in headers)
    assert 0 < spaced < len(keys) / 2


def test_a_sensor_period_other_than_an_hour() -> None:
    location = synthetic_locations(1, sensors=2)[0]
    half_hourly = location["sensors"][1]["id"]
    archive = MockArchive([location], FIRST, FIRST, missing_percent=0, gap_percent=0,
                          intervals={half_hourly: timedelta(minutes=30)})  # fmt: skip
    (key,) = archive.keys()
    counts = {}
    for r in archive.readings(key):
        counts[r.sensor_id] = counts.get(r.sensor_id, 0) + 1
        assert r.period_end - r.period_start == (
            timedelta(minutes=30) if r.sensor_id == half_hourly else timedelta(hours=1))  # fmt: skip
    assert counts[half_hourly] == 48


# --- ListObjectsV2 ---------------------------------------------------------------------------


def test_listing_pages_follow_continuation_tokens(mock: MockArchive) -> None:
    prefix = month_prefix(LOCATIONS[1]["id"], 2024, 3)
    expected = mock.keys(prefix)
    seen, token, pages = [], None, 0
    while True:
        params = {"prefix": prefix, "max-keys": "7"}
        if token:
            params["continuation-token"] = token
        root = _list(mock, **params)
        assert root.tag == NS + "ListBucketResult"
        contents = root.findall(NS + "Contents")
        assert _text(root, "KeyCount") == str(len(contents)) and _text(root, "MaxKeys") == "7"
        for item in contents:
            key = item.find(NS + "Key").text
            data = mock.content(key)
            assert item.find(NS + "ETag").text == f'"{hashlib.md5(data).hexdigest()}"'
            assert item.find(NS + "Size").text == str(len(data))
            assert item.find(NS + "StorageClass").text == "STANDARD"
            assert item.find(NS + "LastModified").text.endswith(".000Z")
            seen.append(key)
        pages += 1
        token = _text(root, "NextContinuationToken")
        assert (_text(root, "IsTruncated") == "true") == (token is not None)
        if token is None:
            break
        assert prefix not in token  # opaque
    assert seen == expected and pages == -(-len(expected) // 7)


def test_listing_defaults_caps_and_start_after(mock: MockArchive) -> None:
    root = _list(mock, prefix="records/csv.gz/", **{"max-keys": "5000"})
    assert _text(root, "MaxKeys") == "1000" and _text(root, "IsTruncated") == "false"
    assert len(root.findall(NS + "Contents")) == len(mock.keys())
    middle = mock.keys()[20]
    root = _list(mock, prefix="records/", **{"start-after": middle})
    assert [c.find(NS + "Key").text for c in root.findall(NS + "Contents")] == mock.keys()[21:]
    assert _text(_list(mock, prefix="records/csv.gz/locationid=1/"), "KeyCount") == "0"
    bad = requests.get(mock.base_url + "/", params={"list-type": "2", "continuation-token": "x"},
                       timeout=10)  # fmt: skip
    assert bad.status_code == 400 and b"InvalidArgument" in bad.content
    small = MockArchive(LOCATIONS, FIRST, LAST, page_size=3).start()
    try:
        root = _list(small, prefix="records/")
        assert _text(root, "MaxKeys") == "3" and _text(root, "IsTruncated") == "true"
    finally:
        small.stop()


def test_get_serves_bytes_with_etag_or_a_no_such_key_error(mock: MockArchive) -> None:
    key = mock.keys()[0]
    response = requests.get(f"{mock.base_url}/{key}", timeout=10)
    assert response.status_code == 200 and response.content == mock.content(key)
    assert response.headers["ETag"] == mock.etag(key)
    assert response.headers["Content-Length"] == str(len(response.content))
    assert response.headers["Content-Type"] == "application/octet-stream"
    missing = requests.get(f"{mock.base_url}/{key.replace('2024', '2019')}", timeout=10)
    assert missing.status_code == 404
    assert ET.fromstring(missing.content).find("Code").text == "NoSuchKey"
    assert [r.status for r in mock.wait_for_log(lambda log: len(log) >= 2)] == [200, 404]


# --- injections ------------------------------------------------------------------------------


def test_patch_makes_a_new_version_with_more_or_corrected_rows(mock: MockArchive) -> None:
    key = mock.keys()[3]
    before, etag, size = mock.readings(key), mock.etag(key), mock.size(key)
    new_etag = mock.patch(key)
    after = mock.readings(key)
    assert new_etag != etag and mock.etag(key) == new_etag and mock.size(key) != size
    assert len(after) >= len(before)
    assert {(r.sensor_id, r.period_end, r.value) for r in after} != {
        (r.sensor_id, r.period_end, r.value) for r in before}  # fmt: skip


@pytest.mark.parametrize(("kind", "reason"), [
    ("truncated", "truncated gzip"), ("garbage", "not gzip"), ("bad-header", "no datetime column")
])  # fmt: skip
def test_corrupt_files_fail_with_their_reason(mock: MockArchive, kind: str, reason: str) -> None:
    key = mock.keys()[4]
    etag = mock.etag(key)
    assert mock.corrupt(key, kind) != etag
    with pytest.raises(ArchiveFileError, match=reason):
        _store(mock).read(_object(key), read_archive_csv)
    mock.patch(key)  # a patch repairs it
    assert _store(mock).read(_object(key), read_archive_csv).rows == len(mock.readings(key))


def test_a_cut_connection_is_retried_and_reported_when_it_persists(mock: MockArchive) -> None:
    key = mock.keys()[5]
    mock.cut(key, times=2)
    waits = []
    store = ArchiveStore(mock.base_url, backoff_base_s=0.001, sleep=waits.append, max_retries=3)
    parsed = store.read(_object(key), read_archive_csv)
    assert parsed.rows == len(mock.readings(key)) and len(waits) == 2
    assert parsed.etag == mock.etag(key).strip('"') and parsed.bytes == mock.size(key)
    mock.cut(key)
    with pytest.raises(ArchiveFileError, match="connection cut mid-body.*3 retries failed"):
        store.read(_object(key), read_archive_csv)

    def cut(log: list) -> list:
        return [r for r in log if r.status == 200 and r.sent < mock.size(key)]

    assert len(cut(mock.wait_for_log(lambda log: len(cut(log)) >= 6))) == 2 + 4


def test_listing_retries_5xx_and_reports_403_and_404(mock: MockArchive) -> None:
    prefix = month_prefix(LOCATIONS[0]["id"], 2024, 4)
    mock.fail(prefix, 503, times=2)
    waits = []
    store = ArchiveStore(mock.base_url, backoff_base_s=0.001, sleep=waits.append, max_keys=4)
    assert [o.key for o in store.list_prefix(prefix)] == mock.keys(prefix)
    assert len(waits) == 2
    mock.fail(prefix, 403, times=None)
    with pytest.raises(ArchiveFileError, match="HTTP 403 AccessDenied: Access Denied"):
        store.list_prefix(prefix)
    key = mock.keys()[0]
    mock.fail(key, 404)
    with pytest.raises(ArchiveFileError, match="HTTP 404 NoSuchKey"):
        store.read(_object(key), read_archive_csv)
    mock.fail(key, 500, times=None)
    with pytest.raises(ArchiveFileError, match="HTTP 500; 5 retries failed"):
        store.read(_object(key), read_archive_csv)


def test_an_unreachable_archive_is_a_reason_not_a_traceback() -> None:
    store = ArchiveStore("http://127.0.0.1:9", max_retries=1, sleep=lambda s: None, timeout_s=2)
    with pytest.raises(ArchiveFileError, match="ConnectionError; 1 retries failed"):
        store.list_prefix("records/")


def test_held_downloads_wait_for_release(mock: MockArchive) -> None:
    keys = mock.keys()[:3]
    mock.hold_files(after=1)
    store = _store(mock)
    read = partial(read_archive_csv)
    assert store.read(_object(keys[0]), read).rows > 0
    done = threading.Event()
    thread = threading.Thread(target=lambda: (store.read(_object(keys[1]), read), done.set()))
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and mock.held < 1:  # the request arrived and waits
        time.sleep(0.01)
    assert mock.held == 1 and not done.is_set(), "a held download went through"
    mock.release()
    assert done.wait(10)
    thread.join(10)
    assert mock.held == 0
