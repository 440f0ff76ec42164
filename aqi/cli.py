"""The ``aqi`` command: the single entry point for people.

Each sub-command is a thin shell around a module that does the work, so that DAGs and tests
call the same code. Every failure ends the command with one line on stderr and an exit code
of :mod:`aqi.core.errors`, never a traceback (unless asked: ``--debug`` / ``AQ_DEBUG=1``).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import click

from aqi.core.config import (
    ENV_VARS,
    SECRET_VARS,
    STREAM_JIT_MODES,
    STREAM_MAX_OFFSETS_PER_TRIGGER,
    STREAM_QUICK_JIT_MAX_BACKLOG,
    STREAM_TRIGGER_SECONDS,
    ConfigError,
    Settings,
    load_settings,
    mask_url,
)
from aqi.core.connections import database_url, kafka_bootstrap_servers
from aqi.core.errors import (
    EXIT_DOWN,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    AqiError,
    first_line,
)
from aqi.core.secrets import show_once

__all__ = ["cli", "main"]

def main() -> None:
    """Console-script entry point: every failure ends with one line on stderr and an exit code
    (:mod:`aqi.core.errors`); ``--debug`` or ``AQ_DEBUG=1`` prints the trace before that line."""
    try:
        cli.main(prog_name="aqi", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aqi: aborted", EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        _fail(f"aqi: configuration error: {exc}", EXIT_USAGE)
    except AqiError as exc:
        _fail(f"aqi: error: {exc}", EXIT_ERROR)
    except KeyboardInterrupt:
        _fail("aqi: interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a trace
        _fail(f"aqi: unexpected error: {type(exc).__name__}: {first_line(exc)[:300]} "
              "(AQ_DEBUG=1 shows the trace)", EXIT_UNEXPECTED)  # fmt: skip


def _fail(line: str, code: int) -> NoReturn:
    if _debug():
        traceback.print_exc()
    click.echo(line, err=True)
    sys.exit(code)


def _debug() -> bool:
    return os.environ.get("AQ_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _set_debug(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        os.environ["AQ_DEBUG"] = "1"  # the commands this one runs inherit it


def settings() -> Settings:
    """The validated settings (raises ConfigError, reported by :func:`main`)."""
    return load_settings()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="openaq-platform", prog_name="aqi")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
              help="On a failure, print the Python trace before the one-line error "
              "(same as AQ_DEBUG=1).")  # fmt: skip
def cli() -> None:
    """Air-quality data platform: OpenAQ -> Kafka -> Spark -> PostgreSQL -> dbt -> dashboards.

    Configuration comes from environment variables or ./.env (see `aqi config`). With no
    AQ_DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS set, the project runs its own PostgreSQL and
    Apache Kafka on 127.0.0.1, with all state under AQ_HOME (default ./.aq).
    """


# --- aqi config ----------------------------------------------------------------------------


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (for scripts).")
def config_cmd(as_json: bool) -> None:
    """Show the effective configuration, secrets masked.

    Lists every variable the project reads, its effective value and where it came from
    (environment/.env or default), then the resolved service addresses.
    """
    s = settings()
    rows = []
    for var, (default, description) in ENV_VARS.items():
        raw = s.source.get(var)
        value = raw if raw is not None else default
        if var in SECRET_VARS and raw is not None:
            value = mask_url(raw) if "://" in raw else "***"
        rows.append({"variable": var, "value": value, "origin": "set" if raw else "default",
                     "description": description})  # fmt: skip
    resolved = {
        "aq_home": str(s.aq_home),
        "postgres": "external" if not s.embedded_postgres else "embedded",
        "database_url": mask_url(database_url(s)),
        "kafka": "external" if not s.embedded_kafka else "embedded",
        "kafka_bootstrap_servers": kafka_bootstrap_servers(s),
    }
    if as_json:
        click.echo(json.dumps({"variables": rows, "resolved": resolved}, indent=2))
        return
    width = max(len(r["variable"]) for r in rows)
    for r in rows:
        click.echo(f"{r['variable']:<{width}}  {r['value'] or '(unset)'}  [{r['origin']}]")
    click.echo("")
    for key, value in resolved.items():
        click.echo(f"{key:<{width}}  {value}")


# --- aqi setup -------------------------------------------------------------------------------


@cli.command("setup")
@click.option(
    "--only",
    type=click.Choice(["jvm", "superset"]),
    help="Only the JVM jars (jvm/pom.xml) or only Superset's environment.",
)
@click.option(
    "--force", is_flag=True,
    help="Resolve the JVM jars and write Spark's class archive again even if up to date.",
)  # fmt: skip
def setup_cmd(only: str | None, force: bool) -> None:
    """Install what the main environment (`make env`) does not: JVM jars, Superset's env.

    jvm: Apache Kafka's broker and Spark's Kafka connector, pinned in jvm/pom.xml, resolved
    from Maven Central with mvn into .venv/share/aq-jvm (once; nothing is downloaded when a
    broker or a stream starts), and a class-data-sharing archive of the stream's Spark
    driver there (a stream then starts ~4 s sooner). superset: Superset's own environment
    from superset/uv.lock (it pins SQLAlchemy 1.4). Safe to run again: only what changed is
    redone.
    """
    from aqi.core.environments import ensure_jvm_libs, ensure_superset_env
    from spark_streaming.class_archive import ensure_archive

    if only in (None, "jvm"):
        ensure_jvm_libs(echo=click.echo, force=force)
        ensure_archive(echo=click.echo, force=force)
    if only in (None, "superset"):
        ensure_superset_env(echo=click.echo)


# --- ingestion: aqi collect / backfill / replay / mock-api ----------------------------------


class _UTCDateTime(click.ParamType):
    """``2024-01-31`` (midnight UTC) or an ISO-8601 date-time (UTC unless it has an offset)."""

    name = "DATE"

    def convert(self, value, param, ctx):
        from datetime import UTC, datetime

        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD) or ISO-8601 date-time", param, ctx)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _location_ids(values: tuple[str, ...], option: str) -> tuple[int, ...]:
    from aqi.core.config import parse_location_ids

    try:
        return parse_location_ids(option, ",".join(values))
    except ConfigError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[1], param_hint=option) from None


def _ingestion(s: Settings, progress=None, **budget):
    """Client, producer and state for an ingestion command (imports kept off `aqi --help`).

    ``budget`` (``role=``, ``share=``) caps this command's share of the key's requests."""
    from ingestion.openaq_client import client_from_settings
    from ingestion.producer import producer_from_settings
    from ingestion.state import IngestionState

    on_wait = progress.wait if progress is not None else _echo_wait
    return (
        client_from_settings(s, on_wait=on_wait, **budget),
        producer_from_settings(s),
        IngestionState(s.state_dir),
    )


def _echo_wait(seconds: float, reason: str) -> None:
    click.echo(f"waiting {seconds:.0f} s: {reason}", err=True)


@cli.command("collect")
@click.option(
    "--world",
    is_flag=True,
    default=None,
    help="Poll every OpenAQ location, in bulk (~120 requests a cycle). Default: AQ_COLLECT_WORLD.",
)
@click.option(
    "--location",
    "locations",
    multiple=True,
    metavar="ID[,ID...]",
    help="OpenAQ location id(s) to poll (repeatable). Default: AQ_COLLECT_LOCATIONS.",
)
@click.option(
    "--bbox",
    metavar="MIN_LON,MIN_LAT,MAX_LON,MAX_LAT",
    help="Poll every location in this box. Default: AQ_COLLECT_BBOX.",
)
@click.option(
    "--country",
    metavar="ISO",
    help="Poll every location of this country (e.g. IN). Default: AQ_COLLECT_COUNTRY.",
)
@click.option(
    "--parameters",
    metavar="NAME[,NAME...]",
    help="Parameters to read. Default: AQ_COLLECT_PARAMETERS (pm25,pm10,o3,no2,so2,co).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    metavar="MINUTES",
    help="Minutes between cycles, widened when the budget needs it. "
    "Default: AQ_COLLECT_INTERVAL_MINUTES (5).",
)
@click.option("--once", is_flag=True, help="Run one cycle and exit.")
@click.option(
    "--stats", is_flag=True, help="Print the figures of the last cycles (from AQ_HOME) and exit."
)
def collect_cmd(world, locations, bbox, country, parameters, interval, once, stats) -> None:
    """Poll the latest readings of the world, a country, a box or some locations; send each
    new reading once.

    Every cycle reads the latest reading of every sensor in scope and puts the new ones on
    AQ_KAFKA_TOPIC. Wide scopes are read in bulk (/parameters/{id}/latest, 1,000 readings a
    request, joined with location metadata refreshed every 6 hours); a few locations one
    request each. A reading already sent (same sensor, period end not newer) is never sent
    again, across restarts (state in AQ_HOME/state, one row per sensor).

    The collector uses at most AQ_COLLECT_BUDGET_SHARE (50%) of the key's requests per minute
    and per hour, leaving the rest to backfills; when a cycle every --interval would need
    more, it widens the interval and says so. Each cycle logs requests, readings, new,
    already sent and lag; `aqi collect --stats` prints the last ones. Stops cleanly on
    Ctrl-C / SIGTERM.

    Example: aqi collect --world --parameters pm25,pm10 --interval 10
    """
    from aqi.core.config import parse_bbox, parse_country, parse_parameters
    from ingestion.collector import Budget, Targets, run_collector

    s = settings()
    if stats:
        _print_collect_stats(s)
        return
    try:
        targets = Targets(
            location_ids=_location_ids(locations, "--location")
            if locations
            else s.collect_locations,
            bbox=parse_bbox("--bbox", bbox) if bbox else s.collect_bbox,
            country=parse_country("--country", country) if country else s.collect_country,
            world=s.collect_world if world is None else world,
            parameters=parse_parameters("--parameters", parameters)
            if parameters
            else s.collect_parameters,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if not targets:
        raise click.UsageError(
            "say which locations to poll: --world, --location, --bbox or --country "
            "(or AQ_COLLECT_WORLD / AQ_COLLECT_LOCATIONS / AQ_COLLECT_BBOX / AQ_COLLECT_COUNTRY)"
        )
    budget = Budget(
        per_hour=s.openaq_requests_per_hour,
        share=s.collect_budget_share,
        wanted_interval_s=60 * (interval or s.collect_interval_minutes),
    )
    client, producer, state = _ingestion(s, role="collect", share=s.collect_budget_share)
    with producer:
        total = run_collector(
            targets, client=client, producer=producer, state=state, once=once, budget=budget,
            echo=click.echo,
        )  # fmt: skip
    click.echo(f"collect: {total} events sent")


def _print_collect_stats(s: Settings) -> None:
    from ingestion.state import IngestionState

    cycles = IngestionState(s.state_dir).cycles(limit=24)
    if not cycles:
        click.echo("collect: no cycle recorded yet in " + str(s.state_dir))
        return
    click.echo(
        f"{'started (UTC)':20}  {'scope':14} {'read':>8} {'requests':>8} {'readings':>9} "
        f"{'new':>7} {'already':>8} {'failed':>6} {'lag p50':>8} {'interval':>8}"
    )
    for c in cycles:
        lag = "-" if c["lag_p50_s"] is None else f"{c['lag_p50_s'] / 60:.0f} min"
        click.echo(
            f"{c['started_at']:20}  {str(c['scope'])[:14]:14} {c['strategy'][:8]:>8} "
            f"{c['requests']:>8} {c['readings']:>9} {c['new']:>7} {c['already_sent']:>8} "
            f"{c['failed']:>6} {lag:>8} {c['interval_s'] / 60:>6.1f} m"
        )


@cli.command("backfill")
@click.option(
    "--source",
    type=click.Choice(["api", "archive"]),
    default="api",
    show_default=True,
    help="api: the OpenAQ API's measurements (rate limited, key needed); archive: OpenAQ's "
    "public S3 archive of daily files (AQ_ARCHIVE_BASE_URL; no key, no rate limit).",
)
@click.option(
    "--location",
    "locations",
    multiple=True,
    metavar="ID [ID ...]",
    help="OpenAQ location id(s); several may follow one --location.",
)
@click.argument("more_locations", nargs=-1, metavar="")
@click.option(
    "--country",
    metavar="CC",
    help="--source archive: every location of this country (ISO 3166-1 alpha-2, e.g. US).",
)
@click.option(
    "--bbox",
    metavar="MIN_LON,MIN_LAT,MAX_LON,MAX_LAT",
    help="--source archive: every location in this box.",
)
@click.option(
    "--since",
    required=True,
    type=_UTCDateTime(),
    help="api: start (exclusive), YYYY-MM-DD (midnight UTC) or an ISO-8601 date-time. "
    "archive: the first local day read, YYYY-MM-DD.",
)
@click.option(
    "--until",
    required=True,
    type=_UTCDateTime(),
    help="api: end (inclusive), YYYY-MM-DD (midnight UTC) or an ISO-8601 date-time. "
    "archive: the last local day read (included), YYYY-MM-DD.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    metavar="N",
    help="--source archive: files downloaded at once (default 4).",
)
def backfill_cmd(source, locations, more_locations, country, bbox, since, until, workers) -> None:
    """Send the history of some locations, resumably: from the API or the S3 archive.

    --source api (default): reads every measurement with since < period end <= until, in
    windows of at most a year and all pages, and puts them on AQ_KAFKA_TOPIC. The checkpoint
    moves only after Kafka acknowledged a page: after a crash or Ctrl-C, run the same
    command again and it continues where it stopped (at most the pages in flight are sent
    twice).

    --source archive: reads OpenAQ's public archive (one gzip CSV per location and local
    day, from --since to --until, both included) for --location ids, a --country or a
    --bbox, --workers files at a time, and puts every reading on AQ_KAFKA_TOPIC; time zone,
    country, provider and parameter ids come from each location's API record (one cached
    request per location; the files carry none). A file counts as read once Kafka
    acknowledged all of it: run the same command again after a crash or Ctrl-C and it skips
    the files read (at most the files in flight are sent twice), and reads again a file
    patched in the archive since (its ETag or size changed). A file that cannot be read
    (corrupt, cut, no datetime column, 403/404) is reported with its reason and tried again
    by the next run; the command fails only when nothing at all could be read.

    \b
    Examples:
      aqi backfill --location 2178 17 --since 2024-01-01 --until 2024-02-01
      aqi backfill --source archive --country GH --since 2024-01-01 --until 2024-01-31
    """
    from aqi.core.config import parse_bbox, parse_country
    from ingestion.progress import Progress

    ids = _location_ids(locations + more_locations, "--location")
    if source == "api":
        for given, option in ((country, "--country"), (bbox, "--bbox"), (workers, "--workers")):
            if given is not None:
                raise click.UsageError(f"{option} needs --source archive")
    else:
        try:
            box = parse_bbox("--bbox", bbox) if bbox is not None else None
            code = parse_country("--country", country) if country is not None else None
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        if sum((bool(ids), code is not None, box is not None)) != 1:
            raise click.UsageError("give one of --location ID..., --country CC or --bbox BOX")
        _archive_backfill(ids, code, box, since, until, workers or 4)
        return
    from ingestion.backfill import run_backfill

    if not ids:
        raise click.UsageError("give at least one --location ID")
    if since >= until:
        raise click.BadParameter("--since must be before --until", param_hint="--since")
    s = settings()
    progress = Progress("backfill", unit="sensors")
    client, producer, state = _ingestion(s, progress)
    try:
        with producer, progress:
            result = run_backfill(
                ids, since, until, client=client, producer=producer, state=state, progress=progress
            )
    except KeyboardInterrupt:
        click.echo("backfill: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    verb = "resumed" if result.resumed else "ran"
    click.echo(
        f"backfill: {verb} job {result.job_id}: {result.sensors} sensors, "
        f"{result.events_sent} events sent this run; {progress.summary()}"
    )


def _archive_backfill(ids, country, bbox, since, until, workers) -> None:
    """`aqi backfill --source archive`: whole local days, so dates only."""
    from datetime import time as day_start

    from ingestion.archive import ArchiveError, ArchiveScope, ArchiveStore, run_archive_backfill
    from ingestion.progress import Progress

    for value, option in ((since, "--since"), (until, "--until")):
        if value.timetz() != day_start(tzinfo=value.tzinfo):
            raise click.BadParameter(
                "--source archive reads whole local days: give a date (YYYY-MM-DD)",
                param_hint=option,
            )
    first, last = since.date(), until.date()
    if first > last:
        raise click.BadParameter("--since must not be after --until", param_hint="--since")
    scope = ArchiveScope(location_ids=ids, country=country, bbox=bbox)
    s = settings()
    progress = Progress("archive backfill", unit="files")
    client, producer, state = _ingestion(s, progress)
    store = ArchiveStore(s.archive_base_url, on_wait=progress.wait)
    try:
        with producer, progress:
            result = run_archive_backfill(
                scope, first, last, client=client, producer=producer, state=state,
                progress=progress, store=store, workers=workers,
            )  # fmt: skip
    except KeyboardInterrupt:
        click.echo("backfill: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    for line in result.report():
        click.echo(f"backfill: {line}", err=True)
    verb = "resumed" if result.resumed else "ran"
    click.echo(
        f"backfill: {verb} archive job {result.job_id} ({scope.describe()}, {first} .. {last}): "
        f"{result.summary()}; {progress.summary()}"
    )
    if result.nothing_read:
        raise ArchiveError(
            f"nothing could be read from the archive at {s.archive_base_url} "
            f"({len(result.failures)} files or listings skipped, reasons above)"
        )


@cli.command("replay")
@click.option(
    "--fixtures",
    "fixtures_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder of recorded OpenAQ responses (e.g. ingestion/fixtures/openaq).",
)
@click.option("--simulate", is_flag=True, help="Stream the deterministic simulator instead.")
@click.option(
    "--locations",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="--simulate: number of locations.",
)
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="--simulate: days of history, ending now.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    metavar="EV_PER_S",
    help="--simulate: at most this many events a second (default: as fast as possible).",
)
@click.option("--seed", type=int, default=42, show_default=True, help="--simulate: random seed.")
def replay_cmd(fixtures_dir, simulate, locations, days, rate, seed) -> None:
    """Put recorded OpenAQ responses, or simulated measurements, on Kafka.

    --fixtures DIR maps every recorded measurement and latest reading to an event (metadata
    from the recorded locations). --simulate streams OpenAQ-shaped data: diurnal patterns,
    pollution episodes, hourly and 15-minute sensors, nulls, flags, -9999 sentinels, ppb and
    µg/m³, and a few late and duplicate events; the same --seed gives the same data.
    """
    from ingestion.producer import encode_records, producer_from_settings
    from ingestion.progress import Progress
    from ingestion.replay import fixture_events, send_paced, simulated_records

    if bool(fixtures_dir) == bool(simulate):
        raise click.UsageError("choose one of --fixtures DIR or --simulate")
    s = settings()
    with producer_from_settings(s) as producer:
        if fixtures_dir:
            events, report = fixture_events(fixtures_dir)
            with Progress("replay", unit="events") as progress:
                send_paced(encode_records(events), producer, progress)
            click.echo(
                f"replay: {report.events} events from {len(report.files)} files "
                f"({report.responses} responses; {report.duplicates} repeated readings sent once; "
                f"{report.skipped_unknown_location} readings skipped: location not recorded)"
            )
            return
        from ingestion.simulator import SimulationConfig

        config = SimulationConfig(locations=locations, days=days, seed=seed)
        with Progress("simulate", unit="events") as progress:
            send_paced(simulated_records(config), producer, progress, rate_per_s=rate)
        click.echo(f"replay --simulate: {progress.summary()}")


@cli.command("mock-api")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--fixtures",
    "fixtures_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Recorded responses to serve (default: the ones shipped with the package).",
)
@click.option(
    "--profile",
    type=click.Choice(["fixtures", "world"]),
    default="fixtures",
    show_default=True,
    help="world: a generated world publishing live readings (30,000 locations, ~112,000 "
    "sensors, the free key's rate limits) and its S3 archive on a second port.",
)
@click.option(
    "--locations",
    type=click.IntRange(min=1),
    default=30_000,
    show_default=True,
    help="--profile world: number of locations.",
)
@click.option(
    "--archive-days",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="--profile world: days in the archive, up to 3 days ago.",
)
def mock_api_cmd(port, fixtures_dir, profile, locations, archive_days) -> None:
    """Run the local mock OpenAQ v3 API on 127.0.0.1 (for offline development).

    Point the project at it with OPENAQ_BASE_URL=http://127.0.0.1:PORT/v3 (and, with
    --profile world, AQ_ARCHIVE_BASE_URL as printed). Ctrl-C stops it.

    Example: aqi mock-api --profile world, then aqi collect --world --once
    """
    from openaq_mock.api import main as mock_main

    args = ["--port", str(port), "--profile", profile]
    if fixtures_dir:
        args += ["--fixtures", str(fixtures_dir)]
    if profile == "world":
        args += ["--locations", str(locations), "--archive-days", str(archive_days)]
    sys.exit(mock_main(args))


@cli.command(
    "supervise", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="COMMAND...")
def supervise_cmd(command) -> None:
    """Run an aqi COMMAND and start it again whenever it dies.

    For long-running workers nobody watches (the live demo runs `aqi supervise collect` and
    `aqi supervise stream`): after a death it waits 1 s, then twice as long after every
    quick death, up to 5 minutes (back to 1 s once a run lasted 10 minutes), and logs each
    exit. Exit 0 (finished) and 2 (a usage error) are final. SIGTERM/Ctrl-C stops the
    command (SIGTERM, SIGKILL after 60 s), then the supervisor.
    """
    from aqi.services.supervise import supervise

    if command[0] not in cli.commands or command[0] == "supervise":
        raise click.UsageError(f"not an aqi command to supervise: {command[0]!r}")
    executable = str(Path(sys.executable).with_name("aqi"))
    sys.exit(supervise([executable, *command], echo=lambda line: click.echo(line)))


# --- streaming: aqi db migrate / aqi stream ------------------------------------------------


@cli.group("db")
def db_group() -> None:
    """The project's database objects (raw schema, tables, indexes)."""


