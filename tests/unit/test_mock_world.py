"""The deterministic world behind the OpenAQ mock: size, schedule, values, and the HTTP
routes that serve it, on a virtual clock (a simulated minute of rate limits in no time)."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from ingestion.rate_limit import RateLimiter
from openaq_mock import VirtualClock, World, WorldProfile
from openaq_mock.api import MockOpenAQ
from openaq_mock.world import PARAMETERS

SIX = ("pm25", "pm10", "o3", "no2", "so2", "co")
#: two months after the profile's reference time, at an odd second
T = WorldProfile().reference_time + 60 * 86_400 + 1234


@pytest.fixture(scope="module")
def built() -> tuple[World, float]:
    started = time.perf_counter()
    world = World()
    return world, time.perf_counter() - started


@pytest.fixture(scope="module")
def world(built: tuple[World, float]) -> World:
    return built[0]


@pytest.fixture(scope="module")
def small_world() -> World:
    """A tenth of the default world (the same rules), where every reading is looked at."""
    return World(WorldProfile(locations=3000))


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T)


@pytest.fixture
def served(world: World, clock: VirtualClock) -> Iterator[MockOpenAQ]:
    """The world behind the mock, without quotas in the way (the limits have their own test)."""
    with MockOpenAQ(
        None, world=world, clock=clock.time, per_minute=100_000, per_hour=1_000_000
    ) as mock:
        yield mock


def get(mock: MockOpenAQ, path: str, session: Any = requests, **params: Any) -> requests.Response:
    return session.get(mock.base_url + path, params=params, timeout=10)


def stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the world itself ------------------------------------------------------------------------


def test_default_world_is_big_spread_out_and_quick_to_build(
    world: World, built: tuple[World, float]
) -> None:
    assert built[1] < 10, f"building the world took {built[1]:.1f} s"
    assert world.location_count >= 30_000
    assert world.sensor_count >= 100_000
    per_parameter = world.sensors_per_parameter()
    assert set(per_parameter) == {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15}
    assert sum(per_parameter.values()) == world.sensor_count
    assert min(per_parameter.values()) >= 1000
    # several units, hence several parameter ids, per gas; one id per particle size
    assert world.parameter_ids(["pm25"]) == {2}
    assert world.parameter_ids("pm10") == {1}
    assert world.parameter_ids(["o3"]) == {3, 10}
    assert world.parameter_ids(["no2"]) == {5, 7, 15}
    assert world.parameter_ids(["so2", "co"]) == {4, 6, 8, 9}
    assert world.parameter_ids(SIX) == set(per_parameter)

    location_ids, sensor_ids = world.location_ids(), world.sensor_ids()
    for ids in (location_ids, sensor_ids):
        assert ids == sorted(set(ids)), "ids increase"
        assert ids[-1] > 5 * len(ids), "ids are sparse, not 1..N"
        assert len({b - a for a, b in itertools.pairwise(ids)}) > 20


def test_locations_are_api_shaped_and_placed_where_their_time_zone_is(world: World) -> None:
    locations = world.location_objects()
    assert [loc["id"] for loc in locations] == world.location_ids()
    keys = {
        "id", "name", "locality", "timezone", "country", "owner", "provider", "isMobile",
        "isMonitor", "instruments", "sensors", "coordinates", "licenses", "bounds", "distance",
        "datetimeFirst", "datetimeLast",
    }  # fmt: skip
    countries: Counter[str] = Counter()
    providers: set[str] = set()
    for loc in locations:
        assert set(loc) == keys
        countries[loc["country"]["code"]] += 1
        providers.add(loc["provider"]["name"])
        lat, lon = loc["coordinates"]["latitude"], loc["coordinates"]["longitude"]
        assert loc["bounds"] == [lon, lat, lon, lat]
        # the zone's offset is within a few hours of the sun's (an Asia/Tokyo zone on a
        # Californian point would be 17 hours off)
        offset = ZoneInfo(loc["timezone"]).utcoffset(datetime(2026, 1, 15)).total_seconds()
        assert abs(offset / 3600 - lon / 15) < 3, loc
        sensors = loc["sensors"]
        assert 1 <= len(sensors) <= 6
        names = [s["parameter"]["name"] for s in sensors]
        assert len(names) == len(set(names)) and set(names) <= set(SIX)
        for sensor in sensors:
            spec = PARAMETERS[sensor["parameter"]["id"]]
            assert sensor["parameter"]["units"] == spec.units
            assert sensor["name"] == f"{spec.name} {spec.units}"
    assert len(countries) >= 40
    assert countries.most_common(1)[0][0] == "US"
    assert {"AirNow", "EEA", "CPCB", "PurpleAir", "AirGradient"} <= providers
    monitors = sum(loc["isMonitor"] for loc in locations)
    assert 0.5 < monitors / len(locations) < 0.85
    per_location = Counter(len(loc["sensors"]) for loc in locations)
    assert set(per_location) == {1, 2, 3, 4, 5, 6}


def test_sensor_schedules(world: World) -> None:
    infos = [world.sensor(s) for s in world.sensor_ids()[::7]]
    periods = Counter(i.period_seconds for i in infos)
    assert set(periods) == {900, 1800, 3600}
    assert periods[3600] / len(infos) > 0.7
    delays = [i.delay_seconds for i in infos]
    assert 60 <= min(delays) and max(delays) <= 3000
    assert statistics.median(delays) > 300
    dead = [i for i in infos if i.dead]
    assert 0.07 < len(dead) / len(infos) < 0.13
    reference = WorldProfile().reference_time
    for info in dead:
        assert info.last_period_end is not None
        assert info.last_period_end <= reference - 30 * 86_400
        assert info.latest_period_end(T) == info.last_period_end  # frozen
    for info in infos:
        assert info.first_period_end % info.period_seconds == 0
        assert info.first_period_end <= reference


def test_same_seed_same_world_and_no_shared_random_state() -> None:
    profile = WorldProfile(locations=2000, seed=11)
    one = World(profile)
    import random

    random.seed(123)  # the global generator must not matter
    two = World(profile)
    other = World(WorldProfile(locations=2000, seed=12))
    assert one.location_objects(T) == two.location_objects(T)
    assert one.latest(2, T) == two.latest(2, T)
    assert one.location_objects(T) != other.location_objects(T)
    assert one.latest(2, T) != other.latest(2, T)


def test_latest_follows_the_publication_schedule(world: World) -> None:
    live = next(
        world.sensor(s)
        for s in world.sensor_ids(2)
        if not world.sensor(s).dead and world.sensor(s).period_seconds == 3600
    )
    period, delay = live.period_seconds, live.delay_seconds
    end = (math.floor(T) - delay) // period * period  # the latest at T
    by_sensor = {r["sensorsId"]: r for r in world.latest(2, T)}
    assert by_sensor[live.id]["datetime"]["utc"] == stamp(end)
    assert by_sensor[live.id]["locationsId"] == live.location_id
    # the next reading appears exactly at its period end plus the delay
    before = {r["sensorsId"]: r for r in world.latest(2, end + period + delay - 1)}
    after = {r["sensorsId"]: r for r in world.latest(2, end + period + delay)}
    assert before[live.id]["datetime"]["utc"] == stamp(end)
    assert after[live.id]["datetime"]["utc"] == stamp(end + period)
    # local time is the location's
    local = datetime.fromisoformat(by_sensor[live.id]["datetime"]["local"])
    assert local == datetime.fromtimestamp(end, UTC)
    assert local.utcoffset() == ZoneInfo(live.timezone).utcoffset(local.replace(tzinfo=None))
    # readings() gives the same values as latest
    readings = world.readings(live.id, datetime.fromtimestamp(end - 5 * period, UTC),
                              datetime.fromtimestamp(end, UTC))  # fmt: skip
    assert [r[0] for r in readings] == [
        datetime.fromtimestamp(end - k * period, UTC) for k in range(5, -1, -1)
    ]
    assert readings[-1][1] == by_sensor[live.id]["value"]
    for moment, value in readings:
        published = world.location_latest(live.location_id, moment.timestamp() + delay)
        assert {r["sensorsId"]: r["value"] for r in published}[live.id] == value
    # a range that ends in the future is cut at what is published, if asked
    ahead = datetime.fromtimestamp(end + 3 * period, UTC)
    assert len(world.readings(live.id, readings[0][0], ahead)) == 9
    assert world.readings(live.id, readings[0][0], ahead, at=T)[-1][0] == readings[-1][0]


def test_values_are_plausible_with_some_nulls_and_sentinels(world: World) -> None:
    values: dict[int, list[float]] = {}
    odd = Counter()
    for pid in world.sensors_per_parameter():
        for record in world.latest(pid, T):
            value = record["value"]
            if value is None or value == -9999.0:
                odd[value] += 1
            else:
                values.setdefault(pid, []).append(value)
    total = world.sensor_count
    assert 0.001 < odd[None] / total < 0.006
    assert 0.0005 < odd[-9999.0] / total < 0.005
    medians = {pid: statistics.median(v) for pid, v in values.items()}
    assert 5 < medians[2] < 40  # pm25 µg/m³
    assert medians[2] < medians[1] < 100  # pm10
    assert 20 < medians[3] < 120  # o3 µg/m³
    assert 0.01 < medians[10] < 0.06  # o3 ppm
    assert 3 < medians[15] < 40  # no2 ppb
    assert 0.002 < medians[7] < 0.04  # no2 ppm
    assert 0.1 < medians[8] < 1.5  # co ppm
    assert all(v >= 0 for v in values[2])
    assert max(values[2]) < 2000


def test_published_is_what_a_poller_sees(small_world: World) -> None:
    """A poller that reads the latest lists every 5 simulated minutes (shorter than any
    period, and the window's ends included) sees exactly the published readings."""
    parameter_ids = {6, 9}  # so2 in µg/m³ (some every 15 minutes) and in ppm
    start, end = T, T + 2 * 3600
    seen: set[tuple[int, str]] = set()
    moment = start
    while moment <= end:
        for pid in parameter_ids:
            seen |= {
                (r["sensorsId"], r["datetime"]["utc"]) for r in small_world.latest(pid, moment)
            }
        moment += 300
    published = small_world.published(parameter_ids, start, end)
    assert seen == published
    # a live sensor: its latest at the start and 2 hours' worth after it (3 hourly, 5
    # half-hourly, 9 quarter-hourly readings); a dead one: only its frozen reading
    per_sensor = Counter(sensor for sensor, _ in published)
    assert len(per_sensor) == sum(small_world.sensors_per_parameter()[p] for p in parameter_ids)
    for sensor_id, count in per_sensor.items():
        info = small_world.sensor(sensor_id)
        assert count == (1 if info.dead else 1 + 7200 // info.period_seconds)
    assert set(per_sensor.values()) == {1, 3, 5, 9}
    # a poller every 20 minutes misses some readings of the 15-minute sensors
    sparse: set[tuple[int, str]] = set()
    for k in range(7):
        for pid in parameter_ids:
            records = small_world.latest(pid, start + k * 1200)
            sparse |= {(r["sensorsId"], r["datetime"]["utc"]) for r in records}
    assert sparse < published


def test_datetime_min_keeps_later_readings(world: World) -> None:
    since = T - 1800
    everything = world.latest(15, T)
    later = world.latest(15, T, datetime_min=since)
    assert later == [r for r in everything if r["datetime"]["utc"] > stamp(since)]
    assert 0 < len(later) < len(everything)
    assert world.latest(15, T, datetime.fromtimestamp(since, UTC)) == later


# -- through HTTP -------------------------------------------------------------------------------


@pytest.mark.integration
def test_latest_pages_over_http_make_up_the_whole_list(world: World, served: MockOpenAQ) -> None:
    session = requests.Session()
    expected = world.latest(2, T)
    results, pages, slowest = [], 0, 0.0
    while True:
        pages += 1
        started = time.perf_counter()
        response = get(served, "/parameters/2/latest", session, limit=1000, page=pages)
        slowest = max(slowest, time.perf_counter() - started)
        assert response.status_code == 200
        body = response.json()
        assert body["meta"] == {
            "name": "openaq-api", "website": "/", "page": pages, "limit": 1000,
            "found": len(expected),
        }  # fmt: skip
        results += body["results"]
        if len(body["results"]) < 1000:
            break
    assert pages == len(expected) // 1000 + 1
    assert results == expected
    assert slowest < 1.0  # typically ~15 ms; generous for a busy CI machine
    assert get(served, "/parameters/2/latest", limit=1001).status_code == 422
    beyond = get(served, "/parameters/2/latest", limit=1000, page=pages + 1).json()
    assert beyond["results"] == [] and beyond["meta"]["found"] == len(expected)
    since = datetime.fromtimestamp(T - 1800, UTC).isoformat()
    filtered = get(served, "/parameters/15/latest", limit=1000, datetime_min=since).json()
    assert filtered["results"] == world.latest(15, T, T - 1800)
    assert filtered["meta"]["found"] == len(filtered["results"])
    assert served.request_counts() == {"/v3/parameters/{id}/latest": pages + 3}


@pytest.mark.integration
def test_locations_and_sensors_over_http(world: World, served: MockOpenAQ) -> None:
    session = requests.Session()
    first = get(served, "/locations", session, limit=1000).json()
    assert first["meta"]["found"] == ">1000"
    assert [loc["id"] for loc in first["results"]] == world.location_ids()[:1000]
    assert first["results"][0] == world.location_object(first["results"][0]["id"], T)

    indian = get(served, "/locations", session, iso="IN", limit=1000).json()["results"]
    assert indian and {loc["country"]["code"] for loc in indian} == {"IN"}
    assert {loc["timezone"] for loc in indian} == {"Asia/Kolkata"}
    boxed = get(served, "/locations", session, bbox="2,48,3,49", limit=1000).json()
    assert boxed["meta"]["found"] == len(boxed["results"]) > 0
    for loc in boxed["results"]:
        assert 48 <= loc["coordinates"]["latitude"] <= 49
        assert 2 <= loc["coordinates"]["longitude"] <= 3
    near = get(served, "/locations", session, coordinates="28.6,77.2", radius=10000).json()
    assert near["results"] and all(0 <= loc["distance"] <= 10000 for loc in near["results"])
    ppm = get(served, "/locations", session, parameters_id=7, monitor="true", limit=5).json()
    for loc in ppm["results"]:
        assert loc["isMonitor"] and 7 in {s["parameter"]["id"] for s in loc["sensors"]}
    assert get(served, "/locations", session, mobile="true").json()["results"] == []
    assert get(served, "/locations", session, bbox="1,2,3").status_code == 422

    location = indian[0]
    sensor_ids = [s["id"] for s in location["sensors"]]
    one = get(served, f"/locations/{location['id']}", session).json()
    assert one["results"] == [location] and one["meta"]["found"] == 1
    sensors = get(served, f"/locations/{location['id']}/sensors", session).json()["results"]
    assert [s["id"] for s in sensors] == sensor_ids
    latest = get(served, f"/locations/{location['id']}/latest", session).json()["results"]
    assert latest == world.location_latest(location["id"], T)
    detail = get(served, f"/sensors/{sensor_ids[0]}", session).json()["results"][0]
    assert detail["latest"]["datetime"] == latest[0]["datetime"]
    info = world.sensor(sensor_ids[0])
    measured = get(served, f"/sensors/{sensor_ids[0]}/measurements", session, limit=3,
                   datetime_from=latest[0]["datetime"]["utc"]).json()  # fmt: skip
    assert measured["results"] == [], "nothing after the latest is published yet"
    recent = get(served, f"/sensors/{sensor_ids[0]}/measurements", session, limit=3,
                 datetime_to=latest[0]["datetime"]["utc"],
                 datetime_from=stamp(T - 6 * info.period_seconds - 3600)).json()  # fmt: skip
    assert recent["meta"]["found"] == ">3"
    ends = [datetime.fromisoformat(r["period"]["datetimeTo"]["utc"]) for r in recent["results"]]
    assert [b - a for a, b in itertools.pairwise(ends)] == [
        timedelta(seconds=info.period_seconds)
    ] * 2
    assert get(served, "/parameters/15", session).json()["results"][0]["units"] == "ppb"
    for path in ("/locations/1", "/sensors/1", "/locations/1/latest", "/parameters/99"):
        assert get(served, path, session).status_code == 404, path


# -- time: the virtual clock drives the limits ------------------------------------------------


def test_virtual_clock() -> None:
    clock = VirtualClock(100.0)
    clock.sleep(2.5)
    assert clock.time() == clock() == 102.5
    assert clock.advance(0.5) == 103.0
    assert clock.slept == [2.5]
    with pytest.raises(ValueError):
        clock.sleep(-1)


@pytest.mark.integration
def test_a_simulated_minute_of_rate_limits(world: World, clock: VirtualClock) -> None:
    with MockOpenAQ(None, world=world, clock=clock.time) as mock:
        session = requests.Session()
        for n in range(1, 61):
            response = get(mock, "/parameters/9/latest", session, limit=1)
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit"] == "60"
            assert response.headers["x-ratelimit-used"] == str(n)
            assert response.headers["x-ratelimit-remaining"] == str(60 - n)
            clock.advance(0.5)
        # 30 simulated seconds into the window: the 61st request is refused
        refused = get(mock, "/parameters/9/latest", session, limit=1)
        assert refused.status_code == 429
        assert refused.json() == {"detail": "Too many requests"}
        assert "Retry-After" not in refused.headers
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert refused.headers["x-ratelimit-reset"] == "30"
        clock.advance(30)
        again = get(mock, "/parameters/9/latest", session, limit=1)
        assert again.status_code == 200 and again.headers["x-ratelimit-remaining"] == "59"
        # the log is on the virtual clock, and the world's "now" is the clock's
        times = [r.monotonic_time for r in mock.requests]
        assert times[0] == T and times[-1] == T + 60
        assert again.json()["results"] == world.latest(9, T + 60)[:1]
        assert mock.request_counts() == {"/v3/parameters/{id}/latest": 62}


@pytest.mark.integration
def test_the_clients_limiter_on_the_same_virtual_clock_never_trips_the_mock(
    world: World, clock: VirtualClock, tmp_path: Path
) -> None:
    with MockOpenAQ(None, world=world, clock=clock.time) as mock:
        limiter = RateLimiter(tmp_path, "mock|key", clock=clock.time, sleep=clock.sleep)
        session = requests.Session()
        statuses = Counter()
        for _ in range(150):
            limiter.acquire()
            statuses[get(mock, "/parameters/10/latest", session, limit=1).status_code] += 1
            clock.advance(0.2)
        assert statuses == {200: 150}
        assert clock.time() - T > 120  # two simulated minutes of waiting, in no real time
        assert mock.max_requests_in_window(60) == 60
