"""Alerts: a failed task, or no successful ``openaq_elt`` run for too long, told to people.

Off by default; on when a channel is configured (aqi/core/config.py, ``AQ_ALERT_*``):

- e-mail through SMTP (``AQ_ALERT_SMTP_HOST`` + ``AQ_ALERT_EMAIL_TO``; STARTTLS by default,
  port 465 = implicit TLS; a login when ``AQ_ALERT_SMTP_USER``/``_PASSWORD`` are set);
- a JSON POST to ``AQ_ALERT_WEBHOOK_URL``: ``{"event": "task_failed" | "no_success" |
  "aqi_unhealthy", "dag_id", "run_id", "task_id", "try_number", "message", "log_url", "at",
  "details"}`` (``details``: the AQI episode of an ``aqi_unhealthy`` alert, else null).

Every alert goes to every configured channel (:func:`send_alert`). A channel that fails (SMTP
down, the webhook answers 500, a timeout) is logged in one line and does not raise: an alert
must not hide the failure it reports, nor fail a task of its own. Both channels time out
after :data:`TIMEOUT_S`. Neither the SMTP password nor the webhook's token (its path and
query, :func:`aqi.core.config.mask_url`) is ever logged.

Three ways in (the third, unhealthy air, is :mod:`aqi.aqi_alerts`'s, through :func:`send_alert`):

- a failed task: :func:`failure_notifiers` gives the Airflow notifiers
  (:mod:`aqi.alert_notifier`, apart so that this module imports no Airflow) for
  ``on_failure_callback`` (Airflow calls them once the task has failed for good, after its
  retries); the message is the exception's text - for a quality gate, the report that names
  the failed expectation and sample rows;
- the deadline: the last task of a successful run calls :func:`record_success`; a watchdog
  DAG calls :func:`check_deadline` every few minutes, which alerts once per outage when no run
  has succeeded for ``AQ_ALERT_DEADLINE_MINUTES``, and again only after a success and a new
  outage.

The successes and the alerts sent are kept in one small JSON file,
``AQ_HOME/state/pipeline_heartbeats.json`` (under a lock), not in the warehouse: the watchdog
must be able to judge, and say so, precisely when the warehouse is what is down.

Public surface: :class:`Alert`, :func:`failure_notifiers`, :func:`send_alert`,
:func:`send_failure`, :func:`alert_from_context`, :func:`record_success`,
:func:`check_deadline`, :func:`channels`, :func:`iso_utc`, :data:`TIMEOUT_S`, :data:`ELT_DAG_ID`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import smtplib
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from aqi.core.config import Settings, load_settings, mask_url

if TYPE_CHECKING:
    from aqi.alert_notifier import AlertNotifier

__all__ = [
    "ELT_DAG_ID",
    "TIMEOUT_S",
    "Alert",
    "alert_from_context",
    "channels",
    "check_deadline",
    "failure_notifiers",
    "iso_utc",
    "last_success",
    "record_success",
    "send_alert",
    "send_failure",
]

log = logging.getLogger(__name__)

#: the DAG whose successes the deadline watches
ELT_DAG_ID = "openaq_elt"
#: seconds each channel may take (connect, and each read or write of the conversation)
TIMEOUT_S = 10.0
#: longer messages (a quality report with many sample rows) are cut to this many characters
MESSAGE_MAX_CHARS = 8000
EVENTS = ("task_failed", "no_success", "aqi_unhealthy")
HEARTBEATS_FILE = "pipeline_heartbeats.json"
_USER_AGENT = "aqi-alerts/1"


@dataclass(frozen=True)
class Alert:
    """One alert, whatever the channel: the webhook posts :meth:`payload` as it is."""

    event: str
    dag_id: str
    run_id: str | None
    task_id: str | None
    try_number: int | None
    message: str
    log_url: str | None
    at: str
    #: what the event is about, for machines (an AQI alert: location, parameter, category...)
    details: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown alert event {self.event!r}; expected one of {EVENTS}")

    def payload(self) -> dict[str, Any]:
        return asdict(self)

    def subject(self) -> str:
        if self.event == "aqi_unhealthy":
            return f"[aqi] {_first_line(self.message)}"
        if self.event == "task_failed":
            return f"[aqi] {self.dag_id}: task {self.task_id} failed"
        return f"[aqi] {self.dag_id}: no successful run ({_first_line(self.message)})"

    def body(self) -> str:
        fields = [
            ("event", self.event),
            ("dag", self.dag_id),
            ("run", self.run_id),
            ("task", self.task_id),
            ("try", self.try_number),
            ("at", self.at),
            ("log", self.log_url),
        ]
        head = "\n".join(f"{name:<6} {value}" for name, value in fields if value is not None)
        return f"{head}\n\n{self.message}\n"


def channels(settings: Settings) -> list[str]:
    """The configured channels, by name: ``email``, ``webhook`` (empty: alerts are off)."""
    names = []
    if settings.alert_smtp_host and settings.alert_email_to:
        names.append("email")
    if settings.alert_webhook_url:
        names.append("webhook")
    return names


def send_alert(settings: Settings, alert: Alert) -> dict[str, str]:
    """Send ``alert`` to every configured channel; never raises for a channel's failure.

    Returns channel -> ``"sent"`` or ``"failed: <reason>"`` (empty when none is configured);
    each failure is also logged in one line.
    """
    outcome = {}
    for name in channels(settings):
        target = _target(settings, name)
        try:
            (_send_email if name == "email" else _post_webhook)(settings, alert)
        except Exception as exc:  # noqa: BLE001 - any failure of the channel is reported, not raised
            reason = _scrub(settings, _first_line(f"{type(exc).__name__}: {exc}"))
            log.warning("alert %s: %s to %s failed: %s", alert.event, name, target, reason)
            outcome[name] = f"failed: {reason}"
        else:
            log.info("alert %s: sent by %s to %s", alert.event, name, target)
            outcome[name] = "sent"
    return outcome


def alert_from_context(context: Mapping[str, Any], event: str = "task_failed") -> Alert:
    """The alert of an Airflow callback's context (task-level, or a DAG run's)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    dag_id = (
        getattr(ti, "dag_id", None)
        or getattr(dag_run, "dag_id", None)
        or getattr(dag, "dag_id", None)
        or "?"
    )
    run_id = (
        context.get("run_id") or getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None)
    )
    task = context.get("task")
    task_id = getattr(ti, "task_id", None) or getattr(task, "task_id", None)
    try_number = getattr(ti, "try_number", None)
    exception = context.get("exception")
    if exception is not None and str(exception).strip():
        message = str(exception).strip()
        if isinstance(exception, BaseException):
            name = type(exception).__name__
            message = message if message.startswith(name) else f"{name}: {message}"
    elif context.get("reason"):
        message = f"the DAG run failed: {context['reason']}"
    else:
        message = "failed with no exception (killed, timed out or marked failed): see the log"
    return Alert(
        event=event,
        dag_id=str(dag_id),
        run_id=str(run_id) if run_id is not None else None,
        task_id=str(task_id) if task_id is not None else None,
        try_number=int(try_number) if isinstance(try_number, int) else None,
        message=_cut(message),
        log_url=_log_url(ti, dag_id, run_id),
        at=iso_utc(datetime.now(UTC)),
    )


