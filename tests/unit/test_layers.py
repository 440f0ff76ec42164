"""The layers keep one direction (core <- pipeline <- services <- shell): the import-linter
contracts in pyproject.toml hold, and every module of ``aqi`` is placed in a layer, so a new
module cannot slip past them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from importlinter import configuration
from importlinter.application.use_cases import SUCCESS, lint_imports

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"


def test_the_import_contracts_hold() -> None:
    # on failure import-linter prints which import breaks which contract (captured output)
    configuration.configure()  # what its command line does first: readers, graph builder
    assert lint_imports(str(PYPROJECT), cache_dir=None, no_logo=True) == SUCCESS


def test_every_aqi_module_has_a_layer() -> None:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    placed = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    modules = {f"aqi.{p.stem}" for p in (ROOT / "aqi").glob("*.py") if p.stem != "__init__"}
    modules |= {f"aqi.{p.name}" for p in (ROOT / "aqi").iterdir() if (p / "__init__.py").is_file()}
    assert modules - placed == set(), "add the new modules to a layer in pyproject.toml"
    assert placed - modules <= {"ingestion", "spark_streaming", "expectations"}
