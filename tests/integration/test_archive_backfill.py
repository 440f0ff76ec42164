"""`aqi backfill --source archive` end to end: the mock archive and the mock OpenAQ API over
HTTP, the real `aqi` command in a subprocess, the session's real Kafka, the events read back.

Each test has its own AQ_HOME (ingestion state) and topic; the mocks run in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil
import pytest
from conftest import AQI, isolated_env, read_topic, run_aqi

from aqi.core.config import parse_bbox
from ingestion.archive import ArchiveScope, archive_job_id, archive_key
from ingestion.events import validate_event
from ingestion.state import IngestionState
from openaq_mock.api import MockOpenAQ
from openaq_mock.archive import ArchiveReading, MockArchive, synthetic_locations

pytestmark = pytest.mark.integration

FIRST, LAST = date(2024, 3, 1), date(2024, 3, 20)
WORLD = "-180,-90,180,90"


@pytest.fixture
def api() -> Iterator[MockOpenAQ]:
    with MockOpenAQ(fixtures=None, per_minute=100_000, per_hour=1_000_000) as server:
        yield server


def _serve(api: MockOpenAQ, count: int, **options) -> tuple[MockArchive, list[dict]]:
    locations = synthetic_locations(count, sensors=3)
    for obj in locations:
        api.add_location(obj)
    return MockArchive(locations, FIRST, options.pop("last", LAST), **options), locations


def _env(tmp_path: Path, services: dict, api: MockOpenAQ, archive: MockArchive, name: str = "aq"):
    return isolated_env(
        tmp_path / name,
        KAFKA_BOOTSTRAP_SERVERS=services["kafka"]["bootstrap_servers"],
        AQ_KAFKA_TOPIC=f"test.archive.{uuid.uuid4().hex[:8]}",
        OPENAQ_BASE_URL=api.base_url,
        AQ_ARCHIVE_BASE_URL=archive.base_url,
        OPENAQ_REQUESTS_PER_MINUTE="100000",
        OPENAQ_REQUESTS_PER_HOUR="1000000",
    )


def _args(scope: list[str], last: date = LAST, *more: str) -> list[str]:
    return ["backfill", "--source", "archive", *scope, "--since", FIRST.isoformat(),
            "--until", last.isoformat(), *more]  # fmt: skip


def _identity(value: dict) -> tuple:
    """An event without its ingestion time: what must match the archive's row."""
    return (value["location_id"], value["sensor_id"], value["parameter_id"], value["units"],
            value["period_start"], value["period_end"], value["value"])  # fmt: skip


def _expected(readings: list[ArchiveReading], locations: list[dict]) -> Counter:
    ids = {(obj["id"], s["id"]): s["parameter"]["id"] for obj in locations for s in obj["sensors"]}
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return Counter(
        (r.location_id, r.sensor_id, ids[(r.location_id, r.sensor_id)], r.units,
         r.period_start.strftime(fmt), r.period_end.strftime(fmt), r.value)
        for r in readings
    )  # fmt: skip


def _events(env: dict) -> list[dict]:
    return [value for _, _, _, value in read_topic(env["KAFKA_BOOTSTRAP_SERVERS"],
                                                    env["AQ_KAFKA_TOPIC"])]  # fmt: skip


def _file_of(value: dict, zones: dict[int, ZoneInfo]) -> str:
    """The day file an event came from: its location's local day of the period start."""
    start = datetime.fromisoformat(value["period_start"]).astimezone(zones[value["location_id"]])
    return archive_key(value["location_id"], start.date())


def test_a_backfill_sends_exactly_the_archives_rows_and_rereads_only_a_patched_file(
    tmp_path: Path, services: dict, api: MockOpenAQ
) -> None:
    archive, locations = _serve(api, 3, page_size=4)  # 4 keys a page: tokens followed
    with archive:
        env = _env(tmp_path, services, api, archive)
        ids = [str(obj["id"]) for obj in locations]
        args = _args(["--location", *ids])
        first = run_aqi(args, env, tmp_path)
        assert first.returncode == 0, first.stderr
        files = len(archive.keys())
        assert f"{files} files listed, {files} read;" in first.stdout
        expected = _expected(archive.readings(), locations)
        events = _events(env)
        assert Counter(_identity(e) for e in events) == expected  # every row once, nothing else
        for event in events[:100]:
            validate_event(event)
            assert event["ingest_mode"] == "backfill"
        zones = {obj["id"]: obj["timezone"] for obj in locations}
        assert all(e["timezone"] == zones[e["location_id"]] for e in events)
        listings = [r for r in archive.requests if r.path == "/"]
        assert any("continuation-token" in r.query for r in listings)

        archive.reset_log()
        again = run_aqi(args, env, tmp_path)
        assert again.returncode == 0, again.stderr
        assert f"{files} files listed, {files} already read, 0 read;" in again.stdout
        assert archive.file_requests() == [] and len(_events(env)) == len(events)

        key = archive.keys()[7]
        archive.patch(key)
        archive.reset_log()
        patched = run_aqi(args, env, tmp_path)
        assert patched.returncode == 0, patched.stderr
        assert "1 read (1 patched since read)" in patched.stdout
        assert archive.file_requests() == [key]
        # the new version, whole, is sent once more; nothing else is
        after = Counter(_identity(e) for e in _events(env))
        assert after - Counter(_identity(e) for e in events) == _expected(
            archive.readings(key), locations
        )
        job = archive_job_id(ArchiveScope(location_ids=tuple(map(int, ids))), FIRST, LAST)
        state = IngestionState(Path(env["AQ_HOME"]) / "state")
        assert state.archive_files_read(job)[key] == (
            archive.etag(key).strip('"'), archive.size(key))  # fmt: skip
        state.close()