def send_failure(settings: Settings, context: Mapping[str, Any]) -> None:
    """Send a failed task's alert (:func:`alert_from_context`) to every configured channel;
    never raises, even on a context it does not expect (it still alerts, with what it has)."""
    try:
        alert = alert_from_context(context)
    except Exception as exc:  # noqa: BLE001 - a context we did not expect: still alert
        log.warning("alert: could not read the failure's context: %s", _first_line(exc))
        alert = Alert("task_failed", "?", None, None, None, str(exc), None, iso_utc(_now()))
    send_alert(settings, alert)


def failure_notifiers(settings: Settings | None = None) -> list[AlertNotifier]:
    """What to put in ``on_failure_callback`` (the DAG's ``default_args``): one notifier that
    sends to every configured channel (:class:`aqi.alert_notifier.AlertNotifier`), or nothing
    when no channel is configured."""
    s = settings or load_settings()
    if not channels(s):
        return []
    from aqi.alert_notifier import AlertNotifier

    return [AlertNotifier(s)]


# --- the deadline ---------------------------------------------------------------------------


def record_success(
    settings: Settings,
    dag_id: str = ELT_DAG_ID,
    run_id: str | None = None,
    *,
    at: datetime | None = None,
) -> None:
    """Record that a run of ``dag_id`` succeeded (its last task calls this) at ``at``/now.

    It ends the current outage, if any: the next time the deadline passes, a new alert goes.
    """
    when = _aware(at) if at is not None else _now()
    with _heartbeats(settings) as state:
        entry = state.setdefault(dag_id, {})
        entry.update(last_success_at=iso_utc(when), last_success_run_id=run_id)
        entry.pop("watching_since", None)


