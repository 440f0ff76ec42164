"""Progress for long ingestion runs: a live bar on a terminal, plain lines in logs and CI.

Backfills wait minutes on rate limits; a user must see counts, the rate and *why* nothing
moves. On a terminal that is a rich progress bar; elsewhere (Airflow logs, CI, a pipe) one
line every few seconds, since a redrawn bar would flood a log file.

Public surface: :class:`Progress`.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Self, TextIO

__all__ = ["Progress"]


class Progress:
    """Counts units of work (sensors, pages) and events; reports waits as they happen."""

    def __init__(
        self,
        title: str,
        *,
        total: int | None = None,
        unit: str = "sensors",
        stream: TextIO | None = None,
        line_every_s: float = 5.0,
    ) -> None:
        self.title = title
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.line_every_s = line_every_s
        self.done = 0
        self.events = 0
        #: rows read and compressed bytes downloaded (bulk readers); shown once used
        self.rows = 0
        self.bytes = 0
        #: bytes expected in all (enables the ETA by bytes), None if unknown
        self.bytes_total: int | None = None
        self.waits = 0
        self.waited_s = 0.0
        self.status = ""
        self._start = time.monotonic()
        self._last_line = 0.0
        self._bar = None
        self._task = None

    # --- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> Self:
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} " + self.unit),
                TextColumn("{task.fields[events]} events, {task.fields[rate]} ev/s"),
                TextColumn("{task.fields[volume]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=self.total, **self._fields())
        else:
            self._line(force=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.status = "interrupted" if exc_type is not None else "done"
        self._refresh(force=True)
        if self._bar is not None:
            self._bar.stop()

    # --- updates ------------------------------------------------------------------------
    def add_events(self, count: int) -> None:
        self.events += count
        self.status = ""
        self._refresh()

    def add_rows(self, count: int) -> None:
        """Rows read (shown beside the events once non-zero)."""
        self.rows += count
        self._refresh()

    def add_bytes(self, count: int) -> None:
        """Bytes downloaded: shown in MB with their rate, and an ETA against ``bytes_total``."""
        self.bytes += count
        self._refresh()

    def advance(self, units: int = 1) -> None:
        self.done += units
        self._refresh()

    def note(self, status: str) -> None:
        """A one-off message (which sensor, which window) shown beside the counts."""
        self.status = status
        self._refresh()

    def wait(self, seconds: float, reason: str) -> None:
        """Called before a rate-limit or retry pause: shown at once, counted in the summary."""
        self.waits += 1
        self.waited_s += seconds
        self.status = f"waiting {seconds:.0f} s: {reason}"
        self._refresh(force=True)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return self.events / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far: by bytes when ``bytes_total`` is known, else by
        units of work against ``total``; None before anything is done."""
        elapsed = time.monotonic() - self._start
        if self.bytes_total and self.bytes > 0:
            return elapsed * max(0, self.bytes_total - self.bytes) / self.bytes
        if self.total and self.done > 0:
            return elapsed * max(0, self.total - self.done) / self.done
        return None

    def summary(self) -> str:
        elapsed = time.monotonic() - self._start
        waits = f", {self.waits} waits ({self.waited_s:.0f} s)" if self.waits else ""
        volume = ""
        if self.bytes:
            volume = f", {self.bytes / 1e6:.1f} MB ({self.bytes / 1e6 / max(elapsed, 1e-9):.1f} MB/s)"
        return f"{self.events} events in {elapsed:.1f} s ({self.rate:.0f} ev/s){volume}{waits}"

    # --- internals ------------------------------------------------------------------------
    def _fields(self) -> dict:
        return {"events": self.events, "rate": f"{self.rate:.0f}", "status": self.status,
                "volume": self._volume()}  # fmt: skip

    def _volume(self) -> str:
        """Rows, MB, MB/s and the ETA once rows or bytes are counted; else nothing."""
        if not (self.rows or self.bytes or self.bytes_total):
            return ""
        elapsed = time.monotonic() - self._start
        parts = [f"{self.rows} rows"] if self.rows else []
        total = f"/{self.bytes_total / 1e6:.1f}" if self.bytes_total else ""
        parts.append(f"{self.bytes / 1e6:.1f}{total} MB, "
                     f"{self.bytes / 1e6 / max(elapsed, 1e-9):.1f} MB/s")  # fmt: skip
        eta = self.eta_s
        if eta is not None and self.status != "done":
            parts.append(f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        return ", ".join(parts)

    def _refresh(self, force: bool = False) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.done, total=self.total, **self._fields())
        else:
            self._line(force)

    def _line(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_line < self.line_every_s:
            return
        self._last_line = now
        total = f"/{self.total}" if self.total is not None else ""
        status = f" | {self.status}" if self.status else ""
        volume = self._volume()
        volume = f", {volume}" if volume else ""
        print(
            f"{self.title}: {self.done}{total} {self.unit}, {self.events} events, "
            f"{self.rate:.0f} ev/s{volume}{status}",
            file=self.stream,
            flush=True,
        )
