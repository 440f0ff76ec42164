"""The GX suites as code: what they contain, where their numbers come from, how failures read.

No database here: the suites are built in memory, the thresholds are compared with dbt's own
files (read independently of expectations.reference), and the report is checked on results
shaped like GX's JSON.
"""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aqi.core.environments import REPO_ROOT
from expectations import reference
from expectations.report import CheckReport, ExpectationsFailed, Outcome, outcome_from_result

pytestmark = pytest.mark.unit

DBT = REPO_ROOT / "dbt_project"
GOLD = ["gold.pm25_15min", "gold.daily_avg", "gold.exceedance_30d", "gold.latest"]
NEW_RAW = "raw.openaq_measurements (new rows)"
EPA = ["Good", "Moderate", "Unhealthy for Sensitive Groups", "Unhealthy", "Very Unhealthy",
       "Hazardous"]  # fmt: skip


@pytest.fixture(scope="module")
def suites():
    from expectations.suites import build_suites

    return {ts.name: ts for ts in build_suites()}


def _of(suite, kind: str, **kwargs) -> list:
    """The expectations of a type whose configuration has the given kwargs."""
    found = []
    for e in suite.expectations:
        if e.expectation_type != kind:
            continue
        config = e.configuration
        # GX leaves arguments at their default out of kwargs (e.g. exact_match=True)
        if {k: config.kwargs.get(k, getattr(e, k, None)) for k in kwargs} == kwargs:
            found.append(config)
    return found


def _seed_limits() -> dict[tuple[str, str], float]:
    with (DBT / "seeds" / "pollutant_limits.csv").open(encoding="utf-8") as f:
        return {(r["parameter"], r["units"]): float(r["physical_max"]) for r in csv.DictReader(f)}


# --- the suites --------------------------------------------------------------------------------


def test_one_suite_per_table_named_schema_dot_table(suites) -> None:
    from expectations.suites import build_suites

    assert list(suites) == ["raw.openaq_measurements", NEW_RAW, *GOLD]
    assert [ts.name for ts in build_suites(["gold"])] == GOLD
    assert [ts.group for ts in build_suites(["raw"])] == ["raw", "raw"]
    # raw's values are judged on the new rows only; its shape and freshness on the table
    assert [ts.new_rows_only for ts in suites.values()] == [False, True] + [False] * len(GOLD)
    # gold's on the rows rebuilt since the gate last passed (the runner's window)
    assert [ts.sliced_by for ts in suites.values()] == [None, "loaded_at"] + ["rebuilt_at"] * 4
    for name, ts in suites.items():
        assert ts.suite.name == name and len(ts.suite.expectations) >= 5
    with pytest.raises(ValueError, match="silver"):
        build_suites(["silver"])


def test_raw_suite_checks_the_raw_contract(suites) -> None:
    """The suite's columns and types are the contract's (tests/unit/test_event_contract.py
    holds those to the migration)."""
    from aqi.core.event_contract import RAW_COLUMNS
    from expectations.suites import RAW_KEY

    columns = RAW_COLUMNS
    # the record key the stream relies on (0002 added the timestamp to the coordinates)
    key_ddl = (REPO_ROOT / "aqi" / "core" / "sql" / "0002_kafka_key_with_timestamp.sql").read_text()
    assert f"on raw.openaq_measurements ({', '.join(RAW_KEY[:3])}," in " ".join(key_ddl.split())
    assert "coalesce(kafka_timestamp" in key_ddl
    raw = suites["raw.openaq_measurements"].suite
    (columns_rule,) = _of(raw, "expect_table_columns_to_match_set", exact_match=True)
    assert set(columns_rule.kwargs["column_set"]) == set(columns)
    types = {
        c.kwargs["column"]: c.kwargs["type_"]
        for c in _of(raw, "expect_column_values_to_be_of_type")
    }
    assert types == columns
    assert _of(suites[NEW_RAW].suite, "expect_compound_columns_to_be_unique",
               column_list=list(RAW_KEY))  # fmt: skip


