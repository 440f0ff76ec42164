"""The parts of the project's environment that ``uv sync`` of the main one does not create.

- **Superset's Python environment.** Superset 6 pins SQLAlchemy 1.4 while Airflow 3 needs 2.x,
  so Superset cannot live in the main environment. It gets its own, described by
  ``superset/pyproject.toml`` + ``superset/uv.lock`` and created with ``uv sync --frozen``
  (exact, tested versions; seconds when cached). ``uv`` itself is a pinned dependency of the
  main environment, so no global install is needed.
- **The JVM jars** (:func:`ensure_jvm_libs`): Apache Kafka's broker and Spark's Kafka source,
  pinned in ``jvm/pom.xml`` and resolved from Maven Central by ``mvn`` into the main
  environment (``.venv/share/aq-jvm/<module>/``), once: a stamp records the poms they came
  from, and nothing is downloaded when a broker or a stream starts (:func:`jvm_jars` only
  looks on disk). Maven rather than Spark's ``--packages``: Ivy does not use the machine's
  Maven set-up, and a stream must never depend on the network to start.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from aqi.core.errors import AqiError

__all__ = [
    "JVM_MODULES",
    "JVM_PROJECT_DIR",
    "REPO_ROOT",
    "ensure_jvm_libs",
    "ensure_superset_env",
    "jvm_jars",
    "jvm_libs_dir",
    "superset_env_dir",
]

#: the checkout the package runs from (the project installs in editable mode)
REPO_ROOT = Path(__file__).resolve().parents[2]
#: the Maven project that pins the JVM jars (one module per folder of jars)
JVM_PROJECT_DIR = REPO_ROOT / "jvm"
#: module -> what it is for (and the folder its jars go to)
JVM_MODULES = {
    "kafka": "Apache Kafka's broker (aqi services up)",
    "spark": "Spark's Kafka source (aqi stream)",
}
_STAMP = "installed-from.sha256"


def jvm_libs_dir() -> Path:
    """Where the JVM jars live: ``share/aq-jvm`` of the running (main) environment."""
    return Path(sys.prefix) / "share" / "aq-jvm"


def jvm_jars(module: str) -> list[Path]:
    """The installed jars of ``module`` (``kafka`` or ``spark``), sorted; never downloads.

    Raises :class:`AqiError` naming the command to run when they are not installed.
    """
    if module not in JVM_MODULES:
        raise ValueError(f"unknown JVM module {module!r}")
    folder = jvm_libs_dir() / module
    jars = sorted(folder.glob("*.jar"))
    if not jars:
        raise AqiError(
            f"{JVM_MODULES[module]} needs jars that are not installed in {folder}: "
            "run `make jvm` (or `aqi setup --only jvm`)"
        )
    return jars


def ensure_jvm_libs(echo: Callable[[str], None] = print, *, force: bool = False) -> Path:
    """Resolve ``jvm/pom.xml`` from Maven Central into :func:`jvm_libs_dir`, unless done.

    Skipped when the stamp in that folder matches the poms (so a second ``make test`` costs
    nothing); otherwise ``mvn dependency:copy-dependencies`` fills a fresh folder that then
    replaces the old one, so an interrupted download never leaves half a classpath.
    """
    target = jvm_libs_dir()
    digest = _poms_digest()
    stamp = target / _STAMP
    if not force and stamp.is_file() and stamp.read_text().strip() == digest:
        echo(f"jvm: jars up to date in {target}")
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise AqiError(
            "Maven (mvn) is needed once to install Apache Kafka and Spark's Kafka connector "
            "from Maven Central: install it (e.g. apt-get install -y maven) and run `make jvm`"
        )
    staging = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    echo(f"jvm: resolving {JVM_PROJECT_DIR / 'pom.xml'} from Maven Central into {target} ...")
    result = subprocess.run(
        [mvn, "--batch-mode", "--quiet", "--file", str(JVM_PROJECT_DIR / "pom.xml"),
         f"-Daq.jvm.dir={staging}", "dependency:copy-dependencies"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
        tail = " | ".join((errors or (result.stdout + result.stderr).splitlines())[:3])
        raise AqiError(f"installing the JVM jars failed (mvn exit {result.returncode}): {tail}")
    for module in JVM_MODULES:
        if not any((staging / module).glob("*.jar")):
            raise AqiError(f"mvn resolved no jars for jvm/{module}: see jvm/{module}/pom.xml")
    (staging / _STAMP).write_text(digest + "\n")
    old = target.with_name(f"{target.name}.{os.getpid()}.old")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    jars = sum(len(list((target / m).glob("*.jar"))) for m in JVM_MODULES)
    echo(f"jvm: {jars} jars installed in {target}")
    return target


def _poms_digest() -> str:
    """SHA-256 over every pom of the JVM project (what the installed jars were made from)."""
    digest = hashlib.sha256()
    for pom in sorted(JVM_PROJECT_DIR.rglob("pom.xml")):
        if "target" in pom.relative_to(JVM_PROJECT_DIR).parts:
            continue
        digest.update(pom.relative_to(JVM_PROJECT_DIR).as_posix().encode() + b"\0")
        digest.update(pom.read_bytes())
    return digest.hexdigest()


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
