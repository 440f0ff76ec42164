"""The shared request budget, on a fake clock: never more than the caps in any window."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FakeClock

from ingestion.rate_limit import MAX_PAUSE_S, RateLimiter

pytestmark = pytest.mark.unit


def _max_in_window(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _limiter(tmp_path: Path, clock: FakeClock, **kw) -> RateLimiter:
    return RateLimiter(tmp_path, "https://api|key", clock=clock, sleep=clock.sleep, **kw)


def test_never_more_than_60_in_any_minute_nor_2000_in_any_hour(tmp_path: Path) -> None:
    clock = FakeClock()
    limiter = _limiter(tmp_path, clock, per_minute=60, per_hour=2000)
    sent = []
    for i in range(2300):
        limiter.acquire()
        sent.append(clock.now)
        clock.now += 0.05 if i % 7 else 0.9  # bursts
    assert _max_in_window(sent, 60.0) == 60
    assert _max_in_window(sent, 3600.0) == 2000
    assert clock.slept, "the limiter must have made the caller wait"


def test_budget_is_shared_between_processes_and_restarts(tmp_path: Path) -> None:
    clock = FakeClock()
    first = _limiter(tmp_path, clock, per_minute=10)
    for _ in range(10):
        first.acquire()
    # a second limiter on the same file (another process, or a rerun after a crash)
    second = _limiter(tmp_path, clock, per_minute=10)
    waited = second.acquire()
    assert waited == pytest.approx(60.0, abs=0.05)
    other_key = RateLimiter(
        tmp_path, "https://api|other", clock=clock, sleep=clock.sleep, per_minute=10
    )
    assert other_key.acquire() == 0.0


def test_pause_is_honoured_by_everyone(tmp_path: Path) -> None:
    clock = FakeClock()
    a, b = _limiter(tmp_path, clock), _limiter(tmp_path, clock)
    a.pause_for(7.5)
    start = clock.now
    b.acquire()
    assert clock.now - start >= 7.5
    waits = []
    c = RateLimiter(
        tmp_path, "https://api|key", clock=clock, sleep=clock.sleep,
        on_wait=lambda s, why: waits.append((s, why)),
    )  # fmt: skip
    c.pause_for(3)
    c.acquire()
    assert waits and "reset" in waits[0][1]


def test_key_is_not_in_the_state_file_name_or_content(tmp_path: Path) -> None:
    clock = FakeClock()
    limiter = RateLimiter(tmp_path, "https://api|super-secret-key", clock=clock, sleep=clock.sleep)
    limiter.acquire()
    files = list(tmp_path.iterdir())
    assert files
    for file in files:
        assert "super-secret-key" not in file.name
        assert "super-secret-key" not in file.read_text()


@pytest.mark.parametrize("seconds", [1e12, float("inf")])
def test_no_pause_is_longer_than_an_hour(tmp_path: Path, seconds: float) -> None:
    clock = FakeClock()
    limiter = _limiter(tmp_path, clock)
    limiter.pause_for(seconds)
    start = clock.now
    limiter.acquire()
    assert clock.now - start == pytest.approx(MAX_PAUSE_S) and MAX_PAUSE_S == 3600


@pytest.mark.parametrize("blocked_until", ["1e300", "NaN"])
def test_a_state_file_blocking_for_ever_is_capped(tmp_path: Path, blocked_until: str) -> None:
    clock = FakeClock()
    limiter = _limiter(tmp_path, clock)
    limiter.path.write_text(f'{{"sent": [], "blocked_until": {blocked_until}}}')
    start = clock.now
    limiter.acquire()
    assert clock.now - start == pytest.approx(MAX_PAUSE_S)


def test_a_role_takes_only_its_share_and_leaves_the_rest_to_others(tmp_path: Path) -> None:
    """The collector (share 0.5) never takes more than half of either window, across
    restarts; a backfill on the same key can still use the rest at once."""
    clock = FakeClock()
    sent = []
    for _restart in range(3):  # the collector restarting keeps its count (same file)
        collector = _limiter(tmp_path, clock, per_minute=60, per_hour=2000,
                             role="collect", share=0.5)  # fmt: skip
        for _ in range(400):
            collector.acquire()
            sent.append(clock.now)
            clock.now += 0.01
    assert _max_in_window(sent, 60.0) == 30
    assert _max_in_window(sent, 3600.0) == 1000
    backfill = _limiter(tmp_path, clock, per_minute=60, per_hour=2000)
    slept = len(clock.slept)
    for _ in range(30):
        backfill.acquire()
    assert len(clock.slept) == slept, "the other half of the minute was free"
    with pytest.raises(ValueError):
        _limiter(tmp_path, clock, role="collect", share=0)