@db_group.command("migrate")
def db_migrate_cmd() -> None:
    """Apply the project's DDL migrations (idempotent; `aqi stream` runs them at start)."""

    s = settings()
    applied = _migrate(s)
    click.echo(f"db: {len(applied)} migration(s) applied" if applied else "db: up to date")


def _require_kafka(s: Settings) -> None:
    """One line at once when no broker answers (Spark's source would retry for minutes, then
    fail with a Java trace)."""
    from aqi.core.topics import KafkaUnavailable, await_broker

    try:
        await_broker(kafka_bootstrap_servers(s), s.kafka_wait_seconds)
    except KafkaUnavailable as exc:
        raise AqiError(f"{exc}; is it running (aqi services up)?") from None


def _migrate(s: Settings) -> list[str]:
    import psycopg

    from aqi.core.migrations import migrate

    try:
        return migrate(database_url(s), echo=click.echo)
    except psycopg.OperationalError as exc:
        raise AqiError(
            f"cannot reach PostgreSQL ({mask_url(database_url(s))}): {first_line(exc)}; "
            "is it running (aqi services up)?"
        ) from None


@cli.command("stream")
@click.option(
    "--available-now",
    is_flag=True,
    help="Drain what is on the topic now, then exit (demo, tests, Airflow); at once, without "
    "starting Spark, when the checkpoint already holds the topic's end offsets.",
)
@click.option(
    "--master",
    metavar="URL",
    help="Spark master (default local[*]; spark://host:7077 for a standalone cluster, "
    "k8s://https://host:443 for Kubernetes).",
)
@click.option(
    "--trigger-seconds",
    type=click.FloatRange(min=0.1),
    default=STREAM_TRIGGER_SECONDS,
    show_default=True,
    help="Processing-time trigger of the continuous stream: how often it looks for new "
    "records (no records, no batch).",
)
@click.option(
    "--max-offsets-per-trigger",
    type=click.IntRange(min=1),
    default=STREAM_MAX_OFFSETS_PER_TRIGGER,
    show_default=True,
    help="At most this many records per micro-batch (Spark's maxOffsetsPerTrigger).",
)
@click.option(
    "--starting-offsets",
    default="earliest",
    show_default=True,
    metavar="earliest|latest|JSON",
    help="Where a new checkpoint starts reading (Spark's startingOffsets), e.g. "
    '\'{"openaq.measurements": {"0": 0, "1": 42, "2": -2}}\'.',
)
@click.option(
    "--fail-on-data-loss/--no-fail-on-data-loss",
    default=True,
    show_default=True,
    help="When checkpointed offsets are gone from the topic (deleted by retention, or the "
    "topic was recreated): fail (Spark's failOnDataLoss), or go on from what is there.",
)
@click.option(
    "--jit",
    type=click.Choice(STREAM_JIT_MODES),
    default="auto",
    show_default=True,
    help="The Spark driver JVM's compiler. quick (C1 only) costs ~40% less CPU on a small "
    "drain; full (C1 and C2) is faster on a long one. auto: quick for an --available-now "
    f"drain of at most {STREAM_QUICK_JIT_MAX_BACKLOG:,} records, full otherwise.",
)
def stream_cmd(
    available_now,
    master,
    trigger_seconds,
    max_offsets_per_trigger,
    starting_offsets,
    fail_on_data_loss,
    jit,
) -> None:
    """Stream Kafka into Bronze Parquet and raw.openaq_measurements, exactly once.

    Reads AQ_KAFKA_TOPIC with Spark Structured Streaming and Spark's own Kafka source,
    parses each record against the event contract in the JVM (invalid ones go to
    raw.openaq_quarantine with the reason), writes valid events to Bronze Parquet
    (AQ_BRONZE_URI or AQ_HOME/bronze/openaq, partitioned by event_date) and to
    raw.openaq_measurements, and logs per-batch metrics to raw.stream_batches. Checkpoints
    live in AQ_HOME/checkpoints: a restart after a crash neither loses nor duplicates
    anything. Stops cleanly on SIGTERM / Ctrl-C.
    """
    from spark_streaming.job import QUERY_NAME, StreamOptions, check_starting_offsets, run_stream

    s = settings()
    try:
        check_starting_offsets(starting_offsets, s.kafka_topic)
    except AqiError as exc:  # a bad option value: a usage error, like click's own
        message = str(exc).removeprefix("--starting-offsets: ")
        raise click.BadParameter(message, param_hint="'--starting-offsets'") from None
    _migrate(s)
    _require_kafka(s)
    options = StreamOptions(
        bootstrap_servers=kafka_bootstrap_servers(s),
        topic=s.kafka_topic,
        database_url=database_url(s),
        bronze_path=s.bronze_location,
        checkpoint_dir=s.checkpoints_dir / QUERY_NAME,
        master=master,
        available_now=available_now,
        trigger_seconds=trigger_seconds,
        max_offsets_per_trigger=max_offsets_per_trigger,
        starting_offsets=starting_offsets,
        fail_on_data_loss=fail_on_data_loss,
        spark_log=s.logs_dir / "spark-stream.log",
        jit=jit,
    )
    batches = run_stream(options, echo=click.echo)
    click.echo(f"stream: stopped after {batches} batch(es)")


