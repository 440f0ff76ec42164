"""``aqi demo``: the whole pipeline on simulated OpenAQ data, left running with its dashboards.

Each step is the ``aqi`` command a person would type (run as a child process, output shown),
so the demo is a script of the product rather than a second implementation of it:

1. ``aqi services up`` - PostgreSQL and Apache Kafka;
2. ``aqi replay --simulate`` - the history (30 days x 25 locations by default) on Kafka, once;
   a later run only adds the hours since the previous one (the dashboards stay current);
3. ``aqi stream --available-now`` - into Bronze and raw (Kafka keeps its log on disk, so
   what a first demo put on the topic and did not stream yet is still there after a restart);
4. ``aqi airflow run-once`` - openaq_elt: GX gate on raw, dbt, GX gate on gold, CSV exports;
   not again when nothing it reads changed since its last successful run (no row loaded into
   raw since, no file of the warehouse project, the DAGs, the checks or the ``aqi`` package
   changed since): a re-run of the demo then takes seconds instead of a minute;
5. ``aqi dashboards up`` - Superset with the "Air quality" dashboard;
6. ``aqi docs --background`` - the dbt docs site, served on 127.0.0.1:AQ_DOCS_PORT;
7. ``aqi airflow up`` - the scheduler, so openaq_elt keeps running every 15 minutes.

What was replayed is remembered in ``AQ_HOME/state/demo.json``; ``aqi demo --down`` stops
everything the demo started.

``aqi demo --live`` does the same from OpenAQ (OPENAQ_API_KEY; the world with
AQ_COLLECT_WORLD=1, or locations from AQ_COLLECT_LOCATIONS, AQ_COLLECT_BBOX or
AQ_COLLECT_COUNTRY): instead of the simulator, the last 30 published days of the scope from
OpenAQ's archive (``aqi backfill --source archive``; not for the world alone, which is a
million files a month) and a first ``aqi collect --once``, and afterwards ``aqi collect`` and ``aqi stream`` keep running in
the background, each under ``aqi supervise`` (started again when it dies; pid files under
AQ_HOME/run, logs under AQ_HOME/logs), so the scheduled
openaq_elt finds new readings every 15 minutes.

Public surface: :class:`DemoOptions`, :func:`run_demo`, :func:`stop_demo`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aqi.core.config import DEFAULT_OPENAQ_BASE_URL, Settings
from aqi.core.environments import REPO_ROOT
from aqi.core.errors import AqiError
from aqi.orchestration import run_aqi_command
from aqi.services.process import Daemon, PidFile, spawn_daemon, stop_daemons, wait_until

__all__ = ["DemoOptions", "run_demo", "stop_demo"]

Echo = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    """What the demo simulates and which parts it starts."""

    locations: int = 25
    days: float = 30.0
    seed: int = 42
    dashboards: bool = True
    scheduler: bool = True
    live: bool = False


#: days of history the live demo reads from the archive (the daily and 30-day charts)
ARCHIVE_DAYS = 30
#: the archive publishes a local day's file 72 hours after the day ended
ARCHIVE_DELAY = timedelta(days=3)

#: what openaq_elt runs besides raw's rows (folders of the checkout): a file changed under
#: one of them since its last success makes the demo run it again
ELT_INPUTS = ("dbt_project", "dags", "expectations", "aqi")
#: folders under those that hold outputs and caches, not inputs
_NOT_INPUTS = frozenset({"target", "logs", "dbt_packages", "__pycache__"})

#: seconds the live workers' supervisors are watched after they start (one that ends this
#: soon could not start its worker)
WORKER_SETTLE_S = 5
#: the background commands of ``--live``: name -> aqi arguments
LIVE_WORKERS = {
    "collect": ["collect"],
    "stream": ["stream"],
}


def run_demo(settings: Settings, options: DemoOptions, echo: Echo = print) -> None:
    """Run the demo's steps in order; any failing step stops it with that step's error."""
    if options.live:
        _check_live_settings(settings)
        history = [
            (f"the last {ARCHIVE_DAYS} days from the OpenAQ archive (aqi backfill --source archive)",
             lambda: _archive(settings, echo)),
            ("latest readings from the OpenAQ API (aqi collect --once)",
             lambda: _aqi(["collect", "--once"], echo)),
        ]  # fmt: skip
    else:
        history = [
            ("simulated OpenAQ history onto Kafka", lambda: _replay(settings, options, echo))
        ]
    steps: list[tuple[str, Callable[[], None]]] = [
        ("services: PostgreSQL and Apache Kafka", lambda: _services(settings, echo)),
        *history,
        ("stream: Kafka -> Bronze Parquet + raw.openaq_measurements", lambda: _drain(settings, echo)),
        (
            "openaq_elt once: GX raw -> dbt (one build, a task per model) -> GX gold -> CSV exports",
            lambda: _elt(settings, echo),
        ),
    ]  # fmt: skip
    if options.dashboards:
        steps.append(
            ("Superset: the Air quality dashboard", lambda: _aqi(["dashboards", "up"], echo))
        )
    steps.append(
        ("dbt docs: the warehouse's documentation site", lambda: _aqi(["docs", "--background"], echo))
    )  # fmt: skip
    if options.scheduler:
        steps.append(
            ("Airflow: openaq_elt every 15 minutes", lambda: _aqi(["airflow", "up"], echo))
        )
    if options.live:
        steps.append(
            ("background: aqi collect + aqi stream keep running", lambda: _start_workers(settings, echo))
        )  # fmt: skip
    started = time.monotonic()
    for number, (title, step) in enumerate(steps, 1):
        echo(f"==> [{number}/{len(steps)}] {title}")
        begun = time.monotonic()
        step()
        echo(f"    done in {time.monotonic() - begun:.0f} s")
    echo(f"==> demo ready in {(time.monotonic() - started) / 60:.1f} min")
    _summary(settings, options, echo)


def stop_demo(settings: Settings, echo: Echo = print) -> None:
    """Stop the live workers, the docs site, Superset, Airflow and the services; try all."""
    failed = []
    workers = [Daemon(f"aqi {name}", _worker_pidfile(settings, name), stop_timeout=120, group=True)
               for name in LIVE_WORKERS]  # fmt: skip
    try:
        stop_daemons("demo workers", workers, echo)
    except AqiError as exc:
        failed.append(str(exc))
    downs = (["docs", "--stop"], ["dashboards", "down"], ["airflow", "down"], ["services", "down"])
    for args in downs:
        try:
            _aqi(args, echo)
        except AqiError as exc:
            failed.append(str(exc))
    if failed:
        raise AqiError("; ".join(failed))


def _check_live_settings(settings: Settings) -> None:
    """Fail before starting anything when the live demo cannot work."""
    if settings.openaq_base_url == DEFAULT_OPENAQ_BASE_URL and not settings.openaq_api_key:
        raise AqiError(
            "OPENAQ_API_KEY: the live demo reads the OpenAQ API, which needs a key "
            "(free at https://explore.openaq.org/register)"
        )
    if not (
        settings.collect_world
        or settings.collect_locations
        or settings.collect_bbox
        or settings.collect_country
    ):
        raise AqiError(
            "say which locations the live demo polls: AQ_COLLECT_WORLD=1, AQ_COLLECT_LOCATIONS, "
            "AQ_COLLECT_BBOX or AQ_COLLECT_COUNTRY (e.g. AQ_COLLECT_COUNTRY=IN)"
        )


def _drain(settings: Settings, echo: Echo) -> None:
    """Drain the topic, unless a background ``aqi stream`` (the live demo's) already does."""
    from spark_streaming.job import QUERY_NAME, stream_is_running

    if stream_is_running(settings.checkpoints_dir / QUERY_NAME):
        echo("    a long-running aqi stream is already streaming the topic")
        return
    _aqi(["stream", "--available-now"], echo)


def _elt(settings: Settings, echo: Echo) -> None:
    """openaq_elt once, unless its last successful run already saw everything it reads."""
    current = _elt_is_current(settings)
    if current is not None:
        echo(f"    {current}: not run again (`aqi airflow run-once` runs it anyway)")
        return
    _aqi(["airflow", "run-once"], echo)


def _elt_is_current(settings: Settings) -> str | None:
    """Why openaq_elt's last success is still current, or None when it must run: no success
    recorded, raw missing or empty, a row loaded since, or a file it runs changed since."""
    from aqi.alerts import last_success

    succeeded = last_success(settings)
    if succeeded is None:
        return None
    loaded = _newest_load(settings)
    if loaded is None or loaded >= succeeded:
        return None
    if _newest_change(REPO_ROOT, ELT_INPUTS) >= succeeded:
        return None
    return (f"openaq_elt: nothing new since its last success at {succeeded:%Y-%m-%d %H:%M:%S} "
            f"UTC (raw's newest row loaded at {loaded.astimezone(UTC):%H:%M:%S})")  # fmt: skip


def _newest_load(settings: Settings) -> datetime | None:
    """When raw.openaq_measurements last took a row; None without the table, rows or server."""
    import psycopg

    from aqi.core.connections import database_url

    try:
        with psycopg.connect(database_url(settings), connect_timeout=10) as conn:
            if conn.execute("select to_regclass('raw.openaq_measurements')").fetchone()[0] is None:
                return None
            return conn.execute("select max(loaded_at) from raw.openaq_measurements").fetchone()[0]
    except psycopg.Error:
        return None


def _newest_change(root: Path, folders: tuple[str, ...]) -> datetime:
    """The newest modification time of a file under ``root/<folder>`` (outputs and caches
    left out: dbt's target and logs, ``__pycache__``, dot files)."""
    newest = 0.0
    for folder in folders:
        for path, dirs, files in os.walk(root / folder):
            dirs[:] = [d for d in dirs if d not in _NOT_INPUTS and not d.startswith(".")]
            for name in files:
                if not name.startswith("."):
                    newest = max(newest, os.stat(os.path.join(path, name)).st_mtime)
    return datetime.fromtimestamp(newest, UTC)


def _worker_pidfile(settings: Settings, name: str) -> PidFile:
    return PidFile(settings.run_dir / f"demo-{name}.pid")


def _start_workers(settings: Settings, echo: Echo) -> None:
    """``aqi collect`` and ``aqi stream`` as daemons (each only if not running already).

    Both are started, then watched together for :data:`WORKER_SETTLE_S`: a supervisor that
    ends within that time could not start its worker (a bad setting, a busy checkpoint).
    """
    executable = str(Path(sys.executable).with_name("aqi"))
    started = {}
    for name, args in LIVE_WORKERS.items():
        pidfile = _worker_pidfile(settings, name)
        record = pidfile.live()
        if record is not None:
            echo(f"    aqi {name}: already running (pid {record.pid})")
            continue
        log = settings.logs_dir / f"demo-{name}.log"
        # restarted when it dies (a network cut longer than its retries, PostgreSQL restarted)
        proc = spawn_daemon([executable, "supervise", *args], log_path=log)
        pidfile.write(proc.pid, f"aqi supervise {' '.join(args)}", "")
        started[name] = (proc, log)
    if started:  # (none when both were running already: nothing to watch)
        wait_until(lambda: any(proc.poll() is not None for proc, _ in started.values()),
                   timeout=WORKER_SETTLE_S)  # fmt: skip
    for name, (proc, log) in started.items():
        if proc.poll() is not None:
            _worker_pidfile(settings, name).remove()
            raise AqiError(f"aqi {name} stopped right after it started: see {log}")
        echo(f"    aqi {name}: running (pid {proc.pid}, log {log})")


def _services(settings: Settings, echo: Echo) -> None:
    """Start the services; pause a scheduler left by an earlier demo until the last step.

    The demo's own openaq_elt run (``airflow dags test``) must not overlap a scheduled run of
    the same DAG: both would rebuild the same gold slices at once.
    """
    from aqi.services.airflow import EmbeddedAirflow

    _aqi(["services", "up"], echo)
    if EmbeddedAirflow(settings).any_running():
        echo("    pausing the Airflow scheduler of an earlier demo (restarted at the end)")
        _aqi(["airflow", "down"], echo)


def _aqi(args: list[str], echo: Echo) -> None:
    run_aqi_command(args, lambda line: echo(f"    {line}"))


def _state_path(settings: Settings) -> Path:
    return settings.state_dir / "demo.json"


def _replay(settings: Settings, options: DemoOptions, echo: Echo) -> None:
    """The full history the first time; afterwards only the hours since the last replay."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    path = _state_path(settings)
    state = json.loads(path.read_text()) if path.is_file() else None
    same = state is not None and all(
        state.get(k) == v for k, v in (("locations", options.locations), ("seed", options.seed))
    )
    if same:
        end = datetime.fromisoformat(state["end"])
        gap = now - end
        if gap < timedelta(hours=1):
            echo(f"    reusing the history replayed up to {state['end']} (no new hour yet)")
            return
        days = gap / timedelta(days=1)
        echo(f"    reusing the history up to {state['end']}; adding the {gap} since")
    else:
        days = options.days
    args = ["replay", "--simulate", "--locations", str(options.locations)]
    _aqi([*args, "--days", f"{days:.6f}", "--seed", str(options.seed)], echo)
    record = {"locations": options.locations, "seed": options.seed, "end": now.isoformat()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def _archive(settings: Settings, echo: Echo) -> None:
    """The last :data:`ARCHIVE_DAYS` published days of the scope from the archive, once:
    a later run reads only the days published since (remembered in demo.json)."""
    scopes = []
    if settings.collect_locations:
        scopes.append(["--location", *map(str, settings.collect_locations)])
    if settings.collect_country:
        scopes.append(["--country", settings.collect_country])
    if settings.collect_bbox:
        scopes.append(["--bbox", ",".join(f"{v:g}" for v in settings.collect_bbox)])
    if not scopes:
        echo("    skipped: the archive of the whole world is ~1,000,000 files a month; set "
             "AQ_COLLECT_COUNTRY (or a box or locations) too to fill that scope's 30 days")  # fmt: skip
        return
    until = datetime.now(UTC).date() - ARCHIVE_DELAY
    since = until - timedelta(days=ARCHIVE_DAYS - 1)
    path = _state_path(settings)
    state = json.loads(path.read_text()) if path.is_file() else {}
    key = json.dumps(scopes)
    done = state.get("archive", {})
    if done.get("scope") == key and done.get("until"):
        last = datetime.fromisoformat(done["until"]).date()
        if last >= until:
            echo(f"    reusing the archive days read up to {last}")
            return
        since = max(since, last + timedelta(days=1))
    for scope in scopes:
        _aqi(["backfill", "--source", "archive", *scope, "--since", since.isoformat(),
              "--until", until.isoformat()], echo)  # fmt: skip
    state["archive"] = {"scope": key, "until": until.isoformat()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2) + "\n")


def _summary(settings: Settings, options: DemoOptions, echo: Echo) -> None:
    secrets = settings.secrets_dir
    echo("")
    if options.dashboards:
        echo(f"  Dashboards (Superset)  http://127.0.0.1:{settings.superset_port}/  user admin, "
             f"password in {secrets / 'superset_admin_password'}")  # fmt: skip
        echo(f"                         or user analyst (view and explore), "
             f"password in {secrets / 'superset_analyst_password'}")  # fmt: skip
    if options.scheduler:
        echo(f"  Airflow                http://127.0.0.1:{settings.airflow_port}/  user admin, "
             f"password in {secrets / 'airflow_admin_password'}")  # fmt: skip
    echo(f"  dbt docs               http://127.0.0.1:{settings.docs_port}/")
    echo(f"  CSV exports            {settings.exports_dir}")
    echo(f"  Data quality (GX)      {settings.gx_docs_dir / 'index.html'}")
    echo(f"  Bronze Parquet         {settings.bronze_location}")
    if options.live:
        echo(f"  live collector, stream {settings.logs_dir / 'demo-collect.log'}, "
             f"{settings.logs_dir / 'demo-stream.log'}")  # fmt: skip
    echo("  stop everything        .venv/bin/aqi demo --down")
