"""What the Airflow DAGs do, as plain functions: the DAG files in ``dags/`` only wire them up.

Keeping the logic here means it is tested without a scheduler, and the DAGs, the CLI and
the tests run exactly the same code:

- :func:`drain_stream` - ``aqi stream --available-now``, or, when a long-running
  ``aqi stream`` holds the checkpoint, wait until it has caught up with the topic;
- :func:`run_backfill` - the ``aqi backfill`` command with the DAG's params;
- :func:`quality_gate` - the Great Expectations checkpoints of one suite; raises with the
  readable report when an expectation fails, so the task (and the run) fails there;
- :func:`refresh_exports` - CSV files of the gold marts (:mod:`aqi.exports`);
- :func:`cosmos_configs` / :func:`dbt_manifest_path` - how Cosmos renders and runs the dbt
  project (one task per model, its tests right after it);
- :func:`warehouse_env` - the callback that gives a dbt task the warehouse's URL.

Public surface: the functions above and :data:`DBT_PROFILE`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from aqi.core.config import Settings, load_settings
from aqi.core.errors import AqiError
from aqi.core.warehouse import DBT_PROJECT_DIR, dbt_target_dir, run_dbt
from aqi.exports import export_marts
from aqi.services.airflow import DAGS_TEST_ENV

__all__ = [
    "DBT_PROFILE",
    "cosmos_configs",
    "dbt_manifest_path",
    "drain_stream",
    "freshness_callback",
    "full_tests",
    "prepare_dbt_manifest",
    "publish",
    "quality_gate",
    "refresh_exports",
    "run_aqi_command",
    "run_backfill",
    "warehouse_env",
    "watcher_sensor_args",
]

Echo = Callable[[str], None]
#: profile and target of dbt_project/profiles.yml
DBT_PROFILE = ("openaq_warehouse", "default")
#: how long the drain task waits for a running stream to catch up with the topic
CATCH_UP_TIMEOUT_S = 600.0


def run_aqi_command(args: Sequence[str], echo: Echo = print) -> None:
    """Run ``aqi <args>`` from this environment, its output line by line into ``echo``.

    A child process rather than a call: Spark's JVM, Kafka clients and signal handlers stay
    out of the Airflow worker, and the task runs what a person would type.
    """
    executable = Path(sys.executable).with_name("aqi")
    if not executable.exists():
        raise AqiError(f"the aqi command is not installed next to {sys.executable}: make env")
    echo(f"$ aqi {' '.join(args)}")
    with subprocess.Popen(
        [str(executable), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            echo(line.rstrip("\n"))
        code = proc.wait()
    if code != 0:
        raise AqiError(f"`aqi {' '.join(args)}` failed with exit code {code}")


def drain_stream(settings: Settings | None = None, echo: Echo = print) -> str:
    """Bring raw.openaq_measurements up to date with the topic; returns what it did.

    With no stream running, drain the topic (``aqi stream --available-now``, which returns at
    once when its checkpoint has already committed everything up to the topic's end
    offsets), unless nothing was ever written to it. When a long-running ``aqi stream`` holds
    the checkpoint, a second stream would fight over it: instead wait until that stream's
    batches have reached the topic's end offsets as they were when this task started, and
    fail if it does not catch up in time (it is stuck).
    """
    from aqi.core.connections import kafka_bootstrap_servers
    from aqi.core.topics import end_offsets
    from spark_streaming.job import QUERY_NAME, stream_is_running

    s = settings or load_settings()
    if not stream_is_running(s.checkpoints_dir / QUERY_NAME):
        if not any(end_offsets(kafka_bootstrap_servers(s), s.kafka_topic).values()):
            echo(f"stream: nothing was ever written to {s.kafka_topic}; no stream")
            return "nothing to drain"
        run_aqi_command(["stream", "--available-now"], echo)
        return "drained"
    _wait_for_running_stream(s, echo)
    return "running stream is fresh"


def run_backfill(
    locations: Sequence[int | str],
    since: str,
    until: str | None,
    echo: Echo = print,
    *,
    triggered_at: datetime | None = None,
) -> None:
    """``aqi backfill --location ... --since ... --until ...``.

    An empty ``until`` means when the DAG run was triggered (``triggered_at``; now without
    it): every attempt of the run then names the same span, so a retry resumes the job the
    failed attempt started instead of starting a new one (the job id hashes the span).
    """
    ids = [str(int(x)) for x in locations]
    if not ids:
        raise AqiError("openaq_backfill: the `locations` param needs at least one location id")
    end = until or (triggered_at or datetime.now().astimezone()).isoformat(timespec="seconds")
    run_aqi_command(["backfill", "--location", *ids, "--since", since, "--until", end], echo)


def quality_gate(
    suite: str, settings: Settings | None = None, echo: Echo = print, *, whole: bool = False
) -> None:
    """Run the Great Expectations checks of ``suite``; raise with the report if any fails.

    By default the value checks judge what is new since the gate last passed (raw: rows
    loaded; gold: rows dbt rebuilt), so the gate costs what the run's data costs; ``whole``
    judges every row (the nightly check). The exception
    (:class:`expectations.report.ExpectationsFailed`) carries the readable report, naming
    each failed expectation with sample rows, as its message: it is what the failed task's
    log, ``run-once`` and the failure alert show.
    """
    from expectations.runner import SINCE_LAST_PASS, WHOLE_TABLE, require_checks

    since = WHOLE_TABLE if whole else SINCE_LAST_PASS
    report = require_checks(settings or load_settings(), [suite], echo=echo, since=since)
    echo(report.text())


def refresh_exports(
    settings: Settings | None = None, echo: Echo = print, *, full: bool = False
) -> dict[str, int]:
    """Write the CSV exports of the gold marts under AQ_HOME/exports: the days dbt rebuilt
    since the last export and ``latest.csv`` (every day with ``full``); rows per table."""
    return export_marts(settings or load_settings(), echo=echo, full=full)


def publish(run_id: str, settings: Settings | None = None, echo: Echo = print) -> dict[str, int]:
    """The last step of a successful openaq_elt run: the exports, the AQI alerts of the
    fresh gold.latest (:func:`aqi.aqi_alerts.update_aqi_alerts`), an empty Superset results
    cache (:func:`aqi.services.superset_cache.clear_results_cache`: the dashboards show the
    new data at once), then the heartbeat that the deadline watchdog
    (:func:`aqi.alerts.check_deadline`) reads.

    One task rather than four: a task is a process start under the scheduler, and the run
    has succeeded exactly when its exports and alerts are done.
    """
    from aqi import alerts
    from aqi.aqi_alerts import update_aqi_alerts
    from aqi.services.airflow import ELT_DAG_ID
    from aqi.services.superset_cache import clear_results_cache

    s = settings or load_settings()
    rows = refresh_exports(s, echo)
    update_aqi_alerts(s, run_id, echo)
    clear_results_cache(s, echo)
    alerts.record_success(s, ELT_DAG_ID, run_id)
    return rows


def full_tests(settings: Settings | None = None, echo: Echo = print) -> None:
    """Every dbt data test on every row (selector ``nightly_full``, var ``full_tests``).

    The runs of openaq_elt test only the rows each model rebuilt; this catches what a
    slice cannot see (a duplicate across an old and a new slice, a row broken by hand).
    Read-only, so it may run while openaq_elt does.
    """
    s = settings or load_settings()
    echo("dbt: test --selector nightly_full --vars '{full_tests: true}'")
    args = ["test", "--selector", "nightly_full", "--vars", "{full_tests: true}"]
    if run_dbt(s, args) != 0:
        raise AqiError("the nightly full dbt tests failed: see the failures above")


def dbt_manifest_path() -> Path:
    """The dbt manifest Cosmos renders the DAG from (written by ``aqi dbt parse``)."""
    return dbt_target_dir() / "manifest.json"


def prepare_dbt_manifest(settings: Settings, echo: Echo = print) -> Path:
    """``dbt parse``: (re)write the manifest so the DAG shows the project as it is now."""
    echo("dbt: parsing the project (manifest for the Airflow DAG)")
    if run_dbt(settings, ["parse", "--quiet"]) != 0:
        raise AqiError("dbt parse failed: run `aqi dbt parse` to see why")
    return dbt_manifest_path()


def cosmos_configs() -> dict[str, Any]:
    """Keyword arguments of Cosmos' ``DbtTaskGroup`` for the warehouse project.

    Execution mode WATCHER: one task (``dbt.dbt_producer_watcher``) runs ``dbt build`` once,
    in the worker through dbtRunner, with dbt's own threads; every model, seed and model's
    tests still have their task, a sensor that succeeds or fails when the producer reports
    that node (from dbt's events, through XCom), so the UI shows each model and its tests
    as before. A retried model task, after the producer has ended, runs ``dbt run`` (or
    ``dbt test``) of that one model itself. Measured against one process per model
    (ExecutionMode.LOCAL), see docs/benchmarks.md. The sensors poke (no triggerer runs in
    the embedded Airflow) every second.

    The DAG is rendered from the manifest (no dbt call while Airflow parses DAG files, so
    parsing stays fast). The connection is the project's own (dbt_project/profiles.yml reads
    AQ_DATABASE_URL from the task's environment, which :func:`warehouse_env` fills in), so
    no password lands in Airflow's metadata or rendered fields.
    """
    from cosmos import ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import (
        ExecutionMode,
        InvocationMode,
        LoadMode,
        SourceRenderingBehavior,
        TestBehavior,
    )

    manifest = dbt_manifest_path()
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{manifest} is missing: run `aqi dbt parse` (aqi airflow up/run-once do it)"
        )
    profile_name, target_name = DBT_PROFILE
    return {
        "project_config": ProjectConfig(
            dbt_project_path=DBT_PROJECT_DIR,
            manifest_path=manifest,
            env_vars={"DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        ),
        "profile_config": ProfileConfig(
            profile_name=profile_name,
            target_name=target_name,
            profiles_yml_filepath=DBT_PROJECT_DIR / "profiles.yml",
        ),
        "execution_config": ExecutionConfig(
            execution_mode=ExecutionMode.WATCHER,
            invocation_mode=InvocationMode.DBT_RUNNER,
            # the producer: one attempt (Cosmos skips a retried producer; the model tasks'
            # own retries then run their model), source freshness as above
            setup_operator_args={
                "retries": 0,
                "freshness_callback": freshness_callback,
                "dbt_cmd_flags": PRODUCER_DBT_FLAGS,
            },
        ),
        "render_config": RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.AFTER_EACH,
            # the raw source gets a task: the producer's `dbt source freshness` first
            source_rendering_behavior=SourceRenderingBehavior.WITH_TESTS_OR_FRESHNESS,
            emit_datasets=False,
        ),
    }


def freshness_callback(
    context: Any, dag: Any, task_group: Any, nodes: Any, sources_json: dict[str, Any] | None
) -> list[tuple[str, str]]:
    """What the dbt producer skips after ``dbt source freshness``: the models that read only
    from a source past its ``error_after`` (dbt_project/models/staging/_openaq__sources.yml).

    Cosmos' default also skips on ``warn``; here a warning is only a warning (the source's
    task logs it and succeeds), while an error fails the source's task, so the run fails
    (and alerts) instead of publishing a warehouse that stopped receiving data.
    """
    from cosmos.operators.watcher import _default_freshness_callback

    if not sources_json:
        return []
    errors = [r for r in sources_json.get("results", []) if r.get("status") == "error"]
    return _default_freshness_callback(
        context, dag, task_group, nodes, {**sources_json, "results": errors}
    )


#: the producer's ``dbt build``: more threads than cores (a node's time is mostly waiting
#: for PostgreSQL and dbt's own bookkeeping), and no unit tests, which check the models' SQL,
#: not the data, and run in ``make test`` (dbt's advice for production builds)
PRODUCER_DBT_FLAGS = ["--threads", "4", "--exclude-resource-type", "unit_test"]


def watcher_sensor_args() -> dict[str, Any]:
    """What the model sensors of :func:`cosmos_configs` take besides the common operator_args.

    Under the scheduler they poke every second in their worker slot (no triggerer runs in the
    embedded Airflow, so not deferrable). ``airflow dags test`` runs one task at a time: a
    sensor picked before the producer would poke forever, so there they reschedule (give
    the turn back between pokes) and the producer gets to run.
    """
    mode = "reschedule" if os.environ.get(DAGS_TEST_ENV) == "1" else "poke"
    return {"deferrable": False, "poke_interval": 1, "mode": mode}


def warehouse_env(context: Any = None) -> None:
    """``on_execute_callback`` of the dbt tasks: AQ_DATABASE_URL in this task's environment,
    and dbt's artifacts where Cosmos looks for them.

    dbt (run in the task's process by Cosmos) reads its connection from AQ_DATABASE_URL. With
    the embedded server the Airflow daemons do not carry the warehouse owner's password
    (aqi/services/airflow.py), so the task resolves it just before dbt runs, from
    ``AQ_HOME/secrets``; an external AQ_DATABASE_URL is already there and kept. Only the dbt
    tasks get it: the other tasks resolve the URL themselves, and their ``aqi`` children must
    not take the embedded server for an external one.
    """
    if not os.environ.get("AQ_DATABASE_URL"):
        from aqi.core.connections import database_url

        os.environ["AQ_DATABASE_URL"] = database_url(load_settings())
    # Cosmos runs dbt in a temporary copy of the project and reads what dbt wrote there
    # (target/sources.json after the freshness check, the compiled SQL): a DBT_TARGET_PATH
    # inherited from `aqi` (it moves `aqi dbt`'s artifacts) would send them elsewhere, and
    # the sensors would wait for statuses that never come
    for name in ("DBT_TARGET_PATH", "DBT_LOG_PATH"):
        os.environ.pop(name, None)


def _wait_for_running_stream(settings: Settings, echo: Echo) -> None:
    import psycopg

    from aqi.core.connections import database_url, kafka_bootstrap_servers
    from aqi.core.topics import end_offsets
    from spark_streaming.job import QUERY_NAME

    target = end_offsets(kafka_bootstrap_servers(settings), settings.kafka_topic)
    echo(f"stream: a long-running aqi stream holds the checkpoint; waiting for offsets {target}")
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    behind = sum(target.values())
    while True:
        with psycopg.connect(database_url(settings), connect_timeout=10) as conn:
            row = conn.execute(
                "select end_offsets from raw.stream_batches where query_name = %s "
                "order by batch_id desc limit 1",
                (QUERY_NAME,),
            ).fetchone()
        ends = (json.loads(row[0]) if isinstance(row[0], str) else row[0]) if row else {}
        done = {int(p): int(o) for p, o in ends.get(settings.kafka_topic, {}).items()}
        behind = sum(max(0, end - done.get(p, 0)) for p, end in target.items())
        if behind == 0:
            echo("stream: the running stream has caught up")
            return
        if time.monotonic() >= deadline:
            raise AqiError(
                f"the running aqi stream is still {behind:,} records behind the topic after "
                f"{CATCH_UP_TIMEOUT_S:.0f} s: check its log"
            )
        time.sleep(1)  # one indexed query: the run waits for the data, not for the poll
