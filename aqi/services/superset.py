"""The embedded Superset: its read-only warehouse role, its metadata, the bundle, gunicorn.

``aqi dashboards up`` runs, each step skipped when already done:

1. the PostgreSQL role :data:`READER_ROLE` that Superset queries the warehouse with: it may
   connect to database ``aq`` only, use schema ``gold`` and read its tables, now and after
   dbt rebuilds them (default privileges of the ``aq`` role), and nothing else;
2. Superset's metadata in database ``superset`` of the project's PostgreSQL (``superset db
   upgrade`` + ``superset init``, once per Superset lock file and database);
3. ``superset/provision.py``: the admin user with a generated password (shown once, kept in
   ``AQ_HOME/secrets/superset_admin_password``, 0600) and the bundle ``superset/bundle``
   (database, datasets, charts, the "Air quality" dashboard), overwritten by UUID;
4. gunicorn on 127.0.0.1:``AQ_SUPERSET_PORT`` (default 8088), until ``/health`` answers.

Superset runs from its own environment (``superset/.venv``, SQLAlchemy 1.4); everything here
drives it through subprocesses with an explicit environment (:func:`superset_env`). Secrets
reach the provisioning script on stdin, never on a command line.

With an external PostgreSQL (``AQ_DATABASE_URL``) the role cannot be created here: ``up``
checks that it works and otherwise stops, naming :func:`reader_role_sql` (``aqi dashboards
role-sql``), the SQL a DBA runs once.

Public surface: :class:`EmbeddedSuperset`, :func:`superset_env`, :func:`ensure_reader_role`,
:func:`reader_role_sql`, :func:`reader_url`, :func:`admin_password`, :func:`provision`,
:data:`ADMIN_USER`, :data:`READER_ROLE`, :data:`DASHBOARD_SLUG`, :data:`BUNDLE_DIR`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql

from aqi.core.config import SECRET_VARS, Settings
from aqi.core.connections import APP_ROLE, DATABASES, SUPERUSER, database_url, superuser_password
from aqi.core.environments import REPO_ROOT, basemap_archive, superset_env_dir
from aqi.core.errors import ServiceError, first_line
from aqi.core.secrets import get_or_create_secret, secret_path
from aqi.services.process import (
    Daemon,
    PidFile,
    kill_leftovers,
    port_is_open,
    spawn_daemon,
    stop_daemons,
    stop_process,
    wait_until,
)
from aqi.services.superset_cache import RESULTS_CACHE_TIMEOUT_S, results_cache

__all__ = [
    "ADMIN_USER",
    "ANALYST_ROLE",
    "ANALYST_USER",
    "BUNDLE_DIR",
    "DASHBOARD_SLUG",
    "READER_ROLE",
    "EmbeddedSuperset",
    "admin_password",
    "analyst_password",
    "ensure_reader_role",
    "provision",
    "reader_role_sql",
    "reader_url",
    "superset_env",
]

Echo = Callable[[str], None]
HOST = "127.0.0.1"
ADMIN_USER = "admin"
#: who may view, filter and explore the dashboard's data, and change nothing (no SQL Lab)
ANALYST_USER = "analyst"
ANALYST_ROLE = "Analyst"
#: the PostgreSQL role Superset reads the warehouse with
READER_ROLE = "aq_superset"
#: the only schema it may read
READER_SCHEMA = "gold"
SUPERSET_DIR = REPO_ROOT / "superset"
BUNDLE_DIR = SUPERSET_DIR / "bundle"
CONFIG_PATH = SUPERSET_DIR / "superset_config.py"
PROVISION_SCRIPT = SUPERSET_DIR / "provision.py"
DASHBOARD_SLUG = "air-quality"
START_TIMEOUT_S = 120.0
GUNICORN_WORKERS = 2
_ADMIN_SECRET = "superset_admin_password"
_ANALYST_SECRET = "superset_analyst_password"
_SECRET_KEY = "superset_secret_key"
_READER_SECRET = "postgres_superset_password"


# --- configuration -------------------------------------------------------------------------


def superset_env(settings: Settings) -> dict[str, str]:
    """The environment of every Superset process (gunicorn, the CLI, provisioning).

    It holds Superset's secret key and the metadata URL (Superset needs both to run); the
    admin and warehouse passwords are not in it (the provisioning script gets them on stdin).
    """
    metadata = database_url(settings, "superset").replace(
        "postgresql://", "postgresql+psycopg2://", 1
    )
    # not the main environment's Python settings, nor the project's secrets (API key, URL)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIRTUAL_ENV", "PYTHON")) and k not in SECRET_VARS
    }
    env.update(
        SUPERSET_CONFIG_PATH=str(CONFIG_PATH),
        SUPERSET_SECRET_KEY=get_or_create_secret(settings.secrets_dir, _SECRET_KEY, nbytes=42),
        SUPERSET_METADATA_URI=metadata,
        SUPERSET_HOME=str(settings.superset_home),
        # chart results, kept until the next openaq_elt run (aqi/services/superset_cache.py)
        SUPERSET_RESULTS_CACHE=results_cache(settings),
        SUPERSET_RESULTS_CACHE_TIMEOUT=str(RESULTS_CACHE_TIMEOUT_S),
        # the offline map's borders (installed by `aqi setup --only superset`)
        SUPERSET_BASEMAP_ARCHIVE=str(basemap_archive()),
        FLASK_APP="superset.app:create_app()",
        # no telemetry (the front end's pixel is also blocked by superset_config.py's CSP)
        SCARF_ANALYTICS="false",
        DO_NOT_TRACK="1",
        PATH=f"{superset_env_dir() / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def admin_password(settings: Settings) -> tuple[str, bool]:
    """The admin password and whether it was generated just now (to show it once)."""
    existed = secret_path(settings.secrets_dir, _ADMIN_SECRET).is_file()
    return get_or_create_secret(settings.secrets_dir, _ADMIN_SECRET), not existed


def analyst_password(settings: Settings) -> str:
    """The analyst's generated password (AQ_HOME/secrets/superset_analyst_password, 0600)."""
    return get_or_create_secret(settings.secrets_dir, _ANALYST_SECRET)


