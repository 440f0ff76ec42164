"""The ``aqi`` command: the single entry point for people.

Each sub-command is a thin shell around a module that does the work, so that DAGs and tests
call the same code. Errors a user can act on (:class:`~aqi.errors.AqiError`,
:class:`~aqi.config.ConfigError`) end the command with one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import sys

import click

from aqi.config import ENV_VARS, SECRET_VARS, ConfigError, Settings, load_settings, mask_url
from aqi.connections import database_url, kafka_bootstrap_servers
from aqi.errors import AqiError

__all__ = ["cli", "main"]

#: exit status for invalid configuration (like a usage error)
EXIT_CONFIG = 2


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(prog_name="aqi", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aqi: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        click.echo(f"aqi: configuration error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except AqiError as exc:
        click.echo(f"aqi: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("aqi: interrupted", err=True)
        sys.exit(130)


def settings() -> Settings:
    """The validated settings (raises ConfigError, reported by :func:`main`)."""
    return load_settings()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="openaq-platform", prog_name="aqi")
def cli() -> None:
    """Air-quality data platform: OpenAQ -> Kafka -> Spark -> PostgreSQL -> dbt -> dashboards.

    Configuration comes from environment variables or ./.env (see `aqi config`). With no
    AQ_DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS set, the project runs its own PostgreSQL and
    Kafka-compatible broker on 127.0.0.1, with all state under AQ_HOME (default ./.aq).
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
def setup_cmd() -> None:
    """Create the secondary environments from their lock files (Superset's).

    The main environment is created by `make env` (uv sync --frozen); Superset needs its own
    because it pins SQLAlchemy 1.4. Safe to run again: it only syncs what changed.
    """
    from aqi.environments import ensure_superset_env

    ensure_superset_env(echo=click.echo)


# --- aqi services --------------------------------------------------------------------------


@cli.group("services")
def services_group() -> None:
    """Start, stop and inspect PostgreSQL and the Kafka-compatible broker.

    Embedded services listen on 127.0.0.1 only and keep their state under AQ_HOME. A service
    whose variable is set (AQ_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS) is external: it is
    checked, never started or stopped.
    """


@services_group.command("up")
def services_up_cmd() -> None:
    """Start the embedded services that are not running (idempotent).

    Creates the PostgreSQL cluster, roles and databases (aq, airflow, superset) and the Kafka
    topic on first use; recovers from a killed service (stale pid and lock files).
    """
    from aqi.services import services_up

    status = services_up(settings(), echo=click.echo)
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
        sys.exit(3)


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
        click.echo(f"  broker    {kafka['broker']}, storage {kafka['data_dir']}")
        click.echo(f"  log       {kafka['log']}")


if __name__ == "__main__":  # pragma: no cover
    main()
