"""openaq_backfill: on demand, send the history of some OpenAQ locations to Kafka.

Runs ``aqi backfill --location ... --since ... --until ...`` (resumable: a failed run that is
started again with the same params continues where it stopped). The next ``openaq_elt`` run
streams the events into the warehouse.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag, task

from aqi import orchestration


@dag(
    dag_id="openaq_backfill",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0},
    params={
        "locations": Param(
            [],
            type="array",
            items={"type": "integer"},
            minItems=1,
            description="OpenAQ location ids.",
        ),
        "since": Param(
            "",
            type="string",
            minLength=10,
            description="Start (exclusive): YYYY-MM-DD (midnight UTC) or ISO-8601 date-time.",
        ),
        "until": Param(
            None,
            type=["null", "string"],
            description="End (inclusive), same formats; empty = when the run was triggered "
            "(a retry resumes the same job).",
        ),
    },
    tags=["openaq", "backfill"],
    doc_md=__doc__,
)
def openaq_backfill() -> None:
    @task
    def backfill(params: dict | None = None, dag_run=None) -> None:
        p = params or {}
        orchestration.run_backfill(
            p["locations"], p["since"], p.get("until") or None,
            triggered_at=dag_run.run_after if dag_run is not None else None,
        )  # fmt: skip

    backfill()


openaq_backfill()
