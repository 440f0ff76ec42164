"""The GX quality gates on a real warehouse: clean data passes, each kind of breakage fails.

One database per module: simulated events (with OpenAQ's nulls, sentinels and spikes) go
straight into raw, `aqi dbt build` builds silver and gold, then each case breaks one thing,
runs the checks and restores the table (rows and indexes) before the next case. Each case
expects exactly the expectation it breaks to fail - and nothing else - and the report to show
the offending row (its key columns and values). Raw's value checks judge the rows loaded
since the gate last passed, gold's the rows rebuilt since, so a case first marks every row of
its table as newly loaded or rebuilt; the last tests show the windows themselves (gold's with
a real incremental dbt run).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import isolated_env, run_aqi, run_aqi_dbt, temporary_database
from psycopg import sql
from warehouse_support import load_raw_events

from aqi.core.config import Settings, load_settings
from aqi.core.connections import database_url
from expectations.runner import ChecksUnavailable, ExpectationsFailed, require_checks, run_checks
from ingestion.simulator import SimulationConfig, simulate

# the module's tests share one costly fixture: one xdist worker runs them all (make test)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("expectations")]

SIMULATION = SimulationConfig(locations=3, days=3, seed=11, end=datetime(2025, 11, 4, tzinfo=UTC))
NEW_RAW = "raw.openaq_measurements (new rows)"
#: the suites: raw's table (shape, freshness) and its new rows (values), then gold's tables
TABLES = ["raw.openaq_measurements", NEW_RAW, "gold.pm25_15min", "gold.daily_avg",
          "gold.exceedance_30d", "gold.latest"]  # fmt: skip
#: what a raw case runs first: every row counts as loaded since the gate last passed
RELOADED = "update raw.openaq_measurements set loaded_at = clock_timestamp()"
GOLD = TABLES[2:]
#: the day after SIMULATION's: what the incremental dbt run of the gold-slice test adds
NEXT_DAY = SimulationConfig(locations=3, days=1, seed=11, end=datetime(2025, 11, 5, tzinfo=UTC))


def rebuilt(table: str) -> str:
    """What a gold case runs first: every row counts as rebuilt since the gate last passed."""
    return f"update {table} set rebuilt_at = clock_timestamp()"


@pytest.fixture(scope="module")
def warehouse(
    services: dict, aq_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings of a database with raw loaded and the warehouse built (dropped after)."""
    with temporary_database(aq_settings, "test_gx") as url:
        load_raw_events(url, simulate(SIMULATION))
        tmp = tmp_path_factory.mktemp("gx")
        result = run_aqi_dbt(["build"], isolated_env(tmp / "aq", AQ_DATABASE_URL=url), tmp)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        yield load_settings({"AQ_DATABASE_URL": url, "AQ_HOME": str(tmp / "home")}, dotenv=None)


@contextmanager
def altered(settings: Settings, table: str, *statements: str) -> Iterator[None]:
    """Run ``statements`` on ``table`` (its unique indexes and primary key dropped, so a case
    can plant a duplicate), restore it afterwards."""
    url = database_url(settings)
    schema, name = table.split(".")
    with psycopg.connect(url, autocommit=True) as conn:
        indexes = conn.execute(
            "select indexname, indexdef from pg_indexes where schemaname = %s and tablename = %s"
            " and indexdef like 'CREATE UNIQUE%%' and indexname not in"
            " (select conname from pg_constraint where contype = 'p')",
            (schema, name),
        ).fetchall()
        keys = conn.execute(
            "select conname, pg_get_constraintdef(oid) from pg_constraint"
            " where conrelid = %s::regclass and contype = 'p'",
            (table,),
        ).fetchall()
        conn.execute(f"create table public._saved as table {table}")
        try:
            for index, _ in indexes:
                conn.execute(sql.SQL("drop index {}").format(sql.Identifier(schema, index)))
            for key, _ in keys:
                conn.execute(sql.SQL(f"alter table {table} drop constraint {{}}").format(
                    sql.Identifier(key)))  # fmt: skip
            for statement in statements:
                conn.execute(statement)
            yield
        finally:
            conn.execute(f"truncate {table}")
            conn.execute(f"insert into {table} select * from public._saved")
            conn.execute("drop table public._saved")
            for _, definition in indexes:
                conn.execute(definition)
            for key, definition in keys:
                conn.execute(sql.SQL(f"alter table {table} add constraint {{}} {definition}")
                             .format(sql.Identifier(key)))  # fmt: skip


