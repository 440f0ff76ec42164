"""`aqi stream` end to end: real broker, real Spark, real PostgreSQL, Bronze read with pyarrow."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from itertools import islice
from pathlib import Path

import psycopg
import pyarrow.dataset as ds
import pytest
from confluent_kafka import Producer
from conftest import AQI, driver_jvm, isolated_env, recreate_topic, run_aqi

from aqi.core.topics import client_config
from ingestion.events import validate_event
from ingestion.producer import EventProducer
from ingestion.simulator import SimulationConfig, simulate
from spark_streaming import class_archive
from spark_streaming.session import QUICK_JIT

pytestmark = pytest.mark.integration


def _env(tmp_path: Path, services: dict, database: str) -> dict[str, str]:
    return isolated_env(
        tmp_path / "aq",
        KAFKA_BOOTSTRAP_SERVERS=services["kafka"]["bootstrap_servers"],
        AQ_KAFKA_TOPIC=f"test.stream.{uuid.uuid4().hex[:8]}",
        AQ_DATABASE_URL=database,
    )


def _poison(events: list[dict], count: int, seed: int = 1) -> list[tuple[bytes | None, bytes]]:
    """Invalid messages of every kind the stream must quarantine."""
    rng = random.Random(seed)
    makers = [
        lambda e: b"this is not json",
        lambda e: json.dumps({**e, "value": "twelve"}).encode(),
        lambda e: json.dumps({k: v for k, v in e.items() if k != "period_end"}).encode(),
        lambda e: json.dumps({**e, "schema_version": 2}).encode(),
        lambda e: json.dumps([e]).encode(),
        lambda e: json.dumps({**e, "period_end": "yesterday"}).encode(),
    ]
    out = []
    for i in range(count):
        event = rng.choice(events)
        out.append((str(event["sensor_id"]).encode(), makers[i % len(makers)](event)))
    return out


def _bronze(aq_home: Path) -> list[dict]:
    dataset = ds.dataset(aq_home / "bronze" / "openaq", format="parquet", partitioning="hive")
    return dataset.to_table().to_pylist()


def _raw_rows(database: str) -> int:
    with psycopg.connect(database) as conn:
        if not conn.execute("select to_regclass('raw.openaq_measurements')").fetchone()[0]:
            return 0
        return conn.execute("select count(*) from raw.openaq_measurements").fetchone()[0]


def _wait_for_rows(database: str, mark: int, proc: subprocess.Popen, deadline_s: float) -> int:
    """Poll the raw table until it holds `mark` rows, the process ends, or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    loaded = _raw_rows(database)
    while loaded < mark and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        loaded = _raw_rows(database)
    assert loaded >= mark or proc.poll() is not None, f"{mark} rows not loaded in {deadline_s} s"
    return loaded


