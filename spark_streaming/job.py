"""``aqi stream``: Kafka -> parse -> Bronze Parquet + raw PostgreSQL, exactly once.

The source is Spark's built-in ``kafka`` format when its connector jar is on the classpath
(docker-compose.yml loads it through ``spark.jars.packages``), else the project's Python data
source ``kafka_py`` with the same columns; the choice is logged and nothing downstream differs.
(The two write different offsets to the checkpoint: one checkpoint is used by one of them.)
Records are parsed on the executors (:func:`spark_streaming.parse.parse_batches`), then each
micro-batch is written by :func:`handle_batch` to idempotent sinks (see
:mod:`spark_streaming.sinks`), so a batch Spark replays after a crash changes nothing.

Public surface: :class:`StreamOptions`, :func:`run_stream`, :func:`handle_batch`.
"""

from __future__ import annotations

import fcntl
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

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from aqi.errors import AqiError
from aqi.topics import end_offsets
from spark_streaming.parse import ARROW_SCHEMA, PARSED_SCHEMA, parse_batches
from spark_streaming.sinks import BatchMetrics, PostgresSink, write_bronze

__all__ = [
    "QUERY_NAME",
    "StreamOptions",
    "checkpoint_lock",
    "handle_batch",
    "run_stream",
    "stream_is_running",
]

log = logging.getLogger(__name__)
QUERY_NAME = "openaq_raw"


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
    trigger_seconds: float = 30.0
    max_offsets_per_trigger: int | None = 50_000
    starting_offsets: str = "earliest"
    fail_on_data_loss: bool = True
    query_name: str = QUERY_NAME


def run_stream(options: StreamOptions, echo: Callable[[str], None] = print) -> int:
    """Run until drained (``available_now``) or until SIGTERM/SIGINT. Returns batches run."""
    if shutil.which("java") is None and not _java_home():
        raise AqiError(
            "Spark needs Java 17+: install it (e.g. apt-get install openjdk-17-jre-headless)"
        )
    with checkpoint_lock(options.checkpoint_dir):
        return _run_stream(options, echo)


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


def _lock_path(checkpoint_dir: Path) -> Path:
    return checkpoint_dir.with_name(checkpoint_dir.name + ".lock")


def _run_stream(options: StreamOptions, echo: Callable[[str], None]) -> int:
    from spark_streaming.session import get_spark

    spark = get_spark(options.master)
    sink = PostgresSink(options.database_url)
    batches = {"count": 0}
    try:
        source, frame = _kafka_frame(spark, options)
        echo(f"stream: source {source} on {options.bootstrap_servers} topic {options.topic}")
        parsed = frame.mapInArrow(parse_batches, PARSED_SCHEMA)

        def on_batch(batch_df: DataFrame, batch_id: int) -> None:
            metrics = handle_batch(batch_df, batch_id, options=options, sink=sink, source=source)
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
        query.awaitTermination()
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
    source: str,
) -> BatchMetrics:
    """Write one parsed micro-batch to Bronze and PostgreSQL; record its metrics."""
    started, clock = datetime.now(UTC), time.monotonic()
    batch_df.persist()
    try:
        write_bronze(batch_df.filter(F.col("error").isNull()), options.bronze_path, batch_id)
        table = batch_df.toArrow() if not batch_df.isEmpty() else _empty()
    finally:
        batch_df.unpersist()
    is_valid = pc.is_null(table.column("error"))
    valid = table.filter(is_valid)
    invalid = table.filter(pc.invert(is_valid)).rename_columns(
        ["reason" if n == "error" else n for n in table.column_names]
    )
    with sink.transaction():
        previous = sink.previous_end_offsets(options.query_name, batch_id)
        batch_ends = _batch_end_offsets(table, previous)
        inserted, quarantine_inserted = sink.write(valid, invalid)
        metrics = BatchMetrics(
            query_name=options.query_name,
            batch_id=batch_id,
            source=source,
            rows_read=table.num_rows,
            rows_valid=valid.num_rows,
            rows_quarantined=invalid.num_rows,
            rows_inserted=inserted,
            rows_quarantine_inserted=quarantine_inserted,
            duration_ms=int((time.monotonic() - clock) * 1000),
            lag_records=_lag(options, batch_ends),
            end_offsets=batch_ends,
            started_at=started,
            finished_at=datetime.now(UTC),
        )
        sink.record(metrics)
    return metrics


def _kafka_frame(spark: SparkSession, options: StreamOptions) -> tuple[str, DataFrame]:
    """The Kafka stream from the built-in source if its jar is loaded, else ``kafka_py``."""
    source = "kafka" if _builtin_kafka_available(spark) else "kafka_py"
    if source == "kafka_py":
        from spark_streaming.kafka_source import register

        register(spark)
    reader = (
        spark.readStream.format(source)
        .option("kafka.bootstrap.servers", options.bootstrap_servers)
        .option("subscribe", options.topic)
        .option("startingOffsets", options.starting_offsets)
        .option("failOnDataLoss", str(options.fail_on_data_loss).lower())
    )
    if options.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(options.max_offsets_per_trigger))
    log.info("stream source: %s", source)
    frame = reader.load().select("key", "value", "topic", "partition", "offset", "timestamp")
    return source, frame


def _builtin_kafka_available(spark: SparkSession) -> bool:
    try:
        jvm = spark.sparkContext._jvm
        jvm.java.lang.Class.forName("org.apache.spark.sql.kafka010.KafkaSourceProvider")
        return True
    except Exception:  # noqa: BLE001 - py4j raises its own error types for a missing class
        return False


def _batch_end_offsets(table: pa.Table, previous: dict) -> dict:
    """Next offset per topic/partition after this batch (earlier batches fill the gaps)."""
    ends = {topic: dict(parts) for topic, parts in previous.items()}
    if table.num_rows:
        grouped = table.group_by(["kafka_topic", "kafka_partition"]).aggregate(
            [("kafka_offset", "max")]
        )
        for topic, partition, offset in zip(
            *(grouped.column(i).to_pylist() for i in range(3)), strict=True
        ):
            ends.setdefault(topic, {})[str(partition)] = offset + 1
    return ends


def _lag(options: StreamOptions, batch_ends: dict) -> int | None:
    """Records on the topic not yet read (true end offsets, probed)."""
    try:
        latest = end_offsets(options.bootstrap_servers, options.topic)
    except Exception as exc:  # noqa: BLE001 - a metric must not stop the stream
        log.warning("could not measure the lag: %s", exc)
        return None
    done = batch_ends.get(options.topic, {})
    return sum(max(0, end - int(done.get(str(p), 0))) for p, end in latest.items())


def _empty() -> pa.Table:
    return ARROW_SCHEMA.empty_table()


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
