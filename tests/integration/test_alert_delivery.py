"""Alerts delivered for real: an SMTP sink and an HTTP sink on 127.0.0.1, in this process.

- a task that fails in a real Airflow (``airflow dags test`` in a private AIRFLOW_HOME with a
  SQLite metadata database) makes its on_failure_callback - the notifiers of
  :func:`aqi.alerts.failure_notifiers` - send one e-mail and one webhook POST that name the
  task and carry the exception's text; with no channel configured, the same DAG sends nothing;
- a channel that is down (nothing listens, HTTP 500, a server that never answers) is logged
  in one line without its secrets, and the callback does not raise;
- the deadline: last success 50 min ago -> one alert; the next check -> none; after a new
  success and 50 min more -> one again.

The sinks are small and written here (no aiosmtpd in the environment): the SMTP one speaks
just what ``smtplib`` says (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from alert_sinks import TOKEN, HttpSink, SmtpSink, running_http_sink, running_smtp_sink
from conftest import free_port

from aqi import alerts
from aqi.core.config import ENV_VARS, Settings, load_settings
from aqi.core.errors import AqiError

# the module's tests share one costly fixture: one xdist worker runs them all (make test)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("alert_delivery")]

PASSWORD = "sm7p-pa55-word"
#: the kind of message the GX gate raises: names the expectation and sample rows
REPORT = (
    "Great Expectations (gold): 12 expectations on 3 tables, 1 failed\n"
    "  FAILED gold.latest  expect_column_values_to_be_between(aqi, 0..500): 2 of 40 rows, "
    "e.g. {'location_id': 2178, 'aqi': 731}"
)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with running_smtp_sink() as sink:
        yield sink


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    with running_http_sink() as sink:
        yield sink


def alert_env(smtp_port: int, webhook_url: str) -> dict[str, str]:
    return {
        "AQ_ALERT_SMTP_HOST": "127.0.0.1",
        "AQ_ALERT_SMTP_PORT": str(smtp_port),
        "AQ_ALERT_SMTP_STARTTLS": "0",  # the sink has no certificate; loopback allows a login
        "AQ_ALERT_SMTP_USER": "aqi-bot",
        "AQ_ALERT_SMTP_PASSWORD": PASSWORD,
        "AQ_ALERT_EMAIL_FROM": "aqi@example.org",
        "AQ_ALERT_EMAIL_TO": "ops@example.org, oncall@example.org",
        "AQ_ALERT_WEBHOOK_URL": webhook_url,
    }


def settings_for(tmp_path: Path, **env: str) -> Settings:
    return load_settings({"AQ_HOME": str(tmp_path / "aq"), **env}, dotenv=None)


def failure_context(exception: BaseException | None) -> dict:
    """What Airflow 3's task runner hands an on_failure_callback (the parts alerts read)."""
    ti = SimpleNamespace(
        dag_id="openaq_elt",
        task_id="check_gold",
        run_id="scheduled__2025-06-01T10:15:00+00:00",
        try_number=2,
        map_index=-1,
        log_url="http://127.0.0.1:58080/dags/openaq_elt/runs/x/tasks/check_gold?try_number=2",
    )
    return {
        "ti": ti,
        "task_instance": ti,
        "run_id": ti.run_id,
        "task": SimpleNamespace(task_id="check_gold"),
        "dag_run": SimpleNamespace(dag_id="openaq_elt", run_id=ti.run_id),
        "exception": exception,
    }


# --- a real Airflow run ---------------------------------------------------------------------

