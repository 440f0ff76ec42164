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
#
# Written as Spark SQL text, parsed once in the JVM (F.expr): built from pyspark Column calls,
# the same expression took ~13,000 calls into the JVM, and the plans Spark analyses for each
# job were dearer (docs/benchmarks.md, "Parse plan"). Each helper returns one parenthesized SQL
# expression over the columns parse_records made (_raw, _utf8, _lone, _maybe_nul, _keys, _e,
# _ts_*).


@functools.cache
def _reason() -> Column:
    """The first problem of a record, or null.

    Every record pays for one cheap predicate (all checks hold); only a failing record runs
    the ordered chain that names its first problem and quotes the offending text.

    Built once per process; an unresolved expression belongs to no session or DataFrame.
    """
    names = "array(" + ", ".join(_lit(n) for n in EVENT_FIELDS) + ")"
    version = _field("schema_version")
    checks = [(f.name, problem, failed) for f in _FIELDS if f.kind != Kind.VERSION
              for failed, problem in _field_checks(f)]  # fmt: skip
    checks += _impossible()
    # exactly the contract's fields, by counting: as many keys as fields, each field present
    # (a value that is not null was there; a null one is looked up), so no other key and
    # none twice
    present = [
        f"({_field(f.name)} IS NOT NULL OR array_contains(_keys, {_lit(f.name)}))"
        for f in _FIELDS
        if f.nullable
    ]
    shape_ok = _all(
        "(_raw IS NOT NULL)",
        "_utf8",
        "(NOT _lone)",
        _nothing_after_the_object(),
        f"(size(_keys) = {len(EVENT_FIELDS)})",
        f"({version} = {SCHEMA_VERSION})",
        *present,
    )
    ok = _all(shape_ok, *[f"(NOT coalesce({failed}, false))" for _, _, failed in checks])
    # null (a missing piece) is not ok: only a record every check vouched for passes
    first = _first_problem(names, version, checks)
    return F.expr(f"CASE WHEN NOT coalesce({ok}, false) THEN {first} END")


def _first_problem(names: str, version: str, checks: list[tuple[str, str, str]]) -> str:
    """The ordered chain: what is wrong with a record that failed some check."""
    missing = f"array_except({names}, _keys)"
    unexpected = f"array_sort(array_except(_keys, {names}))"
    duplicated = "array_distinct(filter(_keys, k -> size(filter(_keys, j -> j = k)) > 1))"
    unknown_version = (
        f"((NOT array_contains(_keys, 'schema_version')) OR {version} IS NULL"
        f" OR {version} != {SCHEMA_VERSION})"
    )
    chain = [
        ("(_raw IS NULL)", _lit("empty message (no value)")),
        ("(NOT _utf8)", _lit("not valid UTF-8")),
        ("_lone", _lit("an unpaired surrogate escape (\\ud800-\\udfff): not text")),
        ("(_keys IS NULL)", _not_an_object()),
        # the key lister is lenient, the typed reader is not: an unescaped control
        # character leaves every field null (a duplicate key also fails the variant reader)
        ((f"({version} IS NULL AND try_parse_json(_raw) IS NULL"
          " AND size(_keys) = size(array_distinct(_keys)))"), _lit(_NOT_JSON)),
        (unknown_version, _says("unknown schema_version ",
                                f"coalesce({_got('schema_version')}, '(missing)')")),
        (f"(size({missing}) > 0)", _says("missing field(s): ", f"array_join({missing}, ', ')")),
        ("(size(_keys) != size(array_distinct(_keys)))",
         _says("duplicate field(s): ", f"array_join({duplicated}, ', ')")),
        (f"(size({unexpected}) > 0)",
         _says("unexpected field(s): ", f"array_join({unexpected}, ', ')")),
    ]  # fmt: skip
    for name, problem, failed in checks:
        got = f"substring(coalesce({_got(name)}, 'null'), 1, 60)"
        chain.append((f"coalesce({failed}, false)",
                      f"concat({_lit(f'{name}: {problem} (got ')}, {got}, ')')"))  # fmt: skip
    # last: an object with a nested value (an unexpected field) has a '}' before its end too
    chain.append(
        (f"(NOT {_nothing_after_the_object()})", _lit(f"{_NOT_JSON}: content after the object"))
    )
    # a check this chain forgot would otherwise let an invalid record pass as valid
    return _case(chain, _lit("invalid event"))


