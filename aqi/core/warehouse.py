"""Running dbt on the warehouse project with the project's connection settings.

dbt reads its connection from AQ_DATABASE_URL (dbt_project/profiles.yml); this module sets
it to the resolved URL (external, or the embedded server's with its generated password), so
users and DAGs never copy credentials around. dbt runs as a child process of this
environment's own dbt executable: its exit code is passed through. :func:`dbt_invocation`
gives the arguments and environment that child gets, for a caller that runs dbt otherwise
(the test suite runs it in its own process through dbt's ``dbtRunner``).

dbt writes its artifacts (manifest, run results, docs catalog, partial parse state) to its
target path: ``dbt_project/target`` unless ``DBT_TARGET_PATH`` (dbt's own variable) says
otherwise, e.g. for two AQ_HOMEs building from one checkout at once. :func:`dbt_target_dir`
is where the project reads them back, so reader and writer never disagree.

Public surface: :data:`DBT_PROJECT_DIR`, :func:`dbt_target_dir`, :func:`dbt_env`,
:func:`dbt_invocation`, :func:`run_dbt`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from aqi.core.config import Settings
from aqi.core.connections import database_url
from aqi.core.environments import REPO_ROOT
from aqi.core.errors import AqiError

__all__ = ["DBT_PROJECT_DIR", "dbt_env", "dbt_invocation", "dbt_target_dir", "run_dbt"]

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
_DIR_FLAGS = {"--project-dir", "--profiles-dir"}


def dbt_target_dir() -> Path:
    """Where dbt writes its artifacts: ``DBT_TARGET_PATH`` (relative to the project, as dbt
    reads it) if set, else ``dbt_project/target`` (dbt_project.yml's target-path)."""
    return DBT_PROJECT_DIR / os.environ.get("DBT_TARGET_PATH", "target")


def dbt_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment dbt needs: ``base`` (the current one unless given) plus the resolved
    AQ_DATABASE_URL."""
    return {
        **(os.environ if base is None else base),
        "AQ_DATABASE_URL": database_url(settings),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def dbt_invocation(
    settings: Settings, args: list[str], base_env: Mapping[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """dbt's arguments for ``dbt <args>`` on dbt_project/ (its folders added unless the args
    name others, or only ask for help or the version) and the environment it runs in."""
    wants_dirs = (
        bool(args) and args[0] not in ("--help", "-h", "--version") and not (_DIR_FLAGS & set(args))
    )
    dirs = ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    return [*args, *(dirs if wants_dirs else [])], dbt_env(settings, base_env)


def run_dbt(settings: Settings, args: list[str]) -> int:
    """``dbt <args>`` on dbt_project/ (unless the args name other dirs); returns its exit code."""
    executable = Path(sys.executable).with_name("dbt")
    if not executable.exists():
        raise AqiError("dbt is not installed in this environment: run `make env`")
    dbt_args, env = dbt_invocation(settings, args)
    return subprocess.run([str(executable), *dbt_args], env=env, check=False).returncode
