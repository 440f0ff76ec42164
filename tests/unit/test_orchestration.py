"""Orchestration pieces that need no scheduler: the run-once summary, params, the stream lock."""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aqi.core.errors import AqiError
from aqi.orchestration import run_backfill
from aqi.services.airflow import _TaskSummary
from expectations.report import CheckReport, ExpectationsFailed, Outcome
from spark_streaming.job import checkpoint_lock, stream_is_running

pytestmark = pytest.mark.unit

#: the frame of a failed task in `airflow dags test` output (Airflow 3.3, recorded, trimmed);
#: {traceback} is today's: a real ExpectationsFailed raised and formatted by this test
DAGS_TEST_FRAME = """\
2026-11-21T15:28:28.747191Z [info     ] [DAG TEST] starting task_id=drain_stream map_index=-1 [x]
$ aqi stream --available-now
2026-11-21T15:29:04.595004Z [info     ] [DAG TEST] end task task_id=drain_stream map_index=-1 [x]
2026-11-21T15:29:04.610661Z [info     ] [DAG TEST] starting task_id=check_gold map_index=-1 [x]
2026-11-21T15:29:04.652132Z [error    ] Task failed with exception     [task] loc=task_runner.py:1676
{traceback}
2026-11-21T15:29:04.657392Z [info     ] ::endgroup::                   [task] loc=task_runner.py:2379
2026-11-21T15:29:04.674811Z [info     ] [DAG TEST] end task task_id=check_gold map_index=-1 [x]
"""


def _failed_gate() -> tuple[CheckReport, str]:
    """A gold gate's report with one failure, and the traceback its exception prints."""
    failure = Outcome(
        table="gold.pm25_15min",
        expectation="expect_column_values_to_be_between",
        rule="pm25_avg, 0..2000",
        success=False,
        unexpected=1,
        checked=96,
        samples=("location_id=3, window_start=2025-11-03 16:00:00+00:00, pm25_avg=5000.0",),
    )
    passed = Outcome(table="gold.latest", expectation="expect_table_row_count_to_be_between",
                     rule="1..", success=True)  # fmt: skip
    report = CheckReport(success=False, results=[failure, passed],
                         docs_index=Path("/aq/gx/index.html"), suites=("gold",))  # fmt: skip
    try:
        report.raise_for_failures()
    except ExpectationsFailed:
        return report, traceback.format_exc().rstrip("\n")
    raise AssertionError("a failed report must raise")


def test_run_once_summary_is_one_line_per_task_plus_the_error_of_a_failure() -> None:
    report, trace = _failed_gate()
    assert trace.startswith("Traceback (most recent call last):")
    lines: list[str] = []
    summary = _TaskSummary(lines.append)
    for line in DAGS_TEST_FRAME.format(traceback=trace).splitlines():
        summary.feed(line)
    assert lines[0].split()[:2] == ["ok", "drain_stream"]
    assert lines[1].split()[:2] == ["FAILED", "check_gold"]
    details = [x.strip() for x in lines[2:]]
    # the exception's whole message (the report), not the traceback's frames
    first, *rest = report.text().splitlines()
    assert details == [f"expectations.report.ExpectationsFailed: {first}", *(r.strip() for r in rest)]
    assert any(d.startswith("✗ gold.pm25_15min") for d in details)
    assert details[-1] == "Data Docs: /aq/gx/index.html"


def test_backfill_params_need_locations() -> None:
    with pytest.raises(AqiError, match="at least one location"):
        run_backfill([], "2025-01-01", None, echo=lambda line: None)
    with pytest.raises(ValueError):
        run_backfill(["abc"], "2025-01-01", None, echo=lambda line: None)


def test_an_empty_until_is_the_run_s_trigger_time_so_a_retry_resumes_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aqi import orchestration

    commands: list[list[str]] = []
    monkeypatch.setattr(orchestration, "run_aqi_command", lambda args, echo: commands.append(args))
    triggered = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    for _attempt in range(2):
        run_backfill([2178], "2026-01-01", None, triggered_at=triggered)
    run_backfill([2178], "2026-01-01", "2026-02-01")
    run_backfill([2178], "2026-01-01", None)
    assert commands[0] == commands[1] == [
        "backfill", "--location", "2178", "--since", "2026-01-01",
        "--until", "2026-03-04T05:06:07+00:00",
    ]  # fmt: skip
    assert commands[2][-2:] == ["--until", "2026-02-01"]
    now = datetime.fromisoformat(commands[3][-1])
    assert abs((now - datetime.now(UTC)).total_seconds()) < 60


