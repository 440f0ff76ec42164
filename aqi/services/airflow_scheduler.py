"""The embedded scheduler: Airflow's own ``airflow scheduler``, with the tasks' libraries
imported first.

Why: with the LocalExecutor on Linux, a worker is a fork of the scheduler and every task a
fork of a worker (``airflow.sdk.execution_time.supervisor``: ``os.fork`` without exec). What
the scheduler has imported, each task has at no cost; what it has not, each task imports
anew. Of the ~34 s of a steady ``openaq_elt`` run on the tiny warehouse, importing Great
Expectations took ~3 s in each of the two gates and dbt ~1.7 s in the producer
(docs/benchmarks.md, "Orchestration"). Imported once here, they are in memory before the
first run and shared copy-on-write by the workers.

Only the scheduler runs this way: the API server and the DAG processor never run a task.
``aqi airflow up`` starts it as ``python -m aqi.services.airflow_scheduler scheduler ...``;
the arguments are Airflow's own.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["PRELOADED", "main", "preload"]

#: what the tasks of the project's DAGs import: the gates (GX), the producer (dbt through
#: Cosmos' watcher), the glue they share
PRELOADED = (
    "expectations._gx",  # great_expectations, imported the way the gates import it
    "expectations.runner",
    "dbt.cli.main",
    "dbt.adapters.postgres",
    "cosmos",
    "cosmos.operators.watcher",
    "aqi.orchestration",
    "aqi.alerts",
    "aqi.alert_notifier",
)


def preload(modules: tuple[str, ...] = PRELOADED) -> list[str]:
    """Import ``modules``; returns those that could not be imported (the task that needs one
    reports the error itself, with its own traceback, when it runs)."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a preload is an optimisation, never a failure
            missing.append(name)
    return missing


def main(argv: list[str] | None = None) -> None:
    """``airflow <argv>`` in this process, after :func:`preload`."""
    from airflow.__main__ import main as airflow_main

    missing = preload()
    if missing:
        print(f"aqi: could not preload {', '.join(missing)}", file=sys.stderr)
    sys.argv = ["airflow", *(sys.argv[1:] if argv is None else argv)]
    airflow_main()


if __name__ == "__main__":
    main()
