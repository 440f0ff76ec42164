"""The dbt docs site: generated into ``AQ_HOME/dbt_docs``, served on 127.0.0.1:``AQ_DOCS_PORT``.

Why not ``dbt docs serve``: dbt's server loads the project's profile, so its process would
carry the warehouse owner's URL (password included) for as long as it runs, only to serve
static files. The site is generated once with the profile (``dbt docs generate --static``:
one self-contained ``index.html`` with the manifest and the catalog inside), copied into a
folder that holds nothing else, and served by Python's standard ``http.server`` bound to
127.0.0.1, which holds no credential. A new generation replaces the file atomically, so a
running server serves the new site without a restart.

``aqi docs`` serves in the foreground (Ctrl-C stops); ``aqi docs --background`` starts the
server as a daemon like the other embedded services (:mod:`aqi.services.process`), which
``aqi docs --stop`` and ``aqi demo --down`` stop.

Public surface: :class:`DocsSite`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from aqi.core.config import Settings
from aqi.core.errors import ServiceError
from aqi.core.warehouse import dbt_target_dir, run_dbt
from aqi.services.process import (
    Daemon,
    PidFile,
    port_is_open,
    spawn_daemon,
    stop_daemons,
    wait_until,
)

__all__ = ["DocsSite"]

Echo = Callable[[str], None]
HOST = "127.0.0.1"
#: how long a started server may take to answer
START_TIMEOUT_S = 30
#: all the server's environment holds: nothing of the project (AQ_DATABASE_URL, keys)
_SERVER_ENV_VARS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


class DocsSite:
    """The generated site and the server of one AQ_HOME (``port``: AQ_DOCS_PORT unless given)."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.settings = settings
        self.port = port or settings.docs_port
        self.pidfile = PidFile(settings.run_dir / "docs.pid")
        self.log_path = settings.logs_dir / "docs.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    @property
    def index(self) -> Path:
        return self.settings.docs_dir / "index.html"

    def generate(self, echo: Echo = print) -> Path:
        """``dbt docs generate --static`` (it reads the warehouse for the catalog), then the
        self-contained page into the served folder, replacing the old one in one step."""
        echo("docs: dbt docs generate --static")
        if run_dbt(self.settings, ["docs", "generate", "--static"]) != 0:
            raise ServiceError("dbt docs generate failed: see dbt's output above")
        page = dbt_target_dir() / "static_index.html"
        if not page.is_file():
            raise ServiceError(f"dbt docs generate --static wrote no {page}")
        self.index.parent.mkdir(parents=True, exist_ok=True)
        partial = self.index.with_suffix(".html.partial")
        shutil.copyfile(page, partial)
        os.replace(partial, self.index)
        echo(f"docs: site in {self.index}")
        return self.index

    def serve_command(self) -> list[str]:
        """The static server: the folder of the site only, on 127.0.0.1."""
        return [sys.executable, "-m", "http.server", "--bind", HOST,
                "--directory", str(self.settings.docs_dir), str(self.port)]  # fmt: skip

    def serve(self, echo: Echo = print) -> int:
        """Serve in the foreground until Ctrl-C; the server's exit code."""
        self.check_port()
        echo(f"docs: {self.url} (Ctrl-C stops)")
        try:
            return subprocess.run(self.serve_command(), env=_server_env(), check=False).returncode
        except KeyboardInterrupt:
            return 0

    def up(self, echo: Echo = print) -> dict:
        """Start the server as a daemon unless it runs; wait until it answers."""
        record = self.pidfile.live()
        if record is not None:
            echo(f"docs: already serving at {record.address} (pid {record.pid})")
            return self.status()
        self.pidfile.remove()
        self.check_port()
        proc = spawn_daemon(self.serve_command(), log_path=self.log_path, env=_server_env())
        self.pidfile.write(proc.pid, "dbt docs server", self.url)
        if not wait_until(self.healthy, timeout=START_TIMEOUT_S, interval=0.2):
            stop_daemons("docs", [self._daemon()], lambda line: None)
            raise ServiceError(f"the docs server did not answer at {self.url}: see {self.log_path}")
        echo(f"docs: serving {self.url} (pid {proc.pid}, log {self.log_path})")
        return self.status()

    def down(self, echo: Echo = print) -> None:
        stop_daemons("docs", [self._daemon()], echo)

    def status(self) -> dict:
        record = self.pidfile.live()
        return {
            "running": record is not None,
            "pid": record.pid if record else None,
            "url": record.address if record else self.url,
        }

    def healthy(self) -> bool:
        """The site's page answers with 200."""
        try:
            with urllib.request.urlopen(self.url, timeout=2) as page:
                return page.status == 200
        except OSError:
            return False

    def _daemon(self) -> Daemon:
        return Daemon("dbt docs server", self.pidfile, stop_timeout=10)

    def check_port(self) -> None:
        """ServiceError naming AQ_DOCS_PORT when something already listens on the port."""
        if port_is_open(HOST, self.port):
            raise ServiceError(
                f"AQ_DOCS_PORT: {HOST}:{self.port} is already in use by another program; "
                "set AQ_DOCS_PORT (or --port) to a free port"
            )


def _server_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in _SERVER_ENV_VARS}
