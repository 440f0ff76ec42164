"""Superset as code on the real stack: provisioning, the API, re-provisioning, the screenshot,
and the read-only role Superset queries the warehouse with.

One private AQ_HOME for the module (its own PostgreSQL and Superset on free ports; the
session's broker, which nothing here uses, so that `aqi services up` starts no other):
35 days of 6 simulated locations go straight into raw.openaq_measurements, `aqi dbt build`
makes the marts, `aqi dashboards up` provisions superset/bundle and serves it.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from conftest import (
    listening_sockets,
    off_loopback,
    private_stack,
    run_aqi,
    run_aqi_dbt,
    warehouse_owner_leaks,
)
from superset_support import Api, superset_api
from warehouse_support import load_raw_events

from aqi.core.connections import database_url
from aqi.core.environments import superset_env_dir
from aqi.dashboards_bundle import load_bundle
from aqi.orchestration import publish
from aqi.services.superset import (
    ANALYST_ROLE,
    ANALYST_USER,
    BUNDLE_DIR,
    READER_ROLE,
    EmbeddedSuperset,
    analyst_password,
    reader_url,
    superset_env,
)
from aqi.services.superset_cache import RESULTS_CACHE_TIMEOUT_S, clear_results_cache
from ingestion.simulator import SimulationConfig, simulate

# the module's tests share one costly fixture: one xdist worker runs them all (make test)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("dashboards")]

BUNDLE = load_bundle(BUNDLE_DIR)
PERMISSION_PROBE = Path(__file__).parents[1] / "superset_permission_probe.py"
GOLD = ["latest", "pm25_15min", "daily_avg", "exceedance_30d", "aqi_alerts"]


def _dashboards(stack: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`aqi dashboards ARGS`, the real command."""
    return run_aqi(["dashboards", *args], stack["env"], stack["cwd"], timeout=timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, services: dict) -> Iterator[dict]:
    # a PostgreSQL of its own; Superset uses no broker: the session's stands in for one
    root = tmp_path_factory.mktemp("dashboards_stack")
    with private_stack(root, kafka=services["kafka"]["bootstrap_servers"]) as stack:
        try:
            load_raw_events(stack["url"], simulate(SimulationConfig(locations=6, days=35)))
            result = run_aqi_dbt(["build"], stack["env"], stack["cwd"])
            assert result.returncode == 0, result.stdout[-3000:]
            # every location with an AQI opens an episode: the alerts panel has rows to show
            alerts_env = {**stack["env"], "AQ_AQI_ALERT_CATEGORY": "Good"}
            result = run_aqi(["aqi-alerts"], alerts_env, stack["cwd"])
            assert result.returncode == 0 and " opened" in result.stdout, result.stderr
            result = _dashboards(stack, "up")
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            stack["up"] = result.stdout
            yield stack
        finally:
            _dashboards(stack, "down", timeout=120)


def _api(stack: dict) -> Api:
    return superset_api(stack["settings"])


def _analyst(stack: dict) -> Api:
    """The analyst's API session, with the password `up` generated."""
    settings = stack["settings"]
    return Api(EmbeddedSuperset(settings).url, ANALYST_USER, analyst_password(settings))


def _explore(api: Api, dataset_id: int, rows: int) -> tuple[int, dict | str]:
    """A query of the user's own on a dataset, as Explore sends it."""
    return api.call("POST", "/api/v1/chart/data", {
        "datasource": {"id": dataset_id, "type": "table"},
        "queries": [{"columns": ["location_id"], "row_limit": rows}],
        "result_format": "json", "result_type": "full",
    })  # fmt: skip


def _metadata_counts(stack: dict) -> dict[str, dict[str, int]]:
    """uuid -> rows, per Superset table, straight from the metadata database."""
    counts = {}
    with psycopg.connect(database_url(stack["settings"], "superset")) as conn:
        for table in ("dbs", "tables", "slices", "dashboards"):
            rows = conn.execute(f"select uuid::text, count(*) from {table} group by 1").fetchall()
            counts[table] = {uuid: n for uuid, n in rows}
    return counts