def last_success(settings: Settings, dag_id: str = ELT_DAG_ID) -> datetime | None:
    """When a run of ``dag_id`` last succeeded (:func:`record_success`), or None if never."""
    with _heartbeats(settings) as state:
        when = state.get(dag_id, {}).get("last_success_at")
    return datetime.fromisoformat(when) if when else None


def check_deadline(
    settings: Settings, now: datetime | None = None, dag_id: str = ELT_DAG_ID
) -> str:
    """The watchdog's check: alert (``no_success``) once when ``dag_id`` has not succeeded for
    ``AQ_ALERT_DEADLINE_MINUTES``; returns one line saying what it found and did.

    The outage is named by the last success it follows (or, before any success was recorded,
    by the first check that found none): its alert goes once, and it is remembered only when
    a channel took it, so a channel that was down is tried again at the next check. Raises
    :class:`~aqi.core.errors.AqiError` when an alert was due and no channel could take it, so that
    the watchdog's task shows it.
    """
    from aqi.core.errors import AqiError

    when = _aware(now) if now is not None else _now()
    deadline = timedelta(minutes=settings.alert_deadline_minutes)
    with _heartbeats(settings) as state:
        entry = state.setdefault(dag_id, {})
        if entry.get("last_success_at"):
            since, what = entry["last_success_at"], "last success"
        else:
            since = entry.setdefault("watching_since", iso_utc(when))
            what = "no success recorded since the watch began"
        age = when - datetime.fromisoformat(since)
        status = f"{dag_id}: {what} {since} ({_minutes(age)} ago; deadline {_minutes(deadline)})"
        if age < deadline:
            return f"ok: {status}"
        if entry.get("alerted_for") == since:
            return f"still late, alert already sent at {entry.get('alerted_at')}: {status}"
        configured = channels(settings)
        if not configured:
            return f"late, no alert channel configured (AQ_ALERT_*): {status}"
        run = entry.get("last_success_run_id")
        alert = Alert(
            event="no_success",
            dag_id=dag_id,
            run_id=None,
            task_id=None,
            try_number=None,
            message=(
                f"no successful {dag_id} run for {_minutes(age)} (deadline "
                f"{_minutes(deadline)}); {what} {since}" + (f" (run {run})" if run else "")
            ),
            log_url=_dag_url(dag_id),
            at=iso_utc(when),
        )
        outcome = send_alert(settings, alert)
        summary = ", ".join(f"{name} {result}" for name, result in outcome.items())
        if "sent" not in outcome.values():
            raise AqiError(f"late, and the alert could not be sent ({summary}): {status}")
        entry.update(alerted_for=since, alerted_at=iso_utc(when))
        return f"late, alert sent ({summary}): {status}"


