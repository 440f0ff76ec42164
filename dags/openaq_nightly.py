"""openaq_nightly: once a day, the checks the 15-minute runs leave out because they judge
only what each run rebuilt.

1. ``full_tests``: every dbt data test on every row (selector ``nightly_full``, var
   ``full_tests``): duplicates across old and new slices, rows changed by hand.
2. ``full_check``: the Great Expectations suites on whole tables.
3. ``full_export``: every day file rewritten, and files of days gone from a table removed
   (``aqi export --all``).

All three only read the warehouse, so they can overlap an openaq_elt run. Failures alert
like openaq_elt's (AQ_ALERT_*). The logic lives in :mod:`aqi.orchestration`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import CronTriggerTimetable, dag, task

from aqi import alerts, orchestration
from aqi.core.config import load_settings


@dag(
    dag_id="openaq_nightly",
    # at 02:30 UTC, never "the run missed before the DAG existed" right at `airflow up`
    schedule=CronTriggerTimetable("30 2 * * *", timezone="UTC"),
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    dagrun_timeout=timedelta(hours=3),
    default_args={
        "retries": 1,
        "retry_delay": timedelta(minutes=5),
        "on_failure_callback": alerts.failure_notifiers(load_settings()),
    },
    tags=["openaq", "dbt", "great-expectations"],
    doc_md=__doc__,
)
def openaq_nightly() -> None:
    @task
    def full_tests() -> None:
        orchestration.full_tests()

    @task
    def full_check() -> None:
        orchestration.quality_gate("raw", whole=True)
        orchestration.quality_gate("gold", whole=True)

    @task
    def full_export() -> dict[str, int]:
        return orchestration.refresh_exports(full=True)

    full_tests() >> full_check() >> full_export()


openaq_nightly()