def _bundle_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(BUNDLE_DIR, copy)
    return copy


# --- up, login, data ---------------------------------------------------------------------------


def test_up_prints_where_and_the_generated_password_once(stack: dict) -> None:
    settings = stack["settings"]
    secret = settings.secrets_dir / "superset_admin_password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    password = secret.read_text().strip()
    out = stack["up"]
    assert f"{EmbeddedSuperset(settings).url}/superset/dashboard/air-quality/" in out
    assert f"password in {secret}" in out
    assert f"(shown once): {password}" in out
    assert re.search(r"superset: provisioned 1 dashboard\(s\), 9 charts, 5 datasets", out)
    # bound to 127.0.0.1, no admin/admin
    with pytest.raises(PermissionError):
        Api(EmbeddedSuperset(settings).url, "admin", "admin")


def test_superset_and_its_workers_listen_on_loopback_only(stack: dict) -> None:
    superset = EmbeddedSuperset(stack["settings"])
    sockets = listening_sockets([superset.status()["pid"]])
    assert urllib.parse.urlsplit(superset.url).port in {port for *_, port in sockets}, sockets
    assert off_loopback(sockets) == []


def test_superset_holds_no_credential_of_the_warehouse_owner(stack: dict) -> None:
    """gunicorn and its workers: metadata as role superset, the warehouse as aq_superset."""
    superset = EmbeddedSuperset(stack["settings"])
    pid = superset.status()["pid"]
    assert pid is not None
    assert warehouse_owner_leaks(stack["settings"], [pid]) == []


def test_every_chart_of_the_dashboard_returns_rows(stack: dict) -> None:
    api = _api(stack)
    dashboard = api.get("/api/v1/dashboard/air-quality")["result"]
    assert dashboard["dashboard_title"] == "Air quality"
    charts = api.get("/api/v1/dashboard/air-quality/charts")["result"]
    assert len(charts) == BUNDLE.chart_count == 9
    with psycopg.connect(database_url(stack["settings"], "superset")) as conn:
        (before,) = conn.execute("select coalesce(max(id), 0) from logs").fetchone()
    for chart in charts:
        body = api.get(f"/api/v1/chart/{chart['id']}/data/")
        rows = [result["rowcount"] for result in body["result"]]
        assert rows and all(n > 0 for n in rows), (chart["slice_name"], body["result"])
        if chart["slice_name"].startswith("PM2.5, 15-minute"):
            # pivoted on the server as the browser's query asks: a row per quarter-hour and
            # a column per location (at most 10), not a row per location and quarter-hour
            (result,) = body["result"]
            assert result["colnames"][0] == "window_start", result["colnames"]
            assert 2 <= len(result["colnames"]) <= 11 and result["rowcount"] <= 7 * 96 + 1
    # the event log: one row per chart data request, not its sub-steps (superset_config.py)
    with psycopg.connect(database_url(stack["settings"], "superset")) as conn:
        actions = Counter(a for (a,) in conn.execute(
            "select action from logs where id > %s", (before,)))  # fmt: skip
    assert actions["ChartDataRestApi.data"] == len(charts), actions
    assert not actions["_get_data_response"] and not actions["ChartDataRestApi.json_dumps"]


def test_the_native_filters_reach_every_chart(stack: dict) -> None:
    api = _api(stack)
    dashboard = api.get("/api/v1/dashboard/air-quality")["result"]
    metadata = json.loads(dashboard["json_metadata"])
    filters = {f["name"]: f for f in metadata["native_filter_configuration"]}
    assert set(filters) == {"Country", "Location"}
    chart_ids = {c["id"] for c in api.get("/api/v1/dashboard/air-quality/charts")["result"]}
    for native in filters.values():
        assert set(native["chartsInScope"]) == chart_ids
    assert filters["Location"]["cascadeParentIds"] == [filters["Country"]["id"]]