def _field_checks(field: EventField) -> list[tuple[str, str]]:
    """(fails, what is wrong) for one field, in the order they are tried."""
    name, kind = field.name, field.kind
    value = _field(name)
    if kind in (Kind.ID, Kind.INT32):
        top = int(field.maximum or 0)
        return [
            # NaN passes x = floor(x) in Spark but fails any range: it is "out of range"
            (f"({value} IS NULL OR {value} != floor({value}))", "expected an integer"),
            (f"({value} < 0)", "expected a non-negative integer"),
            (f"(NOT ({value} >= 0 AND {value} <= {top}))", f"out of range (at most {top})"),
        ]
    if kind == Kind.NUMBER:
        checks = [
            # null in the typed parse but not in the JSON: a string, boolean, object, array
            (f"({value} IS NULL AND {_got(name)} IS NOT NULL)", "expected a number or null"),
            (f"(isnan({value}) OR abs({value}) = CAST('Infinity' AS DOUBLE))",
             "expected a finite number"),
        ]  # fmt: skip
        low, high = field.minimum, field.maximum
        if low is not None and high is not None:
            checks.append((f"({value} < {_number(low)} OR {value} > {_number(high)})",
                           f"out of range ({low:g}..{high:g})"))  # fmt: skip
        elif low is not None:
            checks.append((f"({value} < {_number(low)})",
                           "negative" if low == 0 else f"below {low:g}"))  # fmt: skip
        elif high is not None:
            checks.append((f"({value} > {_number(high)})", f"above {high:g}"))
        return checks
    if kind == Kind.BOOLEAN:
        return [(f"({value} IS NULL)", "expected true or false")]
    if kind == Kind.TIMESTAMP:
        shaped, instant = f"({value} RLIKE {_lit(_TIMESTAMP)})", f"`_ts_{name}`"
        return [
            # checked on records that fail the shape only (And stops at its first false)
            (f"((NOT {shaped}) AND {value} RLIKE {_lit(_LOCAL_TIME)})",
             "no UTC offset (add Z or +00:00)"),
            (f"({value} IS NULL OR (NOT {shaped}))",
             "expected an RFC 3339 timestamp like 2024-01-02T03:04:05Z"),
            # a date that does not exist, a leap second, an offset past +-18:00
            (f"({instant} IS NULL)", "not a valid date-time"),
            (f"({instant} < CAST({_lit(EARLIEST)} AS TIMESTAMP))", f"before {EARLIEST[:10]}"),
        ]  # fmt: skip
    # the text of a number, literal, object or array starts with - 0-9 [ { or is true/false;
    # only then is the JSON re-read to tell a string such as "13 DTU" from the number 13
    first = f"ascii({value})"
    looks_other = (
        f"(({first} >= 48 AND {first} <= 57) OR {first} IN (45, 91, 123)"
        f" OR {value} IN ('true', 'false'))"
    )
    not_a_string = f"({looks_other} AND (NOT {_is_json_string(name)}))"
    # a NUL can only come as the escape \u0000: the raw text is searched once per record
    nul = f"(_maybe_nul AND contains({value}, char(0)))"
    if kind == Kind.OPTIONAL_TEXT:
        return [
            (f"({value} IS NOT NULL AND {not_a_string})", "expected a string or null"),
            (f"({value} IS NOT NULL AND {nul})", "contains a NUL character"),
        ]
    # a number's text is never one of the allowed words ('openaq', an ingest mode): a field
    # with allowed values needs no string test
    if len(field.allowed) == 1:
        return [(f"({value} IS NULL OR {value} != {_lit(field.allowed[0])})",
                 f"expected {field.allowed[0]!r}")]  # fmt: skip
    if field.allowed:
        words = ", ".join(_lit(a) for a in field.allowed)
        return [(f"({value} IS NULL OR (NOT {value} IN ({words})))",
                 f"expected one of {', '.join(field.allowed)}")]  # fmt: skip
    checks = [
        (f"({value} IS NULL OR {not_a_string})", "expected a string"),
        (nul, "contains a NUL character"),
    ]
    if field.min_length:
        checks.append((f"(length({value}) < {field.min_length})",
                       "empty string" if field.min_length == 1
                       else f"shorter than {field.min_length} characters"))  # fmt: skip
    return checks


