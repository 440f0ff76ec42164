"""``aqi stream``: Kafka -> parse -> Bronze Parquet + raw PostgreSQL, exactly once.

The source is Spark's own Kafka source (``format("kafka")``; its connector jars come from
``jvm/spark/pom.xml`` and are loaded from disk by :mod:`spark_streaming.session`), so
``startingOffsets``, ``maxOffsetsPerTrigger``, ``failOnDataLoss`` and ``availableNow`` are
Spark's own. Records are parsed in the JVM (:func:`spark_streaming.parse.parse_records`), then
each micro-batch is written by :func:`handle_batch` to idempotent sinks (see
:mod:`spark_streaming.sinks`), so a batch Spark replays after a crash changes nothing.

Public surface: :class:`StreamOptions`, :func:`run_stream`, :func:`handle_batch`,
:func:`checkpoint_lock`, :func:`stream_is_running`, :func:`checkpoint_is_caught_up`,
:func:`checkpoint_offsets`, :func:`choose_jit`, :func:`check_starting_offsets`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession

from aqi.core.config import (
    STREAM_JIT_MODES,
    STREAM_MAX_OFFSETS_PER_TRIGGER,
    STREAM_MAX_RECORDS_PER_TASK,
    STREAM_QUICK_JIT_MAX_BACKLOG,
    STREAM_TRIGGER_SECONDS,
)
from aqi.core.errors import AqiError
from aqi.core.topics import KafkaUnavailable, end_offsets
from spark_streaming.parse import parse_records
from spark_streaming.sinks import SUMMARY_SCHEMA, BatchMetrics, PostgresSink, write_partition

__all__ = [
    "QUERY_NAME",
    "StreamOptions",
    "check_starting_offsets",
    "checkpoint_is_caught_up",
    "checkpoint_lock",
    "checkpoint_offsets",
    "choose_jit",
    "handle_batch",
    "run_stream",
    "stream_is_running",
]

log = logging.getLogger(__name__)
QUERY_NAME = "openaq_raw"
SOURCE = "kafka"


@dataclass(frozen=True)
class StreamOptions:
    """Everything a run of the stream needs (built from settings + CLI options)."""

    bootstrap_servers: str
    topic: str
    database_url: str
    bronze_path: str
    checkpoint_dir: Path
    master: str | None = None
    available_now: bool = False
    trigger_seconds: float = STREAM_TRIGGER_SECONDS
    max_offsets_per_trigger: int | None = STREAM_MAX_OFFSETS_PER_TRIGGER
    starting_offsets: str = "earliest"
    fail_on_data_loss: bool = True
    query_name: str = QUERY_NAME
    #: Spark's own log (its Java traces), instead of the terminal; None = the terminal
    spark_log: Path | None = None
    #: the driver JVM's JIT, one of ``STREAM_JIT_MODES`` (see :func:`choose_jit`)
    jit: str = "auto"


def run_stream(options: StreamOptions, echo: Callable[[str], None] = print) -> int:
    """Run until drained (``available_now``) or until SIGTERM/SIGINT. Returns batches run."""
    if shutil.which("java") is None and not _java_home():
        raise AqiError(
            "Spark needs Java 17+: install it (e.g. apt-get install openjdk-17-jre-headless)"
        )
    check_starting_offsets(options.starting_offsets, options.topic)
    with checkpoint_lock(options.checkpoint_dir):
        _refuse_python_source_checkpoint(options.checkpoint_dir, options.bronze_path)
        return _run_stream(options, echo)


def check_starting_offsets(value: str, topic: str) -> None:
    """``earliest``, ``latest`` or Spark's JSON (``{"topic": {"0": 42, ...}}``), else AqiError.

    Checked before Spark starts so that a typo is one line, not a Spark stack trace.
    """
    if value in ("earliest", "latest"):
        return
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    ok = (
        isinstance(parsed, dict)
        and set(parsed) == {topic}
        and isinstance(parsed[topic], dict)
        and all(
            str(p).isdigit() and isinstance(o, int) and not isinstance(o, bool) and o >= -2
            for p, o in parsed[topic].items()
        )
    )
    if not ok:
        raise AqiError(
            f"--starting-offsets: expected earliest, latest or JSON like "
            f'\'{{"{topic}": {{"0": 0, "1": 42}}}}\' (-2 = earliest, -1 = latest), got {value!r}'
        )


@contextmanager
def checkpoint_lock(checkpoint_dir: Path) -> Iterator[None]:
    """Hold the checkpoint for this process: two streams on one checkpoint corrupt it.

    Spark only notices concurrent use within one session, so ``aqi stream`` takes an flock
    next to the checkpoint; a second one (a long-running stream plus the DAG's drain, say)
    fails at once with a message instead of racing on the offset log.
    """
    path = _lock_path(checkpoint_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise AqiError(
                f"another `aqi stream` ({holder}) is using the checkpoint {checkpoint_dir}; "
                "stop it first, or let it do the streaming"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stream_is_running(checkpoint_dir: Path) -> bool:
    """True while some process holds the checkpoint (a long-running ``aqi stream``)."""
    path = _lock_path(checkpoint_dir)
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def checkpoint_is_caught_up(checkpoint_dir: Path, topic: str, ends: dict[int, int]) -> bool:
    """True when the checkpoint's last batch is committed and ended at ``ends`` (the topic's
    end offsets): a stream started now would read nothing, so it need not start at all.

    Anything unexpected (no batch yet, an uncommitted batch to replay, other partitions, an
    unreadable file) answers False, and the caller runs the stream, which knows what to do.
    """
    committed = checkpoint_offsets(checkpoint_dir, topic)
    return bool(ends) and committed == {int(p): int(o) for p, o in ends.items()}


def checkpoint_offsets(checkpoint_dir: Path, topic: str) -> dict[int, int] | None:
    """Where the checkpoint's last batch ended on ``topic`` (partition -> offset), when that
    batch is committed; None when there is no batch, the last one is not committed (it will
    be replayed) or a file cannot be read.

    Read from Spark's own checkpoint log: ``offsets/<n>`` holds a version line, the batch
    metadata and then one JSON object per source (``{topic: {partition: end offset}}``), and
    ``commits/<n>`` exists once batch ``n`` was written to the sinks.
    """
    offsets_dir = checkpoint_dir / "offsets"
    try:
        batches = [int(p.name) for p in offsets_dir.iterdir() if p.name.isdigit()]
    except OSError:
        return None
    if not batches:
        return None
    last = max(batches)
    if not (checkpoint_dir / "commits" / str(last)).is_file():
        return None
    try:
        lines = (offsets_dir / str(last)).read_text().splitlines()
        done = {}
        for line in lines[2:]:
            done.update(json.loads(line) or {})
        return {int(p): int(o) for p, o in (done.get(topic) or {}).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def choose_jit(options: StreamOptions, ends: dict[int, int] | None = None) -> tuple[bool, str]:
    """Whether the driver JVM runs the quick JIT (C1 only), and why, in a few words.

    A JVM's optimising compiler (C2) pays for itself on a long run and costs most of a short
    one: a drain of 5,000 records took ~38 s of CPU with it and ~24 s without it, as fast
    or faster up to ~120k records, while at 600k the C2 code was ~25% faster
    (docs/benchmarks.md, "Driver JIT"). So ``auto`` gives an ``--available-now`` drain of at
    most STREAM_QUICK_JIT_MAX_BACKLOG records the quick JIT, and a continuous stream or a
    bigger drain the full one. The backlog counts from the checkpoint's last committed batch
    (from offset 0 without one: at most an overestimate) to ``ends``, the topic's end offsets
    (asked from the broker when not given; unknown means the full JIT).
    """
    if options.jit not in STREAM_JIT_MODES:
        modes = ", ".join(STREAM_JIT_MODES)
        raise AqiError(f"--jit: expected one of {modes}, got {options.jit!r}")
    if options.jit != "auto":
        return options.jit == "quick", f"--jit {options.jit}"
    if not options.available_now:
        return False, "a continuous stream"
    if ends is None:
        try:
            ends = end_offsets(options.bootstrap_servers, options.topic)
        except KafkaUnavailable:
            return False, "the backlog is unknown"
    done = checkpoint_offsets(options.checkpoint_dir, options.topic) or {}
    backlog = sum(max(0, end - done.get(p, 0)) for p, end in ends.items())
    quick = backlog <= STREAM_QUICK_JIT_MAX_BACKLOG
    sign = "<=" if quick else ">"
    return quick, f"a drain of {backlog:,} records ({sign} {STREAM_QUICK_JIT_MAX_BACKLOG:,})"


def _topic_ends(options: StreamOptions) -> dict[int, int] | None:
    """The topic's end offsets, or None when the broker does not answer (the stream then
    starts and Spark's source reports it)."""
    try:
        return end_offsets(options.bootstrap_servers, options.topic)
    except KafkaUnavailable:
        return None


