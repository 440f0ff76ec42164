"""Durable ingestion state under ``AQ_HOME/state/ingestion.sqlite``.

Two things must survive a crash or a restart:

- which live readings were already sent (sensor id + period end), so that ``aqi collect``
  never sends one twice; a reading is recorded only after Kafka acknowledged it;
- how far each sensor of a backfill job got (the period end of the last acknowledged page),
  so that a rerun continues where the crash left it, re-sending at most the page in flight.

SQLite (standard library, WAL journal, one transaction per acknowledged batch) gives that
atomically; it is safe for the collector and a backfill to use it at the same time.

Public surface: :class:`IngestionState`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from ingestion.events import format_utc, parse_utc

__all__ = ["IngestionState", "backfill_job_id"]

_SCHEMA = """
create table if not exists sent_readings (
    sensor_id integer not null,
    period_end text not null,
    sent_at text not null default (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    primary key (sensor_id, period_end)
) without rowid;
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
create table if not exists sensor_intervals (
    sensor_id integer primary key,
    seconds integer not null
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


class IngestionState:
    """A connection to the state database (one per process)."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "ingestion.sqlite"
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- live readings ------------------------------------------------------------------
    def unsent(self, keys: Iterable[tuple[int, str]]) -> set[tuple[int, str]]:
        """The (sensor id, period end) pairs among ``keys`` that were never sent."""
        keys = set(keys)
        if not keys:
            return set()
        found = set()
        rows = list(keys)
        for start in range(0, len(rows), 400):
            chunk = rows[start : start + 400]
            clause = " or ".join(["(sensor_id = ? and period_end = ?)"] * len(chunk))
            params = [v for key in chunk for v in key]
            found.update(
                self._db.execute(
                    f"select sensor_id, period_end from sent_readings where {clause}", params
                ).fetchall()
            )
        return keys - found

    def mark_sent(self, keys: Iterable[tuple[int, str]]) -> None:
        with self._transaction():
            self._db.executemany(
                "insert or ignore into sent_readings (sensor_id, period_end) values (?, ?)",
                list(keys),
            )

    # --- sensor intervals (learned once, for /latest readings) ---------------------------
    def sensor_interval(self, sensor_id: int) -> int | None:
        row = self._db.execute(
            "select seconds from sensor_intervals where sensor_id = ?", (sensor_id,)
        ).fetchone()
        return int(row[0]) if row else None

    def set_sensor_interval(self, sensor_id: int, seconds: int) -> None:
        self._db.execute(
            "insert into sensor_intervals values (?, ?) "
            "on conflict (sensor_id) do update set seconds = excluded.seconds",
            (sensor_id, seconds),
        )

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
