"""The two locked environments: main (Airflow 3, SQLAlchemy 2) and Superset's (SQLAlchemy 1.4)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aqi.core.environments import (
    REPO_ROOT,
    basemap_archive,
    ensure_superset_env,
    superset_env_dir,
)

pytestmark = pytest.mark.integration


def _version(python: Path, distribution: str) -> str:
    code = f"from importlib.metadata import version; print(version({distribution!r}))"
    out = subprocess.run(
        [str(python), "-c", code],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_superset_env_is_separate_and_locked() -> None:
    env_dir = ensure_superset_env(echo=lambda line: None)  # idempotent: already made by make
    assert env_dir == superset_env_dir()
    python = env_dir / "bin" / "python"
    assert _version(python, "sqlalchemy").startswith("1.4.")
    assert _version(python, "apache-superset").startswith("6.")
    assert (env_dir / "bin" / "superset").is_file()
    # with the map's borders, which Superset's settings need to start (SUPERSET_BASEMAP_ARCHIVE)
    assert basemap_archive().is_relative_to(env_dir) and basemap_archive().is_file()
    assert _version(Path(sys.executable), "sqlalchemy").startswith("2.")
    assert _version(Path(sys.executable), "apache-airflow").startswith("3.")


@pytest.mark.parametrize("project", [".", "superset"])
def test_lock_files_match_their_pyproject(project: str) -> None:
    from uv import find_uv_bin

    result = subprocess.run(
        [find_uv_bin(), "lock", "--check", "--project", str(REPO_ROOT / project)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
