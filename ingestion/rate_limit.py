"""A request budget shared by every process that talks to OpenAQ with the same key.

OpenAQ's free tier allows 60 requests a minute and 2,000 an hour, per key. The collector
and a backfill may run at the same time, and a crashed backfill may be rerun at once, so the
budget cannot live in one process's memory: the timestamps of the last hour's requests and
any server-imposed pause ("wait until the window resets") are kept in a small JSON file
under ``AQ_HOME/state``, read and updated under an exclusive ``flock``. A request is sent
only when fewer than ``per_minute`` requests were sent in the past 60 s and fewer than
``per_hour`` in the past hour (sliding windows, stricter than the server's fixed windows),
and never before a pause set after a 429 has passed. A process may also take a *share* of the
budget under a role (``role="collect", share=0.5``): its requests under that role are then
capped at that share of both windows, counted in the same file, so the live collector leaves
the rest of the key's budget to backfills whatever it does and however often it restarts.
A pause is at most :data:`MAX_PAUSE_S`
(OpenAQ's longest window is an hour): an absurd reset from a server, or a state file edited by
hand, cannot stop every process on the key for longer.

Public surface: :class:`RateLimiter`, :data:`MAX_PAUSE_S`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["MAX_PAUSE_S", "RateLimiter"]

MINUTE = 60.0
HOUR = 3600.0
#: the longest pause any answer can impose (OpenAQ's longest rate-limit window)
MAX_PAUSE_S = HOUR


class RateLimiter:
    """Cross-process sliding-window limiter (wall-clock seconds, so it survives restarts)."""

    def __init__(
        self,
        state_dir: Path,
        identity: str,
        *,
        per_minute: int = 60,
        per_hour: int = 2000,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Callable[[float, str], None] | None = None,
        role: str | None = None,
        share: float = 1.0,
    ) -> None:
        """``identity`` (e.g. base URL + key) is hashed into the file name; never stored.

        With a ``role``, this limiter's requests are also capped at ``share`` of each window.
        """
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        self.path = state_dir / f"openaq-ratelimit-{digest}.json"
        self.per_minute = per_minute
        self.per_hour = per_hour
        self.role = role
        self.share = share
        #: this limiter's caps per minute and per hour (the whole budget without a role)
        self.own_per_minute = max(1, int(per_minute * share)) if role else per_minute
        self.own_per_hour = max(1, int(per_hour * share)) if role else per_hour
        self._clock = clock
        self._sleep = sleep
        self._on_wait = on_wait

    def acquire(self) -> float:
        """Block until a request may be sent, and record it. Returns the seconds waited."""
        waited = 0.0
        while True:
            with self._locked() as state:
                now = self._clock()
                delay, reason = self._delay(state, now)
                if delay <= 0:
                    state["sent"].append(now)
                    if self.role:
                        state["roles"][self.role].append(now)
                    return waited
            if self._on_wait is not None:
                self._on_wait(delay, reason)
            self._sleep(delay)
            waited += delay

    def pause_until(self, wall_time: float) -> None:
        """Send nothing before ``wall_time`` (after a 429, a 403, or remaining == 0)."""
        with self._locked() as state:
            wall_time = min(wall_time, self._clock() + MAX_PAUSE_S)
            state["blocked_until"] = max(float(state.get("blocked_until", 0.0)), wall_time)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._clock() + seconds)

    def recent(self, window: float = MINUTE) -> int:
        """How many requests were sent in the last ``window`` seconds (for progress output)."""
        with self._locked() as state:
            now = self._clock()
            return sum(1 for t in state["sent"] if now - t < window)

    # --- internals -------------------------------------------------------------------
    def _delay(self, state: dict, now: float) -> tuple[float, str]:
        sent: list[float] = state["sent"]
        blocked = float(state.get("blocked_until", 0.0)) - now
        if not blocked <= MAX_PAUSE_S:  # NaN or further than any pause we set: capped
            blocked = MAX_PAUSE_S
            state["blocked_until"] = now + MAX_PAUSE_S
        if blocked > 0:
            return blocked, "the API asked to wait for its rate-limit window to reset"
        last_minute = [t for t in sent if now - t < MINUTE]
        if len(last_minute) >= self.per_minute:
            oldest = last_minute[-self.per_minute]
            return oldest + MINUTE - now + 0.01, f"{self.per_minute} requests/minute budget"
        if len(sent) >= self.per_hour:
            oldest = sent[-self.per_hour]
            return oldest + HOUR - now + 0.01, f"{self.per_hour} requests/hour budget"
        if self.role:
            roles = state.setdefault("roles", {})
            own = roles[self.role] = sorted(t for t in roles.get(self.role, []) if now - t < HOUR)
            own_minute = [t for t in own if now - t < MINUTE]
            if len(own_minute) >= self.own_per_minute:
                oldest = own_minute[-self.own_per_minute]
                return oldest + MINUTE - now + 0.01, (
                    f"{self.role}'s share: {self.own_per_minute} requests/minute"
                )
            if len(own) >= self.own_per_hour:
                oldest = own[-self.own_per_hour]
                return oldest + HOUR - now + 0.01, (
                    f"{self.role}'s share: {self.own_per_hour} requests/hour"
                )
        return 0.0, ""

    def _locked(self):
        return _LockedState(self.path, self._clock)


class _LockedState:
    """Context manager: flock the state file, yield its dict, write it back on success."""

    def __init__(self, path: Path, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock

    def __enter__(self) -> dict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        raw = b""
        while chunk := os.read(self.fd, 65536):
            raw += chunk
        try:
            state = json.loads(raw) if raw else {}
        except ValueError:
            state = {}  # a torn write cannot happen under the lock; tolerate manual edits
        now = self.clock()
        state["sent"] = sorted(t for t in state.get("sent", []) if now - t < HOUR)
        self.state = state
        return state

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                data = json.dumps(self.state).encode()
                os.lseek(self.fd, 0, os.SEEK_SET)
                os.ftruncate(self.fd, 0)
                os.write(self.fd, data)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