PROBE_DAG = textwrap.dedent(
    '''
    """A task that fails like the GX gate does, with the project's failure notifiers."""
    from datetime import UTC, datetime

    from airflow.sdk import dag, task

    from aqi import alerts
    from aqi.core.config import load_settings
    from aqi.core.errors import AqiError

    REPORT = {report!r}


    @dag(
        dag_id="alert_probe",
        schedule=None,
        start_date=datetime(2025, 1, 1, tzinfo=UTC),
        catchup=False,
        default_args={{"retries": 0, "on_failure_callback": alerts.failure_notifiers(load_settings())}},
    )
    def alert_probe():
        @task
        def drain_stream():
            return "drained"

        @task
        def check_gold():
            raise AqiError(REPORT)

        drain_stream() >> check_gold()


    alert_probe()
    '''
)


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A private AIRFLOW_HOME (SQLite metadata, migrated once) with the probe DAG."""
    root = tmp_path_factory.mktemp("alerts_airflow")
    dags = root / "dags"
    dags.mkdir()
    (dags / "alert_probe.py").write_text(PROBE_DAG.format(report=REPORT))
    base = {k: v for k, v in os.environ.items() if k not in ENV_VARS and "AIRFLOW" not in k}
    env = {
        **base,
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__BASE_URL": "http://127.0.0.1:58080",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        "SCARF_ANALYTICS": "false",
        "DO_NOT_TRACK": "1",
        "AQ_HOME": str(root / "aq"),
    }
    output = airflow(["db", "migrate"], env, root)
    assert "Database migration done" in output, output[-2000:]
    return {"env": env, "cwd": str(root)}


def airflow(args: list[str], env: dict[str, str], cwd: Path | str) -> str:
    executable = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run(
        [executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    return result.stdout + result.stderr


def test_a_failed_task_in_airflow_sends_one_email_and_one_webhook_post(
    airflow_home: dict, smtp_sink: SmtpSink, http_sink: HttpSink
) -> None:
    env = {**airflow_home["env"], **alert_env(smtp_sink.port, http_sink.url)}
    output = airflow(["dags", "test", "alert_probe"], env, airflow_home["cwd"])

    assert "check_gold" in output and "failed" in output.lower()
    assert len(smtp_sink.messages) == 1, output[-3000:]
    mail = smtp_sink.messages[0]
    assert mail["auth"] == ("aqi-bot", PASSWORD)
    assert mail["from"] == "aqi@example.org"
    assert mail["to"] == ["ops@example.org", "oncall@example.org"]
    assert mail["message"]["Subject"] == "[aqi] alert_probe: task check_gold failed"
    text = mail["message"].get_content()
    assert "expect_column_values_to_be_between" in text and "'aqi': 731" in text
    assert "task   check_gold" in text

    assert len(http_sink.posts) == 1, output[-3000:]
    post = http_sink.posts[0]
    assert post["path"] == f"/hooks/aqi/{TOKEN}?key={TOKEN}"
    assert post["headers"]["Content-Type"] == "application/json"
    payload = json.loads(post["body"])
    assert payload["details"] is None  # an AQI alert's episode; none for a failed task
    assert set(payload) == {
        "event", "dag_id", "run_id", "task_id", "try_number", "message", "log_url", "at", "details"
    }  # fmt: skip
    assert payload["event"] == "task_failed"
    assert (payload["dag_id"], payload["task_id"], payload["try_number"]) == (
        "alert_probe", "check_gold", 1
    )  # fmt: skip
    assert payload["run_id"] and quote(payload["run_id"], safe="") in payload["log_url"]
    assert payload["log_url"].startswith("http://127.0.0.1:58080/dags/alert_probe/runs/")
    assert "expect_column_values_to_be_between" in payload["message"]
    assert datetime.fromisoformat(payload["at"]).tzinfo is not None
    # the secrets are in no log line of the run
    assert PASSWORD not in output and TOKEN not in output


def test_with_no_channel_configured_the_same_failure_sends_nothing(
    airflow_home: dict, smtp_sink: SmtpSink, http_sink: HttpSink
) -> None:
    output = airflow(["dags", "test", "alert_probe"], airflow_home["env"], airflow_home["cwd"])
    assert "check_gold" in output
    assert smtp_sink.messages == [] and http_sink.posts == []
    # in this process too: no notifier at all
    assert alerts.failure_notifiers(load_settings({}, dotenv=None)) == []


# --- channels that fail -----------------------------------------------------------------------


def test_channels_down_are_logged_in_one_line_each_and_the_callback_does_not_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # nothing listens on either port
    url = f"http://127.0.0.1:{free_port()}/hooks/aqi/{TOKEN}"
    settings = settings_for(tmp_path, **alert_env(free_port(), url))
    (notifier,) = alerts.failure_notifiers(settings)
    with caplog.at_level(logging.INFO, logger="aqi.alerts"):
        notifier(failure_context(AqiError(REPORT)))  # no exception out of the callback
    lines = [r.getMessage() for r in caplog.records if r.name == "aqi.alerts"]
    assert len(lines) == 2, lines
    assert all("failed" in line and "\n" not in line for line in lines)
    assert any(line.startswith("alert task_failed: email to ") for line in lines)
    assert any("webhook to http://127.0.0.1" in line and "/hooks/***" in line for line in lines)
    assert not any(TOKEN in line or PASSWORD in line for line in lines)


def test_a_webhook_500_is_reported_and_the_email_still_goes(
    tmp_path: Path, smtp_sink: SmtpSink, http_sink: HttpSink, caplog: pytest.LogCaptureFixture
) -> None:
    http_sink.status = 500
    settings = settings_for(tmp_path, **alert_env(smtp_sink.port, http_sink.url))
    with caplog.at_level(logging.INFO, logger="aqi.alerts"):
        alerts.failure_notifiers(settings)[0](failure_context(AqiError(REPORT)))
    assert len(http_sink.posts) == 1 and len(smtp_sink.messages) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP Error 500" in warnings[0], warnings
    assert TOKEN not in caplog.text


def test_a_server_that_never_answers_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Both channels give up after TIMEOUT_S: connected, but no greeting and no response."""
    monkeypatch.setattr(alerts, "TIMEOUT_S", 0.5)
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)  # connections are queued by the kernel, never accepted nor answered
        port = mute.getsockname()[1]
        settings = settings_for(tmp_path, **alert_env(port, f"http://127.0.0.1:{port}/x/y"))
        started = datetime.now(UTC)
        outcome = alerts.send_alert(settings, alerts.alert_from_context(failure_context(None)))
        seconds = (datetime.now(UTC) - started).total_seconds()
    assert set(outcome) == {"email", "webhook"}
    assert all(v.startswith("failed:") and "timed out" in v for v in outcome.values()), outcome
    assert seconds < 5


