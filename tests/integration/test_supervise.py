"""`aqi supervise`: restarts a dying command with a growing pause, stops it on request."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aqi.services.supervise import Backoff, supervise

pytestmark = pytest.mark.integration

FAST = Backoff(first_s=0.05, max_s=0.2, healthy_after_s=60)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("code", [0, 2])
def test_finished_or_usage_error_is_final(code: int) -> None:
    lines: list[str] = []
    assert supervise(_python(f"raise SystemExit({code})"), echo=lines.append, backoff=FAST,
                     stop=threading.Event()) == code  # fmt: skip
    assert sum(line.startswith("supervise: started") for line in lines) == 1
    assert "not restarted" in lines[-1]


def test_a_dying_command_is_restarted_with_a_doubling_pause(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    stop = threading.Event()
    lines: list[str] = []

    def watch() -> None:
        while not runs.exists() or len(runs.read_text().splitlines()) < 5:
            time.sleep(0.02)
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    code = f"open({str(runs)!r}, 'a').write('run\\n'); raise SystemExit(3)"
    assert supervise(_python(code), echo=lines.append, backoff=FAST, stop=stop) == 0
    pauses = [float(line.rsplit(" ", 2)[-2]) for line in lines if "restarting in" in line]
    assert pauses[:4] == [0.05, 0.1, 0.2, 0.2]  # doubling, capped
    assert all("died (exit code 3)" in line for line in lines if "restarting" in line)


def test_stop_terminates_the_command_and_what_it_started(tmp_path: Path) -> None:
    """The command gets SIGTERM; a grandchild that ignores it is killed with the group."""
    pids = tmp_path / "pids"
    code = (
        "import os, signal, subprocess, sys, time\n"
        "g = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{g.pid}}')\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "time.sleep(600)\n"
    )
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(
        supervise(_python(code), echo=lambda _: None, backoff=FAST, stop=stop, grace_s=5)))
    thread.start()
    while not pids.exists() or len(pids.read_text().split()) < 2:
        time.sleep(0.02)
    child, grandchild = map(int, pids.read_text().split())
    assert os.getpgid(child) == child, "the command leads its own process group"
    stop.set()
    thread.join(timeout=20)
    assert result == [0]
    for pid in (child, grandchild):
        assert not _alive(pid), pid


def test_the_cli_refuses_what_is_not_an_aqi_command() -> None:
    aqi = str(Path(sys.executable).with_name("aqi"))
    result = subprocess.run([aqi, "supervise", "rm", "-rf", "/"], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode == 2 and "not an aqi command" in result.stderr


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:  # a zombie of ours counts as gone once reaped
            if os.waitpid(pid, os.WNOHANG)[0]:
                return False
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return True
