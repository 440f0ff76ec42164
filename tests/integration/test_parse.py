"""The stream's JVM parser accepts exactly what the event contract accepts.

Real Spark (local), the parser of `aqi stream` (:func:`spark_streaming.parse.parse_records`),
and the contract's independent judge (tests/event_fuzz.py: Python's JSON reader and the
published JSON Schema checked by `jsonschema`, plus the rules on impossible events), on every
valid recorded or simulated event and on mutations of one of them: each field missing, each
field set to a value of every JSON type, timestamps in every RFC 3339 spelling, impossible
periods, unexpected and duplicated fields, not JSON at all.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest
from event_fuzz import judge

from ingestion.events import validate_event
from ingestion.fixtures import DEFAULT_FIXTURES_DIR
from ingestion.replay import fixture_events
from ingestion.simulator import SimulationConfig, simulate
from spark_streaming.parse import EVENT_FIELDS, KAFKA_COLUMNS, parse_records

# the module's tests share one costly fixture: one xdist worker runs them all (make test)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("parse")]

END = datetime(2025, 3, 12, tzinfo=UTC)
KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
)


@pytest.fixture(scope="module")
def spark():
    from spark_streaming.session import get_spark

    # the quick JIT (C1 only), as `aqi stream` gives a small drain: many small jobs
    session = get_spark("local[2]", app_name="aqi-test-parse", quick_jit=True)
    yield session
    session.stop()


#: the Kafka timestamp of the parsed records (one reference of "the future")
SENT = datetime.now(UTC).replace(microsecond=0)


def _parse(spark, payloads: list[bytes | None], keys: list[bytes | None] | None = None) -> list:
    keys = keys or [None] * len(payloads)
    rows = [(k, v, "t", i % 3, i, SENT.replace(tzinfo=None)) for i, (k, v) in
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
                    "2024-01-01T00:00:00+01:00", "2024-01-01t00:00:00.123456789z",
                    "2024-01-01T00:00:00", "2024-01-01T00:00:00+19:00", "1999-12-31T23:00:00Z",
                    "2024-02-30T00:00:00Z", 1e309, "NaN"):  # fmt: skip
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
        if accepted != (judge(_encode(payload), SENT) is not None):
            disagreements.append((label, row["reason"]))
        if not accepted:
            assert row["payload"] is not None and all(row[f] is None for f in EVENT_FIELDS)
    assert disagreements == [], "\n".join(map(str, disagreements))


#: messages parsed one to a test below, with the reason each must get
READABLE = [
    (b"not json at all", "not JSON"),
    (None, "empty message (no value)"),
    (b"[1, 2]", "not a JSON object but an array"),
    (b'{"schema_version": 2}', "unknown schema_version 2"),
    (b'{"schema_version": 1, "source": "openaq"}', "missing field(s): ingest_mode"),
]


@pytest.fixture(scope="module")
def one_message_rows(spark) -> dict[str, list]:
    """The rows of the single-message cases of this module, in order: READABLE's, IMPOSSIBLE's.

    Parsed in one Spark job rather than one job each (~1 s of planning and scheduling per job,
    for one row): the parser works row by row, so a message's row is the same in either.
    """
    event = _valid_events()[0]
    payloads = [p for p, _ in READABLE] + [_impossible(event, c) for c, _ in IMPOSSIBLE]
    rows = _parse(spark, payloads)
    return {"readable": rows[: len(READABLE)], "impossible": rows[len(READABLE) :]}


@pytest.mark.parametrize(("payload", "reason"), READABLE)
def test_reasons_are_readable(one_message_rows, payload, reason) -> None:
    row = one_message_rows["readable"][READABLE.index((payload, reason))]
    assert row["reason"].startswith(reason), row["reason"]


def test_field_reasons_name_the_field_and_quote_the_value(spark) -> None:
    event = _valid_events()[0]
    cases = {
        "value": ({**event, "value": "twelve"}, "value: expected a number or null (got twelve)"),
        "units": ({**event, "units": 12}, "units: expected a string (got 12)"),
        "period_end": ({**event, "period_end": "yesterday"}, (
            "period_end: expected an RFC 3339 timestamp like 2024-01-02T03:04:05Z (got yesterday)")),
        "latitude": ({**event, "latitude": 91}, "latitude: out of range (-90..90) (got 91)"),
        "extra": ({**event, "x": 1, "a": 2}, "unexpected field(s): a, x"),
        # the quoted text keeps no NUL either: PostgreSQL's text cannot hold it
        "nul": ({**event, "provider": "a\u0000b"},
                "provider: contains a NUL character (got a\ufffdb)"),
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


def test_timestamps_in_any_rfc3339_spelling_are_stored_as_the_utc_instant(spark) -> None:
    event = _valid_events()[0]
    end = datetime.fromisoformat(event["period_end"])
    india = (end + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S") + "+05:30"
    spellings = [
        event["period_end"][:-1] + "+00:00",  # Python's isoformat()
        event["period_end"][:-1] + "-00:00",
        india,
        india.lower(),
        event["period_end"][:-1] + ".000000999Z",  # past the microsecond: dropped
    ]
    rows = _parse(spark, [json.dumps({**event, "period_end": s}).encode() for s in spellings])
    for spelling, row in zip(spellings, rows, strict=True):
        assert row["reason"] is None, (spelling, row["reason"])
        assert row["period_end"].replace(tzinfo=UTC) == end, spelling


#: changes that make the first valid event impossible, with the reason each must get
IMPOSSIBLE = [
    ({"period_end": "2024-01-01T00:00:00"}, "period_end: no UTC offset (add Z or +00:00)"),
    ({"period_end": "2024-01-01 00:00:00Z"}, "period_end: expected an RFC 3339 timestamp"),
    ({"period_end": "2024-01-01T00:00:00+19:00"}, "period_end: not a valid date-time"),
    ({"period_end": "2024-01-01T23:59:60Z"}, "period_end: not a valid date-time"),
    ({"period_start": "1999-12-31T22:00:00Z", "period_end": "1999-12-31T23:00:00Z"},
     "period_start: before 2000-01-01"),
    ({"swap": True}, "period_start: not before period_end"),
    ({"same": True}, "period_start: not before period_end"),
    ({"ahead": timedelta(days=3)},
     "period_end: more than 1 hour after the event was ingested or sent"),
    ({"ahead": timedelta(minutes=61)},
     "period_end: more than 1 hour after the event was ingested or sent"),
]  # fmt: skip


def _impossible(event: dict, change: dict) -> bytes:
    """``event`` with one IMPOSSIBLE change: set fields, or a period swapped, of no length,
    or ending ``ahead`` of the event's ingestion."""
    if change.get("swap"):
        change = {"period_start": event["period_end"], "period_end": event["period_start"]}
    elif change.get("same"):
        change = {"period_start": event["period_end"]}
    elif "ahead" in change:
        end = datetime.fromisoformat(event["ingested_at"]) + change["ahead"]
        change = {"period_start": _z(end - timedelta(hours=1)), "period_end": _z(end)}
    return json.dumps({**event, **change}).encode()


