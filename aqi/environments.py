"""Secondary Python environments the project creates from its own lock files.

Superset 6 pins SQLAlchemy 1.4 while Airflow 3 needs 2.x, so Superset cannot live in the main
environment. It gets its own, described by ``superset/pyproject.toml`` + ``superset/uv.lock``
and created here with ``uv sync --frozen`` (exact, tested versions; seconds when cached).
``uv`` itself is a pinned dependency of the main environment, so no global install is needed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from aqi.errors import AqiError

__all__ = ["REPO_ROOT", "ensure_superset_env", "superset_env_dir"]

#: the checkout the package runs from (the project installs in editable mode)
REPO_ROOT = Path(__file__).resolve().parents[1]


def superset_env_dir() -> Path:
    """Where the Superset environment lives (``superset/.venv``)."""
    return REPO_ROOT / "superset" / ".venv"


def ensure_superset_env(echo: Callable[[str], None] = print) -> Path:
    """Create or update the Superset environment to match ``superset/uv.lock``; returns it."""
    project = REPO_ROOT / "superset"
    if not (project / "uv.lock").is_file():
        raise AqiError(f"{project / 'uv.lock'} is missing: run aqi from a checkout of the project")
    env_dir = superset_env_dir()
    echo(f"superset env: syncing {env_dir} with superset/uv.lock ...")
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(env_dir)}
    env.pop("VIRTUAL_ENV", None)  # uv would warn that it does not match the project's env
    result = subprocess.run(
        # bytecode compiled once here: under PYTHONDONTWRITEBYTECODE every start recompiles
        [_uv(), "sync", "--frozen", "--no-install-project", "--compile-bytecode",
         "--project", str(project)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise AqiError("creating the Superset environment failed: " + " | ".join(tail))
    echo(f"superset env: ready ({env_dir / 'bin' / 'superset'})")
    return env_dir


def _uv() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        from shutil import which

        found = which("uv")
        if found is None:
            raise AqiError("uv is not installed: run `make env`") from None
        return found
