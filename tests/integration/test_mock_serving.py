"""What the two HTTP mocks share (openaq_mock.serving): a client that hangs up is no error."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from datetime import date

import pytest
import requests

from aqi.services.process import wait_until
from openaq_mock.api import MockOpenAQ
from openaq_mock.archive import MockArchive, synthetic_locations
from openaq_mock.serving import ServedInThread

pytestmark = pytest.mark.integration

MOCKS: dict[str, Callable[[], ServedInThread]] = {
    "api": MockOpenAQ,
    "archive": lambda: MockArchive(synthetic_locations(1), date(2024, 3, 1), date(2024, 3, 2)),
}


@pytest.mark.parametrize("kind", sorted(MOCKS))
def test_a_client_that_resets_its_connection_prints_nothing(
    kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A collector killed mid-request, or a timed-out client, resets its connection; the mock
    goes on serving and prints no traceback for it (socketserver's default would)."""
    with MOCKS[kind]() as mock:
        before = set(threading.enumerate())
        client = socket.create_connection((mock.host, mock.port), timeout=5)
        # close with a reset (RST) instead of the orderly FIN: SO_LINGER on, zero seconds
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()

        def handlers() -> list[threading.Thread]:
            return [t for t in threading.enumerate() if t not in before]

        assert wait_until(lambda: handlers() == [], timeout=10, interval=0.05), handlers()
        assert requests.get(f"http://{mock.host}:{mock.port}/", timeout=5).status_code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ConnectionResetError" not in err, err
