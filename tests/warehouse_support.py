"""Put events straight into raw.openaq_measurements (no Kafka, no Spark) for warehouse tests.

The warehouse only sees the raw table; loading it directly keeps dbt tests and benchmarks
fast and independent of the stream, which has its own end-to-end tests. Each event gets
Kafka coordinates of a fake topic, as the stream would give it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg

from aqi.migrations import migrate
from spark_streaming.parse import EVENT_FIELDS, check_event

__all__ = ["load_raw_events"]


def load_raw_events(url: str, events: Iterable[dict[str, Any]], topic: str = "direct") -> int:
    """COPY events (dicts of the contract) into raw.openaq_measurements; returns the count."""
    import json

    migrate(url, echo=lambda line: None)
    columns = (*EVENT_FIELDS, "kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp")
    count = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "select coalesce(max(kafka_offset) + 1, 0) from raw.openaq_measurements "
            "where kafka_topic = %s and kafka_partition = 0",
            (topic,),
        )
        next_offset = cur.fetchone()[0]
        with cur.copy(f"copy raw.openaq_measurements ({', '.join(columns)}) from stdin") as copy:
            for event in events:
                typed, error = check_event(json.dumps(event))
                if error:
                    raise ValueError(f"not a valid event: {error}")
                copy.write_row(
                    (*(typed[f] for f in EVENT_FIELDS), topic, 0, next_offset + count,
                     datetime.now(UTC))
                )  # fmt: skip
                count += 1
    return count
