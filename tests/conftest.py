"""Shared fixtures: an isolated AQ_HOME and the real embedded services, started once.

The session's services (one PostgreSQL and one broker for every xdist worker of the run) run
in a temporary AQ_HOME on free ports, so a developer's own `aqi services up` (default ports,
./.aq) is never touched by the tests, and a `.env` in the checkout is not read (subprocesses
run with a temporary working directory).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

# urllib3's import probes for IPv6 by binding ::1 (urllib3.util.connection.HAS_IPV6): imported
# here, before any test, so a unit test that happens to import it first is not taken for one
# that binds a socket (unit_tests_stay_in_process)
import urllib3  # noqa: F401

from aqi.core.config import ENV_VARS, Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
AQI = str(Path(sys.executable).parent / "aqi")
#: as root the embedded PostgreSQL runs as user aqpostgres, which must enter every folder
#: above its AQ_HOME; `aqi` never widens a folder outside AQ_HOME, so the tests make theirs so
AS_ROOT = os.geteuid() == 0
#: the JVM options of the tests' own daemons, which live seconds to minutes: their Kafka
#: brokers (isolated_env) and Spark standalone clusters (test_spark_cluster)
SHORT_LIVED_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
#: the pytest-xdist worker running this process ("main" without xdist)
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """As root without --basetemp: temporary folders in a fresh /tmp/aq-pytest-*, not under
    pytest's per-user root (/tmp/pytest-of-root), which is 0700 and reset to 0700 by every
    session (docs/field-notes.md), so no AQ_HOME under it is reachable."""
    if AS_ROOT and config.option.basetemp is None:
        import tempfile

        config.option.basetemp = tempfile.mkdtemp(prefix="aq-pytest-")
        config.stash[_OWN_BASETEMP] = Path(config.option.basetemp)


_OWN_BASETEMP = pytest.StashKey[Path]()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the run's session services; remove the folder of pytest_configure after a
    passing session, keep it for a failing one (its logs), saying where."""
    _stop_session_stack(session.config)
    own = session.config.stash.get(_OWN_BASETEMP, None)
    if own is None:
        return
    if exitstatus == 0:
        import shutil

        shutil.rmtree(own, ignore_errors=True)
    else:
        print(f"\ntemporary folders of this session: {own}", file=sys.stderr)


@pytest.fixture(scope="session", autouse=True)
def reachable_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """As root: the base temporary folder (with xdist, the run's folder above it too) and
    every folder made in it 0711 (pytest makes them 0700), so that a test's AQ_HOME there is
    reachable by the server's system user. These folders are the tests' own; nothing above
    the run's folder changes."""
    if not AS_ROOT:
        return
    base = tmp_path_factory.getbasetemp()
    base.chmod(0o711)
    if WORKER != "main":  # an xdist worker's base is popen-<worker> in the run's own folder
        base.parent.chmod(0o711)
    mktemp = tmp_path_factory.mktemp

    def reachable_mktemp(basename: str, numbered: bool = True) -> Path:
        path = mktemp(basename, numbered)
        path.chmod(0o711)
        return path

    tmp_path_factory.mktemp = reachable_mktemp  # type: ignore[method-assign]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test is ``unit`` or ``integration``, never both: a test not marked integration
    is a unit test (before ``-m`` selects), and :func:`unit_tests_stay_in_process` holds it to
    that. A file of unit tests marks the few that start processes or servers integration.

    The ``drill`` tests (a minute or more each) run first: pytest-xdist hands each worker its
    next tests before it needs them, and a short test queued behind a long one near the end
    finishes the run on one worker while the other has nothing left to do (with the drills
    where they were found, the last ~40 s of a run, docs/benchmarks.md)."""
    both = [i.nodeid for i in items if i.get_closest_marker("unit") and i.get_closest_marker("integration")]  # fmt: skip
    if both:
        raise pytest.UsageError(f"marked both unit and integration: {', '.join(both)}")
    for item in items:
        if item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.unit)
    items.sort(key=lambda item: item.get_closest_marker("drill") is None)  # stable: else as found


@pytest.fixture(autouse=True)
def unit_tests_stay_in_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """The ``unit`` marker's promise, enforced: no subprocess, no fork, no network socket
    (a Unix socket is not the network). Such a test belongs to ``integration``: it is slower,
    and what it waits on can be late on a busy machine. What the test did is recorded, not
    refused (a refusal mid-test can hang it), and fails it at teardown."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    seen: list[str] = []

    def recorded(original, what: str):
        def call(*args: object, **kwargs: object) -> object:
            seen.append(what)
            return original(*args, **kwargs)

        return call

    def inet_only(method: str):
        original = getattr(socket.socket, method)

        def checked(self: socket.socket, *args: object, **kwargs: object) -> object:
            if self.family in (socket.AF_INET, socket.AF_INET6):
                seen.append(f"{method}s a network socket")
            return original(self, *args, **kwargs)

        return checked

    with pytest.MonkeyPatch.context() as patch:
        execute = subprocess.Popen._execute_child  # type: ignore[attr-defined]
        patch.setattr(subprocess.Popen, "_execute_child", recorded(execute, "starts a process"))
        for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
            if hasattr(os, name):
                patch.setattr(os, name, recorded(getattr(os, name), f"calls os.{name}"))
        for method in ("connect", "connect_ex", "bind"):
            patch.setattr(socket.socket, method, inet_only(method))
        yield
    if seen:
        pytest.fail(
            f"{request.node.nodeid} is marked unit but {', '.join(sorted(set(seen)))}:"
            " mark it integration",
            pytrace=False,
        )


