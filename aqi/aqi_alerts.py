"""AQI alerts: episodes of unhealthy air in ``gold.aqi_alerts``, each told to people once.

After each successful ``openaq_elt`` run (its ``publish`` task), :func:`update_aqi_alerts`
reads the newest NowCast AQI of every location and parameter in ``gold.latest`` and, in one
transaction:

1. follows every open episode whose pair has a newer (or corrected) reading: a reading at or
   above the threshold updates its worst category, peak AQI and last AQI; the first reading
   below the threshold clears it (``cleared_at`` = that reading's time);
2. opens an episode for every pair at or above the threshold without an open one
   (``since`` = the reading's time).

Then every open episode not notified yet is sent through the failure alerts' channels
(:func:`aqi.alerts.send_alert`: SMTP and/or webhook, off by default) and marked
``notified_at`` when a channel took it, so that a channel that was down is tried again on the
next run and an episode is never told twice. Nothing is sent while no channel is configured:
the episodes open at the moment a channel is configured are then told once each.

The threshold is ``AQ_AQI_ALERT_CATEGORY`` ("Unhealthy" by default: AQI 151 and above; ``off``
turns the step off). A pair with no AQI (no NowCast: fewer than 2 of its 3 newest hours) and a
location that stopped reporting change nothing: their episode stays open until a reading
below the threshold arrives. The table is created by migration 0005 (aqi/core/sql), not by
dbt: it is a record of what each run saw, which no rebuild of gold.latest could reproduce.

Public surface: :func:`update_aqi_alerts`, :func:`open_alerts`, :class:`AlertStep`,
:data:`ALERTS_TABLE`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from aqi import alerts
from aqi.core.aqi_categories import AQI_CATEGORIES
from aqi.core.config import Settings
from aqi.core.connections import database_url
from aqi.core.errors import AqiError, first_line
from aqi.core.gold_contract import AQI_ALERTS_TABLE, GOLD_SCHEMA
from aqi.core.migrations import migrate

__all__ = ["ALERTS_TABLE", "AlertStep", "open_alerts", "update_aqi_alerts"]

Echo = Callable[[str], None]

#: the episodes (migration aqi/core/sql/0005_aqi_alerts.sql)
ALERTS_TABLE = f"{GOLD_SCHEMA}.{AQI_ALERTS_TABLE}"
#: the readings they are judged on (the dbt model gold.latest)
LATEST_TABLE = f"{GOLD_SCHEMA}.latest"
#: arbitrary, fixed key of the transaction lock that serialises two alert steps
_LOCK_KEY = 7_141_202_618
_PARAMETER_NAMES = {"pm25": "PM2.5", "pm10": "PM10"}


@dataclass(frozen=True)
class AlertStep:
    """What one run of the step did."""

    threshold: str | None
    opened: int = 0
    followed: int = 0
    cleared: int = 0
    notified: int = 0
    open: int = 0
    #: channel failures of the alerts that could not be sent (tried again next run)
    failed: int = 0

    def line(self) -> str:
        if self.threshold is None:
            return "aqi alerts: off (AQ_AQI_ALERT_CATEGORY=off)"
        told = f", {self.notified} notified" if self.notified else ""
        unsent = f", {self.failed} not sent (retried next run)" if self.failed else ""
        return (
            f"aqi alerts ({self.threshold} or worse): {self.opened} opened, "
            f"{self.cleared} cleared, {self.open} open{told}{unsent}"
        )


def update_aqi_alerts(
    settings: Settings, run_id: str | None = None, echo: Echo = print
) -> AlertStep:
    """Open, follow and clear the episodes from ``gold.latest``, then notify the new ones."""
    threshold = settings.aqi_alert_category
    if threshold is None:
        step = AlertStep(threshold=None)
        echo(step.line())
        return step
    params = {"categories": list(AQI_CATEGORIES), "threshold": threshold, "run_id": run_id}
    url = database_url(settings)
    try:
        migrate(url, echo=echo)  # the table of a warehouse made before it existed
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            if conn.execute("select to_regclass(%s)", (LATEST_TABLE,)).fetchone()[0] is None:
                raise AqiError(
                    f"aqi alerts: no table {LATEST_TABLE}: "
                    "build the warehouse first (aqi dbt build)"
                )
            step = _update(conn, settings, threshold, params, run_id)
    except psycopg.Error as exc:
        raise AqiError(f"aqi alerts: {first_line(exc)}") from exc
    echo(step.line())
    return step


def _update(
    conn: psycopg.Connection,
    settings: Settings,
    threshold: str,
    params: dict[str, Any],
    run_id: str | None,
) -> AlertStep:
    """The episodes' changes in one transaction, then one transaction per notification."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        followed, cleared = _follow(conn, params)
        opened = conn.execute(_OPEN, params).rowcount
    notified, failed = _notify(conn, settings, run_id)
    still_open = conn.execute(
        f"select count(*) from {ALERTS_TABLE} where cleared_at is null"
    ).fetchone()[0]
    return AlertStep(threshold, opened, followed, cleared, notified, still_open, failed)


def open_alerts(settings: Settings) -> list[dict[str, Any]]:
    """The open episodes, worst first."""
    try:
        with psycopg.connect(
            database_url(settings), row_factory=dict_row, connect_timeout=10
        ) as conn:
            return conn.execute(
                f"select * from {ALERTS_TABLE} where cleared_at is null "
                "order by peak_aqi desc, since, location_id, parameter"
            ).fetchall()
    except psycopg.errors.UndefinedTable:
        raise AqiError(
            f"aqi alerts: no table {ALERTS_TABLE} yet: run `aqi aqi-alerts` (or aqi db migrate)"
        ) from None
    except psycopg.Error as exc:
        raise AqiError(f"aqi alerts: {first_line(exc)}") from exc


