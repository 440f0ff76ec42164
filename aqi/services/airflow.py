"""The embedded Airflow 3: API server + scheduler + DAG processor, and ``dags test`` runs.

``aqi airflow up`` runs the three components as daemons on 127.0.0.1 (LocalExecutor with a
small parallelism, metadata in the ``airflow`` database of the project's PostgreSQL), with
``AIRFLOW_HOME`` under ``AQ_HOME/airflow`` and the DAGs of ``dags/``. Its admin password is
generated once, shown once and kept in ``AQ_HOME/secrets`` (0600), like every secret here;
the JWT and Fernet keys are generated the same way, so that the components (which must share
them) agree across restarts. Telemetry of Airflow, Cosmos, dbt and GX is off.

``aqi airflow run-once`` is ``airflow dags test openaq_elt``: one run in this process, for
the demo, the tests and machines without a scheduler; non-zero exit when the run fails.

Public surface: :class:`EmbeddedAirflow`, :func:`airflow_env`, :func:`run_once`,
:data:`ADMIN_USER`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aqi.core.config import Settings
from aqi.core.connections import database_url, kafka_bootstrap_servers
from aqi.core.environments import REPO_ROOT
from aqi.core.errors import ServiceError
from aqi.core.secrets import get_or_create_secret, secret_path
from aqi.services.process import (
    Daemon,
    PidFile,
    kill_leftovers,
    port_is_open,
    spawn_daemon,
    stop_daemons,
    wait_until,
)

__all__ = [
    "ADMIN_USER",
    "ELT_DAG_ID",
    "DagRunResult",
    "EmbeddedAirflow",
    "TaskTiming",
    "airflow_env",
    "run_once",
]

Echo = Callable[[str], None]
HOST = "127.0.0.1"
#: the dbt docs site in the UI (Cosmos' plugin): <url>/cosmos/<slug>/dbt_docs
DOCS_SLUG = "warehouse"
ADMIN_USER = "admin"
ELT_DAG_ID = "openaq_elt"
DAGS_DIR = REPO_ROOT / "dags"
#: the daemons of ``up``, in start order (stopped in reverse)
COMPONENTS = ("api-server", "scheduler", "dag-processor")
#: the scheduler's log server listens on every interface (Airflow has no setting for its
#: host); with the LocalExecutor the API server reads task logs from AIRFLOW_HOME/logs itself
COMPONENT_ARGS = {"scheduler": ("--skip-serve-logs",)}
START_TIMEOUT_S = 180.0
#: set to "1" in the environment of ``airflow dags test`` (:func:`run_once`): the tasks learn
#: that one task runs at a time (:func:`aqi.orchestration.watcher_sensor_args`)
DAGS_TEST_ENV = "AQ_AIRFLOW_DAGS_TEST"
_ADMIN_SECRET = "airflow_admin_password"
_PASSWORDS_FILE = "airflow_passwords.json"


def airflow_env(settings: Settings) -> dict[str, str]:
    """The environment of every Airflow process of the project (configuration in one place).

    With the embedded PostgreSQL it holds the password of role ``airflow`` (its metadata) but
    not the warehouse owner's: the tasks that need the warehouse (the stream, dbt, the checks)
    read it from ``AQ_HOME/secrets`` when they run (:func:`aqi.orchestration.warehouse_env`),
    so the API server, scheduler and DAG processor never carry it. An external
    ``AQ_DATABASE_URL`` is passed on: it is the only way the tasks can learn it.
    """
    port = settings.airflow_port
    secrets = settings.secrets_dir
    _write_passwords_file(settings)
    metadata = database_url(settings, "airflow").replace(
        "postgresql://", "postgresql+psycopg2://", 1
    )
    # this project's variables as load_settings saw them (environment + .env), so a task
    # (whose cwd is AIRFLOW_HOME, where no .env is) resolves the same settings as the CLI
    inherited = {**os.environ, **settings.source}
    inherited.pop("AQ_DATABASE_URL", None)
    if settings.database_url is not None:
        inherited["AQ_DATABASE_URL"] = settings.database_url
    return {
        **inherited,
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(settings.airflow_parallelism),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://{HOST}:{port}",
        # tasks report to the API server; on a non-default port they must be told where
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{HOST}:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(secrets / _PASSWORDS_FILE),
        # shared by all components: each would otherwise invent its own and reject the others'
        "AIRFLOW__API_AUTH__JWT_SECRET": get_or_create_secret(secrets, "airflow_jwt_secret"),
        "AIRFLOW__API__SECRET_KEY": get_or_create_secret(secrets, "airflow_secret_key"),
        "AIRFLOW__CORE__FERNET_KEY": get_or_create_secret(
            secrets, "airflow_fernet_key", factory=_fernet_key
        ),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
        # no telemetry: Airflow, Cosmos, dbt, Great Expectations
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        "SCARF_ANALYTICS": "false",
        "DO_NOT_TRACK": "1",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        # Cosmos keeps dbt's partial-parse state here (default: the machine's /tmp/cosmos):
        # one AQ_HOME's database must not make another's next dbt call parse the whole
        # project again, nor two installations write one file at once
        "AIRFLOW__COSMOS__CACHE_DIR": str(settings.airflow_home / "cosmos-cache"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "GX_ANALYTICS_ENABLED": "false",
        # Cosmos' plugin shows the dbt docs site (aqi docs) in the UI: Browse > dbt docs
        "AIRFLOW__COSMOS__DBT_DOCS_PROJECTS": json.dumps(
            {
                DOCS_SLUG: {
                    "dir": str(settings.docs_dir),
                    "index": "index.html",
                    "name": "dbt docs (warehouse)",
                }
            }
        ),
        # what the tasks need: this project's settings, absolute, whatever their cwd
        "AQ_HOME": str(settings.aq_home),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers(settings),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def run_once(
    settings: Settings, *, conf: dict | None = None, echo: Echo = print, dag_id: str = ELT_DAG_ID
) -> int:
    """``airflow dags test <dag_id>``: one complete run in this process; its exit code.

    Airflow's full output goes to ``AQ_HOME/logs/airflow-run-once.log``; ``echo`` gets one
    line per finished task and, for a failed task, its error (e.g. the quality report).
    """
    # one task at a time: the dbt model sensors must give the turn back to the producer
    env = {**airflow_env(settings), DAGS_TEST_ENV: "1"}
    _migrate_metadata(settings, env, echo)
    command = ["dags", "test", dag_id]
    if conf:
        command += ["--conf", json.dumps(conf)]
    log_path = settings.logs_dir / "airflow-run-once.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    echo(f"airflow: {' '.join(command)} (full log: {log_path})")
    summary = _TaskSummary(echo)
    with open(log_path, "w") as log, subprocess.Popen(
        [_airflow(), *command], env=env, cwd=settings.airflow_home,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            summary.feed(line.rstrip("\n"))
        return proc.wait()


class _TaskSummary:
    """Turns ``airflow dags test`` output into one line per task plus the errors of failures."""

    _START = re.compile(r"\[DAG TEST\] starting task_id=(\S+)")
    _END = re.compile(r"\[DAG TEST\] end task task_id=(\S+)")
    _LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\S+ \[")
    _EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failed|Exit)\w*(: |$)")

    def __init__(self, echo: Echo) -> None:
        self.echo = echo
        self.started: dict[str, float] = {}
        self.failure: list[str] | None = None

    def feed(self, line: str) -> None:
        if match := self._START.search(line):
            self.started[match.group(1)] = time.monotonic()
            self.failure = None
        elif "Task failed with exception" in line:
            self.failure = []
        elif match := self._END.search(line):
            task = match.group(1)
            seconds = time.monotonic() - self.started.pop(task, time.monotonic())
            if self.failure is None:
                self.echo(f"  ok      {task} ({seconds:.0f} s)")
            else:
                self.echo(f"  FAILED  {task} ({seconds:.0f} s)")
                for detail in self._error(self.failure):
                    self.echo(f"          {detail}")
            self.failure = None
        elif self.failure is not None and not self._LOG_LINE.match(line):
            self.failure.append(line)

    def _error(self, lines: list[str]) -> list[str]:
        """The exception message at the end of a traceback (all its lines)."""
        starts = [i for i, line in enumerate(lines) if self._EXCEPTION.match(line)]
        return [line for line in lines[starts[-1] :] if line.strip()] if starts else lines[-5:]


@dataclass(frozen=True)
class TaskTiming:
    """One task instance of a finished run, as the REST API reports it."""

    task_id: str
    state: str | None
    try_number: int
    start: datetime | None
    end: datetime | None

    @property
    def seconds(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.start and self.end else None


@dataclass(frozen=True)
class DagRunResult:
    """A DAG run triggered through the REST API and followed to its end."""

    dag_id: str
    run_id: str
    state: str
    #: queued -> end, as the scheduler recorded them (not this client's clock)
    queued_at: datetime | None
    start: datetime | None
    end: datetime | None
    tasks: tuple[TaskTiming, ...]

    @property
    def seconds(self) -> float | None:
        """Start to end of the run (from the moment it was queued)."""
        begin = self.queued_at or self.start
        return (self.end - begin).total_seconds() if begin and self.end else None

    def failed_tasks(self) -> list[str]:
        return [t.task_id for t in self.tasks if t.state not in ("success", "skipped")]


class EmbeddedAirflow:
    """Start, stop and describe the project's own Airflow."""

    name = "airflow"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = settings.airflow_port
        self.url = f"http://{HOST}:{self.port}"

    def pidfile(self, component: str) -> PidFile:
        return PidFile(self.settings.run_dir / f"airflow-{component}.pid")

    def log_path(self, component: str) -> Path:
        return self.settings.logs_dir / f"airflow-{component}.log"

    def up(self, echo: Echo = print) -> dict:
        """Start what is not running; wait until the health endpoint reports all healthy."""
        env = airflow_env(self.settings)
        running = {c: self.pidfile(c).live() for c in COMPONENTS}
        if all(running.values()):
            echo(f"airflow: already running ({self.url})")
            return self.status()
        for component, record in running.items():
            port = self.port if component == "api-server" else None
            if record is None and kill_leftovers(self.pidfile(component), port=port):
                echo(f"airflow: killed what was left of a {component} that died")
        if running["api-server"] is None and port_is_open(HOST, self.port):
            raise ServiceError(
                f"AQ_AIRFLOW_PORT: {HOST}:{self.port} is already in use by another program; "
                "set AQ_AIRFLOW_PORT to a free port"
            )
        started = time.monotonic()
        _migrate_metadata(self.settings, env, echo)
        for component in COMPONENTS:
            if running[component] is not None:
                continue
            self.pidfile(component).remove()
            echo(f"airflow: starting {component} ...")
            proc = spawn_daemon(
                [*_command(component), component, *COMPONENT_ARGS.get(component, ())],
                log_path=self.log_path(component),
                env=env,
                cwd=self.settings.airflow_home,
            )
            self.pidfile(component).write(proc.pid, f"airflow {component}", self.url)
        if not wait_until(self._healthy, timeout=START_TIMEOUT_S, interval=1.0):
            dead = [c for c in COMPONENTS if self.pidfile(c).live() is None]
            hint = f"; {', '.join(dead)} exited" if dead else ""
            logs = ", ".join(str(self.log_path(c)) for c in COMPONENTS)
            raise ServiceError(f"airflow did not become healthy{hint}: see {logs}")
        echo(f"airflow: ready in {time.monotonic() - started:.0f} s at {self.url}")
        return self.status()

    def any_running(self) -> bool:
        return any(self.pidfile(c).live() for c in COMPONENTS)

    def down(self, echo: Echo = print) -> None:
        daemons = [Daemon(c, self.pidfile(c), group=True) for c in reversed(COMPONENTS)]
        stop_daemons("airflow", daemons, echo)

    def status(self) -> dict:
        pids = {c: (r.pid if (r := self.pidfile(c).live()) else None) for c in COMPONENTS}
        return {
            "managed": "embedded",
            "running": all(pids.values()) and self._healthy(),
            "url": self.url,
            "user": ADMIN_USER,
            "password_file": str(secret_path(self.settings.secrets_dir, _ADMIN_SECRET)),
            "airflow_home": str(self.settings.airflow_home),
            "pids": pids,
            "logs": {c: str(self.log_path(c)) for c in COMPONENTS},
        }

    def health(self) -> dict | None:
        """The API server's ``/api/v2/monitor/health`` answer, or None if it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=3) as resp:
                return json.load(resp)
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def trigger(
        self,
        dag_id: str = ELT_DAG_ID,
        *,
        conf: dict | None = None,
        wait: bool = True,
        timeout: float = 1800.0,
        echo: Echo = print,
        after: datetime | None = None,
    ) -> DagRunResult:
        """Trigger ``dag_id`` through the REST API (as a user or an external system would),
        unpausing it first, and with ``wait`` follow the run to its end under the scheduler.

        Unlike :func:`run_once` this needs the daemons of :meth:`up`: the run is the real
        thing (scheduler, LocalExecutor, one process per task), which is what the timing and
        the scheduler tests need. With ``after`` (aware), a run the schedule queued at or
        after that moment is followed instead of triggering another: it is the one that
        takes the data added then.
        """
        token = self._token()
        self._api("PATCH", f"/api/v2/dags/{dag_id}", token, {"is_paused": False})
        run = self._run_queued_after(dag_id, token, after) if after else None
        if wait and run is None:
            # a run already going (the schedule's) would hold this one in the queue
            # (max_active_runs=1): start when the DAG is idle, so the timing is this run's
            self._wait_idle(dag_id, token, deadline=time.monotonic() + timeout)
            run = self._run_queued_after(dag_id, token, after) if after else None
        if run is None:
            body: dict = {"logical_date": None}
            if conf:
                body["conf"] = conf
            run = self._api("POST", f"/api/v2/dags/{dag_id}/dagRuns", token, body)
            echo(f"airflow: triggered {dag_id} run {run['dag_run_id']}")
        else:
            echo(f"airflow: following {dag_id} run {run['dag_run_id']} (queued by the schedule)")
        run_id = run["dag_run_id"]
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while wait and run["state"] not in ("success", "failed"):
            if time.monotonic() > deadline:
                raise ServiceError(f"{dag_id} run {run_id} did not end within {timeout:.0f} s")
            time.sleep(2.0)  # the API server also serves the tasks: poll it gently
            run = self._api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", token)
            for task in self._task_timings(dag_id, run_id, token):
                ended = task.state in ("success", "failed", "skipped", "upstream_failed")
                if ended and task.task_id not in seen:
                    seen.add(task.task_id)
                    took = f" ({task.seconds:.1f} s)" if task.seconds is not None else ""
                    echo(f"  {task.state:<8} {task.task_id}{took}")
        return DagRunResult(
            dag_id=dag_id,
            run_id=run_id,
            state=run["state"],
            queued_at=_when(run.get("queued_at")),
            start=_when(run.get("start_date")),
            end=_when(run.get("end_date")),
            tasks=tuple(self._task_timings(dag_id, run_id, token)),
        )

    def _run_queued_after(self, dag_id: str, token: str, after: datetime) -> dict | None:
        # the API does not order by queued_at: take the newest runs and choose here
        runs = self._api(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=20", token
        )["dag_runs"]
        queued = [(when, r) for r in runs if (when := _when(r.get("queued_at")))]
        late = sorted((pair for pair in queued if pair[0] >= after), key=lambda pair: pair[0])
        return late[0][1] if late else None

    def _wait_idle(self, dag_id: str, token: str, deadline: float) -> None:
        while True:
            active = self._api(
                "GET", f"/api/v2/dags/{dag_id}/dagRuns?state=queued&state=running", token
            )["dag_runs"]
            if not active:
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"{dag_id} still has a run going: {active[0]['dag_run_id']}")
            time.sleep(1.0)

    def _task_timings(self, dag_id: str, run_id: str, token: str) -> list[TaskTiming]:
        found = self._api(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000", token
        )["task_instances"]
        return [
            TaskTiming(
                task_id=t["task_id"],
                state=t["state"],
                try_number=t["try_number"],
                start=_when(t.get("start_date")),
                end=_when(t.get("end_date")),
            )
            for t in found
        ]

    def _token(self) -> str:
        password, _ = admin_password(self.settings)
        answer = self._api(
            "POST", "/auth/token", None, {"username": ADMIN_USER, "password": password}
        )
        return answer["access_token"]

    def _api(self, method: str, path: str, token: str | None, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Bearer {token}"} if token else {}),
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise ServiceError(f"airflow API {method} {path}: HTTP {exc.code} {detail}") from None
        except OSError as exc:
            raise ServiceError(
                f"airflow API at {self.url} does not answer ({exc}): is it up? aqi airflow up"
            ) from None

    def _healthy(self) -> bool:
        health = self.health()
        if not health:
            return False
        return all(
            (health.get(part) or {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "dag_processor")
        )


def admin_password(settings: Settings) -> tuple[str, bool]:
    """The admin password and whether it was generated just now (to show it once)."""
    existed = secret_path(settings.secrets_dir, _ADMIN_SECRET).is_file()
    return get_or_create_secret(settings.secrets_dir, _ADMIN_SECRET), not existed


def _write_passwords_file(settings: Settings) -> None:
    """The simple auth manager's passwords file, from our generated secret (0600)."""
    password, _ = admin_password(settings)
    path = settings.secrets_dir / _PASSWORDS_FILE
    content = json.dumps({ADMIN_USER: password}) + "\n"
    if path.is_file() and path.read_text() == content:
        return
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.replace(path.with_suffix(".tmp"), path)