def test_chart_results_are_cached_until_openaq_elt_publishes(stack: dict) -> None:
    settings = stack["settings"]
    api = _api(stack)
    chart = next(c for c in api.get("/api/v1/dashboard/air-quality/charts")["result"]
                 if c["slice_name"].startswith("PM2.5, 15-minute"))  # fmt: skip
    folder = settings.superset_results_cache_dir

    def data() -> dict:
        (result,) = api.get(f"/api/v1/chart/{chart['id']}/data/")["result"]
        return result

    clear_results_cache(settings, echo=lambda line: None)
    cold = data()
    assert not cold["is_cached"] and cold["rowcount"] > 0  # None: computed, not cached
    warm = data()
    assert warm["is_cached"] is True and warm["data"] == cold["data"]
    # kept until the next openaq_elt run at the latest, in files under AQ_HOME
    assert warm["cache_timeout"] == RESULTS_CACHE_TIMEOUT_S == 15 * 60
    assert any(folder.iterdir())
    # the run's publish task (exports, AQI alerts, then the cache) empties it
    lines: list[str] = []
    publish("manual__cache_test", settings, echo=lines.append)
    assert any(line.startswith("superset results cache: cleared ") for line in lines), lines
    assert not data()["is_cached"]
    assert data()["is_cached"] is True


# --- re-provisioning ---------------------------------------------------------------------------


def test_provisioning_twice_leaves_exactly_one_of_each_object(stack: dict) -> None:
    result = _dashboards(stack, "up")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # the second run skips the metadata set-up and finds gunicorn running
    assert "preparing the metadata database" not in result.stdout
    assert "already running" in result.stdout
    counts = _metadata_counts(stack)
    for table, kind in (("dbs", "databases"), ("tables", "datasets"), ("slices", "charts"),
                        ("dashboards", "dashboards")):  # fmt: skip
        wanted = set(BUNDLE.by_uuid(kind))
        assert counts[table] == dict.fromkeys(wanted, 1), table


def test_a_changed_title_and_a_removed_chart_follow_the_bundle(
    stack: dict, tmp_path: Path
) -> None:
    """One re-provisioning with a bundle that renames a chart and drops another (each `up`
    provisions, ~6 s of CPU), then the real bundle again."""
    api = _api(stack)
    before = {
        c["slice_name"]: c["id"] for c in api.get("/api/v1/dashboard/air-quality/charts")["result"]
    }
    copy = _bundle_copy(tmp_path)
    chart_file = copy / "charts" / "kpi_active_locations.yaml"
    text = chart_file.read_text()
    assert "slice_name: Active locations\n" in text
    chart_file.write_text(
        text.replace("slice_name: Active locations\n", "slice_name: Stations reporting\n")
    )
    (copy / "charts" / "pm25_calendar.yaml").unlink()
    board = copy / "dashboards" / "air_quality.yaml"
    config = yaml.safe_load(board.read_text())
    del config["position"]["CHART-calendar"]
    config["position"]["ROW-history"]["children"].remove("CHART-calendar")
    board.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    calendar = str(
        yaml.safe_load((BUNDLE_DIR / "charts" / "pm25_calendar.yaml").read_text())["uuid"]
    )
    try:
        result = _dashboards(stack, "up", "--bundle", str(copy))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        after = {
            c["slice_name"]: c["id"]
            for c in api.get("/api/v1/dashboard/air-quality/charts")["result"]
        }
        assert "Stations reporting" in after and "Active locations" not in after
        # updated in place: same chart, same id, still one of it
        assert after["Stations reporting"] == before["Active locations"]
        # the chart no longer in the bundle is deleted
        assert "deleted chart 'Daily PM2.5" in result.stdout
        slices = _metadata_counts(stack)["slices"]
        assert calendar not in slices
        assert slices == dict.fromkeys(set(BUNDLE.by_uuid("charts")) - {calendar}, 1)
    finally:
        result = _dashboards(stack, "up")
        assert result.returncode == 0, result.stderr[-2000:]
    restored = {c["slice_name"] for c in api.get("/api/v1/dashboard/air-quality/charts")["result"]}
    assert "Active locations" in restored and "Stations reporting" not in restored
    assert _metadata_counts(stack)["slices"] == dict.fromkeys(BUNDLE.by_uuid("charts"), 1)


