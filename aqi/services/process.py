"""Daemon processes owned by the project: start, identify, stop.

Why not plain pid files: after a ``kill -9`` (or a reboot) a pid file outlives its process
and the pid may be reused by something else. A :class:`PidFile` therefore records when the
process started next to the pid, and a process counts as ours only when both match. The start
is kept as seconds after the machine booted (the kernel's own count, which ``psutil``'s
``create_time`` adds to the boot time), not as a wall-clock time: when the clock is stepped
(NTP, a virtual machine resumed, a laptop woken) every process's wall-clock start moves with
it, and a running daemon would no longer be recognised (its port "in use by another
program"). ``down`` signals only processes that match; ``up`` treats anything else as stale and
removes it, after killing what is left of the dead daemon's process group
(:func:`kill_leftovers`: the workers of a gunicorn or an Airflow scheduler killed with -9
would otherwise hold its port and its memory).

Every embedded service (PostgreSQL, Kafka, Airflow, Superset, the demo's workers) is
supervised with these pieces and no other: :func:`spawn_daemon` starts it in its own session
with its log, :class:`PidFile` records it with its start time, :func:`wait_until` waits for
its health condition with a deadline, and :func:`stop_daemons` stops it (each
:class:`Daemon` with its own signal, patience and process group). What differs between the
services (their configuration, their readiness check) stays in their modules.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from aqi.core.errors import ServiceError

__all__ = [
    "Daemon",
    "PidFile",
    "ProcessRecord",
    "as_user",
    "group_members",
    "kill_group",
    "kill_leftovers",
    "port_is_open",
    "spawn_daemon",
    "stop_daemons",
    "stop_process",
    "wait_until",
]


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file remembers about a process we started: ``started_after_boot`` is its
    start in seconds after the machine booted, which no clock change moves."""

    pid: int
    started_after_boot: float
    command: str
    address: str

    @property
    def start_time(self) -> float:
        """The start as seconds since the epoch, by today's clock (for display)."""
        return psutil.boot_time() + self.started_after_boot

    def is_alive(self) -> bool:
        """True when this exact process (pid and start time) still runs and is not a zombie."""
        started = _started_after_boot(self.pid)
        return started is not None and abs(started - self.started_after_boot) < _SAME_START_S


