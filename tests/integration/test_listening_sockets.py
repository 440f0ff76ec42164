"""The loopback check of the integration tests sees what a process tree listens on."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import listening_sockets, off_loopback

pytestmark = pytest.mark.integration

# a parent listening on every interface, its child on loopback; each prints its port
LISTEN = """
import socket, subprocess, sys
host = sys.argv[1]
s = socket.socket(); s.bind((host, 0)); s.listen()
print(s.getsockname()[1], flush=True)
if host == "0.0.0.0":
    subprocess.run([sys.executable, "-c", sys.argv[2], "127.0.0.1", sys.argv[2]])
else:
    sys.stdin.read()
"""


def test_a_listener_on_every_interface_is_found_in_a_child_too() -> None:
    proc = subprocess.Popen([sys.executable, "-c", LISTEN, "0.0.0.0", LISTEN],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        public, local = int(proc.stdout.readline()), int(proc.stdout.readline())
        sockets = listening_sockets([proc.pid])
        assert {(address, port) for _, _, address, port in sockets} == {
            ("0.0.0.0", public), ("127.0.0.1", local)}  # fmt: skip
        assert [(address, port) for _, _, address, port in off_loopback(sockets)] == [
            ("0.0.0.0", public)]  # fmt: skip
    finally:
        proc.stdin.close()  # the child reads it until EOF
        proc.kill()
        proc.wait()
