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

from aqi.config import Settings, load_settings
from aqi.errors import AqiError
from aqi.exports import export_marts
from aqi.warehouse import DBT_PROJECT_DIR, run_dbt

__all__ = [
    "DBT_PROFILE",
    "cosmos_configs",
    "dbt_manifest_path",
    "drain_stream",
    "prepare_dbt_manifest",
    "quality_gate",
    "refresh_exports",
    "run_aqi_command",
    "run_backfill",
    "warehouse_env",
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

    With no stream running, drain the topic (``aqi stream --available-now``). When a
    long-running ``aqi stream`` holds the checkpoint, a second stream would fight over it:
    instead wait until that stream's batches have reached the topic's end offsets as they
    were when this task started, and fail if it does not catch up in time (it is stuck).
    """
    from spark_streaming.job import QUERY_NAME, stream_is_running

    s = settings or load_settings()
    if not stream_is_running(s.checkpoints_dir / QUERY_NAME):
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


def quality_gate(suite: str, settings: Settings | None = None, echo: Echo = print) -> None:
    """Run the Great Expectations checks of ``suite``; raise with the report if any fails.

    The exception (:class:`expectations.report.ExpectationsFailed`) carries the readable
    report as its message, so it is what the failed task's log and ``run-once`` show.
    """
    from expectations.runner import require_checks

    report = require_checks(settings or load_settings(), [suite], echo=echo)
    echo(report.text())


def refresh_exports(settings: Settings | None = None, echo: Echo = print) -> dict[str, int]:
    """Rewrite the CSV exports of the gold marts under AQ_HOME/exports; rows per table."""
    return export_marts(settings or load_settings(), echo=echo)


def dbt_manifest_path() -> Path:
    """The dbt manifest Cosmos renders the DAG from (written by ``aqi dbt parse``)."""
    return DBT_PROJECT_DIR / "target" / "manifest.json"


def prepare_dbt_manifest(settings: Settings, echo: Echo = print) -> Path:
    """``dbt parse``: (re)write the manifest so the DAG shows the project as it is now."""
    echo("dbt: parsing the project (manifest for the Airflow DAG)")
    if run_dbt(settings, ["parse", "--quiet"]) != 0:
        raise AqiError("dbt parse failed: run `aqi dbt parse` to see why")
    return dbt_manifest_path()


def cosmos_configs() -> dict[str, Any]:
    """Keyword arguments of Cosmos' ``DbtTaskGroup`` for the warehouse project.

    The DAG is rendered from the manifest (no dbt call while Airflow parses DAG files, so
    parsing stays fast); dbt runs in the worker through dbtRunner, in this environment;
    each model becomes a task followed by a task with its tests. The connection is the
    project's own (dbt_project/profiles.yml reads AQ_DATABASE_URL from the task's
    environment, which :func:`warehouse_env` fills in), so no password lands in Airflow's
    metadata or rendered fields.
    """
    from cosmos import ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior

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
            execution_mode=ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.DBT_RUNNER,
        ),
        "render_config": RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.AFTER_EACH,
            emit_datasets=False,
        ),
    }


def warehouse_env(context: Any = None) -> None:
    """``on_execute_callback`` of the dbt tasks: AQ_DATABASE_URL in this task's environment.

    dbt (run in the task's process by Cosmos) reads its connection from AQ_DATABASE_URL. With
    the embedded server the Airflow daemons do not carry the warehouse owner's password
    (aqi/services/airflow.py), so the task resolves it just before dbt runs, from
    ``AQ_HOME/secrets``; an external AQ_DATABASE_URL is already there and kept. Only the dbt
    tasks get it: the other tasks resolve the URL themselves, and their ``aqi`` children must
    not take the embedded server for an external one.
    """
    if not os.environ.get("AQ_DATABASE_URL"):
        from aqi.connections import database_url

        os.environ["AQ_DATABASE_URL"] = database_url(load_settings())


def _wait_for_running_stream(settings: Settings, echo: Echo) -> None:
    import psycopg

    from aqi.connections import database_url, kafka_bootstrap_servers
    from aqi.topics import end_offsets
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
        time.sleep(5)