class PidFile:
    """A JSON pid file under ``AQ_HOME/run``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> ProcessRecord | None:
        try:
            data = json.loads(self.path.read_text())
            if "started_after_boot" in data:
                started = float(data["started_after_boot"])
            elif "start_time" in data:  # wall-clock start (2026-12-05 .. 06): true if no step since
                started = float(data["start_time"]) - psutil.boot_time()
            else:  # written before psutil: clock ticks since boot, as /proc/PID/stat has it
                started = int(data["start_ticks"]) / _CLOCK_TICKS
            return ProcessRecord(
                pid=int(data["pid"]),
                started_after_boot=started,
                command=str(data["command"]),
                address=str(data.get("address", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def live(self) -> ProcessRecord | None:
        """The recorded process if it is still running, else ``None`` (and the file is stale)."""
        record = self.read()
        return record if record is not None and record.is_alive() else None

    def write(self, pid: int, command: str, address: str) -> ProcessRecord:
        started = _started_after_boot(pid)
        if started is None:
            raise RuntimeError(f"process {pid} exited right after it was started")
        record = ProcessRecord(pid, started, command, address)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**record.__dict__, "start_time": record.start_time}))
        os.replace(tmp, self.path)
        return record

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def spawn_daemon(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: tuple[int, int] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached from our session (it outlives ``aqi``), output appended to a log.

    ``user`` = (uid, gid) drops privileges in the child (PostgreSQL refuses to run as root).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            **as_user(user),
        )
    finally:
        log.close()


def as_user(user: tuple[int, int] | None) -> dict:
    """subprocess keyword arguments that run the child as (uid, gid) with no extra groups."""
    if user is None:
        return {}
    return {"user": user[0], "group": user[1], "extra_groups": []}


def stop_process(
    record: ProcessRecord, *, sig: int = signal.SIGTERM, timeout: float = 30, group: bool = False
) -> bool:
    """Signal our process and wait for it to go; SIGKILL after ``timeout``. True if it stopped.

    ``group``: signal its whole process group (a daemon started by :func:`spawn_daemon` leads
    its own), for programs whose workers would otherwise outlive them (Airflow's).
    """
    if not record.is_alive():
        if group:
            _signal(record.pid, signal.SIGKILL, group=True)
        return True
    _signal(record.pid, sig, group=group)
    if wait_until(lambda: not record.is_alive(), timeout=timeout, reap=record.pid):
        if group:
            _signal(record.pid, signal.SIGKILL, group=True)  # stragglers of the group
        return True
    _signal(record.pid, signal.SIGKILL, group=group)
    return wait_until(lambda: not record.is_alive(), timeout=10, reap=record.pid)


@dataclass(frozen=True)
class Daemon:
    """One process a service started and must stop: how messages name it (``label``, empty for
    a service of one process), its pid file, and how it stops: the signal it shuts down
    cleanly on, how long that may take, whether its whole process group goes with it."""

    label: str
    pidfile: PidFile
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 30
    group: bool = False


def stop_daemons(
    service: str,
    daemons: Sequence[Daemon],
    echo: Callable[[str], None],
    *,
    together: bool = False,
) -> None:
    """How every embedded service stops: each live daemon in the given order (``together``:
    all signalled first, then awaited, for a cluster that cannot shut down one node at a time
    without quorum), stale pid files removed; ServiceError naming those that did not stop."""
    running = []
    for daemon in daemons:
        record = daemon.pidfile.live()
        if record is None:
            daemon.pidfile.remove()
        else:
            running.append((daemon, record))
    if not running:
        echo(f"{service}: not running")
        return

    def named(daemon: Daemon, pid: int) -> str:
        return f"{daemon.label} (pid {pid})" if daemon.label else f"pid {pid}"

    if together:
        for daemon, record in running:
            echo(f"{service}: stopping {named(daemon, record.pid)} ...")
            _signal(record.pid, daemon.stop_signal, group=daemon.group)
    failed = []
    for daemon, record in running:
        if not together:
            echo(f"{service}: stopping {named(daemon, record.pid)} ...")
        stopped = stop_process(
            record, sig=daemon.stop_signal, timeout=daemon.stop_timeout, group=daemon.group
        )
        if stopped:
            daemon.pidfile.remove()
        else:
            failed.append(named(daemon, record.pid))
    if failed:
        raise ServiceError(f"{service}: {', '.join(failed)} did not stop")
    echo(f"{service}: stopped")


def kill_group(pgid: int) -> None:
    """SIGKILL every process of group ``pgid`` (none left is fine)."""
    _signal(pgid, signal.SIGKILL, group=True)


def _signal(pid: int, sig: int, *, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.1, reap: int | None = None
) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass.

    ``reap`` names a child pid to collect while waiting, so a child we started and stopped in
    this same process does not linger as a zombie.
    """
    deadline = time.monotonic() + timeout
    while True:
        if reap is not None:
            try:
                os.waitpid(reap, os.WNOHANG)
            except ChildProcessError:
                pass
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def kill_leftovers(
    pidfile: PidFile, *, port: int | None = None, host: str = "127.0.0.1", timeout: float = 15
) -> int:
    """SIGKILL what is left of a dead daemon's process group; how many processes that was.

    A daemon started by :func:`spawn_daemon` leads its own process group, so the group id is
    the recorded pid (a live daemon is left alone).
    ``port``: the daemon's port, waited for until nothing accepts on it any more (the kernel
    may close a killed worker's listening socket a moment after the process is gone).
    """
    record = pidfile.read()
    if record is None or record.is_alive():
        return 0
    members = group_members(record.pid)
    for pid in members:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    wait_until(lambda: not group_members(record.pid), timeout=timeout)
    if members and port is not None:
        wait_until(lambda: not port_is_open(host, port), timeout=timeout)
    return len(members)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue  # gone meanwhile
    return members


#: two start times of one process agree to the clock tick; different processes on one pid
#: are further apart than this (a pid is not reused within the same tick)
_SAME_START_S = 0.05
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _started_after_boot(pid: int) -> float | None:
    """When ``pid`` started, in seconds after boot; None if it is gone or a zombie.

    ``create_time`` is the kernel's start (ticks since boot) plus the boot time read from the
    wall clock now; taking that boot time off again leaves the part no clock step moves."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time() - psutil.boot_time()
    except psutil.Error:
        return None
