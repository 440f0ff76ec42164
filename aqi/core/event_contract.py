"""The measurement event's contract, read from its published JSON Schema and nowhere else.

``ingestion/schemas/measurement_event.v1.json`` is what producers and consumers outside this
project read, so it is the one copy: the producers validate against it, the stream's parser
builds its checks and output types from :data:`EVENT_FIELDS`, the raw table's expected
columns (:data:`RAW_COLUMNS`, checked by the raw quality gate and held to the migration's DDL
by a test) are its fields plus the Kafka coordinates, and the sinks write those columns. A
field added to the schema therefore reaches every one of them, and a schema construct this
module does not know how to check is refused here, at import, rather than let through
unchecked downstream.

Public surface:

- :data:`EVENT_SCHEMA_PATH`, :data:`EVENT_SCHEMA` - the schema file and its content;
- :data:`SCHEMA_VERSION`, :data:`INGEST_MODES` - its ``schema_version`` const and
  ``ingest_mode`` enum;
- :class:`Kind`, :class:`EventField`, :data:`EVENT_FIELDS`, :data:`EVENT_FIELD_NAMES` - each
  field with how it is checked and typed, in the schema's order;
- :data:`KAFKA_COLUMNS`, :data:`RAW_COLUMNS` - the raw table's columns and PostgreSQL types;
- :func:`fields_of` - the same reading for another schema (tests, a next version).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from aqi.core.environments import REPO_ROOT

__all__ = [
    "EVENT_FIELDS",
    "EVENT_FIELD_NAMES",
    "EVENT_SCHEMA",
    "EVENT_SCHEMA_PATH",
    "INGEST_MODES",
    "KAFKA_COLUMNS",
    "RAW_COLUMNS",
    "SCHEMA_VERSION",
    "EventField",
    "Kind",
    "fields_of",
]

EVENT_SCHEMA_PATH: Path = REPO_ROOT / "ingestion" / "schemas" / "measurement_event.v1.json"
EVENT_SCHEMA: dict[str, Any] = json.loads(EVENT_SCHEMA_PATH.read_text(encoding="utf-8"))

_INT32_MAX = 2**31 - 1


class Kind(StrEnum):
    """How a field is checked and typed."""

    VERSION = "version"  # the integer const schema_version
    ID = "id"  # a non-negative integer up to 2^53 - 1, stored as bigint
    INT32 = "int32"  # the same, at most 2^31 - 1, stored as integer
    NUMBER = "number"  # a finite number or null
    TEXT = "text"  # a string (possibly one of a few values)
    OPTIONAL_TEXT = "optional_text"  # a string or null
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"  # an RFC 3339 date-time with an offset


#: kind -> (Spark SQL type of the parsed column, PostgreSQL's name of the raw column's type)
_TYPES: dict[Kind, tuple[str, str]] = {
    Kind.VERSION: ("smallint", "SMALLINT"),
    Kind.ID: ("bigint", "BIGINT"),
    Kind.INT32: ("int", "INTEGER"),
    Kind.NUMBER: ("double", "DOUBLE PRECISION"),
    Kind.TEXT: ("string", "TEXT"),
    Kind.OPTIONAL_TEXT: ("string", "TEXT"),
    Kind.BOOLEAN: ("boolean", "BOOLEAN"),
    Kind.TIMESTAMP: ("timestamp", "TIMESTAMP WITH TIME ZONE"),
}


@dataclass(frozen=True)
class EventField:
    """One property of the schema, as a consumer checks and stores it."""

    name: str
    kind: Kind
    nullable: bool
    #: numbers: the schema's ``minimum`` / ``maximum``; ids: 0 and the largest id
    minimum: float | None = None
    maximum: float | None = None
    #: strings: the values a ``const`` or ``enum`` allows (empty: any string)
    allowed: tuple[str, ...] = ()
    #: strings: the schema's ``minLength``
    min_length: int = 0

    @property
    def spark_type(self) -> str:
        return _TYPES[self.kind][0]

    @property
    def sql_type(self) -> str:
        return _TYPES[self.kind][1]


def fields_of(schema: dict[str, Any]) -> tuple[EventField, ...]:
    """The schema's properties as :class:`EventField` s, in order; ValueError for a property
    this project has no check for (or one that is not required: the stream refuses a
    missing field, so every field must be)."""
    required = set(schema.get("required", []))
    fields = []
    for name, spec in schema["properties"].items():
        if name not in required:
            raise ValueError(f"event schema: {name} is not required; every field must be")
        fields.append(_field(name, _resolved(schema, spec)))
    return tuple(fields)


def _resolved(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The property with its local ``$ref`` merged in (the property's own keywords win)."""
    ref = spec.get("$ref")
    if ref is None:
        return dict(spec)
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError(f"event schema: unsupported $ref {ref!r}")
    return {
        **schema["$defs"][ref.removeprefix(prefix)],
        **{k: v for k, v in spec.items() if k != "$ref"},
    }