def test_raw_tolerates_a_small_share_and_nothing_else(suites) -> None:
    raw = suites[NEW_RAW].suite
    tolerant = {c.type: c.kwargs.get("mostly") for c in (e.configuration for e in raw.expectations)
                if c.kwargs.get("mostly") is not None}  # fmt: skip
    assert tolerant == {}  # a share alone fails a small batch on noise: share and count
    shares = [e for e in raw.expectations if e.expectation_type == "unexpected_rows_expectation"]
    assert len(shares) == 2
    for share in shares:
        assert "> greatest(0.01 * count(*), 10)" in share.unexpected_rows_query
    assert any("group by t.parameter, t.units" in e.unexpected_rows_query for e in shares)
    assert any("filter (where value is null)" in e.unexpected_rows_query for e in shares)
    latest = [c.kwargs["column"] for c in _of(raw, "expect_column_values_to_be_between")
              if c.kwargs.get("max_value") == {"$PARAMETER": "latest_allowed_timestamp"}]  # fmt: skip
    assert sorted(latest) == ["ingested_at", "period_end", "period_start"]
    assert _of(raw, "expect_column_pair_values_a_to_be_greater_than_b", column_A="period_end",
               column_B="period_start", or_equal=False)  # fmt: skip
    # freshness: the newest row of the whole table (an index lookup), not of the new rows
    assert not _of(raw, "expect_column_max_to_be_between", column="loaded_at")
    table = suites["raw.openaq_measurements"].suite
    (fresh,) = _of(table, "expect_column_max_to_be_between", column="loaded_at")
    assert fresh.kwargs["min_value"] == {"$PARAMETER": "oldest_fresh_loaded_at"}


def test_gold_is_strict(suites) -> None:
    for name in GOLD:
        for expectation in suites[name].suite.expectations:
            assert expectation.configuration.kwargs.get("mostly") in (None, 1), (name, expectation)
            query = getattr(expectation, "unexpected_rows_query", "")
            assert "count(*) filter" not in query, name  # no share threshold in gold


def test_gold_columns_and_grains_are_dbts(suites) -> None:
    grains = {
        "gold.pm25_15min": ["location_id", "window_start"],
        "gold.daily_avg": ["location_id", "parameter", "units", "local_date"],
        "gold.exceedance_30d": ["location_id", "parameter", "local_date"],
        # dbt's test is on (location_id, parameter): stricter than one row per units
        "gold.latest": ["location_id", "parameter"],
    }
    for name, grain in grains.items():
        suite = suites[name].suite
        assert _of(suite, "expect_compound_columns_to_be_unique", column_list=grain), name
        (columns,) = _of(suite, "expect_table_columns_to_match_set")
        assert columns.kwargs["column_set"] == list(reference.model_columns(name.split(".")[1]))
    assert "pm25_avg" in reference.model_columns("pm25_15min")
    # the gold gate slices by rebuilt_at: every gold model has it (and the column check knows)
    for model in reference.gold_models():
        assert reference.REBUILT_AT in reference.model_columns(model), model
        assert suites[f"gold.{model}"].key == reference.model_unique_key(model)
    assert {"aqi", "aqi_category", "hours_covered"} <= set(reference.model_columns("daily_avg"))


def test_ranges_come_from_the_pollutant_limits_seed(suites) -> None:
    limits = _seed_limits()
    assert {(x.parameter, x.units): x.physical_max for x in reference.pollutant_limits()} == limits
    pm25 = suites["gold.pm25_15min"].suite
    assert _of(pm25, "expect_column_values_to_be_between", column="pm25_avg", min_value=0,
               max_value=limits[("pm25", "µg/m³")])  # fmt: skip
    for name, column in ((NEW_RAW, "value"), ("gold.daily_avg", "avg_value"),
                         ("gold.latest", "value")):  # fmt: skip
        (rule,) = [e for e in suites[name].suite.expectations
                   if e.expectation_type == "unexpected_rows_expectation"
                   and f"t.{column} > lim.physical_max" in e.unexpected_rows_query]  # fmt: skip
        for (parameter, units), maximum in limits.items():
            assert f"('{parameter}', '{units}', {maximum!r})" in rule.unexpected_rows_query
    (guided,) = _of(suites["gold.exceedance_30d"].suite, "expect_column_values_to_be_in_set")
    assert sorted(guided.kwargs["value_set"]) == ["pm10", "pm25"]