def _lock_path(checkpoint_dir: Path) -> Path:
    return checkpoint_dir.with_name(checkpoint_dir.name + ".lock")


def _run_stream(options: StreamOptions, echo: Callable[[str], None]) -> int:
    from spark_streaming.session import get_spark

    ends = _topic_ends(options) if options.available_now else None
    if ends is not None and checkpoint_is_caught_up(options.checkpoint_dir, options.topic, ends):
        # what Spark would find, without its start (~15 s of CPU): no batch to run
        echo(f"stream: raw is up to date with {options.topic} (offsets {ends}); nothing to drain")
        return 0
    quick_jit, why = choose_jit(options, ends)
    spark = get_spark(options.master, log_file=options.spark_log, quick_jit=quick_jit)
    sink = PostgresSink(options.database_url)
    batches = {"count": 0}
    try:
        frame = _kafka_frame(spark, options)
        echo(f"stream: source {SOURCE} on {options.bootstrap_servers} topic {options.topic}")
        echo(f"stream: driver JIT {'quick (C1 only)' if quick_jit else 'full'}: {why}")
        parsed = parse_records(frame)

        def on_batch(batch_df: DataFrame, batch_id: int) -> None:
            metrics = handle_batch(batch_df, batch_id, options=options, sink=sink)
            batches["count"] += 1
            echo(
                f"stream: batch {batch_id}: read {metrics.rows_read}, "
                f"quarantined {metrics.rows_quarantined}, inserted {metrics.rows_inserted}, "
                f"{metrics.duration_ms / 1000:.1f} s, lag {metrics.lag_records}"
            )

        writer = (
            parsed.writeStream.queryName(options.query_name)
            .foreachBatch(on_batch)
            .option("checkpointLocation", str(options.checkpoint_dir))
        )
        if options.available_now:
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=f"{options.trigger_seconds} seconds")
        query = writer.start()
        stopping = _stop_on_signals(query, echo)
        try:
            query.awaitTermination()
        except StreamingQueryException as exc:
            where = f" (Spark's log: {options.spark_log})" if options.spark_log else ""
            raise AqiError(_one_line(exc) + where) from None
        # awaitTermination returns once the stream thread ends, while query.stop() may still
        # be cancelling its jobs; stopping Spark under it makes that call raise.
        for thread in stopping:
            thread.join(timeout=60)
        return batches["count"]
    finally:
        sink.close()
        spark.stop()


