"""The Airflow side of :mod:`aqi.alerts`: the notifier a DAG puts in ``on_failure_callback``.

Apart from :mod:`aqi.alerts` because it subclasses Airflow's ``BaseNotifier``, and importing
Airflow takes ~2 s of CPU: the commands that send alerts or read the heartbeats without
Airflow (``aqi aqi-alerts``, ``aqi demo``) do not pay it. DAGs get the notifier through
:func:`aqi.alerts.failure_notifiers`.

Public surface: :class:`AlertNotifier`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseNotifier

from aqi.alerts import channels, send_failure
from aqi.core.config import Settings

__all__ = ["AlertNotifier"]


class AlertNotifier(BaseNotifier):
    """An Airflow notifier: ``on_failure_callback=[AlertNotifier(settings)]``.

    It sends the failure to every configured channel and never raises (Airflow would log a
    second traceback under the task's own): :func:`aqi.alerts.send_failure`. Nothing is
    templated: the settings (the SMTP password among them) never go through Jinja or the
    rendered fields.
    """

    template_fields = ()

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def __repr__(self) -> str:
        return f"AlertNotifier({', '.join(channels(self.settings)) or 'no channel'})"

    def notify(self, context: Any) -> None:
        send_failure(self.settings, context)
