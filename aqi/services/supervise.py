"""Keep a command running: start it again when it dies (the live demo's workers).

Why: a long-running worker can die of what is outside it: a network cut longer than its
retries, PostgreSQL restarted under the stream, the kernel's OOM killer. Nobody watches a
demo's terminal, so the supervisor starts the command again, after 1 s and then twice as
long after every quick death, up to 5 minutes (back to 1 s once a run lasted 10 minutes),
and logs each exit with its code. What a restart cannot fix ends it: exit 0 (the command
finished) and exit 2 (a usage error). SIGTERM/SIGINT stop the command (SIGTERM, SIGKILL
after a grace period), then the supervisor.

The command runs in a process group of its own: a stop reaches the command alone first (so
``aqi stream`` stops Spark itself), then whatever it left behind is killed.

Public surface: :func:`supervise`, :class:`Backoff`.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aqi.services.process import kill_group

__all__ = ["Backoff", "supervise"]

#: exit codes a restart cannot change: done, or a usage error
FINAL_EXIT_CODES = (0, 2)


@dataclass(frozen=True)
class Backoff:
    """How long to wait before a restart: doubling after quick deaths, reset after a long run."""

    first_s: float = 1.0
    max_s: float = 300.0
    healthy_after_s: float = 600.0

    def next(self, previous_s: float | None, ran_s: float) -> float:
        if previous_s is None or ran_s >= self.healthy_after_s:
            return self.first_s
        return min(self.max_s, previous_s * 2)


def supervise(
    argv: Sequence[str],
    *,
    echo: Callable[[str], None] = print,
    backoff: Backoff = Backoff(),
    grace_s: float = 60.0,
    stop: threading.Event | None = None,
) -> int:
    """Run ``argv`` until it ends for good or we are stopped; returns the exit code to use.

    ``stop`` replaces the SIGTERM/SIGINT handlers (for callers not on the main thread).
    """
    if stop is None:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    command = shlex.join(argv)
    delay: float | None = None
    while not stop.is_set():
        started = time.monotonic()
        child = subprocess.Popen(list(argv), process_group=0)
        echo(f"supervise: started {command} (pid {child.pid})")
        code = _wait(child, stop, grace_s)
        ran = time.monotonic() - started
        if stop.is_set():
            echo(f"supervise: stopped {command} ({_describe(code)})")
            return 0
        if code in FINAL_EXIT_CODES:
            echo(f"supervise: {command} ended ({_describe(code)}): not restarted")
            return code
        delay = backoff.next(delay, ran)
        echo(f"supervise: {command} died ({_describe(code)}) after {ran:.0f} s; "
             f"restarting in {delay:g} s")  # fmt: skip
        stop.wait(delay)
    return 0


def _wait(child: subprocess.Popen, stop: threading.Event, grace_s: float) -> int:
    """The child's exit code; on ``stop``, SIGTERM it, SIGKILL after ``grace_s``."""
    try:
        while True:
            try:
                return child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            if stop.is_set():
                child.send_signal(signal.SIGTERM)
                try:
                    return child.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    kill_group(child.pid)
                    return child.wait()
    finally:
        kill_group(child.pid)  # what the command left behind (a JVM whose parent died)


def _describe(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
