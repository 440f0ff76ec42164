"""The Great Expectations suites, defined in code: this module is their source of truth.

Each run of :mod:`expectations.runner` builds the suites here and adds-or-updates them in the
Data Context, so what is validated is always what this file says. One suite per table; a
*group* (``raw`` or ``gold``) is what a caller asks for and what one Checkpoint runs.

Thresholds come from dbt's files through :mod:`expectations.reference` (the pollutant limits
and AQI seeds, the source freshness, the gold models' columns and grains), so a check never
disagrees with the warehouse it guards.

**raw** (``raw.openaq_measurements``) is checked *tolerantly* where OpenAQ itself is imperfect.
Real OpenAQ data carries null values, ``-9999`` sentinels and the odd impossible spike; the
silver layer rejects each such reading with a reason (``silver.rejected_measurements``), so a
few of them are normal and must not stop the pipeline. The null-value and the range checks
therefore pass while at most :data:`RAW_TOLERATED_SHARE` (1%) of the readings are bad - per
parameter and units for the range, so that a systematic fault in one small series (say, ppb
delivered as ppm) is not diluted by the rest of the table - and fail on a systemic problem.
A series also needs more than :data:`RAW_TOLERATED_COUNT` bad readings to fail: in a young or
rare series (72 no2 ppm readings) one sentinel is already more than 1%, and that is noise.
Everything that no upstream defect explains is strict: the table's columns and types, the
Kafka key's uniqueness, timestamps in the future, ``period_start < period_end``, freshness.

**raw judges new data**: raw is append-only, so its checks are two suites. The *table* suite
(columns, types, freshness) reads only the catalog and ``max(loaded_at)`` (an index lookup).
The *new rows* suite (:data:`NEW_ROWS`: everything about values) runs on the rows loaded
since the gate last passed (the runner keeps that mark, see :mod:`expectations.runner`), so
its cost follows the new data and a bad row, once judged and let past, cannot fail every
later run; rows that are impossible never get there (the stream quarantines them).

**gold** checks are strict: a gold table is what dashboards show, and dbt built it from
already-validated silver rows, so any violation is a bug.

**gold judges rebuilt slices**: dbt recomputes only the affected windows, days and series of
a gold table and stamps each row it writes with ``rebuilt_at`` (its transaction's ``now()``).
A gold suite (:attr:`TableSuite.sliced_by`) reads the rows rebuilt since the gate last passed
for that table, so its cost follows the new data like raw's; the column-set check costs the
same on a slice as on the table (one row description). The grain's uniqueness is judged
within the slice; a duplicate spanning an old and a new row is what the model's primary key
(its dbt contract) refuses, and the whole-table run (``aqi check --since all``, nightly)
checks it too.

Cost: a table can hold 10M rows, so each check is chosen for its number of full scans. Column
checks without a row condition share one aggregate query per table (plus, for value checks,
one ``LIMIT``-ed query for example values). A check with a ``row_condition`` costs its own
three scans, so the per-parameter/units physical maximum (14 seed rows) is one custom SQL
check per table that joins the seed rows instead of 14 conditioned built-ins (42 scans).

Each suite also names its table's key (:attr:`TableSuite.key`: the grain, or raw's Kafka
record key), the columns the runner shows with a failed rule's sample rows.

Public surface: :data:`GROUPS`, :class:`TableSuite`, :func:`build_suites`,
:func:`suite_parameters`, :data:`RAW_COLUMNS`, :data:`RAW_KEY`, :data:`NEW_ROWS`,
:data:`CLOCK_SKEW`, :data:`RAW_TOLERATED_SHARE`, :data:`RAW_TOLERATED_COUNT`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aqi.core.event_contract import KAFKA_COLUMNS, RAW_COLUMNS
from expectations._gx import gx, gxe
from expectations.reference import (
    GROUPS,
    LOADED_AT,
    REBUILT_AT,
    aqi_scale,
    checked_tables,
    freshness_error_after,
    model_columns,
    model_unique_key,
    pollutant_limits,
)

__all__ = [
    "CLOCK_SKEW",
    "GROUPS",
    "NEW_ROWS",
    "PARAM_LATEST_ALLOWED",
    "PARAM_OLDEST_FRESH_LOAD",
    "RAW_COLUMNS",
    "RAW_KEY",
    "RAW_TOLERATED_COUNT",
    "RAW_TOLERATED_SHARE",
    "TableSuite",
    "build_suites",
    "suite_parameters",
]

#: how far a timestamp may lie ahead of the checking machine's clock (collectors, Kafka and
#: the database run on other clocks; NTP keeps them within seconds, 5 minutes is generous)
CLOCK_SKEW = timedelta(minutes=5)
#: share of bad raw readings (null, sentinel, out of range) tolerated before a raw check fails
RAW_TOLERATED_SHARE = 0.01
#: ... and bad readings a parameter/units series may always have, whatever its size
RAW_TOLERATED_COUNT = 10
#: local wall-clock hours a day can have readings in (a repeated DST hour counts once)
HOURS_PER_DAY = 24
#: length of gold.exceedance_30d's trailing window, days (exceedance_30d.sql: local_date - 29)
EXCEEDANCE_WINDOW_DAYS = 30

#: suite parameters the runner supplies at each run (GX renders them in Data Docs)
PARAM_LATEST_ALLOWED = "latest_allowed_timestamp"
PARAM_OLDEST_FRESH_LOAD = "oldest_fresh_loaded_at"

#: one row per Kafka record: its coordinates and its timestamp (offsets restart at 0 when a
#: topic is recreated; aqi/core/sql/0002_kafka_key_with_timestamp.sql)
RAW_KEY: tuple[str, ...] = tuple(KAFKA_COLUMNS)


#: what the name of a suite on a table's new rows adds to the table's name
NEW_ROWS = " (new rows)"


@dataclass(frozen=True)
class TableSuite:
    """A suite on one table; ``name`` (``schema.table``, plus :data:`NEW_ROWS` for raw's suite
    on the rows loaded since the gate last passed) names the suite and its asset.

    ``sliced_by`` is the timestamp column whose window the suite reads (``loaded_at`` for
    raw's new rows, ``rebuilt_at`` for gold; None: always the whole table); ``key`` are the
    columns that identify a row, shown with sample rows of a failed rule.
    """

    group: str
    schema: str
    table: str
    suite: gx.ExpectationSuite
    new_rows_only: bool = False
    sliced_by: str | None = None
    key: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}" + (NEW_ROWS if self.new_rows_only else "")


def build_suites(groups: Sequence[str] = GROUPS) -> list[TableSuite]:
    """Fresh suites of the given groups (not saved in any Data Context), one per table.

    Every gold model documented in dbt gets its columns and grain checked; the models below
    also get their own rules.
    """
    specific = {
        "pm25_15min": _pm25_15min,
        "daily_avg": _daily_avg,
        "exceedance_30d": _exceedance_30d,
        "latest": _latest,
    }
    suites = []
    for group, schema, table in checked_tables(list(groups)):
        if group == "raw":
            suites.append(_table(group, schema, table, _raw_table_expectations(), key=RAW_KEY))
            suites.append(
                _table(
                    group, schema, table, _raw_row_expectations(), key=RAW_KEY,
                    new_rows=True, sliced_by=LOADED_AT,
                )
            )  # fmt: skip
            continue
        grain = model_unique_key(table)
        expectations = [
            gxe.ExpectTableColumnsToMatchSet(column_set=list(model_columns(table)), exact_match=True),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=list(grain)),
            *specific.get(table, list)(),
        ]
        suites.append(_table(group, schema, table, expectations, key=grain, sliced_by=REBUILT_AT))
    return suites


def suite_parameters(now: datetime) -> dict[str, str]:
    """Values of the suite parameters for a run at ``now`` (an aware datetime)."""
    return {
        PARAM_LATEST_ALLOWED: (now + CLOCK_SKEW).isoformat(),
        PARAM_OLDEST_FRESH_LOAD: (now - freshness_error_after()).isoformat(),
    }


# --- raw -------------------------------------------------------------------------------------


def _raw_table_expectations() -> list[gxe.Expectation]:
    """The whole table, at the cost of its catalog entry and one index lookup."""
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(RAW_COLUMNS), exact_match=True),
        *(gxe.ExpectColumnValuesToBeOfType(column=c, type_=t) for c, t in RAW_COLUMNS.items()),
        gxe.ExpectColumnMaxToBeBetween(
            column="loaded_at",
            min_value={"$PARAMETER": PARAM_OLDEST_FRESH_LOAD},
            notes="Freshness: the error_after of the dbt source openaq "
            f"({freshness_error_after()}) before the check's time.",
        ),
    ]


def _raw_row_expectations() -> list[gxe.Expectation]:
    """The values of the rows loaded since the gate last passed."""
    latest = {"$PARAMETER": PARAM_LATEST_ALLOWED}
    return [
        gxe.ExpectCompoundColumnsToBeUnique(column_list=list(RAW_KEY)),
        _few_null_values(RAW_TOLERATED_SHARE, RAW_TOLERATED_COUNT),
        _within_physical_range("value", tolerated=(RAW_TOLERATED_SHARE, RAW_TOLERATED_COUNT)),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=column, max_value=latest)
            for column in ("period_start", "period_end", "ingested_at")
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="period_end", column_B="period_start", or_equal=False
        ),
    ]


# --- gold ------------------------------------------------------------------------------------


def _pm25_15min() -> list[gxe.Expectation]:
    pm25 = _limit("pm25", "µg/m³")
    return [
        gxe.ExpectColumnValuesToBeBetween(column="pm25_avg", min_value=0, max_value=pm25),
        gxe.ExpectColumnValuesToBeBetween(column="sensor_count", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="reading_count", min_value=1),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="reading_count", column_B="sensor_count", or_equal=True
        ),
        gxe.UnexpectedRowsExpectation(
            meta={"rule": "window_start on a UTC quarter hour, window_end = window_start + 15 min"},
            description="Windows are UTC quarter hours: window_start on :00, :15, :30 or :45 "
            "with zero seconds, and window_end = window_start + 15 minutes.",
            unexpected_rows_query=(
                "select location_id, window_start, window_end from {batch} "
                "where extract(epoch from window_start) <> "
                "floor(extract(epoch from window_start) / 900) * 900 "
                "or window_end <> window_start + interval '15 minutes'"
            ),
        ),
    ]


def _daily_avg() -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnValuesToBeBetween(column="avg_value", min_value=0),
        _within_physical_range("avg_value", context=("location_id", "local_date")),
        gxe.ExpectColumnValuesToBeBetween(
            column="hours_covered", min_value=1, max_value=HOURS_PER_DAY
        ),
        *_aqi_expectations(),
    ]


def _exceedance_30d() -> list[gxe.Expectation]:
    guided = sorted({lim.parameter for lim in pollutant_limits() if lim.who_24h is not None})
    return [
        gxe.ExpectColumnValuesToBeInSet(column="parameter", value_set=guided),
        gxe.ExpectColumnValuesToBeBetween(
            column="complete_days", min_value=0, max_value=EXCEEDANCE_WINDOW_DAYS
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="days_with_data", min_value=1, max_value=EXCEEDANCE_WINDOW_DAYS
        ),
        gxe.ExpectColumnValuesToBeBetween(column="days_over_us", min_value=0),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="days_with_data", column_B="complete_days", or_equal=True
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="complete_days", column_B="days_over_who", or_equal=True
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="days_over_who", column_B="days_over_us", or_equal=True
        ),
    ]


def _latest() -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0),
        _within_physical_range("value", context=("location_id", "measured_at")),
        gxe.ExpectColumnValuesToBeBetween(column="nowcast", min_value=0),
        *_aqi_expectations(),
    ]


def _aqi_expectations() -> list[gxe.Expectation]:
    scale = aqi_scale()
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column="aqi", min_value=scale.min_aqi, max_value=scale.max_aqi
        ),
        gxe.ExpectColumnValuesToBeInSet(column="aqi_category", value_set=list(scale.categories)),
    ]


# --- shared ----------------------------------------------------------------------------------


def _table(
    group: str,
    schema: str,
    table: str,
    expectations: list,
    *,
    key: tuple[str, ...],
    new_rows: bool = False,
    sliced_by: str | None = None,
) -> TableSuite:
    # the constructor, unlike add_expectation, needs no active Data Context; it only logs an
    # invalid expectation and drops it, so the count is checked
    name = f"{schema}.{table}" + (NEW_ROWS if new_rows else "")
    suite = gx.ExpectationSuite(name=name, expectations=expectations)
    if len(suite.expectations) != len(expectations):
        raise ValueError(f"suite {suite.name}: GX rejected some expectations (see its log)")
    return TableSuite(
        group=group, schema=schema, table=table, suite=suite, new_rows_only=new_rows,
        sliced_by=sliced_by, key=tuple(key),
    )  # fmt: skip


def _limit(parameter: str, units: str) -> float:
    for lim in pollutant_limits():
        if (lim.parameter, lim.units) == (parameter, units):
            return lim.physical_max
    raise LookupError(f"pollutant_limits.csv has no row for {parameter} {units}")


def _within_physical_range(
    column: str,
    *,
    tolerated: tuple[float, int] | None = None,
    context: Sequence[str] = (),
) -> gxe.UnexpectedRowsExpectation:
    """``column`` <= the physical maximum of the row's parameter and units (the seed).

    One scan whatever the number of seed rows: they are joined as a VALUES list. Rows whose
    parameter and units are not in the seed are not range-checked (silver does not reject
    them either). Strict by default (one row per violation); with ``tolerated`` = (share,
    count), one row per parameter and units with more than that share *and* that count of
    readings outside 0..max.
    """
    limits = ", ".join(
        f"({_sql_text(lim.parameter)}, {_sql_text(lim.units)}, {lim.physical_max!r})"
        for lim in pollutant_limits()
    )
    joined = (
        f"from {{batch}} as t join (values {limits}) as lim (parameter, units, physical_max) "
        "on lim.parameter = t.parameter and lim.units = t.units"
    )
    table = ", ".join(
        f"{lim.parameter} {lim.units} {lim.physical_max:g}" for lim in pollutant_limits()
    )
    if tolerated is None:
        columns = ", ".join(f"t.{c}" for c in (*context, "parameter", "units", column))
        return gxe.UnexpectedRowsExpectation(
            meta={"rule": f"{column} <= physical_max of its parameter and units"},
            description=f"{column} is not above the physical maximum of its parameter and "
            f"units (dbt seed pollutant_limits: {table}).",
            unexpected_rows_query=(
                f"select {columns}, lim.physical_max {joined} where t.{column} > lim.physical_max"
            ),
        )
    share, count = tolerated
    bad = f"t.{column} < 0 or t.{column} > lim.physical_max"
    return gxe.UnexpectedRowsExpectation(
        meta={
            "rule": f"{column} in 0..physical_max of its parameter and units, at most "
            f"{share:.0%} (or {count}) outside per parameter and units"
        },
        description=f"For each parameter and units, at most {share:.0%} of the non-null "
        f"{column}s (or {count}, if more) lie outside 0..physical maximum (dbt seed "
        f"pollutant_limits: {table}). Returns the parameters and units above that.",
        unexpected_rows_query=(
            f"select t.parameter, t.units, lim.physical_max, count(*) as readings, "
            f"count(*) filter (where {bad}) as out_of_range, "
            f"min(t.{column}) filter (where {bad}) as lowest_bad, "
            f"max(t.{column}) filter (where {bad}) as highest_bad "
            f"{joined} where t.{column} is not null "
            "group by t.parameter, t.units, lim.physical_max "
            f"having count(*) filter (where {bad}) > greatest({share!r} * count(*), {count})"
        ),
        notes="OpenAQ data contains -9999 sentinels and occasional impossible spikes; silver "
        "rejects them with a reason. Only a larger share means a systemic problem.",
    )


def _few_null_values(share: float, count: int) -> gxe.UnexpectedRowsExpectation:
    """At most ``share`` of the readings without a value, or ``count`` if that is more.

    A share alone fails a small batch on noise (1 null in 50 new rows is 2%), hence the count.
    """
    nulls = "count(*) filter (where value is null)"
    return gxe.UnexpectedRowsExpectation(
        meta={"rule": f"value not null, at most {share:.0%} (or {count}) null"},
        description=f"At most {share:.0%} of the readings (or {count}, if more) have no value.",
        unexpected_rows_query=(
            f"select count(*) as readings, {nulls} as null_values from {{batch}} "
            f"having {nulls} > greatest({share!r} * count(*), {count})"
        ),
        notes="OpenAQ sends some readings without a value; silver rejects them "
        "('null value'). Only a larger share means a systemic problem.",
    )


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