# --- the steps ----------------------------------------------------------------------------

#: the newest reading with an AQI per pair, with its category's rank (0 Good .. 5 Hazardous)
_READINGS = f"""
    select
        location_id, parameter, location_name, country_code, latitude, longitude, units,
        aqi, aqi_category, measured_at,
        array_position(%(categories)s::text[], aqi_category) - 1 as severity
    from {LATEST_TABLE}
    where aqi is not null and aqi_category is not null
"""
_THRESHOLD = "array_position(%(categories)s::text[], %(threshold)s::text) - 1"

#: open episodes with a newer or corrected reading: at or above the threshold it updates the
#: worst category and the peak, below it clears the episode; returns whether each cleared
_FOLLOW = f"""
    with readings as ({_READINGS})
    update {ALERTS_TABLE} as a set
        peak_aqi = case when r.severity >= {_THRESHOLD}
            then greatest(a.peak_aqi, r.aqi) else a.peak_aqi end,
        category = case
            when r.severity > array_position(%(categories)s::text[], a.category) - 1
                then r.aqi_category else a.category end,
        cleared_at = case when r.severity < {_THRESHOLD}
            then greatest(r.measured_at, a.since) end,
        cleared_run_id = case when r.severity < {_THRESHOLD} then %(run_id)s end,
        last_aqi = r.aqi,
        last_category = r.aqi_category,
        last_measured_at = greatest(a.last_measured_at, r.measured_at),
        updated_at = now()
    from readings as r
    where a.cleared_at is null
      and r.location_id = a.location_id and r.parameter = a.parameter
      and (r.measured_at, r.aqi) is distinct from (a.last_measured_at, a.last_aqi)
      and (r.measured_at >= a.since or r.severity < {_THRESHOLD})
    returning a.cleared_at is not null
"""

#: pairs at or above the threshold without an open episode
_OPEN = f"""
    with readings as ({_READINGS})
    insert into {ALERTS_TABLE} (
        location_id, parameter, location_name, country_code, latitude, longitude, units,
        category, peak_aqi, last_aqi, last_category, since, last_measured_at, opened_run_id
    )
    select
        r.location_id, r.parameter, r.location_name, r.country_code, r.latitude, r.longitude,
        r.units, r.aqi_category, r.aqi, r.aqi, r.aqi_category, r.measured_at, r.measured_at,
        %(run_id)s
    from readings as r
    where r.severity >= {_THRESHOLD}
      and not exists (
          select from {ALERTS_TABLE} as a
          where a.cleared_at is null
            and a.location_id = r.location_id and a.parameter = r.parameter
      )
"""


def _follow(conn: psycopg.Connection, params: dict[str, Any]) -> tuple[int, int]:
    """(episodes followed, episodes cleared) by the pairs' newest readings."""
    outcomes = [cleared for (cleared,) in conn.execute(_FOLLOW, params).fetchall()]
    return outcomes.count(False), outcomes.count(True)


def _notify(conn: psycopg.Connection, settings: Settings, run_id: str | None) -> tuple[int, int]:
    """Send each open, untold episode; mark it told when a channel took it. Returns
    (notified, not sent). One transaction per episode: the rows are locked while their alert
    goes, so two steps never tell the same episode."""
    if not alerts.channels(settings):
        return 0, 0
    notified = failed = 0
    while True:
        with conn.transaction():
            row = conn.cursor(row_factory=dict_row).execute(
                f"select * from {ALERTS_TABLE} where cleared_at is null and notified_at is null "
                "order by since, alert_id limit 1 for update skip locked"
            ).fetchone()
            if row is None:
                return notified, failed
            outcome = alerts.send_alert(settings, _alert(row, run_id))
            if "sent" in outcome.values():
                conn.execute(
                    f"update {ALERTS_TABLE} set notified_at = now() where alert_id = %s",
                    (row["alert_id"],),
                )
                notified += 1
            else:
                # every channel failed: this one and the rest wait for the next run
                untold = conn.execute(
                    f"select count(*) from {ALERTS_TABLE} "
                    "where cleared_at is null and notified_at is null"
                ).fetchone()[0]
                return notified, untold


def _alert(row: dict[str, Any], run_id: str | None) -> alerts.Alert:
    parameter = _PARAMETER_NAMES.get(row["parameter"], row["parameter"])
    where = row["location_name"] or f"location {row['location_id']}"
    if row["country_code"]:
        where = f"{where} ({row['country_code']})"
    since = alerts.iso_utc(row["since"])
    message = (
        f"{row['category']} air: {where}, {parameter} NowCast AQI {row['peak_aqi']} "
        f"since {since}\n\n"
        f"The NowCast AQI of {parameter} at {where} reached {row['peak_aqi']} "
        f"({row['category']}) at {since}; this alert goes once for the episode, which ends "
        f"at the first reading below the threshold (gold.aqi_alerts, alert {row['alert_id']})."
    )
    details = {
        "alert_id": row["alert_id"],
        "location_id": row["location_id"],
        "location_name": row["location_name"],
        "country_code": row["country_code"],
        "latitude": row["latitude"],
        "longitude": row["longitude"],
        "parameter": row["parameter"],
        "category": row["category"],
        "aqi": row["peak_aqi"],
        "since": since,
    }
    return alerts.Alert(
        event="aqi_unhealthy",
        dag_id=alerts.ELT_DAG_ID,
        run_id=run_id,
        task_id=None,
        try_number=None,
        message=message,
        log_url=None,
        at=alerts.iso_utc(datetime.now(UTC)),
        details=details,
    )

