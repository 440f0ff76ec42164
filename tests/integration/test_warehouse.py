"""The dbt warehouse against independent pandas computations, on recorded and simulated data.

Events go straight into raw.openaq_measurements of a fresh database (the stream has its own
tests); dbt runs through the real `aqi dbt` command; tests/reference_aqi.py recomputes every
gold table with pandas, written from the EPA rules rather than from the SQL.
"""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import reference_aqi as ref
from conftest import isolated_env, run_aqi, run_aqi_dbt
from warehouse_support import assert_gold_matches_reference, load_raw_events, read_table

from ingestion.events import Location, Sensor, event_from_latest, format_utc
from ingestion.fixtures import DEFAULT_FIXTURES_DIR
from ingestion.replay import fixture_events
from ingestion.simulator import SimulationConfig, simulate

pytestmark = pytest.mark.integration

AS_OF = "2030-01-01T00:00:00Z"
GOLD = ["pm25_15min", "daily_avg", "exceedance_30d", "latest"]


def _dbt(tmp_path: Path, url: str, *args: str) -> None:
    env = isolated_env(tmp_path / "aq", AQ_DATABASE_URL=url)
    result = run_aqi_dbt([*args, "--vars", json.dumps({"as_of": AS_OF})], env, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_recorded_fixtures(tmp_path: Path, fresh_database: str) -> None:
    events, _ = fixture_events(DEFAULT_FIXTURES_DIR)
    # the -9999 sentinel of the production latest slice; its location is not among the
    # recorded ones, so its metadata here is a stand-in (the reading is rejected anyway)
    latest_slice = json.loads(
        (DEFAULT_FIXTURES_DIR / "openaq-python-prod-slices" / "latest_pm25_slice.json").read_text()
    )
    sentinel = next(r for r in latest_slice["results"] if r["value"] == -9999.0)
    stand_in = Location(
        id=sentinel["locationsId"], name="stand-in", timezone="UTC", latitude=None,
        longitude=None, country_code=None, provider=None, is_mobile=False, is_monitor=True,
        sensors={sentinel["sensorsId"]: Sensor(sentinel["sensorsId"], 2, "pm25", "µg/m³")},
    )  # fmt: skip
    events.append(event_from_latest(sentinel, stand_in, "replay", timedelta(hours=1)))
    load_raw_events(fresh_database, events)
    _dbt(tmp_path, fresh_database, "build")

    rejected = read_table(fresh_database, "silver.rejected_measurements")
    reasons = dict(zip(zip(rejected.sensor_id, rejected.period_end.astype(str)),
                       rejected.rejection_reason, strict=True))  # fmt: skip
    assert (
        reasons[(sentinel["sensorsId"], "2024-05-27 02:00:00+00:00")] == "sentinel value (<= -999)"
    )
    assert "null value" in reasons.values()
    valid = ref.valid_readings(events)
    assert len(read_table(fresh_database, "silver.measurements")) == len(valid)
    assert len(rejected) == len({(e["sensor_id"], e["period_end"]) for e in events}) - len(valid)

    daily = read_table(fresh_database, "gold.daily_avg")
    day = daily[(daily.location_id == 3) & (daily.local_date == pd.Timestamp("2023-03-07").date())]
    assert len(day) == 1 and day.iloc[0].hours_covered == 24 and day.iloc[0].is_complete
    sensor3 = [e for e in events if e["sensor_id"] == 3
               and "2023-03-07T05:00:00Z" < e["period_end"] <= "2023-03-08T05:00:00Z"]  # fmt: skip
    assert len(sensor3) == 48
    hourly = pd.Series([e["value"] for e in sensor3]).groupby(lambda i: i // 2).mean()
    assert day.iloc[0].avg_value == pytest.approx(hourly.mean(), rel=1e-12)
    assert day.iloc[0].aqi == ref.aqi(hourly.mean(), "pm25")
    assert_gold_matches_reference(fresh_database, events, all_stale=True)


def test_simulated_data_across_a_dst_change(tmp_path: Path, fresh_database: str) -> None:
    # US daylight saving time ends 2025-11-02: location 2178 is in America/Denver
    config = SimulationConfig(locations=5, days=5, seed=4, end=datetime(2025, 11, 4, tzinfo=UTC))
    events = list(simulate(config))
    load_raw_events(fresh_database, events)
    _dbt(tmp_path, fresh_database, "build")
    daily = read_table(fresh_database, "gold.daily_avg")
    denver = daily[
        (daily.location_id == 2178) & (daily.local_date == pd.Timestamp("2025-11-02").date())
    ]
    assert not denver.empty and (denver.timezone == "America/Denver").all()
    assert (denver.hours_covered <= 24).all()  # the repeated 01:00 is one local hour
    pm = read_table(fresh_database, "silver.measurements")
    assert pm[(pm.location_id == 17) & (pm.parameter == "pm25")].sensor_id.nunique() == 2
    assert set(pm[pm.parameter == "no2"].units) >= {"ppb", "µg/m³"}
    assert_gold_matches_reference(fresh_database, events, all_stale=True)


def test_incremental_build_equals_full_refresh(tmp_path: Path, fresh_database: str) -> None:
    rng = random.Random(8)
    end = datetime(2025, 6, 10, tzinfo=UTC)
    first = list(simulate(SimulationConfig(locations=5, days=4, seed=6, end=end)))
    load_raw_events(fresh_database, first)
    _dbt(tmp_path, fresh_database, "build")

    later = list(
        simulate(SimulationConfig(locations=5, days=1, seed=7, end=end + timedelta(days=1)))
    )
    resent_at = format_utc(end + timedelta(days=1, minutes=30))
    changed = []
    for event in rng.sample(first, 150):  # late corrections, days after the fact
        fixed = copy.deepcopy(event)
        fixed["ingested_at"] = resent_at
        roll = rng.random()
        fixed["value"] = (
            None
            if roll < 0.15
            else (-9999.0 if roll < 0.2 else round((event["value"] or 5) * 1.7 + 2, 2))
        )
        changed.append(fixed)
    revived = []
    for event in [e for e in first if e["value"] is None][:20]:  # a rejected reading corrected
        fixed = copy.deepcopy(event)
        fixed.update(value=12.5, flagged=False, ingested_at=resent_at)
        revived.append(fixed)
    duplicates = rng.sample(first, 100)  # the same events once more
    load_raw_events(fresh_database, later + changed + revived + duplicates)
    _dbt(tmp_path, fresh_database, "build")

    tables = ["silver.measurements", "silver.rejected_measurements"] + [f"gold.{t}" for t in GOLD]
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("create schema incremental_copy")
        for table in tables:
            conn.execute(
                f"create table incremental_copy.{table.replace('.', '__')} as select * from {table}"
            )
    _dbt(tmp_path, fresh_database, "build", "--full-refresh")
    with psycopg.connect(fresh_database) as conn:
        for table in tables:
            copy_name = f"incremental_copy.{table.replace('.', '__')}"
            total = conn.execute(f"select count(*) from {table}").fetchone()[0]
            assert total > 0, table
            # every column but rebuilt_at, which says when (by which run) a row was computed
            schema, name = table.split(".")
            columns = ", ".join(
                row[0]
                for row in conn.execute(
                    "select column_name from information_schema.columns where table_schema = %s"
                    " and table_name = %s and column_name <> 'rebuilt_at' order by ordinal_position",
                    (schema, name),
                )
            )
            for a, b in ((table, copy_name), (copy_name, table)):
                extra = conn.execute(
                    f"select count(*) from (select {columns} from {a}"
                    f" except all select {columns} from {b}) as d"
                ).fetchone()[0]
                assert extra == 0, f"{a} has {extra} rows that {b} lacks"
    all_events = first + later + changed + revived + duplicates
    assert_gold_matches_reference(fresh_database, all_events, all_stale=True)


def _page(url: str) -> bytes | None:
    """The body at url, or None while nothing answers there."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as page:
            return page.read() if page.status == 200 else None
    except OSError:
        return None


def test_docs_site_documents_every_column_and_is_served(
    tmp_path: Path, fresh_database: str
) -> None:
    import os
    import signal
    import subprocess

    from conftest import AQI, free_port, listening_sockets, off_loopback, warehouse_owner_leaks

    from aqi.core.config import load_settings
    from aqi.services.process import PidFile, wait_until

    load_raw_events(fresh_database, simulate(SimulationConfig(locations=3, days=1, seed=1)))
    _dbt(tmp_path, fresh_database, "build")
    env = isolated_env(tmp_path / "aq", AQ_DATABASE_URL=fresh_database)
    freshness = run_aqi(["dbt", "source", "freshness"], env, tmp_path, timeout=300)
    assert freshness.returncode == 0, freshness.stdout[-2000:]
    generated = run_aqi(["docs", "--no-serve"], env, tmp_path, timeout=600)
    assert generated.returncode == 0, generated.stdout[-2000:]
    target = Path(env["DBT_TARGET_PATH"])
    manifest = json.loads((target / "manifest.json").read_text())
    catalog = json.loads((target / "catalog.json").read_text())
    undocumented = []
    for node_id, node in catalog["nodes"].items():
        if not node_id.startswith("model."):
            continue
        documented = manifest["nodes"][node_id]
        if not documented.get("description"):
            undocumented.append(node_id)
        described = {name for name, col in documented["columns"].items() if col.get("description")}
        undocumented += [f"{node_id}.{c}" for c in node["columns"] if c not in described]
    assert undocumented == []
    assert any(e["name"] == "air_quality_dashboard" for e in manifest["exposures"].values())
    # the served folder holds the one self-contained page, with the models inside
    settings = load_settings(env, dotenv=None)
    assert sorted(p.name for p in settings.docs_dir.iterdir()) == ["index.html"]
    assert b"exceedance_30d" in (settings.docs_dir / "index.html").read_bytes()

    # in the foreground: `aqi docs --port`, until stopped
    port = free_port()
    server = subprocess.Popen([AQI, "docs", "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        assert wait_until(lambda: _page(url) is not None, timeout=120), "aqi docs served nothing"
        assert b"pm25_15min" in _page(url)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    # in the background: on AQ_DOCS_PORT, loopback only, no credential; --stop stops it
    started = run_aqi(["docs", "--background"], env, tmp_path, timeout=600)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    url = f"http://127.0.0.1:{settings.docs_port}/"
    assert f"serving {url}" in started.stdout
    try:
        assert b"pm25_15min" in _page(url)
        record = PidFile(settings.run_dir / "docs.pid").live()
        assert record is not None
        sockets = listening_sockets([record.pid])
        assert [port for *_, port in sockets] == [settings.docs_port]
        assert off_loopback(sockets) == []
        assert warehouse_owner_leaks(settings, [record.pid]) == []
        again = run_aqi(["docs", "--background"], env, tmp_path, timeout=600)
        assert again.returncode == 0 and "already serving" in again.stdout
        # a port another program holds is one line naming the variable
        busy = run_aqi(["docs", "--port", str(settings.docs_port)], env, tmp_path, timeout=600)
        assert busy.returncode == 1 and "Traceback" not in busy.stderr
        assert "AQ_DOCS_PORT" in busy.stderr.strip().splitlines()[-1]
    finally:
        stopped = run_aqi(["docs", "--stop"], env, tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert "docs: stopped" in stopped.stdout and _page(url) is None
    assert PidFile(settings.run_dir / "docs.pid").live() is None