class FakeClock:
    """A clock for the rate limiter whose ``sleep`` advances time instead of waiting."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _ephemeral_ports() -> range:
    """The kernel's range for the local ports of outgoing connections."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default
    return range(low, high + 1)


#: where the tests' services listen: below the ephemeral range, so that no client connection
#: of the run (any of them takes its local port from that range) can hold a port between the
#: moment it was found free and the moment a server binds it ("Address already in use": a
#: 3-broker drill once lost a controller port that way). The top ports are left for the
#: neighbours the product takes next to AQ_KAFKA_PORT (the other nodes of a cluster).
_TEST_PORTS = range(10000, max(10001, min(_ephemeral_ports().start, 32768) - 16))


def free_port() -> int:
    """A TCP port of :data:`_TEST_PORTS` that can be bound right now, chosen at random."""
    import random

    candidates = random.SystemRandom()
    for _ in range(1000):
        port = candidates.randrange(_TEST_PORTS.start, _TEST_PORTS.stop)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {_TEST_PORTS}")


def listening_sockets(pids: Iterable[int]) -> list[tuple[str, int, str, int]]:
    """What these processes and their descendants listen on: (process name, pid, address,
    port) per TCP listener or unconnected UDP socket, IPv4-mapped addresses unmapped."""
    import psutil

    tree: dict[int, str] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                tree[proc.pid] = proc.name()
        except psutil.NoSuchProcess:
            continue
    found = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid not in tree or not conn.laddr:
            continue
        if conn.type == socket.SOCK_STREAM and conn.status != psutil.CONN_LISTEN:
            continue
        if conn.type == socket.SOCK_DGRAM and conn.raddr:
            continue  # a connected UDP socket (a DNS lookup) listens for nobody
        address = conn.laddr.ip.removeprefix("::ffff:")
        found.add((tree[conn.pid], conn.pid, address, conn.laddr.port))
    return sorted(found)


def project_pids(settings: Settings) -> list[int]:
    """Every live process the project started in this AQ_HOME (one pid file each in
    ``AQ_HOME/run``: PostgreSQL, Kafka nodes, Airflow, Superset, the demo's workers)."""
    from aqi.services.process import PidFile

    records = (PidFile(path).live() for path in sorted(settings.run_dir.glob("*.pid")))
    return [record.pid for record in records if record is not None]


def driver_jvm(pid: int):
    """The Spark driver's JVM (a ``psutil.Process``) among the descendants of ``pid`` (an
    ``aqi stream``, or the ``aqi supervise`` running one): exactly one."""
    import psutil

    (java,) = [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "java"]
    return java


