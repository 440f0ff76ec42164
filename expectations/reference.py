"""What the quality checks share with dbt, read from dbt's own files (never copied).

The thresholds a check enforces are the warehouse's rules, so they are read from where the
warehouse defines them, and a change there changes both at once:

- :func:`pollutant_limits` - ``seeds/pollutant_limits.csv``: the physical maximum per
  parameter and units (silver rejects readings above it), the WHO and US 24-hour levels;
- :func:`aqi_scale` - ``seeds/aqi_breakpoints.csv``: the EPA category names in order and the
  index range (0-500);
- :func:`freshness_error_after` - the ``error_after`` of the ``openaq`` source in
  ``models/staging/_openaq__sources.yml`` (what ``dbt source freshness`` calls an error);
- :func:`gold_models`, :func:`model_columns`, :func:`model_unique_key` - the gold models, the
  columns each documents and its grain (``aqi/core/gold_contract.py``, which reads
  ``models/marts/gold/_gold__models.yml`` for every part that needs the gold tables);
- :data:`GROUPS` / :func:`checked_tables` - which tables each group of checks covers, so a
  caller can look for them before paying for the Great Expectations import.

Nothing here imports Great Expectations, so it is cheap to import and to unit-test.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from aqi.core.gold_contract import GOLD_SCHEMA, gold_models, model_columns, model_unique_key
from aqi.core.warehouse import DBT_PROJECT_DIR

__all__ = [
    "GROUPS",
    "LOADED_AT",
    "RAW_TABLE",
    "REBUILT_AT",
    "AqiScale",
    "PollutantLimit",
    "aqi_scale",
    "checked_tables",
    "freshness_error_after",
    "gold_models",
    "model_columns",
    "model_unique_key",
    "pollutant_limits",
]

SEEDS_DIR = DBT_PROJECT_DIR / "seeds"
SOURCES_YML = DBT_PROJECT_DIR / "models" / "staging" / "_openaq__sources.yml"
#: the dbt source whose freshness the raw checks share
RAW_SOURCE = "openaq"
#: the table the stream writes (aqi/core/sql/0001_raw_tables.sql), as (schema, table)
RAW_TABLE = ("raw", "openaq_measurements")
#: when a raw row was loaded (a clock_timestamp() default); raw's new-rows suite judges the
#: rows loaded at or after its gate's mark
LOADED_AT = "loaded_at"
#: the column every gold model stamps with its building transaction's now(); the gold gate
#: judges the rows whose stamp is at or after its mark (expectations/runner.py)
REBUILT_AT = "rebuilt_at"
#: the groups of checks, in the order the pipeline runs them
GROUPS = ("raw", "gold")
_PERIODS = {"minute": "minutes", "hour": "hours", "day": "days"}


@dataclass(frozen=True)
class PollutantLimit:
    """One row of ``pollutant_limits.csv``; the guideline levels exist for PM only."""

    parameter: str
    units: str
    physical_max: float
    who_24h: float | None
    us_24h: float | None


@dataclass(frozen=True)
class AqiScale:
    """The EPA index: category names from best to worst and the index range."""

    categories: tuple[str, ...]
    min_aqi: int
    max_aqi: int


@cache
def pollutant_limits(path: Path = SEEDS_DIR / "pollutant_limits.csv") -> tuple[PollutantLimit, ...]:
    """The rows of the seed, in file order."""

    def number(text: str) -> float | None:
        return float(text) if text.strip() else None

    with path.open(encoding="utf-8", newline="") as f:
        return tuple(
            PollutantLimit(
                parameter=row["parameter"],
                units=row["units"],
                physical_max=float(row["physical_max"]),
                who_24h=number(row["who_24h"]),
                us_24h=number(row["us_24h"]),
            )
            for row in csv.DictReader(f)
        )


@cache
def aqi_scale(path: Path = SEEDS_DIR / "aqi_breakpoints.csv") -> AqiScale:
    """Categories ordered by their lowest index (the spelling of the seed and aqi.sql)."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    lowest: dict[str, int] = {}
    for row in rows:
        lowest[row["category"]] = min(int(row["aqi_lo"]), lowest.get(row["category"], 10**9))
    return AqiScale(
        categories=tuple(sorted(lowest, key=lowest.__getitem__)),
        min_aqi=min(int(row["aqi_lo"]) for row in rows),
        max_aqi=max(int(row["aqi_hi"]) for row in rows),
    )


@cache
def freshness_error_after(path: Path = SOURCES_YML, source: str = RAW_SOURCE) -> timedelta:
    """The source's ``freshness.error_after`` (e.g. ``{count: 6, period: hour}`` -> 6 h)."""
    doc = _yaml(path)
    for entry in doc.get("sources", []):
        if entry.get("name") == source:
            rule = entry["freshness"]["error_after"]
            return timedelta(**{_PERIODS[rule["period"]]: rule["count"]})
    raise LookupError(f"{path}: no source named {source!r}")


def checked_tables(groups: tuple[str, ...] | list[str] = GROUPS) -> list[tuple[str, str, str]]:
    """``(group, schema, table)`` of every table the given groups check, in order."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; expected some of {list(GROUPS)}")
    tables = []
    if "raw" in groups:
        tables.append(("raw", *RAW_TABLE))
    if "gold" in groups:
        tables.extend(("gold", GOLD_SCHEMA, model) for model in gold_models())
    return tables


@cache
def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
