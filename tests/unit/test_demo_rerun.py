"""When a re-run of `aqi demo` runs openaq_elt again: only when something it reads changed."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aqi import alerts, demo
from aqi.core.config import load_settings

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout whose inputs of openaq_elt were last written an hour before T0."""
    root = tmp_path / "checkout"
    for name in ("dbt_project/models/gold.sql", "dags/elt.py", "expectations/suites.py",
                 "aqi/orchestration.py"):  # fmt: skip
        _write(root / name, T0 - timedelta(hours=1))
    monkeypatch.setattr(demo, "REPO_ROOT", root)
    return root


def _write(path: Path, when: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    os.utime(path, (when.timestamp(), when.timestamp()))


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loaded: datetime | None):
    settings = load_settings({"AQ_HOME": str(tmp_path / "aq")}, dotenv=None)
    monkeypatch.setattr(demo, "_newest_load", lambda s: loaded)
    return settings


def test_never_succeeded_runs(tmp_path: Path, monkeypatch, checkout: Path) -> None:
    settings = _settings(tmp_path, monkeypatch, T0 - timedelta(minutes=5))
    assert demo._elt_is_current(settings) is None


def test_nothing_new_since_the_last_success_is_current(
    tmp_path: Path, monkeypatch, checkout: Path
) -> None:
    settings = _settings(tmp_path, monkeypatch, T0 - timedelta(minutes=5))
    alerts.record_success(settings, at=T0)
    why = demo._elt_is_current(settings)
    assert why is not None and "2026-12-05 12:00:00 UTC" in why and "11:55:00" in why


def test_a_row_loaded_since_runs(tmp_path: Path, monkeypatch, checkout: Path) -> None:
    settings = _settings(tmp_path, monkeypatch, T0 + timedelta(seconds=1))
    alerts.record_success(settings, at=T0)
    assert demo._elt_is_current(settings) is None


def test_no_raw_rows_runs(tmp_path: Path, monkeypatch, checkout: Path) -> None:
    settings = _settings(tmp_path, monkeypatch, None)
    alerts.record_success(settings, at=T0)
    assert demo._elt_is_current(settings) is None


@pytest.mark.parametrize("changed", ["dbt_project/models/new.sql", "dags/elt.py",
                                     "expectations/suites.py", "aqi/orchestration.py"])  # fmt: skip
def test_a_file_changed_since_runs(tmp_path: Path, monkeypatch, checkout: Path, changed) -> None:
    settings = _settings(tmp_path, monkeypatch, T0 - timedelta(minutes=5))
    alerts.record_success(settings, at=T0)
    _write(checkout / changed, T0 + timedelta(minutes=1))
    assert demo._elt_is_current(settings) is None


@pytest.mark.parametrize("output", ["dbt_project/target/manifest.json", "dbt_project/logs/dbt.log",
                                    "aqi/__pycache__/demo.cpython-311.pyc",
                                    "dbt_project/.user.yml"])  # fmt: skip
def test_outputs_and_caches_are_not_inputs(
    tmp_path: Path, monkeypatch, checkout: Path, output
) -> None:
    settings = _settings(tmp_path, monkeypatch, T0 - timedelta(minutes=5))
    alerts.record_success(settings, at=T0)
    _write(checkout / output, T0 + timedelta(minutes=1))
    assert demo._elt_is_current(settings) is not None