def test_a_changed_seed_changes_the_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    from expectations import suites as module

    changed = tuple(
        reference.PollutantLimit(x.parameter, x.units, 1234.0, x.who_24h, x.us_24h)
        for x in reference.pollutant_limits()
    )
    monkeypatch.setattr(module, "pollutant_limits", lambda: changed)
    (pm25,) = module.build_suites(["gold"])[:1]
    assert _of(pm25.suite, "expect_column_values_to_be_between", column="pm25_avg",
               max_value=1234.0)  # fmt: skip


def test_aqi_rules_use_the_epa_names_of_the_seed_and_macro(suites) -> None:
    scale = reference.aqi_scale()
    assert list(scale.categories) == EPA and (scale.min_aqi, scale.max_aqi) == (0, 500)
    macro = (DBT / "macros" / "aqi.sql").read_text()
    body = macro[macro.index("macro aqi_category") :]
    assert re.findall(r"(?:then|else) '([^']+)'", body) == EPA
    for name in ("gold.daily_avg", "gold.latest"):
        suite = suites[name].suite
        assert _of(suite, "expect_column_values_to_be_between", column="aqi", min_value=0,
                   max_value=500)  # fmt: skip
        assert _of(suite, "expect_column_values_to_be_in_set", column="aqi_category",
                   value_set=EPA)  # fmt: skip


def test_counts_and_windows(suites) -> None:
    daily = suites["gold.daily_avg"].suite
    assert _of(daily, "expect_column_values_to_be_between", column="hours_covered", min_value=1,
               max_value=24)  # fmt: skip
    exceedance = suites["gold.exceedance_30d"].suite
    assert _of(exceedance, "expect_column_values_to_be_between", column="complete_days",
               min_value=0, max_value=30)  # fmt: skip
    pairs = {(c.kwargs["column_A"], c.kwargs["column_B"])
             for c in _of(exceedance, "expect_column_pair_values_a_to_be_greater_than_b",
                          or_equal=True)}  # fmt: skip
    assert {("complete_days", "days_over_who"), ("days_over_who", "days_over_us")} <= pairs
    pm25 = suites["gold.pm25_15min"].suite
    (window,) = [
        e for e in pm25.expectations if e.expectation_type == "unexpected_rows_expectation"
    ]
    assert "interval '15 minutes'" in window.unexpected_rows_query
    assert _of(pm25, "expect_column_values_to_be_between", column="sensor_count", min_value=1)


def test_freshness_is_the_dbt_sources_error_after() -> None:
    from expectations.suites import CLOCK_SKEW, suite_parameters

    assert reference.freshness_error_after() == timedelta(hours=6)
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert suite_parameters(now) == {
        "latest_allowed_timestamp": (now + CLOCK_SKEW).isoformat(),
        "oldest_fresh_loaded_at": "2026-01-02T06:00:00+00:00",
    }


def test_reference_reads_other_files(tmp_path: Path) -> None:
    sources = tmp_path / "sources.yml"
    sources.write_text(
        "sources:\n  - name: openaq\n    freshness:\n"
        "      error_after: {count: 90, period: minute}\n"
    )
    assert reference.freshness_error_after(sources) == timedelta(minutes=90)
    seed = tmp_path / "limits.csv"
    seed.write_text("parameter,units,physical_max,who_24h,us_24h\nbc,µg/m³,500,,\n")
    assert reference.pollutant_limits(seed) == (
        reference.PollutantLimit("bc", "µg/m³", 500.0, None, None),
    )


