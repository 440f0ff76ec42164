"""openaq_elt: every 15 minutes, raw -> gated dbt warehouse -> gated gold -> CSV exports.

1. ``drain_stream``: ``aqi stream --available-now`` (or wait for the long-running stream;
   nothing at all when raw already holds the whole topic).
2. ``check_raw``: Great Expectations on the raw rows loaded since it last passed.
3. ``dbt``: the dbt project through Cosmos in WATCHER mode: ``dbt_producer_watcher`` runs
   ``dbt source freshness`` then one ``dbt build`` (tests of each model on the rows it
   rebuilt); every source, model and model's tests keeps its own task, which reports what
   the build did to it and, when retried, runs that model by itself.
4. ``check_gold``: Great Expectations on the gold rows dbt rebuilt since it last passed.
5. ``publish``: CSV files of the changed days of the gold tables (and latest.csv) under
   AQ_HOME/exports; the AQI alerts (gold.aqi_alerts: episodes of NowCast AQI at
   AQ_AQI_ALERT_CATEGORY or worse opened, followed, cleared, each new one notified once);
   Superset's results cache emptied (the dashboards show the new data at once); then the
   heartbeat the ``openaq_watchdog`` DAG reads.

Transient tasks retry with exponential backoff; a task that fails for good sends the
configured alerts (AQ_ALERT_*, off by default). Param ``full_refresh`` rebuilds every
incremental model (dbt ``--full-refresh``). The logic lives in :mod:`aqi.orchestration`;
this file only wires it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task
from cosmos import DbtTaskGroup

from aqi import alerts, orchestration
from aqi.core.config import ELT_INTERVAL_MINUTES, load_settings

#: drain, dbt and exports: a broker, a database or a disk that hiccups gets three more tries
TRANSIENT_RETRIES = {
    "retries": 3,
    "retry_delay": timedelta(seconds=15),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=5),
}
#: a failed expectation is not transient: fail (and alert) at once
GATE = {"retries": 0}


@dag(
    dag_id="openaq_elt",
    # Superset's cached chart results expire with this schedule (aqi/services/superset_cache.py)
    schedule=f"*/{ELT_INTERVAL_MINUTES} * * * *",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    dagrun_timeout=timedelta(hours=1),
    default_args={
        **TRANSIENT_RETRIES,
        "on_failure_callback": alerts.failure_notifiers(load_settings()),
    },
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

    @task(**GATE)
    def check_raw() -> None:
        orchestration.quality_gate("raw")

    warehouse = DbtTaskGroup(
        group_id="dbt",
        operator_args={
            "full_refresh": "{{ params.full_refresh }}",
            # the warehouse's URL, resolved in the task: the Airflow daemons do not hold it
            "on_execute_callback": orchestration.warehouse_env,
            **orchestration.watcher_sensor_args(),
        },
        **orchestration.cosmos_configs(),
    )

    @task(**GATE)
    def check_gold() -> None:
        orchestration.quality_gate("gold")

    @task
    def publish() -> dict[str, int]:
        return orchestration.publish(get_current_context()["run_id"])

    drain_stream() >> check_raw() >> warehouse >> check_gold() >> publish()


openaq_elt()
