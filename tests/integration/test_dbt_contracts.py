"""What the warehouse promises its readers, on real dbt runs against a private database.

- the gold models' enforced contracts: a type the SQL changes fails the (incremental) build;
- rebuilt_at: the rows a run recomputed carry its time, the others keep theirs;
- data tests read the rows of the latest run, whole tables with --vars '{full_tests: true}';
- the selectors name the expected nodes;
- source freshness errors on a raw table older than its error_after.

dbt writes its target/ and logs into the test's tmp_path (DBT_TARGET_PATH, DBT_LOG_PATH), so
these runs neither read nor clobber dbt_project/target.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import REPO_ROOT, isolated_env, run_aqi, run_aqi_dbt
from warehouse_support import load_raw_events

from aqi.core.gold_contract import dashboard_views
from ingestion.simulator import SimulationConfig, simulate

pytestmark = pytest.mark.integration

AS_OF = "2030-01-01T00:00:00Z"
GOLD = ["pm25_15min", "daily_avg", "exceedance_30d", "latest"]
END = datetime(2025, 6, 10, tzinfo=UTC)


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    return isolated_env(
        tmp_path / "aq",
        AQ_DATABASE_URL=url,
        DBT_TARGET_PATH=str(tmp_path / "target"),
        DBT_LOG_PATH=str(tmp_path / "logs"),
    )


def _dbt(tmp_path: Path, url: str, *args: str, vars_: dict | None = None):
    """`aqi dbt <args>` (in this process: run_aqi_dbt) with as_of pinned; its result."""
    variables = json.dumps({"as_of": AS_OF, **(vars_ or {})})
    return run_aqi_dbt([*args, "--vars", variables], _env(tmp_path, url), tmp_path)


def _ok(result) -> None:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _failed_tests(tmp_path: Path) -> set[str]:
    """Names of the data tests that failed or errored in the last dbt command."""
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())
    return {
        r["unique_id"].split(".")[2]
        for r in results["results"]
        if r["unique_id"].startswith("test.") and r["status"] in ("fail", "error")
    }


def _load_days(url: str, days: int, seed: int, end: datetime) -> None:
    load_raw_events(url, simulate(SimulationConfig(locations=4, days=days, seed=seed, end=end)))


def test_contract_fails_an_incremental_build_whose_sql_changes_a_type(
    tmp_path: Path, fresh_database: str
) -> None:
    project = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns(
        "target", "logs", "dbt_packages"))  # fmt: skip
    dirs = ("--project-dir", str(project), "--profiles-dir", str(project))

    listed = _dbt(tmp_path, fresh_database, "ls", *dirs, "--resource-type", "model",
                  "--output", "json", "--output-keys", "name config")  # fmt: skip
    _ok(listed)
    configs = {
        node["name"]: node["config"]
        for node in map(json.loads, (ln for ln in listed.stdout.splitlines() if ln.startswith("{")))
    }
    enforced = {name for name, c in configs.items() if c["contract"]["enforced"]}
    assert enforced == set(GOLD) | set(dashboard_views())

    _load_days(fresh_database, 2, 1, END)
    _ok(_dbt(tmp_path, fresh_database, "build", *dirs))
    with psycopg.connect(fresh_database) as conn:
        before = conn.execute("select count(*), max(rebuilt_at) from gold.pm25_15min").fetchone()
        assert before[0] > 0

    # the model now yields reading_count as bigint where the contract says integer
    model = project / "models" / "marts" / "gold" / "pm25_15min.sql"
    source = model.read_text()
    assert "sum(readings)::integer as reading_count" in source
    model.write_text(source.replace("sum(readings)::integer as reading_count",
                                    "sum(readings)::bigint as reading_count"))  # fmt: skip
    _load_days(fresh_database, 1, 2, END + timedelta(days=1))
    broken = _dbt(tmp_path, fresh_database, "run", *dirs, "--select", "+pm25_15min")
    assert broken.returncode != 0
    assert "contract" in broken.stdout.lower() and "reading_count" in broken.stdout
    with psycopg.connect(fresh_database) as conn:  # the failed run changed nothing in gold
        after = conn.execute("select count(*), max(rebuilt_at) from gold.pm25_15min").fetchone()
    assert after == before


def test_rebuilt_at_and_data_tests_follow_the_rows_of_the_latest_run(
    tmp_path: Path, fresh_database: str
) -> None:
    _load_days(fresh_database, 3, 1, END)
    _ok(_dbt(tmp_path, fresh_database, "build"))
    stamped = ("silver.measurements", *(f"gold.{t}" for t in GOLD))
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        for table in stamped:  # statistics only from the run itself (analyze_stamp), below
            conn.execute(f"alter table {table} set (autovacuum_enabled = false)")
    _load_days(fresh_database, 1, 2, END + timedelta(days=1))  # one more day
    _ok(_dbt(tmp_path, fresh_database, "build"))

    with psycopg.connect(fresh_database, autocommit=True) as conn:
        # every gold and silver row has a rebuilt_at; the second run stamped the new day's
        # rows and left the earlier days' rows (outside the 30-day windows) with the first's
        for table in ("silver.measurements", "silver.rejected_measurements",
                      *(f"gold.{t}" for t in GOLD)):  # fmt: skip
            nulls, runs = conn.execute(
                f"select count(*) filter (where rebuilt_at is null), count(distinct rebuilt_at)"
                f" from {table}"
            ).fetchone()
            assert nulls == 0, table
            if table == "gold.latest":  # its post-hook refreshes every row's age
                assert runs == 1, table
            elif table != "silver.rejected_measurements":  # (maybe no rejects on the new day)
                assert runs == 2, table
        first, second = conn.execute(
            "select min(rebuilt_at), max(rebuilt_at) from gold.pm25_15min"
        ).fetchone()
        assert first < second
        # the run refreshed rebuilt_at's statistics (analyze_stamp; autovacuum is off): the
        # planner sizes the run's slice from them, not as the few rows above a stale histogram
        for table in stamped:
            newest, rows, analyzed = conn.execute(
                f"select max(rebuilt_at), count(*) filter (where rebuilt_at = (select"
                f" max(rebuilt_at) from {table})), (select last_analyze from pg_stat_user_tables"
                f" where relid = %s::regclass) from {table}",
                (table,),
            ).fetchone()
            assert analyzed is not None and analyzed >= newest, (table, analyzed, newest)
            plan = conn.execute(
                f"explain (format json) select * from {table} where rebuilt_at >= %s", (newest,)
            ).fetchone()[0]
            assert plan[0]["Plan"]["Plan Rows"] >= rows / 2, (table, rows, plan)
        old, new = conn.execute(
            "select max(window_start) filter (where rebuilt_at = %s),"
            " min(window_start) filter (where rebuilt_at = %s) from gold.pm25_15min",
            (first, second),
        ).fetchone()
        assert old <= END < new + timedelta(hours=2)  # the day before END is the first run's

        # bad rows in slices of the first run: the sliced tests do not see them
        conn.execute(
            "update gold.pm25_15min set pm25_avg = null where rebuilt_at = %s"
            " and window_start = (select min(window_start) from gold.pm25_15min)", (first,)
        )  # fmt: skip
        conn.execute(
            "update silver.measurements set value = null where (sensor_id, period_end) ="
            " (select sensor_id, period_end from silver.measurements"
            "  order by rebuilt_at, period_end limit 1)"
        )
        conn.execute(
            "update intermediate.int_measurements__current set location_id = null"
            " where (sensor_id, period_end) = (select sensor_id, period_end"
            "  from intermediate.int_measurements__current order by _processed_at, period_end"
            "  limit 1)"
        )
    _ok(_dbt(tmp_path, fresh_database, "test"))
    assert _failed_tests(tmp_path) == set()
    whole = _dbt(tmp_path, fresh_database, "test", vars_={"full_tests": True})
    assert whole.returncode != 0
    assert _failed_tests(tmp_path) == {
        "not_null_pm25_15min_pm25_avg",
        "not_null_measurements_value",
        "not_null_int_measurements__current_location_id",
    }

    # a bad row among the rows of the latest run fails the sliced test
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(
            "update gold.daily_avg set avg_value = null where (location_id, parameter, units,"
            " local_date) = (select location_id, parameter, units, local_date"
            "  from gold.daily_avg order by rebuilt_at desc, local_date limit 1)"
        )
    sliced = _dbt(tmp_path, fresh_database, "test")
    assert sliced.returncode != 0
    assert _failed_tests(tmp_path) == {"not_null_daily_avg_avg_value"}


def test_selectors_list_the_expected_nodes(tmp_path: Path, fresh_database: str) -> None:
    def listed(*selection: str) -> set[str]:
        result = _dbt(tmp_path, fresh_database, "ls", *selection, "--output", "json",
                      "--output-keys", "unique_id resource_type original_file_path")  # fmt: skip
        _ok(result)
        return {
            (node["resource_type"], node["unique_id"], node["original_file_path"])
            for node in map(json.loads, (ln for ln in result.stdout.splitlines()
                                         if ln.startswith("{")))
        }  # fmt: skip

    everything = listed()
    gold = listed("--selector", "gold")
    silver = listed("--selector", "silver")
    assert listed("--selector", "nightly_full") == everything

    def models(nodes: set) -> set[str]:
        return {uid.split(".")[-1] for kind, uid, _ in nodes if kind == "model"}

    # gold's views go with gold: a full refresh of gold drops them (cascade) and rebuilds them
    assert models(gold) == set(GOLD) | set(dashboard_views())
    assert models(silver) == {"measurements", "rejected_measurements"}
    gold_folders = ("models/marts/gold/", "models/marts/dashboards/")
    for selected, folders in ((gold, gold_folders), (silver, ("models/marts/silver/",))):
        tests = {n for n in everything if n[0] in ("test", "unit_test")
                 and n[2].startswith(folders)}  # fmt: skip
        assert tests and tests <= selected  # every test of those models
        assert all(n[2].startswith(folders) for n in selected)  # and nothing else
    assert {"seed", "source", "model", "test", "unit_test"} <= {n[0] for n in everything}


def test_source_freshness_errors_on_a_stale_raw_table(tmp_path: Path, fresh_database: str) -> None:
    _load_days(fresh_database, 1, 1, END)
    env = _env(tmp_path, fresh_database)

    def freshness_after(age: timedelta, run=run_aqi_dbt):
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            conn.execute("update raw.openaq_measurements set loaded_at = now() - %s", (age,))
        return run(["source", "freshness"], env, tmp_path)

    fresh = freshness_after(timedelta(minutes=10))
    assert fresh.returncode == 0 and "PASS" in fresh.stdout, fresh.stdout[-2000:]
    late = freshness_after(timedelta(hours=2))  # past warn_after (1 h): a warning only
    assert late.returncode == 0 and "WARN" in late.stdout, late.stdout[-2000:]
    # past error_after (6 h): through the `aqi dbt` command, which passes dbt's exit code on
    stale = freshness_after(
        timedelta(hours=6, minutes=5), lambda args, env, cwd: run_aqi(["dbt", *args], env, cwd)
    )
    assert stale.returncode != 0 and "ERROR STALE" in stale.stdout, stale.stdout[-2000:]
