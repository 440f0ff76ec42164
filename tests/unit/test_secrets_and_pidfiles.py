"""Generated secrets are private and stable; pid files never point at someone else's process."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aqi.core.secrets import get_or_create_secret, show_once
from aqi.services.process import (
    Daemon,
    PidFile,
    ProcessRecord,
    group_members,
    kill_leftovers,
    spawn_daemon,
    stop_daemons,
    stop_process,
)


def test_secret_is_generated_once_with_0600(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    first = get_or_create_secret(secrets_dir, "x")
    second = get_or_create_secret(secrets_dir, "x")
    other = get_or_create_secret(secrets_dir, "y")
    assert first == second != other
    assert len(first) >= 24 and first not in ("admin", "password")
    assert stat.S_IMODE((secrets_dir / "x").stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700


def test_a_generated_secret_is_shown_once_and_again_when_regenerated(tmp_path: Path) -> None:
    secrets_dir, marker = tmp_path / "secrets", tmp_path / "home" / ".shown"
    shown: list[str] = []
    first = get_or_create_secret(secrets_dir, "admin")
    assert show_once(first, marker, shown.append)
    assert not show_once(first, marker, shown.append)
    assert first not in marker.read_text()  # a fingerprint, never the secret
    (secrets_dir / "admin").unlink()
    second = get_or_create_secret(secrets_dir, "admin")
    assert show_once(second, marker, shown.append)
    assert not show_once(second, marker, shown.append)
    assert shown == [first, second]


@pytest.mark.integration
def test_pidfile_tracks_a_live_process_and_stops_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    pidfile = PidFile(tmp_path / "p.pid")
    record = pidfile.write(proc.pid, "sleep", "")
    assert pidfile.live() == record
    assert stop_process(record, timeout=5)
    proc.wait(timeout=5)
    assert pidfile.live() is None


@pytest.mark.integration
def test_pidfile_with_reused_pid_is_stale(tmp_path: Path) -> None:
    """Same pid, other start time (a pid reused after kill -9): not ours, never signalled."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        pidfile = PidFile(tmp_path / "p.pid")
        real = pidfile.write(proc.pid, "sleep", "")
        fake = ProcessRecord(proc.pid, real.started_after_boot - 1, "sleep", "")
        pidfile.path.write_text(json.dumps(
            {"pid": fake.pid, "started_after_boot": fake.started_after_boot, "command": "sleep"}
        ))  # fmt: skip
        assert pidfile.live() is None
        assert stop_process(fake, timeout=1)  # "already gone" -> must not kill the real one
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.integration
def test_a_pidfile_still_names_its_process_after_the_clock_was_stepped(tmp_path: Path) -> None:
    """The wall clock stepped by 21 s since the file was written (NTP, a resumed virtual
    machine): every process's wall-clock start moved with it, its start after boot did not.
    The daemon is still ours (a CI run once found its PostgreSQL and broker "NOT RUNNING"
    right after `up`, and `up` then refused the broker's port as another program's)."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        pidfile = PidFile(tmp_path / "p.pid")
        record = pidfile.write(proc.pid, "sleep", "")
        written = json.loads(pidfile.path.read_text())
        assert written["started_after_boot"] == record.started_after_boot
        assert abs(written["start_time"] - record.start_time) < 1  # kept for people reading it
        pidfile.path.write_text(json.dumps({**written, "start_time": written["start_time"] - 21}))
        assert pidfile.live() == record
        # a file of the wall-clock format alone (2026-12-05 .. 06) is read by today's clock
        del written["started_after_boot"]
        pidfile.path.write_text(json.dumps(written))
        assert pidfile.live() is not None
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.integration
def test_a_pidfile_written_before_psutil_still_names_its_process(tmp_path: Path) -> None:
    """Older pid files hold the start in clock ticks since boot (/proc/PID/stat, field 22):
    a daemon started by an older version is still recognised, and so still stopped."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
        pidfile = PidFile(tmp_path / "p.pid")
        pidfile.path.write_text(json.dumps({"pid": proc.pid, "start_ticks": ticks,
                                            "command": "sleep", "address": ""}))  # fmt: skip
        assert pidfile.live() is not None
        pidfile.path.write_text(json.dumps({"pid": proc.pid, "start_ticks": ticks - 100,
                                            "command": "sleep"}))  # fmt: skip
        assert pidfile.live() is None
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.integration
def test_pidfile_of_dead_process_and_garbage(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    pidfile = PidFile(tmp_path / "p.pid")
    pidfile.path.write_text(json.dumps({"pid": proc.pid, "start_ticks": 1, "command": "true"}))
    assert pidfile.live() is None
    pidfile.path.write_text("garbage")
    assert pidfile.read() is None
    assert not os.path.exists(tmp_path / "missing.pid")
    assert PidFile(tmp_path / "missing.pid").live() is None


@pytest.mark.integration
def test_leftovers_of_a_dead_daemon_are_killed_and_a_live_one_is_left_alone(
    tmp_path: Path,
) -> None:
    """A daemon killed with -9 leaves its workers (same process group): up kills them."""
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "time.sleep(600)\n")  # fmt: skip
    daemon = spawn_daemon([sys.executable, "-c", code], log_path=tmp_path / "d.log")
    pidfile = PidFile(tmp_path / "d.pid")
    pidfile.write(daemon.pid, "test daemon", "")
    deadline = time.monotonic() + 10
    while len(_group(daemon.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_group(daemon.pid)) == 2
    assert kill_leftovers(pidfile) == 0, "a live daemon is not touched"
    daemon.send_signal(signal.SIGKILL)
    daemon.wait()
    (worker,) = _group(daemon.pid)
    assert kill_leftovers(pidfile) == 1
    assert _group(daemon.pid) == [] and worker not in _group(daemon.pid)


def _group(pgid: int) -> list[int]:
    return group_members(pgid)


def test_private_files_are_0600_from_their_creation(tmp_path: Path) -> None:
    from aqi.core.secrets import write_private

    old = os.umask(0)  # the most permissive umask: the mode must not come from it
    try:
        fresh = tmp_path / "fresh.pw"
        write_private(fresh, "s3cret\n")
        existing = tmp_path / "existing.pw"
        existing.write_text("readable")
        existing.chmod(0o644)
        write_private(existing, "s3cret\n")
    finally:
        os.umask(old)
    for path in (fresh, existing):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.read_text() == "s3cret\n"


@pytest.mark.integration
def test_stop_daemons_stops_each_in_order_and_clears_stale_pidfiles(tmp_path: Path) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    procs = [
        spawn_daemon([sys.executable, "-c", "import time; time.sleep(600)"], log_path=tmp_path / "a.log"),
        spawn_daemon([sys.executable, "-c", stubborn], log_path=tmp_path / "b.log"),
    ]  # fmt: skip
    daemons = []
    for name, proc in zip(("api", "worker"), procs, strict=True):
        pidfile = PidFile(tmp_path / f"{name}.pid")
        pidfile.write(proc.pid, name, "")
        daemons.append(Daemon(name, pidfile, stop_timeout=1, group=True))
    stale = PidFile(tmp_path / "gone.pid")
    stale.path.write_text(json.dumps({"pid": 999_999_999, "start_time": 1.0, "command": "x"}))
    said: list[str] = []
    try:
        stop_daemons("svc", [*daemons, Daemon("gone", stale)], said.append)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    # both gone (stop_process reaped them): the stubborn one, which ignores SIGTERM, was
    # killed after its stop_timeout
    assert not any(_exists(p.pid) for p in procs)
    assert said == [
        f"svc: stopping api (pid {procs[0].pid}) ...",
        f"svc: stopping worker (pid {procs[1].pid}) ...",
        "svc: stopped",
    ]
    assert not any(d.pidfile.path.exists() for d in daemons) and not stale.path.exists()
    said.clear()
    stop_daemons("svc", daemons, said.append)
    assert said == ["svc: not running"]


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