def _migrate_metadata(settings: Settings, env: dict[str, str], echo: Echo) -> None:
    """``airflow db migrate`` once per Airflow version and metadata database."""
    from importlib.metadata import version

    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    target = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].rsplit("@", 1)[-1]
    key = hashlib.sha256(f"{version('apache-airflow')}|{target}".encode()).hexdigest()[:16]
    stamp = settings.airflow_home / f".migrated-{key}"
    if stamp.is_file():
        return
    echo("airflow: preparing the metadata database (airflow db migrate) ...")
    _run_airflow(["db", "migrate"], env, settings.airflow_home)
    stamp.touch()


def _run_airflow(args: Sequence[str], env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run(
        [_airflow(), *args], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise ServiceError(f"airflow {' '.join(args)} failed:\n" + "\n".join(tail))


def _command(component: str) -> list[str]:
    """How a daemon is started: the scheduler with the tasks' libraries imported first (its
    workers and tasks are forks of it: :mod:`aqi.services.airflow_scheduler`)."""
    if component == "scheduler":
        _airflow()  # the same error when Airflow is not installed
        return [sys.executable, "-m", "aqi.services.airflow_scheduler"]
    return [_airflow()]


def _airflow() -> str:
    executable = Path(sys.executable).with_name("airflow")
    if not executable.exists():
        raise ServiceError("Airflow is not installed in this environment: run `make env`")
    return str(executable)


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()
