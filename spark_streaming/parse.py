"""Parse Kafka records into typed events, or say exactly why a record is not one.

The stream must never stop for bad data, and must never let a malformed event into the
warehouse: every record becomes either a typed row (explicit Spark schema below, the event
contract of ``ingestion/schemas/measurement_event.v1.json``) or a quarantine row with a
reason (not JSON, wrong type, missing field, unknown ``schema_version``...).

The checks are written out by hand rather than run through ``jsonschema``: they run on every
record inside Spark's Python workers, where a generic validator costs several times more. A
unit test proves they accept exactly what the published schema accepts.

Public surface: :data:`KAFKA_COLUMNS`, :data:`EVENT_FIELDS`, :data:`PARSED_SCHEMA`,
:func:`check_event`, :func:`parse_batches` (for ``DataFrame.mapInArrow``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

__all__ = [
    "ARROW_SCHEMA",
    "EVENT_FIELDS",
    "KAFKA_COLUMNS",
    "PARSED_SCHEMA",
    "SCHEMA_VERSION",
    "check_event",
    "parse_batches",
]

SCHEMA_VERSION = 1
INGEST_MODES = frozenset({"live", "backfill", "replay", "simulate"})

# kind per contract field: how it is checked and typed
_ID, _INT, _NUM, _STR, _OPT_STR, _BOOL, _TS = "id", "int", "num", "str", "ostr", "bool", "ts"
_FIELDS: list[tuple[str, str, Any]] = [
    ("schema_version", _INT, ShortType()),
    ("source", _STR, StringType()),
    ("ingest_mode", _STR, StringType()),
    ("ingested_at", _TS, TimestampType()),
    ("location_id", _ID, LongType()),
    ("location_name", _OPT_STR, StringType()),
    ("sensor_id", _ID, LongType()),
    ("parameter_id", _ID, IntegerType()),
    ("parameter", _STR, StringType()),
    ("units", _STR, StringType()),
    ("value", _NUM, DoubleType()),
    ("period_start", _TS, TimestampType()),
    ("period_end", _TS, TimestampType()),
    ("timezone", _STR, StringType()),
    ("latitude", _NUM, DoubleType()),
    ("longitude", _NUM, DoubleType()),
    ("country_code", _OPT_STR, StringType()),
    ("provider", _OPT_STR, StringType()),
    ("is_mobile", _BOOL, BooleanType()),
    ("is_monitor", _BOOL, BooleanType()),
    ("flagged", _BOOL, BooleanType()),
    ("coverage_percent", _NUM, DoubleType()),
]
EVENT_FIELDS: tuple[str, ...] = tuple(name for name, _, _ in _FIELDS)
_NAMES = frozenset(EVENT_FIELDS)

KAFKA_COLUMNS = StructType(
    [
        StructField("kafka_topic", StringType(), False),
        StructField("kafka_partition", IntegerType(), False),
        StructField("kafka_offset", LongType(), False),
        StructField("kafka_timestamp", TimestampType(), True),
        StructField("kafka_key", StringType(), True),
    ]
)
#: the output of :func:`parse_batches`: event fields (null when invalid), Kafka coordinates,
#: and for invalid records the raw payload and the reason
PARSED_SCHEMA = StructType(
    [StructField(name, spark_type, True) for name, _, spark_type in _FIELDS]
    + list(KAFKA_COLUMNS.fields)
    + [StructField("payload", StringType(), True), StructField("error", StringType(), True)]
)

_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


def check_event(raw: bytes | str | None) -> tuple[dict[str, Any] | None, str | None]:
    """(typed event, None) for a valid event, else (None, reason). Never raises."""
    if raw is None:
        return None, "empty message (no value)"
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not JSON: {str(exc)[:120]}"
    if not isinstance(event, dict):
        return None, f"not a JSON object but {type(event).__name__}"
    version = event.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        return None, f"unknown schema_version {version!r}"
    missing = [name for name in EVENT_FIELDS if name not in event]
    if missing:
        return None, "missing field(s): " + ", ".join(missing)
    extra = sorted(set(event) - _NAMES)
    if extra:
        return None, "unexpected field(s): " + ", ".join(extra)
    typed: dict[str, Any] = {}
    for name, kind, _ in _FIELDS:
        value = event[name]
        ok, converted = _convert(kind, value)
        if not ok:
            return None, f"{name}: {converted} (got {json.dumps(value)[:60]})"
        typed[name] = converted
    if typed["source"] != "openaq":
        return None, f"source: expected 'openaq' (got {typed['source']!r})"
    if typed["ingest_mode"] not in INGEST_MODES:
        return None, f"ingest_mode: unknown {typed['ingest_mode']!r}"
    for name in ("parameter", "units", "timezone"):
        if not typed[name]:
            return None, f"{name}: empty string"
    lat, lon, cov = typed["latitude"], typed["longitude"], typed["coverage_percent"]
    if lat is not None and not -90 <= lat <= 90:
        return None, f"latitude: out of range ({lat})"
    if lon is not None and not -180 <= lon <= 180:
        return None, f"longitude: out of range ({lon})"
    if cov is not None and cov < 0:
        return None, f"coverage_percent: negative ({cov})"
    return typed, None


def parse_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function: Kafka columns in, :data:`PARSED_SCHEMA` rows out."""
    names = [f.name for f in PARSED_SCHEMA.fields]
    for batch in batches:
        columns: dict[str, list[Any]] = {name: [] for name in names}
        data = batch.to_pydict()
        for key, value, topic, partition, offset, timestamp in zip(
            data["key"], data["value"], data["topic"], data["partition"], data["offset"],
            data["timestamp"], strict=True,
        ):  # fmt: skip
            event, error = check_event(value)
            row = event or dict.fromkeys(EVENT_FIELDS)
            for name in EVENT_FIELDS:
                columns[name].append(row[name])
            columns["kafka_topic"].append(topic)
            columns["kafka_partition"].append(partition)
            columns["kafka_offset"].append(offset)
            columns["kafka_timestamp"].append(timestamp)
            columns["kafka_key"].append(_text(key))
            columns["payload"].append(_text(value) if error else None)
            columns["error"].append(error)
        yield pa.RecordBatch.from_pydict(columns, schema=ARROW_SCHEMA)


