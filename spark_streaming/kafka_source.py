"""``kafka_py``: a Kafka streaming source for Spark written as a Python Data Source.

Why it exists: Spark's built-in ``format("kafka")`` needs connector jars that cannot be
downloaded on the machines this project runs on, and the embedded broker (Tansu) reports a
wrong end offset in ListOffsets. This source has the built-in source's output columns and its
main options, reads partitions by explicit offset ranges (assign + seek, no consumer group,
no committed offsets) and takes the true end of each partition from
:func:`aqi.topics.end_offsets`, so no tail of a partition is ever skipped.

Exactly-once input: Spark writes each micro-batch's ``(start, end)`` offsets to its checkpoint
before running it; :meth:`KafkaPyStreamReader.partitions` turns the pair into the same ranges
every time, and :func:`read_range` returns every record of a range or fails.

Offsets (JSON in the checkpoint)::

    {"topic": "t",
     "partitions": {"0": {"offset": 123, "fp": "1718000000000:2851932312"},
                    "1": {"offset": 17, "fp": "...", "new_from": 0},
                    "2": {"offset": 40, "fp": "...", "reset_from": 0}}}

``offset`` is the next offset to read; ``fp`` is the fingerprint of the record just before it
(:func:`aqi.topics.record_fingerprint`; empty at the partition start). ``fp`` is how data loss
is detected when the broker lost its in-memory log or the topic was recreated and refilled
past the saved offset: the offset still exists but holds another record. In an END offset,
``reset_from`` (data loss accepted with ``failOnDataLoss=false``) or ``new_from`` (a partition
not in the start offset) says where this batch reads that partition from instead of the start
offset.

Options (case-insensitive): ``kafka.bootstrap.servers`` and ``subscribe`` (one topic) are
required; ``startingOffsets`` = ``earliest`` (default), ``latest`` or JSON
``{"topic":{"0":23,"1":-2}}`` (-2 earliest, -1 latest, unnamed partitions earliest);
``maxOffsetsPerTrigger`` (records per micro-batch, shared by backlog); ``failOnDataLoss``
(``true``); ``pollTimeoutMs`` (10000: how long a read may make no progress before it fails).

Known limits: one topic per query (no ``assign``/``subscribePattern``);
``minOffsetsPerTrigger``, ``maxTriggerDelay`` and ``endingOffsets`` are not implemented.
(Spark 4.3 journals the resolved initial offset as batch 0 even when it is empty, so
``latest`` is not re-resolved when a query restarts.)

Usage::

    register(spark)
    df = (spark.readStream.format("kafka_py")
          .option("kafka.bootstrap.servers", "127.0.0.1:9092")
          .option("subscribe", "openaq.measurements")
          .load())
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import (
    ReadAllAvailable,
    ReadLimit,
    ReadMaxRows,
    SupportsTriggerAvailableNow,
)
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from aqi.topics import beginning_offsets, end_offsets, fingerprints

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

__all__ = [
    "SCHEMA",
    "KafkaDataLossError",
    "KafkaPartitionRange",
    "KafkaPyDataSource",
    "KafkaPyOptions",
    "KafkaPyStreamReader",
    "KafkaReadTimeoutError",
    "read_range",
    "register",
    "split_limit",
]

log = logging.getLogger("spark_streaming.kafka_source")

#: The columns of Spark's built-in kafka source, in its order, all nullable like there.
SCHEMA = StructType(
    [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("timestamp", TimestampType()),
        StructField("timestampType", IntegerType()),
    ]
)

_EARLIEST = -2  # Spark's JSON startingOffsets markers
_LATEST = -1
_ARROW_BATCH_ROWS = 10_000


class KafkaDataLossError(RuntimeError):
    """Records the query expected are gone (broker restart, topic recreated, retention)."""


class KafkaReadTimeoutError(RuntimeError):
    """A planned offset range could not be read completely within ``pollTimeoutMs``."""


@dataclass(frozen=True)
class KafkaPyOptions:
    """The source's options, parsed and validated once (keys are case-insensitive)."""

    bootstrap_servers: str
    topic: str
    starting_offsets: str | dict[int, int]  # "earliest", "latest" or {partition: offset}
    max_offsets_per_trigger: int | None
    fail_on_data_loss: bool
    poll_timeout_ms: int

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> KafkaPyOptions:
        """Validate ``options``; raise ``ValueError`` naming the option that is wrong."""
        opts = {str(k).lower(): str(v) for k, v in options.items()}
        for unsupported in ("assign", "subscribepattern"):
            if unsupported in opts:
                raise ValueError(
                    f"kafka_py: option {unsupported!r} is not supported; use subscribe"
                )
        bootstrap = opts.get("kafka.bootstrap.servers", "").strip()
        if not bootstrap:
            raise ValueError("kafka_py: option 'kafka.bootstrap.servers' is required")
        topic = opts.get("subscribe", "").strip()
        if not topic:
            raise ValueError("kafka_py: option 'subscribe' (one topic) is required")
        if "," in topic:
            raise ValueError(f"kafka_py: 'subscribe' takes one topic, got {topic!r}")
        return cls(
            bootstrap_servers=bootstrap,
            topic=topic,
            starting_offsets=_parse_starting_offsets(
                opts.get("startingoffsets", "earliest"), topic
            ),
            max_offsets_per_trigger=_parse_positive(opts, "maxoffsetspertrigger", None),
            fail_on_data_loss=_parse_bool(opts, "failondataloss", True),
            poll_timeout_ms=_parse_positive(opts, "polltimeoutms", 10_000) or 10_000,
        )


