"""The Airflow DAGs on the real stack: DAG files, `airflow dags test`, the GX gate, the REST API.

On the stack `aqi demo` left (conftest.demo_stack, shared with the end-to-end test): its
simulated events went onto Kafka, its step "openaq_elt once" was `aqi airflow run-once`
(= `airflow dags test openaq_elt`), and everything here is the real path from there (aqi
airflow run-once again with bad data; aqi airflow up + a REST trigger under the scheduler).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from alert_sinks import running_http_sink
from conftest import (
    DEMO_GROUP,
    REPO_ROOT,
    listening_sockets,
    off_loopback,
    project_pids,
    run_aqi,
    warehouse_owner_leaks,
)

from aqi.core.config import load_settings
from aqi.exports import EXPORTED_TABLES
from aqi.services.airflow import DOCS_SLUG

# the module's tests share the demo's stack: one xdist worker runs them all (make test)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group(DEMO_GROUP)]

GX_TASKS = {"check_raw", "check_gold"}
PRODUCER = "dbt.dbt_producer_watcher"
SOURCE_TASK = "dbt.openaq_openaq_measurements_source"


@pytest.fixture
def stack(demo_stack: dict) -> dict:
    """The demo's stack: 2 days of 3 simulated locations streamed, openaq_elt run once."""
    return demo_stack


def _dagbag_report(env: dict[str, str], cwd: Path) -> dict:
    """Load dags/ the way the DAG processor does, with a 5 s import timeout per file."""
    script = f"""
import json, os
os.environ["AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT"] = "5"
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(REPO_ROOT / "dags")!r})
dags = {{}}
for dag_id, dag in bag.dags.items():
    dags[dag_id] = {{
        "tasks": {{t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}},
        "retries": {{t.task_id: [t.retries, bool(t.retry_exponential_backoff)] for t in dag.tasks}},
        "kinds": {{t.task_id: type(t).__name__ for t in dag.tasks}},
        "schedule": str(dag.schedule),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "params": sorted(dag.params.keys()),
    }}
print("@@" + json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                         "dags": dags}}))
"""
    from unittest import mock

    from aqi.services.airflow import airflow_env

    # the environment `aqi airflow up` run with env gives the DAG processor: built from env,
    # not from whatever this test process holds (DBT_TARGET_PATH names the manifest that the
    # `aqi dbt parse` above wrote; this process has it only once a session fixture set it)
    with mock.patch.dict(os.environ, env, clear=True):
        airflow = airflow_env(load_settings(env, dotenv=None))
    result = subprocess.run(
        [sys.executable, "-c", script], env=airflow, cwd=cwd, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("@@"))
    return json.loads(line[2:])


def _manifest_models(env: dict[str, str]) -> dict[str, bool]:
    """Every model of the manifest `aqi dbt parse` wrote in env -> whether it has data tests."""
    manifest = json.loads((Path(env["DBT_TARGET_PATH"]) / "manifest.json").read_text())
    tested = {
        parent
        for node in manifest["nodes"].values()
        if node["resource_type"] == "test"
        for parent in node["depends_on"]["nodes"]
    }
    return {
        n["name"]: uid in tested
        for uid, n in manifest["nodes"].items()
        if n["resource_type"] == "model"
    }