# --- warehouse: aqi dbt / aqi docs -----------------------------------------------------------


@cli.command(
    "dbt",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                      "help_option_names": []},
)  # fmt: skip
@click.argument("dbt_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def dbt_cmd(ctx: click.Context, dbt_args: tuple[str, ...]) -> None:
    """Run dbt on the warehouse project (arguments pass through: aqi dbt build, aqi dbt test ...).

    Sets --project-dir/--profiles-dir to dbt_project/ and AQ_DATABASE_URL to the configured
    (or embedded) database, so `aqi dbt build --full-refresh` just works. dbt's own help:
    `aqi dbt build --help`.
    """
    from aqi.core.warehouse import run_dbt

    if dbt_args in ((), ("--help",), ("-h",)):
        click.echo(ctx.get_help())
        return
    sys.exit(run_dbt(settings(), list(dbt_args)))


@cli.command("docs")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port on 127.0.0.1 [default: AQ_DOCS_PORT, 8080].")  # fmt: skip
@click.option("--no-serve", is_flag=True, help="Only generate the site (AQ_HOME/dbt_docs).")
@click.option("--background", is_flag=True,
              help="Serve as a daemon and return (pid in AQ_HOME/run/docs.pid); "
                   "`aqi docs --stop` or `aqi demo --down` stops it.")  # fmt: skip
@click.option("--stop", is_flag=True, help="Stop the background server, nothing else.")
def docs_cmd(port: int | None, no_serve: bool, background: bool, stop: bool) -> None:
    """Generate the dbt docs site and serve it on 127.0.0.1 (Ctrl-C stops).

    The site is one self-contained page (dbt docs generate --static) in AQ_HOME/dbt_docs,
    served by a static server that holds no database credential. Generating again while a
    background server runs replaces the page it serves.
    """
    from aqi.services.docs import DocsSite

    if stop and (no_serve or background or port is not None):
        raise click.UsageError("--stop takes no other option")
    if no_serve and background:
        raise click.UsageError("--no-serve and --background exclude each other")
    site = DocsSite(settings(), port)
    if stop:
        site.down(echo=click.echo)
        return
    if not no_serve and not (background and site.status()["running"]):
        site.check_port()  # before the generation, which takes a while
    site.generate(echo=click.echo)
    if no_serve:
        return
    if background:
        site.up(echo=click.echo)
        return
    sys.exit(site.serve(echo=click.echo))


# --- quality and exports: aqi check / aqi export ----------------------------------------------


@cli.command("check")
@click.option(
    "--suite",
    "suites",
    type=click.Choice(["raw", "gold"]),
    multiple=True,
    help="Only this suite (repeatable); default: raw and gold.",
)
@click.option(
    "--since",
    default="last-pass",
    show_default=True,
    metavar="last-pass|all|TIME",
    help="Which rows the value checks judge: those loaded (raw) or rebuilt by dbt (gold, "
    "rebuilt_at) since the table's gate last passed, all of them (the nightly full check), "
    "or those loaded or rebuilt at or after TIME (ISO 8601 with an offset, e.g. "
    "2026-12-03T10:00:00Z). A table that passes gets its mark moved, one that fails keeps "
    "it; after a bad batch has been looked into, a run --since a later TIME lets the gate go on.",
)
def check_cmd(suites: tuple[str, ...], since: str) -> None:
    """Run the Great Expectations checks on raw.openaq_measurements and the gold tables.

    The same checks gate the openaq_elt DAG. Raw's columns, types and freshness are checked
    on the whole table, its values on the rows loaded since the gate last passed; each gold
    table on the rows dbt rebuilt since its gate last passed (--since all: everything).
    Prints a report naming every failed expectation with sample rows, builds Data Docs under
    AQ_HOME/gx_docs, and exits 1 if any check failed.
    """
    from expectations.runner import SINCE_LAST_PASS, SUITES, WHOLE_TABLE, run_checks

    window = since if since in (SINCE_LAST_PASS, WHOLE_TABLE) else _aware_time(since, "--since")
    report = run_checks(settings(), list(suites or SUITES), echo=click.echo, since=window)
    click.echo(report.text())
    sys.exit(0 if report.success else 1)


def _aware_time(text: str, option: str) -> datetime:
    """An ISO 8601 time with an offset, or a usage error naming ``option``."""
    try:
        value = datetime.fromisoformat(text.upper())
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise click.BadParameter(
            f"expected an ISO 8601 time with an offset (e.g. 2026-12-03T10:00:00Z), got {text!r}",
            param_hint=option,
        )
    return value


@cli.command("export")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write every day here instead of AQ_HOME/exports (implies --all; the marks of "
    "AQ_HOME/exports stay as they are).",
)
@click.option(
    "--all",
    "full",
    is_flag=True,
    help="Rewrite every day, not only the days rebuilt since the last export, and remove "
    "the files of days no longer in the table.",
)
def export_cmd(directory: Path | None, full: bool) -> None:
    """Write the gold tables as CSV files for other BI tools (Tableau, Power BI, Excel).

    One folder per table with a file per day (<table>/<table>_YYYY-MM-DD.csv) and the
    latest snapshot as latest.csv (header row, UTC ISO-8601 timestamps, key order), each
    replaced atomically. A run rewrites only the days dbt rebuilt since the last export;
    openaq_elt runs it after every successful run.
    """
    from aqi.exports import export_marts

    export_marts(settings(), directory, echo=click.echo, full=full)


@cli.command("aqi-alerts")
@click.option("--list", "list_only", is_flag=True,
              help="Only list the open episodes; change and send nothing.")  # fmt: skip
def aqi_alerts_cmd(list_only: bool) -> None:
    """Open, follow and clear the AQI alerts from gold.latest, and notify the new ones.

    An episode opens when a location's NowCast AQI (PM2.5, PM10) reaches
    AQ_AQI_ALERT_CATEGORY (default Unhealthy) or worse, and clears at its first reading
    below it; each episode is sent once through the AQ_ALERT_* channels (off by default).
    The episodes are in gold.aqi_alerts (the dashboard's "Open AQI alerts" panel).
    openaq_elt runs this after every successful run; run it by hand after `aqi dbt build`.
    """
    from aqi.alerts import iso_utc
    from aqi.aqi_alerts import open_alerts, update_aqi_alerts

    s = settings()
    if not list_only:
        step = update_aqi_alerts(s, echo=click.echo)
        if step.threshold is None:
            return
    rows = open_alerts(s)
    for row in rows:
        where = row["location_name"] or f"location {row['location_id']}"
        click.echo(
            f"  {row['category']:<30} AQI {row['peak_aqi']:>3} (now {row['last_aqi']:>3})  "
            f"{row['parameter']:<5} {where} ({row['country_code'] or '?'})  "
            f"since {iso_utc(row['since'])}"
        )
    if list_only:
        click.echo(f"{len(rows)} open AQI alert{'s' if len(rows) != 1 else ''}")


# --- orchestration: aqi airflow ---------------------------------------------------------------


@cli.group("airflow")
def airflow_group() -> None:
    """The embedded Airflow 3 (DAGs openaq_elt, openaq_backfill) and one-off runs.

    Airflow's API server and UI listen on 127.0.0.1:AQ_AIRFLOW_PORT; AIRFLOW_HOME is
    AQ_HOME/airflow; its metadata lives in the project's PostgreSQL (database airflow).
    """


@airflow_group.command("up")
def airflow_up_cmd() -> None:
    """Start the services, then Airflow (API server, scheduler, DAG processor).

    The admin password is generated on first start, printed once, and kept in
    AQ_HOME/secrets/airflow_admin_password (0600). openaq_elt then runs every 15 minutes.
    """
    from aqi.orchestration import prepare_dbt_manifest
    from aqi.services import services_up
    from aqi.services.airflow import ADMIN_USER, EmbeddedAirflow, admin_password

    s = settings()
    services_up(s, echo=click.echo)
    prepare_dbt_manifest(s, echo=click.echo)
    status = EmbeddedAirflow(s).up(echo=click.echo)
    click.echo(f"airflow: UI and API at {status['url']}  user {ADMIN_USER}")
    password, _ = admin_password(s)
    show_once(
        password, s.airflow_home / ".admin-password-shown",
        lambda value: click.echo(f"airflow: generated admin password (shown once): {value}"),
    )  # fmt: skip
    click.echo(f"airflow: the password is kept in {status['password_file']}")


@airflow_group.command("down")
def airflow_down_cmd() -> None:
    """Stop the embedded Airflow (the database and broker keep running)."""
    from aqi.services.airflow import EmbeddedAirflow

    EmbeddedAirflow(settings()).down(echo=click.echo)


@airflow_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def airflow_status_cmd(as_json: bool) -> None:
    """Show whether Airflow runs, where, and its logs. Exits 3 when it is not healthy."""
    from aqi.services.airflow import EmbeddedAirflow

    status = EmbeddedAirflow(settings()).status()
    if as_json:
        click.echo(json.dumps(status, indent=2))
    else:
        state = "running" if status["running"] else "NOT RUNNING"
        click.echo(f"airflow   {state} at {status['url']}  user {status['user']}")
        click.echo(f"  password  {status['password_file']}")
        for component, pid in status["pids"].items():
            click.echo(f"  {component:<13} pid {pid or '-'}  log {status['logs'][component]}")
    if not status["running"]:
        sys.exit(EXIT_DOWN)


@airflow_group.command("run-once")
@click.option("--full-refresh", is_flag=True, help="Rebuild the incremental models from scratch.")
def airflow_run_once_cmd(full_refresh: bool) -> None:
    """Run openaq_elt once, in this process (airflow dags test); no scheduler needed.

    Drains the stream, checks raw, builds the warehouse (one dbt build, a task per model
    and its tests), checks gold and writes the changed days' CSV exports. Exits non-zero
    when the run fails.
    """
    from aqi.orchestration import prepare_dbt_manifest
    from aqi.services import services_up
    from aqi.services.airflow import run_once

    s = settings()
    services_up(s, echo=click.echo)
    prepare_dbt_manifest(s, echo=click.echo)
    code = run_once(s, conf={"full_refresh": full_refresh}, echo=click.echo)
    click.echo("airflow: openaq_elt " + ("succeeded" if code == 0 else "FAILED"))
    sys.exit(code)


# --- aqi demo -------------------------------------------------------------------------------


@cli.command("demo")
@click.option(
    "--locations",
    type=click.IntRange(1, 1000),
    default=25,
    show_default=True,
    help="Simulated locations.",
)
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True, max=400),
    default=30.0,
    show_default=True,
    help="Days of simulated history (first run).",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Simulator seed.")
