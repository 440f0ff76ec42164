"""Alerts without a network: the AQ_ALERT_* settings, the message of a failure, the masking of
secrets, and the deadline's bookkeeping (channels replaced by a recorder)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from aqi import alerts
from aqi.alert_notifier import AlertNotifier
from aqi.core.config import ENV_VARS, SECRET_VARS, ConfigError, load_settings, mask_url

pytestmark = pytest.mark.unit

WEBHOOK = "https://hooks.example.com/services/T000/B000/s3cr3tT0ken?sig=abc"
EMAIL = {
    "AQ_ALERT_SMTP_HOST": "smtp.example.org",
    "AQ_ALERT_EMAIL_TO": "ops@example.org",
    "AQ_ALERT_SMTP_USER": "bot@example.org",
    "AQ_ALERT_SMTP_PASSWORD": "pa55w0rd-secret",
}


def settings(tmp_path: Path, **env: str):
    return load_settings({"AQ_HOME": str(tmp_path / "aq"), **env}, dotenv=None)


# --- settings ---------------------------------------------------------------------------------


def test_alerts_are_off_by_default(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert (s.alert_smtp_host, s.alert_webhook_url, s.alert_email_to) == (None, None, ())
    assert s.alert_deadline_minutes == 45
    assert alerts.channels(s) == []
    assert alerts.failure_notifiers(s) == []
    outcome = alerts.send_alert(s, alerts.alert_from_context({"exception": ValueError("x")}))
    assert outcome == {}


def test_full_configuration(tmp_path: Path) -> None:
    s = settings(tmp_path, **{
        **EMAIL, "AQ_ALERT_EMAIL_TO": "a@example.org, b@example.org,a@example.org",
        "AQ_ALERT_WEBHOOK_URL": WEBHOOK, "AQ_ALERT_DEADLINE_MINUTES": "30",
    })  # fmt: skip
    assert (s.alert_smtp_host, s.alert_smtp_port, s.alert_smtp_starttls) == (
        "smtp.example.org", 587, True
    )  # fmt: skip
    assert s.alert_email_to == ("a@example.org", "b@example.org")
    assert s.alert_email_from == "bot@example.org"  # the login, when it is an address
    assert s.alert_deadline_minutes == 30
    assert alerts.channels(s) == ["email", "webhook"]
    (notifier,) = alerts.failure_notifiers(s)
    assert isinstance(notifier, AlertNotifier)
    assert notifier.template_fields == ()  # nothing of the settings goes through Jinja
    # the secrets are in no repr (Airflow logs callbacks by their repr)
    for text in (repr(s), repr(notifier)):
        assert "pa55w0rd" not in text and "s3cr3t" not in text


def test_alert_variables_are_known_and_the_secret_ones_masked() -> None:
    names = {v for v in ENV_VARS if v.startswith("AQ_ALERT_")}
    assert names == {
        "AQ_ALERT_SMTP_HOST", "AQ_ALERT_SMTP_PORT", "AQ_ALERT_SMTP_STARTTLS",
        "AQ_ALERT_SMTP_USER", "AQ_ALERT_SMTP_PASSWORD", "AQ_ALERT_EMAIL_FROM",
        "AQ_ALERT_EMAIL_TO", "AQ_ALERT_WEBHOOK_URL", "AQ_ALERT_DEADLINE_MINUTES",
    }  # fmt: skip
    assert {"AQ_ALERT_SMTP_PASSWORD", "AQ_ALERT_WEBHOOK_URL"} <= SECRET_VARS


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({"AQ_ALERT_EMAIL_TO": "ops@example.org"}, "AQ_ALERT_EMAIL_TO"),
        ({"AQ_ALERT_SMTP_PASSWORD": "pa55w0rd-secret"}, "AQ_ALERT_SMTP_PASSWORD"),
        ({"AQ_ALERT_SMTP_HOST": "smtp.example.org"}, "AQ_ALERT_EMAIL_TO"),
        ({**EMAIL, "AQ_ALERT_EMAIL_TO": "ops at example"}, "AQ_ALERT_EMAIL_TO"),
        ({**EMAIL, "AQ_ALERT_SMTP_PORT": "smtp"}, "AQ_ALERT_SMTP_PORT"),
        ({**EMAIL, "AQ_ALERT_SMTP_PORT": "70000"}, "AQ_ALERT_SMTP_PORT"),
        ({**EMAIL, "AQ_ALERT_SMTP_STARTTLS": "maybe"}, "AQ_ALERT_SMTP_STARTTLS"),
        # a password in clear to a remote server is refused
        ({**EMAIL, "AQ_ALERT_SMTP_STARTTLS": "0"}, "AQ_ALERT_SMTP_STARTTLS"),
        ({**EMAIL, "AQ_ALERT_SMTP_USER": ""}, "AQ_ALERT_SMTP_USER"),
        ({**EMAIL, "AQ_ALERT_SMTP_PASSWORD": ""}, "AQ_ALERT_SMTP_PASSWORD"),
        ({**EMAIL, "AQ_ALERT_SMTP_USER": "apikey"}, "AQ_ALERT_EMAIL_FROM"),
        ({**EMAIL, "AQ_ALERT_SMTP_HOST": "smtp host"}, "AQ_ALERT_SMTP_HOST"),
        ({"AQ_ALERT_WEBHOOK_URL": "ftp://example.org/s3cr3tT0ken"}, "AQ_ALERT_WEBHOOK_URL"),
        ({"AQ_ALERT_WEBHOOK_URL": "s3cr3tT0ken"}, "AQ_ALERT_WEBHOOK_URL"),
        ({"AQ_ALERT_DEADLINE_MINUTES": "0"}, "AQ_ALERT_DEADLINE_MINUTES"),
        ({"AQ_ALERT_DEADLINE_MINUTES": "soon"}, "AQ_ALERT_DEADLINE_MINUTES"),
    ],
)
def test_a_half_configured_or_invalid_channel_names_the_variable(env: dict, var: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env, dotenv=None)
    message = str(info.value)
    assert message.startswith(f"{var}: ") and "\n" not in message
    assert "pa55w0rd" not in message and "s3cr3t" not in message


def test_local_relay_without_tls_or_login(tmp_path: Path) -> None:
    s = settings(
        tmp_path, AQ_ALERT_SMTP_HOST="localhost", AQ_ALERT_SMTP_PORT="25",
        AQ_ALERT_SMTP_STARTTLS="0", AQ_ALERT_EMAIL_FROM="aqi@example.org",
        AQ_ALERT_EMAIL_TO="ops@example.org",
    )  # fmt: skip
    assert (s.alert_smtp_port, s.alert_smtp_starttls, s.alert_smtp_user) == (25, False, None)
    # a login in clear is accepted to a loopback relay only
    s = settings(
        tmp_path, **{**EMAIL, "AQ_ALERT_SMTP_HOST": "127.0.0.1", "AQ_ALERT_SMTP_STARTTLS": "0"}
    )
    assert s.alert_smtp_password == "pa55w0rd-secret"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (WEBHOOK, "https://hooks.example.com/services/***"),
        ("https://discord.com/api/webhooks/123/tok", "https://discord.com/api/***"),
        ("https://h.example.org:8443/hook?token=tok", "https://h.example.org:8443/hook/***"),
        ("http://user:tok@h.example.org/", "http://h.example.org/***"),
        ("https://h.example.org", "https://h.example.org"),
        ("postgresql://u:tok@h:1/db", "postgresql://u:***@h:1/db"),
    ],
)
def test_mask_url_hides_a_webhooks_token(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "tok" not in masked.lower().replace("hooks", "")


# --- the message ------------------------------------------------------------------------------


class GateFailed(Exception):
    """Like expectations.report.ExpectationsFailed: the report is the message."""


REPORT = (
    "Great Expectations (gold): 12 expectations on 3 tables, 1 failed\n"
    "  FAILED gold.latest  expect_column_values_to_be_between(aqi, 0..500): 2 of 40 rows, "
    "e.g. {'location_id': 2178, 'aqi': 731}"
)


def task_context(exception: object) -> dict:
    ti = SimpleNamespace(
        dag_id="openaq_elt", task_id="check_gold", run_id="scheduled__2025-06-01T10:15:00+00:00",
        try_number=3, log_url="http://127.0.0.1:58080/dags/openaq_elt/runs/r/tasks/check_gold",
    )  # fmt: skip
    return {"ti": ti, "task_instance": ti, "run_id": ti.run_id, "exception": exception}


def test_alert_of_a_failed_task_carries_the_report() -> None:
    alert = alerts.alert_from_context(task_context(GateFailed(REPORT)))
    payload = alert.payload()
    assert list(payload) == [  # details: null but for an AQI episode
        "event", "dag_id", "run_id", "task_id", "try_number", "message", "log_url", "at", "details"
    ]  # fmt: skip
    assert payload["event"] == "task_failed"
    assert (payload["dag_id"], payload["task_id"], payload["try_number"]) == (
        "openaq_elt", "check_gold", 3
    )  # fmt: skip
    assert payload["run_id"] == "scheduled__2025-06-01T10:15:00+00:00"
    assert payload["message"] == f"GateFailed: {REPORT}"
    assert payload["log_url"].endswith("/tasks/check_gold")
    assert datetime.fromisoformat(payload["at"]).utcoffset() == timedelta(0)
    json.dumps(payload)  # what the webhook posts
    assert alert.subject() == "[aqi] openaq_elt: task check_gold failed"
    body = alert.body()
    assert "task   check_gold" in body and "try    3" in body
    assert body.rstrip().endswith("'aqi': 731}")


def test_alert_without_an_exception_or_from_a_dag_run() -> None:
    alert = alerts.alert_from_context(task_context(None))
    assert "no exception" in alert.message and alert.task_id == "check_gold"
    # a DAG-level on_failure_callback: no task instance, a reason
    dag_run = SimpleNamespace(dag_id="openaq_elt", run_id="manual__1")
    alert = alerts.alert_from_context({"dag_run": dag_run, "reason": "timed_out"})
    assert (alert.dag_id, alert.run_id, alert.task_id) == ("openaq_elt", "manual__1", None)
    assert alert.message == "the DAG run failed: timed_out"
    assert alert.log_url is None or alert.log_url.endswith("/runs/manual__1")


def test_a_long_message_is_cut() -> None:
    alert = alerts.alert_from_context(task_context(GateFailed("x" * 20_000)))
    assert len(alert.message) < alerts.MESSAGE_MAX_CHARS + 100
    assert alert.message.endswith("more characters)")


def test_unknown_event_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown alert event"):
        alerts.Alert("task_retried", "d", None, None, None, "m", None, "now")


def test_notifier_never_raises_and_scrubs_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(tmp_path, **EMAIL, AQ_ALERT_WEBHOOK_URL=WEBHOOK)

    def broken(settings, alert):
        raise OSError(f"could not reach {WEBHOOK} as bot with {EMAIL['AQ_ALERT_SMTP_PASSWORD']}")

    monkeypatch.setattr(alerts, "_send_email", broken)
    monkeypatch.setattr(alerts, "_post_webhook", broken)
    (notifier,) = alerts.failure_notifiers(s)
    notifier(task_context(GateFailed(REPORT)))  # does not raise
    warnings = [r.getMessage() for r in caplog.records if r.name == "aqi.alerts"]
    assert len(warnings) == 2
    assert "email to ops@example.org via smtp.example.org:587 failed: OSError" in warnings[0]
    assert "webhook to https://hooks.example.com/services/*** failed" in warnings[1]
    assert "s3cr3t" not in caplog.text and "pa55w0rd" not in caplog.text


# --- the deadline, channels recorded ----------------------------------------------------------


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    monkeypatch.setattr(alerts, "_post_webhook", lambda s, alert: calls.append(alert))
    return calls


T0 = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)


def test_deadline_once_per_outage(tmp_path: Path, sent: list) -> None:
    s = settings(tmp_path, AQ_ALERT_WEBHOOK_URL=WEBHOOK)
    alerts.record_success(s, run_id="r1", at=T0)
    assert alerts.check_deadline(s, now=T0 + timedelta(minutes=44)).startswith("ok: ")
    assert alerts.check_deadline(s, now=T0 + timedelta(minutes=46)).startswith("late, alert sent")
    assert alerts.check_deadline(s, now=T0 + timedelta(minutes=51)).startswith("still late")
    assert [a.event for a in sent] == ["no_success"]
    assert "46 min" in sent[0].message and "(run r1)" in sent[0].message
    alerts.record_success(s, run_id="r2", at=T0 + timedelta(minutes=60))
    assert alerts.check_deadline(s, now=T0 + timedelta(minutes=106)).startswith("late, alert")
    assert len(sent) == 2
    state = json.loads((s.state_dir / alerts.HEARTBEATS_FILE).read_text())
    assert state["openaq_elt"]["last_success_run_id"] == "r2"


def test_deadline_before_any_success_counts_from_the_first_check(
    tmp_path: Path, sent: list
) -> None:
    s = settings(tmp_path, AQ_ALERT_WEBHOOK_URL=WEBHOOK, AQ_ALERT_DEADLINE_MINUTES="10")
    said = alerts.check_deadline(s, now=T0)
    assert said.startswith("ok: ") and "no success recorded" in said
    assert alerts.check_deadline(s, now=T0 + timedelta(minutes=9)).startswith("ok: ")
    assert alerts.check_deadline(s, now=T0 + timedelta(minutes=11)).startswith("late, alert")
    assert len(sent) == 1


def test_deadline_with_no_channel_says_so_and_sends_nothing(tmp_path: Path, sent: list) -> None:
    s = settings(tmp_path)
    alerts.record_success(s, at=T0)
    said = alerts.check_deadline(s, now=T0 + timedelta(hours=2))
    assert said.startswith("late, no alert channel configured")
    assert sent == []


def test_deadlines_of_two_dags_are_apart(tmp_path: Path, sent: list) -> None:
    s = settings(tmp_path, AQ_ALERT_WEBHOOK_URL=WEBHOOK)
    alerts.record_success(s, "openaq_elt", at=T0 + timedelta(minutes=40))
    alerts.record_success(s, "other", at=T0)
    assert alerts.check_deadline(s, now=T0 + timedelta(minutes=50)).startswith("ok: ")
    assert alerts.check_deadline(s, T0 + timedelta(minutes=50), "other").startswith("late")
    assert [a.dag_id for a in sent] == ["other"]