def test_killed_mid_run_and_resumed_equals_an_uninterrupted_run(
    tmp_path: Path, services: dict, api: MockOpenAQ
) -> None:
    archive, locations = _serve(api, 6)
    zones = {obj["id"]: ZoneInfo(obj["timezone"]) for obj in locations}
    with archive:
        env = _env(tmp_path, services, api, archive)
        args = _args(["--bbox", WORLD], LAST, "--workers", "2")
        job = archive_job_id(ArchiveScope(bbox=parse_bbox("--bbox", WORLD)), FIRST, LAST)
        state_dir = Path(env["AQ_HOME"]) / "state"
        archive.hold_files(after=40)  # the run cannot end before the kill
        proc = subprocess.Popen([AQI, *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        marked: dict = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(marked) < 5:
            if (state_dir / "ingestion.sqlite").exists():
                state = IngestionState(state_dir)
                marked = state.archive_files_read(job)
                state.close()
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before the kill: {proc.communicate()}"
        assert len(marked) >= 5, "no file was marked read in time"
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        state = IngestionState(state_dir)
        marked = state.archive_files_read(job)
        state.close()
        before = _events(env)
        in_flight = {_file_of(e, zones) for e in before} - set(marked)
        assert 5 <= len(marked) <= 40 and in_flight <= set(archive.keys())

        archive.release()  # the orphaned readers notice their parent is gone and leave
        gone_by = time.monotonic() + 30
        while time.monotonic() < gone_by and any(c.is_running() and c.status() != "zombie"
                                                 for c in children):  # fmt: skip
            time.sleep(0.1)
        alive = [c.pid for c in children if c.is_running() and c.status() != "zombie"]
        for child in children:
            if child.is_running():
                child.kill()
        assert alive == [], "reader processes outlived a killed backfill"

        archive.reset_log()
        rerun = run_aqi(args, env, tmp_path, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert f"resumed archive job {job}" in rerun.stdout
        # the rerun reads every file but those marked read: nothing acknowledged is read again
        assert sorted(archive.file_requests()) == sorted(set(archive.keys()) - set(marked))
        resumed = Counter(_identity(e) for e in _events(env))
        expected = _expected(archive.readings(), locations)
        assert set(resumed) == set(expected)
        twice = {
            _file_of(e, zones)
            for e in _events(env)
            if resumed[_identity(e)] > 1
        }  # fmt: skip
        assert twice <= in_flight, "a file marked read before the crash was sent again"

        other = _env(tmp_path, services, api, archive, name="aq-uninterrupted")
        whole = run_aqi(args, other, tmp_path, timeout=300)
        assert whole.returncode == 0, whole.stderr
        uninterrupted = Counter(_identity(e) for e in _events(other))
        assert uninterrupted == expected and set(resumed) == set(uninterrupted)


def test_broken_files_are_reported_skipped_and_retried_the_rest_delivered(
    tmp_path: Path, services: dict, api: MockOpenAQ
) -> None:
    archive, locations = _serve(api, 2, last=date(2024, 3, 10))
    last = date(2024, 3, 10)
    with archive:
        keys = archive.keys()
        broken = {keys[1]: "truncated", keys[4]: "garbage", keys[9]: "bad-header"}
        for key, kind in broken.items():
            archive.corrupt(key, kind)
        env = _env(tmp_path, services, api, archive)
        args = _args(["--country", locations[0]["country"]["code"]], last)
        first = run_aqi(args, env, tmp_path)
        assert first.returncode == 0, first.stderr
        mine = [k for k in keys if f"locationid={locations[0]['id']}/" in k]
        bad_mine = {k: v for k, v in broken.items() if k in mine}
        assert bad_mine, "no broken file in the country's location"
        for key, reason in (
            (k, {"truncated": "truncated gzip", "garbage": "not gzip",
                 "bad-header": "no datetime column"}[v])
            for k, v in bad_mine.items()
        ):  # fmt: skip
            assert f"backfill: skipped {key}: {reason}" in first.stderr
        assert "Traceback" not in first.stderr
        good = [k for k in mine if k not in broken]
        expected = _expected([r for k in good for r in archive.readings(k)], locations)
        assert Counter(_identity(e) for e in _events(env)) == expected
        assert f"{len(good)} read, {len(bad_mine)} skipped" in first.stdout

        archive.reset_log()
        retried = run_aqi(args, env, tmp_path)  # the broken files are tried again
        assert retried.returncode == 0, retried.stderr
        assert sorted(archive.file_requests()) == sorted(bad_mine)
        for key in bad_mine:
            archive.patch(key)  # the archive repairs them
        repaired = run_aqi(args, env, tmp_path)
        assert repaired.returncode == 0, repaired.stderr
        everything = _expected([r for k in mine for r in archive.readings(k)], locations)
        assert Counter(_identity(e) for e in _events(env)) == everything


def test_nothing_readable_fails_with_one_line(
    tmp_path: Path, services: dict, api: MockOpenAQ
) -> None:
    archive, locations = _serve(api, 1, last=date(2024, 3, 3))
    with archive:
        prefix = f"records/csv.gz/locationid={locations[0]['id']}/year=2024/month=03/"
        archive.fail(prefix, 403, times=None)
        env = _env(tmp_path, services, api, archive)
        result = run_aqi(_args(["--location", str(locations[0]["id"])], date(2024, 3, 3)),
                         env, tmp_path)  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert f"skipped listing {prefix}: HTTP 403 AccessDenied: Access Denied" in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("aqi: error: nothing could be read from the archive at ")
        assert "Traceback" not in result.stderr
