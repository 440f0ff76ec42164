"""The live collector against the in-process mock API: bulk and per-location reads, each
reading sent once across restarts, periods from the spacing of readings, bounded state, the
budget arithmetic. Kafka is stood in by a recorder (the real-broker runs are in
tests/integration/test_ingestion.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock

from ingestion.collector import (
    LOCATIONS_REFRESH_S,
    Budget,
    Collector,
    Targets,
    load_catalog,
    run_collector,
)
from ingestion.openaq_client import OpenAQClient
from ingestion.rate_limit import RateLimiter
from ingestion.state import IngestionState, LiveSensor
from openaq_mock.api import MockOpenAQ

T0 = datetime(2026, 1, 5, tzinfo=UTC)
PM25 = {"id": 2, "name": "pm25", "units": "µg/m³", "displayName": "PM2.5"}
TEMP = {"id": 100, "name": "temperature", "units": "c", "displayName": "T"}


class Recorder:
    """Stands in for EventProducer: keeps the events, acknowledges at once."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send(self, events: Iterable[dict[str, Any]], then: Callable[[], None] | None = None):
        batch = list(events)
        self.events.extend(batch)
        if then is not None:
            then()
        return len(batch)

    def flush(self) -> None:
        pass


def _location(location_id: int, sensors: list[tuple[int, dict]], country: str = "FR") -> dict:
    return {
        "id": location_id,
        "name": f"site {location_id}",
        "timezone": "Europe/Paris",
        "country": {"id": 22, "code": country, "name": country},
        "provider": {"id": 1, "name": "Test"},
        "isMobile": False,
        "isMonitor": True,
        "coordinates": {"latitude": 48.85, "longitude": 2.35},
        "sensors": [{"id": sid, "name": p["name"], "parameter": p} for sid, p in sensors],
    }


@pytest.fixture
def mock() -> MockOpenAQ:
    with MockOpenAQ(None) as server:
        server.add_location(_location(10, [(101, PM25), (102, TEMP)]))
        server.add_location(_location(20, [(201, PM25)], country="DE"))
        server.add_location(_location(30, [(301, PM25)], country="DE"))
        for sensor in (101, 102, 201, 301):
            server.generate_measurements(sensor, T0, 3, seed=sensor)
        yield server


def _client(mock: MockOpenAQ, tmp_path: Path) -> OpenAQClient:
    limiter = RateLimiter(tmp_path, "id", per_minute=10_000, per_hour=100_000)
    return OpenAQClient(mock.base_url, None, limiter, backoff_base_s=0.01, backoff_max_s=0.02)


def _collector(mock: MockOpenAQ, tmp_path: Path, producer: Recorder) -> Collector:
    state = IngestionState(tmp_path / "state")
    return Collector(client=_client(mock, tmp_path), producer=producer, state=state)


@pytest.mark.integration
def test_world_is_read_in_bulk_and_each_reading_is_sent_once_across_restarts(
    mock: MockOpenAQ, tmp_path: Path
) -> None:
    targets = Targets(world=True, parameters=("pm25",))
    recorder = Recorder()
    collector = _collector(mock, tmp_path, recorder)
    catalog = load_catalog(collector.client, targets, now=0)
    assert catalog.parameter_ids == [2] and set(catalog.by_sensor) == {101, 201, 301}
    mock.reset_log()
    first = collector.cycle(targets, catalog)
    assert first.strategy == "bulk" and first.requests == 1
    assert [r.path for r in mock.requests] == ["/v3/parameters/2/latest"]
    assert first.sent == 3 and {e["sensor_id"] for e in recorder.events} == {101, 201, 301}
    newest = T0 + timedelta(hours=3)
    for event in recorder.events:
        assert event["period_end"] == "2026-01-05T03:00:00Z"  # the period end: newest reading
        assert event["period_start"] == "2026-01-05T02:00:00Z"  # hourly until known
        assert event["ingest_mode"] == "live" and event["parameter"] == "pm25"
    assert first.lag_p50_s is not None

    assert collector.cycle(targets, catalog).sent == 0
    # a restart (new process, same AQ_HOME) sends nothing again
    again = _collector(mock, tmp_path, recorder)
    result = again.cycle(targets, catalog)
    assert (result.sent, result.already_sent) == (0, 3)

    # a new reading 30 minutes later: sent once, with the period its spacing shows
    mock.generate_measurements(201, newest, 1, interval=timedelta(minutes=30), seed=9)
    result = again.cycle(targets, catalog)
    assert result.sent == 1 and len(recorder.events) == 4
    assert recorder.events[-1]["period_start"] == "2026-01-05T03:00:00Z"
    assert recorder.events[-1]["period_end"] == "2026-01-05T03:30:00Z"
    assert again.sensors[201] == LiveSensor(newest + timedelta(minutes=30), 1800)


