"""AQI alerts without a database: the categories against the warehouse's macro and the EPA
reference, the threshold setting, and the message an episode sends.

The episodes' life (open, follow, clear, notify once) is tested on the real PostgreSQL and dbt
in tests/integration/test_aqi_alerts.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import reference_aqi as ref

from aqi import alerts
from aqi.aqi_alerts import AlertStep, _alert
from aqi.core.aqi_categories import AQI_CATEGORIES, DEFAULT_ALERT_CATEGORY, rank
from aqi.core.config import ENV_VARS, ConfigError, load_settings

pytestmark = pytest.mark.unit

MACROS = Path(__file__).resolve().parents[2] / "dbt_project" / "macros" / "aqi.sql"


def test_the_categories_are_the_macros_and_epas_in_order_of_severity() -> None:
    macro = MACROS.read_text()
    body = macro[macro.index("macro aqi_category") :]
    body = body[: body.index("endmacro")]
    assert tuple(re.findall(r"(?:then|else) '([^']+)'", body)) == AQI_CATEGORIES
    assert tuple(name for _, name in ref.CATEGORIES) == AQI_CATEGORIES
    assert rank("Good") == 0 < rank("Unhealthy") == 3 < rank("Hazardous") == 5
    assert ref.category(151) == DEFAULT_ALERT_CATEGORY == "Unhealthy"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Unhealthy", "Unhealthy"),
        ("very_unhealthy", "Very Unhealthy"),
        ("  HAZARDOUS ", "Hazardous"),
        ("unhealthy-for-sensitive-groups", "Unhealthy for Sensitive Groups"),
        ("USG", "Unhealthy for Sensitive Groups"),
        ("moderate", "Moderate"),
        ("off", None),
        ("0", None),
    ],
)
def test_the_threshold_is_read_in_any_spelling(raw: str, expected: str | None) -> None:
    assert load_settings({"AQ_AQI_ALERT_CATEGORY": raw}, dotenv=None).aqi_alert_category == (
        expected
    )


def test_the_threshold_defaults_to_unhealthy_and_a_typo_names_the_choices() -> None:
    assert load_settings({}, dotenv=None).aqi_alert_category == "Unhealthy"
    assert ENV_VARS["AQ_AQI_ALERT_CATEGORY"][0] == "Unhealthy"
    with pytest.raises(ConfigError) as caught:
        load_settings({"AQ_AQI_ALERT_CATEGORY": "Purple"}, dotenv=None)
    assert str(caught.value).startswith("AQ_AQI_ALERT_CATEGORY: expected an AQI category")
    assert "Very Unhealthy" in str(caught.value) and "'Purple'" in str(caught.value)


def episode(**changes: object) -> dict:
    row = {
        "alert_id": 41,
        "location_id": 8118,
        "location_name": "New Delhi",
        "country_code": "IN",
        "latitude": 28.63,
        "longitude": 77.22,
        "parameter": "pm25",
        "category": "Very Unhealthy",
        "peak_aqi": 231,
        "since": datetime(2025, 6, 1, 3, tzinfo=UTC),
    }
    return {**row, **changes}


def test_an_episode_says_where_what_how_bad_and_since_when() -> None:
    alert = _alert(episode(), "scheduled__2025-06-01T03:15:00+00:00")
    assert alert.event == "aqi_unhealthy" and alert.dag_id == "openaq_elt"
    assert alert.subject() == (
        "[aqi] Very Unhealthy air: New Delhi (IN), PM2.5 NowCast AQI 231 "
        "since 2025-06-01T03:00:00+00:00"
    )
    payload = alert.payload()
    assert payload["details"] == {
        "alert_id": 41,
        "location_id": 8118,
        "location_name": "New Delhi",
        "country_code": "IN",
        "latitude": 28.63,
        "longitude": 77.22,
        "parameter": "pm25",
        "category": "Very Unhealthy",
        "aqi": 231,
        "since": "2025-06-01T03:00:00+00:00",
    }
    assert payload["run_id"] == "scheduled__2025-06-01T03:15:00+00:00"
    assert "event  aqi_unhealthy" in alert.body() and "alert 41" in alert.body()


def test_an_episode_without_a_name_or_country_still_reads() -> None:
    alert = _alert(episode(location_name=None, country_code=None, parameter="pm10"), None)
    assert alert.subject().startswith("[aqi] Very Unhealthy air: location 8118, PM10 NowCast")


def test_failure_alerts_keep_their_payload_shape_with_an_empty_details() -> None:
    alert = alerts.Alert("task_failed", "openaq_elt", "r", "dbt", 1, "boom", None, "t")
    assert alert.payload()["details"] is None
    with pytest.raises(ValueError, match="unknown alert event"):
        alerts.Alert("aqi", "openaq_elt", None, None, None, "x", None, "t")


def test_the_step_says_what_it_did_in_one_line() -> None:
    assert AlertStep(None).line() == "aqi alerts: off (AQ_AQI_ALERT_CATEGORY=off)"
    line = AlertStep("Unhealthy", opened=2, cleared=1, notified=2, open=3, failed=1).line()
    assert line == (
        "aqi alerts (Unhealthy or worse): 2 opened, 1 cleared, 3 open, 2 notified, "
        "1 not sent (retried next run)"
    )