def _parse_positive(opts: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = opts.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"kafka_py: option {name!r} must be a positive integer, got {raw!r}")
    if value <= 0:
        raise ValueError(f"kafka_py: option {name!r} must be a positive integer, got {raw!r}")
    return value


def _parse_bool(opts: Mapping[str, str], name: str, default: bool) -> bool:
    raw = opts.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise ValueError(f"kafka_py: option {name!r} must be true or false, got {raw!r}")


def _parse_starting_offsets(raw: str, topic: str) -> str | dict[int, int]:
    text = raw.strip()
    if text.lower() in ("earliest", "latest"):
        return text.lower()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return _parse_offsets_json(parsed, topic)
    raise ValueError(
        "kafka_py: startingOffsets must be earliest, latest or JSON like "
        f'{{"{topic}":{{"0":23,"1":-2}}}}, got {raw!r}'
    )


def _parse_offsets_json(parsed: dict[str, Any], topic: str) -> dict[int, int]:
    others = set(parsed) - {topic}
    if others:
        raise ValueError(
            f"kafka_py: startingOffsets names topics {sorted(others)} but only {topic!r} "
            "is subscribed"
        )
    result: dict[int, int] = {}
    for part, offset in (parsed.get(topic) or {}).items():
        if not isinstance(offset, int) or offset < _EARLIEST:
            raise ValueError(
                f"kafka_py: startingOffsets for {topic}[{part}] must be an offset, "
                f"-2 (earliest) or -1 (latest), got {offset!r}"
            )
        result[int(part)] = offset
    return result


@dataclass(frozen=True)
class KafkaPartitionRange(InputPartition):
    """One Spark task: the records ``[from_offset, until_offset)`` of one Kafka partition.

    It carries everything :func:`read_range` needs, so that executors stay stateless.
    """

    topic: str
    partition: int
    from_offset: int
    until_offset: int
    bootstrap_servers: str
    poll_timeout_ms: int