def test_valid_events_land_once_poison_is_quarantined(
    tmp_path: Path, services, fresh_database
) -> None:
    env = _env(tmp_path, services, fresh_database)
    bootstrap, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["AQ_KAFKA_TOPIC"]
    events = list(simulate(SimulationConfig(locations=4, days=1, seed=3)))
    poison = _poison(events, max(1, len(events) // 100))
    with EventProducer(bootstrap, topic, partitions=3) as producer:
        producer.send(events[: len(events) // 2])
    raw = Producer(client_config(bootstrap, "tests", acks="all"))
    for key, value in poison:
        raw.produce(topic, value=value, key=key)
    assert raw.flush(30) == 0
    with EventProducer(bootstrap, topic, partitions=3) as producer:
        producer.send(events[len(events) // 2 :])

    result = run_aqi(["stream", "--available-now", "--max-offsets-per-trigger", "700"], env,
                     tmp_path, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "source kafka on" in result.stdout
    # a small drain's driver runs the quick JIT (--jit auto)
    backlog = len(events) + len(poison)
    assert f"driver JIT quick (C1 only): a drain of {backlog:,} records" in result.stdout

    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute(
            "select sensor_id, period_end, value, ingest_mode, kafka_partition, kafka_offset "
            "from raw.openaq_measurements"
        ).fetchall()
        quarantine = conn.execute(
            "select reason, payload, kafka_offset from raw.openaq_quarantine"
        ).fetchall()
        metrics = conn.execute(
            "select sum(rows_read), sum(rows_quarantined), sum(rows_inserted), count(*), "
            "min(lag_records) from raw.stream_batches"
        ).fetchone()
    assert len(rows) == len(events)
    assert Counter((r[0], r[1].strftime("%Y-%m-%dT%H:%M:%SZ")) for r in rows) == Counter(
        (e["sensor_id"], e["period_end"]) for e in events
    )
    assert len({(r[4], r[5]) for r in rows}) == len(rows)
    assert len(quarantine) == len(poison)
    reasons = " | ".join(r[0] for r in quarantine)
    for expected in ("not JSON", "value:", "missing field(s): period_end",
                     "unknown schema_version 2", "not a JSON object", "period_end:"):  # fmt: skip
        assert expected in reasons
    assert {q[1] for q in quarantine} >= {"this is not json"}
    assert metrics[0] == len(events) + len(poison)
    assert metrics[1] == len(poison) and metrics[2] == len(events)
    # --max-offsets-per-trigger split the backlog
    assert metrics[3] >= -(-(len(events) + len(poison)) // 700) >= 2
    assert metrics[4] == 0  # drained

    bronze = _bronze(Path(env["AQ_HOME"]))
    assert len(bronze) == len(events)
    assert {(b["kafka_partition"], b["kafka_offset"]) for b in bronze} == {
        (r[4], r[5]) for r in rows
    }
    for b in bronze[:20]:
        assert str(b["event_date"]) == b["period_end"].strftime("%Y-%m-%d")
    sample = {(e["sensor_id"], e["period_end"]): e for e in events}
    for b in bronze[:200]:
        event = sample[(b["sensor_id"], b["period_end"].strftime("%Y-%m-%dT%H:%M:%SZ"))]
        validate_event(event)
        assert b["value"] == event["value"] and b["units"] == event["units"]

    # again: the checkpoint has committed the topic's end, so Spark is not even started
    again = run_aqi(["stream", "--available-now"], env, tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"raw is up to date with {topic}" in again.stdout, again.stdout
    assert "driver JIT" not in again.stdout and "stopped after 0 batch(es)" in again.stdout
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("select count(*) from raw.openaq_measurements").fetchone()[0] == len(
            events
        )
    assert len(_bronze(Path(env["AQ_HOME"]))) == len(events)


@pytest.mark.drill
def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    tmp_path: Path, services, fresh_database
) -> None:
    env = _env(tmp_path, services, fresh_database)
    bootstrap, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["AQ_KAFKA_TOPIC"]
    # 30,000 events in batches of 3,000: ten batches a run, so each kill lands with batches
    # committed and more to come (throughput is benchmarked apart, in docs/benchmarks.md)
    total, per_batch = 30_000, 3_000
    events = islice(simulate(SimulationConfig(locations=80, days=30, seed=11)), total)
    with EventProducer(bootstrap, topic, partitions=3) as producer:
        batch = []
        for event in events:
            batch.append(event)
            if len(batch) == 10_000:
                producer.send(batch)
                batch = []
        producer.send(batch)
    # counted once acknowledged: leaving the block waits for the last acknowledgements
    assert producer.sent == total

    # Kill the driver (Python and its JVM) once the raw table has passed each mark: the first
    # kill lands inside the first batches, the second half-way. Conditions, not wall-clock
    # sleeps, decide when; each run's stderr is kept to explain an early end.
    args = [AQI, "stream", "--available-now", "--max-offsets-per-trigger", str(per_batch)]
    for run, mark in enumerate((1, total // 2)):
        log = tmp_path / f"stream-{run}.log"
        with log.open("w") as err:
            proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)  # fmt: skip
            try:
                loaded = _wait_for_rows(fresh_database, mark, proc, deadline_s=600)
                assert proc.poll() is None, (
                    f"run {run}: the stream ended before {mark} rows were loaded "
                    f"(exit {proc.returncode}, {loaded} rows):\n{log.read_text()[-3000:]}"
                )
                if run == 0:  # a drain of 30,000 records: the driver JVM compiles with C1
                    java = driver_jvm(proc.pid)  # only, and maps the class archive as well
                    assert QUICK_JIT in java.cmdline()
                    archive = str(class_archive.archive_path())
                    assert archive in {m.path for m in java.memory_maps()}
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    final = run_aqi(["stream", "--available-now", "--max-offsets-per-trigger", str(per_batch)],
                    env, tmp_path, timeout=900)  # fmt: skip
    assert final.returncode == 0, final.stdout + final.stderr

    with psycopg.connect(fresh_database) as conn:
        count, distinct = conn.execute(
            "select count(*), count(distinct (kafka_partition, kafka_offset)) "
            "from raw.openaq_measurements"
        ).fetchone()
    assert count == distinct == total
    bronze = ds.dataset(Path(env["AQ_HOME"]) / "bronze" / "openaq", format="parquet",
                        partitioning="hive").to_table(columns=["kafka_partition", "kafka_offset"])  # fmt: skip
    assert bronze.num_rows == total
    assert (
        len(set(zip(bronze.column(0).to_pylist(), bronze.column(1).to_pylist(), strict=True)))
        == total
    )


#: added to the sensor ids of a second stream of events (real OpenAQ sensor ids are < 1e9)
SHIFT = 10**12


@pytest.mark.drill
def test_recreated_topic_stops_the_stream_with_one_line_and_the_way_on(
    tmp_path: Path, services, fresh_database
) -> None:
    """A recreated topic starts its offsets again at 0, below the checkpoint's.

    Spark's source reports possible data loss: `aqi stream` fails (failOnDataLoss) with one
    line that names the way on; with --no-fail-on-data-loss it goes on from the new log, and
    records that reuse offsets of rows already in raw still land (raw's key includes the
    record timestamp).
    """
    env = _env(tmp_path, services, fresh_database)
    bootstrap, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["AQ_KAFKA_TOPIC"]
    old = list(simulate(SimulationConfig(locations=2, days=0.5, seed=21)))
    new = list(simulate(SimulationConfig(locations=2, days=1, seed=22, duplicate_share=0)))
    new = [{**e, "sensor_id": e["sensor_id"] + SHIFT} for e in new]
    with EventProducer(bootstrap, topic, partitions=3) as producer:
        producer.send(old)
    first = run_aqi(["stream", "--available-now"], env, tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr

    recreate_topic(bootstrap, topic, 3)
    with EventProducer(bootstrap, topic, partitions=3) as producer:
        producer.send(new[:10])  # below the checkpointed offsets: Spark cannot tell them apart

    refused = run_aqi(["stream", "--available-now"], env, tmp_path, timeout=600)
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("aqi: error: ") and "--no-fail-on-data-loss" in last, last
    assert "Traceback" not in refused.stderr

    resumed = run_aqi(["stream", "--available-now", "--no-fail-on-data-loss"], env, tmp_path,
                      timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    with EventProducer(bootstrap, topic, partitions=3) as producer:
        producer.send(new[10:])
    again = run_aqi(["stream", "--available-now"], env, tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr
    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute(
            "select sensor_id, period_end, kafka_partition, kafka_offset "
            "from raw.openaq_measurements"
        ).fetchall()
    olds = [r for r in rows if r[0] < SHIFT]
    news = [r for r in rows if r[0] >= SHIFT]
    assert len(olds) == len(old)
    # every record produced after the stream went on is there, once
    landed = Counter((r[0], r[1].strftime("%Y-%m-%dT%H:%M:%SZ")) for r in news)
    assert set(landed) >= {(e["sensor_id"], e["period_end"]) for e in new[10:]}
    assert set(landed.values()) == {1}
    reused = {(r[2], r[3]) for r in news} & {(r[2], r[3]) for r in olds}
    assert reused, "the new log should reuse offsets of the old one"


def test_checkpoint_of_the_retired_python_source_gets_one_line(
    tmp_path: Path, services, fresh_database
) -> None:
    """A checkpoint written by `kafka_py` (before Apache Kafka) says what to move aside."""
    env = _env(tmp_path, services, fresh_database)
    checkpoint = Path(env["AQ_HOME"]) / "checkpoints" / "openaq_raw"
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "offsets" / "3").write_text(
        'v1\n{"batchWatermarkMs":0,"batchTimestampMs":1,"conf":{}}\n'
        '{"topic":"openaq.measurements","partitions":{"0":{"offset":42,"fp":"1:2"}}}\n'
    )
    result = run_aqi(["stream", "--available-now"], env, tmp_path, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("aqi: error: the checkpoint ") and "kafka_py" in line
    assert f"mv {checkpoint} {checkpoint}.kafka_py" in line


@pytest.mark.parametrize("value", ["earliest-ish", '{"other.topic": {"0": 1}}', '{"t": [1]}'])
def test_invalid_starting_offsets_are_one_line_before_anything_starts(
    tmp_path: Path, value: str
) -> None:
    # nothing answers at these addresses: the option is refused before they are tried
    env = isolated_env(tmp_path / "aq", AQ_KAFKA_TOPIC="t", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",
                       AQ_DATABASE_URL="postgresql://u:p@127.0.0.1:9/db")  # fmt: skip
    result = run_aqi(["stream", "--starting-offsets", value], env, tmp_path, timeout=120)
    assert result.returncode == 2  # a usage error
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert line.startswith(
        "Error: Invalid value for '--starting-offsets': expected earliest, latest or JSON"
    ), line
