"""The parts of the project's environment that ``uv sync`` of the main one does not create.

- **Superset's Python environment.** Superset 6 pins SQLAlchemy 1.4 while Airflow 3 needs 2.x,
  so Superset cannot live in the main environment. It gets its own, described by
  ``superset/pyproject.toml`` + ``superset/uv.lock`` and created with ``uv sync --frozen``
  (exact, tested versions; seconds when cached). ``uv`` itself is a pinned dependency of the
  main environment, so no global install is needed.
- **The offline base map's data** (:func:`ensure_basemap_archive`): the npm package
  ``world-atlas`` (Natural Earth's countries as TopoJSON; ISC, the data public domain), pinned
  by version and SHA-256 in ``superset/aq_basemap.py``, packed once by ``npm pack`` into
  Superset's environment (``superset/.venv/share/aq-basemap/``), where Superset draws map
  tiles from it: nothing is downloaded when Superset runs.
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
    "basemap_archive",
    "ensure_basemap_archive",
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
    """Create or update the Superset environment to match ``superset/uv.lock``, with the base
    map's data (:func:`ensure_basemap_archive`); returns it."""
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
    ensure_basemap_archive(echo)
    echo(f"superset env: ready ({env_dir / 'bin' / 'superset'})")
    return env_dir


def _basemap_pins() -> tuple[str, str, str]:
    """(package, version, SHA-256 of its archive), read from superset/aq_basemap.py (the module
    runs in Superset's environment; its pins are plain assignments, read without importing)."""
    import ast

    source = (REPO_ROOT / "superset" / "aq_basemap.py").read_text(encoding="utf-8")
    pins: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    pins[target.id] = node.value.value
    return pins["PACKAGE"], pins["VERSION"], pins["ARCHIVE_SHA256"]


def basemap_archive() -> Path:
    """Where the base map's archive lives: ``share/aq-basemap`` of Superset's environment."""
    package, version, _ = _basemap_pins()
    return superset_env_dir() / "share" / "aq-basemap" / f"{package}-{version}.tgz"


def ensure_basemap_archive(
    echo: Callable[[str], None] = print, *, pack: Callable[[str, Path], Path] | None = None
) -> Path:
    """``npm pack`` the pinned world-atlas into :func:`basemap_archive`, unless it is there.

    The archive must hash to the pinned SHA-256 (what the registry served when it was pinned),
    else nothing is installed. ``pack(spec, folder)`` fetches ``spec`` into ``folder`` and
    returns the file (default: ``npm pack``; tests pass their own).
    """
    package, version, sha256 = _basemap_pins()
    target = basemap_archive()
    if target.is_file() and _sha256(target) == sha256:
        echo(f"base map: {package}@{version} already in {target.parent}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        echo(f"base map: npm pack {package}@{version} (Natural Earth's countries, once) ...")
        packed = (pack or _npm_pack)(f"{package}@{version}", staging)
        found = _sha256(packed)
        if found != sha256:
            raise AqiError(
                f"{package}@{version} from the registry has SHA-256 {found}, not the pinned "
                f"{sha256} (superset/aq_basemap.py): not installed"
            )
        packed.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    echo(f"base map: {target}")
    return target


def _npm_pack(spec: str, folder: Path) -> Path:
    """``npm pack SPEC`` (the machine's npm registry, proxy and cache settings apply); without
    npm, the same archive straight from registry.npmjs.org (checked against the same hash)."""
    npm = shutil.which("npm")
    if npm is None:
        return _registry_download(spec, folder)
    result = subprocess.run(
        [npm, "pack", spec, "--pack-destination", str(folder), "--silent"],
        cwd=folder, capture_output=True, text=True, check=False,
    )  # fmt: skip
    packed = sorted(folder.glob("*.tgz"))
    if result.returncode != 0 or len(packed) != 1:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise AqiError(f"npm pack {spec} failed (exit {result.returncode}): " + " | ".join(tail))
    return packed[0]


def _registry_download(spec: str, folder: Path) -> Path:
    import urllib.request

    package, version = spec.rsplit("@", 1)
    url = f"https://registry.npmjs.org/{package}/-/{package}-{version}.tgz"
    out = folder / f"{package}-{version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, out.open("wb") as handle:
            shutil.copyfileobj(response, handle)
    except OSError as exc:
        raise AqiError(
            f"downloading {url} failed ({exc}): install npm, or put the archive at "
            f"{basemap_archive()} by hand"
        ) from None
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