def split_limit(limit: int, backlog: Mapping[int, int]) -> dict[int, int]:
    """Share ``limit`` records among partitions in proportion to their ``backlog``.

    Why not Spark's rounding: the total must not exceed ``limit``, and a partition with a
    small backlog must not starve behind a big one, so every partition with backlog gets at
    least one record whenever ``limit`` allows; the rest goes by largest remainder.
    Returns ``{partition: records to take}`` (only partitions that take some).
    """
    active = {p: n for p, n in backlog.items() if n > 0}
    if sum(active.values()) <= limit:
        return dict(active)
    order = sorted(active, key=lambda p: (-active[p], p))
    if limit < len(active):
        return {p: 1 for p in order[:limit]}
    take = {p: 1 for p in active}
    rest = limit - len(active)
    capacity = {p: n - 1 for p, n in active.items()}
    total = sum(capacity.values())
    shares = {p: rest * c / total for p, c in capacity.items()}
    for p, share in shares.items():
        take[p] += int(share)
    left = limit - sum(take.values())
    for p in sorted(active, key=lambda p: (-(shares[p] - int(shares[p])), p)):
        if left <= 0:
            break
        if take[p] < active[p]:
            take[p] += 1
            left -= 1
    return take


class KafkaPyStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Plans micro-batches on the driver; :meth:`read` runs on executors.

    Spark pickles this object to the executors, so it holds no client: every broker call
    opens a short-lived consumer and closes it.
    """

    def __init__(self, options: KafkaPyOptions) -> None:
        self.options = options
        self._target: dict[int, int] | None = None  # availableNow target
        self._last_ends: dict[int, int] | None = None  # for reportLatestOffset

    # -- offsets -------------------------------------------------------------------------

    def initialOffset(self) -> dict:
        """Resolve ``startingOffsets`` against the broker once, when the query is new.

        Resolving now (not per batch) is what makes ``latest`` mean "records produced after
        the query started". Partitions that ``startingOffsets`` does not name start at their
        earliest offset, so nothing is skipped by omission.
        """
        o = self.options
        ends = end_offsets(o.bootstrap_servers, o.topic)
        begins = beginning_offsets(o.bootstrap_servers, o.topic, ends) if ends else {}
        chosen: dict[int, int] = {}
        for p in ends:
            if o.starting_offsets == "earliest":
                chosen[p] = begins[p]
            elif o.starting_offsets == "latest":
                chosen[p] = ends[p]
            else:
                wanted = o.starting_offsets.get(p, _EARLIEST)
                chosen[p] = {_EARLIEST: begins[p], _LATEST: ends[p]}.get(wanted, wanted)
        if isinstance(o.starting_offsets, dict):
            unknown = sorted(set(o.starting_offsets) - set(ends))
            if unknown:
                raise ValueError(
                    f"kafka_py: startingOffsets names partitions {unknown} that {o.topic!r} "
                    f"does not have (it has {sorted(ends)})"
                )
        # offsets outside [begin, end] are left as given: latestOffset reports them as data loss
        prints = self._fingerprints({p: c for p, c in chosen.items() if c > begins[p]})
        offset = self._offset({p: (c, prints.get(p) or "") for p, c in chosen.items()})
        log.info("kafka_py %s: initial offset %s", o.topic, offset)
        return offset

    def prepareForTriggerAvailableNow(self) -> None:
        """Record the true ends now; later batches of this run never read past them."""
        self._target = end_offsets(self.options.bootstrap_servers, self.options.topic)
        log.info("kafka_py %s: availableNow target %s", self.options.topic, self._target)

    def getDefaultReadLimit(self) -> ReadLimit:
        """``maxOffsetsPerTrigger`` as Spark's read limit, or no limit."""
        n = self.options.max_offsets_per_trigger
        return ReadMaxRows(n) if n else ReadAllAvailable()

    def reportLatestOffset(self) -> dict | None:
        """The true ends seen by the last :meth:`latestOffset` (no extra broker call)."""
        if self._last_ends is None:
            return None
        return {
            "topic": self.options.topic,
            "partitions": {str(p): {"offset": e} for p, e in sorted(self._last_ends.items())},
        }

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        """The end of the next micro-batch: true ends, capped by ``limit`` and the target.

        Before planning from ``start`` it proves that ``start`` still points into the same
        log (see :meth:`_check_start`); returns ``start`` itself when there is nothing new.
        """
        o = self.options
        starts = _entries(start, o.topic)
        ends = end_offsets(o.bootstrap_servers, o.topic)
        begins = beginning_offsets(o.bootstrap_servers, o.topic, ends) if ends else {}
        self._last_ends = dict(ends)

        froms, resets = self._check_start(starts, begins, ends)
        new = {p: begins[p] for p in ends if p not in starts}
        froms.update(new)

        caps = dict(ends)
        if self._target is not None:  # availableNow: behave as if nothing came after
            caps = {p: min(e, self._target[p]) for p, e in ends.items() if p in self._target}
        backlog = {p: max(0, caps.get(p, f) - f) for p, f in froms.items()}
        if isinstance(limit, ReadAllAvailable):
            take = {p: n for p, n in backlog.items() if n > 0}
        elif isinstance(limit, ReadMaxRows):
            take = split_limit(limit.max_rows, backlog)
        else:
            raise TypeError(f"kafka_py: unsupported read limit {limit!r}")

        until = {p: f + take.get(p, 0) for p, f in froms.items()}
        # a new partition joins the offset only once it has something to read
        until = {p: u for p, u in until.items() if p not in new or u > new[p]}
        changed = resets.keys() | {p for p in until if p in new}
        changed |= {p for p, u in until.items() if p in starts and u != starts[p]["offset"]}
        if not changed and until.keys() == starts.keys():
            return start

        prints = self._fingerprints({p: until[p] for p in changed if until[p] > begins[p]})
        entries: dict[int, dict[str, Any]] = {}
        for p, u in sorted(until.items()):
            if p in changed:
                entry: dict[str, Any] = {"offset": u, "fp": prints.get(p) or ""}
                if p in resets:
                    entry["reset_from"] = resets[p]
                elif p in new:
                    entry["new_from"] = new[p]
            else:
                entry = {"offset": u, "fp": starts[p].get("fp", "")}
            entries[p] = entry
        end = {"topic": o.topic, "partitions": {str(p): e for p, e in entries.items()}}
        log.debug("kafka_py %s: next batch %s -> %s (limit %r)", o.topic, start, end, limit)
        return end

    def _check_start(
        self,
        starts: dict[int, dict[str, Any]],
        begins: dict[int, int],
        ends: dict[int, int],
    ) -> tuple[dict[int, int], dict[int, int]]:
        """Where each known partition continues from, and which ones had to be reset.

        A saved offset is trusted only if it lies within [beginning, end] and the record just
        before it is still the one that was there when the offset was saved. Otherwise
        records were lost: fail (``failOnDataLoss=true``) or restart the partition from its
        earliest offset, never jump over records that exist.
        """
        checkable = {
            p: e["offset"]
            for p, e in starts.items()
            if p in ends and begins[p] < e["offset"] <= ends[p]
        }
        actual = self._fingerprints(checkable)
        froms: dict[int, int] = {}
        problems: dict[int, str] = {}
        for p, entry in sorted(starts.items()):
            offset = entry["offset"]
            if p not in ends:
                problems[p] = f"start offset {offset}: the partition no longer exists"
            elif offset > ends[p]:
                problems[p] = (
                    f"start offset {offset} is beyond the partition's end offset {ends[p]} "
                    "(the broker lost its log, or the topic was recreated)"
                )
            elif offset < begins[p]:
                problems[p] = (
                    f"start offset {offset} is before the earliest available offset "
                    f"{begins[p]} (records were deleted before they were read)"
                )
            elif p in checkable and (actual.get(p) or "") != entry.get("fp", ""):
                problems[p] = (
                    f"the record before start offset {offset} is not the one read before "
                    f"(fingerprint {entry.get('fp', '')!r}, now {actual.get(p) or ''!r}): "
                    "the topic was recreated and refilled past the old offset"
                )
            else:
                froms[p] = offset
        if problems:
            self._data_loss(problems, begins)
        resets = {p: begins[p] for p in problems if p in ends}
        froms.update(resets)
        return froms, resets

    def _data_loss(self, problems: dict[int, str], begins: dict[int, int]) -> None:
        """Log every lost partition at WARNING, then fail or accept (``failOnDataLoss``)."""
        o = self.options
        for p, problem in problems.items():
            if o.fail_on_data_loss:
                action = "failing the query (failOnDataLoss=true)"
            elif p in begins:
                action = f"failOnDataLoss=false: resuming from earliest offset {begins[p]}"
            else:
                action = "failOnDataLoss=false: partition dropped until it exists again"
            log.warning(
                "kafka_py DATA LOSS on topic %r partition %s: %s; %s", o.topic, p, problem, action
            )
        if o.fail_on_data_loss:
            details = "; ".join(f"partition {p}: {problem}" for p, problem in problems.items())
            earliest = {p: begins[p] for p in problems if p in begins}
            raise KafkaDataLossError(
                f"Kafka data loss on topic {o.topic!r}: {details}. Records this query had not "
                "read yet may be gone, and its saved position no longer matches the log. To "
                "accept the loss and resume from the earliest available offsets "
                f"{earliest}, restart the query with option failOnDataLoss=false; to start "
                "over, use a new checkpoint location."
            )

    def _fingerprints(self, offsets: dict[int, int]) -> dict[int, str | None]:
        if not offsets:
            return {}
        return fingerprints(self.options.bootstrap_servers, self.options.topic, offsets)

    def _offset(self, entries: Mapping[int, tuple[int, str]]) -> dict:
        parts = {str(p): {"offset": off, "fp": fp} for p, (off, fp) in sorted(entries.items())}
        return {"topic": self.options.topic, "partitions": parts}

    # -- planning and reading --------------------------------------------------------------

    def partitions(self, start: dict, end: dict) -> list[KafkaPartitionRange]:
        """One task per Kafka partition whose range ``[from, end)`` is not empty.

        ``from`` is the start offset unless the end entry says ``reset_from``/``new_from``;
        this uses only the two offsets, so a batch replayed from the checkpoint after a
        crash reads exactly the same records.
        """
        o = self.options
        starts = _entries(start, o.topic)
        ranges = []
        for p, entry in sorted(_entries(end, o.topic).items()):
            if "reset_from" in entry:
                begin = entry["reset_from"]
            elif "new_from" in entry:
                begin = entry["new_from"]
            elif p in starts:
                begin = starts[p]["offset"]
            else:
                raise ValueError(f"kafka_py: end offset names unknown partition {p}: {end}")
            until = entry["offset"]
            if until < begin:
                raise ValueError(f"kafka_py: {o.topic}[{p}] ends before it starts: {start} {end}")
            if until > begin:
                ranges.append(
                    KafkaPartitionRange(
                        o.topic, p, begin, until, o.bootstrap_servers, o.poll_timeout_ms
                    )
                )
        log.debug(
            "kafka_py %s: ranges %s",
            o.topic, ", ".join(f"[{r.partition}] {r.from_offset}..{r.until_offset}" for r in ranges),
        )  # fmt: skip
        return ranges

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        """Executor side: every record of the range, or an error (see :func:`read_range`)."""
        if not isinstance(partition, KafkaPartitionRange):
            raise TypeError(f"kafka_py: unexpected input partition {partition!r}")
        return read_range(partition)

    def commit(self, end: dict) -> None:
        """Nothing to do: Spark's checkpoint is the only record of progress.

        Committing to a consumer group would be a second, weaker copy (it can run ahead of
        or behind the checkpoint) and joining a group costs ~23 s on the embedded broker.
        """

    def stop(self) -> None:
        """Drop cached state; no client outlives the call that opened it."""
        self._target = None
        self._last_ends = None


