"""Ingestion end to end: the real `aqi` commands, the mock OpenAQ API over HTTP, the real broker.

Each test runs `aqi` in a subprocess with its own AQ_HOME (ingestion state) and its own
topic on the session's embedded broker, used as an external Kafka.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import AQI, isolated_env, read_topic, run_aqi

from aqi.core.topics import end_offsets
from ingestion.events import validate_event
from openaq_mock.api import MockOpenAQ

pytestmark = pytest.mark.integration

KEY = "test-key-7f3a9c"
LOCATION_ID = 990_000
SENSOR_ID = 990_001


def _env(tmp_path: Path, services: dict, mock: MockOpenAQ, **extra: str) -> dict[str, str]:
    return isolated_env(
        tmp_path / "aq",
        KAFKA_BOOTSTRAP_SERVERS=services["kafka"]["bootstrap_servers"],
        AQ_KAFKA_TOPIC=f"test.ingest.{uuid.uuid4().hex[:8]}",
        OPENAQ_BASE_URL=mock.base_url,
        OPENAQ_API_KEY=KEY,
        **extra,
    )


def _one_sensor_location() -> dict:
    return {
        "id": LOCATION_ID,
        "name": "Backfill test site",
        "locality": "Testville",
        "timezone": "Europe/Paris",
        "country": {"id": 22, "code": "FR", "name": "France"},
        "provider": {"id": 1, "name": "Test provider"},
        "isMobile": False,
        "isMonitor": True,
        "coordinates": {"latitude": 48.85, "longitude": 2.35},
        "sensors": [
            {
                "id": SENSOR_ID,
                "name": "pm25 µg/m³",
                "parameter": {"id": 2, "name": "pm25", "units": "µg/m³", "displayName": "PM2.5"},
            }
        ],
    }


def test_backfill_survives_kill_9_with_429s_and_a_500(tmp_path: Path, services: dict) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with MockOpenAQ(api_key=KEY, fail_with_429_every=4, reset_after_429=1) as mock:
        mock.add_location(_one_sensor_location())
        generated = mock.generate_measurements(SENSOR_ID, start, 2500, seed=7)
        expected_ends = {m["period"]["datetimeTo"]["utc"] for m in generated}
        assert len(expected_ends) == 2500
        mock.fail_once(500, path="/measurements")
        # hold every measurements answer for a moment so the kill lands mid-run
        mock.inject(delay=1.5, path="/measurements", times=3)
        env = _env(tmp_path, services, mock)
        bootstrap, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["AQ_KAFKA_TOPIC"]
        args = ["backfill", "--location", str(LOCATION_ID), "--since", "2023-12-31",
                "--until", "2024-06-01"]  # fmt: skip

        proc = subprocess.Popen([AQI, *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(end_offsets(bootstrap, topic).values()) >= 1000:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the backfill finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = sum(end_offsets(bootstrap, topic).values())
        assert 1000 <= killed_at < 2500

        # the rerun meets a 429 whatever its number of requests (whether a periodic one falls
        # in it depends on where the kill landed), and its pause must be shown as it happens
        mock.inject(429, headers={"x-ratelimit-reset": "1"}, path="/measurements")
        rerun = run_aqi(args, env, tmp_path, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert "resumed job" in rerun.stdout
        assert "waiting" in rerun.stderr

        records = read_topic(bootstrap, topic)
        ends = Counter(value["period_end"] for _, _, _, value in records)
        assert set(ends) == expected_ends, "a measurement is missing"
        duplicates = sum(n - 1 for n in ends.values())
        assert duplicates <= 1000, f"{duplicates} re-sent: more than the page in flight"
        for _, _, key, value in records[:50]:
            validate_event(value)
            assert key == str(SENSOR_ID).encode()
            assert value["ingest_mode"] == "backfill" and value["timezone"] == "Europe/Paris"

        assert mock.max_requests_in_window(60) <= 60
        assert mock.requests_before_reset() == 0
        statuses = Counter(r.status for r in mock.requests)
        assert statuses[429] >= 1 and statuses[500] == 1

        again = run_aqi(args, env, tmp_path)
        assert again.returncode == 0 and "0 events sent this run" in again.stdout
        assert sum(end_offsets(bootstrap, topic).values()) == len(records)


def test_collect_once_twice_sends_nothing_the_second_time(tmp_path: Path, services: dict) -> None:
    with MockOpenAQ(api_key=KEY) as mock:
        env = _env(tmp_path, services, mock)
        first = run_aqi(["collect", "--once", "--location", "2178"], env, tmp_path)
        assert first.returncode == 0, first.stderr
        records = read_topic(env["KAFKA_BOOTSTRAP_SERVERS"], env["AQ_KAFKA_TOPIC"])
        assert len(records) >= 4
        for _, _, key, value in records:
            validate_event(value)
            assert value["ingest_mode"] == "live" and value["location_id"] == 2178
            assert key == str(value["sensor_id"]).encode()
        assert f"{len(records)} new sent" in first.stdout

        second = run_aqi(["collect", "--once", "--location", "2178"], env, tmp_path)
        assert second.returncode == 0, second.stderr
        assert "0 new sent" in second.stdout
        assert len(read_topic(env["KAFKA_BOOTSTRAP_SERVERS"], env["AQ_KAFKA_TOPIC"])) == len(
            records
        )


def test_collect_skips_a_failing_location_and_a_malformed_reading(
    tmp_path: Path, services: dict
) -> None:
    """One location answering 404 and one malformed reading: the cycle goes on, counted."""
    import requests

    with MockOpenAQ(api_key=KEY) as mock:
        mock.add_location(_one_sensor_location())
        env = _env(tmp_path, services, mock)
        real = requests.get(f"{mock.base_url}/locations/2178/latest", headers={"X-API-Key": KEY},
                            timeout=10).json()  # fmt: skip
        bad = {**real["results"][0], "sensorsId": "not-a-number"}
        body = {**real, "results": [*real["results"], bad, None]}
        mock.inject(200, body=body, path="/locations/2178/latest")
        mock.inject(404, path=f"/locations/{LOCATION_ID}/latest")
        result = run_aqi(["collect", "--once", "--location", f"2178,{LOCATION_ID}"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    records = read_topic(env["KAFKA_BOOTSTRAP_SERVERS"], env["AQ_KAFKA_TOPIC"])
    sent = {(v["sensor_id"], v["period_end"]) for *_, v in records}
    # the default parameters (pm25, pm10, o3, no2, so2, co): not the NO and NOx sensors
    wanted = {3916, 3917, 3918, 3919, 3920, 25227}
    expected = [r for r in real["results"] if r["sensorsId"] in wanted]
    assert len(records) == len(sent) == len(expected) == 6 < len(real["results"])
    assert {v["location_id"] for *_, v in records} == {2178}
    assert "1 location(s) failed, 2 malformed reading(s) skipped" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["collect", "--once", "--location", "2178"],
        ["backfill", "--location", "2178", "--since", "2024-01-01", "--until", "2024-01-02"],
    ],
)
def test_bad_key_is_one_line_and_no_traceback(tmp_path: Path, services: dict, args) -> None:
    with MockOpenAQ(api_key="the-right-key") as mock:
        env = _env(tmp_path, services, mock)
        env["OPENAQ_API_KEY"] = "a-wrong-key-123"
        result = run_aqi(args, env, tmp_path)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("aqi: error:")]
        assert len(errors) == 1 and "OPENAQ_API_KEY" in errors[0], result.stderr
        assert "a-wrong-key-123" not in result.stderr + result.stdout
        assert len([r for r in mock.requests if r.status == 401]) == 1  # no retries


def test_replay_fixtures_puts_every_recorded_reading_on_kafka(
    tmp_path: Path, services: dict
) -> None:
    from ingestion.fixtures import DEFAULT_FIXTURES_DIR
    from ingestion.replay import fixture_events

    with MockOpenAQ() as mock:
        env = _env(tmp_path, services, mock)
    result = run_aqi(["replay", "--fixtures", str(DEFAULT_FIXTURES_DIR)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    expected, report = fixture_events(DEFAULT_FIXTURES_DIR)
    records = read_topic(env["KAFKA_BOOTSTRAP_SERVERS"], env["AQ_KAFKA_TOPIC"])
    assert len(records) == len(expected) == report.events
    assert f"replay: {report.events} events" in result.stdout
    got = {(v["sensor_id"], v["period_end"]): v for _, _, _, v in records}
    for event in expected:
        sent = got[(event["sensor_id"], event["period_end"])]
        validate_event(sent)
        assert {k: v for k, v in sent.items() if k != "ingested_at"} == {
            k: v for k, v in event.items() if k != "ingested_at"
        }


def test_replay_simulate_is_valid_and_deterministic(tmp_path: Path, services: dict) -> None:
    from ingestion.simulator import SimulationConfig, simulate

    with MockOpenAQ() as mock:
        env = _env(tmp_path, services, mock)
    before = datetime.now(UTC)
    result = run_aqi(
        ["replay", "--simulate", "--locations", "3", "--days", "0.5", "--seed", "5"], env, tmp_path
    )
    after = datetime.now(UTC)
    assert result.returncode == 0, result.stderr
    records = read_topic(env["KAFKA_BOOTSTRAP_SERVERS"], env["AQ_KAFKA_TOPIC"])
    assert records
    for _, _, key, value in records:
        validate_event(value)
        assert value["ingest_mode"] == "simulate" and key == str(value["sensor_id"]).encode()
    # the same seed gives the same readings. The span ends at the current hour (which may have
    # turned while the command ran: one of the two hours must match) and holds what had been
    # delivered by the time it ran: everything delivered before it started, nothing after.
    key = lambda e: (e["sensor_id"], e["period_end"], e["ingested_at"], e["value"])
    got = Counter(key(v) for _, _, _, v in records)
    assert max(datetime.fromisoformat(k[2]) for k in got) <= after
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    matches = []
    for end in (hour, hour - timedelta(hours=1)):
        full = [key(e) for e in simulate(SimulationConfig(locations=3, days=0.5, seed=5, end=end))]
        delivered = Counter(k for k in full if datetime.fromisoformat(k[2]) <= before)
        matches.append(not (got - Counter(full)) and not (delivered - got))
    assert any(matches)
    assert f"{len(records)} events" in result.stdout


def test_collect_world_reads_in_bulk_and_restarts_send_nothing_twice(
    tmp_path: Path, services: dict
) -> None:
    """`aqi collect --world` on the mock's world profile (a small one): one cycle costs the
    location pages plus one page per 1,000 sensors of each parameter id; what reaches Kafka
    is exactly what the world published at each cycle, each reading once across restarts."""
    import math

    from openaq_mock.clock import VirtualClock
    from openaq_mock.world import World, WorldProfile

    world = World(WorldProfile(locations=2500, seed=3))
    clock = VirtualClock(datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp())
    with MockOpenAQ(None, api_key=KEY, world=world, clock=clock.time) as mock:
        # the client's own budget is on the real clock: wide enough not to wait here
        env = _env(tmp_path, services, mock, OPENAQ_REQUESTS_PER_MINUTE="600")
        ids = sorted(world.parameter_ids(("pm25", "pm10", "o3", "no2", "so2", "co")))
        pages = sum(math.ceil(len(world.latest(p, clock.time())) / 1000) for p in ids)
        expected: set[tuple[int, str]] = set()
        for run in range(3):
            if run == 2:  # a restart with nothing new published: nothing sent
                stale = {(r["sensorsId"], r["datetime"]["utc"]) for p in ids
                         for r in world.latest(p, clock.time())}  # fmt: skip
                assert stale <= expected
            else:
                expected |= {(r["sensorsId"], r["datetime"]["utc"]) for p in ids
                             for r in world.latest(p, clock.time())}  # fmt: skip
            mock.reset_log()
            result = run_aqi(["collect", "--world", "--once"], env, tmp_path)
            assert result.returncode == 0, result.stderr
            counts = mock.request_counts()
            assert counts.get("/v3/parameters/{id}/latest") == pages, counts
            assert counts.get("/v3/locations") == 3  # 2,500 locations, 1,000 a page
            assert sum(counts.values()) == pages + 3
            if run == 0:
                clock.advance(3600)  # an hour later: every live sensor has a new reading
        records = read_topic(env["KAFKA_BOOTSTRAP_SERVERS"], env["AQ_KAFKA_TOPIC"])
    sent = [(v["sensor_id"], v["period_end"]) for *_, v in records]
    assert len(sent) == len(set(sent)), "a reading was sent twice"
    assert set(sent) == expected
    assert "0 new sent" in result.stdout
    for *_, value in records[:100]:
        validate_event(value)
        assert value["ingest_mode"] == "live"