def _field(name: str, spec: dict[str, Any]) -> EventField:
    types = spec.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    nullable = "null" in types
    base = [t for t in types if t != "null"]
    if name == "schema_version" and isinstance(spec.get("const"), int):
        # the version has its own check in the parser ("unknown schema_version ...")
        return EventField(name, Kind.VERSION, nullable=False)
    if "const" in spec or "enum" in spec:
        allowed = (spec["const"],) if "const" in spec else tuple(spec["enum"])
        if all(isinstance(v, str) for v in allowed):
            return EventField(name, Kind.TEXT, nullable=False, allowed=allowed)
    elif base == ["integer"] and spec.get("minimum") == 0 and not nullable:
        top = spec["maximum"]
        return EventField(
            name, Kind.INT32 if top <= _INT32_MAX else Kind.ID, nullable=False,
            minimum=0, maximum=top,
        )  # fmt: skip
    elif base == ["number"] and nullable:
        return EventField(
            name,
            Kind.NUMBER,
            nullable=True,
            minimum=spec.get("minimum"),
            maximum=spec.get("maximum"),
        )
    elif base == ["string"] and spec.get("format") == "date-time" and not nullable:
        return EventField(name, Kind.TIMESTAMP, nullable=False)
    elif base == ["string"] and "format" not in spec and "pattern" not in spec:
        kind = Kind.OPTIONAL_TEXT if nullable else Kind.TEXT
        return EventField(name, kind, nullable=nullable, min_length=spec.get("minLength", 0))
    elif base == ["boolean"] and not nullable:
        return EventField(name, Kind.BOOLEAN, nullable=False)
    raise ValueError(
        f"event schema: field {name} ({json.dumps(spec, ensure_ascii=False)}) has no check in "
        "aqi/core/event_contract.py: add one there (and in the stream's parser) first"
    )


# read once, at import: a schema this module cannot check fails here
#: the event's fields, in the schema's order (the raw table's first columns)
EVENT_FIELDS: tuple[EventField, ...] = fields_of(EVENT_SCHEMA)
EVENT_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in EVENT_FIELDS)
SCHEMA_VERSION: int = EVENT_SCHEMA["properties"]["schema_version"]["const"]
INGEST_MODES: tuple[str, ...] = tuple(EVENT_SCHEMA["properties"]["ingest_mode"]["enum"])
#: the Kafka record each raw row came from (its key; aqi/core/sql/0001_raw_tables.sql)
KAFKA_COLUMNS: dict[str, str] = {
    "kafka_topic": "TEXT",
    "kafka_partition": "INTEGER",
    "kafka_offset": "BIGINT",
    "kafka_timestamp": "TIMESTAMP WITH TIME ZONE",
}
#: ``raw.openaq_measurements``: the event, its Kafka record, when the stream loaded it
RAW_COLUMNS: dict[str, str] = {
    **{f.name: f.sql_type for f in EVENT_FIELDS},
    **KAFKA_COLUMNS,
    "loaded_at": "TIMESTAMP WITH TIME ZONE",
}
