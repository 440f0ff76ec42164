"""The product end to end: `aqi demo` on a few simulated locations, checked against pandas.

Everything between the simulator and the dashboard is the real thing started by the project
(broker, Spark, PostgreSQL, Airflow's `dags test` with Cosmos and GX, Superset). The events
are read back from the Kafka topic - exactly what the pipeline was given - and every gold
table and the dashboard's exceedance leaderboard must hold the numbers tests/reference_aqi.py
computes from them independently.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import reference_aqi as ref
from conftest import (
    DEMO_GROUP,
    driver_jvm,
    isolated_env,
    listening_sockets,
    off_loopback,
    project_pids,
    read_topic,
    run_aqi,
)
from superset_support import superset_api
from warehouse_support import assert_gold_matches_reference

from aqi.core.config import load_settings
from aqi.core.connections import database_url, kafka_bootstrap_servers
from spark_streaming import class_archive
from spark_streaming.session import QUICK_JIT

pytestmark = pytest.mark.integration


def _leaderboard(settings) -> pd.DataFrame:
    api = superset_api(settings)
    charts = api.get("/api/v1/dashboard/air-quality/charts")["result"]
    (chart,) = [c for c in charts if c["slice_name"].startswith("PM2.5 exceedance days")]
    body = api.get(f"/api/v1/chart/{chart['id']}/data/")
    return pd.DataFrame(body["result"][0]["data"])


@pytest.mark.xdist_group(DEMO_GROUP)
def test_demo_numbers_match_an_independent_computation(demo_stack: dict) -> None:
    env, cwd, settings = demo_stack["env"], demo_stack["cwd"], demo_stack["settings"]
    first = demo_stack["demo"]
    assert "demo ready" in first.stdout and "superset_admin_password" in first.stdout

    # what the demo left running (PostgreSQL, Kafka, Superset and all their children)
    # listens on loopback only
    sockets = listening_sockets(project_pids(settings))
    assert {settings.pg_port, settings.kafka_port, settings.superset_port,
            settings.docs_port} <= {port for *_, port in sockets}, sockets  # fmt: skip
    assert off_loopback(sockets) == []
    # every URL the demo prints answers (the dbt docs site with the warehouse's models)
    urls = re.findall(r"http://127\.0\.0\.1:\d+/", first.stdout)
    assert f"http://127.0.0.1:{settings.docs_port}/" in urls, first.stdout[-2000:]
    for url in urls:
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200, url
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.docs_port}/") as page:
        assert b"exceedance_30d" in page.read()
    events = [r[3] for r in read_topic(kafka_bootstrap_servers(settings), settings.kafka_topic)]
    assert len({e["location_id"] for e in events}) == 3
    assert_gold_matches_reference(database_url(settings), events)

    # the dashboard's leaderboard: PM2.5, each location's newest local day
    valid = ref.valid_readings(events)
    want = ref.exceedance_30d(ref.daily_avg(valid))
    want = want[want.parameter == "pm25"]
    want = want[want.local_date == want.groupby("location_id").local_date.transform("max")]
    names = {e["location_id"]: e["location_name"] for e in events}
    want = want.assign(location_name=want.location_id.map(names)).set_index("location_name")
    got = _leaderboard(settings).set_index("location_name")
    assert sorted(got.index) == sorted(want.index)
    for name, row in want.iterrows():
        assert got.loc[name, "who_exceedance_days"] == row.days_over_who, name
        assert got.loc[name, "us_exceedance_days"] == row.days_over_us, name
        assert got.loc[name, "complete_days_total"] == row.complete_days, name

    # a second run reuses what exists (`aqi demo --down` after the group's last test: the
    # fixture's teardown checks it leaves no process behind)
    second = run_aqi(demo_stack["args"], env, cwd, timeout=1800)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert "reusing the history" in second.stdout
    if "(no new hour yet)" in second.stdout:
        # nothing loaded since openaq_elt last succeeded, no file of it changed: not run again
        assert "openaq_elt: nothing new since its last success" in second.stdout, (
            second.stdout[-3000:]
        )
        assert "$ aqi airflow run-once" not in second.stdout
    else:  # an hour began between the two runs: its readings were added, so openaq_elt ran
        assert "openaq_elt succeeded" in second.stdout, second.stdout[-3000:]


def test_live_demo_collects_from_the_api_and_keeps_collecting(tmp_path: Path) -> None:
    """`aqi demo --live` against the local mock of the OpenAQ API (the real one is offline)."""
    from datetime import UTC, datetime, timedelta

    import psutil
    import psycopg

    from aqi.services.process import PidFile, wait_until
    from ingestion.fixtures import DEFAULT_FIXTURES_DIR
    from openaq_mock.api import MockOpenAQ
    from openaq_mock.archive import MockArchive

    last_day = datetime.now(UTC).date() - timedelta(days=3)  # the archive's 72-hour delay
    location = json.loads((DEFAULT_FIXTURES_DIR / "openaq-python-unit" / "locations.json")
                          .read_text())["results"][0]  # fmt: skip
    assert location["id"] == 2178
    with MockOpenAQ(api_key="live-demo-key") as mock, MockArchive(
        [location], last_day - timedelta(days=39), last_day, seed=5
    ) as archive:
        env = isolated_env(
            tmp_path / "aq", OPENAQ_BASE_URL=mock.base_url, OPENAQ_API_KEY="live-demo-key",
            AQ_ARCHIVE_BASE_URL=archive.base_url,
            AQ_COLLECT_LOCATIONS="2178", AQ_COLLECT_INTERVAL_MINUTES="0.1",
        )  # fmt: skip
        no_targets = {k: v for k, v in env.items() if k != "AQ_COLLECT_LOCATIONS"}
        refused = run_aqi(["demo", "--live"], no_targets, tmp_path)
        assert refused.returncode == 1 and "AQ_COLLECT_LOCATIONS" in refused.stderr
        assert "Traceback" not in refused.stderr
        settings = load_settings(env, dotenv=None)
        try:
            result = run_aqi(["demo", "--live", "--no-dashboards", "--no-scheduler"], env,
                             tmp_path, timeout=1800)  # fmt: skip
            assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
            workers = {n: PidFile(settings.run_dir / f"demo-{n}.pid").live() for n in
                       ("collect", "stream")}  # fmt: skip
            assert all(workers.values()), workers
            with psycopg.connect(database_url(settings)) as conn:
                modes = conn.execute(
                    "select distinct ingest_mode, location_id from raw.openaq_measurements"
                ).fetchall()
                latest = conn.execute("select count(*) from gold.latest").fetchone()[0]
                days = conn.execute(
                    "select count(distinct local_date) from gold.daily_avg "
                    "where location_id = 2178 and parameter = 'pm25'"
                ).fetchone()[0]
            # 30 days from the archive, then the live readings: the daily charts are full
            assert set(modes) == {("backfill", 2178), ("live", 2178)} and latest > 0
            assert days >= 30, days
            # the live demo's collector and stream (Spark's JVM, its UI, its Python workers)
            # (the background stream was just started: wait for its Spark UI to listen)
            def spark_ui(sockets: list) -> bool:
                return any(name == "java" and 4040 <= port < 4100 for name, _, _, port in sockets)

            wait_until(lambda: spark_ui(listening_sockets(project_pids(settings))), timeout=180,
                       interval=1)  # fmt: skip
            sockets = listening_sockets(project_pids(settings))
            assert spark_ui(sockets), sockets  # the stream's Spark UI
            assert off_loopback(sockets) == []
            # the background stream is the continuous one: the full JIT (C2 for a long run),
            # started from the class archive `make jvm` wrote
            java = driver_jvm(workers["stream"].pid)
            assert QUICK_JIT not in java.cmdline()
            archive = class_archive.archive_path()
            assert archive is not None and str(archive) in {m.path for m in java.memory_maps()}
            # a second stream on the same checkpoint is refused, not raced
            second = run_aqi(["stream", "--available-now"], env, tmp_path, timeout=120)
            assert second.returncode == 1
            assert "another `aqi stream`" in second.stderr and "Traceback" not in second.stderr
            # a worker that dies (kill -9) is started again by its `aqi supervise`
            (collector,) = psutil.Process(workers["collect"].pid).children()
            collector.kill()

            def restarted_collectors() -> list:
                return [p for p in psutil.Process(workers["collect"].pid).children()
                        if p.pid != collector.pid]  # fmt: skip

            wait_until(lambda: bool(restarted_collectors()), timeout=60, interval=0.5)
            restarted = restarted_collectors()
            assert restarted, "the collector was not restarted"
            log = (settings.logs_dir / "demo-collect.log").read_text()
            assert "died (killed by SIGKILL)" in log
            # ... and keeps collecting: a reading the API publishes now reaches raw through
            # the restarted collector, the broker and the continuous stream
            sensor = location["sensors"][0]["id"]
            hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            (reading,) = mock.generate_measurements(sensor, hour - timedelta(hours=1), 1)
            period_end = datetime.fromisoformat(reading["period"]["datetimeTo"]["utc"])

            def landed() -> tuple | None:
                with psycopg.connect(database_url(settings)) as conn:
                    return conn.execute(
                        "select ingest_mode from raw.openaq_measurements "
                        "where sensor_id = %s and period_end = %s",
                        (sensor, period_end),
                    ).fetchone()

            assert wait_until(lambda: landed() is not None, timeout=180, interval=1), (
                "the new reading did not reach raw"
            )
            assert landed() == ("live",)
        finally:
            down = run_aqi(["demo", "--down"], env, tmp_path, timeout=600)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not any(PidFile(settings.run_dir / f"demo-{n}.pid").live() for n in
                       ("collect", "stream"))  # fmt: skip
        assert not any(p.is_running() for p in restarted), "down stops the supervised workers"
        # the stream stopped cleanly on the SIGTERM `down` sent through its supervisor, and
        # Spark's own log went to a file, not between the stream's lines
        stream_log = (settings.logs_dir / "demo-stream.log").read_text()
        assert "stream: SIGTERM received, stopping" in stream_log, stream_log[-3000:]
        assert "stream: stopped after" in stream_log
        assert "driver JIT full: a continuous stream" in stream_log
        assert re.search(r"supervise: stopped \S+ stream \(exit code 0\)", stream_log), (
            stream_log[-3000:]
        )
        assert "Traceback" not in stream_log
        assert "log4j" not in stream_log and " WARN " not in stream_log, stream_log[-3000:]
        assert (settings.logs_dir / "spark-stream.log").is_file()