def _nothing_after_the_object() -> str:
    """True when nothing but JSON whitespace follows the object.

    Spark's JSON readers (``from_json``, ``json_object_keys``, the variant reader) all stop at
    the end of the first value and ignore what follows (``{...}{``, ``{...},``). A valid event
    holds scalars only, so its first ``}`` outside strings ends it: when the text's first
    ``}`` is its last non-space character, nothing follows; only otherwise (a ``}`` inside a
    name, or something after the object) are the strings blanked and the question asked again.
    """

    def first_brace_ends(text: str) -> str:
        return f"(locate('}}', {text}) = length(trim(TRAILING {_lit(_JSON_SPACE)} FROM {text})))"

    blanked = f"regexp_replace(_raw, {_lit(_STRING_LITERAL)}, '\"\"')"
    return f"({first_brace_ends('_raw')} OR {first_brace_ends(blanked)})"


def _impossible() -> list[tuple[str, str, str]]:
    """Events shaped right that cannot be true: (field, what is wrong, fails).

    A period ends after it starts, and not in the future: not later than
    :data:`FUTURE_TOLERANCE` after the event was ingested (``ingested_at``) or sent (the
    Kafka record's timestamp); nor is an event ingested after it was sent. Both references
    are in the record, so a replayed batch is judged as the first time.
    """
    start, end = "`_ts_period_start`", "`_ts_period_end`"
    ingested, sent = "`_ts_ingested_at`", "kafka_timestamp"
    tolerance = f"INTERVAL {FUTURE_TOLERANCE}"
    return [
        ("ingested_at", f"more than {FUTURE_TOLERANCE} after the Kafka record was sent",
         f"({ingested} > ({sent} + {tolerance}))"),
        ("period_start", "not before period_end", f"({start} >= {end})"),
        ("period_end", f"more than {FUTURE_TOLERANCE} after the event was ingested or sent",
         f"({end} > (least({ingested}, {sent}) + {tolerance}))"),
    ]  # fmt: skip


def _is_json_string(name: str) -> str:
    """True when the field's JSON value is a string (a second, one-field parse as variant)."""
    field = f"from_json(_raw, {_lit(f'`{name}` variant')}).`{name}`"
    return f"(try_cast({field} AS BINARY) IS NOT NULL)"


def _not_an_object() -> str:
    kind = "schema_of_variant(try_parse_json(_raw))"
    return _case(
        [
            ("(try_parse_json(_raw) IS NULL)", _lit(_NOT_JSON)),
            (f"startswith({kind}, 'ARRAY')", _lit("not a JSON object but an array")),
            (f"({kind} = 'STRING')", _lit("not a JSON object but a string")),
            (f"({kind} = 'BOOLEAN')", _lit("not a JSON object but true or false")),
            (f"({kind} = 'VOID')", _lit("not a JSON object but null")),
        ],
        _lit("not a JSON object but a number"),
    )


#: also what the reader says past its limits (nesting depth 1000, numbers of 1000 digits)
_NOT_JSON = "not JSON"


def _says(prefix: str, detail: str) -> str:
    return f"concat({_lit(prefix)}, {detail})"


def _got(name: str) -> str:
    """The field's JSON text as found (strings unquoted), for the reason."""
    return f"get_json_object(_raw, {_lit('$.' + name)})"


def _field(name: str) -> str:
    """The contract field ``name`` of the typed parse (column ``_e``)."""
    return f"`_e`.`{name}`"


def _all(*conditions: str) -> str:
    return "(" + " AND ".join(conditions) + ")"


def _case(whens: list[tuple[str, str]], otherwise: str) -> str:
    return "(CASE " + " ".join(f"WHEN {c} THEN {v}" for c, v in whens) + f" ELSE {otherwise} END)"


def _lit(text: str) -> str:
    """A Spark SQL string literal of ``text``: backslash and quote escaped, so the parser's
    unescaping gives the text back (regular expressions included)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _number(value: float) -> str:
    """A SQL number of the contract's bound: a double literal for a float (as Spark's lit)."""
    return f"{value!r}D" if isinstance(value, float) else str(int(value))


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
