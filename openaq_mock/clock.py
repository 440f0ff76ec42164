"""A virtual clock: simulate a day of polling in seconds of real time.

Pass ``clock.time`` and ``clock.sleep`` wherever the code under test takes a clock and a
sleep (the mock server's ``clock=``, :class:`ingestion.rate_limit.RateLimiter`'s ``clock=``
and ``sleep=``): a ``sleep(60)`` then returns at once with the clock 60 s later, so rate
limits, windows and publication delays play out as they would in real time.

Public surface: :class:`VirtualClock`.
"""

from __future__ import annotations

import math
import threading
import time as _time

__all__ = ["VirtualClock"]


class VirtualClock:
    """Epoch seconds that move only when someone sleeps (or calls :meth:`advance`).

    Thread-safe: a server thread may read it while a client thread sleeps. Every ``sleep``
    gives other threads a chance to run (``time.sleep(0)``), so a simulation in which one
    thread waits for another does not spin with the GIL held.
    """

    def __init__(self, start: float) -> None:
        if not math.isfinite(start):
            raise ValueError("start must be a finite number of epoch seconds")
        self._now = float(start)
        self._lock = threading.Lock()
        #: seconds slept through :meth:`sleep`, in order (advances are not listed)
        self.slept: list[float] = []

    def time(self) -> float:
        """The current virtual time, epoch seconds (a drop-in for ``time.time``)."""
        with self._lock:
            return self._now

    __call__ = time

    def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` and return at once (a drop-in for ``time.sleep``).

        Negative or non-finite values are refused, as ``time.sleep`` refuses them.
        """
        seconds = float(seconds)
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError("sleep length must be a finite non-negative number")
        with self._lock:
            self._now += seconds
            self.slept.append(seconds)
        _time.sleep(0)

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (not recorded as a sleep); returns the time."""
        seconds = float(seconds)
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError("a virtual clock only moves forward")
        with self._lock:
            self._now += seconds
            return self._now

    def __repr__(self) -> str:
        return f"VirtualClock({self.time()!r})"
