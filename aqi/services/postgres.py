"""The embedded PostgreSQL server.

PostgreSQL 16 comes from the ``pgserver`` wheel (or Debian's server where that is present);
we use only its binaries and run the postmaster ourselves, because ``pgserver``'s own
lifecycle ties the server to the Python process that asked for it, while ours must outlive
``aqi services up`` and be stoppable by ``aqi services down``.

It listens on 127.0.0.1 TCP only (no Unix socket: socket paths have a 107-byte limit that
deep ``AQ_HOME`` paths exceed), password-authenticated with generated passwords, and keeps
its data under ``AQ_HOME/postgres/data``. As root it runs under a system user of its own,
since PostgreSQL refuses to run as root; that user then runs a copy of the server's files
inside ``AQ_HOME`` (the wheel's folder in the virtualenv may be private), and nothing outside
``AQ_HOME`` changes mode: a folder above it that the user cannot enter is an error.

Each database has its own owner role, as in docker-compose (:data:`DATABASE_OWNERS`): ``aq``
the warehouse, ``airflow`` and ``superset`` their metadata; only the owner (and Superset's
reader, on the warehouse) may connect to a database.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from aqi.core.config import Settings
from aqi.core.connections import (
    APP_ROLE,
    DATABASE_OWNERS,
    DATABASES,
    SUPERUSER,
    embedded_database_url,
    role_password,
    superuser_password,
)
from aqi.core.errors import ServiceError
from aqi.core.secrets import write_private
from aqi.services.process import (
    Daemon,
    PidFile,
    as_user,
    port_is_open,
    spawn_daemon,
    stop_daemons,
    wait_until,
)

__all__ = ["EmbeddedPostgres", "find_postgres_bin"]

HOST = "127.0.0.1"
#: system user the server runs as when `aqi` runs as root
SYSTEM_USER = "aqpostgres"
START_TIMEOUT_S = 60.0

_SERVER_SETTINGS = """
# written by aqi (aqi/services/postgres.py); listen address and port are passed on the command line
max_connections = 200
shared_buffers = 256MB
timezone = 'UTC'
log_timezone = 'UTC'
unix_socket_directories = ''
"""


def find_postgres_bin() -> Path:
    """The folder with ``postgres``/``initdb``: the pgserver wheel's, else Debian's (>= 15)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    debian = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if debian and debian[-1].parent.name.isdigit() and int(debian[-1].parent.name) >= 15:
        return debian[-1]
    raise ServiceError(
        "no PostgreSQL server binaries found: run `make env` (installs the pgserver wheel) "
        "or `apt-get install postgresql` (15 or newer)"
    )


