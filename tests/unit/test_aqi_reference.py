"""The independent AQI/NowCast reference agrees with the EPA table, and the dbt unit tests'
expected values agree with it (so neither side is checked against itself)."""

from __future__ import annotations

import csv
import hashlib
import re
from datetime import UTC, date, datetime
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from reference_aqi import BREAKPOINTS, aqi, category, daily_avg, nowcast, valid_readings

from ingestion.simulator import SimulationConfig, simulate

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EPA_CSV = ROOT / "tests" / "data" / "us_aqi_breakpoints_openaq_aqi_hub.csv"
#: where the copy in tests/data comes from, when the team's shared folder is beside the checkout
SHARED_CSV = ROOT.parent / "shared" / "reference" / EPA_CSV.name
UNIT_TESTS = ROOT / "dbt_project" / "models" / "marts" / "gold" / "_gold__unit_tests.yml"
SEED = ROOT / "dbt_project" / "seeds" / "aqi_breakpoints.csv"


def _epa_rows(pollutant: str) -> list[dict]:
    with EPA_CSV.open() as handle:
        return [
            r
            for r in csv.DictReader(handle)
            if r["pollutant"] == pollutant and r["averaging_period"] == "24"
        ]


@pytest.mark.parametrize(("pollutant", "name"), [("pm25", "PM2.5"), ("pm10", "PM10")])
def test_reference_hits_every_epa_edge(pollutant: str, name: str) -> None:
    rows = _epa_rows(name)
    assert len(rows) == 6
    for row in rows:
        lo, i_lo = float(row["concentration_lower"]), int(row["category_lower"])
        assert aqi(lo, pollutant) == i_lo
        assert category(i_lo) == row["category"]
        if row["concentration_upper"]:
            assert aqi(float(row["concentration_upper"]), pollutant) == int(row["category_upper"])
    # the Hazardous row is open-ended in the table: the EPA TAD ends it at 325.4 / 604 -> 500
    top = {"pm25": 325.4, "pm10": 604}[pollutant]
    assert aqi(top, pollutant) == 500 and aqi(top * 2, pollutant) == 500


def test_seed_matches_the_reference_breakpoints() -> None:
    with SEED.open() as handle:
        seed = [r for r in csv.DictReader(handle)]
    for pollutant, rows in BREAKPOINTS.items():
        mine = [(float(lo), float(hi), a, b) for lo, hi, a, b in rows]
        theirs = [(float(r["concentration_lo"]), float(r["concentration_hi"]), int(r["aqi_lo"]),
                   int(r["aqi_hi"])) for r in seed if r["pollutant"] == pollutant]  # fmt: skip
        assert mine == theirs


def test_truncation_examples() -> None:
    assert aqi(9.09, "pm25") == 50 and aqi(35.49, "pm25") == 100
    assert aqi(54.9, "pm10") == 50 and aqi(154.7, "pm10") == 100
    assert aqi(-1, "pm25") is None


def test_exact_concentrations_truncate_exactly() -> None:
    assert aqi(Fraction(9), "pm25") == 50 and aqi(Fraction(89999, 10000), "pm25") == 49
    assert aqi(Fraction(54), "pm10") == 50 and aqi(Fraction(5499, 100), "pm10") == 50


def test_daily_means_are_exact_at_a_breakpoint() -> None:
    # a CI run once disagreed with the warehouse on this simulated day: its float mean is
    # 8.999999999999998 (truncated to 8.9, AQI 49), its exact mean 9.0 (AQI 50), which is
    # what the warehouse's numeric avg gives
    end = datetime(2026, 12, 2, 10, tzinfo=UTC)
    events = list(simulate(SimulationConfig(locations=3, days=2, end=end)))
    daily = daily_avg(valid_readings(events))
    day = daily[(daily.location_id == 2178) & (daily.parameter == "pm25")
                & (daily.local_date == date(2026, 12, 1))]  # fmt: skip
    assert len(day) == 1 and day.iloc[0].is_complete
    assert day.iloc[0].exact_avg == 9 and day.iloc[0].aqi == 50


def test_nowcast_worked_examples() -> None:
    assert nowcast([20.0] * 12) == pytest.approx(20.0)
    assert nowcast([50, 40, 30, 20] + [10] * 8) == pytest.approx(40.63247863)
    assert nowcast([20, 18] + [16] * 10) == pytest.approx(17.20264515)
    assert nowcast([26, None, 30] + [25] * 9) == pytest.approx(25.99521455)
    assert nowcast([30, None, None] + [25] * 9) is None
    assert nowcast([35.0, 36.0]) == pytest.approx(35.49295775)


def test_dbt_unit_test_expectations_agree_with_the_reference() -> None:
    tests = {t["name"]: t for t in yaml.safe_load(UNIT_TESTS.read_text())["unit_tests"]}
    edges = tests["daily_aqi_matches_the_epa_table_at_every_breakpoint_edge"]
    sql = next(g["rows"] for g in edges["given"] if g.get("format") == "sql")
    triples = re.findall(r"\((\d+), '(pm\d+)', ([\d.]+)\)", sql)
    assert len(triples) == len(edges["expect"]["rows"]) == 31
    expected = {row["location_id"]: row["aqi"] for row in edges["expect"]["rows"]}
    for index, pollutant, value in triples:
        assert expected[1000 + int(index)] == aqi(float(value), pollutant), (index, value)
    nowcasts = tests["nowcast_aqi_on_worked_examples"]["expect"]["rows"]
    examples = {1: [20.0] * 12, 2: [50, 40, 30, 20] + [10] * 8, 3: [20, 18] + [16] * 10,
                4: [26, None, 30] + [25] * 9, 5: [30, None, None] + [25] * 9, 6: [35.0, 36.0]}  # fmt: skip
    for row in nowcasts:
        assert row["aqi"] == aqi(nowcast(examples[row["location_id"]]), "pm25")
        assert row["aqi_category"] == category(row["aqi"])


#: SHA-256 of shared/reference/us_aqi_breakpoints_openaq_aqi_hub.csv, read 2026-12-04
SHARED_CSV_SHA256 = "71ccdd1c496c8a980f927fd7de8bc90d1b2bdad6eb9e8bd3640ea14acfb0afeb"


def test_the_vendored_epa_table_is_the_shared_one() -> None:
    # runs everywhere (CI has no shared folder): the copy must be the file the hash was read
    # from, and where the shared folder is beside the checkout, that file still
    assert hashlib.sha256(EPA_CSV.read_bytes()).hexdigest() == SHARED_CSV_SHA256
    if SHARED_CSV.exists():
        assert EPA_CSV.read_bytes() == SHARED_CSV.read_bytes()
