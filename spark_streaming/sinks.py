"""Where each micro-batch goes, idempotently: Bronze Parquet, raw PostgreSQL, metrics.

Spark re-runs a micro-batch after a crash with the same batch id and the same Kafka offsets,
so every sink gives the same end state when a batch is written twice. The batch is read and
parsed once: each Spark task hands its rows (one Kafka partition's offset range) to
:func:`write_partition`, in Spark's Python worker, as Arrow batches; nothing is collected on
the driver and nothing is cached.

- **Bronze**: one Parquet file per task and event date, written by Arrow under
  ``event_date=YYYY-MM-DD/batch_id=N/`` and named after the task's first Kafka record
  (``part-<topic>-<partition>-<offset>.parquet``), first to a temporary name then renamed: a
  replayed batch rewrites exactly the same files, and readers (Spark, pyarrow, DuckDB) never
  see a half-written one or a record twice.
- **raw.openaq_measurements / raw.openaq_quarantine**: binary COPY of the Arrow columns
  (Apache Arrow's ADBC PostgreSQL driver), both tables in one transaction per task. A task
  first asks whether any row of its offset range is there already: if not (the normal case)
  it COPYs straight into the tables; if so (a replay) it COPYs into a temporary table and
  inserts ``on conflict do nothing`` on the Kafka record key, so nothing is loaded twice.
- **raw.stream_batches**: one row per batch, upserted by the driver once every task is done.

Public surface: :func:`write_partition`, :class:`PostgresSink`, :class:`BatchMetrics`,
:data:`SUMMARY_SCHEMA`, :data:`MEASUREMENT_COLUMNS`, :data:`QUARANTINE_COLUMNS`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq

from aqi.core.event_contract import EVENT_FIELD_NAMES, KAFKA_COLUMNS

__all__ = [
    "MEASUREMENT_COLUMNS",
    "QUARANTINE_COLUMNS",
    "SUMMARY_SCHEMA",
    "BatchMetrics",
    "PostgresSink",
    "write_partition",
]

KAFKA_FIELDS: tuple[str, ...] = tuple(KAFKA_COLUMNS)
#: raw.openaq_measurements' columns but loaded_at (its default)
MEASUREMENT_COLUMNS = (*EVENT_FIELD_NAMES, *KAFKA_FIELDS)
QUARANTINE_COLUMNS = (*KAFKA_FIELDS, "kafka_key", "payload", "reason")
#: what each task reports back: one row per Kafka partition it wrote
SUMMARY_SCHEMA = (
    "kafka_topic string, kafka_partition int, rows long, valid long, inserted long, "
    "quarantine_inserted long, max_offset long"
)
_TABLES = {"raw.openaq_measurements": MEASUREMENT_COLUMNS,
           "raw.openaq_quarantine": QUARANTINE_COLUMNS}  # fmt: skip


def write_partition(
    database_url: str, bronze_uri: str, batch_id: int
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A ``mapInArrow`` function: one task's rows to Bronze and PostgreSQL; its summary out."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = pa.Table.from_batches(list(batches))
        if table.num_rows == 0:
            yield pa.RecordBatch.from_pylist([], schema=_summary_arrow_schema())
            return
        is_valid = pc.is_null(table.column("reason"))
        valid = table.filter(is_valid)
        invalid = table.filter(pc.invert(is_valid))
        _write_bronze(valid.select(list(MEASUREMENT_COLUMNS)), bronze_uri, batch_id,
                      _part_name(table))  # fmt: skip
        inserted = _write_postgres(database_url, table, {
            "raw.openaq_measurements": valid, "raw.openaq_quarantine": invalid})  # fmt: skip
        yield from _summary(table, inserted).to_batches()

    return write


# --- Bronze -------------------------------------------------------------------------------


def _part_name(table: pa.Table) -> str:
    """Named after the task's first Kafka record: the same in every replay of the batch."""
    topic = table.column("kafka_topic")[0].as_py()
    partition = table.column("kafka_partition")[0].as_py()
    offset = pc.min(table.column("kafka_offset")).as_py()
    return f"part-{topic}-{partition}-{offset:020d}.parquet"


def _write_bronze(valid: pa.Table, bronze_uri: str, batch_id: int, name: str) -> None:
    if valid.num_rows == 0:
        return
    filesystem, root = _filesystem(bronze_uri)
    dates = pc.cast(valid.column("period_end"), pa.date32())
    for date in pc.unique(dates).to_pylist():
        folder = f"{root}/event_date={date.isoformat()}/batch_id={batch_id}"
        filesystem.create_dir(folder, recursive=True)
        temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        pq.write_table(valid.filter(pc.equal(dates, pa.scalar(date, pa.date32()))), temporary,
                       filesystem=filesystem, compression="snappy")  # fmt: skip
        filesystem.move(temporary, f"{folder}/{name}")


def _filesystem(uri: str) -> tuple[pa_fs.FileSystem, str]:
    """Arrow's filesystem for a Bronze location: a local path, or s3a:// (as s3://)."""
    if "://" not in uri:
        return pa_fs.LocalFileSystem(), os.path.abspath(uri).rstrip("/")
    if uri.startswith("s3a://"):
        uri = "s3://" + uri.removeprefix("s3a://")
    filesystem, root = pa_fs.FileSystem.from_uri(uri)
    return filesystem, root.rstrip("/")


# --- PostgreSQL ---------------------------------------------------------------------------


