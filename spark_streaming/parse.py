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

import functools

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from aqi.core.event_contract import EVENT_FIELD_NAMES, SCHEMA_VERSION, EventField, Kind
from aqi.core.event_contract import EVENT_FIELDS as _FIELDS
from aqi.core.event_contract import KAFKA_COLUMNS as RAW_KAFKA_COLUMNS

__all__ = [
    "EARLIEST",
    "EVENT_FIELDS",
    "FUTURE_TOLERANCE",
    "KAFKA_COLUMNS",
    "SCHEMA_VERSION",
    "parse_records",
]

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

#: the contract's field names, in its order (aqi/core/event_contract.py reads them, their
#: kinds, ranges and allowed values from the JSON Schema: the checks below follow from them)
EVENT_FIELDS: tuple[str, ...] = EVENT_FIELD_NAMES
#: the Kafka coordinates every parsed row carries (raw's key), after the event fields, and the
#: record's key (kept for the quarantine)
KAFKA_COLUMNS: tuple[str, ...] = (*RAW_KAFKA_COLUMNS, "kafka_key")
#: how from_json reads each kind for checking (see the module's docstring)
_READ_AS = {Kind.VERSION: "double", Kind.ID: "double", Kind.INT32: "double",
            Kind.NUMBER: "double", Kind.TEXT: "string", Kind.OPTIONAL_TEXT: "string",
            Kind.BOOLEAN: "boolean", Kind.TIMESTAMP: "string"}  # fmt: skip


def parse_records(records: DataFrame) -> DataFrame:
    """Kafka rows (``key, value, topic, partition, offset, timestamp``) -> parsed rows.

    Output: the event fields typed as in ``raw.openaq_measurements`` (meaningful when
    ``reason`` is null), :data:`KAFKA_COLUMNS`, ``payload`` (the record's text, for the
    quarantine) and ``reason`` (null for a valid event).
    """
    schema = ", ".join(f"`{f.name}` {_READ_AS[f.kind]}" for f in _FIELDS)
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
            F.upper(F.col(f"_e.{f.name}")).try_cast("timestamp").alias(f"_ts_{f.name}")
            for f in _FIELDS
            if f.kind == Kind.TIMESTAMP
        ],
    )
    reason = _reason()
    typed = [F.when(F.col("_reason").isNull(), _typed(f)).alias(f.name) for f in _FIELDS]
    # the key and the text are kept for the quarantine only (raw has neither)
    invalid = F.col("_reason").isNotNull()
    return read.withColumn("_reason", reason).select(
        *typed,
        *RAW_KAFKA_COLUMNS,
        F.when(invalid, _text(F.col("key").cast("string"))).alias("kafka_key"),
        F.when(invalid, _text(F.col("_raw"))).alias("payload"),
        # a reason quotes the field's text, which may hold an escaped NUL
        _text(F.col("_reason")).alias("reason"),
    )  # fmt: skip


# --- the checks ---------------------------------------------------------------------------


@functools.cache
def _reason() -> Column:
    """The first problem of a record, or null.

    Every record pays for one cheap predicate (all checks hold); only a failing record runs
    the ordered chain that names its first problem and quotes the offending text.

    Built once per process: the expression takes thousands of calls into the JVM (~3 s),
    which every parsed DataFrame would otherwise pay again (the parser's tests and its
    benchmark parse many). An unresolved expression belongs to no session or DataFrame.
    """
    keys = F.col("_keys")
    names = F.array(*[F.lit(n) for n in EVENT_FIELDS])
    version = F.col("_e.schema_version")
    checks = [(f.name, problem, failed) for f in _FIELDS if f.kind != Kind.VERSION
              for failed, problem in _field_checks(f)]  # fmt: skip
    checks += _impossible()
    # exactly the contract's fields, by counting: as many keys as fields, each field present
    # (a value that is not null was there; a null one is looked up), so no other key and
    # none twice
    present = [
        F.col(f"_e.{f.name}").isNotNull() | F.array_contains(keys, f.name)
        for f in _FIELDS
        if f.nullable
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


def _field_checks(field: EventField) -> list[tuple[Column, str]]:
    """(fails, what is wrong) for one field, in the order they are tried."""
    name, kind = field.name, field.kind
    value = F.col(f"_e.{name}")
    if kind in (Kind.ID, Kind.INT32):
        top = int(field.maximum or 0)
        return [
            # NaN passes x = floor(x) in Spark but fails any range: it is "out of range"
            (value.isNull() | (value != F.floor(value)), "expected an integer"),
            (value < 0, "expected a non-negative integer"),
            (~value.between(0, top), f"out of range (at most {top})"),
        ]
    if kind == Kind.NUMBER:
        checks = [
            # null in the typed parse but not in the JSON: a string, boolean, object, array
            (value.isNull() & F.get_json_object("_raw", f"$.{name}").isNotNull(),
             "expected a number or null"),
            (F.isnan(value) | (F.abs(value) == float("inf")), "expected a finite number"),
        ]  # fmt: skip
        low, high = field.minimum, field.maximum
        if low is not None and high is not None:
            checks.append(((value < low) | (value > high), f"out of range ({low:g}..{high:g})"))
        elif low is not None:
            checks.append((value < low, "negative" if low == 0 else f"below {low:g}"))
        elif high is not None:
            checks.append((value > high, f"above {high:g}"))
        return checks
    if kind == Kind.BOOLEAN:
        return [(value.isNull(), "expected true or false")]
    if kind == Kind.TIMESTAMP:
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
    if kind == Kind.OPTIONAL_TEXT:
        return [
            (value.isNotNull() & not_a_string, "expected a string or null"),
            (value.isNotNull() & nul, "contains a NUL character"),
        ]
    # a number's text is never one of the allowed words ('openaq', an ingest mode): a field
    # with allowed values needs no string test
    if len(field.allowed) == 1:
        return [(value.isNull() | (value != field.allowed[0]), f"expected {field.allowed[0]!r}")]
    if field.allowed:
        return [(value.isNull() | ~value.isin(*field.allowed),
                 f"expected one of {', '.join(field.allowed)}")]  # fmt: skip
    checks = [
        (value.isNull() | not_a_string, "expected a string"),
        (nul, "contains a NUL character"),
    ]
    if field.min_length:
        checks.append((F.length(value) < field.min_length, "empty string" if field.min_length == 1
                       else f"shorter than {field.min_length} characters"))  # fmt: skip
    return checks


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


def _typed(field: EventField) -> Column:
    value = F.col(f"_e.{field.name}")
    if field.kind == Kind.TIMESTAMP:
        return F.col(f"_ts_{field.name}")
    if field.kind in (Kind.VERSION, Kind.ID, Kind.INT32):
        return value.try_cast(field.spark_type)
    return value


def _text(column: Column) -> Column:
    """Text PostgreSQL can store: NUL (which ``text`` cannot hold) and bytes that are not
    UTF-8 become U+FFFD."""
    return F.translate(F.make_valid_utf8(column), "\u0000", "\ufffd")
