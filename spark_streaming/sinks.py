"""Where each micro-batch goes, idempotently: Bronze Parquet, raw PostgreSQL, metrics.

Spark re-runs a micro-batch after a crash with the same batch id and the same Kafka offsets,
so every sink is written to give the same end state when a batch is written twice:

- **Bronze**: Parquet partitioned by ``event_date`` and then ``batch_id``, written with
  dynamic partition overwrite: a replayed batch replaces exactly its own folders, so readers
  other than Spark (pyarrow, DuckDB) never see a record twice.
- **raw.openaq_measurements / raw.openaq_quarantine**: COPY into a temporary staging table,
  then ``insert ... on conflict do nothing`` on the Kafka coordinates: a replayed batch
  inserts nothing.
- **raw.stream_batches**: upserted on (query name, batch id).

Public surface: :func:`write_bronze`, :class:`PostgresSink`, :class:`BatchMetrics`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_streaming.parse import EVENT_FIELDS

__all__ = ["BatchMetrics", "PostgresSink", "write_bronze"]

KAFKA_FIELDS = ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp")
MEASUREMENT_COLUMNS = (*EVENT_FIELDS, *KAFKA_FIELDS)
QUARANTINE_COLUMNS = (*KAFKA_FIELDS, "kafka_key", "payload", "reason")


def write_bronze(valid: DataFrame, path: str, batch_id: int) -> None:
    """Append the batch's valid events under ``path/event_date=.../batch_id=.../``."""
    (
        valid.select(*MEASUREMENT_COLUMNS)
        .withColumn("event_date", F.to_date(F.col("period_end")))
        .withColumn("batch_id", F.lit(batch_id).cast("long"))
        .write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .partitionBy("event_date", "batch_id")
        .parquet(path)
    )


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
    """One connection for the life of the query; one transaction per micro-batch."""

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url)
        with self._conn.transaction():
            self._conn.execute(
                "create temp table if not exists stage_measurements "
                "(like raw.openaq_measurements including defaults)"
            )
            self._conn.execute(
                "create temp table if not exists stage_quarantine "
                "(like raw.openaq_quarantine including defaults)"
            )

    def write(self, valid: pa.Table, invalid: pa.Table) -> tuple[int, int]:
        """Insert a batch's rows; returns (measurements inserted, quarantine rows inserted).

        Runs in one transaction with :meth:`record` when called inside :meth:`batch`.
        """
        inserted = self._copy_insert("stage_measurements", "raw.openaq_measurements",
                                     MEASUREMENT_COLUMNS, valid)  # fmt: skip
        quarantined = self._copy_insert("stage_quarantine", "raw.openaq_quarantine",
                                        QUARANTINE_COLUMNS, invalid)  # fmt: skip
        return inserted, quarantined

    def record(self, metrics: BatchMetrics) -> None:
        """Upsert the batch's metrics row."""
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

    def previous_end_offsets(self, query_name: str, before_batch: int) -> dict[str, Any]:
        """End offsets recorded by the latest earlier batch of this query (for lag)."""
        row = self._conn.execute(
            "select end_offsets from raw.stream_batches where query_name = %s and batch_id < %s "
            "order by batch_id desc limit 1",
            (query_name, before_batch),
        ).fetchone()
        return row[0] if row else {}

    def transaction(self):
        return self._conn.transaction()

    def close(self) -> None:
        self._conn.close()

    def _copy_insert(
        self, stage: str, target: str, columns: tuple[str, ...], table: pa.Table
    ) -> int:
        if table.num_rows == 0:
            return 0
        cols = ", ".join(columns)
        self._conn.execute(f"truncate {stage}")
        with self._conn.cursor().copy(f"copy {stage} ({cols}) from stdin") as copy:
            for row in zip(*(table.column(c).to_pylist() for c in columns), strict=True):
                copy.write_row(row)
        cursor = self._conn.execute(
            f"insert into {target} ({cols}) select {cols} from {stage} on conflict do nothing"
        )
        return cursor.rowcount