def reader_password(settings: Settings) -> str:
    return get_or_create_secret(settings.secrets_dir, _READER_SECRET)


def reader_url(settings: Settings, *, driver: str = "postgresql") -> str:
    """URL of the warehouse as :data:`READER_ROLE` (same server and database as the project's)."""
    parts = urlsplit(database_url(settings))
    host = parts.hostname or HOST
    host = f"[{host}]" if ":" in host else host
    port = parts.port or 5432
    password = quote(reader_password(settings), safe="")
    query = f"?{parts.query}" if parts.query else ""
    return f"{driver}://{READER_ROLE}:{password}@{host}:{port}{parts.path}{query}"


# --- the read-only role ----------------------------------------------------------------------


def reader_role_sql(settings: Settings) -> str:
    """The SQL that creates/repairs the role, for psql (``-v password=...``), e.g. for a DBA.

    Run it as a superuser (or a role with CREATEROLE that owns the warehouse), connected to the
    warehouse database. It is what ``aqi dashboards up`` does itself on the embedded server.
    """
    warehouse = urlsplit(database_url(settings)).path.lstrip("/") or DATABASES[0]
    owner = urlsplit(database_url(settings)).username or APP_ROLE
    secret = secret_path(settings.secrets_dir, _READER_SECRET)
    reader_password(settings)  # generated now if missing: the psql line below reads it
    lines = [
        f"-- The read-only role of Superset: database {warehouse}, schema {READER_SCHEMA}.",
        "-- Run it once as a superuser, connected to that database:",
        f'--   psql -v password="$(cat {secret})" -f role.sql',
        f"-- and revoke CONNECT on the server's other databases from PUBLIC or {READER_ROLE}.",
        (
            f"SELECT 'CREATE ROLE {READER_ROLE} LOGIN' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{READER_ROLE}') \\gexec"
        ),
        *(
            f"{statement};"
            for statement in _reader_statements(warehouse, owner, password=":'password'")
        ),
    ]
    return "\n".join(lines) + "\n"


