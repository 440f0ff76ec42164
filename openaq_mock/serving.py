"""What the local HTTP test doubles share: serve from a daemon thread, stop cleanly, and take
a client that hangs up in their stride.

Public surface: :class:`ServedInThread`, :class:`MockServer`.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar

__all__ = ["MockServer", "ServedInThread"]

M = TypeVar("M")


class MockServer(ThreadingHTTPServer, Generic[M]):
    """The HTTP server of a mock: its handler reads the mock from ``server.mock``.

    A client that gives up on a request (a timeout, a killed collector, a test that is done)
    resets its connection; socketserver would print that as a traceback on stderr. For a mock
    that is the normal course of things, so only other errors are printed.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], mock: M
    ) -> None:
        self.mock = mock
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class ServedInThread:
    """``start``/``stop``, a context manager and ``port`` for a mock served on 127.0.0.1.

    A subclass calls :meth:`_init_serving` in its ``__init__`` and builds its server in
    :meth:`_make_server`; ``_stopping`` is set while it stops (to wake held requests).
    """

    host: str

    def _init_serving(self, host: str, port: int) -> None:
        self.host = host
        self._requested_port = port
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _make_server(self, address: tuple[str, int]) -> ThreadingHTTPServer:
        raise NotImplementedError

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self so ``Mock().start()`` reads."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = self._make_server((self.host, self._requested_port))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; wakes requests held by an injected delay."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the kernel's choice when constructed with ``port=0``)."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])
