"""The readable report of a check run: one line per failed expectation, for people and logs.

GX's own result objects are exhaustive but long; a failed gate in an Airflow log, an alert
e-mail or a terminal must say at a glance *which* rule broke, *where* (table and column),
*how badly* and *on which rows*: one line per failed expectation, then up to
:data:`MAX_EXAMPLES` sample rows (the row's key columns and the offending values, fetched by
the runner), and for a table judged in a slice, which rows were judged:

    ✗ gold.pm25_15min  expect_column_values_to_be_between(pm25_avg, 0..2000): 1 of 4,812 rows unexpected, sample rows:
        location_id=3, window_start=2025-11-03 16:00:00+00:00, pm25_avg=5000.0
        judged: 4,812 rows rebuilt since 2025-11-04T10:00:00+00:00 (the gate last passed)

Without sample rows, the offending values GX reports are shown inline (``e.g. 5000.0``).
A URL's password in any value or error is masked.

This module works on the JSON form of GX validation results (``to_json_dict()``), so it does
not import Great Expectations and is unit-tested on hand-made results.

Public surface: :class:`Outcome`, :class:`CheckReport`, :class:`ExpectationsFailed`,
:func:`outcome_from_result`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aqi.core.errors import AqiError, first_line

__all__ = ["CheckReport", "ExpectationsFailed", "Outcome", "mask_urls", "outcome_from_result"]

#: example values (or sample rows) shown per failed expectation
MAX_EXAMPLES = 5
#: longest example value or sample row shown, characters
MAX_EXAMPLE_CHARS = 200
PASS, FAIL = "✓", "✗"
#: how a sample row or a scope is indented under its failure line
INDENT = "    "
#: ``scheme://user:password@``: the password of a URL in a value or an error
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s:/@]*:)[^\s@]*@")


@dataclass(frozen=True)
class Outcome:
    """One evaluated expectation, reduced to what the report says about it."""

    table: str
    expectation: str
    rule: str
    success: bool
    #: rows that broke the rule (map expectations) or rows the custom query returned
    unexpected: int | None = None
    #: rows the rule was evaluated on (map expectations)
    checked: int | None = None
    #: tolerated share of unexpected rows (``1 - mostly``), if any
    tolerated: float | None = None
    examples: tuple[str, ...] = ()
    #: an aggregate's observed value or a schema mismatch, when there is no row count
    observed: str | None = None
    error: str | None = None
    #: rows that broke the rule (``key=value, ...``), shown under the line
    samples: tuple[str, ...] = ()

    def line(self) -> str:
        """``✗ table  expectation(rule): what was found``, then the sample rows indented."""
        mark = PASS if self.success else FAIL
        head = f"{mark} {self.table}  {self.expectation}({self.rule}): {self.finding()}"
        return "\n".join([head, *(INDENT + row for row in self.samples)])

    def finding(self) -> str:
        if self.error is not None:
            return f"error: {self.error}"
        parts = []
        if self.unexpected is not None:
            if self.checked is not None:
                noun = "row" if self.checked == 1 else "rows"
                parts.append(f"{self.unexpected:,} of {self.checked:,} {noun} unexpected")
                if self.tolerated and self.checked:
                    share = self.unexpected / self.checked
                    parts[-1] += f" ({share:.2%}, at most {self.tolerated:.0%} allowed)"
            else:
                noun = "row" if self.unexpected == 1 else "rows"
                parts.append(f"{self.unexpected:,} {noun} unexpected")
        if self.observed is not None:
            parts.append(f"observed {self.observed}")
        text = ", ".join(parts) or ("passed" if self.success else "failed")
        if self.samples:
            text += ", sample rows:"
        elif self.examples:
            text += ", e.g. " + "; ".join(self.examples)
        return text


@dataclass
class CheckReport:
    """Outcome of :func:`expectations.runner.run_checks`: every expectation, and the docs."""

    success: bool
    results: list[Outcome]
    docs_index: Path
    suites: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    #: per suite judged in a slice and failed: which rows (``12 rows rebuilt since ...``)
    scopes: Mapping[str, str] = field(default_factory=dict)

    @property
    def failures(self) -> list[Outcome]:
        return [r for r in self.results if not r.success]

    def text(self) -> str:
        """The readable report: a summary, a line per table or failure, the Data Docs path."""
        tables = self.tables or tuple(dict.fromkeys(r.table for r in self.results))
        failed = self.failures
        lines = [
            f"Great Expectations ({', '.join(self.suites) or 'no suites'}): "
            f"{len(self.results)} expectations on {len(tables)} "
            f"{'table' if len(tables) == 1 else 'tables'}, "
            + (f"{len(failed)} failed" if failed else "all passed")
        ]
        for table in tables:
            mine = [r for r in self.results if r.table == table]
            bad = [r for r in mine if not r.success]
            if bad:
                lines.extend(r.line() for r in bad)
                if table in self.scopes:
                    lines.append(f"{INDENT}judged: {self.scopes[table]}")
            else:
                lines.append(f"{PASS} {table}  {len(mine)} expectations passed")
        lines.append(f"Data Docs: {self.docs_index}")
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`ExpectationsFailed` (with the report as message) if a check failed."""
        if not self.success:
            raise ExpectationsFailed(self)


class ExpectationsFailed(AqiError):
    """At least one expectation failed; ``str(err)`` is the readable report."""

    def __init__(self, report: CheckReport) -> None:
        self.report = report
        super().__init__(report.text())