def _failed(report) -> list[tuple[str, str]]:
    return [(o.table, o.expectation) for o in report.failures]


def _line(report, table: str, expectation: str) -> str:
    (line,) = [
        o.line() for o in report.failures if (o.table, o.expectation) == (table, expectation)
    ]
    return line


def _one_row(table: str, where: str = "true") -> str:
    """``ctid = (...)``: one row of ``table`` (ctid is PostgreSQL's row address)."""
    return f"ctid = (select ctid from {table} where {where} order by ctid limit 1)"


# --- clean data ---------------------------------------------------------------------------------


def test_clean_warehouse_passes_and_builds_data_docs(warehouse: Settings) -> None:
    url = database_url(warehouse)
    with psycopg.connect(url) as conn:
        # the tolerance is exercised: raw holds what silver rejects, gold does not
        bad, total = conn.execute(
            "select count(*) filter (where value is null or value < 0 or value > 2000), count(*)"
            " from raw.openaq_measurements where parameter = 'pm25'"
        ).fetchone()
        rejected = conn.execute("select count(*) from silver.rejected_measurements").fetchone()[0]
    assert 0 < bad < 0.01 * total and rejected > 0

    lines: list[str] = []
    report = run_checks(warehouse, echo=lines.append)
    assert report.success, report.text()
    assert report.tables == tuple(TABLES) and {o.table for o in report.results} == set(TABLES)
    assert len(report.results) > 50
    assert len(lines) == 9 and lines[-1].endswith("gx_docs/index.html")
    assert "checks: raw: judging " in lines[0] and "(the gate has not passed yet)" in lines[0]
    for line, table in zip(lines[1:5], GOLD, strict=True):
        assert line.startswith(f"checks: {table}: judging ")
        assert line.endswith("rows rebuilt ever (the gate has not passed yet)")
    text = report.text().splitlines()
    assert text[0].startswith("Great Expectations (raw, gold): ")
    assert text[0].endswith("expectations on 6 tables, all passed")
    assert [line[2:].split("  ")[0] for line in text[1:-1]] == TABLES
    assert text[-1] == f"Data Docs: {warehouse.aq_home / 'gx_docs' / 'index.html'}"

    docs = warehouse.aq_home / "gx_docs"
    assert report.docs_index == docs / "index.html" and report.docs_index.is_file()
    index = report.docs_index.read_text()
    assert all(table in index for table in TABLES)
    assert len(list((docs / "validations").rglob("*.html"))) == len(TABLES)
    assert (warehouse.aq_home / "gx" / "great_expectations.yml").is_file()
    password = psycopg.conninfo.conninfo_to_dict(url)["password"]
    for path in warehouse.aq_home.rglob("*"):
        if path.is_file():
            assert password not in path.read_text(errors="replace"), path
    assert password not in report.text() and password not in "\n".join(lines)


# --- each kind of breakage ------------------------------------------------------------------------

#: the key columns and values a sample row of the report starts with (a regex)
DAILY_KEY = r"location_id=\d+, parameter=\w+, units=\S+, local_date=[\d-]+"
RAW_ROW = r"kafka_topic=direct, kafka_partition=0, kafka_offset=\d+, kafka_timestamp=[^,]+"
QUARTER = r"window_start=[\d-]+ [\d:]+\+00:00"

