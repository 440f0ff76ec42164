"""The stream's JVM parser accepts exactly what the published JSON Schema accepts.

Real Spark (local), the parser of `aqi stream` (:func:`spark_streaming.parse.parse_records`),
and the schema checked by the independent `jsonschema` library, on every valid recorded or
simulated event and on mutations of one of them: each field missing, each field set to a
value of every JSON type, unexpected and duplicated fields, not JSON at all.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import jsonschema
import pytest

from ingestion.events import EVENT_SCHEMA, validate_event
from ingestion.fixtures import DEFAULT_FIXTURES_DIR
from ingestion.replay import fixture_events
from ingestion.simulator import SimulationConfig, simulate
from spark_streaming.parse import EVENT_FIELDS, KAFKA_COLUMNS, parse_records

pytestmark = pytest.mark.integration

END = datetime(2025, 3, 12, tzinfo=UTC)
KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
)


@pytest.fixture(scope="module")
def spark():
    from spark_streaming.session import get_spark

    session = get_spark("local[2]", app_name="aqi-test-parse")
    yield session
    session.stop()


def _parse(spark, payloads: list[bytes | None], keys: list[bytes | None] | None = None) -> list:
    keys = keys or [None] * len(payloads)
    rows = [(k, v, "t", i % 3, i, END.replace(tzinfo=None)) for i, (k, v) in
            enumerate(zip(keys, payloads, strict=True))]  # fmt: skip
    frame = spark.createDataFrame(rows, KAFKA_SCHEMA)
    return sorted(parse_records(frame).collect(), key=lambda r: r["kafka_offset"])


def _valid_events() -> list[dict]:
    events, _ = fixture_events(DEFAULT_FIXTURES_DIR)
    events += list(simulate(SimulationConfig(locations=9, days=0.5, end=END)))
    return events


def _mutations(event: dict) -> list[tuple[str, dict | bytes]]:
    out: list[tuple[str, dict | bytes]] = []
    for name in EVENT_FIELDS:
        missing = copy.deepcopy(event)
        del missing[name]
        out.append((f"missing {name}", missing))
        for bad in ("x", "", "12", 1.5, -1, 0, 5.0, 2**60, None, True, {"a": 1}, [], "true",
                    "2024-01-01T00:00:00+01:00", "2024-02-30T00:00:00Z", 1e309, "NaN"):  # fmt: skip
            changed = copy.deepcopy(event)
            changed[name] = bad
            out.append((f"{name}={bad!r}", changed))
    extra = copy.deepcopy(event)
    extra["unexpected"] = 1
    out.append(("extra field", extra))
    text = json.dumps(event)
    out += [
        ("duplicate field", (text[:-1] + ', "units": "ppm"}').encode()),
        ("not json", b"{not json"),
        ("array", b"[1,2]"),
        ("number", b"12"),
        ("string", b'"event"'),
        ("empty", b""),
        ("NaN literal", text.replace('"value": ' + json.dumps(event["value"]), '"value": NaN')
         .encode()),
        ("bad utf8", b"\xff\xfe"),
    ]  # fmt: skip
    return out


def _unique_names(pairs: list[tuple[str, object]]) -> dict:
    if len({name for name, _ in pairs}) != len(pairs):
        raise ValueError("duplicate names")
    return dict(pairs)


def _schema_accepts(payload: dict | bytes) -> bool:
    """Valid JSON that the published schema accepts, read as strictly as it is written.

    RFC 8259 JSON: no NaN/Infinity, unique names (its $comment); timestamps that name a real
    date-time (their ``format``, which jsonschema checks only with an optional package).
    """
    try:
        text = json.dumps(payload, allow_nan=False) if isinstance(payload, dict) else payload
        payload = json.loads(
            text,
            parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)),
            object_pairs_hook=_unique_names,
        )
    except ValueError:
        return False
    try:
        jsonschema.Draft202012Validator(EVENT_SCHEMA).validate(payload)
    except jsonschema.ValidationError:
        return False
    try:
        for name in ("ingested_at", "period_start", "period_end"):
            datetime.fromisoformat(payload[name])
    except ValueError:
        return False
    return True


def _encode(payload: dict | bytes) -> bytes:
    if isinstance(payload, dict):
        return json.dumps(payload, allow_nan=True).encode()
    return payload


def test_valid_events_are_accepted_and_typed(spark) -> None:
    events = _valid_events()
    rows = _parse(spark, [json.dumps(e, ensure_ascii=False).encode() for e in events])
    assert len(rows) == len(events)
    for event, row in zip(events, rows, strict=True):
        assert row["reason"] is None, (row["reason"], event)
        assert row["payload"] is None
        for name in EVENT_FIELDS:
            got = row[name]
            if name in ("ingested_at", "period_start", "period_end"):
                assert got.replace(tzinfo=UTC) == datetime.fromisoformat(event[name]), name
            else:
                assert got == event[name], name


def test_parser_agrees_with_the_json_schema_on_every_mutation(spark) -> None:
    event = _valid_events()[0]
    validate_event(event)
    cases = _mutations(event)
    rows = _parse(spark, [_encode(payload) for _, payload in cases])
    disagreements = []
    for (label, payload), row in zip(cases, rows, strict=True):
        accepted = row["reason"] is None
        if accepted != _schema_accepts(payload):
            disagreements.append((label, row["reason"]))
        if not accepted:
            assert row["payload"] is not None and all(row[f] is None for f in EVENT_FIELDS)
    assert disagreements == [], "\n".join(map(str, disagreements))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json at all", "not JSON"),
        (None, "empty message (no value)"),
        (b"[1, 2]", "not a JSON object but an array"),
        (b'{"schema_version": 2}', "unknown schema_version 2"),
        (b'{"schema_version": 1, "source": "openaq"}', "missing field(s): ingest_mode"),
    ],
)
def test_reasons_are_readable(spark, payload, reason) -> None:
    (row,) = _parse(spark, [payload])
    assert row["reason"].startswith(reason), row["reason"]


def test_field_reasons_name_the_field_and_quote_the_value(spark) -> None:
    event = _valid_events()[0]
    cases = {
        "value": ({**event, "value": "twelve"}, "value: expected a number or null (got twelve)"),
        "units": ({**event, "units": 12}, "units: expected a string (got 12)"),
        "period_end": ({**event, "period_end": "yesterday"}, (
            "period_end: expected a UTC timestamp like 2024-01-02T03:04:05Z (got yesterday)")),
        "latitude": ({**event, "latitude": 91}, "latitude: out of range (-90..90) (got 91)"),
        "extra": ({**event, "x": 1, "a": 2}, "unexpected field(s): a, x"),
        "nul": ({**event, "provider": "a\u0000b"}, "provider: contains a NUL character"),
    }  # fmt: skip
    rows = _parse(spark, [json.dumps(payload).encode() for payload, _ in cases.values()])
    for (label, (_, reason)), row in zip(cases.items(), rows, strict=True):
        assert row["reason"].startswith(reason), (label, row["reason"])


def test_kafka_coordinates_key_and_payload_are_kept(spark) -> None:
    event = _valid_events()[0]
    payloads = [json.dumps(event).encode(), b"garbage\x00here"]
    rows = _parse(spark, payloads, keys=[b"17", b"k\x00"])
    assert [r["kafka_offset"] for r in rows] == [0, 1]
    assert [r["kafka_partition"] for r in rows] == [0, 1]
    # the key is kept for the quarantine (raw.openaq_quarantine.kafka_key), not for raw
    assert rows[0]["kafka_key"] is None and rows[0]["sensor_id"] == event["sensor_id"]
    assert rows[1]["reason"] == "not JSON"
    # PostgreSQL text cannot hold NUL: the quarantine keeps the record with U+FFFD instead
    assert rows[1]["payload"] == "garbage\ufffdhere" and rows[1]["kafka_key"] == "k\ufffd"
    assert set(KAFKA_COLUMNS) <= set(rows[0].asDict())
