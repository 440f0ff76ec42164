"""The simulator: contract-valid, deterministic, streaming, and it produces every hard case.

The statistics (daily means, diurnal shape, defect rates) are computed here independently of
the simulator's internals, from the events alone, the way the dbt models will see them.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import random
import statistics
import tracemalloc
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ingestion.events import format_utc, make_event, parse_utc, validate_event
from ingestion.simulator import SimulationConfig, simulate, simulation_locations

pytestmark = pytest.mark.unit

END = datetime(2025, 3, 12, tzinfo=UTC)
BIG = SimulationConfig(locations=12, days=10, end=END)
#: (parameter, units) -> OpenAQ v3 parameter id, per shared/reference/README.md.
PARAMETER_IDS = {
    ("pm10", "µg/m³"): 1,
    ("pm25", "µg/m³"): 2,
    ("o3", "µg/m³"): 3,
    ("o3", "ppm"): 10,
    ("no2", "µg/m³"): 5,
    ("no2", "ppb"): 15,
    ("no2", "ppm"): 7,
}


@pytest.fixture(scope="module")
def default_events() -> list[dict[str, Any]]:
    return list(simulate(SimulationConfig(end=END)))


@pytest.fixture(scope="module")
def big_events() -> list[dict[str, Any]]:
    return list(simulate(BIG))


def interval(event: dict[str, Any]) -> timedelta:
    return parse_utc(event["period_end"]) - parse_utc(event["period_start"])


def lateness(event: dict[str, Any]) -> timedelta:
    return parse_utc(event["ingested_at"]) - parse_utc(event["period_end"])


def first_deliveries(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[int, str]] = set()
    firsts = []
    for e in events:
        key = (e["sensor_id"], e["period_end"])
        if key not in seen:
            seen.add(key)
            firsts.append(e)
    return firsts


def local_midpoint(event: dict[str, Any]) -> datetime:
    start, end = parse_utc(event["period_start"]), parse_utc(event["period_end"])
    return (start + (end - start) / 2).astimezone(ZoneInfo(event["timezone"]))


def usable(event: dict[str, Any]) -> bool:
    """Not null, flagged, a sentinel or (for PM) physically absurd."""
    value = event["value"]
    if value is None or event["flagged"] or value < 0:
        return False
    return not (event["parameter"] in ("pm25", "pm10") and value > 1500)


def hourly_pm25(events: list[dict[str, Any]]) -> dict[tuple[int, Any], dict[int, float]]:
    """(sensor, local date) -> {local hour: mean PM2.5 of the usable readings in that hour}."""
    values: dict[tuple[int, Any, int], list[float]] = defaultdict(list)
    for e in first_deliveries(events):
        if e["parameter"] == "pm25" and usable(e):
            local = local_midpoint(e)
            values[(e["sensor_id"], local.date(), local.hour)].append(e["value"])
    days: dict[tuple[int, Any], dict[int, float]] = defaultdict(dict)
    for (sensor, day, hour), readings in values.items():
        days[(sensor, day)][hour] = statistics.fmean(readings)
    return days


# --- contract and determinism ------------------------------------------------------------------


def test_every_event_validates_and_is_simulated(default_events, big_events) -> None:
    assert len(default_events) > 1000
    for e in itertools.chain(default_events, big_events):
        validate_event(e)
        assert e["ingest_mode"] == "simulate"
        assert PARAMETER_IDS[(e["parameter"], e["units"])] == e["parameter_id"]


def test_periods_are_aligned_and_inside_the_span(big_events) -> None:
    start = END - timedelta(days=BIG.days)
    for e in big_events:
        end = parse_utc(e["period_end"])
        minutes = interval(e) // timedelta(minutes=1)
        assert minutes in (15, 30, 60)
        assert end.second == 0 and end.minute % minutes == 0
        assert start < end <= END
        assert e["coverage_percent"] is not None and 0 < e["coverage_percent"] <= 100


def test_same_seed_same_stream_other_seed_other_values() -> None:
    def stream(seed: int) -> list[str]:
        config = SimulationConfig(locations=4, days=1, seed=seed, end=END)
        return [json.dumps(e, ensure_ascii=False) for e in simulate(config)]

    assert stream(7) == stream(7)
    assert stream(7) != stream(8)
    # metadata do not depend on the seed, so series keep their ids
    assert simulation_locations(SimulationConfig(seed=1)) == simulation_locations(
        SimulationConfig(seed=2)
    )


def test_stream_is_in_ingestion_order(big_events) -> None:
    times = [parse_utc(e["ingested_at"]) for e in big_events]
    assert times == sorted(times)
    assert all(lateness(e) > timedelta(0) for e in big_events)
    # nothing is delivered after the collector "stopped" (end + the normal latency)
    assert max(times) <= END + timedelta(minutes=45)


def test_default_end_is_now_floored_to_the_hour() -> None:
    # 50 minutes past: the 17:00 periods have been delivered (latency is at most 45 minutes)
    now = datetime(2026, 12, 3, 17, 50, tzinfo=UTC)
    events = list(simulate(SimulationConfig(locations=3, days=0.5), now=now))
    assert max(parse_utc(e["period_end"]) for e in events) == now.replace(minute=0)
    assert max(parse_utc(e["ingested_at"]) for e in events) <= now


def test_a_span_ending_now_holds_nothing_from_the_future() -> None:
    # seconds past the hour: the periods ending on the hour are not delivered yet
    now = datetime(2026, 12, 3, 17, 0, 30, tzinfo=UTC)
    events = list(simulate(SimulationConfig(locations=3, days=0.5), now=now))
    assert events
    assert max(parse_utc(e["ingested_at"]) for e in events) <= now
    assert max(parse_utc(e["period_end"]) for e in events) < now.replace(second=0)


def test_the_wall_clock_is_the_default_now() -> None:
    events = list(simulate(SimulationConfig(locations=3, days=0.5)))
    after = datetime.now(UTC)
    assert events
    assert max(parse_utc(e["ingested_at"]) for e in events) <= after
    assert max(parse_utc(e["period_end"]) for e in events) <= after.replace(
        minute=0, second=0, microsecond=0
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"locations": 0},
        {"days": 0},
        {"late_share": -0.1},
        {"duplicate_share": 0.9},
        {"end": datetime(2025, 1, 1)},  # naive
    ],
)
def test_invalid_config_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimulationConfig(**kwargs)


def test_stream_is_pinned_byte_for_byte() -> None:
    """A digest of one stream (across a DST change, with late and duplicated deliveries),
    recorded before the simulator was made fast: its shortcuts must not change a byte.

    A deliberate change of the model changes the digest: record the new one then.
    """
    config = SimulationConfig(
        locations=12,
        days=2,
        seed=7,
        end=datetime(2025, 11, 3, 6, tzinfo=UTC),
        late_share=0.1,
        duplicate_share=0.05,
    )
    events = list(simulate(config))
    text = json.dumps(events, ensure_ascii=False, separators=(",", ":"))
    assert len(events) == 2913
    assert (
        hashlib.sha256(text.encode()).hexdigest()
        == "efff8a42876653185ee71da000f5e0515b5e8ffe9d8ffd7fb756c301bfd823d7"
    )


def test_each_event_is_what_make_event_builds(big_events) -> None:
    """The simulator copies make_event's event of a sensor and sets a period's fields in it:
    that must stay what make_event itself builds, key order and value types included."""
    locations = {loc.id: loc for loc in simulation_locations(BIG)}
    for e in big_events[::5]:
        location = locations[e["location_id"]]
        built = make_event(
            mode="simulate",
            location=location,
            sensor=location.sensors[e["sensor_id"]],
            value=e["value"],
            period_start=parse_utc(e["period_start"]),
            period_end=parse_utc(e["period_end"]),
            flagged=e["flagged"],
            coverage_percent=e["coverage_percent"],
            ingested_at=parse_utc(e["ingested_at"]),
        )
        assert json.dumps(e, ensure_ascii=False) == json.dumps(built, ensure_ascii=False)


# --- the simulator's shortcuts against the random module -----------------------------------------
# The simulator draws from Python's random module through shortcuts that must give the very
# same numbers (and leave each generator in the same state), or the stream would change.


@pytest.mark.parametrize("seed", [1, 42, "openaq-simulator-air:1:17"])
def test_batched_normals_are_the_gauss_draws(seed: int | str) -> None:
    from ingestion.simulator import _normals, _standard_normals

    batched, single = random.Random(seed), random.Random(seed)
    for count in (0, 1, 5, 5, 2, 7, 64, 3):  # with and without a spare left by the last call
        assert _standard_normals(batched, count) == [single.gauss(0, 1) for _ in range(count)]
        assert batched.getstate() == single.getstate()
        batched.random(), single.random()  # other draws in between keep them in step
    stream, single = _normals(random.Random(seed)), random.Random(seed)
    assert list(itertools.islice(stream, 200)) == [single.gauss(0, 1) for _ in range(200)]


@pytest.mark.parametrize("seed", [1, "openaq-simulator-ops:42:35"])
def test_randint_is_the_random_module_randint(seed: int | str) -> None:
    from ingestion.simulator import _randint

    fast, slow = random.Random(seed), random.Random(seed)
    for low, high in [(240, 720), (600, 2400), (0, 0), (7, 8), (3900, 259_200), (1, 2**40)] * 50:
        assert _randint(fast, low, high) == slow.randint(low, high)
    assert fast.getstate() == slow.getstate()


#: midnight, a minute's end, a day's end, 2025's last second, before 1970, year 702, year 9999
SECONDS = [0, 59, 86_399, 1_767_225_599, -1, -40_000_000_000, 253_402_300_799]


@pytest.mark.parametrize("seconds", SECONDS)
def test_delivery_times_are_formatted_by_format_utc(seconds: int) -> None:
    from ingestion.simulator import _utc_text

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert _utc_text(seconds) == format_utc(epoch + timedelta(seconds=seconds))


# --- locations and sensors ----------------------------------------------------------------------


def test_default_locations_are_the_real_fixture_locations(default_events) -> None:
    locations = simulation_locations(SimulationConfig())
    assert [loc.id for loc in locations] == [17, 13, 2178, 21, 3]
    rk_puram = locations[0]
    assert rk_puram.name == "R K Puram, Delhi - DPCC"
    assert rk_puram.timezone == "Asia/Kolkata"
    assert (rk_puram.latitude, rk_puram.longitude) == (28.563262, 77.186937)
    assert (rk_puram.country_code, rk_puram.provider) == ("IN", "CPCB")
    assert {s.id for s in rk_puram.sensors.values() if s.parameter == "pm25"} == {35, 12234787}
    assert locations[2].name == "Del Norte" and locations[2].timezone == "America/Denver"
    for loc in locations:  # only the four pollutants are simulated
        assert {s.parameter for s in loc.sensors.values()} <= {"pm25", "pm10", "no2", "o3"}
    event = next(e for e in default_events if e["location_id"] == 17)
    assert event["location_name"] == "R K Puram, Delhi - DPCC"
    assert event["timezone"] == "Asia/Kolkata" and event["provider"] == "CPCB"
    sensors = {(e["location_id"], e["sensor_id"]) for e in default_events}
    assert sensors == {(loc.id, sid) for loc in locations for sid in loc.sensors}


def test_synthetic_locations_extend_the_real_ones() -> None:
    locations = simulation_locations(SimulationConfig(locations=40))
    assert len(locations) == 40
    assert len({loc.id for loc in locations}) == 40
    sensor_ids = [sid for loc in locations for sid in loc.sensors]
    assert len(sensor_ids) == len(set(sensor_ids))
    synthetic = [loc for loc in locations if loc.id >= 9_000_000]
    assert len(synthetic) == 31
    assert len({loc.timezone for loc in synthetic}) >= 12
    assert len({loc.country_code for loc in synthetic}) >= 10
    for loc in synthetic:
        ZoneInfo(loc.timezone)
        assert "pm25" in {s.parameter for s in loc.sensors.values()}
        assert all((s.parameter, s.units) in PARAMETER_IDS for s in loc.sensors.values())
    # a prefix of a bigger configuration: a location keeps its metadata when more are added
    assert simulation_locations(SimulationConfig(locations=12)) == locations[:12]


@pytest.mark.parametrize("locations", [3, 12])
def test_structural_cases_present_from_three_locations(locations: int) -> None:
    events = list(simulate(SimulationConfig(locations=locations, days=1, end=END)))
    pm25_sensors: dict[int, set[int]] = defaultdict(set)
    gas_units: dict[tuple[str, str], set[int]] = defaultdict(set)
    for e in events:
        if e["parameter"] == "pm25":
            pm25_sensors[e["location_id"]].add(e["sensor_id"])
        gas_units[(e["parameter"], e["units"])].add(e["location_id"])
    assert any(len(sensors) >= 2 for sensors in pm25_sensors.values())
    assert any(
        ppb_at != ugm3_at
        for gas in ("no2", "o3")
        for ppb_at in gas_units[(gas, "ppb")]
        for ugm3_at in gas_units[(gas, "µg/m³")]
    )
    intervals = {interval(e) for e in events}
    assert {timedelta(minutes=15), timedelta(minutes=60)} <= intervals


def test_same_gas_in_ppb_and_ugm3_at_different_locations(default_events) -> None:
    ppb = {
        e["location_id"] for e in default_events if (e["parameter"], e["units"]) == ("no2", "ppb")
    }
    ugm3 = {
        e["location_id"] for e in default_events if (e["parameter"], e["units"]) == ("no2", "µg/m³")
    }
    assert ppb and ugm3
    assert any(a != b for a in ppb for b in ugm3)


# --- defects and delivery -------------------------------------------------------------------------


def test_data_quality_defects_are_present(big_events) -> None:
    values = [e["value"] for e in big_events]
    assert any(v is None for v in values)
    assert any(e["value"] is None and e["flagged"] for e in big_events)
    assert any(e["flagged"] and e["value"] is not None for e in big_events)
    assert -9999.0 in values
    assert any(e["coverage_percent"] < 100 for e in big_events)
    # absurd spikes: far above anything the sensor otherwise reports
    by_sensor: dict[int, list[float]] = defaultdict(list)
    for e in first_deliveries(big_events):
        if usable(e):
            by_sensor[e["sensor_id"]].append(e["value"])
    assert any(max(v) > 15 * statistics.median(v) for v in by_sensor.values() if len(v) > 50)
    # but at small rates
    n = len(big_events)
    assert sum(v is None for v in values) / n < 0.02
    assert sum(v == -9999.0 for v in values) / n < 0.01
    assert sum(e["flagged"] for e in big_events) / n < 0.03


def test_late_events_at_roughly_the_configured_share(big_events) -> None:
    firsts = first_deliveries(big_events)
    late = [e for e in firsts if lateness(e) > timedelta(hours=1)]
    share = len(late) / len(firsts)
    assert 0.5 * BIG.late_share < share < 1.5 * BIG.late_share
    assert any(lateness(e) > timedelta(hours=12) for e in late)  # hours to days
    late_ids = {id(e) for e in late}
    assert all(lateness(e) < timedelta(minutes=45) for e in firsts if id(e) not in late_ids)
    # late events come after events of later periods: the stream is not in period order
    newest = END - timedelta(days=365)
    overtaken = 0
    for e in big_events:
        end = parse_utc(e["period_end"])
        overtaken += end < newest - timedelta(hours=1)
        newest = max(newest, end)
    assert overtaken >= len(late) // 2
    assert overtaken / len(big_events) < 0.05  # mostly chronological


def test_duplicates_at_roughly_the_configured_share(big_events) -> None:
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for e in big_events:
        groups[(e["sensor_id"], e["period_end"])].append(e)
    duplicated = [g for g in groups.values() if len(g) > 1]
    share = len(duplicated) / len(groups)
    assert 0.5 * BIG.duplicate_share < share < 1.5 * BIG.duplicate_share
    for first, *again in duplicated:
        for e in again:
            assert e["ingested_at"] > first["ingested_at"]
            assert {k: v for k, v in e.items() if k != "ingested_at"} == {
                k: v for k, v in first.items() if k != "ingested_at"
            }


def test_shares_follow_the_config() -> None:
    config = SimulationConfig(locations=3, days=3, end=END, late_share=0.1, duplicate_share=0.05)
    events = list(simulate(config))
    firsts = first_deliveries(events)
    late = sum(lateness(e) > timedelta(hours=1) for e in firsts) / len(firsts)
    duplicates = (len(events) - len(firsts)) / len(firsts)
    assert 0.07 < late < 0.13
    assert 0.035 < duplicates < 0.065
    quiet = SimulationConfig(locations=3, days=1, end=END, late_share=0, duplicate_share=0)
    events = list(simulate(quiet))
    assert all(lateness(e) < timedelta(hours=1) for e in events)
    assert len(events) == len(first_deliveries(events))


# --- values ---------------------------------------------------------------------------------------


def test_daily_pm25_means_exceed_who_and_us_levels_somewhere(big_events) -> None:
    days = hourly_pm25(big_events)
    means = {key: statistics.fmean(h.values()) for key, h in days.items() if len(h) >= 18}
    assert any(m > 15 for m in means.values())  # WHO 24-hour guideline
    assert any(m > 35 for m in means.values())  # US 24-hour standard
    assert any(m < 15 for m in means.values())  # and clean places too
    clean = [m for (sensor, _), m in means.items() if sensor == 3920]  # Del Norte, Albuquerque
    polluted = [m for (sensor, _), m in means.items() if sensor == 35]  # R K Puram, Delhi
    assert statistics.median(clean) < 15
    assert statistics.median(polluted) > 35


def test_pm10_exceeds_who_and_us_levels_sometimes(big_events) -> None:
    values = [e["value"] for e in first_deliveries(big_events) if e["parameter"] == "pm10"]
    valid = [v for v in values if v is not None and v >= 0]
    assert any(v > 45 for v in valid) and any(v > 150 for v in valid)
    assert any(v < 45 for v in valid)


def test_some_local_days_are_incomplete(big_events) -> None:
    start = END - timedelta(days=BIG.days)
    zones = {e["sensor_id"]: ZoneInfo(e["timezone"]) for e in big_events}
    days = hourly_pm25(big_events)
    inside = {
        key: len(hours)
        for key, hours in days.items()
        if datetime.combine(key[1], datetime.min.time(), zones[key[0]]) >= start
        and datetime.combine(key[1] + timedelta(days=1), datetime.min.time(), zones[key[0]]) <= END
    }
    assert any(n < 18 for n in inside.values())
    assert sum(n >= 18 for n in inside.values()) > len(inside) / 2  # gaps are the exception


def test_diurnal_shapes_follow_local_time(big_events) -> None:
    """Rush-hour PM2.5 above the small hours; O3 peaks in the afternoon (all in local time)."""
    by_sensor: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for e in first_deliveries(big_events):
        if usable(e):
            by_sensor[e["sensor_id"]].append((local_midpoint(e).hour, e["value"]))
    pooled: dict[tuple[str, int], list[float]] = defaultdict(list)
    parameters = {e["sensor_id"]: e["parameter"] for e in big_events}
    for sensor, readings in by_sensor.items():
        median = statistics.median(v for _, v in readings) or 1.0
        for hour, v in readings:
            pooled[(parameters[sensor], hour)].append(min(v / median, 10))

    def mean(parameter: str, hours: range | list[int]) -> float:
        return statistics.fmean(v for h in hours for v in pooled[(parameter, h)])

    rush = [7, 8, 9, 19, 20, 21]
    assert mean("pm25", rush) > 1.3 * mean("pm25", range(3, 5))
    assert mean("no2", rush) > 1.3 * mean("no2", range(3, 5))
    assert mean("o3", range(13, 17)) > 2 * mean("o3", range(3, 7))


# --- streaming ------------------------------------------------------------------------------------


def test_simulate_streams_without_materializing() -> None:
    stream = simulate(SimulationConfig(locations=50, days=30, end=END))
    assert inspect.isgenerator(stream)
    tracemalloc.start()
    try:
        first = list(itertools.islice(stream, 1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        stream.close()
    assert len(first) == 1000
    # ~170,000 events of ~1 kB each would need far more: only the first hours were simulated
    assert peak < 20_000_000
    start = END - timedelta(days=30)
    assert max(parse_utc(e["period_end"]) for e in first) < start + timedelta(days=1)
    for e in first:
        validate_event(e)


def test_a_span_ending_now_is_the_stream_of_that_hour_cut_at_the_wall_clock() -> None:
    """The default end is now: events a collector would only receive later are not sent, and
    what is sent is exactly the deterministic stream of the current hour up to now."""
    from collections import Counter
    from datetime import UTC, datetime, timedelta

    from ingestion.simulator import SimulationConfig, simulate

    def key(e: dict) -> tuple:
        return (e["sensor_id"], e["period_end"], e["ingested_at"], e["value"])

    before = datetime.now(UTC)
    got = Counter(key(e) for e in simulate(SimulationConfig(locations=3, days=0.5, seed=5)))
    after = datetime.now(UTC)
    assert got
    assert max(datetime.fromisoformat(k[2]) for k in got) <= after
    hour = before.replace(minute=0, second=0, microsecond=0)
    matches = []
    for end in (hour, hour + timedelta(hours=1)):
        full = [key(e) for e in simulate(SimulationConfig(locations=3, days=0.5, seed=5, end=end))]
        delivered = Counter(k for k in full if datetime.fromisoformat(k[2]) <= before)
        matches.append(not (got - Counter(full)) and not (delivered - got))
    assert any(matches)