def warehouse_owner_leaks(settings: Settings, pids: Iterable[int]) -> list[str]:
    """Where these processes or their descendants hold the warehouse owner's credentials:
    its password, or a URL as role ``aq``, in their environment or command line."""
    import psutil

    from aqi.core.connections import APP_ROLE, app_password

    needles = (app_password(settings).encode(), f"://{APP_ROLE}:".encode())
    leaks = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in tree:
            for part in ("environ", "cmdline"):
                try:
                    text = Path(f"/proc/{proc.pid}/{part}").read_bytes()
                except OSError:
                    continue
                if any(needle in text for needle in needles):
                    leaks.append(f"{proc.pid} {' '.join(proc.cmdline()[:3])}: {part}")
    return leaks


def off_loopback(sockets: Iterable[tuple[str, int, str, int]]) -> list[tuple[str, int, str, int]]:
    """The sockets of :func:`listening_sockets` that another machine could reach."""
    return [s for s in sockets if not ipaddress.ip_address(s[2]).is_loopback]


def isolated_env(aq_home: Path, **overrides: str) -> dict[str, str]:
    """os.environ without any project variable, plus a private AQ_HOME and free ports.

    dbt's target and log folders are this worker's own (dbt_project/target/pytest-<worker>):
    tests running at once in other workers must not read or overwrite each other's manifest,
    run results or partial-parse state, while the tests of one worker share the partial
    parse (a fresh folder per test would parse the whole project each time)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(
        AQ_HOME=str(aq_home),
        DBT_TARGET_PATH=str(REPO_ROOT / "dbt_project" / "target" / f"pytest-{WORKER}"),
        DBT_LOG_PATH=str(REPO_ROOT / "dbt_project" / "logs" / f"pytest-{WORKER}"),
        AQ_PG_PORT=str(free_port()),
        AQ_KAFKA_PORT=str(free_port()),
        AQ_AIRFLOW_PORT=str(free_port()),
        AQ_SUPERSET_PORT=str(free_port()),
        AQ_DOCS_PORT=str(free_port()),
        # a test's broker lives seconds to minutes: C1 alone and the serial collector cost
        # ~40% less CPU to start and while idle than Kafka's G1 and C2 (docs/benchmarks.md)
        KAFKA_JVM_PERFORMANCE_OPTS=SHORT_LIVED_JVM_OPTIONS,
    )
    env.update(overrides)
    return env


def run_aqi(
    args: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the real `aqi` console script."""
    return subprocess.run(
        [AQI, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_aqi_dbt(
    args: list[str], env: Mapping[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """`aqi dbt <args>` in this process: the arguments and environment `aqi dbt` gives its
    child (:func:`aqi.core.warehouse.dbt_invocation`), run through dbt's Python entry point
    (dbtRunner) in the test's own process.

    Why: importing dbt costs ~2 s of CPU, nearly all of a small command, and the suite runs
    ~35 dbt commands to build its warehouses; here dbt is imported once per worker. The
    result is what run_aqi returns: dbt's exit code (0, 1 for failed nodes, 2 for an error)
    and its output. `aqi dbt` itself (its child process, its exit code) stays tested through
    run_aqi (the docs site's and the stale table's source freshness, Airflow's `dbt parse`).
    """
    import contextlib
    import io

    from dbt.cli.main import dbtRunner

    from aqi.core.warehouse import dbt_invocation

    dbt_args, dbt_env = dbt_invocation(
        load_settings(env, dotenv=cwd / ".env"), list(args), base_env=env
    )
    saved_env, saved_cwd, output = dict(os.environ), Path.cwd(), io.StringIO()
    os.environ.clear()
    os.environ.update(dbt_env)  # dbt reads AQ_DATABASE_URL, DBT_TARGET_PATH ... from here
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            result = dbtRunner().invoke(dbt_args)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    error = result.exception
    code = 0 if result.success else 2 if error is not None else 1
    return subprocess.CompletedProcess(
        ["dbt", *dbt_args], code, output.getvalue(),
        "" if error is None else f"{type(error).__name__}: {error}\n",
    )  # fmt: skip


def read_partition(
    bootstrap: str, topic: str, partition: int, start: int, end: int, timeout: float = 60
) -> list:
    """Every record in [start, end) of one partition, in offset order (confluent Messages)."""
    from confluent_kafka import Consumer, TopicPartition

    from aqi.core.topics import client_config

    if end <= start:
        return []
    consumer = Consumer(
        client_config(bootstrap, "tests", **{"group.id": "tests", "enable.auto.commit": False})
    )
    records = []
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while (not records or records[-1].offset() < end - 1) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=10_000, timeout=1.0):
                if message.error() is None and message.offset() < end:
                    records.append(message)
    finally:
        consumer.close()
    return records


def read_records(bootstrap: str, topic: str) -> list:
    """Every record of a topic up to its end, partition after partition (confluent Messages)."""
    from aqi.core.topics import end_offsets

    records = []
    for partition, end in end_offsets(bootstrap, topic).items():
        records.extend(read_partition(bootstrap, topic, partition, 0, end))
    return records


def read_topic(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, dict]]:
    """Every record of a topic as (partition, offset, key, decoded JSON value), up to its end."""
    import json

    return [(m.partition(), m.offset(), m.key(), json.loads(m.value()))
            for m in read_records(bootstrap, topic)]  # fmt: skip


#: the session services' AQ_HOME and ports, written once for every worker of the run
_SESSION_STACK = "session-stack.json"


def _run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the whole run: with xdist the workers' base folders are in it."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if WORKER != "main" else base


@contextmanager
def _run_lock(folder: Path) -> Iterator[None]:
    """One worker of the run at a time (an exclusive lock on a file of the run's folder)."""
    import fcntl

    with (folder / "session-stack.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def aq_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment of the test session's services; also applied to os.environ.

    One AQ_HOME and one set of ports for the whole run: the first worker that asks chooses
    them, the others read them (each keeps its own dbt target folder, isolated_env)."""
    import json

    folder = _run_folder(tmp_path_factory)
    with _run_lock(folder):
        shared = folder / _SESSION_STACK
        if shared.is_file():
            chosen = json.loads(shared.read_text())
        else:
            home = folder / "session-aq"
            home.mkdir(mode=0o711)
            env = isolated_env(home)
            chosen = {k: env[k] for k in ("AQ_HOME", "AQ_PG_PORT", "AQ_KAFKA_PORT",
                                          "AQ_AIRFLOW_PORT", "AQ_SUPERSET_PORT", "AQ_DOCS_PORT")}  # fmt: skip
            shared.write_text(json.dumps(chosen))
    env = isolated_env(Path(chosen["AQ_HOME"]), **chosen)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def aq_settings(aq_env: dict[str, str]) -> Settings:
    return load_settings(aq_env, dotenv=None)


@pytest.fixture(scope="session")
def services(aq_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The real embedded PostgreSQL and broker: one pair for the whole run, every worker's
    tests on it (their own databases and topics). The first worker starts them; the run
    stops them when it ends (:func:`_stop_session_stack`)."""
    from aqi.services import services_up

    with _run_lock(_run_folder(tmp_path_factory)):  # `up` of running services only reports
        return services_up(aq_settings, echo=lambda line: print(line, file=sys.stderr))


def _stop_session_stack(config: pytest.Config) -> None:
    """`aqi services down` for the run's session services, if a worker started them: in the
    process that ran the session (the xdist controller, after every worker ended)."""
    import json

    if hasattr(config, "workerinput"):
        return
    factory = getattr(config, "_tmp_path_factory", None)  # pytest's, set by its tmp_path plugin
    shared = factory.getbasetemp() / _SESSION_STACK if factory is not None else None
    if shared is None or not shared.is_file():
        return
    from aqi.services import services_down

    chosen = json.loads(shared.read_text())
    services_down(load_settings(isolated_env(Path(chosen["AQ_HOME"]), **chosen), dotenv=None),
                  echo=lambda line: None)  # fmt: skip


@contextmanager
def private_stack(
    root: Path, *, kafka_brokers: int = 1, kafka: str | None = None
) -> Iterator[dict]:
    """`aqi services up` in a private AQ_HOME under root, `aqi services down` after.

    For modules that start more on top (Airflow, Superset), or kill what they started, and
    must not share the session's services. ``kafka``: the bootstrap servers of a broker that
    is there already (the session's) for a module that uses none; `up` then starts
    PostgreSQL only, as it does for any external broker. Yields env, cwd, settings and the
    warehouse url.
    """
    from aqi.core.connections import database_url

    env = isolated_env(root / "aq", **({"KAFKA_BOOTSTRAP_SERVERS": kafka} if kafka else {}))
    args = ["services", "up"] + (
        ["--kafka-brokers", str(kafka_brokers)] if kafka_brokers > 1 else []
    )
    try:  # `down` also after an `up` that failed half-way (what it started keeps running)
        result = run_aqi(args, env, root, timeout=300)
        assert result.returncode == 0, result.stderr
        settings = load_settings(env, dotenv=None)
        yield {"env": env, "cwd": root, "settings": settings, "url": database_url(settings)}
    finally:
        run_aqi(["services", "down"], env, root, timeout=300)


#: the xdist group of the tests on :func:`demo_stack`: one worker starts it once for all
DEMO_GROUP = "demo"


@pytest.fixture(scope="session")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`aqi demo` once, exactly as a user runs it (3 simulated locations, 2 days, no
    scheduler), for every test that checks the product end to end or the Airflow DAGs on it.

    One demo instead of one stack per module: the demo already starts PostgreSQL, the broker,
    Superset and the docs site and runs openaq_elt once (`airflow dags test`), which is what
    those tests need. Tests using it carry ``xdist_group(DEMO_GROUP)`` so that one worker
    runs them all. Yields env, cwd, settings, the warehouse url and the demo's output; after
    the last of them `aqi demo --down` must stop every process the demo started.
    """
    from aqi.core.connections import database_url

    root = tmp_path_factory.mktemp("demo")
    env = isolated_env(root / "aq")
    settings = load_settings(env, dotenv=None)
    args = ["demo", "--locations", "3", "--days", "2", "--no-scheduler"]
    try:
        result = run_aqi(args, env, root, timeout=1800)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        yield {"env": env, "cwd": root, "settings": settings, "args": args,
               "url": database_url(settings), "demo": result}  # fmt: skip
    finally:
        down = run_aqi(["demo", "--down"], env, root, timeout=600)
    assert down.returncode == 0, down.stdout + down.stderr
    assert project_pids(settings) == [], "aqi demo --down left processes running"


@contextmanager
def temporary_database(settings: Settings, prefix: str = "test") -> Iterator[str]:
    """A new, empty database on the embedded server (owned by the app role), dropped after."""
    import uuid

    import psycopg
    from psycopg import sql

    from aqi.core.connections import APP_ROLE, SUPERUSER, database_url, superuser_password

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg.conninfo.make_conninfo(
        host="127.0.0.1", port=settings.pg_port, user=SUPERUSER, dbname="postgres",
        password=superuser_password(settings),
    )  # fmt: skip
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} owner {}").format(
            sql.Identifier(name), sql.Identifier(APP_ROLE)))  # fmt: skip
    try:
        yield database_url(settings, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture
def fresh_database(services: dict, aq_settings: Settings) -> Iterator[str]:
    """A new, empty database on the embedded server (owned by the app role), dropped after."""
    with temporary_database(aq_settings) as url:
        yield url


def recreate_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Delete and recreate a topic: same name and partitions, an empty log from offset 0."""
    from confluent_kafka.admin import AdminClient

    from aqi.core.topics import KafkaUnavailable, client_config, end_offsets, ensure_topic

    admin = AdminClient(client_config(bootstrap, "tests"))
    admin.delete_topics([topic])[topic].result(timeout=30)
    deadline = time.monotonic() + 30
    created = False
    while not created and time.monotonic() < deadline:  # deletion completes asynchronously
        try:
            created = ensure_topic(bootstrap, topic, partitions)
        except KafkaUnavailable:  # "marked for deletion"
            pass
        if not created:
            time.sleep(0.2)
    assert created, f"{topic} was not recreated"
    assert end_offsets(bootstrap, topic) == dict.fromkeys(range(partitions), 0)