def test_a_broken_bundle_fails_before_touching_superset(stack: dict, tmp_path: Path) -> None:
    copy = _bundle_copy(tmp_path)
    chart_file = copy / "charts" / "pm25_trend_15min.yaml"
    config = yaml.safe_load(chart_file.read_text())
    config["query_context"] = None
    chart_file.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    result = _dashboards(stack, "up", "--bundle", str(copy))
    assert result.returncode == 1
    assert "charts/pm25_trend_15min.yaml: no query_context" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- the screenshot ----------------------------------------------------------------------------


def test_screenshot_draws_every_chart_without_errors(stack: dict, tmp_path: Path) -> None:
    from aqi.screenshot import MIN_INK, ensure_chromium

    ensure_chromium(install=True)  # CI: apt-get install -y chromium when root and missing
    out, summary_file = tmp_path / "dashboard.png", tmp_path / "summary.json"
    # the command, once: a screenshot costs a browser and a full dashboard load
    result = _dashboards(stack, "screenshot", str(out), "--summary", str(summary_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{BUNDLE.chart_count} of {BUNDLE.chart_count} charts drawn" in result.stdout
    summary = json.loads(summary_file.read_text())
    assert summary["charts"] == BUNDLE.chart_count
    assert summary["rendered"] == summary["charts"]
    assert summary["errors"] == [] and summary["loading"] == 0
    # drawn means ink in every chart's body, not only its canvas element (an empty canvas
    # once passed as drawn and the PNG showed blank panels)
    assert len(summary["ink"]) == summary["charts"] and min(summary["ink"]) >= MIN_INK, summary
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the map shows the offline base map under its points: land, sea, borders and coastlines
    # in the tiles' colours, and the points in EPA's (the test machine has no internet)
    (shares,) = [s for s, viz in zip(summary["swatches"], summary["viz_types"], strict=True)
                 if viz == "deck_scatter"]  # fmt: skip
    assert shares["land"] > 0.1 and shares["water"] > 0.1, shares
    # (shares within 24 of the colour: a line blends into land or sea at its edges; the map is
    # ~350,000 pixels, and 0.0005 of it is a few hundred)
    assert shares["border"] > 0.002 and shares["coast"] > 0.0005, shares


# --- the offline base map ----------------------------------------------------------------------


def _pixels(png: bytes, points: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """RGB of pixels of a PNG, decoded by Pillow of Superset's environment (the main one has
    none, and the module that draws the tiles is not the one that reads them here)."""
    from aqi.core.environments import superset_env_dir

    code = (
        "import io, json, sys; from PIL import Image; "
        "image = Image.open(io.BytesIO(sys.stdin.buffer.read())); "
        "print(image.format, image.size[0], image.size[1]); "
        "print(json.dumps([image.convert('RGB').getpixel(tuple(p)) for p in json.loads(sys.argv[1])]))"
    )
    result = subprocess.run(
        [str(superset_env_dir() / "bin" / "python"), "-c", code, json.dumps(points)],
        input=png, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    header, values = result.stdout.decode().splitlines()
    assert header == "PNG 256 256"
    return [tuple(v) for v in json.loads(values)]


def _tile(stack: dict, style: str, lon: float, lat: float, z: int) -> tuple[bytes, int, int]:
    """The tile of ``style`` (a chart's mapbox_style) that holds a point, fetched without a
    login like the browser's image requests; and the point's pixel in it."""
    n = 2**z
    mx = (lon + 180) / 360
    my = 0.5 - math.asinh(math.tan(math.radians(lat))) / (2 * math.pi)
    x, y = int(mx * n), int(my * n)
    assert style.startswith("tile:///")  # a path on Superset's own origin
    url = EmbeddedSuperset(stack["settings"]).url + style.removeprefix("tile://").format(
        z=z, x=x, y=y
    )
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.headers["Content-Type"] == "image/png"
        assert "max-age" in response.headers.get("Cache-Control", "")
        png = response.read()
    return png, int((mx * n - x) * 256), int((my * n - y) * 256)


def test_the_map_draws_on_border_tiles_superset_serves_offline(stack: dict) -> None:
    from aqi.screenshot import basemap_colours

    colours = {name: tuple(rgb) for name, rgb in basemap_colours().items()}
    api = _api(stack)
    charts = api.get("/api/v1/dashboard/air-quality/charts")["result"]
    (scatter,) = [c for c in charts if c["form_data"].get("viz_type") == "deck_scatter"]
    style = scatter["form_data"]["mapbox_style"]
    assert style == "tile:///aq-tiles/{z}/{x}/{y}.png"

    # the US-Canada border on the 49th parallel, at three zooms (three Natural Earth scales)
    for z in (2, 4, 7):
        png, px, py = _tile(stack, style, -110.0, 49.0, z)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        around = [(px + dx, py + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
        nearest = min(math.dist(rgb, colours["border"]) for rgb in _pixels(png, around))
        assert nearest < 60, (z, nearest)  # a line 1.5 px wide covers 3/4 of a pixel or more
    # land inland, water in the ocean
    for lon, lat, kind in ((-98.0, 38.5, "land"), (-40.0, 30.0, "water")):
        png, px, py = _tile(stack, style, lon, lat, 3)
        assert _pixels(png, [(px, py)]) == [colours[kind]], (lon, lat)
    # no tile outside the world
    base = EmbeddedSuperset(stack["settings"]).url
    for path in ("/aq-tiles/3/8/0.png", "/aq-tiles/20/0/0.png"):
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + path, timeout=30)
        assert missing.value.code == 404


# --- the read-only role ------------------------------------------------------------------------


def _denied(conn: psycopg.Connection, statement: str) -> str:
    """Run ``statement`` in a read-write transaction; return the error (it must fail)."""
    try:
        with conn.transaction():
            conn.execute("set transaction read write")  # privileges, not the read-only default
            conn.execute(statement)
    except psycopg.Error as exc:
        return str(exc)
    raise AssertionError(f"{READER_ROLE} could run: {statement}")


def test_the_superset_role_reads_gold_only_and_writes_nowhere(stack: dict) -> None:
    settings = stack["settings"]
    with psycopg.connect(reader_url(settings), autocommit=True) as conn:
        for table in GOLD:
            assert conn.execute(f"select count(*) from gold.{table}").fetchone()[0] > 0
        for relation in ("raw.openaq_measurements", "raw.stream_batches", "silver.measurements",
                         "reference.aqi_breakpoints", "dbt_meta.watermarks"):  # fmt: skip
            assert "permission denied" in _denied(conn, f"select * from {relation} limit 1")
        for statement in (
            "insert into gold.latest (location_id, parameter) values (1, 'x')",
            "update gold.latest set value = 0",
            "delete from gold.pm25_15min",
            "truncate gold.daily_avg",
            "create table gold.intruder (a int)",
            "create table public.intruder (a int)",
            "create temporary table intruder (a int)",
            "create schema intruder",
        ):
            assert "permission denied" in _denied(conn, statement), statement
        # the catalog agrees: no write privilege on any table, CREATE on no schema
        writable = conn.execute(
            """
            select n.nspname || '.' || c.relname from pg_class c
            join pg_namespace n on n.oid = c.relnamespace
            where c.relkind in ('r', 'p', 'v', 'm')
              and n.nspname not in ('pg_catalog', 'information_schema')
              and (has_table_privilege(c.oid, 'INSERT') or has_table_privilege(c.oid, 'UPDATE')
                   or has_table_privilege(c.oid, 'DELETE') or has_table_privilege(c.oid, 'TRUNCATE'))
            """
        ).fetchall()
        assert writable == []
        schemas = conn.execute(
            """
            select nspname, has_schema_privilege(oid, 'USAGE'), has_schema_privilege(oid, 'CREATE')
            from pg_namespace where nspname !~ '^(pg_|information_schema)'
            """
        ).fetchall()
        assert {name for name, usage, _ in schemas if usage} <= {"gold", "public"}
        assert [name for name, _, create in schemas if create] == []
    for other in ("airflow", "superset", "postgres"):
        with pytest.raises(psycopg.OperationalError, match="CONNECT privilege"):
            psycopg.connect(reader_url(settings).rsplit("/", 1)[0] + f"/{other}").close()


def test_the_analyst_views_and_explores_gold_and_changes_nothing(stack: dict) -> None:
    settings = stack["settings"]
    secret = settings.secrets_dir / "superset_analyst_password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert f"user analyst (view, filter, explore; no editing, no SQL Lab), password in {secret}" \
        in stack["up"]  # fmt: skip
    analyst = _analyst(stack)
    admin = _api(stack)

    # views the dashboard: every chart's data, and with the native filters' values
    (dashboard,) = analyst.get("/api/v1/dashboard/?q=(page_size:100)")["result"]
    charts = analyst.get("/api/v1/dashboard/air-quality/charts")["result"]
    assert len(charts) == len(admin.get("/api/v1/dashboard/air-quality/charts")["result"]) > 0
    for chart in charts:
        body = analyst.get(f"/api/v1/chart/{chart['id']}/data/")
        assert all(r["rowcount"] > 0 for r in body["result"]), chart["slice_name"]
    # explores the bundle's datasets (a query of its own), which read gold only
    # (tests/unit/test_gold_contract.py), and sees no other
    datasets = analyst.get("/api/v1/dataset/?q=(page_size:100)")["result"]
    every = admin.get("/api/v1/dataset/?q=(page_size:100)")["result"]
    assert sorted(d["id"] for d in datasets) == sorted(d["id"] for d in every)
    assert len(datasets) == len(BUNDLE.by_uuid("datasets")) > 0
    for dataset in datasets:
        status, body = _explore(analyst, dataset["id"], rows=5)
        assert status == 200 and body["result"][0]["rowcount"] > 0, (dataset, body)

    # changes nothing: no chart saved, edited or deleted, no dashboard edited, no SQL Lab
    chart_id, dataset_id = charts[0]["id"], datasets[0]["id"]
    database_id = admin.get("/api/v1/database/")["result"][0]["id"]
    refused = {
        "edit a chart": ("PUT", f"/api/v1/chart/{chart_id}", {"slice_name": "renamed"}),
        "save a chart": ("POST", "/api/v1/chart/", {
            "slice_name": "mine", "datasource_id": dataset_id, "datasource_type": "table",
            "viz_type": "table"}),
        "delete a chart": ("DELETE", f"/api/v1/chart/{chart_id}", None),
        "edit the dashboard": ("PUT", f"/api/v1/dashboard/{dashboard['id']}",
                               {"dashboard_title": "renamed"}),
        "edit a dataset": ("PUT", f"/api/v1/dataset/{dataset_id}", {"description": "x"}),
        "run SQL": ("POST", "/api/v1/sqllab/execute/",
                    {"database_id": database_id, "sql": "select 1"}),
        "read SQL Lab": ("GET", "/api/v1/sqllab/", None),
    }  # fmt: skip
    # (the admin may: the refusals below are the analyst's role, not the request)
    status, answer = admin.call("PUT", f"/api/v1/chart/{chart_id}",
                                {"slice_name": charts[0]["slice_name"]})  # fmt: skip
    assert status == 200, answer
    for what, (method, path, body) in refused.items():
        status, answer = analyst.call(method, path, body)
        assert status in (401, 403, 404), f"the analyst could {what}: {status} {answer}"
    assert admin.get(f"/api/v1/chart/{chart_id}")["result"]["slice_name"] == charts[0][
        "slice_name"]  # fmt: skip


def test_permission_answers_are_kept_until_a_role_changes(stack: dict) -> None:
    """superset/aq_security.py in Superset itself (tests/superset_permission_probe.py): a
    request asks the metadata database once for the roles' version, then answers from the
    worker's memory what an earlier request asked; the same answers as Superset's own."""
    result = subprocess.run(
        [str(superset_env_dir() / "bin" / "python"), str(PERMISSION_PROBE)],
        env=superset_env(stack["settings"]), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["manager"] == "RememberingSecurityManager"
    first, again, after_sql, changing = probe["requests"]
    checks = len(probe["reference"])
    # every answer is Superset's own, and the analyst's role is not all-powerful
    assert all(r["answers"] == probe["reference"] for r in probe["requests"]), probe
    assert True in probe["reference"] and False in probe["reference"], probe
    assert first["statements"] > checks, probe  # asked the database
    assert again["statements"] == 1, probe  # only the version number
    assert after_sql["statements"] > checks, probe  # the version changed: asked again
    assert changing["statements"] > checks, probe  # this request changed a role


def test_a_permission_revoked_with_plain_sql_is_refused_at_the_next_request(stack: dict) -> None:
    """The triggers number a change made outside Superset too; every gunicorn worker (requests
    land on either) refuses at once what its memory allowed a moment ago, and allows it again."""
    settings = stack["settings"]
    analyst = _analyst(stack)
    dataset = analyst.get("/api/v1/dataset/?q=(page_size:100)")["result"][0]

    def explore() -> int:
        return _explore(analyst, dataset["id"], rows=1)[0]

    assert [explore() for _ in range(8)] == [200] * 8
    with psycopg.connect(database_url(settings, "superset"), autocommit=True) as conn:
        revoked = conn.execute(
            "delete from ab_permission_view_role pvr "
            "using ab_role r, ab_permission_view pv, ab_permission p, ab_view_menu v "
            "where pvr.role_id = r.id and r.name = %s and pvr.permission_view_id = pv.id "
            "and pv.permission_id = p.id and p.name = 'datasource_access' "
            "and pv.view_menu_id = v.id and v.name like %s "
            "returning pvr.id, pvr.permission_view_id, pvr.role_id",
            (ANALYST_ROLE, f"%(id:{dataset['id']})"),
        ).fetchall()
        assert len(revoked) == 1, revoked
        try:
            assert [explore() for _ in range(8)] == [403] * 8
        finally:
            conn.execute(
                "insert into ab_permission_view_role (id, permission_view_id, role_id) "
                "values (%s, %s, %s)", revoked[0],
            )  # fmt: skip
    assert [explore() for _ in range(8)] == [200] * 8


def test_the_grants_survive_a_full_refresh(stack: dict) -> None:
    result = run_aqi_dbt(["build", "--full-refresh"], stack["env"], stack["cwd"])
    assert result.returncode == 0, result.stdout[-3000:]
    with psycopg.connect(reader_url(stack["settings"])) as conn:
        for table in GOLD:
            assert conn.execute(f"select count(*) from gold.{table}").fetchone()[0] > 0
    api = _api(stack)
    for chart in api.get("/api/v1/dashboard/air-quality/charts")["result"]:
        body = api.get(f"/api/v1/chart/{chart['id']}/data/?force=true")
        assert all(result["rowcount"] > 0 for result in body["result"]), chart["slice_name"]


# --- down and up again -------------------------------------------------------------------------


def test_a_gunicorn_master_killed_with_9_is_recovered_by_up_and_down_leaves_nothing(
    stack: dict,
) -> None:
    """kill -9 of the master, `up` (recovers), `down` (nothing left), `up` again (quickly)."""
    import os
    import signal

    from aqi.services.process import group_members

    superset = EmbeddedSuperset(stack["settings"])
    master = superset.pidfile.live()
    assert master is not None
    workers = [p for p in group_members(master.pid) if p != master.pid]
    assert workers, "gunicorn runs workers in its process group"
    os.kill(master.pid, signal.SIGKILL)
    result = _dashboards(stack, "up")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert superset.healthy()
    assert group_members(master.pid) == [], "the dead master's workers are gone"
    new = superset.pidfile.live()
    assert len(group_members(new.pid)) >= 2
    result = _dashboards(stack, "down", timeout=120)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 15
    while group_members(new.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_members(new.pid) == [], "down leaves no member of the process group behind"
    assert not superset.healthy() and superset.pidfile.live() is None
    assert not new.is_alive()
    assert _dashboards(stack, "status").returncode == 3
    # up again (as the other tests expect it): the metadata is there, the password was shown
    result = _dashboards(stack, "up")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "preparing the metadata database" not in result.stdout
    assert "(shown once)" not in result.stdout
    assert superset.healthy()
    assert _dashboards(stack, "status").returncode == 0
