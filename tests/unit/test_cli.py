"""The `aqi` command as a user meets it: help everywhere, one-line errors, masked secrets."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from conftest import isolated_env, run_aqi

from aqi.cli import cli


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


@pytest.mark.integration
def test_every_command_has_help(tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "home")
    paths = list(_all_commands(cli))
    assert ("services", "up") in paths and ("config",) in paths
    for path in [(), *paths]:
        result = run_aqi([*path, "--help"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Usage: aqi" in result.stdout
        command = cli
        for part in path:
            command = command.commands[part]
        first_line = (command.help or "").strip().splitlines()[0]
        assert first_line and first_line[:30] in " ".join(result.stdout.split())


@pytest.mark.integration
def test_invalid_config_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "home", AQ_PG_PORT="not-a-port")
    for args in (["config"], ["services", "status"], ["services", "up"]):
        result = run_aqi(args, env, tmp_path)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "AQ_PG_PORT" in lines[0], result.stderr


@pytest.mark.integration
def test_config_masks_secrets(tmp_path: Path) -> None:
    env = isolated_env(
        tmp_path / "home",
        OPENAQ_API_KEY="sk-very-secret-key",
        AQ_DATABASE_URL="postgresql://wh:db-pass-123@db.example:5432/aq",
    )
    result = run_aqi(["config"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sk-very-secret-key" not in result.stdout
    assert "db-pass-123" not in result.stdout
    assert "postgresql://wh:***@db.example:5432/aq" in result.stdout
    as_json = run_aqi(["config", "--json"], env, tmp_path)
    assert "sk-very-secret-key" not in as_json.stdout and "db-pass-123" not in as_json.stdout


@pytest.mark.integration
def test_config_reads_dotenv_in_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AQ_KAFKA_TOPIC=topic.from.dotenv\n")
    result = run_aqi(["config"], isolated_env(tmp_path / "home"), tmp_path)
    assert "topic.from.dotenv" in result.stdout


@pytest.mark.integration
def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run_aqi(["servics"], isolated_env(tmp_path / "home"), tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "No such command" in result.stderr


@pytest.mark.parametrize("debug", [False, True])
def test_an_unforeseen_failure_is_one_line_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], debug: bool
) -> None:
    from aqi import cli as cli_module
    from aqi.core.errors import EXIT_UNEXPECTED

    def broken(**_kwargs) -> None:
        raise RuntimeError("boom\nmore detail on a second line")

    monkeypatch.setattr(cli_module.cli, "main", broken)
    if debug:
        monkeypatch.setenv("AQ_DEBUG", "1")
    else:
        monkeypatch.delenv("AQ_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli_module.main()
    assert exited.value.code == EXIT_UNEXPECTED == 70
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "aqi: unexpected error: RuntimeError: boom (AQ_DEBUG=1 shows the trace)"
    )
    assert ("Traceback" in err) is debug


def test_first_line_of_an_error() -> None:
    from aqi.core.errors import first_line

    assert first_line(OSError("\n  connection refused  \n\tIs the server running?")) == (
        "connection refused"
    )
    assert first_line(KeyError()) == "KeyError"
    assert first_line("") == ""


def test_docs_options_that_exclude_each_other_are_usage_errors() -> None:
    from click.testing import CliRunner

    for args, why in (
        (["--stop", "--port", "9999"], "--stop takes no other option"),
        (["--stop", "--background"], "--stop takes no other option"),
        (["--no-serve", "--background"], "--no-serve and --background exclude each other"),
    ):
        result = CliRunner().invoke(cli, ["docs", *args])
        assert result.exit_code == 2 and why in result.output, (args, result.output)