def _convert(kind: str, value: Any) -> tuple[bool, Any]:
    """(True, typed value) or (False, what is wrong)."""
    if kind in (_ID, _INT):
        # JSON Schema's "integer" admits 5.0 as well as 5
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return False, "expected an integer"
        if kind == _ID and value < 0:
            return False, "expected a non-negative integer"
        return True, value
    if kind == _NUM:
        if value is None:
            return True, None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, "expected a number or null"
        value = float(value)
        return (True, value) if math.isfinite(value) else (False, "expected a finite number")
    if kind == _STR:
        return (True, value) if isinstance(value, str) else (False, "expected a string")
    if kind == _OPT_STR:
        return (
            (True, value)
            if value is None or isinstance(value, str)
            else (False, "expected a string or null")
        )
    if kind == _BOOL:
        return (True, value) if isinstance(value, bool) else (False, "expected true or false")
    if kind == _TS:
        if not isinstance(value, str) or not _TIMESTAMP.match(value):
            return False, "expected a UTC timestamp like 2024-01-02T03:04:05Z"
        try:
            return True, datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            return False, "not a valid date-time"
    raise AssertionError(kind)  # pragma: no cover


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    text = raw.decode("utf-8", errors="replace")
    return text.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL


def _arrow_schema() -> pa.Schema:
    mapping = {
        ShortType: pa.int16(), IntegerType: pa.int32(), LongType: pa.int64(),
        DoubleType: pa.float64(), StringType: pa.string(), BooleanType: pa.bool_(),
        TimestampType: pa.timestamp("us", tz="UTC"),
    }  # fmt: skip
    return pa.schema([pa.field(f.name, mapping[type(f.dataType)]) for f in PARSED_SCHEMA.fields])


ARROW_SCHEMA = _arrow_schema()
