"""Dashboards as code without Superset: the bundle's checks, the role's SQL, the environment
Superset is started with, its settings file, the browser lookup and the command's help."""

from __future__ import annotations

import copy
import json
import runpy
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from aqi.cli_dashboards import dashboards_group
from aqi.core.config import load_settings
from aqi.core.connections import app_password
from aqi.core.errors import AqiError
from aqi.dashboards_bundle import Bundle, load_bundle, validate_bundle
from aqi.services.superset import (
    BUNDLE_DIR,
    CONFIG_PATH,
    READER_ROLE,
    reader_role_sql,
    reader_url,
    superset_env,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def bundle() -> Bundle:
    return load_bundle(BUNDLE_DIR)


def _file(bundle: Bundle, kind: str, name: str) -> dict:
    return bundle.objects[kind][f"{kind}/{name}"]


# --- the bundle in the repository ------------------------------------------------------------


def test_the_bundle_is_sound(bundle: Bundle) -> None:
    assert validate_bundle(bundle) == []
    assert bundle.metadata["type"] == "assets"
    assert len(bundle.objects["databases"]) == 1
    assert len(bundle.objects["dashboards"]) == 1
    assert bundle.chart_count == 9


def test_uuids_are_unique_across_the_bundle(bundle: Bundle) -> None:
    uuids = [str(c["uuid"]) for kind in bundle.objects.values() for c in kind.values()]
    assert len(uuids) == len(set(uuids))


def test_every_chart_has_a_query_context_and_a_dataset_of_the_bundle(bundle: Bundle) -> None:
    datasets = bundle.by_uuid("datasets")
    for path, chart in bundle.items("charts"):
        assert str(chart["dataset_uuid"]) in datasets, path
        context = json.loads(chart["query_context"])
        assert context["queries"], path


def test_the_charts_the_issue_asks_for(bundle: Bundle) -> None:
    viz = sorted(chart["viz_type"] for _, chart in bundle.items("charts"))
    assert viz == [
        "big_number_total", "big_number_total", "big_number_total", "big_number_total",
        "cal_heatmap", "deck_scatter", "echarts_timeseries_line", "table", "table",
    ]  # fmt: skip
    alerts = _file(bundle, "charts", "open_aqi_alerts.yaml")
    # the open episodes of gold.aqi_alerts, worst first
    assert alerts["params"]["adhoc_filters"][0]["subject"] == "cleared_at"
    assert alerts["params"]["adhoc_filters"][0]["operator"] == "IS NULL"
    (query,) = json.loads(alerts["query_context"])["queries"]
    assert query["filters"] == [{"col": "cleared_at", "op": "IS NULL"}]
    assert query["orderby"][0] == ["peak_aqi", False]
    assert str(alerts["dataset_uuid"]) in {
        str(d["uuid"]) for _, d in bundle.items("datasets") if d["table_name"] == "aqi_alerts"
    }
    scatter = _file(bundle, "charts", "latest_pm25_map.yaml")["params"]
    # coloured by AQI in EPA's colours, on the offline borders Superset serves, no Mapbox key
    assert scatter["color_scheme_type"] == "color_breakpoints"
    colours = [(b["minValue"], b["maxValue"]) for b in scatter["color_breakpoints"]]
    assert colours == [(0, 50), (51, 100), (101, 150), (151, 200), (201, 300), (301, 500)]
    assert scatter["mapbox_style"] == "tile:///aq-tiles/{z}/{x}/{y}.png"
    calendar = _file(bundle, "charts", "pm25_calendar.yaml")["params"]
    since, until = (part.strip() for part in calendar["time_range"].split(" : "))
    assert since and until  # the legacy calendar needs both ends
    dashboard = _file(bundle, "dashboards", "air_quality.yaml")
    legend = [
        item["meta"]["code"]
        for item in dashboard["position"].values()
        if isinstance(item, dict) and item.get("type") == "MARKDOWN"
    ]
    assert len(legend) == 1 and "#00E400" in legend[0] and "#7E0023" in legend[0]
    filters = dashboard["metadata"]["native_filter_configuration"]
    assert [f["targets"][0]["column"]["name"] for f in filters] == ["country_code", "location_name"]


def test_no_password_is_committed(bundle: Bundle) -> None:
    (database,) = bundle.objects["databases"].values()
    assert ":XXXXXXXXXX@" in database["sqlalchemy_uri"]
    assert database["allow_dml"] is False and database["allow_file_upload"] is False


# --- the checks catch mistakes -------------------------------------------------------------------


def _broken(bundle: Bundle, change) -> list[str]:
    twin = Bundle(root=bundle.root, metadata=dict(bundle.metadata),
                  objects=copy.deepcopy(bundle.objects))  # fmt: skip
    change(twin)
    return validate_bundle(twin)


def test_validation_finds_a_duplicate_uuid(bundle: Bundle) -> None:
    def dup(b: Bundle) -> None:
        chart = _file(b, "charts", "pm25_calendar.yaml")
        chart["uuid"] = _file(b, "charts", "pm25_trend_15min.yaml")["uuid"]

    assert any("is also used by" in p for p in _broken(bundle, dup))


def test_validation_finds_a_chart_without_query_context(bundle: Bundle) -> None:
    def drop(b: Bundle) -> None:
        _file(b, "charts", "kpi_last_ingest.yaml")["query_context"] = None

    assert _broken(bundle, drop) == [
        "charts/kpi_last_ingest.yaml: no query_context (Superset's chart data API would answer 400)"
    ]


def test_validation_finds_unknown_datasets_metrics_and_columns(bundle: Bundle) -> None:
    def orphan(b: Bundle) -> None:
        _file(b, "charts", "kpi_last_ingest.yaml")["dataset_uuid"] = (
            "00000000-0000-4000-8000-000000000000"
        )

    assert any("dataset_uuid is not a dataset" in p for p in _broken(bundle, orphan))

    def unknown(b: Bundle) -> None:
        chart = _file(b, "charts", "kpi_active_locations.yaml")
        chart["params"]["metric"] = "nope"
        context = json.loads(chart["query_context"])
        context["queries"][0]["columns"] = ["no_such_column"]
        chart["query_context"] = json.dumps(context)

    problems = _broken(bundle, unknown)
    assert any("params metric 'nope'" in p for p in problems)
    assert any("column 'no_such_column'" in p for p in problems)


def test_validation_finds_a_password_and_sql_outside_gold(bundle: Bundle) -> None:
    def leak(b: Bundle) -> None:
        (database,) = b.objects["databases"].values()
        database["sqlalchemy_uri"] = "postgresql+psycopg2://aq_superset:hunter2@h:5432/aq"
        dataset = _file(b, "datasets", "aq_gold/pm25_15min_by_location.yaml")
        # a SQL dataset that reads outside gold
        dataset["sql"] = "select * from gold.pm25_15min join raw.openaq_measurements on true"

    problems = _broken(bundle, leak)
    assert any("holds a password" in p for p in problems)
    assert any("raw.openaq_measurements" in p for p in problems)


def test_validation_finds_a_filter_that_cannot_reach_a_chart(bundle: Bundle) -> None:
    def narrow(b: Bundle) -> None:
        dataset = _file(b, "datasets", "aq_gold/daily_pm25_by_location.yaml")
        dataset["columns"] = [c for c in dataset["columns"] if c["column_name"] != "country_code"]

    assert any("cannot apply to chart 'Daily PM2.5" in p for p in _broken(bundle, narrow))


def test_validation_finds_a_chart_missing_from_the_dashboard(bundle: Bundle) -> None:
    def hide(b: Bundle) -> None:
        position = _file(b, "dashboards", "air_quality.yaml")["position"]
        del position["CHART-calendar"]
        position["ROW-history"]["children"].remove("CHART-calendar")

    assert _broken(bundle, hide) == ["charts/pm25_calendar.yaml: the chart is on no dashboard"]


def test_a_folder_without_metadata_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(AqiError, match="no metadata.yaml"):
        load_bundle(tmp_path)


# --- the role, the environment, the settings file ----------------------------------------------


def test_the_role_sql_grants_reading_gold_only_and_holds_no_password(tmp_path: Path) -> None:
    settings = load_settings({"AQ_HOME": str(tmp_path)}, dotenv=None)
    text = reader_role_sql(settings)
    password = (tmp_path / "secrets" / "postgres_superset_password").read_text().strip()
    assert password not in text and "PASSWORD :'password'" in text
    assert f"GRANT SELECT ON ALL TABLES IN SCHEMA gold TO {READER_ROLE};" in text
    assert (
        f"ALTER DEFAULT PRIVILEGES FOR ROLE aq IN SCHEMA gold GRANT SELECT ON TABLES TO {READER_ROLE};"
        in text
    )
    assert "raw" not in text.lower().replace("nobypassrls", "")
    assert "GRANT INSERT" not in text and "GRANT CREATE" not in text


def test_the_reader_url_follows_an_external_database(tmp_path: Path) -> None:
    settings = load_settings(
        {"AQ_HOME": str(tmp_path), "AQ_DATABASE_URL": "postgresql://boss:pw@db.example:6543/wh"},
        dotenv=None,
    )
    url = reader_url(settings, driver="postgresql+psycopg2")
    assert url.startswith(f"postgresql+psycopg2://{READER_ROLE}:")
    assert url.endswith("@db.example:6543/wh") and "boss" not in url


def test_superset_runs_with_generated_secrets_and_no_admin_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAQ_API_KEY", "not-for-superset")
    settings = load_settings({"AQ_HOME": str(tmp_path), "AQ_PG_PORT": "5999"}, dotenv=None)
    env = superset_env(settings)
    assert "OPENAQ_API_KEY" not in env
    key_file = tmp_path / "secrets" / "superset_secret_key"
    assert env["SUPERSET_SECRET_KEY"] == key_file.read_text().strip()
    assert len(env["SUPERSET_SECRET_KEY"]) >= 40
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # its metadata as its own role, as in docker-compose: the warehouse owner's password is
    # nowhere in its environment
    assert env["SUPERSET_METADATA_URI"].startswith("postgresql+psycopg2://superset:")
    assert app_password(settings) not in "\n".join(env.values())
    assert env["SUPERSET_METADATA_URI"].endswith("@127.0.0.1:5999/superset")
    assert env["SUPERSET_CONFIG_PATH"] == str(CONFIG_PATH)
    assert not (tmp_path / "secrets" / "superset_admin_password").exists()


def test_the_settings_file_takes_everything_from_the_environment(monkeypatch, tmp_path) -> None:
    names = ("SUPERSET_SECRET_KEY", "SUPERSET_METADATA_URI", "SUPERSET_HOME",
             "SUPERSET_BASEMAP_ARCHIVE")  # fmt: skip
    for name in names:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="SUPERSET_SECRET_KEY is not set"):
        runpy.run_path(str(CONFIG_PATH))
    monkeypatch.setenv("SUPERSET_SECRET_KEY", "k" * 42)
    monkeypatch.setenv("SUPERSET_METADATA_URI", "postgresql+psycopg2://aq:pw@127.0.0.1:1/superset")
    monkeypatch.setenv("SUPERSET_HOME", "/tmp/superset-home")
    with pytest.raises(RuntimeError, match="SUPERSET_BASEMAP_ARCHIVE is not set"):
        runpy.run_path(str(CONFIG_PATH))
    (tmp_path / "world-atlas.tgz").write_bytes(b"")
    monkeypatch.setenv("SUPERSET_BASEMAP_ARCHIVE", str(tmp_path / "world-atlas.tgz"))
    config = runpy.run_path(str(CONFIG_PATH))
    assert config["SECRET_KEY"] == "k" * 42
    policy = json.dumps(config["TALISMAN_CONFIG"])
    assert "scarf" not in policy and "tile.openstreetmap.org" in policy
    assert config["MAPBOX_API_KEY"] == ""


# --- the browser and the command -------------------------------------------------------------


def test_a_missing_chromium_is_one_line_saying_how_to_install_it(monkeypatch) -> None:
    from aqi import screenshot

    monkeypatch.setattr(screenshot.shutil, "which", lambda name: None)
    with pytest.raises(screenshot.ScreenshotError) as err:
        screenshot.ensure_chromium()
    assert (
        str(err.value) == "chromium is not installed: install it with: apt-get install -y chromium"
    )


def test_the_screenshot_tool_is_locked() -> None:
    from aqi.screenshot import TOOL_DIR

    package = json.loads((TOOL_DIR / "package.json").read_text())
    lock = json.loads((TOOL_DIR / "package-lock.json").read_text())
    assert package["dependencies"] == {
        "playwright-core": lock["packages"]["node_modules/playwright-core"]["version"]
    }


def test_every_dashboards_command_has_help() -> None:
    runner = CliRunner()
    for name in ["", *dashboards_group.commands]:
        result = runner.invoke(dashboards_group, [name, "--help"] if name else ["--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output
    assert set(dashboards_group.commands) == {"up", "down", "status", "screenshot", "role-sql"}