def _write_postgres(url: str, table: pa.Table, rows: dict[str, pa.Table]) -> dict[str, int]:
    """Load the task's rows into raw and the quarantine in one transaction; rows new to each.

    Arrow's ADBC driver sends the Arrow columns by binary COPY: no text to format on this
    side nor to parse on PostgreSQL's.
    """
    from adbc_driver_postgresql import dbapi

    inserted = dict.fromkeys(rows, 0)
    with dbapi.connect(url) as conn, conn.cursor() as cursor:
        replayed = any(_any_loaded(cursor, name, table) for name, part in rows.items()
                       if part.num_rows)  # fmt: skip
        for name, part in rows.items():
            if part.num_rows == 0:
                continue
            columns = _TABLES[name]
            schema, relation = name.split(".")
            if not replayed:
                inserted[name] = cursor.adbc_ingest(relation, part.select(list(columns)),
                                                    mode="append", db_schema_name=schema)  # fmt: skip
                continue
            stage = f"stage_{relation}"
            cursor.execute(f"create temp table {stage} (like {name} including defaults) "
                           "on commit drop")  # fmt: skip
            cursor.adbc_ingest(stage, part.select(list(columns)), mode="append",
                               db_schema_name="pg_temp")  # the session's temporary schema
            cols = ", ".join(columns)
            cursor.execute(
                f"insert into {name} ({cols}) select {cols} from {stage} on conflict do nothing"
            )
            inserted[name] = cursor.rowcount
        conn.commit()
    return inserted


def _any_loaded(cursor: Any, name: str, table: pa.Table) -> bool:
    """Whether a row of this task's Kafka offset range is in ``name`` already (a replay)."""
    grouped = table.group_by(["kafka_topic", "kafka_partition"]).aggregate(
        [("kafka_offset", "min"), ("kafka_offset", "max")]
    )
    for topic, partition, low, high in zip(*(grouped.column(c).to_pylist() for c in (
        "kafka_topic", "kafka_partition", "kafka_offset_min", "kafka_offset_max",
    )), strict=True):  # fmt: skip
        cursor.execute(
            f"select exists (select 1 from {name} where kafka_topic = $1 and "
            "kafka_partition = $2 and kafka_offset between $3 and $4)",
            (topic, partition, low, high),
        )
        if cursor.fetchone()[0]:
            return True
    return False


def _summary(table: pa.Table, inserted: dict[str, int]) -> pa.Table:
    """Rows, valid rows and highest offset per Kafka partition; the task's inserts on the
    first row (they are summed by the driver)."""
    counts = table.select(["kafka_topic", "kafka_partition", "kafka_offset", "reason"])
    counts = counts.append_column(
        "valid", pc.is_null(counts.column("reason")).cast(pa.int64())
    ).group_by(["kafka_topic", "kafka_partition"]).aggregate(
        [("kafka_offset", "count"), ("valid", "sum"), ("kafka_offset", "max")]
    )
    n = counts.num_rows
    return pa.Table.from_pydict(
        {
            "kafka_topic": counts.column("kafka_topic"),
            "kafka_partition": counts.column("kafka_partition").cast(pa.int32()),
            "rows": counts.column("kafka_offset_count").cast(pa.int64()),
            "valid": counts.column("valid_sum").cast(pa.int64()),
            "inserted": [inserted["raw.openaq_measurements"]] + [0] * (n - 1),
            "quarantine_inserted": [inserted["raw.openaq_quarantine"]] + [0] * (n - 1),
            "max_offset": counts.column("kafka_offset_max").cast(pa.int64()),
        },
        schema=_summary_arrow_schema(),
    )


def _summary_arrow_schema() -> pa.Schema:
    return pa.schema([
        ("kafka_topic", pa.string()), ("kafka_partition", pa.int32()), ("rows", pa.int64()),
        ("valid", pa.int64()), ("inserted", pa.int64()), ("quarantine_inserted", pa.int64()),
        ("max_offset", pa.int64()),
    ])  # fmt: skip


# --- the driver's side --------------------------------------------------------------------


@dataclass(frozen=True)
class BatchMetrics:
    query_name: str
    batch_id: int
    source: str
    rows_read: int
    rows_valid: int
    rows_quarantined: int
    rows_inserted: int
    rows_quarantine_inserted: int
    duration_ms: int
    lag_records: int | None
    end_offsets: dict[str, Any]
    started_at: datetime
    finished_at: datetime


class PostgresSink:
    """The driver's connection: what earlier batches recorded, and each batch's metrics row."""

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True)

    def previous_end_offsets(self, query_name: str, before_batch: int) -> dict[str, Any]:
        """End offsets recorded by the latest earlier batch of this query."""
        row = self._conn.execute(
            "select end_offsets from raw.stream_batches where query_name = %s and batch_id < %s "
            "order by batch_id desc limit 1",
            (query_name, before_batch),
        ).fetchone()
        return row[0] if row else {}

    def record(self, metrics: BatchMetrics) -> None:
        """Upsert the batch's metrics row (a replayed batch rewrites it)."""
        values = {**metrics.__dict__, "end_offsets": json.dumps(metrics.end_offsets)}
        columns = list(values)
        self._conn.execute(
            f"insert into raw.stream_batches ({', '.join(columns)}) "
            f"values ({', '.join('%(' + c + ')s' for c in columns)}) "
            "on conflict (query_name, batch_id) do update set "
            + ", ".join(
                f"{c} = excluded.{c}" for c in columns if c not in ("query_name", "batch_id")
            ),
            values,
        )

    def close(self) -> None:
        self._conn.close()