#: case: (table, statements, the failing expectation, its line, its sample row, sample rows)
CASES = {
    "pm25_avg above the physical maximum": (
        "gold.pm25_15min",
        [rebuilt("gold.pm25_15min"),
         "update gold.pm25_15min set pm25_avg = 5000 where " + _one_row("gold.pm25_15min")],
        "expect_column_values_to_be_between",
        "(pm25_avg, 0..2000): 1 of {rows} rows unexpected, sample rows:",
        rf"location_id=\d+, {QUARTER}, pm25_avg=5000.0", 1,
    ),
    "AQI above 500": (
        "gold.daily_avg",
        [rebuilt("gold.daily_avg"), "update gold.daily_avg set aqi = 600 where "
         + _one_row("gold.daily_avg", "aqi is not null")],
        "expect_column_values_to_be_between",
        "(aqi, 0..500): 1 of {rows} rows unexpected, sample rows:",
        rf"{DAILY_KEY}, aqi=600", 1,
    ),
    "bogus AQI category": (
        "gold.daily_avg",
        [rebuilt("gold.daily_avg"),
         "update gold.daily_avg set aqi_category = 'Unhealthy for sensitive groups' where "
         + _one_row("gold.daily_avg", "aqi is not null")],
        "expect_column_values_to_be_in_set",
        ("(aqi_category in {Good, Moderate, Unhealthy for Sensitive Groups, Unhealthy, Very "
        "Unhealthy, Hazardous}): 1 of {rows} rows unexpected, sample rows:"),
        rf"{DAILY_KEY}, aqi_category=Unhealthy for sensitive groups", 1,
    ),
    "daily mean above the physical maximum of its units": (
        "gold.daily_avg",
        [rebuilt("gold.daily_avg"), "update gold.daily_avg set avg_value = 2100 where "
         + _one_row("gold.daily_avg", "parameter = 'no2' and units = 'ppb'")],
        "unexpected_rows_expectation",
        "(avg_value <= physical_max of its parameter and units): 1 row unexpected, sample rows:",
        (r"location_id=\d+, local_date=[\d-]+, parameter=no2, units=ppb, avg_value=2100.0, "
         r"physical_max="), 1,
    ),
    "misaligned window": (
        "gold.pm25_15min",
        [rebuilt("gold.pm25_15min"), "update gold.pm25_15min set window_start = window_start"
         " + interval '7 minutes 30 seconds', window_end = window_end + interval '7 minutes 30"
         " seconds' where " + _one_row("gold.pm25_15min")],
        "unexpected_rows_expectation",
        ("(window_start on a UTC quarter hour, window_end = window_start + 15 min): 1 row "
        "unexpected, sample rows:"),
        r"location_id=\d+, window_start=[\d-]+ \d\d:\d[27]:30\+00:00, window_end=", 1,
    ),
    "window longer than 15 minutes": (
        "gold.pm25_15min",
        [rebuilt("gold.pm25_15min"), "update gold.pm25_15min set window_end = window_start"
         " + interval '30 minutes' where " + _one_row("gold.pm25_15min")],
        "unexpected_rows_expectation",
        "(window_start on a UTC quarter hour, window_end = window_start + 15 min): 1 row",
        rf"location_id=\d+, {QUARTER}, window_end=", 1,
    ),
    "duplicated daily key": (
        "gold.daily_avg",
        [rebuilt("gold.daily_avg"), "insert into gold.daily_avg select * from gold.daily_avg"
         " where " + _one_row("gold.daily_avg")],
        "expect_compound_columns_to_be_unique",
        ("((location_id, parameter, units, local_date) unique): 2 of {rows} rows unexpected, "
         "sample rows:"),
        rf"{DAILY_KEY}$", 1,  # the two rows are the same: shown once
    ),
    "more days over the US standard than over WHO's": (
        "gold.exceedance_30d",
        [rebuilt("gold.exceedance_30d"), "update gold.exceedance_30d set days_over_us ="
         " days_over_who + 1 where " + _one_row("gold.exceedance_30d")],
        "expect_column_pair_values_a_to_be_greater_than_b",
        "(days_over_who >= days_over_us): 1 of {rows} rows unexpected, sample rows:",
        (r"location_id=\d+, parameter=pm(25|10), local_date=[\d-]+, days_over_who=\d+, "
         r"days_over_us=\d+"), 1,
    ),
    "raw period_end in the future": (
        NEW_RAW,
        [RELOADED, "update raw.openaq_measurements set period_end = now() + interval '1 day' "
         "where " + _one_row("raw.openaq_measurements")],
        "expect_column_values_to_be_between",
        "(period_end, <= ",
        rf"{RAW_ROW}, period_end=20\d\d-", 1,
    ),
    "raw period_start after period_end": (
        NEW_RAW,
        [RELOADED, "update raw.openaq_measurements set period_start = period_end + "
         "interval '1 hour' where "
         + _one_row("raw.openaq_measurements", "period_end < now() - interval '1 day'")],
        "expect_column_pair_values_a_to_be_greater_than_b",
        "(period_end > period_start): 1 of {rows} rows unexpected, sample rows:",
        rf"{RAW_ROW}, period_end=[^,]+, period_start=", 1,
    ),
    "raw with 3% of one series out of range": (
        NEW_RAW,
        [RELOADED, ("update raw.openaq_measurements set value = 9999 where parameter = 'pm25' "
         "and value is not null and kafka_offset % 33 = 0")],
        "unexpected_rows_expectation",
        ("(value in 0..physical_max of its parameter and units, at most 1% (or 10) outside per "
         "parameter and units): 1 row unexpected, sample rows:"),
        r"parameter=pm25, units=µg/m³, physical_max=2000.0, readings=\d+, out_of_range=\d+", 1,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_breakage_fails_naming_the_expectation(warehouse: Settings, case: str) -> None:
    table, statements, expectation, finding, sample, samples = CASES[case]
    group, relation = table.split(".")[0], table.split()[0]
    with psycopg.connect(database_url(warehouse)) as conn:
        rows = conn.execute(f"select count(*) from {relation}").fetchone()[0]
    with altered(warehouse, relation, *statements):
        report = run_checks(warehouse, [group], echo=lambda line: None)
    assert not report.success
    assert _failed(report) == [(table, expectation)], report.text()
    expected = finding.replace("{rows}", f"{rows + (case == 'duplicated daily key'):,}")
    head, *rows_shown = _line(report, table, expectation).splitlines()
    assert f"✗ {table}  {expectation}{expected}" in head
    # the offending rows, each with its key columns and the values that broke the rule
    assert len(rows_shown) == samples, rows_shown
    for row in rows_shown:
        assert re.match(rf"    {sample}", row), row
    text = report.text()
    assert f"✗ {table}  {expectation}(" in text and "\n".join(rows_shown) in text
    # every row of the table was marked as new, so what was judged is the whole slice
    assert f"    judged: {rows + (case == 'duplicated daily key'):,} rows " in text
    assert text.splitlines()[-1].startswith("Data Docs: ")


def test_raw_tolerates_one_percent_out_of_range(warehouse: Settings) -> None:
    with altered(
        warehouse,
        "raw.openaq_measurements",
        RELOADED,
        # ~0.5% more pm25 readings above the maximum: still under 1% with the simulated spikes
        "update raw.openaq_measurements set value = 9999 where parameter = 'pm25' "
        "and value between 0 and 2000 and kafka_offset % 200 = 0",
    ):
        report = run_checks(warehouse, ["raw"], echo=lambda line: None)
    assert report.success, report.text()


def test_stale_raw_fails_freshness(warehouse: Settings) -> None:
    later = datetime.now(UTC) + timedelta(hours=6, minutes=5)  # dbt's error_after is 6 hours
    report = run_checks(warehouse, ["raw"], echo=lambda line: None, now=later)
    assert _failed(report) == [("raw.openaq_measurements", "expect_column_max_to_be_between")]
    assert "(max(loaded_at) >= " in report.text()
    assert run_checks(warehouse, ["raw"], echo=lambda line: None).success


def test_require_checks_raises_with_the_report(warehouse: Settings) -> None:
    negative_aqi = (
        "update gold.latest set aqi = -1, rebuilt_at = clock_timestamp() where aqi is not null"
    )
    with (
        altered(warehouse, "gold.latest", negative_aqi),
        pytest.raises(ExpectationsFailed) as raised,
    ):
        require_checks(warehouse, ["gold"], echo=lambda line: None)
    message = str(raised.value)
    assert "✗ gold.latest  expect_column_values_to_be_between(aqi, 0..500)" in message
    assert re.search(r"\n    location_id=\d+, parameter=pm(25|10), aqi=-1\n", message), message
    assert message == raised.value.report.text()
    password = psycopg.conninfo.conninfo_to_dict(database_url(warehouse))["password"]
    assert password not in message


def test_missing_tables_are_one_clear_line(fresh_database: str, tmp_path: Path) -> None:
    settings = load_settings(
        {"AQ_DATABASE_URL": fresh_database, "AQ_HOME": str(tmp_path)}, dotenv=None
    )
    with pytest.raises(ChecksUnavailable) as raised:
        run_checks(settings, echo=lambda line: None)
    message = str(raised.value)
    assert "\n" not in message and all(table.split()[0] in message for table in TABLES)
    assert "aqi db migrate" in message and "aqi dbt build" in message
    assert not (tmp_path / "gx").exists()  # GX was never started
    with pytest.raises(ChecksUnavailable, match="unknown suite"):
        run_checks(settings, ["silver"], echo=lambda line: None)


# --- raw judges new data ---------------------------------------------------------------------


def _judged(lines: list[str]) -> int:
    """The rows the run said it judged ("checks: raw: judging 1,234 rows loaded ...")."""
    (line,) = [line for line in lines if line.startswith("checks: raw: judging ")]
    return int(line.split()[3].replace(",", ""))


def test_raw_gate_judges_the_rows_loaded_since_it_last_passed(warehouse: Settings) -> None:
    url = database_url(warehouse)
    quiet: list[str] = []
    assert run_checks(warehouse, ["raw"], echo=quiet.append).success
    # nothing loaded since: nothing to judge, and that passes
    lines: list[str] = []
    assert run_checks(warehouse, ["raw"], echo=lines.append).success
    assert _judged(lines) == 0 and "(the gate last passed)" in lines[0]

    # an old row made impossible (loaded before the gate passed) does not fail later runs...
    old_row = ("update raw.openaq_measurements set period_start = period_end + interval '1 hour'"
               " where " + _one_row("raw.openaq_measurements"))  # fmt: skip
    with altered(warehouse, "raw.openaq_measurements", old_row):
        assert run_checks(warehouse, ["raw"], echo=quiet.append).success
        # ... but is found when the whole table is asked for
        report = run_checks(warehouse, ["raw"], echo=quiet.append, since="all")
        assert _failed(report) == [(NEW_RAW, "expect_column_pair_values_a_to_be_greater_than_b")]

    # a bad row loaded since fails the gate, and keeps failing it: the mark does not move
    new_row = (
        "insert into raw.openaq_measurements select schema_version, source, ingest_mode,"
        " ingested_at, location_id, location_name, sensor_id, parameter_id, parameter, units,"
        " value, period_end + interval '1 hour', period_end, timezone, latitude, longitude,"
        " country_code, provider, is_mobile, is_monitor, flagged, coverage_percent,"
        " 'test.bad', kafka_partition, kafka_offset, kafka_timestamp, clock_timestamp()"
        " from raw.openaq_measurements where " + _one_row("raw.openaq_measurements")
    )
    with altered(warehouse, "raw.openaq_measurements", new_row):
        for _ in range(2):
            lines = []
            report = run_checks(warehouse, ["raw"], echo=lines.append)
            assert _judged(lines) == 1
            assert _failed(report) == [(NEW_RAW, "expect_column_pair_values_a_to_be_greater_than_b")]
        # looked into and let past: a run judging from a later time passes and moves the mark
        later = datetime.now(UTC)
        assert run_checks(warehouse, ["raw"], echo=quiet.append, since=later).success
        lines = []
        assert run_checks(warehouse, ["raw"], echo=lines.append).success
        assert _judged(lines) == 0
    with psycopg.connect(url) as conn:
        judged_from = conn.execute(
            "select judged_from from raw.check_watermarks where suite = 'raw'"
        ).fetchone()[0]
    assert judged_from is not None


def test_aqi_check_since_is_validated(warehouse: Settings, tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "aq", AQ_DATABASE_URL=database_url(warehouse))
    result = run_aqi(["check", "--suite", "raw", "--since", "2026-12-03T10:00:00"], env, tmp_path)
    assert result.returncode == 2 and "--since" in result.stderr
    assert "offset" in result.stderr and "Traceback" not in result.stderr
    result = run_aqi(["check", "--since", "all"], env, tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded ever (the whole table, as asked)" in result.stdout
    for table in GOLD:
        assert f"checks: {table}: judging " in result.stdout
    assert result.stdout.count("rows rebuilt ever (the whole table, as asked)") == len(GOLD)


# --- gold judges the slices dbt rebuilt ------------------------------------------------------


def _gold_marks(url: str) -> dict[str, datetime]:
    with psycopg.connect(url) as conn:
        return dict(
            conn.execute(
                "select suite, next_loaded_from from raw.check_watermarks where suite like 'gold.%'"
            ).fetchall()
        )


def _judging(lines: list[str]) -> dict[str, int]:
    """Rows each gold table's run judged ("checks: gold.latest: judging 12 rows rebuilt ...")."""
    found = (re.match(r"checks: (gold\.\w+): judging ([\d,]+) rows? rebuilt", x) for x in lines)
    return {m.group(1): int(m.group(2).replace(",", "")) for m in found if m}


def test_gold_gate_judges_the_slices_dbt_rebuilt(warehouse: Settings, tmp_path: Path) -> None:
    url = database_url(warehouse)
    quiet: list[str] = []
    assert run_checks(warehouse, ["gold"], echo=quiet.append).success
    passed = _gold_marks(url)
    assert set(passed) == set(GOLD)

    # a real incremental run: dbt rebuilds the windows, days and series the new day touches
    load_raw_events(url, simulate(NEXT_DAY))
    env = isolated_env(tmp_path / "aq", AQ_DATABASE_URL=url)
    result = run_aqi_dbt(["run"], env, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    with psycopg.connect(url) as conn:
        fresh = {
            t: conn.execute(f"select count(*) from {t} where rebuilt_at >= %s", (passed[t],))
            .fetchone()[0]
            for t in GOLD
        }  # fmt: skip
        total = conn.execute("select count(*) from gold.pm25_15min").fetchone()[0]
    assert all(fresh.values()) and fresh["gold.pm25_15min"] < total / 2, (fresh, total)

    # a bad value in a rebuilt slice fails the gate, naming table, rule, column and row ...
    mark = passed["gold.pm25_15min"].isoformat()
    bad_new = (
        "update gold.pm25_15min set pm25_avg = 5000 where "
        + _one_row("gold.pm25_15min", f"rebuilt_at >= '{mark}'")
    )
    with altered(warehouse, "gold.pm25_15min", bad_new):
        with psycopg.connect(url) as conn:
            location, start = conn.execute(
                "select location_id, window_start from gold.pm25_15min where pm25_avg = 5000"
            ).fetchone()
        for attempt in range(2):  # and again: a failed table keeps its mark, is judged again
            lines: list[str] = []
            with pytest.raises(ExpectationsFailed) as raised:
                require_checks(warehouse, ["gold"], echo=lines.append)
            judged = _judging(lines)
            assert judged["gold.pm25_15min"] == fresh["gold.pm25_15min"]
            if attempt == 0:
                assert judged == fresh  # the slices dbt rebuilt, no more
            report = raised.value.report
            assert _failed(report) == [("gold.pm25_15min", "expect_column_values_to_be_between")]
            message = str(raised.value).splitlines()
            failure = message.index(
                "✗ gold.pm25_15min  expect_column_values_to_be_between(pm25_avg, 0..2000): 1 of "
                f"{fresh['gold.pm25_15min']:,} rows unexpected, sample rows:"
            )
            assert message[failure + 1 : failure + 3] == [
                f"    location_id={location}, window_start={start}, pm25_avg=5000.0",
                (f"    judged: {fresh['gold.pm25_15min']:,} rows rebuilt since {mark} "
                 "(the gate last passed)"),
            ]
            marks = _gold_marks(url)
            assert marks["gold.pm25_15min"] == passed["gold.pm25_15min"]
            # the tables that passed moved on
            assert all(marks[t] > passed[t] for t in GOLD if t != "gold.pm25_15min")

    # fixed: the gate passes and every mark moves past the rebuilt rows
    lines = []
    assert run_checks(warehouse, ["gold"], echo=lines.append).success
    assert _judging(lines)["gold.pm25_15min"] == fresh["gold.pm25_15min"]
    moved = _gold_marks(url)
    assert all(moved[t] > passed[t] for t in GOLD)

    # a bad value in an old slice (rebuilt before the mark) is not read by the gate ...
    bad_old = "update gold.pm25_15min set pm25_avg = 5000 where " + _one_row(
        "gold.pm25_15min", f"rebuilt_at < '{mark}'"
    )
    with altered(warehouse, "gold.pm25_15min", bad_old):
        lines = []
        assert run_checks(warehouse, ["gold"], echo=lines.append).success
        assert _judging(lines)["gold.pm25_15min"] == 0
        after_pass = _gold_marks(url)
        assert after_pass["gold.pm25_15min"] > moved["gold.pm25_15min"]
        # ... but the whole-table check (the nightly run) finds it
        lines = []
        report = run_checks(warehouse, ["gold"], echo=lines.append, since="all")
        assert _judging(lines)["gold.pm25_15min"] == total
        assert _failed(report) == [("gold.pm25_15min", "expect_column_values_to_be_between")]
        assert re.search(
            rf"\n    location_id=\d+, {QUARTER}, pm25_avg=5000.0\n    judged: {total:,} rows "
            r"rebuilt ever \(the whole table, as asked\)\n",
            report.text(),
        ), report.text()
        assert _gold_marks(url)["gold.pm25_15min"] == after_pass["gold.pm25_15min"]


def test_python_c_does_not_exit_silently_on_import() -> None:
    # pyspark (imported by GX) exits 0 on import when __main__ has no file: see expectations._gx
    code = "import os, expectations._gx; print('imported', os.environ['GX_ANALYTICS_ENABLED'])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "imported false", result.stderr
    assert "Traceback" not in result.stderr
