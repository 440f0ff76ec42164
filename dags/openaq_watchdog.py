"""openaq_watchdog: every 5 minutes, alert once when openaq_elt has not succeeded for
AQ_ALERT_DEADLINE_MINUTES (45 by default).

A failed task alerts by itself (openaq_elt's failure notifiers); this catches what sends no
failure: runs that hang, runs that are never created (paused DAG, an import error), a
schedule that silently stopped. It reads the heartbeat openaq_elt's last task writes
(:func:`aqi.alerts.record_success`) and imports nothing of the pipeline, so it still runs
when openaq_elt's DAG file does not load. No failure notifiers here: they would go through
the channels that just failed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag, task

from aqi import alerts
from aqi.core.config import load_settings


@dag(
    dag_id="openaq_watchdog",
    schedule="*/5 * * * *",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    default_args={"retries": 0},
    tags=["openaq", "alerts"],
    doc_md=__doc__,
)
def openaq_watchdog() -> None:
    @task
    def check_deadline() -> str:
        return alerts.check_deadline(load_settings())

    check_deadline()


openaq_watchdog()
