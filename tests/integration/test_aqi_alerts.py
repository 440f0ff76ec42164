"""AQI alerts for real: readings into raw, the real dbt building gold.latest, the real
`aqi aqi-alerts` writing gold.aqi_alerts and notifying an SMTP and an HTTP sink on 127.0.0.1.

Three locations, hour by hour; after each batch dbt builds gold.latest and the alert step
runs, as openaq_elt's publish task does after each successful run. tests/reference_aqi.py
(pandas, from the EPA rules) says which category each batch should reach, so the test also
shows the data does what it claims:

1. Delhi's PM2.5 NowCast is Unhealthy -> one episode, one e-mail and one webhook POST;
   Oslo (Good) and Ulaanbaatar's PM10 (Unhealthy for Sensitive Groups) open nothing;
2. the same step again, with no new reading -> nothing new is sent;
3. Delhi worsens to Very Unhealthy -> the same episode, its category and peak follow,
   nothing sent;
4. Delhi's air clears (Moderate) -> the episode gets cleared_at, nothing sent;
5. Delhi is Very Unhealthy again -> a new episode and one notification;
6. with AQ_AQI_ALERT_CATEGORY="Unhealthy for Sensitive Groups", Ulaanbaatar opens and is
   told once; Delhi's open episode is not told again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import reference_aqi as ref
from alert_sinks import HttpSink, SmtpSink, running_http_sink, running_smtp_sink
from conftest import isolated_env, run_aqi, run_aqi_dbt
from psycopg.rows import dict_row
from warehouse_support import load_raw_events

from aqi.core.aqi_categories import rank
from ingestion.events import Location, Sensor, make_event

pytestmark = pytest.mark.integration

START = datetime(2025, 6, 1, tzinfo=UTC)
AS_OF = "2030-01-01T00:00:00Z"

DELHI = Location(8118, "New Delhi", "Asia/Kolkata", 28.63, 77.22, "IN", "CPCB", False, True,
                 {1: Sensor(1, 2, "pm25", "µg/m³")})  # fmt: skip
OSLO = Location(7001, "Oslo Kirkeveien", "Europe/Oslo", 59.93, 10.72, "NO", "NILU", False, True,
                {2: Sensor(2, 2, "pm25", "µg/m³")})  # fmt: skip
ULAANBAATAR = Location(9002, "Ulaanbaatar", "Asia/Ulaanbaatar", 47.92, 106.92, "MN", "NAMEM",
                       False, True, {3: Sensor(3, 1, "pm10", "µg/m³")})  # fmt: skip


@pytest.fixture
def sinks() -> Iterator[tuple[SmtpSink, HttpSink]]:
    with running_smtp_sink() as smtp, running_http_sink() as http:
        yield smtp, http


def hourly(location: Location, values: list[float], first_hour: int) -> list[dict]:
    """One reading per hour from START + first_hour hours, of the location's only sensor."""
    (sensor,) = location.sensors.values()
    return [
        make_event(
            mode="live",
            location=location,
            sensor=sensor,
            value=value,
            period_start=START + timedelta(hours=first_hour + i),
            period_end=START + timedelta(hours=first_hour + i + 1),
            ingested_at=START + timedelta(hours=first_hour + i + 1, minutes=5),
        )
        for i, value in enumerate(values)
    ]


def expected_categories(events: list[dict]) -> dict[tuple[int, str], str | None]:
    """(location, parameter) -> the NowCast AQI category of its newest reading (pandas)."""
    latest = ref.latest(ref.valid_readings(events))
    return {
        (int(row.location_id), row.parameter): ref.category(None if pd.isna(row.aqi) else row.aqi)
        for row in latest.itertuples()
    }


def episodes(url: str) -> list[dict]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            "select location_id, parameter, category, peak_aqi, last_aqi, since, cleared_at, "
            "notified_at from gold.aqi_alerts order by alert_id"
        ).fetchall()


