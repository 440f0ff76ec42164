"""Backfill windows and the durable ingestion state (SQLite), without network."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingestion.backfill import MAX_WINDOW, year_windows
from ingestion.state import IngestionState, LiveSensor, backfill_job_id

pytestmark = pytest.mark.unit

T0 = datetime(2020, 1, 1, tzinfo=UTC)


def test_year_windows_cover_the_range_without_gaps_or_overlap() -> None:
    until = T0 + timedelta(days=1000, hours=5)
    windows = list(year_windows(T0, until))
    assert windows[0][0] == T0 and windows[-1][1] == until
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    assert all(end - start <= MAX_WINDOW for start, end in windows)
    assert len(windows) == 3
    assert list(year_windows(T0, T0)) == []


def test_live_watermarks_survive_a_new_connection_and_only_move_forward(tmp_path: Path) -> None:
    state = IngestionState(tmp_path)
    assert state.live_sensors() == {}
    state.record_live({1: LiveSensor(T0 + timedelta(hours=2), None)}, T0)
    state.record_live({1: LiveSensor(T0 + timedelta(hours=1), 3600)}, T0)  # late: end kept
    state.close()
    assert IngestionState(tmp_path).live_sensors() == {1: LiveSensor(T0 + timedelta(hours=2), 3600)}


def test_backfill_progress_accumulates_and_resumes(tmp_path: Path) -> None:
    state = IngestionState(tmp_path)
    job = backfill_job_id([17, 2178, 17], T0, T0 + timedelta(days=10))
    assert job == backfill_job_id([2178, 17], T0, T0 + timedelta(days=10))
    assert job != backfill_job_id([2178], T0, T0 + timedelta(days=10))
    assert state.start_job(job, {"x": 1}) is True
    assert state.start_job(job, {"x": 1}) is False
    assert state.progress(job, 5) == (None, False, 0)
    state.advance(job, 5, 17, done_until=T0 + timedelta(hours=1000), events=1000)
    state.advance(job, 5, 17, done_until=T0 + timedelta(hours=2000), events=1000)
    state.close()
    resumed = IngestionState(tmp_path)
    assert resumed.progress(job, 5) == (T0 + timedelta(hours=2000), False, 2000)
    resumed.advance(job, 5, 17, done_until=None, events=0, finished=True)
    assert resumed.progress(job, 5) == (T0 + timedelta(hours=2000), True, 2000)


def test_archive_files_are_remembered_per_job_and_replaced_by_a_new_version(
    tmp_path: Path,
) -> None:
    state = IngestionState(tmp_path)
    assert state.archive_files_read("job") == {}
    state.mark_archive_file("job", "records/a.csv.gz", '"e1"', 100, 14)
    state.mark_archive_file("other", "records/b.csv.gz", '"e2"', 50, 3)
    again = IngestionState(tmp_path)
    assert again.archive_files_read("job") == {"records/a.csv.gz": ('"e1"', 100)}
    again.mark_archive_file("job", "records/a.csv.gz", '"e3"', 120, 16)
    assert again.archive_files_read("job") == {"records/a.csv.gz": ('"e3"', 120)}
