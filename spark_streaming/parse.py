"""Parse Kafka records into typed events in the JVM, or say exactly why a record is not one.

The stream must never stop for bad data and never let a malformed event into the warehouse:
every record becomes either a typed row (the event contract of
``ingestion/schemas/measurement_event.v1.json``) or a quarantine row with a reason (not JSON,
wrong type, missing field, unknown ``schema_version``...). A test holds the result to the
published JSON Schema on every mutation of a valid event (tests/integration/test_parse.py).

Why column expressions and not Python: the records never leave the JVM, so parsing costs
what Spark's JSON reader costs (~10x the Python parser this replaced). How:

- one ``from_json`` with the contract's fields typed for checking: integers as ``double``
  (JSON Schema's integer admits ``5.0``; integrality and range are checked, then cast),
  numbers as ``double``, booleans as ``boolean``, everything else as ``string``. Spark's
  reader leaves a field null when its JSON type does not fit (``"12"`` for a number), and
  turns a number into its text when the field is a string; a string field whose text could
  be a number, literal, object or array is therefore re-checked (rarely: a name like
  "13 DTU") with a second parse of that field as a ``variant``, whose cast to ``binary``
  succeeds for JSON strings only;
- ``json_object_keys`` for missing, duplicated and unexpected fields (a null field and a
  missing one read the same in the typed parse);
- one ``CASE`` whose first failing check names the reason, in the contract's field order;
  the raw text of the offending field (``get_json_object``) is evaluated for bad rows only;
- then the events that are shaped right but impossible (a period that ends before it starts,
  before 2000, or in the future of the record), judged on the record alone so that a
  replayed batch goes to the same table as the first time.

Bytes that are not UTF-8 are refused (JSON is UTF-8) and replaced in what is kept; what the
JSON reader cannot read (also past its limits: nesting depth 1000, 1000-digit numbers) is
"not JSON". docs/event-contract.md lists the rules and the reasons.

Public surface: :data:`SCHEMA_VERSION`, :data:`EVENT_FIELDS`, :data:`KAFKA_COLUMNS`,
:func:`parse_records`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

__all__ = [
    "EARLIEST",
    "EVENT_FIELDS",
    "FUTURE_TOLERANCE",
    "KAFKA_COLUMNS",
    "SCHEMA_VERSION",
    "parse_records",
]

SCHEMA_VERSION = 1
INGEST_MODES = ("live", "backfill", "replay", "simulate")
#: the largest integer a double holds exactly: ids beyond it could not be checked exactly
_MAX_ID = 2**53 - 1
_MAX_INT32 = 2**31 - 1
#: RFC 3339 date-time: 'T' or 't', any fraction (kept to the microsecond), Z/z or +hh:mm
_DATE_TIME = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?"
_TIMESTAMP = _DATE_TIME + r"([Zz]|[+-]\d{2}:\d{2})$"
#: the same without an offset: a local time, which names no instant
_LOCAL_TIME = _DATE_TIME + "$"
#: a UTF-16 surrogate escape without its pair (after an even run of backslashes, so a real
#: escape): it names no character, and Spark's JSON tools disagree on what it reads as
_LONE_SURROGATE = (
    r"(^|[^\\])(\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F])"
)
#: a JSON string literal, possessive: a 300,000-escape string with a backtracking pattern
#: overflows the JVM's stack (and fails the task: the stream would stop)
_STRING_LITERAL = r'"(?:[^"\\]++|\\.)*+"'
_JSON_SPACE = " \t\n\r"
#: no measurement period starts or ends before this (OpenAQ's oldest data are from 2015)
EARLIEST = "2000-01-01T00:00:00Z"
#: how far a period may end after the event was ingested or sent (clock skew, not time zones)
FUTURE_TOLERANCE = "1 hour"

# kind per contract field: how it is checked and typed (in the contract's order)
_VERSION, _ID, _INT32, _NUM, _STR, _OPT_STR, _BOOL, _TS = (
    "version", "id", "int32", "num", "str", "ostr", "bool", "ts",
)  # fmt: skip
_FIELDS: tuple[tuple[str, str, str], ...] = (
    # name, kind, output type (the raw table's)
    ("schema_version", _VERSION, "smallint"),
    ("source", _STR, "string"),
    ("ingest_mode", _STR, "string"),
    ("ingested_at", _TS, "timestamp"),
    ("location_id", _ID, "bigint"),
    ("location_name", _OPT_STR, "string"),
    ("sensor_id", _ID, "bigint"),
    ("parameter_id", _INT32, "int"),
    ("parameter", _STR, "string"),
    ("units", _STR, "string"),
    ("value", _NUM, "double"),
    ("period_start", _TS, "timestamp"),
    ("period_end", _TS, "timestamp"),
    ("timezone", _STR, "string"),
    ("latitude", _NUM, "double"),
    ("longitude", _NUM, "double"),
    ("country_code", _OPT_STR, "string"),
    ("provider", _OPT_STR, "string"),
    ("is_mobile", _BOOL, "boolean"),
    ("is_monitor", _BOOL, "boolean"),
    ("flagged", _BOOL, "boolean"),
    ("coverage_percent", _NUM, "double"),
)
EVENT_FIELDS: tuple[str, ...] = tuple(name for name, _, _ in _FIELDS)
#: the Kafka coordinates every parsed row carries (raw's key), after the event fields
KAFKA_COLUMNS: tuple[str, ...] = (
    "kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp", "kafka_key",
)  # fmt: skip
_READ_AS = {_VERSION: "double", _ID: "double", _INT32: "double", _NUM: "double",
            _STR: "string", _OPT_STR: "string", _BOOL: "boolean", _TS: "string"}  # fmt: skip
_RANGES = {"latitude": (-90.0, 90.0), "longitude": (-180.0, 180.0)}


def parse_records(records: DataFrame) -> DataFrame:
    """Kafka rows (``key, value, topic, partition, offset, timestamp``) -> parsed rows.

    Output: the event fields typed as in ``raw.openaq_measurements`` (meaningful when
    ``reason`` is null), :data:`KAFKA_COLUMNS`, ``payload`` (the record's text, for the
    quarantine) and ``reason`` (null for a valid event).
    """
    schema = ", ".join(f"`{name}` {_READ_AS[kind]}" for name, kind, _ in _FIELDS)
    read = records.select(
        # JSON is UTF-8 (RFC 8259): other bytes are refused, and replaced in what is kept
        F.make_valid_utf8(F.col("value").cast("string")).alias("_raw"),
        F.is_valid_utf8(F.col("value").cast("string")).alias("_utf8"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.col("key"),
    ).select(
        "*",
        F.from_json("_raw", schema).alias("_e"),
        F.expr("json_object_keys(_raw)").alias("_keys"),
        # contains() skips to the backslashes; instr() compares at every byte (~15% of the parse)
        F.col("_raw").contains("\\u0000").alias("_maybe_nul"),
        (F.col("_raw").contains("\\u") & F.col("_raw").rlike(_LONE_SURROGATE)).alias("_lone"),
    )
    # each timestamp is parsed once, for its check and its value
    read = read.select(
        "*",
        *[
            # Spark's cast reads 't' only without an offset
            F.upper(F.col(f"_e.{name}")).try_cast("timestamp").alias(f"_ts_{name}")
            for name, kind, _ in _FIELDS
            if kind == _TS
        ],
    )
    reason = _reason()
    typed = [
        F.when(F.col("_reason").isNull(), _typed(name, kind, out)).alias(name)
        for name, kind, out in _FIELDS
    ]
    # the key and the text are kept for the quarantine only (raw has neither)
    invalid = F.col("_reason").isNotNull()
    return read.withColumn("_reason", reason).select(
        *typed,
        "kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
        F.when(invalid, _text(F.col("key").cast("string"))).alias("kafka_key"),
        F.when(invalid, _text(F.col("_raw"))).alias("payload"),
        # a reason quotes the field's text, which may hold an escaped NUL
        _text(F.col("_reason")).alias("reason"),
    )  # fmt: skip


# --- the checks ---------------------------------------------------------------------------


def _reason() -> Column:
    """The first problem of a record, or null.

    Every record pays for one cheap predicate (all checks hold); only a failing record runs
    the ordered chain that names its first problem and quotes the offending text.
    """
    keys = F.col("_keys")
    names = F.array(*[F.lit(n) for n in EVENT_FIELDS])
    version = F.col("_e.schema_version")
    checks = [(name, problem, failed) for name, kind, _ in _FIELDS if kind != _VERSION
              for failed, problem in _field_checks(name, kind)]  # fmt: skip
    checks += _impossible()
    # exactly the contract's fields, by counting: 22 keys, each field present (a value that
    # is not null was there; a null one is looked up), so no other key and none twice
    present = [
        F.col(f"_e.{name}").isNotNull() | F.array_contains(keys, name)
        for name, kind, _ in _FIELDS
        if kind in (_NUM, _OPT_STR)
    ]
    shape_ok = (
        F.col("_raw").isNotNull()
        & F.col("_utf8")
        & ~F.col("_lone")
        & _nothing_after_the_object()
        & (F.size(keys) == len(EVENT_FIELDS))
        & (version == SCHEMA_VERSION)
    )
    for field_present in present:
        shape_ok = shape_ok & field_present
    ok = shape_ok
    for _, _, failed in checks:
        ok = ok & ~F.coalesce(failed, F.lit(False))
    # null (a missing piece) is not ok: only a record every check vouched for passes
    return F.when(~F.coalesce(ok, F.lit(False)), _first_problem(keys, names, version, checks))


def _first_problem(
    keys: Column, names: Column, version: Column, checks: list[tuple[str, str, Column]]
) -> Column:
    """The ordered chain: what is wrong with a record that failed some check."""
    missing = F.array_except(names, keys)
    unexpected = F.array_sort(F.array_except(keys, names))
    duplicated = F.array_distinct(
        F.filter(keys, lambda k: F.size(F.filter(keys, lambda j: j == k)) > 1)
    )
    unknown_version = (
        ~F.array_contains(keys, "schema_version")
        | version.isNull()
        | (version != SCHEMA_VERSION)
    )
    chain = (
        F.when(F.col("_raw").isNull(), F.lit("empty message (no value)"))
        .when(~F.col("_utf8"), F.lit("not valid UTF-8"))
        .when(F.col("_lone"), F.lit("an unpaired surrogate escape (\\ud800-\\udfff): not text"))
        .when(keys.isNull(), _not_an_object())
        # the key lister is lenient, the typed reader is not: an unescaped control
        # character leaves every field null (a duplicate key also fails the variant reader)
        .when(version.isNull() & F.expr("try_parse_json(_raw)").isNull()
              & (F.size(keys) == F.size(F.array_distinct(keys))), F.lit(_NOT_JSON))
        .when(unknown_version, _says("unknown schema_version ",
                                     F.coalesce(_got("schema_version"), F.lit("(missing)"))))
        .when(F.size(missing) > 0, _says("missing field(s): ", F.array_join(missing, ", ")))
        .when(F.size(keys) != F.size(F.array_distinct(keys)),
              _says("duplicate field(s): ", F.array_join(duplicated, ", ")))
        .when(F.size(unexpected) > 0,
              _says("unexpected field(s): ", F.array_join(unexpected, ", ")))
    )  # fmt: skip
    for name, problem, failed in checks:
        chain = chain.when(
            F.coalesce(failed, F.lit(False)),
            F.concat(
                F.lit(f"{name}: {problem} (got "),
                F.substring(F.coalesce(_got(name), F.lit("null")), 1, 60),
                F.lit(")"),
            ),
        )
    # last: an object with a nested value (an unexpected field) has a '}' before its end too
    chain = chain.when(
        ~_nothing_after_the_object(), F.lit(f"{_NOT_JSON}: content after the object")
    )
    # a check this chain forgot would otherwise let an invalid record pass as valid
    return chain.otherwise(F.lit("invalid event"))


def _field_checks(name: str, kind: str) -> list[tuple[Column, str]]:
    """(fails, what is wrong) for one field, in the order they are tried."""
    value = F.col(f"_e.{name}")
    if kind in (_ID, _INT32):
        top = _MAX_ID if kind == _ID else _MAX_INT32
        return [
            # NaN passes x = floor(x) in Spark but fails any range: it is "out of range"
            (value.isNull() | (value != F.floor(value)), "expected an integer"),
            (value < 0, "expected a non-negative integer"),
            (~value.between(0, top), f"out of range (at most {top})"),
        ]
    if kind == _NUM:
        checks = [
            # null in the typed parse but not in the JSON: a string, boolean, object, array
            (value.isNull() & F.get_json_object("_raw", f"$.{name}").isNotNull(),
             "expected a number or null"),
            (F.isnan(value) | (F.abs(value) == float("inf")), "expected a finite number"),
        ]  # fmt: skip
        if name in _RANGES:
            low, high = _RANGES[name]
            checks.append(((value < low) | (value > high), f"out of range ({low:g}..{high:g})"))
        if name == "coverage_percent":
            checks.append((value < 0, "negative"))
        return checks
    if kind == _BOOL:
        return [(value.isNull(), "expected true or false")]
    if kind == _TS:
        shaped, instant = value.rlike(_TIMESTAMP), F.col(f"_ts_{name}")
        return [
            # checked on records that fail the shape only (And stops at its first false)
            (~shaped & value.rlike(_LOCAL_TIME), "no UTC offset (add Z or +00:00)"),
            (value.isNull() | ~shaped,
             "expected an RFC 3339 timestamp like 2024-01-02T03:04:05Z"),
            # a date that does not exist, a leap second, an offset past +-18:00
            (instant.isNull(), "not a valid date-time"),
            (instant < F.lit(EARLIEST).cast("timestamp"), f"before {EARLIEST[:10]}"),
        ]  # fmt: skip
    # the text of a number, literal, object or array starts with - 0-9 [ { or is true/false;
    # only then is the JSON re-read to tell a string such as "13 DTU" from the number 13
    first = F.ascii(value)
    looks_other = first.between(48, 57) | first.isin(45, 91, 123) | value.isin("true", "false")
    not_a_string = looks_other & ~_is_json_string(name)
    # a NUL can only come as the escape \u0000: the raw text is searched once per record
    nul = F.col("_maybe_nul") & value.contains("\u0000")
    if kind == _OPT_STR:
        return [
            (value.isNotNull() & not_a_string, "expected a string or null"),
            (value.isNotNull() & nul, "contains a NUL character"),
        ]
    # a number's text is never 'openaq' nor an ingest mode: those two need no string test
    if name == "source":
        return [(value.isNull() | (value != "openaq"), "expected 'openaq'")]
    if name == "ingest_mode":
        return [(value.isNull() | ~value.isin(*INGEST_MODES),
                 f"expected one of {', '.join(INGEST_MODES)}")]  # fmt: skip
    return [
        (value.isNull() | not_a_string, "expected a string"),
        (nul, "contains a NUL character"),
        (value == "", "empty string"),
    ]


def _nothing_after_the_object() -> Column:
    """True when nothing but JSON whitespace follows the object.

    Spark's JSON readers (``from_json``, ``json_object_keys``, the variant reader) all stop at
    the end of the first value and ignore what follows (``{...}{``, ``{...},``). A valid event
    holds scalars only, so its first ``}`` outside strings ends it: when the text's first
    ``}`` is its last non-space character, nothing follows; only otherwise (a ``}`` inside a
    name, or something after the object) are the strings blanked and the question asked again.
    """

    def first_brace_ends(text: Column) -> Column:
        return F.locate("}", text) == F.length(F.rtrim(text, F.lit(_JSON_SPACE)))

    raw = F.col("_raw")
    return first_brace_ends(raw) | first_brace_ends(F.regexp_replace(raw, _STRING_LITERAL, '""'))


def _impossible() -> list[tuple[str, str, Column]]:
    """Events shaped right that cannot be true: (field, what is wrong, fails).

    A period ends after it starts, and not in the future: not later than
    :data:`FUTURE_TOLERANCE` after the event was ingested (``ingested_at``) or sent (the
    Kafka record's timestamp); nor is an event ingested after it was sent. Both references
    are in the record, so a replayed batch is judged as the first time.
    """
    start, end = F.col("_ts_period_start"), F.col("_ts_period_end")
    ingested, sent = F.col("_ts_ingested_at"), F.col("kafka_timestamp")
    tolerance = F.expr(f"interval {FUTURE_TOLERANCE}")
    return [
        ("ingested_at", f"more than {FUTURE_TOLERANCE} after the Kafka record was sent",
         ingested > sent + tolerance),
        ("period_start", "not before period_end", start >= end),
        ("period_end", f"more than {FUTURE_TOLERANCE} after the event was ingested or sent",
         end > F.least(ingested, sent) + tolerance),
    ]  # fmt: skip


def _is_json_string(name: str) -> Column:
    """True when the field's JSON value is a string (a second, one-field parse as variant)."""
    field = F.from_json("_raw", f"`{name}` variant").getField(name)
    return field.try_cast("binary").isNotNull()


def _not_an_object() -> Column:
    parsed = F.expr("try_parse_json(_raw)")
    kind = F.expr("schema_of_variant(try_parse_json(_raw))")
    return (
        F.when(parsed.isNull(), F.lit(_NOT_JSON))
        .when(kind.startswith("ARRAY"), F.lit("not a JSON object but an array"))
        .when(kind == "STRING", F.lit("not a JSON object but a string"))
        .when(kind == "BOOLEAN", F.lit("not a JSON object but true or false"))
        .when(kind == "VOID", F.lit("not a JSON object but null"))
        .otherwise(F.lit("not a JSON object but a number"))
    )


#: also what the reader says past its limits (nesting depth 1000, numbers of 1000 digits)
_NOT_JSON = "not JSON"


def _says(prefix: str, detail: Column) -> Column:
    return F.concat(F.lit(prefix), detail)


def _got(name: str) -> Column:
    """The field's JSON text as found (strings unquoted), for the reason."""
    return F.get_json_object("_raw", f"$.{name}")


def _typed(name: str, kind: str, out: str) -> Column:
    value = F.col(f"_e.{name}")
    if kind == _TS:
        return F.col(f"_ts_{name}")
    if kind in (_VERSION, _ID, _INT32):
        return value.try_cast(out)
    return value


def _text(column: Column) -> Column:
    """Text PostgreSQL can store: NUL (which ``text`` cannot hold) and bytes that are not
    UTF-8 become U+FFFD."""
    return F.translate(F.make_valid_utf8(column), "\u0000", "\ufffd")
