"""Screenshots of the Superset dashboard: Debian's chromium driven by playwright-core (npm).

No browser is downloaded: playwright-core drives the system's ``chromium`` (Debian package),
and the Node script (``superset/screenshot/screenshot.mjs``, locked by its
``package-lock.json``) is installed with ``npm ci`` on first use. The script logs in through
Superset's login form, opens the dashboard, waits until every chart has drawn (no loading
indicator, no error panel) and writes the PNG; it answers with a JSON summary.

Public surface: :func:`find_chromium`, :func:`ensure_chromium`, :func:`ensure_screenshot_tool`,
:func:`take_screenshot`, :class:`ScreenshotError`, :data:`CHROMIUM_HINT`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from aqi.core.config import Settings
from aqi.core.environments import REPO_ROOT
from aqi.core.errors import AqiError

__all__ = [
    "CHROMIUM_HINT",
    "ScreenshotError",
    "basemap_colours",
    "ensure_chromium",
    "ensure_screenshot_tool",
    "find_chromium",
    "take_screenshot",
]

Echo = Callable[[str], None]
TOOL_DIR = REPO_ROOT / "superset" / "screenshot"
SCRIPT = TOOL_DIR / "screenshot.mjs"
#: a chart body with a smaller share of pixels off its background colour is blank: an empty
#: body is 0, the sparsest chart here (the map) ~0.3% with 6 points, one point of it ~0.07%
MIN_INK = 0.0003
CHROMIUM_HINT = "install it with: apt-get install -y chromium"
#: how far (RGB distance) a pixel may be from a base-map colour to count as that colour
SWATCH_DISTANCE = 24
_CHROMIUM_NAMES = ("chromium", "chromium-browser")


class ScreenshotError(AqiError):
    """The screenshot could not be taken, or a chart did not draw."""


def basemap_colours() -> dict[str, list[int]]:
    """The colours of the offline map tiles (``COLOURS`` of superset/aq_basemap.py, a module of
    Superset's environment, read without importing it): water, land, coast, border."""
    import ast

    source = (REPO_ROOT / "superset" / "aq_basemap.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "COLOURS" for t in node.targets
        ):
            return {name: list(rgb) for name, rgb in ast.literal_eval(node.value).items()}
    raise AqiError("superset/aq_basemap.py defines no COLOURS")


def find_chromium() -> Path | None:
    """The system's Chromium (Debian: /usr/bin/chromium), or None."""
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def ensure_chromium(*, install: bool = False, echo: Echo = print) -> Path:
    """The Chromium executable; with ``install``, apt-get installs it when missing (as root).

    Without ``install`` (or when not root, or without apt-get) a missing browser is a
    :class:`ScreenshotError` whose message says how to install it.
    """
    found = find_chromium()
    if found is not None:
        return found
    if not install:
        raise ScreenshotError(f"chromium is not installed: {CHROMIUM_HINT}")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ScreenshotError(
            f"chromium is not installed (and this is not root on Debian): {CHROMIUM_HINT}"
        )
    echo("screenshot: installing chromium (apt-get install -y chromium) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ScreenshotError(f"{' '.join(argv)} failed: " + " | ".join(tail))
    found = find_chromium()
    if found is None:
        raise ScreenshotError(f"chromium is still missing after apt-get: {CHROMIUM_HINT}")
    return found


def ensure_screenshot_tool(echo: Echo = print) -> Path:
    """``npm ci`` in superset/screenshot when its node_modules is missing or out of date."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise ScreenshotError(
            "node and npm are needed for screenshots: apt-get install -y nodejs npm"
        )
    lock = TOOL_DIR / "package-lock.json"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    stamp = TOOL_DIR / "node_modules" / f".aq-installed-{digest}"
    if not stamp.is_file():
        echo("screenshot: installing playwright-core (npm ci in superset/screenshot) ...")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=TOOL_DIR,
            env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ScreenshotError("npm ci in superset/screenshot failed: " + " | ".join(tail))
        stamp.touch()
    return Path(node)


def take_screenshot(
    settings: Settings,
    out: Path,
    *,
    width: int = 1600,
    height: int = 1200,
    timeout_s: float = 120,
    install_browser: bool = False,
    echo: Echo = print,
) -> dict:
    """PNG of the "Air quality" dashboard of the running Superset; returns the script's summary.

    The summary has ``charts`` (chart panels on the dashboard), ``rendered`` (drawn, with ink
    in its body), ``loading``, ``errors`` (texts of error panels), ``titles``, ``viz_types``,
    ``ink`` (per chart, the share of its body's pixels off its background colour),
    ``swatches`` (per map chart, the share of its pixels in each colour of the offline base
    map, :func:`basemap_colours`; None for the other charts) and ``file``. Raises
    :class:`ScreenshotError` when a chart is not drawn or an error panel shows (the PNG is
    written anyway, to look at).
    """
    from aqi.services.superset import ADMIN_USER, DASHBOARD_SLUG, EmbeddedSuperset, admin_password

    superset = EmbeddedSuperset(settings)
    if not superset.healthy():
        raise ScreenshotError(
            f"Superset does not answer at {superset.url}: run `aqi dashboards up`"
        )
    chromium = ensure_chromium(install=install_browser, echo=echo)
    node = ensure_screenshot_tool(echo)
    out = out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    request = {
        "url": superset.url,
        "dashboard": DASHBOARD_SLUG,
        "username": ADMIN_USER,
        "password": admin_password(settings)[0],
        "out": str(out),
        "executable": str(chromium),
        "width": width,
        "height": height,
        "timeout_ms": int(timeout_s * 1000),
        "min_ink": MIN_INK,
        "swatches": basemap_colours(),
        "swatch_distance": SWATCH_DISTANCE,
    }
    echo(f"screenshot: rendering {superset.dashboard_url} with {chromium} ...")
    result = subprocess.run(
        [str(node), str(SCRIPT)], input=json.dumps(request), cwd=TOOL_DIR, capture_output=True,
        text=True, timeout=timeout_s + 90, check=False,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ScreenshotError("the screenshot script failed: " + " | ".join(tail))
    summary = json.loads(lines[-1])
    if "fatal" in summary:
        raise ScreenshotError(f"screenshot: {summary['fatal']}")
    if result.returncode != 0 or summary["errors"] or summary["rendered"] != summary["charts"]:
        blank = [title for title, ink in zip(summary["titles"], summary.get("ink", []), strict=False)
                 if ink < MIN_INK]  # fmt: skip
        problems = "; ".join(summary["errors"]) or (
            f"blank: {', '.join(blank)}" if blank else f"{summary['loading']} still loading"
        )
        raise ScreenshotError(
            f"{summary['rendered']} of {summary['charts']} charts drawn ({problems}); see {out}"
        )
    return summary
