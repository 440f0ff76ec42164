"""The stream's hand-written event checks accept exactly what the published JSON Schema accepts."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import jsonschema
import pyarrow as pa
import pytest

from ingestion.events import EVENT_SCHEMA, validate_event
from ingestion.fixtures import DEFAULT_FIXTURES_DIR
from ingestion.replay import fixture_events
from ingestion.simulator import SimulationConfig, simulate
from spark_streaming.parse import ARROW_SCHEMA, EVENT_FIELDS, check_event, parse_batches

pytestmark = pytest.mark.unit

END = datetime(2025, 3, 12, tzinfo=UTC)


def _valid_events() -> list[dict]:
    events, _ = fixture_events(DEFAULT_FIXTURES_DIR)
    events += list(simulate(SimulationConfig(locations=6, days=0.5, end=END)))
    return events


def _mutations(event: dict) -> list[tuple[str, dict | str | bytes]]:
    out: list[tuple[str, dict | str | bytes]] = []
    for name in EVENT_FIELDS:
        missing = copy.deepcopy(event)
        del missing[name]
        out.append((f"missing {name}", missing))
        for bad in ("x", 1.5, -1, None, True, {"a": 1}, [], "2024-01-01T00:00:00+01:00", 1e309):
            changed = copy.deepcopy(event)
            changed[name] = bad
            out.append((f"{name}={bad!r}", changed))
    extra = copy.deepcopy(event)
    extra["unexpected"] = 1
    out.append(("extra field", extra))
    out += [
        ("not json", b"{not json"),
        ("array", b"[1,2]"),
        ("number", b"12"),
        ("bad utf8", b"\xff\xfe"),
    ]
    return out


def _schema_accepts(payload: dict | str | bytes) -> bool:
    """Valid JSON (RFC 8259: no NaN/Infinity) that the published schema accepts."""
    try:
        text = json.dumps(payload, allow_nan=False) if isinstance(payload, dict) else payload
        payload = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except ValueError:
        return False
    try:
        jsonschema.Draft202012Validator(EVENT_SCHEMA).validate(payload)
        return True
    except jsonschema.ValidationError:
        return False


def _encode(payload: dict | str | bytes) -> bytes:
    if isinstance(payload, dict):
        return json.dumps(payload, allow_nan=True).encode()
    return payload if isinstance(payload, bytes) else payload.encode()


def test_valid_events_are_accepted_and_typed() -> None:
    for event in _valid_events():
        typed, error = check_event(json.dumps(event).encode())
        assert error is None, (error, event)
        assert set(typed) == set(EVENT_FIELDS)
        assert typed["period_end"] == datetime.fromisoformat(event["period_end"])
        assert typed["value"] == event["value"]


def test_checks_agree_with_the_json_schema_on_every_mutation() -> None:
    event = _valid_events()[0]
    validate_event(event)
    disagreements = []
    for label, payload in _mutations(event):
        ok_schema = _schema_accepts(payload)
        typed, error = check_event(_encode(payload))
        if (typed is not None) != ok_schema:
            disagreements.append((label, ok_schema, error))
        if typed is None:
            assert error, label
    assert disagreements == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json at all", "not JSON"),
        (None, "empty message"),
        (b'{"schema_version": 2}', "unknown schema_version 2"),
        (b'{"schema_version": 1, "source": "openaq"}', "missing field(s)"),
    ],
)
def test_reasons_are_readable(payload, reason) -> None:
    typed, error = check_event(payload)
    assert typed is None and reason in error


def test_parse_batches_splits_valid_and_invalid_rows() -> None:
    event = _valid_events()[0]
    values = [json.dumps(event).encode(), b"garbage", json.dumps({**event, "value": "12"}).encode()]
    batch = pa.RecordBatch.from_pydict(
        {
            "key": [b"1", b"2", None],
            "value": values,
            "topic": ["t", "t", "t"],
            "partition": [0, 1, 2],
            "offset": [5, 6, 7],
            "timestamp": [END, END, END],
        }
    )
    (out,) = list(parse_batches(iter([batch])))
    assert out.schema == ARROW_SCHEMA
    rows = out.to_pylist()
    assert rows[0]["error"] is None and rows[0]["sensor_id"] == event["sensor_id"]
    assert rows[0]["payload"] is None and rows[0]["kafka_offset"] == 5
    assert rows[1]["error"].startswith("not JSON") and rows[1]["payload"] == "garbage"
    assert rows[2]["error"].startswith("value:") and rows[2]["sensor_id"] is None
    assert rows[2]["kafka_key"] is None and rows[1]["kafka_partition"] == 1
