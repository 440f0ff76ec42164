"""The embedded scheduler imports the tasks' libraries before Airflow starts (its workers and
tasks are forks of it), and a name that no longer imports is reported, not fatal."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aqi.services.airflow import _command
from aqi.services.airflow_scheduler import PRELOADED, preload

pytestmark = pytest.mark.unit


def test_every_preloaded_module_imports() -> None:
    # a module renamed in a library or here would silently stop being preloaded
    assert preload() == []
    assert {"great_expectations", "dbt.cli.main", *PRELOADED} <= set(sys.modules)


def test_a_module_that_cannot_be_imported_is_reported_not_raised() -> None:
    assert preload(("json", "aqi_no_such_module")) == ["aqi_no_such_module"]


def test_only_the_scheduler_starts_through_the_preloader() -> None:
    assert _command("scheduler") == [sys.executable, "-m", "aqi.services.airflow_scheduler"]
    airflow = str(Path(sys.executable).with_name("airflow"))
    assert _command("api-server") == [airflow] and _command("dag-processor") == [airflow]
