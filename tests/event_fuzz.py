"""Hostile Kafka messages, and an independent judge of what the event contract accepts.

The stream's parser (spark_streaming/parse.py) is column expressions in the JVM; this module
is its reference, written from the contract alone (the JSON Schema checked by ``jsonschema``,
the rules of docs/event-contract.md) with Python's own JSON reader, and never from the parser.
It serves the parser's property-based test (tests/integration/test_parse_fuzz.py), the nasty
corpus sent through the real stream on a Spark cluster (tests/integration/test_spark_cluster.py)
and the million-message benchmark (benchmarks/bench_fuzz_parse.py).

Public surface:

- :func:`judge` - the typed event the contract accepts from a message, or None (quarantine).
- :func:`hostile_message` - one message from a seeded generator: valid, or broken in one of
  many ways (bytes, JSON, types, ranges, timestamps, impossible periods, sizes).
- :func:`nasty_corpus` - one message of each hand-picked kind, labelled.
- :func:`event_pool` - valid events to start from (recorded OpenAQ responses + simulated).
- :func:`disagreements` - where the parser's rows differ from the judge.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema

from ingestion.events import EVENT_SCHEMA

__all__ = ["disagreements", "event_pool", "hostile_message", "judge", "nasty_corpus"]

Message = tuple[bytes | None, bytes | None]  # (key, value)

_TIMESTAMPS = ("ingested_at", "period_start", "period_end")
_NUMBERS = ("value", "latitude", "longitude", "coverage_percent")
_IDS = ("location_id", "sensor_id", "parameter_id")
_TS = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_TOLERANCE = timedelta(hours=1)
_MAX_OFFSET = timedelta(hours=18)  # java.time.ZoneOffset's range; real offsets are -12..+14
_MAX_NUMBER_CHARS = 1000  # the JSON reader's limit on a number's length (Jackson's default)
_VALIDATOR = jsonschema.Draft202012Validator(EVENT_SCHEMA)


class _Refused(ValueError):
    pass


def judge(value: bytes | None, kafka_timestamp: datetime) -> dict[str, Any] | None:
    """The event as the warehouse must store it, or None when the message is quarantined.

    Typed like ``raw.openaq_measurements``: ids as ``int``, timestamps as aware UTC datetimes
    (to the microsecond).
    ``kafka_timestamp`` is the record's timestamp (aware), one reference of "the future".
    """
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
        event = json.loads(
            text,
            object_pairs_hook=_unique_names,
            parse_constant=_refuse,  # NaN, Infinity: not JSON (RFC 8259)
            parse_int=_number(int),
            parse_float=_number(float),
        )
    except (ValueError, RecursionError):
        return None
    if not isinstance(event, dict) or not _VALIDATOR.is_valid(event):
        return None
    try:
        times = {name: _instant(event[name]) for name in _TIMESTAMPS}
        numbers = {name: _finite(event[name]) for name in (*_NUMBERS, *_IDS)}
    except (_Refused, OverflowError):
        return None
    strings = [v for v in event.values() if isinstance(v, str)]
    # NUL (which text columns cannot hold); an unpaired surrogate escape names no character
    if any("\x00" in v or _SURROGATE.search(v) for v in strings):
        return None
    sent = kafka_timestamp.astimezone(UTC)
    start, end, ingested = times["period_start"], times["period_end"], times["ingested_at"]
    if min(times.values()) < _EARLIEST or start >= end:
        return None
    if end > min(ingested, sent) + _TOLERANCE or ingested > sent + _TOLERANCE:
        return None
    typed = dict(event)
    typed.update(times)
    typed.update({name: int(numbers[name]) for name in _IDS})
    typed.update({name: numbers[name] for name in _NUMBERS})
    return typed


def disagreements(
    messages: list[bytes | None], rows: list[dict[str, Any]], sent: datetime, fields: tuple[str, ...]
) -> list[str]:
    """Each message whose parsed row (``parse_records``' columns, in the same order) is not
    what :func:`judge` says: accepted or not, and every typed field of an accepted one.

    A quarantined row must carry a reason and a payload and no field of the event.
    """
    problems = []
    for i, (value, row) in enumerate(zip(messages, rows, strict=True)):
        expected = judge(value, sent)
        shown = repr(value[:120]) if value is not None else "None"
        if expected is None:
            if row["reason"] is None:
                problems.append(f"#{i} accepted, the contract refuses it: {shown}")
            elif any(row[name] is not None for name in fields) or (
                value is not None and row["payload"] is None
            ):
                problems.append(f"#{i} quarantined without its payload or with fields: {shown}")
            continue
        if row["reason"] is not None:
            problems.append(f"#{i} quarantined ({row['reason']}), the contract accepts: {shown}")
            continue
        for name in fields:
            got = row[name]
            if isinstance(got, datetime):
                got = got.replace(tzinfo=UTC)
            if got != expected[name]:
                problems.append(f"#{i} {name}: parsed {got!r}, expected {expected[name]!r}")
    return problems


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({name for name, _ in pairs}) != len(pairs):
        raise _Refused("duplicate names")
    return dict(pairs)


def _refuse(text: str) -> Any:
    raise _Refused(text)


def _number(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def read(text: str) -> Any:
        if len(text) > _MAX_NUMBER_CHARS:
            raise _Refused("number too long")
        return kind(text)

    return read


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)  # OverflowError for an integer past the double range
    if not math.isfinite(number):
        raise _Refused("not finite")
    return number


def _instant(text: str) -> datetime:
    if not _TS.match(text):
        raise _Refused("not an RFC 3339 timestamp with an offset")
    try:
        value = datetime.fromisoformat(text.upper())
    except ValueError as exc:  # February 30, a leap second
        raise _Refused(str(exc)) from None
    offset = value.utcoffset()
    if offset is None or abs(offset) > _MAX_OFFSET:
        raise _Refused("offset out of range")
    return value.astimezone(UTC)


# --- messages -----------------------------------------------------------------------------


def event_pool(now: datetime) -> list[dict[str, Any]]:
    """Valid events to mutate: every recorded OpenAQ response, and simulated ones ending at
    ``now`` (an aware datetime; the pool's ``ingested_at`` are before it)."""
    from ingestion.fixtures import DEFAULT_FIXTURES_DIR
    from ingestion.replay import fixture_events
    from ingestion.simulator import SimulationConfig, simulate

    recorded, _ = fixture_events(DEFAULT_FIXTURES_DIR)
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    simulated = list(simulate(SimulationConfig(locations=6, days=0.5, end=end)))
    return [e for e in recorded if e["ingested_at"] <= _z(now)] + simulated


def hostile_message(rng: random.Random, pool: list[dict[str, Any]], now: datetime) -> Message:
    """One (key, value): about one in six valid (some with respelled timestamps), the rest
    broken in a way drawn from :data:`_KINDS`. ``now`` is the record's Kafka timestamp."""
    event = copy.copy(rng.choice(pool))
    key = _key(rng, event)
    kind = rng.choices(_KIND_NAMES, weights=_KIND_WEIGHTS)[0]
    return key, _KINDS[kind](rng, event, now)


def nasty_corpus(pool: list[dict[str, Any]], now: datetime) -> list[tuple[str, Message]]:
    """One message of each hand-picked kind (the stream must get through all of them)."""
    event = dict(pool[0])
    key = str(event["sensor_id"]).encode()
    text = json.dumps(event)
    ingested = datetime.fromisoformat(event["ingested_at"])

    def with_(**fields: Any) -> bytes:
        return json.dumps({**event, **fields}, allow_nan=True).encode()

    def raw_field(name: str, raw: str) -> bytes:
        return json.dumps({**event, name: "@@"}).replace('"@@"', raw).encode()

    cases: list[tuple[str, Message]] = [
        ("valid", (key, text.encode())),
        ("valid, +00:00 offsets", (key, with_(**{n: event[n][:-1] + "+00:00" for n in _TIMESTAMPS}))),
        ("valid, +05:30 and lower case", (key, with_(period_end=_spell(
            datetime.fromisoformat(event["period_end"]), "+05:30").lower()))),
        ("no offset", (key, with_(period_end=event["period_end"][:-1]))),
        ("tombstone (no value)", (key, None)),
        ("null key", (None, text.encode())),
        ("empty", (key, b"")),
        ("not JSON", (key, b"{this is not json")),
        ("invalid UTF-8 in a name", (key, text.replace(
            json.dumps(event["location_name"]), '"Del \udcff\udcfeNorte"'
        ).encode("utf-8", "surrogateescape") if event["location_name"] else b'{"\xff": 1}')),
        ("invalid UTF-8 key", (b"\xff\xfe\x00", text.encode())),
        ("lone surrogate escape", (key, raw_field("location_name", '"\\ud800x"'))),
        ("NUL escape in a name", (key, with_(location_name="a\x00b"))),
        ("NUL byte outside strings", (key, text.encode()[:20] + b"\x00" + text.encode()[20:])),
        ("control characters escaped", (key, with_(provider="a\x01\x1f\x7fb"))),
        ("raw control character", (key, raw_field("provider", '"a\x01b"'))),
        ("deep nesting 10,000 in a field", (key, raw_field("location_name", "[" * 10_000 + "]" * 10_000))),
        ("deep nesting 200,000", (key, b"[" * 200_000 + b"]" * 200_000)),
        ("deep objects", (key, b'{"a":' * 5_000 + b"1" + b"}" * 5_000)),
        ("5,000-digit number", (key, raw_field("value", "9" * 5_000))),
        ("5,000-digit id", (key, raw_field("sensor_id", "9" * 5_000))),
        ("id past int64", (key, raw_field("sensor_id", str(2**64 + 1)))),
        ("id past 2^53", (key, with_(location_id=2**53))),
        ("parameter id past int32", (key, with_(parameter_id=2**31))),
        ("1e400", (key, raw_field("value", "1e400"))),
        ("NaN", (key, raw_field("value", "NaN"))),
        ("-Infinity", (key, raw_field("latitude", "-Infinity"))),
        ("megabyte payload", (key, with_(location_name="x" * 900_000))),
        ("duplicate key", (key, (text[:-1] + ', "units": "ppm"}').encode())),
        ("wrong types", (key, with_(sensor_id="17", value="12", flagged="true"))),
        ("out-of-range latitude", (key, with_(latitude=91.0))),
        ("out-of-range longitude", (key, with_(longitude=-180.5))),
        ("unknown parameter", (key, with_(parameter="pm1000"))),
        ("array", (key, b"[1, 2, 3]")),
        ("string", (key, b'"event"')),
        ("null", (key, b"null")),
        ("BOM", (key, b"\xef\xbb\xbf" + text.encode())),
        ("content after the object", (key, text.encode() + b"{")),
        ("a second object after it", (key, text.encode() + b' {"value": 1}')),
        ("valid, braces in a name", (key, with_(location_name="Site {North} }"))),
        ("valid, 300,000 escapes in a name", (key, with_(location_name="\n" * 300_000))),
        ("period_start == period_end", (key, with_(period_start=event["period_end"]))),
        ("period_start after period_end", (key, with_(
            period_start=event["period_end"], period_end=event["period_start"]))),
        ("period_end 3 days in the future", (key, with_(
            period_end=_z(ingested + timedelta(days=3))))),
        ("period_end 61 minutes after ingestion", (key, with_(
            period_start=_z(ingested), period_end=_z(ingested + timedelta(minutes=61))))),
        ("period_end 1999", (key, with_(period_start="1999-12-31T22:00:00Z",
                                         period_end="1999-12-31T23:00:00Z"))),
        ("ingested_at a year ahead", (key, with_(ingested_at=_z(now + timedelta(days=365))))),
        ("leap second", (key, with_(period_end=event["period_end"][:-3] + "60Z"))),
        ("offset +19:00", (key, with_(period_end=event["period_end"][:-1] + "+19:00"))),
        ("February 30", (key, with_(period_end="2024-02-30T00:00:00Z"))),
        ("unicode digits", (key, with_(period_end="٢٠٢٤-01-01T00:00:00Z"))),
    ]
    return cases


def _key(rng: random.Random, event: dict[str, Any]) -> bytes | None:
    r = rng.random()
    if r < 0.9:
        return str(event["sensor_id"]).encode()
    if r < 0.95:
        return None
    return rng.randbytes(rng.randint(0, 12))


def _z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")


def _spell(value: datetime, offset: str) -> str:
    """``value`` (aware) written with another offset (``+hh:mm``), naming the same instant."""
    sign = -1 if offset[0] == "-" else 1
    delta = sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    local = value.astimezone(UTC) + delta
    return local.strftime("%Y-%m-%dT%H:%M:%S") + offset


def _serialize(rng: random.Random, event: Any) -> bytes:
    spacing = rng.choice([(", ", ": "), (",", ":"), (" ,\n\t", " :  ")])
    text = json.dumps(event, ensure_ascii=rng.random() < 0.5, allow_nan=True, separators=spacing)
    return text.encode("utf-8", "surrogatepass")


# each kind: (rng, event copy, now) -> value bytes


def _valid(rng: random.Random, event: dict[str, Any], now: datetime) -> bytes:
    return _serialize(rng, event)


def _respelled(rng: random.Random, event: dict[str, Any], now: datetime) -> bytes:
    """The same instants written with other offsets, cases and fraction lengths."""
    for name in _TIMESTAMPS:
        value = datetime.fromisoformat(event[name])
        offset = rng.choice(["Z", "+00:00", "-00:00", "+05:30", "-08:00", "+14:00", "-12:00"])
        text = _spell(value, "+00:00" if offset == "Z" else offset)
        if offset == "Z":
            text = text[:-6] + "Z"
        digits = rng.choice([0, 0, 3, 6, 9, 12])
        if digits:  # the microsecond, then digits a microsecond cannot hold
            fraction = f"{value.microsecond:06d}{rng.randrange(10**6):06d}"[:digits]
            text = text[:19] + "." + fraction + text[19:]
        event[name] = text.lower() if rng.random() < 0.15 else text
    return _serialize(rng, event)


def _wrong_value(rng: random.Random, event: dict[str, Any], now: datetime) -> bytes:
    for _ in range(rng.randint(1, 3)):
        event[rng.choice(list(event))] = _random_json(rng, depth=rng.randint(0, 3))
    return _serialize(rng, event)


def _missing_or_extra(rng: random.Random, event: dict[str, Any], now: datetime) -> bytes:
    name = rng.choice(list(event))
    r = rng.random()
    if r < 0.4:
        del event[name]
    elif r < 0.7:
        event[rng.choice([name + "_", "x", "", "SENSOR_ID", "\x00", "location id"])] = 1
    else:  # the same name twice, in the text
        text = _serialize(rng, event).decode("utf-8", "surrogatepass")
        return (text[:-1] + f", {json.dumps(name)}: {json.dumps(event[name])}}}").encode(
            "utf-8", "surrogatepass"
        )
    return _serialize(rng, event)


def _nasty_text(rng: random.Random, event: dict[str, Any], now: datetime) -> bytes:
    name = rng.choice(["location_name", "provider", "country_code", "parameter", "units",
                       "timezone", "ingest_mode", "source"])  # fmt: skip
    pieces = ["\x00", "\x01", "\x1f", "\x7f", "\ud800", "\udfff", "\u202e", "😷", "µg/m³",
              "'", '"', "\\", "\n", "", " ", "null", "12", "true", "[", "{"]  # fmt: skip
    event[name] = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
    return _serialize(rng, event)


def _odd_number(rng: random.Random, event: dict[str, Any], now: datetime) -> bytes:
    name = rng.choice([*_NUMBERS, *_IDS])
    raw = rng.choice([
        "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "0.0", "5.0", "5.5",
        str(2**31 - 1), str(2**31), str(2**53 - 1), str(2**53), str(2**53 + 1), str(2**63),
        str(2**64 + 1), "9" * rng.choice([20, 400, 999, 1001, 5000]), "1" + "0" * 308,
        "-1", "90.000001", "-180.0000001", "180", "1E2", "01", "+1", ".5", "0x10",
    ])  # fmt: skip
    event[name] = "@@"
    return _serialize(rng, event).replace(b'"@@"', raw.encode())


def _odd_timestamp(rng: random.Random, event: dict[str, Any], now: datetime) -> bytes:
    name = rng.choice(_TIMESTAMPS)
    base = event[name]
    event[name] = rng.choice([
        base[:-1], base[:-1] + "+00:00", base[:-1] + "+19:00", base[:-1] + "-18:00",
        base[:-3] + "60Z", base.replace("T", " "), base.replace("T", "t"), base.lower(),
        base[:-1] + ".123456789Z", base[:-1] + ".Z", base[:-1] + "+0530", base[:-1] + "+05",
        "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59-05:00", "1999-12-31T23:59:59Z", "2000-01-01T00:00:00Z",
        "٢٠٢٤-01-01T00:00:00Z", "", "yesterday", base + "\x00",
    ])  # fmt: skip
    return _serialize(rng, event)


def _impossible_period(rng: random.Random, event: dict[str, Any], now: datetime) -> bytes:
    end = datetime.fromisoformat(event["period_end"])
    ingested = datetime.fromisoformat(event["ingested_at"])
    r = rng.random()
    if r < 0.3:
        event["period_start"], event["period_end"] = event["period_end"], event["period_start"]
    elif r < 0.4:
        event["period_start"] = event["period_end"]
    elif r < 0.8:  # around the tolerance: after ingestion by minutes to days
        late = timedelta(minutes=rng.choice([-1, 0, 59, 60, 61, 180, 60 * 24 * 3]))
        event["period_end"] = _z(ingested + late)
        event["period_start"] = _z(ingested + late - (end - datetime.fromisoformat(
            event["period_start"])))  # fmt: skip
    else:  # ingested (and the period) after the record was sent
        ahead = timedelta(minutes=rng.choice([30, 60, 61, 600]))
        event["ingested_at"] = _z(now + ahead)
        event["period_end"] = _z(now + ahead - timedelta(minutes=5))
        event["period_start"] = _z(now + ahead - timedelta(minutes=65))
    return _serialize(rng, event)


def _mangled_bytes(rng: random.Random, event: dict[str, Any], now: datetime) -> bytes:
    data = bytearray(_serialize(rng, event))
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) + 1)
        r = rng.random()
        if r < 0.4 and data:
            del data[at : at + rng.randint(1, 8)]
        elif r < 0.8:
            data[at:at] = rng.choice([b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b'"', b"{",
                                      b"}", b"\\", b",", b"]", rng.randbytes(3)])  # fmt: skip
        elif data:
            data[at % len(data)] = rng.randrange(256)
    return bytes(data)