@click.option("--no-dashboards", is_flag=True, help="Skip Superset.")
@click.option("--no-scheduler", is_flag=True, help="Do not leave the Airflow scheduler running.")
@click.option(
    "--live",
    is_flag=True,
    help="From the OpenAQ API instead of the simulator (OPENAQ_API_KEY and AQ_COLLECT_*), "
    "then keep collecting and streaming in the background.",
)
@click.option("--down", is_flag=True, help="Stop everything the demo started, then exit.")
def demo_cmd(locations, days, seed, no_dashboards, no_scheduler, live, down) -> None:  # fmt: skip
    """The whole pipeline on simulated OpenAQ data, left running with its dashboards.

    Services -> simulated history on Kafka -> stream -> openaq_elt once (GX raw, dbt, GX gold,
    CSV exports) -> Superset -> Airflow scheduler; then prints the URLs and where the
    generated passwords are. A second run reuses what exists and only adds the hours since.
    --live reads the OpenAQ API instead and keeps `aqi collect` and `aqi stream` running.
    `aqi demo --down` stops it all.
    """
    from aqi.demo import DemoOptions, run_demo, stop_demo

    s = settings()
    if down:
        stop_demo(s, echo=click.echo)
        return
    options = DemoOptions(
        locations=locations, days=days, seed=seed,
        dashboards=not no_dashboards, scheduler=not no_scheduler, live=live,
    )  # fmt: skip
    run_demo(s, options, echo=click.echo)