def test_one_stream_per_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoints" / "openaq_raw"
    assert not stream_is_running(checkpoint)
    with checkpoint_lock(checkpoint):
        assert stream_is_running(checkpoint)
        with pytest.raises(AqiError, match="another `aqi stream`"), checkpoint_lock(checkpoint):
            pass
    assert not stream_is_running(checkpoint)


def _node(resource_type: str, *parents: str):
    from types import SimpleNamespace

    import cosmos.operators.watcher  # noqa: F401  (first: cosmos.constants alone is circular)
    from cosmos.constants import DbtResourceType

    return SimpleNamespace(resource_type=DbtResourceType(resource_type), depends_on=list(parents))


def test_a_source_past_error_after_skips_what_reads_only_from_it_and_a_warning_skips_nothing() -> (
    None
):
    from aqi.orchestration import freshness_callback

    raw, other = "source.p.openaq.openaq_measurements", "source.p.other.table"
    nodes = {
        raw: _node("source"),
        other: _node("source"),
        "model.p.stg": _node("model", raw),
        "model.p.int": _node("model", "model.p.stg"),
        "seed.p.limits": _node("seed"),
        "model.p.both": _node("model", "model.p.int", "seed.p.limits"),
        "model.p.other_stg": _node("model", other),
    }
    results = {"results": [{"unique_id": raw, "status": "error"},
                           {"unique_id": other, "status": "warn"}]}  # fmt: skip
    skipped = dict(freshness_callback({}, None, None, nodes, results))
    # every model reading only from the stale source, however far downstream; a model with a
    # clean input (a seed) still runs; a warning is only a warning
    assert skipped == {"model.p.stg": "skipped", "model.p.int": "skipped"}
    warn_only = {"results": [{"unique_id": raw, "status": "warn"}]}
    assert freshness_callback({}, None, None, nodes, warn_only) == []
    assert freshness_callback({}, None, None, nodes, None) == []


def test_cosmos_reads_the_manifest_where_dbt_writes_it(monkeypatch, tmp_path: Path) -> None:
    """DBT_TARGET_PATH moves dbt's artifacts (absolute, or relative to the project as dbt
    reads it); the manifest Cosmos renders from follows it."""
    from aqi.core.warehouse import DBT_PROJECT_DIR
    from aqi.orchestration import dbt_manifest_path

    monkeypatch.delenv("DBT_TARGET_PATH", raising=False)
    assert dbt_manifest_path() == DBT_PROJECT_DIR / "target" / "manifest.json"
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "elsewhere"))
    assert dbt_manifest_path() == tmp_path / "elsewhere" / "manifest.json"
    monkeypatch.setenv("DBT_TARGET_PATH", "target-b")
    assert dbt_manifest_path() == DBT_PROJECT_DIR / "target-b" / "manifest.json"


def test_the_dbt_tasks_leave_dbt_s_artifacts_where_cosmos_reads_them(monkeypatch) -> None:
    """Cosmos reads target/ of its copy of the project: an inherited DBT_TARGET_PATH (or
    DBT_LOG_PATH) is dropped before dbt runs in the task, the warehouse URL is kept."""
    import os

    from aqi.orchestration import warehouse_env

    monkeypatch.setenv("AQ_DATABASE_URL", "postgresql://aq@127.0.0.1:1/aq")
    monkeypatch.setenv("DBT_TARGET_PATH", "/elsewhere/target")
    monkeypatch.setenv("DBT_LOG_PATH", "/elsewhere/logs")
    warehouse_env({})
    assert "DBT_TARGET_PATH" not in os.environ and "DBT_LOG_PATH" not in os.environ
    assert os.environ["AQ_DATABASE_URL"] == "postgresql://aq@127.0.0.1:1/aq"