def outcome_from_result(
    table: str,
    result: Mapping[str, Any],
    parameters: Mapping[str, Any] | None = None,
    example_rows: Sequence[Mapping[str, Any]] = (),
) -> Outcome:
    """An :class:`Outcome` from one GX ``ExpectationValidationResult`` in JSON form.

    ``parameters`` resolves ``{"$PARAMETER": name}`` arguments; ``example_rows`` are rows the
    runner fetched for a failed expectation (GX keeps rows only in COMPLETE mode): the rows
    of a custom query, or a column rule's offending rows with their key columns.
    """
    config = result.get("expectation_config") or {}
    kind = config.get("type", "expectation")
    kwargs = {k: _resolve(v, parameters or {}) for k, v in (config.get("kwargs") or {}).items()}
    details = result.get("result") or {}
    info = result.get("exception_info") or {}
    error = None
    if info.get("raised_exception"):
        error = mask_urls(first_line(str(info.get("exception_message") or "raised an exception")))

    mostly = kwargs.get("mostly")
    unexpected = details.get("unexpected_count")
    observed = None
    examples: Iterable[Any] = details.get("partial_unexpected_list") or ()
    if kind == "unexpected_rows_expectation":
        unexpected = details.get("observed_value")
    elif "mismatched" in (details.get("details") or {}):
        mismatched = details["details"]["mismatched"]
        observed = "; ".join(
            f"{what} {', '.join(map(str, cols))}"
            for what, cols in (
                ("missing", mismatched.get("missing") or []),
                ("unexpected", mismatched.get("unexpected") or []),
            )
            if cols
        )
    elif unexpected is None and "observed_value" in details:
        observed = _value(details["observed_value"])

    return Outcome(
        table=table,
        expectation=kind,
        rule=describe_rule(kind, kwargs, config),
        success=bool(result.get("success")),
        unexpected=unexpected,
        checked=details.get("element_count") if unexpected is not None else None,
        tolerated=(1 - mostly) if isinstance(mostly, int | float) and mostly < 1 else None,
        examples=_examples(examples),
        observed=observed,
        error=error,
        samples=_examples(_row(r) for r in example_rows),
    )


def describe_rule(kind: str, kwargs: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """A short statement of the rule: ``pm25_avg, 0..2000``, ``(a, b) unique``, ..."""
    meta = config.get("meta") or {}
    if meta.get("rule"):
        return str(meta["rule"])
    column = kwargs.get("column")
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if kind == "expect_column_values_to_be_between":
        rule = f"{column}, {_bounds(low, high)}"
    elif kind.startswith("expect_column_") and kind.endswith("_to_be_between"):
        statistic = kind.removeprefix("expect_column_").removesuffix("_to_be_between")
        rule = f"{statistic}({column}) {_bounds(low, high, symbolic=True)}"
    elif kind == "expect_column_values_to_be_in_set":
        rule = f"{column} in {{{', '.join(map(str, kwargs.get('value_set') or []))}}}"
    elif kind == "expect_column_values_to_not_be_null":
        rule = f"{column} not null"
    elif kind == "expect_column_values_to_be_of_type":
        rule = f"{column} is {kwargs.get('type_')}"
    elif kind == "expect_compound_columns_to_be_unique":
        rule = f"({', '.join(kwargs.get('column_list') or [])}) unique"
    elif kind == "expect_column_pair_values_a_to_be_greater_than_b":
        op = ">=" if kwargs.get("or_equal") else ">"
        rule = f"{kwargs.get('column_A')} {op} {kwargs.get('column_B')}"
    elif kind == "expect_table_columns_to_match_set":
        exact = "exactly " if kwargs.get("exact_match", True) else ""
        rule = f"{exact}the {len(kwargs.get('column_set') or [])} expected columns"
    elif kind == "unexpected_rows_expectation":
        rule = first_line(str(config.get("description") or "custom SQL"))
    else:
        rule = str(column or "")
    if kwargs.get("row_condition"):
        rule += f" where {kwargs['row_condition']}"
    if isinstance(kwargs.get("mostly"), int | float) and kwargs["mostly"] < 1:
        rule += f", mostly {kwargs['mostly']:.0%}"
    return rule


# --- formatting helpers ------------------------------------------------------------------------


def _bounds(low: Any, high: Any, *, symbolic: bool = False) -> str:
    if low is not None and high is not None:
        return f"{_bound(low)}..{_bound(high)}"
    if low is not None:
        return f">= {_bound(low)}"
    if high is not None:
        return f"<= {_bound(high)}"
    return "unbounded" if symbolic else "any value"


def _bound(value: Any) -> str:
    """Bounds as written in the suite: GX stores ``0`` as ``0.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _value(value)


def _resolve(value: Any, parameters: Mapping[str, Any]) -> Any:
    if isinstance(value, Mapping) and set(value) == {"$PARAMETER"}:
        return parameters.get(value["$PARAMETER"], f"${value['$PARAMETER']}")
    return value


def _value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "(" + ", ".join(f"{k}={_value(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list | tuple):
        return "(" + ", ".join(_value(v) for v in value) + ")"
    return str(value)


def mask_urls(text: str) -> str:
    """``postgresql://u:secret@h`` -> ``postgresql://u:***@h`` wherever it occurs in ``text``."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def _row(row: Mapping[str, Any]) -> str:
    """A sample row as ``key=value, ...`` (its columns in the order fetched)."""
    return ", ".join(f"{k}={_value(v)}" for k, v in row.items())


def _examples(values: Iterable[Any]) -> tuple[str, ...]:
    shown: list[str] = []
    for value in values:
        text = mask_urls(value if isinstance(value, str) else _value(value))
        if len(text) > MAX_EXAMPLE_CHARS:
            text = text[: MAX_EXAMPLE_CHARS - 1] + "…"
        if text not in shown:
            shown.append(text)
        if len(shown) == MAX_EXAMPLES:
            break
    return tuple(shown)