class EmbeddedPostgres:
    """Start, stop and describe the project's own PostgreSQL."""

    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = settings.pg_port
        self.data_dir = settings.postgres_data_dir
        self.log_path = settings.logs_dir / "postgres.log"
        self.pidfile = PidFile(settings.run_dir / "postgres.pid")

    # --- public -----------------------------------------------------------------------
    def up(self, echo=print) -> dict:
        """Start the server if it is not running, then create roles and databases."""
        record = self.pidfile.live()
        if record is not None:
            echo(f"postgres: already running (pid {record.pid}, {HOST}:{self.port})")
        else:
            self.pidfile.remove()
            user = self._system_user()
            bin_dir = self._server_bin(user)
            self._init_data_dir(bin_dir, user, echo)
            self._clear_stale_lock()
            if port_is_open(HOST, self.port):
                raise ServiceError(
                    f"AQ_PG_PORT: {HOST}:{self.port} is already in use by another program; "
                    "set AQ_PG_PORT to a free port"
                )
            started = time.monotonic()
            echo(f"postgres: starting {self._version(bin_dir)} on {HOST}:{self.port} ...")
            record = self._start(bin_dir, user)
            echo(f"postgres: ready in {time.monotonic() - started:.1f} s (pid {record.pid})")
        self._provision()
        return self.status()

    def down(self, echo=print) -> None:
        """Stop the server we started (fast shutdown: clients are disconnected)."""
        import signal

        stop_daemons(
            "postgres", [Daemon("", self.pidfile, stop_signal=signal.SIGINT, stop_timeout=60)], echo
        )

    def status(self) -> dict:
        record = self.pidfile.live()
        return {
            "managed": "embedded",
            "running": record is not None and port_is_open(HOST, self.port),
            "pid": record.pid if record else None,
            "host": HOST,
            "port": self.port,
            "database": DATABASES[0],
            "user": APP_ROLE,
            "url": embedded_database_url(self.settings),
            "data_dir": str(self.data_dir),
            "log": str(self.log_path),
        }

    # --- steps --------------------------------------------------------------------------
    def _system_user(self) -> tuple[int, int] | None:
        """(uid, gid) to run as when we are root, creating the system user once."""
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 SYSTEM_USER],
                check=True, capture_output=True,
            )  # fmt: skip
            entry = pwd.getpwnam(SYSTEM_USER)
        return entry.pw_uid, entry.pw_gid

    def _server_bin(self, user: tuple[int, int] | None) -> Path:
        """The ``bin`` folder to run the server from.

        As ourselves: the install as found. As root, the server runs as :data:`SYSTEM_USER`,
        which must reach its files without our changing any mode outside ``AQ_HOME``: AQ_HOME
        must be reachable as it is, and the wheel's install (a self-contained tree under the
        virtualenv, which may be private) is copied into ``AQ_HOME/postgres``.
        """
        source = find_postgres_bin()
        if user is None:
            return source
        _require_reachable(self.settings.aq_home, user)
        postgres_dir = self.data_dir.parent
        postgres_dir.mkdir(parents=True, exist_ok=True)
        postgres_dir.chmod(postgres_dir.stat().st_mode | stat.S_IXOTH)  # inside AQ_HOME: ours
        if not _relocatable(source):
            return source  # a system install (Debian's): readable by every user already
        return _private_install(source, postgres_dir)

    def _init_data_dir(self, bin_dir: Path, user: tuple[int, int] | None, echo) -> None:
        if (self.data_dir / "PG_VERSION").is_file():
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ServiceError(
                f"postgres: {self.data_dir} is not empty but holds no database cluster; "
                "move it away or choose another AQ_HOME"
            )
        echo(f"postgres: creating a new database cluster in {self.data_dir}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.data_dir.parent / "initdb.pw"
        write_private(pwfile, superuser_password(self.settings) + "\n")
        try:
            if user is not None:
                os.chown(self.data_dir, *user)
                os.chown(pwfile, *user)
            os.chmod(self.data_dir, 0o700)
            os.chmod(pwfile, 0o600)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:
                result = subprocess.run(
                    [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                     f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                     "--locale=C.UTF-8", "--no-instructions"],
                    stdout=log, stderr=subprocess.STDOUT, check=False, **as_user(user),
                )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise ServiceError(f"postgres: initdb failed, see {self.log_path}")
        conf = self.data_dir / "postgresql.conf"
        conf.write_text(conf.read_text() + _SERVER_SETTINGS)

    def _clear_stale_lock(self) -> None:
        """Remove ``postmaster.pid`` left by a killed server, unless its process still runs."""
        lock = self.data_dir / "postmaster.pid"
        try:
            pid = int(lock.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        if _is_postgres_of(pid, self.data_dir):
            # A server on our data dir that lost its pid file (e.g. AQ_HOME/run was removed):
            # stop it so that we start one we track, rather than running two views of it.
            os.kill(pid, 2)
            wait_until(lambda: not _is_postgres_of(pid, self.data_dir), timeout=60)
        lock.unlink(missing_ok=True)

    def _start(self, bin_dir: Path, user: tuple[int, int] | None):
        argv = [str(bin_dir / "postgres"), "-D", str(self.data_dir),
                "-c", f"listen_addresses={HOST}", "-c", f"port={self.port}"]  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            proc = spawn_daemon(argv, log_path=self.log_path, user=user)
            record = self.pidfile.write(proc.pid, "postgres", f"{HOST}:{self.port}")
            if (
                wait_until(
                    lambda proc=proc: proc.poll() is not None or self._accepts_connections(),
                    timeout=max(1.0, deadline - time.monotonic()),
                    interval=0.2,
                )
                and proc.poll() is None
            ):
                return record
            self.pidfile.remove()
            if proc.poll() is None:
                proc.kill()
                raise ServiceError(
                    f"postgres: not ready after {START_TIMEOUT_S:.0f} s, see {self.log_path}"
                )
            # After a kill -9 the old server's children can hold its shared memory for a
            # moment ("pre-existing shared memory block is still in use"): retry until they go.
            if "shared memory block" in _tail(self.log_path) and time.monotonic() < deadline:
                time.sleep(1)
                continue
            raise ServiceError(
                f"postgres: the server exited during start-up: {_last_error(self.log_path)} "
                f"(full log: {self.log_path})"
            )

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self._superuser_conninfo("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                raise ServiceError(
                    "postgres: the superuser password in "
                    f"{self.settings.secrets_dir} does not match the cluster in {self.data_dir}; "
                    "restore the secret or remove AQ_HOME/postgres to start afresh"
                ) from None
            return False

    def _provision(self) -> None:
        """Create the owner roles and their databases; safe to run again (idempotent).

        Each database is private to its owner (CONNECT revoked from PUBLIC, as in
        docker/postgres/create-databases.sh). A database an older version made (all three
        were owned by ``aq``) is handed over to its own role here.
        """
        with psycopg.connect(self._superuser_conninfo("postgres"), autocommit=True) as conn:
            for role in dict.fromkeys(DATABASE_OWNERS.values()):
                exists = conn.execute(
                    "select 1 from pg_roles where rolname = %s", (role,)
                ).fetchone()
                verb = "alter" if exists else "create"
                conn.execute(
                    sql.SQL(verb + " role {} with login password {}").format(
                        sql.Identifier(role), sql.Literal(role_password(self.settings, role))
                    )
                )
            owners = dict(
                conn.execute(
                    "select datname, pg_get_userbyid(datdba) from pg_database "
                    "where datname = any(%s)",
                    (list(DATABASES),),
                ).fetchall()
            )
            for database, owner in DATABASE_OWNERS.items():
                if database not in owners:
                    conn.execute(
                        sql.SQL("create database {} owner {}").format(
                            sql.Identifier(database), sql.Identifier(owner)
                        )
                    )
            for database in (*DATABASES, "postgres"):
                conn.execute(
                    sql.SQL("revoke connect, temporary on database {} from public").format(
                        sql.Identifier(database)
                    )
                )
        for database, owner in DATABASE_OWNERS.items():
            if owners.get(database, owner) != owner:
                self._hand_over(database, owners[database], owner)

    def _hand_over(self, database: str, previous: str, owner: str) -> None:
        """Give ``database`` and every object in it from ``previous`` to ``owner``, atomically.

        ``REASSIGN OWNED`` acts on the objects of the database it runs in, but also on the
        shared objects of the role, its other databases included (PostgreSQL docs,
        REASSIGN OWNED): those are given back to ``previous`` in the same transaction.
        """
        with psycopg.connect(self._superuser_conninfo(database)) as conn, conn.transaction():
            others = [
                row[0]
                for row in conn.execute(
                    "select datname from pg_database where datdba = %s::regrole and datname <> %s",
                    (previous, database),
                )
            ]
            conn.execute(
                sql.SQL("alter database {} owner to {}").format(
                    sql.Identifier(database), sql.Identifier(owner)
                )
            )
            if previous == APP_ROLE:  # never a superuser: it owns the system catalogs
                conn.execute(
                    sql.SQL("reassign owned by {} to {}").format(
                        sql.Identifier(previous), sql.Identifier(owner)
                    )
                )
            for other in others:
                conn.execute(
                    sql.SQL("alter database {} owner to {}").format(
                        sql.Identifier(other), sql.Identifier(previous)
                    )
                )

    def _superuser_conninfo(self, database: str) -> str:
        return psycopg.conninfo.make_conninfo(
            host=HOST, port=self.port, user=SUPERUSER, dbname=database,
            password=superuser_password(self.settings),
        )  # fmt: skip

    @staticmethod
    def _version(bin_dir: Path) -> str:
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
        )
        match = re.search(r"\d+(\.\d+)?", out.stdout)
        return f"PostgreSQL {match.group(0)}" if match else "PostgreSQL"


def _require_reachable(path: Path, user: tuple[int, int]) -> None:
    """Stop unless ``user`` may enter ``path`` and every folder above it (by their modes).

    We never add the permission ourselves: those folders are not ours (a home directory,
    pytest's private temporary root), and widening them would outlive the project.
    """
    folders = [path, *path.parents]
    path.mkdir(parents=True, exist_ok=True)
    for folder in reversed(folders):
        info = folder.stat()
        if info.st_uid == user[0]:
            bit = stat.S_IXUSR
        elif info.st_gid == user[1]:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            raise ServiceError(
                f"postgres: as root the server runs as user {SYSTEM_USER}, which cannot enter "
                f"{folder} (mode {stat.S_IMODE(info.st_mode):o}); choose an AQ_HOME that "
                f"{SYSTEM_USER} can reach, or run aqi as a non-root user"
            )


def _relocatable(bin_dir: Path) -> bool:
    """Whether the install is one self-contained tree (the pgserver wheel's ``pginstall``),
    which runs from a copy; Debian's spreads over /usr/lib and /usr/share and cannot."""
    return (bin_dir.parent / "share" / "postgresql").is_dir() and (bin_dir.parent / "lib").is_dir()


def _private_install(bin_dir: Path, postgres_dir: Path) -> Path:
    """A copy of the install under ``postgres_dir``, readable by all; its ``bin`` folder.

    The wheel's binaries load shared libraries from the wheel's ``pgserver.libs`` folder by
    a relative path (``$ORIGIN/../../../pgserver.libs``, auditwheel's), so the copy keeps
    that layout: ``install-KEY/pgserver/pginstall`` and ``install-KEY/pgserver.libs``. One
    copy per source and build (the key), made under a temporary name and renamed when
    complete, so an interrupted copy is never used; copies of other builds are removed.
    """
    install = bin_dir.parent
    package = install.parent
    libs = package.with_name(package.name + ".libs")
    built = (bin_dir / "postgres").stat()
    key = hashlib.sha256(f"{install}|{built.st_size}|{built.st_mtime_ns}".encode()).hexdigest()[:12]
    target = postgres_dir / f"install-{key}"
    copied_bin = target / package.name / install.name / "bin"
    if not (copied_bin / "postgres").is_file():
        partial = postgres_dir / f".install-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(install, partial / package.name / install.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for dirpath, _dirs, files in os.walk(partial):
            os.chmod(dirpath, 0o755)
            for name in files:
                file = Path(dirpath, name)
                if not file.is_symlink():
                    mode = file.stat().st_mode & 0o777
                    file.chmod(mode | 0o444 | (0o111 if mode & stat.S_IXUSR else 0))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    for old in postgres_dir.glob("install-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return copied_bin


def _is_postgres_of(pid: int, data_dir: Path) -> bool:
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return bool(cmdline) and cmdline[0].endswith("postgres") and str(data_dir) in cmdline


def _tail(path: Path, size: int = 4000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def _last_error(path: Path) -> str:
    lines = [ln for ln in _tail(path).splitlines() if "FATAL" in ln or "ERROR" in ln]
    return lines[-1].strip() if lines else "no error in the log"