def _reader_statements(warehouse: str, owner: str, *, password: str) -> list[str]:
    """Statements (as text) that give READER_ROLE exactly its privileges; idempotent."""
    role, schema = READER_ROLE, READER_SCHEMA
    return [
        # the role (created by ensure_reader_role when missing)
        (
            f"ALTER ROLE {role} WITH LOGIN PASSWORD {password} NOSUPERUSER NOCREATEDB "
            "NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20"
        ),
        # belt and braces: its sessions start read-only and cannot run away
        f"ALTER ROLE {role} SET default_transaction_read_only = on",
        f"ALTER ROLE {role} SET statement_timeout = '120s'",
        # connect to the warehouse only, and no temporary tables there
        f"GRANT CONNECT ON DATABASE {warehouse} TO {role}",
        f"REVOKE TEMPORARY ON DATABASE {warehouse} FROM PUBLIC",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        # gold: the schema (created empty if dbt has not run yet) and every table in it, now
        # and when dbt (as the owner role) creates or re-creates one
        f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner}",
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}",
        (
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} "
            f"GRANT SELECT ON TABLES TO {role}"
        ),
    ]


def ensure_reader_role(settings: Settings, echo: Echo = print) -> None:
    """Create or repair :data:`READER_ROLE` (embedded server); check it (external server)."""
    if settings.embedded_postgres:
        _provision_reader_role(settings)
        echo(f"superset: role {READER_ROLE} reads schema {READER_SCHEMA} of database aq only")
    problem = _reader_problem(settings)
    if problem is None:
        return
    if settings.embedded_postgres:
        raise ServiceError(f"superset: role {READER_ROLE} does not work: {problem}")
    raise ServiceError(
        f"AQ_DATABASE_URL is external and its role {READER_ROLE} does not work ({problem}): "
        "have a DBA run the SQL of `aqi dashboards role-sql` once"
    )


def _provision_reader_role(settings: Settings) -> None:
    def conninfo(database: str) -> str:
        return psycopg.conninfo.make_conninfo(
            host=HOST, port=settings.pg_port, user=SUPERUSER, dbname=database,
            password=superuser_password(settings),
        )  # fmt: skip

    warehouse = DATABASES[0]
    with psycopg.connect(conninfo("postgres"), autocommit=True) as conn:
        if not conn.execute("select 1 from pg_roles where rolname = %s", (READER_ROLE,)).fetchone():
            conn.execute(sql.SQL("create role {} login").format(sql.Identifier(READER_ROLE)))
        # the other databases of the cluster (Airflow's and Superset's metadata hold secrets):
        # nobody but their owner may connect
        for database in [d for d in DATABASES if d != warehouse] + ["postgres"]:
            conn.execute(
                sql.SQL("revoke connect, temporary on database {} from public").format(
                    sql.Identifier(database)
                )
            )
    with psycopg.connect(conninfo(warehouse), autocommit=True) as conn:
        password = sql.Literal(reader_password(settings)).as_string(conn)
        for statement in _reader_statements(warehouse, APP_ROLE, password=password):
            conn.execute(statement.encode())


def missing_gold_tables(settings: Settings, *, bundle: Path = BUNDLE_DIR) -> list[str]:
    """The gold tables the dashboard needs (its bundle's datasets read them) that do not
    exist yet (dbt has not built them)."""
    from aqi.dashboards_bundle import load_bundle

    needed = load_bundle(bundle).gold_tables()
    try:
        with psycopg.connect(reader_url(settings), connect_timeout=5) as conn:
            found = {
                row[0]
                for row in conn.execute(
                    "select table_name from information_schema.tables where table_schema = %s",
                    (READER_SCHEMA,),
                )
            }
    except psycopg.Error:
        return [f"{READER_SCHEMA}.{t}" for t in needed]
    return [f"{READER_SCHEMA}.{t}" for t in needed if t not in found]


def _reader_problem(settings: Settings) -> str | None:
    """None when the role can log in and read gold's catalog, else what went wrong."""
    try:
        with psycopg.connect(reader_url(settings), connect_timeout=5) as conn:
            ok = conn.execute(
                "select has_schema_privilege(current_user, %s, 'USAGE')", (READER_SCHEMA,)
            ).fetchone()
            if not ok or not ok[0]:
                return f"no USAGE on schema {READER_SCHEMA}"
    except psycopg.Error as exc:
        return first_line(exc)
    return None


# --- metadata and provisioning -----------------------------------------------------------------