def handle_batch(
    batch_df: DataFrame,
    batch_id: int,
    *,
    options: StreamOptions,
    sink: PostgresSink,
) -> BatchMetrics:
    """Write one parsed micro-batch to Bronze and PostgreSQL; record its metrics.

    One Spark job: each task reads its Kafka range, parses it in the JVM and hands the rows
    to :func:`spark_streaming.sinks.write_partition` (Bronze file + COPY into raw, in one
    transaction per task); the driver only adds up the tasks' summaries and records the
    batch's metrics row.
    """
    started, clock = datetime.now(UTC), time.monotonic()
    summary = batch_df.mapInArrow(
        write_partition(options.database_url, options.bronze_path, batch_id), SUMMARY_SCHEMA
    ).collect()
    rows = sum(r["rows"] for r in summary)
    valid = sum(r["valid"] for r in summary)
    batch_ends = _batch_end_offsets(
        summary, sink.previous_end_offsets(options.query_name, batch_id)
    )
    metrics = BatchMetrics(
        query_name=options.query_name,
        batch_id=batch_id,
        source=SOURCE,
        rows_read=rows,
        rows_valid=valid,
        rows_quarantined=rows - valid,
        rows_inserted=sum(r["inserted"] for r in summary),
        rows_quarantine_inserted=sum(r["quarantine_inserted"] for r in summary),
        duration_ms=int((time.monotonic() - clock) * 1000),
        lag_records=_lag(options, batch_ends),
        end_offsets=batch_ends,
        started_at=started,
        finished_at=datetime.now(UTC),
    )
    sink.record(metrics)
    return metrics