def _downstream_closure(tasks: dict[str, list[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in tasks[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_dag_files_import_fast_and_show_one_task_per_model(stack: dict) -> None:
    result = run_aqi(["dbt", "parse", "--quiet"], stack["env"], stack["cwd"])
    assert result.returncode == 0, result.stdout + result.stderr
    report = _dagbag_report(stack["env"], stack["cwd"])
    assert report["errors"] == {}
    assert set(report["dags"]) == {
        "openaq_elt", "openaq_backfill", "openaq_watchdog", "openaq_nightly"
    }  # fmt: skip

    elt = report["dags"]["openaq_elt"]
    assert elt["catchup"] is False and elt["max_active_runs"] == 1
    assert elt["schedule"] == "*/15 * * * *" and elt["params"] == ["full_refresh"]
    tasks, kinds, retries = elt["tasks"], elt["kinds"], elt["retries"]
    # one dbt build per run: the producer; every model, seed and source keeps its own task
    assert kinds[PRODUCER] == "DbtProducerWatcherOperator"
    models = _manifest_models(stack["env"])
    assert set(models) >= {"measurements", "pm25_15min", "daily_avg", "exceedance_30d", "latest"}
    assert all(models[m] for m in ("measurements", "pm25_15min", "daily_avg", "latest"))
    for model, has_tests in models.items():
        if has_tests:
            # the model's task, then its tests' task right after it; both watch the producer
            assert f"dbt.{model}.test" in tasks[f"dbt.{model}.run"], model
            assert kinds[f"dbt.{model}.run"] == "DbtRunWatcherOperator"
            assert kinds[f"dbt.{model}.test"] == "DbtTestWatcherOperator"
        else:  # Cosmos names a model without tests <model>_run, outside a group
            assert kinds[f"dbt.{model}_run"] == "DbtRunWatcherOperator", model
    assert kinds[SOURCE_TASK] == "DbtSourceWatcherOperator"  # dbt source freshness
    assert sum(kind == "DbtProducerWatcherOperator" for kind in kinds.values()) == 1
    assert GX_TASKS <= set(tasks)
    dbt_tasks = {t for t in tasks if t.startswith("dbt.")}
    # the raw gate comes before every dbt task, the gold gate after all of them
    assert dbt_tasks <= _downstream_closure(tasks, "check_raw")
    assert all("check_gold" in _downstream_closure(tasks, t) for t in dbt_tasks)
    assert _downstream_closure(tasks, "check_gold") == {"publish"}
    assert "check_raw" in _downstream_closure(tasks, "drain_stream")
    # transient tasks retry with backoff; a gate fails at once; the producer runs once (a
    # retried model task runs its model itself)
    for task in ("drain_stream", "publish", "dbt.pm25_15min.run", "dbt.latest.test"):
        assert retries[task][0] >= 2 and retries[task][1], task
    assert retries["check_raw"][0] == retries["check_gold"][0] == 0
    assert retries[PRODUCER][0] == 0

    watchdog = report["dags"]["openaq_watchdog"]
    assert watchdog["schedule"] == "*/5 * * * *" and set(watchdog["tasks"]) == {"check_deadline"}
    nightly = report["dags"]["openaq_nightly"]["tasks"]
    assert nightly == {"full_tests": ["full_check"], "full_check": ["full_export"],
                       "full_export": []}  # fmt: skip

    backfill = report["dags"]["openaq_backfill"]
    assert backfill["schedule"] == "None"
    assert backfill["params"] == ["locations", "since", "until"]


def _gold_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(f"select count(*) from gold.{t}").fetchone()[0] for t in EXPORTED_TABLES
        }


def test_dags_test_runs_openaq_elt_end_to_end(stack: dict) -> None:
    # the demo's step 4 was `aqi airflow run-once`: its one line per task, then the outcome
    output = stack["demo"].stdout
    assert "$ aqi airflow run-once" in output and "openaq_elt succeeded" in output
    for task in ("drain_stream", "check_raw", "dbt.dbt_producer_watcher", "check_gold", "publish"):
        assert re.search(rf"\bok +{re.escape(task)} ", output), task

    with psycopg.connect(stack["url"]) as conn:
        raw = conn.execute("select count(*) from raw.openaq_measurements").fetchone()[0]
        silver = conn.execute("select count(*) from silver.measurements").fetchone()[0]
    assert raw > 1000 and silver > 0
    counts = _gold_counts(stack["url"])
    assert all(n > 0 for n in counts.values()), counts

    exports = stack["settings"].exports_dir
    for table, rows in counts.items():
        files = [exports / "latest.csv"] if table == "latest" else sorted(
            (exports / table).glob(f"{table}_*.csv")
        )  # fmt: skip
        assert files, table
        exported = 0
        for path in files:
            with open(path, newline="", encoding="utf-8") as handle:
                lines = list(csv.reader(handle))
            assert lines[0][0] == "location_id", path
            exported += len(lines) - 1
        assert exported == rows, table
    assert (stack["settings"].gx_docs_dir / "index.html").is_file()
    # the run's last task recorded its success for the deadline watchdog
    assert "openaq_elt" in (stack["settings"].state_dir / "pipeline_heartbeats.json").read_text()
    # ... after the AQI alerts: an open episode for exactly the pairs at Unhealthy or worse
    with psycopg.connect(stack["url"]) as conn:
        unhealthy = conn.execute(
            "select location_id, parameter from gold.latest where aqi > 150 order by 1, 2"
        ).fetchall()
        episodes = conn.execute(
            "select location_id, parameter from gold.aqi_alerts where cleared_at is null "
            "order by 1, 2"
        ).fetchall()
    assert episodes == unhealthy

    # the same gate and exports by hand
    check = run_aqi(["check"], stack["env"], stack["cwd"], timeout=300)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]
    assert "gx_docs" in check.stdout
    exported = run_aqi(["export", "--dir", str(stack["cwd"] / "csv")], stack["env"], stack["cwd"])
    assert exported.returncode == 0, exported.stderr
    copy = stack["cwd"] / "csv"
    assert sorted(p.relative_to(copy) for p in copy.rglob("*.csv")) == sorted(
        p.relative_to(exports) for p in exports.rglob("*.csv")
    )
    for path in exports.rglob("*.csv"):
        assert (copy / path.relative_to(exports)).read_bytes() == path.read_bytes(), path


def test_gx_gate_fails_the_run_on_bad_gold_data_stops_the_exports_and_alerts(
    stack: dict,
) -> None:
    latest_csv = stack["settings"].exports_dir / "latest.csv"  # every published run rewrites it
    before = latest_csv.stat().st_mtime_ns
    with psycopg.connect(stack["url"]) as conn:
        key = conn.execute(
            "select location_id, window_start, pm25_avg, rebuilt_at from gold.pm25_15min limit 1"
        ).fetchone()
        # a bad row as if the run had just rebuilt it: the gate judges the rebuilt slices
        conn.execute(
            "update gold.pm25_15min set pm25_avg = 5000, rebuilt_at = now() "
            "where location_id = %s and window_start = %s",
            key[:2],
        )
    try:
        with running_http_sink() as sink:
            env = {**stack["env"], "AQ_ALERT_WEBHOOK_URL": sink.url}
            result = run_aqi(["airflow", "run-once"], env, stack["cwd"], timeout=900)
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "openaq_elt FAILED" in output
        # the readable report names the table, the expectation and the column
        assert "gold.pm25_15min" in output
        assert "expect_column_values_to_be_between" in output
        assert "pm25_avg" in output and "5000" in output
        assert latest_csv.stat().st_mtime_ns == before, "exports ran after a failed gate"
        # the DAG's failure notifier sent one alert, naming the gate and what failed
        alerts = [json.loads(post["body"]) for post in sink.posts]
        assert [a["task_id"] for a in alerts] == ["check_gold"], alerts
        assert alerts[0]["event"] == "task_failed" and alerts[0]["dag_id"] == "openaq_elt"
        assert "expect_column_values_to_be_between" in alerts[0]["message"]
        assert "5000" in alerts[0]["message"]
    finally:
        with psycopg.connect(stack["url"]) as conn:
            conn.execute(
                "update gold.pm25_15min set pm25_avg = %s, rebuilt_at = %s "
                "where location_id = %s and window_start = %s",
                (key[2], key[3], *key[:2]),
            )


def _api(base: str, method: str, path: str, token: str | None = None, body=None) -> dict:
    request = urllib.request.Request(
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def airflow_up(demo_stack: dict) -> Iterator[tuple[subprocess.CompletedProcess, datetime]]:
    """`aqi airflow up` once for the tests below (the REST API, then a scheduler killed);
    `aqi airflow down` after them (the last test checks it leaves nothing). The schedule's
    runs queued from then on (the second item: when `up` started) are the scheduler's work
    for these tests."""
    started = datetime.now(UTC)
    result = run_aqi(["airflow", "up"], demo_stack["env"], demo_stack["cwd"], timeout=600)
    try:
        yield result, started
    finally:
        run_aqi(["airflow", "down"], demo_stack["env"], demo_stack["cwd"], timeout=300)


def test_embedded_airflow_answers_health_and_runs_a_rest_triggered_dag(
    stack: dict, airflow_up: tuple[subprocess.CompletedProcess, datetime]
) -> None:
    env, cwd, (result, up_at) = stack["env"], stack["cwd"], airflow_up
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    password_file = stack["settings"].secrets_dir / "airflow_admin_password"
    assert password_file.stat().st_mode & 0o077 == 0
    password = password_file.read_text().strip()
    assert password in result.stdout  # shown once, on the first start
    assert password not in run_aqi(["airflow", "up"], env, cwd, timeout=300).stdout
    status = json.loads(run_aqi(["airflow", "status", "--json"], env, cwd).stdout)
    assert status["running"] is True
    base = status["url"]
    assert base.startswith("http://127.0.0.1:")
    health = _api(base, "GET", "/api/v2/monitor/health")
    assert health["metadatabase"]["status"] == "healthy"
    assert health["scheduler"]["status"] == "healthy"

    token = _api(base, "POST", "/auth/token", body={"username": "admin", "password": password})
    token = token["access_token"]
    # the dbt docs site the demo generated (`aqi docs`), in the UI through Cosmos' plugin
    assert (stack["settings"].docs_dir / "index.html").is_file()
    plugins = _api(base, "GET", "/api/v2/plugins", token)["plugins"]
    views = [v for p in plugins for v in p.get("external_views") or []]
    assert any(v.get("name") == "dbt docs (warehouse)" for v in views), views
    request = urllib.request.Request(
        f"{base}/cosmos/{DOCS_SLUG}/dbt_docs_index.html",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as page:
        assert page.status == 200 and b"pm25_15min" in page.read()
    # a run triggered through the REST API (EmbeddedAirflow.trigger: unpause, wait until the
    # DAG is idle, POST, follow) under the real scheduler and LocalExecutor: the one-task
    # watchdog's, so that the pipeline's work is not done twice
    from aqi.services.airflow import EmbeddedAirflow

    airflow = EmbeddedAirflow(stack["settings"])
    said: list[str] = []
    posted = airflow.trigger("openaq_watchdog", timeout=600, echo=said.append)
    assert posted.state == "success", posted.failed_tasks()
    assert posted.run_id.startswith("manual__") and "triggered openaq_watchdog run" in said[0]
    assert [t.task_id for t in posted.tasks] == ["check_deadline"]
    # openaq_elt under the scheduler: `aqi airflow up` left it unpaused (it is created so),
    # so the schedule queues a run at once (no catch-up: the latest interval's); trigger with
    # `after` follows that run, as `make bench-dag` does, instead of queueing a second one
    runs = "/api/v2/dags/openaq_elt/dagRuns?order_by=-run_after&limit=20"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(
        r.get("queued_at") and datetime.fromisoformat(r["queued_at"]) >= up_at
        for r in _api(base, "GET", runs, token)["dag_runs"]
    ):
        time.sleep(1)
    run = airflow.trigger(timeout=900, after=up_at, echo=said.append)
    assert any(line.startswith("airflow: following openaq_elt run") for line in said), said
    assert run.run_id.startswith("scheduled__"), run.run_id
    run_id = run.run_id
    if run.state != "success":
        pytest.fail(f"REST-triggered run ended {run.state}; not successful: "
                    f"{run.failed_tasks()}")  # fmt: skip
    by_id = {t.task_id: t for t in run.tasks}
    # one dbt process: the producer's build; every model's and test's task succeeded on
    # its first try, from what the producer reported (a retry would run dbt itself)
    assert by_id["dbt.dbt_producer_watcher"].state == "success"
    watchers = [
        t for t in run.tasks if t.task_id.startswith("dbt.") and "producer" not in t.task_id
    ]
    assert len(watchers) >= 12 and all(t.state == "success" for t in watchers)
    assert all(t.try_number == 1 for t in watchers), [
        (t.task_id, t.try_number) for t in watchers
    ]
    assert {"drain_stream", "check_raw", "check_gold", "publish"} <= set(by_id)
    assert run.seconds is not None and run.seconds > 0
    # the scheduler runs without its log server (it would listen on every interface):
    # the API server reads a task's log from AIRFLOW_HOME/logs itself
    runs = f"/api/v2/dags/openaq_elt/dagRuns/{run_id}/taskInstances"
    ti = _api(base, "GET", runs, token)["task_instances"][0]
    log = _api(base, "GET", f"{runs}/{ti['task_id']}/logs/{ti['try_number']}", token)
    text = json.dumps(log["content"])
    assert len(log["content"]) > 3 and "Could not read served logs" not in text, text[:2000]
    # the run's dbt tasks reached the warehouse, yet no Airflow process (API server,
    # scheduler, DAG processor, their children) holds the warehouse owner's password
    from aqi.services.airflow import COMPONENTS

    daemons = [r.pid for c in COMPONENTS if (r := airflow.pidfile(c).live())]
    assert len(daemons) == len(COMPONENTS)
    assert warehouse_owner_leaks(stack["settings"], daemons) == []
    # Airflow, PostgreSQL and Kafka, with every child process: loopback only
    sockets = listening_sockets(project_pids(stack["settings"]))
    ports = {port for *_, port in sockets}
    assert {urllib.parse.urlsplit(base).port, stack["settings"].pg_port,
            stack["settings"].kafka_port} <= ports, sockets  # fmt: skip
    assert off_loopback(sockets) == []


def test_a_scheduler_killed_with_9_is_recovered_by_up_and_down_leaves_nothing(
    stack: dict, airflow_up: tuple[subprocess.CompletedProcess, datetime]
) -> None:
    import os
    import signal

    from aqi.services.airflow import COMPONENTS, EmbeddedAirflow
    from aqi.services.process import group_members

    env, cwd = stack["env"], stack["cwd"]
    airflow = EmbeddedAirflow(stack["settings"])
    try:
        assert airflow_up[0].returncode == 0  # (the module's `aqi airflow up`)
        scheduler = airflow.pidfile("scheduler").live()
        assert scheduler is not None
        os.kill(scheduler.pid, signal.SIGKILL)
        result = run_aqi(["airflow", "up"], env, cwd, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "starting scheduler" in result.stdout
        assert group_members(scheduler.pid) == [], "what the dead scheduler left is gone"
        status = json.loads(run_aqi(["airflow", "status", "--json"], env, cwd).stdout)
        assert status["running"] is True
        groups = [pid for pid in status["pids"].values() if pid]
        assert len(groups) == len(COMPONENTS)
    finally:
        down = run_aqi(["airflow", "down"], env, cwd, timeout=300)
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 15
    while any(group_members(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [g for g in groups if group_members(g)] == [], "down leaves no process group behind"
    assert json.loads(run_aqi(["airflow", "status", "--json"], env, cwd).stdout)["running"] is False
