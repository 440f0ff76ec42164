"""Put events straight into raw.openaq_measurements (no Kafka, no Spark) for warehouse tests.

The warehouse only sees the raw table; loading it directly keeps dbt tests and benchmarks
fast and independent of the stream, which has its own end-to-end tests. Each event gets
Kafka coordinates of a fake topic, as the stream would give it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import psycopg
import pytest
import reference_aqi as ref

from aqi.core.migrations import migrate
from ingestion.events import parse_utc
from spark_streaming.parse import EVENT_FIELDS

#: the contract's timestamps, stored as timestamptz
_TIMESTAMPS = frozenset({"ingested_at", "period_start", "period_end"})

__all__ = ["assert_gold_matches_reference", "load_raw_events", "read_table"]


def load_raw_events(url: str, events: Iterable[dict[str, Any]], topic: str = "direct") -> int:
    """COPY events (dicts of the contract) into raw.openaq_measurements; returns the count.

    The events are the project's own (made by ``ingestion.events.make_event``, whose output
    tests/unit/test_events.py holds to the published schema), so they are typed, not
    re-validated: the schema validator costs ~0.3 ms an event, minutes for a benchmark.
    """
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
                typed = [parse_utc(event[f]) if f in _TIMESTAMPS else event[f]
                         for f in EVENT_FIELDS]  # fmt: skip
                copy.write_row((*typed, topic, 0, next_offset + count, datetime.now(UTC)))
                count += 1
    return count


def read_table(url: str, name: str) -> pd.DataFrame:
    """A whole relation as a DataFrame."""
    with psycopg.connect(url) as conn:
        cursor = conn.execute(f"select * from {name}")
        columns = [c.name for c in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=columns)


def assert_gold_matches_reference(
    url: str, events: list[dict], *, all_stale: bool | None = None
) -> None:
    """Every gold table equals its independent pandas computation from ``events``.

    ``all_stale``: also require every gold.latest row to be stale (True) or fresh (False).
    """
    valid = ref.valid_readings(events)
    daily = ref.daily_avg(valid)

    got = read_table(url, "gold.pm25_15min")
    want = ref.pm25_15min(valid)
    merged = want.merge(got, on=["location_id", "window_start"], how="outer", indicator=True,
                        suffixes=("_ref", ""))  # fmt: skip
    assert (merged._merge == "both").all(), merged[merged._merge != "both"].head()
    assert merged.pm25_avg.to_numpy() == pytest.approx(merged.pm25_avg_ref.to_numpy(), rel=1e-9)
    assert (merged.sensor_count == merged.sensor_count_ref).all()
    assert (merged.reading_count == merged.reading_count_ref).all()

    got = read_table(url, "gold.daily_avg")
    keys = ["location_id", "parameter", "units", "local_date"]
    merged = daily.merge(got, on=keys, how="outer", indicator=True, suffixes=("_ref", ""))
    assert (merged._merge == "both").all(), merged[merged._merge != "both"].head()
    assert merged.avg_value.to_numpy() == pytest.approx(merged.avg_value_ref.to_numpy(), rel=1e-9)
    assert (merged.hours_covered == merged.hours_covered_ref).all()
    assert (merged.is_complete == merged.is_complete_ref).all()
    assert (
        merged.aqi.fillna(-1).astype(int).tolist() == merged.aqi_ref.fillna(-1).astype(int).tolist()
    )
    assert merged.aqi_category.fillna("").tolist() == merged.aqi_category_ref.fillna("").tolist()

    got = read_table(url, "gold.exceedance_30d")
    want = ref.exceedance_30d(daily)
    keys = ["location_id", "parameter", "local_date"]
    merged = want.merge(got, on=keys, how="outer", indicator=True, suffixes=("_ref", ""))
    assert (merged._merge == "both").all(), merged[merged._merge != "both"].head()
    for column in ("complete_days", "days_over_who", "days_over_us"):
        assert (merged[column] == merged[f"{column}_ref"]).all(), column

    got = read_table(url, "gold.latest")
    want = ref.latest(valid)
    merged = want.merge(got, on=["location_id", "parameter"], how="outer", indicator=True,
                        suffixes=("_ref", ""))  # fmt: skip
    assert (merged._merge == "both").all(), merged[merged._merge != "both"].head()
    assert (merged.value == merged.value_ref).all()
    assert (merged.measured_at == merged.measured_at_ref).all()
    assert (merged.sensor_id == merged.sensor_id_ref).all()
    assert (
        merged.aqi.fillna(-1).astype(int).tolist() == merged.aqi_ref.fillna(-1).astype(int).tolist()
    )
    if all_stale is not None:
        assert (merged.is_stale == all_stale).all()