# --- aqi services --------------------------------------------------------------------------


@cli.group("services")
def services_group() -> None:
    """Start, stop and inspect PostgreSQL and Apache Kafka.

    Embedded services listen on 127.0.0.1 only and keep their state under AQ_HOME. A service
    whose variable is set (AQ_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS) is external: it is
    checked, never started or stopped.
    """


@services_group.command("up")
@click.option(
    "--kafka-brokers",
    type=click.IntRange(1, 9),
    metavar="N",
    help="Make the embedded Kafka a cluster of N brokers on 127.0.0.1 when it is first "
    "created (default 1); with 3 or more, topics get replication factor N and "
    "min.insync.replicas=2. An existing cluster keeps its size.",
)
def services_up_cmd(kafka_brokers: int | None) -> None:
    """Start the embedded services that are not running (idempotent).

    Creates the PostgreSQL cluster, roles and databases (aq, airflow, superset), formats the
    Kafka log directories and creates the topic on first use; recovers from a killed service
    (stale pid and lock files; Kafka recovers its log).
    """
    from aqi.services import services_up

    status = services_up(settings(), echo=click.echo, kafka_brokers=kafka_brokers)
    _print_status(status)


@services_group.command("down")
def services_down_cmd() -> None:
    """Stop the embedded services that `up` started (by their recorded pids)."""
    from aqi.services import services_down

    services_down(settings(), echo=click.echo)