# --- the deadline -----------------------------------------------------------------------------


def test_deadline_alerts_once_per_outage(
    tmp_path: Path, smtp_sink: SmtpSink, http_sink: HttpSink
) -> None:
    settings = settings_for(tmp_path, **alert_env(smtp_sink.port, http_sink.url))
    t0 = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
    alerts.record_success(settings, "openaq_elt", "scheduled__2025-06-01T09:45:00+00:00", at=t0)

    said = alerts.check_deadline(settings, now=t0 + timedelta(minutes=30))
    assert said.startswith("ok: ") and not http_sink.posts and not smtp_sink.messages

    said = alerts.check_deadline(settings, now=t0 + timedelta(minutes=50))
    assert said.startswith("late, alert sent (email sent, webhook sent)"), said
    assert len(http_sink.posts) == 1 and len(smtp_sink.messages) == 1
    payload = json.loads(http_sink.posts[0]["body"])
    assert payload["event"] == "no_success" and payload["dag_id"] == "openaq_elt"
    assert "50 min" in payload["message"] and "scheduled__2025-06-01T09:45" in payload["message"]
    assert "no successful run" in smtp_sink.messages[0]["message"]["Subject"]

    for minutes in (55, 60, 120):  # the same outage: nothing more
        said = alerts.check_deadline(settings, now=t0 + timedelta(minutes=minutes))
        assert said.startswith("still late, alert already sent"), said
    assert len(http_sink.posts) == 1 and len(smtp_sink.messages) == 1

    t1 = t0 + timedelta(minutes=130)
    alerts.record_success(settings, "openaq_elt", "scheduled__2025-06-01T12:00:00+00:00", at=t1)
    assert alerts.check_deadline(settings, now=t1 + timedelta(minutes=5)).startswith("ok: ")
    said = alerts.check_deadline(settings, now=t1 + timedelta(minutes=50))
    assert said.startswith("late, alert sent"), said
    assert len(http_sink.posts) == 2 and len(smtp_sink.messages) == 2


def test_deadline_alert_that_no_channel_took_is_tried_again(
    tmp_path: Path, smtp_sink: SmtpSink, http_sink: HttpSink
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hooks/{TOKEN}"
    down = settings_for(tmp_path, AQ_ALERT_WEBHOOK_URL=dead)
    t0 = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
    alerts.record_success(down, at=t0)
    with pytest.raises(AqiError, match="could not be sent") as info:
        alerts.check_deadline(down, now=t0 + timedelta(minutes=50))
    assert TOKEN not in str(info.value)
    up = settings_for(tmp_path, **alert_env(smtp_sink.port, http_sink.url))
    assert alerts.check_deadline(up, now=t0 + timedelta(minutes=55)).startswith("late, alert sent")
    assert len(http_sink.posts) == 1