# --- the report --------------------------------------------------------------------------------


def _result(kind: str, kwargs: dict, result: dict, success: bool = False, **config) -> dict:
    """One ExpectationValidationResult in GX's JSON form."""
    return {
        "success": success,
        "expectation_config": {
            "type": kind,
            "kwargs": {"batch_id": "b", **kwargs},
            "meta": {},
            **config,
        },
        "result": result,
        "exception_info": {"raised_exception": False, "exception_message": None},
    }


def test_a_failed_range_reads_as_one_line() -> None:
    result = _result(
        "expect_column_values_to_be_between",
        {"column": "pm25_avg", "min_value": 0.0, "max_value": 2000.0},
        {"element_count": 4812, "unexpected_count": 1, "partial_unexpected_list": [5000.0]},
    )
    outcome = outcome_from_result("gold.pm25_15min", result)
    assert outcome.line() == (
        "✗ gold.pm25_15min  expect_column_values_to_be_between(pm25_avg, 0..2000): "
        "1 of 4,812 rows unexpected, e.g. 5000.0"
    )


def test_other_failures_read_well() -> None:
    lines = [
        outcome_from_result("raw.openaq_measurements", _result(
            "expect_column_values_to_not_be_null", {"column": "value", "mostly": 0.99},
            {"element_count": 1000, "unexpected_count": 25,
             "partial_unexpected_list": [None, None]},
        )).line(),
        outcome_from_result("raw.openaq_measurements", _result(
            "expect_column_values_to_be_between",
            {"column": "period_end", "max_value": {"$PARAMETER": "latest_allowed_timestamp"}},
            {"element_count": 10, "unexpected_count": 2,
             "partial_unexpected_list": ["2031-01-01T00:00:00+00:00", "2031-01-02T00:00:00+00:00",
                                         "2031-01-01T00:00:00+00:00"]},
        ), {"latest_allowed_timestamp": "2026-01-01T00:05:00+00:00"}).line(),
        outcome_from_result("gold.daily_avg", _result(
            "expect_compound_columns_to_be_unique", {"column_list": ["location_id", "local_date"]},
            {"element_count": 9, "unexpected_count": 2,
             "partial_unexpected_list": [{"location_id": 3, "local_date": "2025-11-02"}]},
        )).line(),
        outcome_from_result("gold.pm25_15min", _result(
            "unexpected_rows_expectation", {"unexpected_rows_query": "select 1 from {batch}"},
            {"observed_value": 1}, meta={"rule": "window_start on a quarter hour"},
            description="Windows are aligned.",
        ), example_rows=[{"location_id": 17, "window_start": "2025-11-03 16:07:00+00:00"}]).line(),
        outcome_from_result("raw.openaq_measurements", _result(
            "expect_column_max_to_be_between",
            {"column": "loaded_at", "min_value": {"$PARAMETER": "oldest_fresh_loaded_at"}},
            {"observed_value": "2026-01-01T00:00:00+00:00"},
        ), {"oldest_fresh_loaded_at": "2026-01-01T06:00:00+00:00"}).line(),
        outcome_from_result("gold.latest", _result(
            "expect_table_columns_to_match_set",
            {"column_set": ["a", "b", "c"], "exact_match": True},
            {"observed_value": ["a", "b", "d"],
             "details": {"mismatched": {"missing": ["c"], "unexpected": ["d"]}}},
        )).line(),
        outcome_from_result("gold.latest", {
            **_result("expect_column_values_to_be_between", {"column": "aqi", "min_value": 0},
                      {}),
            "exception_info": {"raised_exception": True,
                               "exception_message": 'column "aqi" does not exist\nLINE 1 ...'},
        }).line(),
    ]  # fmt: skip
    assert lines == [
        (
            "✗ raw.openaq_measurements  expect_column_values_to_not_be_null(value not null, mostly "
            "99%): 25 of 1,000 rows unexpected (2.50%, at most 1% allowed), e.g. None"
        ),
        (
            "✗ raw.openaq_measurements  expect_column_values_to_be_between(period_end, <= "
            "2026-01-01T00:05:00+00:00): 2 of 10 rows unexpected, e.g. 2031-01-01T00:00:00+00:00; "
            "2031-01-02T00:00:00+00:00"
        ),
        (
            "✗ gold.daily_avg  expect_compound_columns_to_be_unique((location_id, local_date) "
            "unique): 2 of 9 rows unexpected, e.g. (location_id=3, local_date=2025-11-02)"
        ),
        (
            "✗ gold.pm25_15min  unexpected_rows_expectation(window_start on a quarter hour): 1 row "
            "unexpected, sample rows:\n    location_id=17, window_start=2025-11-03 16:07:00+00:00"
        ),
        (
            "✗ raw.openaq_measurements  expect_column_max_to_be_between(max(loaded_at) >= "
            "2026-01-01T06:00:00+00:00): observed 2026-01-01T00:00:00+00:00"
        ),
        (
            "✗ gold.latest  expect_table_columns_to_match_set(exactly the 3 expected columns): "
            "observed missing c; unexpected d"
        ),
        (
            '✗ gold.latest  expect_column_values_to_be_between(aqi, >= 0): error: column "aqi" does '
            "not exist"
        ),
    ]