@contextmanager
def _heartbeats(settings: Settings) -> Iterator[dict[str, dict[str, Any]]]:
    """The heartbeats file's content, locked; written back (atomically) when the block ends."""
    folder = settings.state_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / HEARTBEATS_FILE
    with open(folder / f"{HEARTBEATS_FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            log.warning("alerts: %s is not JSON; starting it again", path)
            state = {}
        before = json.dumps(state, sort_keys=True)
        yield state
        if json.dumps(state, sort_keys=True) != before:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)


# --- the channels ---------------------------------------------------------------------------


def _send_email(settings: Settings, alert: Alert) -> None:
    msg = EmailMessage()
    msg["Subject"] = alert.subject()
    msg["From"] = settings.alert_email_from
    msg["To"] = ", ".join(settings.alert_email_to)
    msg.set_content(alert.body())
    host, port = settings.alert_smtp_host, settings.alert_smtp_port
    tls = ssl.create_default_context()
    if port == 465:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=TIMEOUT_S, context=tls)
    else:
        smtp = smtplib.SMTP(host, port, timeout=TIMEOUT_S)
    with smtp:
        if port != 465 and settings.alert_smtp_starttls:
            smtp.starttls(context=tls)
        if settings.alert_smtp_user and settings.alert_smtp_password:
            smtp.login(settings.alert_smtp_user, settings.alert_smtp_password)
        smtp.send_message(msg)


def _post_webhook(settings: Settings, alert: Alert) -> None:
    assert settings.alert_webhook_url
    request = urllib.request.Request(
        settings.alert_webhook_url,
        data=json.dumps(alert.payload()).encode(),
        headers={"Content-Type": "application/json", "User-Agent": _USER_AGENT},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        response.read(4096)  # a 2xx; urlopen raised HTTPError for anything else


def _target(settings: Settings, channel: str) -> str:
    if channel == "email":
        to = ", ".join(settings.alert_email_to)
        return f"{to} via {settings.alert_smtp_host}:{settings.alert_smtp_port}"
    return mask_url(settings.alert_webhook_url or "")


def _scrub(settings: Settings, text: str) -> str:
    """``text`` without the channel's secrets (an error may quote the URL it failed on)."""
    url = settings.alert_webhook_url
    if url:
        text = text.replace(url, mask_url(url))
    if settings.alert_smtp_password:
        text = text.replace(settings.alert_smtp_password, "***")
    return text


# --- small helpers --------------------------------------------------------------------------


def _log_url(ti: Any, dag_id: Any, run_id: Any) -> str | None:
    try:
        url = getattr(ti, "log_url", None)
    except Exception:  # noqa: BLE001 - a property that needs configuration we lack
        url = None
    return str(url) if url else _dag_url(str(dag_id), run_id)


def _dag_url(dag_id: str, run_id: Any = None) -> str | None:
    """The DAG (run) in the Airflow UI, when this process knows the UI's address."""
    base = os.environ.get("AIRFLOW__API__BASE_URL")
    if not base and "airflow.sdk" in sys.modules:
        try:
            from airflow.sdk import conf

            base = conf.get("api", "base_url", fallback=None)
        except Exception:  # noqa: BLE001
            base = None
    if not base:
        return None
    from urllib.parse import quote

    url = f"{base.rstrip('/')}/dags/{quote(dag_id)}"
    return f"{url}/runs/{quote(str(run_id))}" if run_id else url


def _first_line(value: object) -> str:
    lines = str(value).strip().splitlines()
    return lines[0] if lines else ""


def _cut(text: str) -> str:
    if len(text) <= MESSAGE_MAX_CHARS:
        return text
    return text[:MESSAGE_MAX_CHARS] + f"\n... ({len(text) - MESSAGE_MAX_CHARS} more characters)"


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:.0f} min"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def iso_utc(when: datetime) -> str:
    """An instant as alerts and their state files write it: UTC ISO 8601 to the second."""
    return when.astimezone(UTC).isoformat(timespec="seconds")
