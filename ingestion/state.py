"""Durable ingestion state under ``AQ_HOME/state/ingestion.sqlite``.

What must survive a crash or a restart:

- the period end of the newest live reading sent per sensor (and the sensor's period length
  learned from the spacing of its readings), so that ``aqi collect`` never sends a reading
  twice; it moves only after Kafka acknowledged the reading. One row per sensor, and a
  sensor not seen for :data:`LIVE_SENSOR_TTL` is forgotten, so the state stays bounded
  however long the collector runs (the table of every reading ever sent that it replaces
  grew by a row per reading);
- how far each sensor of a backfill job got (the period end of the last acknowledged page),
  so that a rerun continues where the crash left it, re-sending at most the page in flight;
- which archive files a backfill read to the end (with their ETag and size);
- the figures of the collector's last cycles (``collect_cycles``, kept 30 days).

SQLite (standard library, WAL journal, one transaction per acknowledged batch) gives that
atomically; it is safe for the collector and a backfill to use it at the same time.

Public surface: :class:`IngestionState`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingestion.events import format_utc, parse_utc

__all__ = ["LIVE_SENSOR_TTL", "IngestionState", "LiveSensor", "backfill_job_id"]

#: a sensor whose latest reading was not seen for this long is forgotten by the collector
LIVE_SENSOR_TTL = timedelta(days=30)

_SCHEMA = """
create table if not exists live_sensors (
    sensor_id integer primary key,
    last_end text not null,
    interval_s integer,
    seen_at text not null
);
create table if not exists collect_cycles (
    started_at text not null,
    scope text not null,
    strategy text not null,
    requests integer not null,
    readings integer not null,
    new integer not null,
    already_sent integer not null,
    failed integer not null,
    malformed integer not null,
    lag_p50_s real,
    lag_max_s real,
    duration_s real not null,
    interval_s real not null
);
create table if not exists backfill_progress (
    job_id text not null,
    sensor_id integer not null,
    location_id integer not null,
    done_until text,
    finished integer not null default 0,
    events_sent integer not null default 0,
    primary key (job_id, sensor_id)
);
create table if not exists backfill_jobs (
    job_id text primary key,
    spec text not null,
    created_at text not null default (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
create table if not exists archive_files (
    job_id text not null,
    key text not null,
    etag text not null,
    size integer not null,
    rows_sent integer not null,
    read_at text not null default (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    primary key (job_id, key)
) without rowid;
"""


def backfill_job_id(location_ids: Iterable[int], since: datetime, until: datetime) -> str:
    """Same arguments -> same job, so a rerun resumes instead of starting over."""
    spec = f"{sorted(set(location_ids))}|{format_utc(since)}|{format_utc(until)}"
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LiveSensor:
    """What the collector remembers of a sensor: its newest sent period end, its period."""

    last_end: datetime
    #: the sensor's period length in seconds, once two successive readings showed it
    interval_s: int | None = None


class IngestionState:
    """A connection to the state database (one per process)."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "ingestion.sqlite"
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")
        self._db.executescript(_SCHEMA)
        self._upgrade()

    def close(self) -> None:
        self._db.close()

    # --- live readings: one watermark per sensor ------------------------------------------
    def live_sensors(self) -> dict[int, LiveSensor]:
        """Every remembered sensor (loaded once per collector run; at world scale ~10^5 rows)."""
        rows = self._db.execute("select sensor_id, last_end, interval_s from live_sensors")
        return {int(s): LiveSensor(parse_utc(end), i) for s, end, i in rows}

    def record_live(self, sensors: dict[int, LiveSensor], seen_at: datetime) -> None:
        """Store the watermarks of sensors whose readings Kafka acknowledged."""
        if not sensors:
            return
        seen = format_utc(seen_at)
        with self._transaction():
            self._db.executemany(
                "insert into live_sensors (sensor_id, last_end, interval_s, seen_at) "
                "values (?, ?, ?, ?) on conflict (sensor_id) do update set "
                "last_end = max(live_sensors.last_end, excluded.last_end), "
                "interval_s = coalesce(excluded.interval_s, live_sensors.interval_s), "
                "seen_at = excluded.seen_at",
                [(sid, format_utc(s.last_end), s.interval_s, seen) for sid, s in sensors.items()],
            )

    def forget_live(self, now: datetime, ttl: timedelta = LIVE_SENSOR_TTL) -> list[int]:
        """Forget sensors not seen since ``now - ttl``; returns their ids."""
        cutoff = format_utc(now - ttl)
        with self._transaction():
            gone = [
                int(row[0])
                for row in self._db.execute(
                    "select sensor_id from live_sensors where seen_at < ?", (cutoff,)
                )
            ]
            self._db.execute("delete from live_sensors where seen_at < ?", (cutoff,))
        return gone

    def record_cycle(self, figures: dict[str, object], keep: timedelta = timedelta(days=30)) -> None:
        """Append one collector cycle's figures (and drop those older than ``keep``)."""
        columns = ", ".join(figures)
        marks = ", ".join("?" * len(figures))
        started = figures["started_at"]
        cutoff = format_utc(parse_utc(str(started)) - keep)
        with self._transaction():
            self._db.execute(
                f"insert into collect_cycles ({columns}) values ({marks})", list(figures.values())
            )
            self._db.execute("delete from collect_cycles where started_at < ?", (cutoff,))

    def cycles(self, limit: int = 100) -> list[dict[str, object]]:
        """The newest cycles' figures, newest first."""
        cursor = self._db.execute(
            "select * from collect_cycles order by started_at desc limit ?", (limit,)
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def _upgrade(self) -> None:
        """Carry an older state's per-reading table over as one watermark per sensor."""
        old = {r[0] for r in self._db.execute("select name from sqlite_master")}
        if "sent_readings" not in old:
            return
        with self._transaction():
            intervals = (
                dict(self._db.execute("select sensor_id, seconds from sensor_intervals"))
                if "sensor_intervals" in old
                else {}
            )
            now = format_utc(datetime.now(UTC))
            for sensor_id, last_end in self._db.execute(
                "select sensor_id, max(period_end) from sent_readings group by sensor_id"
            ).fetchall():
                self._db.execute(
                    "insert or ignore into live_sensors values (?, ?, ?, ?)",
                    (sensor_id, last_end, intervals.get(sensor_id), now),
                )
            self._db.execute("drop table sent_readings")
            self._db.execute("drop table if exists sensor_intervals")

    # --- backfill -------------------------------------------------------------------------
    def start_job(self, job_id: str, spec: dict) -> bool:
        """Register a job; False when it existed already (a resume)."""
        cursor = self._db.execute(
            "insert or ignore into backfill_jobs (job_id, spec) values (?, ?)",
            (job_id, json.dumps(spec, sort_keys=True)),
        )
        return cursor.rowcount == 1

    def progress(self, job_id: str, sensor_id: int) -> tuple[datetime | None, bool, int]:
        """(done until, finished, events sent) of one sensor in a job."""
        row = self._db.execute(
            "select done_until, finished, events_sent from backfill_progress "
            "where job_id = ? and sensor_id = ?",
            (job_id, sensor_id),
        ).fetchone()
        if row is None:
            return None, False, 0
        return (parse_utc(row[0]) if row[0] else None), bool(row[1]), int(row[2])

    def advance(
        self,
        job_id: str,
        sensor_id: int,
        location_id: int,
        *,
        done_until: datetime | None,
        events: int,
        finished: bool = False,
    ) -> None:
        """Record an acknowledged page: everything up to ``done_until`` is on Kafka."""
        with self._transaction():
            self._db.execute(
                """
                insert into backfill_progress
                    (job_id, sensor_id, location_id, done_until, finished, events_sent)
                values (?, ?, ?, ?, ?, ?)
                on conflict (job_id, sensor_id) do update set
                    done_until = coalesce(excluded.done_until, backfill_progress.done_until),
                    finished = excluded.finished,
                    events_sent = backfill_progress.events_sent + excluded.events_sent
                """,
                (
                    job_id,
                    sensor_id,
                    location_id,
                    format_utc(done_until) if done_until else None,
                    int(finished),
                    events,
                ),
            )

    # --- archive backfill (one row per file read to the end and acknowledged by Kafka) -------
    def archive_files_read(self, job_id: str) -> dict[str, tuple[str, int]]:
        """``{key: (etag, size)}`` of the files a job has read completely."""
        rows = self._db.execute(
            "select key, etag, size from archive_files where job_id = ?", (job_id,)
        ).fetchall()
        return {key: (etag, int(size)) for key, etag, size in rows}

    def mark_archive_file(self, job_id: str, key: str, etag: str, size: int, rows: int) -> None:
        """Record a file whose every event Kafka acknowledged (a later version replaces it)."""
        with self._transaction():
            self._db.execute(
                "insert into archive_files (job_id, key, etag, size, rows_sent) "
                "values (?, ?, ?, ?, ?) on conflict (job_id, key) do update set "
                "etag = excluded.etag, size = excluded.size, rows_sent = excluded.rows_sent, "
                "read_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')",
                (job_id, key, etag, size, rows),
            )

    def _transaction(self):
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("begin immediate")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("commit" if exc_type is None else "rollback")