def test_report_text_and_failure_exception(tmp_path: Path) -> None:
    ok = Outcome("gold.latest", "expect_column_values_to_be_between", "aqi, 0..500", True)
    bad = Outcome("gold.pm25_15min", "expect_column_values_to_be_between", "pm25_avg, 0..2000",
                  False, unexpected=1, checked=4812, examples=("5000.0",))  # fmt: skip
    docs = tmp_path / "gx_docs" / "index.html"
    report = CheckReport(success=False, results=[bad, ok, ok], docs_index=docs, suites=("gold",),
                         tables=("gold.pm25_15min", "gold.latest"))  # fmt: skip
    assert report.text().splitlines() == [
        "Great Expectations (gold): 3 expectations on 2 tables, 1 failed",
        (
            "✗ gold.pm25_15min  expect_column_values_to_be_between(pm25_avg, 0..2000): 1 of 4,812 "
            "rows unexpected, e.g. 5000.0"
        ),
        "✓ gold.latest  2 expectations passed",
        f"Data Docs: {docs}",
    ]
    assert report.failures == [bad]
    with pytest.raises(ExpectationsFailed) as raised:
        report.raise_for_failures()
    assert str(raised.value) == report.text() and raised.value.report is report
    CheckReport(success=True, results=[ok], docs_index=docs).raise_for_failures()


def test_runner_helpers_keep_the_password_out() -> None:
    from expectations import runner

    url = "postgresql://aq:s3cr%2Ft@db.example:5432/aq?sslmode=require"
    assert runner._sqlalchemy_url(url) == (
        "postgresql+psycopg://aq:s3cr%2Ft@db.example:5432/aq?sslmode=require"
    )
    message = runner._scrub(f"could not use {url}: password s3cr%2Ft rejected", url)
    assert "s3cr" not in message and "postgresql://aq:***@db.example:5432/aq" in message
    assert runner.SUITES == ("raw", "gold")