def prepare_metadata(settings: Settings, env: dict[str, str], echo: Echo = print) -> bool:
    """``superset db upgrade`` + ``superset init``, once per lock file and metadata database.

    Returns True when they ran. The stamp (under ``AQ_HOME/superset``) names the lock file's
    hash and the database; it also records the database's migration version, so a metadata
    database created afresh (or migrated by someone else) is upgraded again.
    """
    settings.superset_home.mkdir(parents=True, exist_ok=True)
    target = env["SUPERSET_METADATA_URI"].rsplit("@", 1)[-1]
    lock = (SUPERSET_DIR / "uv.lock").read_bytes()
    key = hashlib.sha256(lock + target.encode()).hexdigest()[:16]
    stamp = settings.superset_home / f".metadata-{key}"
    if stamp.is_file() and stamp.read_text().strip() == (_alembic_version(settings) or ""):
        return False
    echo("superset: preparing the metadata database (superset db upgrade, superset init) ...")
    started = time.monotonic()
    _run_superset(["db", "upgrade"], env, settings)
    _run_superset(["init"], env, settings)
    stamp.write_text((_alembic_version(settings) or "") + "\n")
    echo(f"superset: metadata ready in {time.monotonic() - started:.0f} s")
    return True


def _alembic_version(settings: Settings) -> str | None:
    try:
        with psycopg.connect(database_url(settings, "superset"), connect_timeout=5) as conn:
            row = conn.execute("select version_num from alembic_version").fetchone()
            return row[0] if row else None
    except psycopg.Error:
        return None