@pytest.mark.parametrize(("change", "reason"), IMPOSSIBLE)
def test_impossible_events_are_quarantined_with_a_reason(one_message_rows, change, reason) -> None:
    row = one_message_rows["impossible"][IMPOSSIBLE.index((change, reason))]
    assert row["reason"] is not None and row["reason"].startswith(reason), row["reason"]


def test_a_period_ending_within_the_tolerance_is_accepted(spark) -> None:
    event = _valid_events()[0]
    ingested = SENT - timedelta(hours=3)
    end = ingested + timedelta(hours=1)  # exactly the tolerance
    changed = {**event, "ingested_at": _z(ingested), "period_start": _z(end - timedelta(hours=1)),
               "period_end": _z(end)}  # fmt: skip
    (row,) = _parse(spark, [json.dumps(changed).encode()])
    assert row["reason"] is None, row["reason"]


def test_the_kafka_timestamp_is_a_reference_of_the_future(spark) -> None:
    event = _valid_events()[0]
    # ingested 50 minutes after it was sent (within the tolerance), the period ending 30
    # minutes after that: fine by ingested_at alone, 80 minutes after the record was sent
    ingested = SENT + timedelta(minutes=50)
    end = ingested + timedelta(minutes=30)
    changed = {**event, "ingested_at": _z(ingested), "period_start": _z(end - timedelta(hours=1)),
               "period_end": _z(end)}  # fmt: skip
    # ingested two days after the record was sent
    later = {**event, "ingested_at": _z(SENT + timedelta(days=2))}
    first, second = _parse(spark, [json.dumps(changed).encode(), json.dumps(later).encode()])
    assert first["reason"].startswith("period_end: more than 1 hour after"), first["reason"]
    assert second["reason"].startswith(
        "ingested_at: more than 1 hour after the Kafka record was sent"
    ), second["reason"]


def test_bytes_that_are_not_utf8_are_refused_and_replaced_in_the_quarantine(spark) -> None:
    event = _valid_events()[0]
    text = json.dumps({**event, "location_name": "@@"}).encode()
    payload = text.replace(b"@@", b"Del \xff\xfeNorte")
    (row,) = _parse(spark, [payload], keys=[b"\xc3"])
    assert row["reason"] == "not valid UTF-8"
    assert "Del \ufffd\ufffdNorte" in row["payload"] and row["kafka_key"] == "\ufffd"


def test_the_nasty_corpus_agrees_with_the_contract(spark) -> None:
    from event_fuzz import disagreements, event_pool, nasty_corpus

    corpus = nasty_corpus(event_pool(SENT), SENT)
    values = [value for _, (_, value) in corpus]
    rows = [r.asDict() for r in _parse(spark, values, keys=[k for _, (k, _) in corpus])]
    problems = disagreements(values, rows, SENT, EVENT_FIELDS)
    assert problems == [], "\n".join(problems)
    reasons = {label: row["reason"] for (label, _), row in zip(corpus, rows, strict=True)}
    assert reasons["valid"] is None and reasons["valid, +00:00 offsets"] is None
    assert reasons["deep nesting 200,000"] == "not JSON"
    assert reasons["raw control character"] == "not JSON"
    assert reasons["megabyte payload"] is None


def _z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_content_after_the_object_is_refused_and_named_last(spark) -> None:
    event = _valid_events()[0]
    text = json.dumps(event)
    payloads = [
        (text + "{").encode(),
        (text + ' {"value": 1}').encode(),
        # a nested value is an unexpected field, not "content after the object"
        json.dumps({**event, "extra": {"a": 1}}).encode(),
        json.dumps({**event, "location_name": "Site {North} }"}).encode(),
    ]
    reasons = [row["reason"] for row in _parse(spark, payloads)]
    assert reasons[:2] == ["not JSON: content after the object"] * 2
    assert reasons[2] == "unexpected field(s): extra"
    assert reasons[3] is None
