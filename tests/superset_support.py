"""Superset's REST API for tests: a bearer token from /api/v1/security/login, JSON in and out."""

from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.request

from aqi.core.config import Settings
from aqi.services.superset import EmbeddedSuperset

__all__ = ["Api", "superset_api"]


class Api:
    """Superset's REST API with a bearer token from /api/v1/security/login."""

    def __init__(self, base: str, username: str, password: str) -> None:
        self.base = base
        status, body = self.call(
            "POST", "/api/v1/security/login",
            {"username": username, "password": password, "provider": "db", "refresh": False},
        )  # fmt: skip
        if status != 200:
            raise PermissionError(f"login failed: {status} {body}")
        self.token = body["access_token"]

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
        """One request; a change (not GET, not the exempt chart data) carries the CSRF token
        of this client's session, as Superset's front end sends it."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if getattr(self, "token", None):
            headers["Authorization"] = f"Bearer {self.token}"
            if method != "GET" and not path.startswith("/api/v1/chart/data"):
                headers["X-CSRFToken"] = self._csrf_token()
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=headers
        )
        try:
            with self._opener().open(request, timeout=120) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")[:2000]

    def _opener(self) -> urllib.request.OpenerDirector:
        """Keeps the session cookie the CSRF token belongs to."""
        if not hasattr(self, "_cookies"):
            self._cookies = urllib.request.build_opener(
                urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
            )
        return self._cookies

    def _csrf_token(self) -> str:
        if not hasattr(self, "_csrf"):
            self._csrf = self.get("/api/v1/security/csrf_token/")["result"]
        return self._csrf

    def get(self, path: str) -> dict:
        status, body = self.call("GET", path)
        assert status == 200, f"GET {path}: {status} {body}"
        assert isinstance(body, dict)
        return body


def superset_api(settings: Settings) -> Api:
    """Logged in as the generated admin of the embedded Superset."""
    password = (settings.secrets_dir / "superset_admin_password").read_text().strip()
    return Api(EmbeddedSuperset(settings).url, "admin", password)