def test_one_notification_per_episode_across_runs(
    tmp_path: Path, fresh_database: str, sinks: tuple[SmtpSink, HttpSink]
) -> None:
    smtp, http = sinks
    env = isolated_env(
        tmp_path / "aq",
        AQ_DATABASE_URL=fresh_database,
        AQ_ALERT_SMTP_HOST="127.0.0.1",
        AQ_ALERT_SMTP_PORT=str(smtp.port),
        AQ_ALERT_SMTP_STARTTLS="0",
        AQ_ALERT_EMAIL_FROM="aqi@example.org",
        AQ_ALERT_EMAIL_TO="analysts@example.org",
        AQ_ALERT_WEBHOOK_URL=http.url,
    )
    loaded: list[dict] = []

    def batch(events: list[dict]) -> dict[tuple[int, str], str | None]:
        load_raw_events(fresh_database, events)
        loaded.extend(events)
        build = run_aqi_dbt(
            ["build", "--select", "+latest", "--vars", json.dumps({"as_of": AS_OF})], env, tmp_path
        )
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-2000:]
        return expected_categories(loaded)

    def step(**extra: str) -> str:
        result = run_aqi(["aqi-alerts"], {**env, **extra}, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def told() -> list[dict]:
        assert len(smtp.messages) == len(http.posts)
        return [json.loads(post["body"]) for post in http.posts]

    # 1. Delhi Unhealthy: one episode, told once by e-mail and webhook
    expected = batch(
        hourly(DELHI, [80, 80, 80], 0) + hourly(OSLO, [8, 8, 8], 0)
        + hourly(ULAANBAATAR, [200, 200, 200], 0)
    )  # fmt: skip
    assert expected == {(8118, "pm25"): "Unhealthy", (7001, "pm25"): "Good",
                        (9002, "pm10"): "Unhealthy for Sensitive Groups"}  # fmt: skip
    out = step()
    assert "1 opened, 0 cleared, 1 open, 1 notified" in out
    assert "New Delhi" in out
    (first,) = episodes(fresh_database)
    assert first["location_id"] == 8118 and first["parameter"] == "pm25"
    assert first["category"] == "Unhealthy" and first["cleared_at"] is None
    assert first["since"] == START + timedelta(hours=3)
    assert first["notified_at"] is not None
    (payload,) = told()
    assert payload["event"] == "aqi_unhealthy"
    assert payload["details"]["location_id"] == 8118
    assert payload["details"]["category"] == "Unhealthy"
    assert payload["details"]["aqi"] == first["peak_aqi"] == ref.aqi(80, "pm25")
    assert payload["details"]["since"] == "2025-06-01T03:00:00+00:00"
    mail = smtp.messages[0]["message"]
    assert mail["Subject"].startswith("[aqi] Unhealthy air: New Delhi (IN), PM2.5")
    assert mail["To"] == "analysts@example.org"

    # 2. the same step again: nothing new
    out = step()
    assert "0 opened, 0 cleared, 1 open" in out and "notified" not in out
    assert len(told()) == 1

    # 3. worse: the same episode follows, nothing sent
    expected = batch(hourly(DELHI, [300], 3))
    assert expected[(8118, "pm25")] == "Very Unhealthy"
    step()
    (first,) = episodes(fresh_database)
    assert first["category"] == "Very Unhealthy" and first["cleared_at"] is None
    assert first["peak_aqi"] == first["last_aqi"] > 200
    assert len(told()) == 1

    # 4. the air clears: cleared_at is the reading below the threshold
    expected = batch(hourly(DELHI, [5, 5, 5], 4))
    assert rank(expected[(8118, "pm25")]) < rank("Unhealthy")
    out = step()
    assert "0 opened, 1 cleared, 0 open" in out
    (first,) = episodes(fresh_database)
    assert first["cleared_at"] == START + timedelta(hours=7)
    assert first["category"] == "Very Unhealthy"  # the episode's worst
    assert len(told()) == 1

    # 5. a new episode: told once
    expected = batch(hourly(DELHI, [150, 150, 150], 7))
    assert expected[(8118, "pm25")] == "Very Unhealthy"
    out = step()
    assert "1 opened, 0 cleared, 1 open, 1 notified" in out
    first, second = episodes(fresh_database)
    assert second["since"] == START + timedelta(hours=10) and second["cleared_at"] is None
    assert [p["details"]["alert_id"] for p in told()][-1] != told()[0]["details"]["alert_id"]
    assert len(told()) == 2

    # 6. a lower threshold: Ulaanbaatar's PM10 opens and is told; Delhi is not told again
    out = step(AQ_AQI_ALERT_CATEGORY="unhealthy for sensitive groups")
    assert "1 opened, 0 cleared, 2 open, 1 notified" in out
    payloads = told()
    assert len(payloads) == 3
    assert payloads[-1]["details"]["location_id"] == 9002
    assert payloads[-1]["details"]["category"] == "Unhealthy for Sensitive Groups"
    assert [(p["details"]["location_id"], p["details"]["since"]) for p in payloads] == [
        (8118, "2025-06-01T03:00:00+00:00"),
        (8118, "2025-06-01T10:00:00+00:00"),
        (9002, "2025-06-01T03:00:00+00:00"),
    ]
    listed = run_aqi(["aqi-alerts", "--list"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "2 open AQI alerts" in listed.stdout
    assert len(told()) == 3  # --list sends nothing


def test_off_and_a_bad_threshold_and_no_warehouse_are_one_line_each(
    tmp_path: Path, fresh_database: str
) -> None:
    env = isolated_env(tmp_path / "aq", AQ_DATABASE_URL=fresh_database)
    off = run_aqi(["aqi-alerts"], {**env, "AQ_AQI_ALERT_CATEGORY": "off"}, tmp_path)
    assert off.returncode == 0 and "aqi alerts: off" in off.stdout, off.stderr
    bad = run_aqi(["aqi-alerts"], {**env, "AQ_AQI_ALERT_CATEGORY": "Purple"}, tmp_path)
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "AQ_AQI_ALERT_CATEGORY" in bad.stderr and "Traceback" not in bad.stderr
    empty = run_aqi(["aqi-alerts"], env, tmp_path)
    assert empty.returncode != 0
    assert "no table gold.latest" in empty.stderr and "aqi dbt build" in empty.stderr
    assert "Traceback" not in empty.stderr