def _kafka_frame(spark: SparkSession, options: StreamOptions) -> DataFrame:
    """The topic as Spark's Kafka source reads it (its own options, its own offsets)."""
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", options.bootstrap_servers)
        .option("kafka.client.id", f"aqi-stream-{options.query_name}")
        .option("subscribe", options.topic)
        .option("startingOffsets", options.starting_offsets)
        .option("failOnDataLoss", str(options.fail_on_data_loss).lower())
        .option("maxRecordsPerPartition", str(STREAM_MAX_RECORDS_PER_TASK))
    )
    if options.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(options.max_offsets_per_trigger))
    return reader.load()


def _one_line(exc: StreamingQueryException) -> str:
    """What stopped the query, in one line, with the way on when there is a known one."""
    text = str(exc)
    if "failOnDataLoss" in text:
        lines = [line.strip() for line in text.splitlines()]
        detail = next((line for line in lines if line.startswith("Reason:")), None) or next(
            (line for line in lines if "offset was changed" in line), "no detail"
        )
        return (
            f"the stream stopped because records may have been lost ({detail[:200]}): the "
            "topic was recreated or records were deleted before they were read. To go on from "
            "what the topic holds now, run aqi stream --no-fail-on-data-loss"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    cause = next((line for line in reversed(lines) if "Error:" in line or "Exception:" in line),
                 lines[0] if lines else type(exc).__name__)  # fmt: skip
    return f"the stream stopped: {cause[:300]}"


def _refuse_python_source_checkpoint(checkpoint_dir: Path, bronze_path: str) -> None:
    """A checkpoint written by the retired Python source ``kafka_py`` cannot be resumed.

    Its offsets (``{"topic": ..., "partitions": {...}}``, record fingerprints) are not Spark's
    and they counted a log that lived in the old in-memory broker: say what to do, in one
    line, instead of letting Spark fail deep inside its offset log.
    """
    offsets = checkpoint_dir / "offsets"
    logs = sorted(
        (p for p in offsets.glob("*") if p.name.isdigit()), key=lambda p: int(p.name)
    ) if offsets.is_dir() else []  # fmt: skip
    if not logs:
        return
    try:
        source = json.loads(logs[-1].read_text().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return
    if isinstance(source, dict) and "partitions" in source and "topic" in source:
        raise AqiError(
            f"the checkpoint {checkpoint_dir} was written by the retired Python Kafka source "
            "(kafka_py) and cannot be resumed by Spark's Kafka source: move it and the Bronze "
            f"folder aside (mv {checkpoint_dir} {checkpoint_dir}.kafka_py; mv {bronze_path} "
            f"{bronze_path}.kafka_py) and run aqi stream again; rows already in raw stay and "
            "are not loaded twice"
        )


def _batch_end_offsets(summary: list, previous: dict) -> dict:
    """Next offset per topic/partition after this batch (earlier batches fill the gaps)."""
    ends = {topic: dict(parts) for topic, parts in previous.items()}
    for row in summary:
        if row["rows"]:
            parts = ends.setdefault(row["kafka_topic"], {})
            key = str(row["kafka_partition"])
            parts[key] = max(int(parts.get(key, 0)), row["max_offset"] + 1)
    return ends


def _lag(options: StreamOptions, batch_ends: dict) -> int | None:
    """Records on the topic not yet read after this batch."""
    try:
        latest = end_offsets(options.bootstrap_servers, options.topic)
    except Exception as exc:  # noqa: BLE001 - a metric must not stop the stream
        log.warning("could not measure the lag: %s", exc)
        return None
    done = batch_ends.get(options.topic, {})
    return sum(max(0, end - int(done.get(str(p), 0))) for p, end in latest.items())


def _stop_on_signals(query, echo: Callable[[str], None]) -> list[threading.Thread]:
    """SIGTERM/SIGINT stop the query cleanly (the current batch is replayed at restart).

    The stop runs in a thread (a signal handler must not block on the JVM); the returned list
    collects those threads so the caller can wait for them before stopping Spark.
    """
    stopping: list[threading.Thread] = []
    if threading.current_thread() is not threading.main_thread():
        return stopping

    def stop(signum: int, _frame) -> None:
        echo(f"stream: {signal.Signals(signum).name} received, stopping")
        thread = threading.Thread(target=query.stop, daemon=True)
        stopping.append(thread)
        thread.start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return stopping


def _java_home() -> bool:
    home = os.environ.get("JAVA_HOME")
    return bool(home) and Path(home, "bin", "java").exists()