@pytest.mark.integration
def test_a_country_reads_only_its_sensors_and_a_few_locations_read_one_request_each(
    mock: MockOpenAQ, tmp_path: Path
) -> None:
    recorder = Recorder()
    collector = _collector(mock, tmp_path, recorder)
    country = Targets(country="DE", parameters=("pm25",))
    catalog = load_catalog(collector.client, country, now=0)
    assert {loc.id for loc in catalog.locations} == {20, 30}
    # two locations cost two requests, the bulk read one (until its size is known): bulk
    result = collector.cycle(country, catalog)
    assert result.strategy == "bulk" and {e["location_id"] for e in recorder.events} == {20, 30}

    one = Targets(location_ids=(10,))  # default parameters: the temperature sensor is not read
    catalog = load_catalog(collector.client, one, now=0)
    mock.reset_log()
    result = collector.cycle(one, catalog)
    assert result.strategy == "per-location" and result.requests == 1
    assert [r.path for r in mock.requests] == ["/v3/locations/10/latest"]
    assert {e["sensor_id"] for e in recorder.events} == {201, 301, 101}


@pytest.mark.integration
def test_malformed_readings_and_a_failing_page_do_not_end_the_cycle(
    mock: MockOpenAQ, tmp_path: Path
) -> None:
    targets = Targets(world=True)
    recorder = Recorder()
    collector = _collector(mock, tmp_path, recorder)
    catalog = load_catalog(collector.client, targets, now=0)
    good = collector.client.get("/parameters/2/latest")
    bad = [{**good["results"][0], "sensorsId": "x"}, None, {**good["results"][1], "datetime": 5}]
    mock.inject(200, body={**good, "results": [*good["results"][2:], *bad]},
                path="/parameters/2/latest")  # fmt: skip
    result = collector.cycle(targets, catalog)
    assert result.malformed == 3 and result.sent == 1
    assert "3 malformed reading(s) skipped" in result.problems()
    mock.inject(500, path="/parameters/2/latest", times=20)
    result = collector.cycle(targets, catalog)
    assert result.failed_pages == 1 and ", 1 parameter read(s) failed" in result.problems()
    mock.clear_faults()
    result = collector.cycle(targets, catalog)  # read again next cycle
    assert result.sent == 2 and len({e["sensor_id"] for e in recorder.events}) == 3


def test_sensors_unseen_for_30_days_are_forgotten(tmp_path: Path) -> None:
    state = IngestionState(tmp_path)
    state.record_live({1: LiveSensor(T0, 3600), 2: LiveSensor(T0, None)}, T0)
    state.record_live({2: LiveSensor(T0 + timedelta(days=20), None)}, T0 + timedelta(days=20))
    assert state.forget_live(T0 + timedelta(days=31)) == [1]
    assert set(IngestionState(tmp_path).live_sensors()) == {2}


def test_an_older_state_is_carried_over_as_one_watermark_per_sensor(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "ingestion.sqlite")
    db.executescript(
        "create table sent_readings (sensor_id integer, period_end text, sent_at text);"
        "create table sensor_intervals (sensor_id integer primary key, seconds integer);"
        "insert into sent_readings values (1, '2026-01-01T01:00:00Z', ''),"
        " (1, '2026-01-01T02:00:00Z', ''), (2, '2026-01-01T00:15:00Z', '');"
        "insert into sensor_intervals values (2, 900);"
    )
    db.commit()
    db.close()
    sensors = IngestionState(tmp_path).live_sensors()
    assert sensors == {
        1: LiveSensor(datetime(2026, 1, 1, 2, tzinfo=UTC), None),
        2: LiveSensor(datetime(2026, 1, 1, 0, 15, tzinfo=UTC), 900),
    }


def test_budget_arithmetic() -> None:
    """The world every 10 min: ~105 requests a cycle plus 30 for the locations every 6 h fit
    in half of 2,000/h; with 1,000/h the interval widens to what fits."""
    budget = Budget(per_hour=2000, share=0.5, wanted_interval_s=600)
    refresh = 30 * 3600 / LOCATIONS_REFRESH_S
    assert budget.interval_s(105, 30) == 600
    assert 6 * 105 + refresh <= 1000
    tight = Budget(per_hour=1000, share=0.5, wanted_interval_s=600)
    widened = tight.interval_s(105, 30)
    assert widened == pytest.approx(3600 * 105 / (500 - refresh))
    assert 3600 / widened * 105 + refresh == pytest.approx(500)
    assert Budget(per_hour=10, share=0.5, wanted_interval_s=600).interval_s(1, 40) == float("inf")


@pytest.mark.integration
def test_run_collector_widens_the_interval_and_keeps_figures(
    mock: MockOpenAQ, tmp_path: Path
) -> None:
    clock = FakeClock(T0.timestamp())
    recorder = Recorder()
    client = _client(mock, tmp_path)
    state = IngestionState(tmp_path / "state")
    lines: list[str] = []
    budget = Budget(per_hour=12, share=0.5, wanted_interval_s=60)  # 6 requests an hour
    sent = run_collector(
        Targets(world=True, parameters=("pm25",)), client=client, producer=recorder,
        state=state, budget=budget, once=False, echo=lines.append, clock=clock,
        sleep=clock.sleep, cycles=3,
    )  # fmt: skip
    assert sent == 3
    widened = [line for line in lines if "the interval is" in line]
    assert widened and "6 requests/hour (50% of 12)" in widened[0]
    cycles = state.cycles()
    assert [c["new"] for c in cycles] == [0, 0, 3]
    assert all(c["requests"] == 1 and c["strategy"] == "bulk" for c in cycles)
    # 1 request a cycle + 1 location page every 6 h within 6/h: at least 12 min apart
    assert min(clock.slept) >= 3600 / (6 - 1 / 6) - 1
