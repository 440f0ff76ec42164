"""`aqi backfill --source archive`: user mistakes are one-line usage errors (exit 2), found
before anything is started; the help explains the archive mode."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from aqi.cli import cli

pytestmark = pytest.mark.unit

DAYS = ["--since", "2024-01-01", "--until", "2024-01-31"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--country", "US", *DAYS], "--country needs --source archive"),
        (["--bbox", "0,0,1,1", *DAYS], "--bbox needs --source archive"),
        (["--location", "2178", "--workers", "2", *DAYS], "--workers needs --source archive"),
        (["--source", "archive", *DAYS], "give one of --location ID..., --country CC or --bbox"),
        (["--source", "archive", "--location", "1", "--country", "US", *DAYS], "give one of"),
        (["--source", "archive", "--country", "USA", *DAYS], "--country: expected a two-letter"),
        (["--source", "archive", "--bbox", "1,2,3", *DAYS], "--bbox: expected min_lon"),
        (["--source", "archive", "--location", "x", *DAYS], "expected positive location ids"),
        (
            [
                "--source",
                "archive",
                "--location",
                "1",
                "--since",
                "2024-01-01T06:00:00",
                "--until",
                "2024-01-31",
            ],
            "whole local days: give a date",
        ),
        (
            [
                "--source",
                "archive",
                "--location",
                "1",
                "--since",
                "2024-02-01",
                "--until",
                "2024-01-31",
            ],
            "--since must not be after --until",
        ),
        (["--source", "archive", "--location", "1", "--workers", "0", *DAYS], "--workers"),
        (["--source", "ftp", "--location", "1", *DAYS], "'ftp' is not one of 'api', 'archive'"),
    ],
)
def test_mistakes_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["backfill", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_help_explains_the_archive_mode_resume_and_patched_files() -> None:
    result = CliRunner().invoke(cli, ["backfill", "--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    for words in ("--source [api|archive]", "--country CC", "--bbox", "--workers N",
                  "skips the files read", "patched in the archive since",
                  "fails only when nothing at all could be read", "AQ_ARCHIVE_BASE_URL"):  # fmt: skip
        assert words in text, words