def _not_an_event(rng: random.Random, event: dict[str, Any], now: datetime) -> bytes:
    r = rng.random()
    if r < 0.3:
        return rng.randbytes(rng.randint(0, 64))
    if r < 0.6:
        return _serialize(rng, _random_json(rng, depth=3))
    if r < 0.8:
        depth = rng.choice([10, 999, 1000, 1001, 5000, 100_000])
        return (b"[" * depth + b"]" * depth) if r < 0.7 else (b'{"a":' * depth + b"1" + b"}" * depth)
    return rng.choice([b"", b"null", b"true", b"0", b"[]", b"{}", b'"x"', b" ", b"\xef\xbb\xbf{}"])


def _big(rng: random.Random, event: dict[str, Any], now: datetime) -> bytes:
    event[rng.choice(["location_name", "provider", "parameter"])] = "x" * rng.randint(
        10_000, 400_000
    )
    return _serialize(rng, event)


def _random_json(rng: random.Random, depth: int) -> Any:
    r = rng.random()
    if depth <= 0 or r < 0.6:
        return rng.choice([
            None, True, False, 0, -1, 1.5, 2**60, -(2**70), 1e308, float("nan"), float("inf"),
            "", "x", "12", "true", "null", "2024-01-01T00:00:00Z", "\x00", "\ud800",
            rng.random() * 1000, rng.randint(-(10**6), 10**6),
        ])  # fmt: skip
    if r < 0.8:
        return [_random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {str(rng.randint(0, 9)): _random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))}


_KINDS: dict[str, Callable[[random.Random, dict[str, Any], datetime], bytes]] = {
    "valid": _valid,
    "respelled": _respelled,
    "wrong value": _wrong_value,
    "missing or extra": _missing_or_extra,
    "nasty text": _nasty_text,
    "odd number": _odd_number,
    "odd timestamp": _odd_timestamp,
    "impossible period": _impossible_period,
    "mangled bytes": _mangled_bytes,
    "not an event": _not_an_event,
    "big": _big,
}
_KIND_NAMES = list(_KINDS)
_KIND_WEIGHTS = [10, 8, 12, 10, 10, 10, 10, 10, 10, 9, 0.05]
