"""The gold tables' contract, read from dbt's gold yml (``models/marts/gold/_gold__models.yml``).

dbt builds and documents the gold models there, with an enforced contract per model, so it is
the one list of gold tables: the quality gate checks each model it lists, the exports write
each, and their columns and grain come from the same entries. A model added to the yml is
therefore checked and exported without another list to update.

One gold table is not a dbt model: ``aqi_alerts``, the episodes of unhealthy air that the
alert step (aqi/aqi_alerts.py) records run after run (migration 0005). The dashboard's views
(``models/marts/dashboards/``) are dbt models of the gold schema too, but not gold tables:
they hold no rows of their own, so the gate does not check them nor the exports write them.
:func:`gold_tables` lists all three kinds, for readers of gold such as the dashboard.

Public surface: :data:`GOLD_SCHEMA`, :data:`GOLD_MODELS_YML`, :data:`DASHBOARD_VIEWS_YML`,
:data:`AQI_ALERTS_TABLE`, :func:`gold_models`, :func:`dashboard_views`, :func:`gold_tables`,
:func:`model_columns`, :func:`model_unique_key`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from aqi.core.warehouse import DBT_PROJECT_DIR

__all__ = [
    "AQI_ALERTS_TABLE",
    "DASHBOARD_VIEWS_YML",
    "GOLD_MODELS_YML",
    "GOLD_SCHEMA",
    "dashboard_views",
    "gold_models",
    "gold_tables",
    "model_columns",
    "model_unique_key",
]

GOLD_MODELS_YML = DBT_PROJECT_DIR / "models" / "marts" / "gold" / "_gold__models.yml"
#: the dashboard's views of gold (built in the gold schema: dbt_project.yml)
DASHBOARD_VIEWS_YML = (
    DBT_PROJECT_DIR / "models" / "marts" / "dashboards" / "_dashboards__models.yml"
)
#: the schema dbt builds the gold models in (dbt_project.yml; generate_schema_name keeps it)
GOLD_SCHEMA = "gold"
#: the gold table the alert step writes (aqi/core/sql/0005_aqi_alerts.sql), not dbt
AQI_ALERTS_TABLE = "aqi_alerts"


def gold_models(path: Path = GOLD_MODELS_YML) -> tuple[str, ...]:
    """The models documented in the gold yml, in order."""
    return _model_names(path)


def dashboard_views(path: Path = DASHBOARD_VIEWS_YML) -> tuple[str, ...]:
    """The dashboard's views of gold documented in their yml, in order."""
    return _model_names(path)


def gold_tables(path: Path = GOLD_MODELS_YML, views: Path = DASHBOARD_VIEWS_YML) -> tuple[str, ...]:
    """Every relation of the gold schema: the gold models, the alert step's table, then the
    dashboard's views."""
    return (*gold_models(path), AQI_ALERTS_TABLE, *dashboard_views(views))


def model_columns(model: str, path: Path = GOLD_MODELS_YML) -> tuple[str, ...]:
    """The columns the model's yml documents, in order."""
    return tuple(column["name"] for column in _model(model, path).get("columns", []))


def model_unique_key(model: str, path: Path = GOLD_MODELS_YML) -> tuple[str, ...]:
    """The model's grain: its contract's ``primary_key`` constraint, or the columns of its
    ``unique_combination`` test."""
    entry = _model(model, path)
    for constraint in entry.get("constraints", []) or []:
        if constraint.get("type") == "primary_key":
            return tuple(constraint["columns"])
    for test in entry.get("tests", []) or entry.get("data_tests", []):
        if isinstance(test, dict) and "unique_combination" in test:
            spec = test["unique_combination"]
            return tuple((spec.get("arguments") or spec)["columns"])
    raise LookupError(f"{path}: model {model!r} has no primary key nor unique_combination test")


def _model(model: str, path: Path) -> dict[str, Any]:
    for entry in _yaml(path).get("models", []):
        if entry.get("name") == model:
            return entry
    raise LookupError(f"{path}: no model named {model!r}")


def _model_names(path: Path) -> tuple[str, ...]:
    return tuple(entry["name"] for entry in _yaml(path).get("models", []))


@cache
def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