def provision(
    settings: Settings, env: dict[str, str], echo: Echo = print, *, bundle: Path = BUNDLE_DIR
) -> dict:
    """Admin user + the bundle (superset/provision.py); returns its summary (ids by UUID).

    The bundle is checked first (:func:`aqi.dashboards_bundle.check_bundle`).
    """
    from aqi.dashboards_bundle import check_bundle

    check_bundle(bundle)  # a broken reference fails here, naming the file
    password, _ = admin_password(settings)
    request = {
        "bundle": str(bundle.resolve()),
        "admin": {"username": ADMIN_USER, "password": password},
        "analyst": {
            "username": ANALYST_USER,
            "password": analyst_password(settings),
            "role": ANALYST_ROLE,
        },
        "warehouse": {
            "uri": reader_url(settings, driver="postgresql+psycopg2"),
            "password": reader_password(settings),
        },
    }
    where = bundle.resolve()
    where = where.relative_to(REPO_ROOT) if where.is_relative_to(REPO_ROOT) else where
    echo(f"superset: provisioning {where} ...")
    result = subprocess.run(
        [str(_superset_python()), str(PROVISION_SCRIPT)], input=json.dumps(request), env=env,
        cwd=settings.superset_home, capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise ServiceError("superset: provisioning failed:\n" + "\n".join(tail))
    for line in lines[:-1]:
        if line.startswith("provision:"):
            echo("superset: " + line.removeprefix("provision: "))
    summary = json.loads(lines[-1])
    echo(
        f"superset: provisioned {len(summary['dashboards'])} dashboard(s), "
        f"{len(summary['charts'])} charts, {len(summary['datasets'])} datasets"
    )
    return summary


def _run_superset(args: Sequence[str], env: dict[str, str], settings: Settings) -> None:
    executable = superset_env_dir() / "bin" / "superset"
    if not executable.exists():
        raise ServiceError("Superset's environment is missing: run `aqi setup`")
    result = subprocess.run(
        [str(executable), *args], env=env, cwd=settings.superset_home, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise ServiceError(f"superset {' '.join(args)} failed:\n" + "\n".join(tail))


def _superset_python() -> Path:
    python = superset_env_dir() / "bin" / "python"
    if not python.exists():
        raise ServiceError("Superset's environment is missing: run `aqi setup`")
    return python


# --- the web server ----------------------------------------------------------------------------


class EmbeddedSuperset:
    """Start, stop and describe the project's own Superset (gunicorn)."""

    name = "superset"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = settings.superset_port
        self.url = f"http://{HOST}:{self.port}"
        self.pidfile = PidFile(settings.run_dir / "superset.pid")
        self.log_path = settings.logs_dir / "superset.log"

    @property
    def dashboard_url(self) -> str:
        return f"{self.url}/superset/dashboard/{DASHBOARD_SLUG}/"

    def up(self, echo: Echo = print, *, bundle: Path = BUNDLE_DIR) -> dict:
        """Role, metadata, provisioning, then gunicorn (if not running) until /health answers."""
        record = self.pidfile.live()
        if record is None and kill_leftovers(self.pidfile, port=self.port):
            echo("superset: killed the workers of a gunicorn that died")
        if record is None and port_is_open(HOST, self.port):
            raise ServiceError(
                f"AQ_SUPERSET_PORT: {HOST}:{self.port} is already in use by another program; "
                "set AQ_SUPERSET_PORT to a free port"
            )
        env = superset_env(self.settings)
        if not Path(env["SUPERSET_BASEMAP_ARCHIVE"]).is_file():
            raise ServiceError(
                f"the map's borders are not installed ({env['SUPERSET_BASEMAP_ARCHIVE']}): "
                "run `aqi setup --only superset`"
            )
        ensure_reader_role(self.settings, echo)
        prepare_metadata(self.settings, env, echo)
        provision(self.settings, env, echo, bundle=bundle)
        missing = missing_gold_tables(self.settings)
        if missing:
            echo(
                f"superset: WARNING: {', '.join(missing)} do not exist yet, so charts show "
                "errors: build the warehouse (aqi dbt build, or aqi airflow run-once)"
            )
        if record is not None and self.healthy():
            echo(f"superset: already running (pid {record.pid}, {self.url})")
            return self.status()
        if record is not None:  # running but not answering: restart it
            stop_process(record, timeout=30, group=True)
        self.pidfile.remove()
        started = time.monotonic()
        echo(f"superset: starting gunicorn on {self.url} ...")
        proc = spawn_daemon(
            self._gunicorn_argv(), log_path=self.log_path, env=env, cwd=self.settings.superset_home
        )
        self.pidfile.write(proc.pid, "superset (gunicorn)", self.url)
        ready = wait_until(
            lambda: proc.poll() is not None or self.healthy(), timeout=START_TIMEOUT_S, interval=0.5
        )
        if not ready or proc.poll() is not None:
            if proc.poll() is None:
                record = self.pidfile.live()
                if record is not None:
                    stop_process(record, timeout=10, group=True)
            self.pidfile.remove()
            raise ServiceError(f"superset did not become healthy: see {self.log_path}")
        echo(f"superset: ready in {time.monotonic() - started:.0f} s at {self.url}")
        return self.status()

    def down(self, echo: Echo = print) -> None:
        stop_daemons("superset", [Daemon("gunicorn", self.pidfile, group=True)], echo)

    def running(self) -> bool:
        return self.pidfile.live() is not None

    def status(self) -> dict:
        record = self.pidfile.live()
        return {
            "managed": "embedded",
            "running": record is not None and self.healthy(),
            "pid": record.pid if record else None,
            "url": self.url,
            "dashboard_url": self.dashboard_url,
            "user": ADMIN_USER,
            "password_file": str(secret_path(self.settings.secrets_dir, _ADMIN_SECRET)),
            "analyst_password_file": str(
                secret_path(self.settings.secrets_dir, _ANALYST_SECRET)
            ),
            "reader_role": READER_ROLE,
            "log": str(self.log_path),
        }

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=3) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def _gunicorn_argv(self) -> list[str]:
        gunicorn = superset_env_dir() / "bin" / "gunicorn"
        if not gunicorn.exists():
            raise ServiceError("Superset's environment is missing: run `aqi setup`")
        return [
            str(gunicorn),
            "--bind", f"{HOST}:{self.port}",
            "--workers", str(GUNICORN_WORKERS),
            "--worker-class", "gthread",
            "--threads", "4",
            "--timeout", "120",
            "--limit-request-line", "0",
            "--limit-request-field_size", "0",
            "--access-logfile", "-",
            # gunicorn's control socket is one path per user ($HOME/.gunicorn/gunicorn.ctl):
            # every Superset of every AQ_HOME would share it, and the project does not use it
            "--no-control-socket",
            "superset.app:create_app()",
        ]  # fmt: skip