def test_sample_rows_and_the_judged_slice_read_under_the_failure(tmp_path: Path) -> None:
    result = _result(
        "expect_column_values_to_be_between",
        {"column": "pm25_avg", "min_value": 0.0, "max_value": 2000.0},
        {"element_count": 12, "unexpected_count": 7, "partial_unexpected_list": [5000.0] * 7},
    )
    rows = [{"location_id": i, "window_start": "2025-11-03 16:00:00+00:00", "pm25_avg": 5000.0}
            for i in range(7)]  # fmt: skip
    outcome = outcome_from_result("gold.pm25_15min", result, example_rows=rows)
    head, *samples = outcome.line().splitlines()
    assert head == (
        "✗ gold.pm25_15min  expect_column_values_to_be_between(pm25_avg, 0..2000): 7 of 12 rows "
        "unexpected, sample rows:"
    )
    assert len(samples) == 5  # at most MAX_EXAMPLES
    assert samples[0] == "    location_id=0, window_start=2025-11-03 16:00:00+00:00, pm25_avg=5000.0"
    report = CheckReport(
        success=False, results=[outcome], docs_index=tmp_path / "index.html", suites=("gold",),
        tables=("gold.pm25_15min",),
        scopes={"gold.pm25_15min": "12 rows rebuilt since 2026-01-01T00:00:00+00:00 (as asked)"},
    )  # fmt: skip
    lines = report.text().splitlines()
    assert lines[1] == head and lines[2:7] == samples
    assert lines[7] == "    judged: 12 rows rebuilt since 2026-01-01T00:00:00+00:00 (as asked)"


def test_urls_in_values_and_errors_are_masked() -> None:
    from expectations.report import mask_urls

    assert mask_urls("see postgresql://aq:s3cret@db:5432/aq and https://x.org/a:b") == (
        "see postgresql://aq:***@db:5432/aq and https://x.org/a:b"
    )
    result = {
        **_result("expect_column_values_to_be_in_set", {"column": "source", "value_set": ["a"]},
                  {"element_count": 2, "unexpected_count": 1,
                   "partial_unexpected_list": ["http://u:pw@h/x"]}),
        "exception_info": {"raised_exception": True,
                           "exception_message": "cannot connect to postgresql://aq:pw@db/aq"},
    }  # fmt: skip
    outcome = outcome_from_result("raw.openaq_measurements", result,
                                  example_rows=[{"source": "http://u:pw@h/x"}])  # fmt: skip
    assert "pw" not in outcome.line() and "postgresql://aq:***@db/aq" in outcome.line()
    assert "http://u:***@h/x" in "".join(outcome.samples + outcome.examples)


def test_sample_queries_restate_the_rules_with_the_key() -> None:
    from expectations.runner import EXAMPLE_ROWS, sample_query

    key, table = ("location_id", "local_date"), '"gold"."daily_avg"'

    def text(kind: str, **kwargs) -> tuple[str, list]:
        statement, params = sample_query(kind, kwargs, key, table)
        return statement.as_string(), params

    between, params = text("expect_column_values_to_be_between", column="aqi", min_value=0,
                           max_value=500)  # fmt: skip
    assert between == (
        'select "location_id", "local_date", "aqi" from "gold"."daily_avg" where "aqi" is not '
        f'null and ("aqi" < %s or "aqi" > %s) limit {EXAMPLE_ROWS}'
    )
    assert params == [0, 500]
    strict, params = text("expect_column_values_to_be_between", column="n", max_value=3,
                          strict_max=True)  # fmt: skip
    assert '("n" >= %s)' in strict and params == [3]
    in_set, params = text("expect_column_values_to_be_in_set", column="aqi_category",
                          value_set=["Good"])  # fmt: skip
    assert 'not ("aqi_category" = any(%s))' in in_set and params == [["Good"]]
    pair, params = text("expect_column_pair_values_a_to_be_greater_than_b", column_A="a",
                        column_B="b", or_equal=True)  # fmt: skip
    assert 'select "location_id", "local_date", "a", "b" from' in pair
    assert 'not coalesce("a" >= "b", false)' in pair and params == []
    unique, _ = text("expect_compound_columns_to_be_unique", column_list=list(key))
    assert unique.startswith('select "location_id", "local_date" from "gold"."daily_avg" where')
    assert "group by \"location_id\", \"local_date\" having count(*) > 1" in unique
    # no rows to show for a schema or an aggregate rule
    assert sample_query("expect_table_columns_to_match_set", {"column_set": []}, key, table) is None
    assert sample_query("expect_column_max_to_be_between", {"column": "x"}, key, table) is None
