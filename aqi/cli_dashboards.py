"""``aqi dashboards``: the embedded Superset and its "Air quality" dashboard, as code.

Register with ``cli.add_command(dashboards_group)`` in :mod:`aqi.cli`; errors are
:class:`~aqi.core.errors.AqiError`, reported in one line by ``aqi``'s ``main``.

- ``aqi dashboards up``          provision (role, metadata, admin, bundle), serve on 127.0.0.1
- ``aqi dashboards down``        stop the web server (the database keeps running)
- ``aqi dashboards status``      where it runs; exit code 3 when it does not answer
- ``aqi dashboards screenshot``  PNG of the dashboard with every chart drawn
- ``aqi dashboards role-sql``    the SQL of the read-only role, for an external PostgreSQL
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from aqi.core.config import load_settings
from aqi.core.errors import EXIT_DOWN
from aqi.core.secrets import show_once

__all__ = ["dashboards_group"]


@click.group("dashboards")
def dashboards_group() -> None:
    """Superset with the "Air quality" dashboard, provisioned from superset/bundle.

    Superset runs from its own environment (superset/.venv), serves on
    127.0.0.1:AQ_SUPERSET_PORT (default 8088), keeps its metadata in the project's PostgreSQL
    (database superset) and reads the warehouse as role aq_superset, which can only read the
    gold schema.
    """


@dashboards_group.command("up")
@click.option(
    "--bundle", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
    help="Provision this bundle folder instead of superset/bundle (e.g. a copy being edited).",
)  # fmt: skip
def up_cmd(bundle: Path | None) -> None:
    """Provision Superset from superset/bundle, then serve it (idempotent).

    Starts the services if needed, creates/repairs the read-only role, prepares Superset's
    metadata (once per version), creates the admin user with a generated password (shown once,
    kept in AQ_HOME/secrets/superset_admin_password) and the analyst user, who can view and
    explore but not edit (AQ_HOME/secrets/superset_analyst_password), imports the bundle (changed charts are
    updated, removed ones deleted) and starts gunicorn if it is not running.
    """
    from aqi.core.environments import ensure_superset_env
    from aqi.services import services_up
    from aqi.services.superset import (
        ADMIN_USER,
        ANALYST_USER,
        BUNDLE_DIR,
        EmbeddedSuperset,
        admin_password,
    )

    s = load_settings()
    ensure_superset_env(echo=click.echo)
    services_up(s, echo=click.echo)
    status = EmbeddedSuperset(s).up(echo=click.echo, bundle=bundle or BUNDLE_DIR)
    click.echo(f"superset: dashboard {status['dashboard_url']}")
    click.echo(f"superset: user {ADMIN_USER}, password in {status['password_file']}")
    click.echo(f"superset: user {ANALYST_USER} (view, filter, explore; no editing, no SQL Lab), "
               f"password in {status['analyst_password_file']}")  # fmt: skip
    password, _ = admin_password(s)
    show_once(
        password, s.superset_home / ".admin-password-shown",
        lambda value: click.echo(f"superset: generated admin password (shown once): {value}"),
    )  # fmt: skip


@dashboards_group.command("down")
def down_cmd() -> None:
    """Stop Superset's web server (PostgreSQL and the broker keep running)."""
    from aqi.services.superset import EmbeddedSuperset

    EmbeddedSuperset(load_settings()).down(echo=click.echo)


@dashboards_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def status_cmd(as_json: bool) -> None:
    """Show whether Superset runs and where. Exits 3 when it does not answer."""
    from aqi.services.superset import EmbeddedSuperset

    status = EmbeddedSuperset(load_settings()).status()
    if as_json:
        click.echo(json.dumps(status, indent=2))
    else:
        state = "running" if status["running"] else "NOT RUNNING"
        click.echo(f"superset  {state} at {status['url']}  (pid {status['pid'] or '-'})")
        click.echo(f"  dashboard {status['dashboard_url']}")
        click.echo(f"  user      {status['user']}, password in {status['password_file']}")
        click.echo(f"  warehouse role {status['reader_role']} (reads schema gold only)")
        click.echo(f"  log       {status['log']}")
    if not status["running"]:
        sys.exit(EXIT_DOWN)


@dashboards_group.command("screenshot")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--width", default=1600, show_default=True, help="Viewport width in pixels.")
@click.option(
    "--height", default=1200, show_default=True, help="Viewport height (the PNG is the full page)."
)
@click.option(
    "--timeout",
    "timeout_s",
    default=120.0,
    show_default=True,
    help="Seconds to wait for the charts.",
)
@click.option(
    "--install-browser", is_flag=True,
    help="Install Debian's chromium with apt-get if it is missing (needs root).",
)  # fmt: skip
@click.option(
    "--summary", "summary_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Also write what was drawn as JSON to this file once every chart has drawn: per "
    "chart its title, type and share of inked pixels (for CI and scripts).",
)  # fmt: skip
def screenshot_cmd(
    out: Path,
    width: int,
    height: int,
    timeout_s: float,
    install_browser: bool,
    summary_path: Path | None,
) -> None:
    """Write a PNG of the "Air quality" dashboard once every chart has drawn.

    Needs a running Superset (aqi dashboards up), Debian's chromium and node/npm; the
    playwright-core package is installed into superset/screenshot with `npm ci` on first use.
    Fails (exit 1) when a chart does not draw or shows an error.
    """
    from aqi.screenshot import take_screenshot

    summary = take_screenshot(
        load_settings(), out, width=width, height=height, timeout_s=timeout_s,
        install_browser=install_browser, echo=click.echo,
    )  # fmt: skip
    if summary_path is not None:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    click.echo(
        f"screenshot: {summary['rendered']} of {summary['charts']} charts drawn -> {summary['file']}"
    )


@dashboards_group.command("role-sql")
def role_sql_cmd() -> None:
    """Print the SQL that creates Superset's read-only role (for a DBA of an external server).

    `aqi dashboards up` runs the same statements itself on the embedded PostgreSQL.
    """
    from aqi.services.superset import reader_role_sql

    click.echo(reader_role_sql(load_settings()), nl=False)


if (
    __name__ == "__main__"
):  # pragma: no cover - `python -m aqi.cli_dashboards ARGS` = `aqi dashboards ARGS`
    from aqi.cli import cli, main

    if "dashboards" not in cli.commands:
        cli.add_command(dashboards_group)
    sys.argv = ["aqi", "dashboards", *sys.argv[1:]]
    main()