def _entries(offset: dict, topic: str) -> dict[int, dict[str, Any]]:
    if offset.get("topic") != topic:
        raise ValueError(
            f"kafka_py: the checkpoint's offset is for topic {offset.get('topic')!r}, but the "
            f"query subscribes to {topic!r}; use a new checkpoint location"
        )
    return {int(p): e for p, e in offset.get("partitions", {}).items()}


def read_range(part: KafkaPartitionRange) -> Iterator[pa.RecordBatch]:
    """All records of ``[from_offset, until_offset)`` as Arrow batches in Spark's schema.

    Position-based: it stops when the consumer's position reaches ``until_offset``, so offsets
    that hold no data record (transaction markers) cannot make it wait forever. If the
    position stops advancing for ``poll_timeout_ms`` it raises instead of returning fewer
    records than planned. Arrow batches instead of tuples keep the Python work per record low.
    """
    import pyarrow as pa
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import OffsetOutOfRangeError

    arrow_schema = pa.schema(
        [
            pa.field("key", pa.binary()),
            pa.field("value", pa.binary()),
            pa.field("topic", pa.string()),
            pa.field("partition", pa.int32()),
            pa.field("offset", pa.int64()),
            pa.field("timestamp", pa.timestamp("us", tz="UTC")),
            pa.field("timestampType", pa.int32()),
        ]
    )
    tp = TopicPartition(part.topic, part.partition)
    where = f"{part.topic}[{part.partition}]"
    consumer = KafkaConsumer(
        bootstrap_servers=part.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",  # an offset out of range is data loss, not a reason to jump
        max_poll_records=_ARROW_BATCH_ROWS,
    )
    cols: dict[str, list] = {n: [] for n in ("key", "value", "offset", "ts", "tstype")}

    def flush() -> pa.RecordBatch:
        n = len(cols["offset"])
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array(cols["key"], pa.binary()),
                pa.array(cols["value"], pa.binary()),
                pa.array([part.topic] * n, pa.string()),
                pa.array([part.partition] * n, pa.int32()),
                pa.array(cols["offset"], pa.int64()),
                pa.array(cols["ts"], pa.timestamp("us", tz="UTC")),
                pa.array(cols["tstype"], pa.int32()),
            ],
            schema=arrow_schema,
        )
        for values in cols.values():
            values.clear()
        return batch

    try:
        consumer.assign([tp])
        consumer.seek(tp, part.from_offset)
        position = part.from_offset
        progressed = time.monotonic()
        while position < part.until_offset:
            try:
                polled = consumer.poll(timeout_ms=min(1000, part.poll_timeout_ms))
            except OffsetOutOfRangeError:
                raise KafkaDataLossError(
                    f"Kafka data loss reading {where}: offset {position} is out of range; "
                    f"offsets {position}..{part.until_offset - 1} planned for this batch are "
                    "gone (broker restart or topic recreated during the batch)"
                ) from None
            for record in polled.get(tp, ()):
                if part.from_offset <= record.offset < part.until_offset:
                    cols["key"].append(record.key)
                    cols["value"].append(record.value)
                    cols["offset"].append(record.offset)
                    cols["ts"].append(record.timestamp * 1000 if record.timestamp >= 0 else None)
                    cols["tstype"].append(record.timestamp_type)
            now = time.monotonic()
            current = consumer.position(tp)
            if current > position:
                position, progressed = current, now
            elif now - progressed > part.poll_timeout_ms / 1000:
                raise KafkaReadTimeoutError(
                    f"kafka_py: reading {where} stalled at offset {position} for "
                    f"{part.poll_timeout_ms} ms; offsets {position}..{part.until_offset - 1} of "
                    f"the planned range [{part.from_offset}, {part.until_offset}) are still "
                    "missing (broker down or records lost; raise pollTimeoutMs if it is slow)"
                )
            if len(cols["offset"]) >= _ARROW_BATCH_ROWS:
                yield flush()
        if cols["offset"]:
            yield flush()
    finally:
        consumer.close()


class KafkaPyDataSource(DataSource):
    """``spark.readStream.format("kafka_py")``: see the module docstring for the options."""

    @classmethod
    def name(cls) -> str:
        return "kafka_py"

    def schema(self) -> StructType:
        """Spark's kafka columns; options are validated here so mistakes fail at ``load()``."""
        KafkaPyOptions.parse(self.options)
        return SCHEMA

    def streamReader(self, schema: StructType) -> KafkaPyStreamReader:
        return KafkaPyStreamReader(KafkaPyOptions.parse(self.options))


def register(spark: SparkSession) -> None:
    """Make ``format("kafka_py")`` available in ``spark`` (idempotent)."""
    spark.dataSource.register(KafkaPyDataSource)
