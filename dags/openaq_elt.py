"""openaq_elt: every 15 minutes, raw -> gated dbt warehouse -> gated gold -> CSV exports.

1. ``drain_stream``: ``aqi stream --available-now`` (or wait for the long-running stream).
2. ``check_raw``: Great Expectations on raw.openaq_measurements; a failure stops the run.
3. ``dbt``: the dbt project through Cosmos, one task per model with its tests right after.
4. ``check_gold``: Great Expectations on the gold tables; a failure stops the run.
5. ``export_marts``: CSV files of the gold tables under AQ_HOME/exports.

Param ``full_refresh`` rebuilds every incremental model (dbt ``--full-refresh``).
The logic lives in :mod:`aqi.orchestration`; this file only wires it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, task
from cosmos import DbtTaskGroup

from aqi import orchestration


@dag(
    dag_id="openaq_elt",
    schedule="*/15 * * * *",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    dagrun_timeout=timedelta(hours=1),
    default_args={"retries": 0},
    params={
        "full_refresh": Param(
            False, type="boolean", description="Rebuild the incremental models from scratch."
        )
    },
    tags=["openaq", "dbt", "great-expectations"],
    doc_md=__doc__,
)
def openaq_elt() -> None:
    @task
    def drain_stream() -> str:
        return orchestration.drain_stream()

    @task
    def check_raw() -> None:
        orchestration.quality_gate("raw")

    warehouse = DbtTaskGroup(
        group_id="dbt",
        operator_args={
            "full_refresh": "{{ params.full_refresh }}",
            # the warehouse's URL, resolved in the task: the Airflow daemons do not hold it
            "on_execute_callback": orchestration.warehouse_env,
        },
        **orchestration.cosmos_configs(),
    )

    @task
    def check_gold() -> None:
        orchestration.quality_gate("gold")

    @task
    def export_marts() -> dict[str, int]:
        return orchestration.refresh_exports()

    drain_stream() >> check_raw() >> warehouse >> check_gold() >> export_marts()


openaq_elt()
