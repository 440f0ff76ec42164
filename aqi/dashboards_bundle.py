"""Reading and checking the Superset bundle (superset/bundle) without Superset.

The bundle is Superset's own import format ("assets": ``metadata.yaml``, ``databases/``,
``datasets/<database>/``, ``charts/``, ``dashboards/``); ``aqi dashboards up`` imports it with
Superset (superset/provision.py). What Superset's import does not check, and what would only
show as a broken chart later, is checked here first, so a mistake in a hand-edited YAML fails
fast with a message naming the file:

- UUIDs are unique, and every reference (dataset -> database, chart -> dataset, dashboard ->
  charts, native filter -> dataset) points at an object of the bundle;
- every chart carries a ``query_context`` (without one Superset's chart data API answers 400)
  whose metrics and columns exist in its dataset, and its ``params`` name the same metrics;
- every chart is on a dashboard, and every column a native filter uses exists in the dataset
  of every chart it applies to (otherwise Superset silently ignores the filter there);
- no password is committed (the database URI carries Superset's mask) and the SQL of virtual
  datasets reads schema ``gold`` only (the role Superset uses can read nothing else).

Public surface: :class:`Bundle`, :func:`load_bundle`, :func:`validate_bundle`,
:func:`check_bundle`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from aqi.core.errors import AqiError

__all__ = ["Bundle", "check_bundle", "load_bundle", "validate_bundle"]

KINDS = ("databases", "datasets", "charts", "dashboards")
PASSWORD_MASK = "X" * 10
ALLOWED_SCHEMA = "gold"
_RELATION = re.compile(
    r"\b(?:from|join)\s+([A-Za-z_][\w$]*)(?:\s*\.\s*([A-Za-z_][\w$]*))?", re.IGNORECASE
)
_CTE = re.compile(r"\b([A-Za-z_][\w$]*)\s+as\s+(?:not\s+)?(?:materialized\s+)?\(", re.IGNORECASE)


@dataclass
class Bundle:
    """The parsed files of a bundle: ``objects[kind][relative path] = config``."""

    root: Path
    metadata: dict[str, Any]
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def items(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        return iter(self.objects.get(kind, {}).items())

    def by_uuid(self, kind: str) -> dict[str, dict[str, Any]]:
        return {str(config.get("uuid")): config for _, config in self.items(kind)}

    @property
    def chart_count(self) -> int:
        return len(self.objects.get("charts", {}))

    def gold_tables(self) -> tuple[str, ...]:
        """The tables of schema ``gold`` the datasets read (a physical dataset's table, the
        relations a virtual dataset's SQL names), sorted: what the dashboard needs built."""
        tables = set()
        for _, dataset in self.items("datasets"):
            sql = dataset.get("sql")
            if not sql:
                if dataset.get("schema") == ALLOWED_SCHEMA:
                    tables.add(str(dataset.get("table_name")))
                continue
            tables.update(
                table for schema, table in _RELATION.findall(sql)
                if table and schema.lower() == ALLOWED_SCHEMA
            )  # fmt: skip
        return tuple(sorted(tables))


def load_bundle(root: Path) -> Bundle:
    """Parse every YAML file of the bundle folder ``root``."""
    meta = root / "metadata.yaml"
    if not meta.is_file():
        raise AqiError(f"{root} is not a Superset bundle: no metadata.yaml")
    bundle = Bundle(root=root, metadata=_read_yaml(meta), objects={k: {} for k in KINDS})
    for path in sorted(root.rglob("*.y*ml")):
        relative = path.relative_to(root).as_posix()
        kind = relative.split("/", 1)[0]
        if kind in KINDS:
            bundle.objects[kind][relative] = _read_yaml(path)
    return bundle


def check_bundle(root: Path) -> Bundle:
    """:func:`load_bundle` + :func:`validate_bundle`; raises AqiError listing the problems."""
    bundle = load_bundle(root)
    problems = validate_bundle(bundle)
    if problems:
        raise AqiError(f"the bundle {root} has problems: " + "; ".join(problems))
    return bundle


def validate_bundle(bundle: Bundle) -> list[str]:
    """Every problem found, each naming its file; an empty list means the bundle is sound."""
    problems: list[str] = []
    if bundle.metadata.get("type") != "assets":
        problems.append("metadata.yaml: type must be 'assets' (imported with overwrite)")
    problems += _unique_uuids(bundle)
    databases, datasets = bundle.by_uuid("databases"), bundle.by_uuid("datasets")
    for path, database in bundle.items("databases"):
        password = urlsplit(str(database.get("sqlalchemy_uri", ""))).password
        if password not in (None, PASSWORD_MASK):
            problems.append(f"{path}: the URI holds a password; write {PASSWORD_MASK} instead")
    for path, dataset in bundle.items("datasets"):
        if str(dataset.get("database_uuid")) not in databases:
            problems.append(f"{path}: database_uuid is not a database of the bundle")
        problems += _dataset_reads_gold_only(path, dataset)
    for path, chart in bundle.items("charts"):
        dataset = datasets.get(str(chart.get("dataset_uuid")))
        if dataset is None:
            problems.append(f"{path}: dataset_uuid is not a dataset of the bundle")
            continue
        problems += _chart_problems(path, chart, dataset)
    problems += _dashboard_problems(bundle)
    return problems


# --- the checks ------------------------------------------------------------------------------


def _unique_uuids(bundle: Bundle) -> list[str]:
    seen: dict[str, str] = {}
    problems = []
    for kind in KINDS:
        for path, config in bundle.items(kind):
            uuid = str(config.get("uuid") or "")
            if not re.fullmatch(r"[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}", uuid):
                problems.append(f"{path}: uuid {uuid!r} is not a UUID")
            elif uuid in seen:
                problems.append(f"{path}: uuid {uuid} is also used by {seen[uuid]}")
            else:
                seen[uuid] = path
    return problems


def _dataset_reads_gold_only(path: str, dataset: dict[str, Any]) -> list[str]:
    sql = dataset.get("sql")
    if not sql:
        schema = dataset.get("schema")
        ok = schema == ALLOWED_SCHEMA
        return [] if ok else [f"{path}: table in schema {schema!r}, not {ALLOWED_SCHEMA!r}"]
    ctes = {name.lower() for name in _CTE.findall(sql)}
    others = sorted(
        f"{schema}.{table}" if table else schema
        for schema, table in _RELATION.findall(sql)
        if (table and schema.lower() != ALLOWED_SCHEMA)
        or (not table and schema.lower() not in ctes)
    )
    if not others:
        return []
    return [f"{path}: the SQL reads {', '.join(others)} (only {ALLOWED_SCHEMA}.<table> allowed)"]


def _names(dataset: dict[str, Any]) -> tuple[set[str], set[str]]:
    columns = {c["column_name"] for c in dataset.get("columns") or []}
    metrics = {m["metric_name"] for m in dataset.get("metrics") or []}
    return columns, metrics


def _chart_problems(path: str, chart: dict[str, Any], dataset: dict[str, Any]) -> list[str]:
    problems = []
    columns, metrics = _names(dataset)
    raw = chart.get("query_context")
    if not raw:
        return [f"{path}: no query_context (Superset's chart data API would answer 400)"]
    try:
        context = json.loads(raw)
    except (TypeError, ValueError) as exc:
        return [f"{path}: query_context is not JSON: {exc}"]
    queries = context.get("queries") or []
    if not queries:
        problems.append(f"{path}: query_context has no queries")
    for query in queries:
        for metric in query.get("metrics") or []:
            if isinstance(metric, str) and metric not in metrics:
                problems.append(f"{path}: query_context metric {metric!r} not in the dataset")
        for column in [*(query.get("columns") or []), *_filter_columns(query)]:
            name = column if isinstance(column, str) else column.get("sqlExpression")
            if isinstance(name, str) and name not in columns:
                problems.append(f"{path}: query_context column {name!r} not in the dataset")
    params = chart.get("params") or {}
    if params.get("viz_type", chart.get("viz_type")) != chart.get("viz_type"):
        problems.append(f"{path}: params.viz_type differs from viz_type")
    for metric in _param_metrics(params):
        if metric not in metrics:
            problems.append(f"{path}: params metric {metric!r} not in the dataset")
    return problems


def _filter_columns(query: dict[str, Any]) -> list[str]:
    return [f["col"] for f in query.get("filters") or [] if isinstance(f.get("col"), str)]


def _param_metrics(params: dict[str, Any]) -> list[str]:
    found = []
    for key in ("metric", "metrics", "timeseries_limit_metric"):
        value = params.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                found.append(item)
    radius = params.get("point_radius_fixed")
    if isinstance(radius, dict) and radius.get("type") == "metric":
        found.append(radius.get("value"))
    return found


def _dashboard_problems(bundle: Bundle) -> list[str]:
    problems = []
    charts, datasets = bundle.by_uuid("charts"), bundle.by_uuid("datasets")
    placed: set[str] = set()
    for path, dashboard in bundle.items("dashboards"):
        position = dashboard.get("position") or {}
        on_board = [
            item["meta"].get("uuid")
            for item in position.values()
            if isinstance(item, dict) and item.get("type") == "CHART"
        ]
        for uuid in on_board:
            if uuid not in charts:
                problems.append(f"{path}: the layout shows chart {uuid}, not in the bundle")
        placed.update(on_board)
        for item_id, item in position.items():
            if isinstance(item, dict):
                for child in item.get("children", []):
                    if child not in position:
                        problems.append(f"{path}: {item_id} lists a missing child {child}")
        metadata = dashboard.get("metadata") or {}
        for native in metadata.get("native_filter_configuration") or []:
            for target in native.get("targets") or []:
                column = (target.get("column") or {}).get("name")
                dataset = datasets.get(str(target.get("datasetUuid")))
                if dataset is None:
                    problems.append(f"{path}: filter {native.get('name')!r}: unknown dataset")
                    continue
                # the filter applies by column name: every chart's dataset needs the column
                for uuid in on_board:
                    chart = charts.get(uuid)
                    chart_dataset = chart and datasets.get(str(chart.get("dataset_uuid")))
                    if chart_dataset and column not in _names(chart_dataset)[0]:
                        problems.append(
                            f"{path}: filter {native.get('name')!r} ({column}) cannot apply to "
                            f"chart {chart.get('slice_name')!r}: its dataset has no {column}"
                        )
    for path, chart in bundle.items("charts"):
        if str(chart.get("uuid")) not in placed:
            problems.append(f"{path}: the chart is on no dashboard")
    return problems


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise AqiError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise AqiError(f"{path}: expected a mapping at the top level")
    return data
