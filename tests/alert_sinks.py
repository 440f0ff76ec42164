"""Alert sinks on 127.0.0.1 for tests: an SMTP server that keeps the mail it takes and an
HTTP server that keeps every POST. Small and written here (no aiosmtpd in the environment):
the SMTP one speaks just what ``smtplib`` says (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT).
"""

from __future__ import annotations

import base64
import email
import email.policy
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "T0KEN-in-the-path"


class SmtpSink(socketserver.ThreadingTCPServer):
    """Takes mail like a server would and keeps it: (auth, mail from, rcpt to, message)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.port = self.server_address[1]
        self.messages: list[dict] = []


class _SmtpHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"220 sink ESMTP\r\n")
        auth, sender, rcpt = None, None, []
        while line := self.rfile.readline():
            cmd = line.decode().rstrip("\r\n")
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.wfile.write(b"250-sink\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
            elif verb == "AUTH":
                _, user, password = base64.b64decode(cmd.split()[2]).split(b"\0")
                auth = (user.decode(), password.decode())
                self.wfile.write(b"235 ok\r\n")
            elif verb == "MAIL":
                sender = cmd.split(":", 1)[1].split()[0].strip("<>")
                self.wfile.write(b"250 ok\r\n")
            elif verb == "RCPT":
                rcpt.append(cmd.split(":", 1)[1].strip().strip("<>"))
                self.wfile.write(b"250 ok\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 go on\r\n")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                message = email.message_from_bytes(b"".join(data), policy=email.policy.default)
                self.server.messages.append(  # type: ignore[attr-defined]
                    {"auth": auth, "from": sender, "to": rcpt, "message": message}
                )
                self.wfile.write(b"250 queued\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


class HttpSink(ThreadingHTTPServer):
    """Keeps every POST (path, headers, JSON body); answers ``status``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HttpHandler)
        self.port = self.server_address[1]
        self.posts: list[dict] = []
        self.status = 204

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/aqi/{TOKEN}?key={TOKEN}"


class _HttpHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        sink: HttpSink = self.server  # type: ignore[assignment]
        sink.posts.append({"path": self.path, "headers": dict(self.headers), "body": body})
        self.send_response(sink.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def running_smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()


@contextmanager
def running_http_sink() -> Iterator[HttpSink]:
    sink = HttpSink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()
