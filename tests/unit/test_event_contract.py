"""The event contract is read from the published JSON Schema, and nothing it cannot check
gets through: every consumer (parser, raw table, quality gate, sinks) derives from it."""

from __future__ import annotations

import copy
import re
import typing

import pytest

from aqi.core.environments import REPO_ROOT
from aqi.core.event_contract import (
    EVENT_FIELD_NAMES,
    EVENT_FIELDS,
    EVENT_SCHEMA,
    INGEST_MODES,
    KAFKA_COLUMNS,
    RAW_COLUMNS,
    SCHEMA_VERSION,
    Kind,
    fields_of,
)

pytestmark = pytest.mark.unit


def test_fields_follow_the_schema_in_its_order() -> None:
    assert EVENT_FIELD_NAMES == tuple(EVENT_SCHEMA["properties"]) == tuple(EVENT_SCHEMA["required"])
    kinds = {f.name: f.kind for f in EVENT_FIELDS}
    assert kinds["schema_version"] is Kind.VERSION and SCHEMA_VERSION == 1
    assert kinds["location_id"] is Kind.ID and kinds["parameter_id"] is Kind.INT32
    assert kinds["period_end"] is Kind.TIMESTAMP and kinds["flagged"] is Kind.BOOLEAN
    assert kinds["provider"] is Kind.OPTIONAL_TEXT and kinds["units"] is Kind.TEXT
    by_name = {f.name: f for f in EVENT_FIELDS}
    assert (by_name["latitude"].minimum, by_name["latitude"].maximum) == (-90, 90)
    assert (by_name["coverage_percent"].minimum, by_name["coverage_percent"].maximum) == (0, None)
    assert by_name["location_id"].maximum == 2**53 - 1
    assert by_name["parameter_id"].maximum == 2**31 - 1
    assert by_name["source"].allowed == ("openaq",)
    assert by_name["ingest_mode"].allowed == INGEST_MODES == ("live", "backfill", "replay", "simulate")
    assert by_name["timezone"].min_length == 1 and by_name["location_name"].min_length == 0
    assert {f.name for f in EVENT_FIELDS if f.nullable} == {
        "location_name", "value", "latitude", "longitude", "country_code", "provider",
        "coverage_percent",
    }  # fmt: skip


def test_ingest_mode_type_matches_the_schema() -> None:
    from ingestion.events import IngestMode

    assert typing.get_args(IngestMode) == INGEST_MODES


def test_a_new_field_reaches_every_consumer_with_its_rules() -> None:
    schema = copy.deepcopy(EVENT_SCHEMA)
    schema["properties"]["humidity"] = {"type": ["number", "null"], "minimum": 0, "maximum": 100}
    schema["required"].append("humidity")
    (humidity,) = [f for f in fields_of(schema) if f.name == "humidity"]
    assert (humidity.kind, humidity.minimum, humidity.maximum) == (Kind.NUMBER, 0, 100)
    assert humidity.sql_type == "DOUBLE PRECISION" and humidity.spark_type == "double"


@pytest.mark.parametrize(
    ("spec", "required"),
    [
        ({"type": "array", "items": {"type": "number"}}, True),  # no check for arrays
        ({"type": "integer"}, True),  # an integer without the id's bounds
        ({"type": "number"}, True),  # a number that may not be null: no such check yet
        ({"type": ["string", "null"]}, False),  # optional fields: the stream refuses them
        ({"$ref": "https://example.org/other.json"}, True),
        ({"const": 5}, True),  # only schema_version may be an integer constant
    ],
)
def test_a_schema_construct_without_a_check_is_refused(spec: dict, required: bool) -> None:
    schema = copy.deepcopy(EVENT_SCHEMA)
    schema["properties"]["novel"] = spec
    if required:
        schema["required"].append("novel")
    with pytest.raises(ValueError, match="novel|other.json"):
        fields_of(schema)


def test_raw_table_ddl_holds_the_contract() -> None:
    """The migration's columns, types and NOT NULLs are the contract's (RAW_COLUMNS)."""
    ddl = (REPO_ROOT / "aqi" / "core" / "sql" / "0001_raw_tables.sql").read_text()
    body = re.search(
        r"create table if not exists raw\.openaq_measurements \((.*?)\n\);", ddl, re.DOTALL
    )
    assert body is not None
    postgres_names = {"timestamptz": "TIMESTAMP WITH TIME ZONE"}
    columns, not_null = {}, set()
    for line in body.group(1).splitlines():
        match = re.match(r"\s+([a-z_]+)\s+([a-z]+(?: precision)?)\b(.*)", line)
        if match and match.group(1) != "constraint":
            name = match.group(1)
            columns[name] = postgres_names.get(match.group(2), match.group(2).upper())
            if "not null" in match.group(3):
                not_null.add(name)
    assert columns == RAW_COLUMNS
    assert list(columns)[: len(EVENT_FIELDS)] == list(EVENT_FIELD_NAMES)
    for field in EVENT_FIELDS:
        assert (field.name in not_null) is not field.nullable, field.name
    assert set(KAFKA_COLUMNS) - {"kafka_timestamp"} <= not_null
