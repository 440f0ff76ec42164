"""One list of gold tables: dbt's gold yml. Every part that names gold tables reads it (or,
for the dashboard, reads only tables it lists)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqi.core.gold_contract import (
    AQI_ALERTS_TABLE,
    DASHBOARD_VIEWS_YML,
    GOLD_MODELS_YML,
    GOLD_SCHEMA,
    dashboard_views,
    gold_models,
    gold_tables,
    model_columns,
    model_unique_key,
)
from aqi.core.migrations import MIGRATIONS_DIR
from aqi.dashboards_bundle import load_bundle
from aqi.exports import EXPORTED_TABLES, PARTITIONS
from aqi.services.superset import BUNDLE_DIR
from expectations.reference import checked_tables

pytestmark = pytest.mark.unit


def test_every_gold_sql_model_is_documented_in_the_yml() -> None:
    models = {p.stem for p in GOLD_MODELS_YML.parent.glob("*.sql")}
    assert set(gold_models()) == models
    assert len(gold_models()) == len(set(gold_models())) >= 4


def test_the_gate_and_the_exports_cover_every_gold_model() -> None:
    assert [t for g, _, t in checked_tables(["gold"]) if g == "gold"] == list(gold_models())
    assert list(EXPORTED_TABLES) == list(gold_models())
    for model, key in EXPORTED_TABLES.items():
        assert key == model_unique_key(model) and set(key) <= set(model_columns(model))
    for model, column in PARTITIONS.items():
        assert column in model_columns(model), (model, column)


def test_the_dashboard_reads_only_gold_tables() -> None:
    needed = load_bundle(BUNDLE_DIR).gold_tables()
    assert needed and set(needed) <= set(gold_tables())
    assert set(gold_tables()) - set(gold_models()) == {AQI_ALERTS_TABLE, *dashboard_views()}
    migration = (MIGRATIONS_DIR / "0005_aqi_alerts.sql").read_text()
    assert f"create table if not exists {GOLD_SCHEMA}.{AQI_ALERTS_TABLE} (" in migration


def test_the_dashboard_reads_physical_datasets_only() -> None:
    """A SQL ("virtual") dataset costs a new warehouse connection on every chart request,
    even one answered from the results cache: its shape is a dbt view of gold instead."""
    datasets = dict(load_bundle(BUNDLE_DIR).items("datasets"))
    virtual = [name for name, dataset in datasets.items() if dataset.get("sql")]
    assert datasets and virtual == []
    views = {p.stem for p in DASHBOARD_VIEWS_YML.parent.glob("*.sql")}
    assert set(dashboard_views()) == views
    assert views - {"location_names"} <= set(load_bundle(BUNDLE_DIR).gold_tables())


def test_gold_tables_of_a_bundle_come_from_its_datasets(tmp_path: Path) -> None:
    (tmp_path / "metadata.yaml").write_text("version: 1.0.0\ntype: assets\n")
    datasets = tmp_path / "datasets" / "warehouse"
    datasets.mkdir(parents=True)
    (datasets / "a.yaml").write_text("table_name: latest\nschema: gold\nsql: null\n")
    (datasets / "b.yaml").write_text(
        "table_name: v\nschema: gold\nsql: |-\n"
        "  with recent as (select * from gold.daily_avg) select * from recent\n"
        "  join gold.exceedance_30d e using (location_id)\n"
    )
    assert load_bundle(tmp_path).gold_tables() == ("daily_avg", "exceedance_30d", "latest")