@services_group.command("status")
@click.option(
    "--json", "as_json", is_flag=True,
    help="Print JSON for scripts. It includes the database URL with its password.",
)  # fmt: skip
def services_status_cmd(as_json: bool) -> None:
    """Show what runs where: pid, address, data directory, log.

    Exits 0 when every service answers, 3 when one does not.
    """
    from aqi.services import services_status

    status = services_status(settings())
    if as_json:
        click.echo(json.dumps(status, indent=2))
    else:
        _print_status(status)
    if not (status["postgres"]["running"] and status["kafka"]["running"]):
        sys.exit(EXIT_DOWN)


def _print_status(status: dict) -> None:
    pg, kafka = status["postgres"], status["kafka"]

    def state(svc: dict) -> str:
        run = "running" if svc["running"] else "NOT RUNNING"
        pid = f", pid {svc['pid']}" if svc.get("pid") else ""
        return f"{run} ({svc['managed']}{pid})"

    click.echo(f"postgres  {state(pg)}")
    click.echo(
        f"  address   {pg['host']}:{pg['port']}  database {pg['database']}  user {pg['user']}"
    )
    click.echo(f"  url       {mask_url(pg['url'])}")
    if "data_dir" in pg:
        click.echo(f"  data dir  {pg['data_dir']}")
        click.echo(f"  log       {pg['log']}")
    click.echo(f"kafka     {state(kafka)}")
    click.echo(f"  bootstrap {kafka['bootstrap_servers']}  topic {kafka['topic']}")
    if "data_dir" in kafka:
        click.echo(
            f"  broker    {kafka['broker']}, {kafka['brokers']} node(s), "
            f"heap {kafka['heap_per_node']} each"
        )
        click.echo(f"  data dir  {kafka['data_dir']}")
        for node in kafka["nodes"] if kafka["brokers"] > 1 else []:
            run = "running" if node["running"] else "NOT RUNNING"
            click.echo(f"  node {node['node_id']}    {run}, pid {node['pid'] or '-'}, "
                       f"{node['address']}, log {node['log']}")  # fmt: skip
        click.echo(f"  log       {kafka['log']}")


def _register_dashboards() -> None:
    """``aqi dashboards`` lives in its own module (Superset's service and bundle tooling)."""
    from aqi.cli_dashboards import dashboards_group

    cli.add_command(dashboards_group)


_register_dashboards()


if __name__ == "__main__":  # pragma: no cover
    main()
