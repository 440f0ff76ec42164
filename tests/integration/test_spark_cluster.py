"""`aqi stream --master spark://...` on a Spark standalone cluster gets through hostile messages
and stores what the contract says.

The cluster is the installed Spark's own (pyspark's ``bin/spark-class``): one master and two
workers on 127.0.0.1, each worker with one core, so the executors are other JVMs than the
driver and the Kafka connector jars reach them through ``spark.jars``. Between simulated events
the topic holds the nasty corpus of tests/event_fuzz.py (deep nesting, huge numbers, NaN, NUL,
bytes that are not UTF-8, a near-megabyte payload, tombstones, impossible periods, every
timestamp spelling...) and a seeded sample of the fuzzer's messages. One drain must get
through all of them (exit 0, no stop), and what it stores is checked message by message
against the event contract's independent judge, read back from the topic: raw, the quarantine
(every rejected message once, with a reason) and Bronze.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pyarrow.dataset as ds
import pyspark
import pytest
from confluent_kafka import Producer
from conftest import SHORT_LIVED_JVM_OPTIONS, free_port, isolated_env, read_records, run_aqi
from event_fuzz import event_pool, hostile_message, judge, nasty_corpus

from aqi.core.topics import client_config
from aqi.services.process import port_is_open, wait_until
from ingestion.producer import EventProducer
from ingestion.simulator import SimulationConfig, simulate
from spark_streaming.session import QUICK_JIT

pytestmark = pytest.mark.integration

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
#: messages of the seeded fuzzer sent besides the hand-picked corpus
SAMPLE = 3000


@contextmanager
def standalone_cluster(root: Path, workers: int = 2) -> Iterator[str]:
    """A Spark standalone master and ``workers`` workers on 127.0.0.1; yields the master URL."""
    root.mkdir(parents=True, exist_ok=True)
    port, ui = free_port(), free_port()
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_CLASS.parent.parent),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(root),
        "SPARK_WORKER_DIR": str(root / "work"),
        # the master and workers live for one drain: C1 and the serial collector, as the
        # tests' brokers (the executors take the driver's JIT through spark.executor.*)
        "SPARK_DAEMON_JAVA_OPTS": SHORT_LIVED_JVM_OPTIONS,
    }
    master = f"spark://127.0.0.1:{port}"
    procs = []

    def start(args: list[str], log: str) -> None:
        with open(root / log, "ab") as out:
            procs.append(subprocess.Popen(
                [str(SPARK_CLASS), *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            ))  # fmt: skip

    try:
        start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port",
               str(port), "--webui-port", str(ui)], "master.log")  # fmt: skip
        assert wait_until(lambda: port_is_open("127.0.0.1", port), timeout=60), "no master"
        for n in range(workers):
            start(["org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1",
                   "--cores", "1", "--memory", "1536m", "--webui-port", str(free_port())],
                  f"worker-{n}.log")  # fmt: skip
        assert wait_until(lambda: (root / "master.log").read_text().count("Registering worker")
                          >= workers, timeout=60), (root / "master.log").read_text()  # fmt: skip
        yield master
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            proc.wait(timeout=60)


def _raw(url: str) -> dict[tuple[int, int], tuple]:
    """(partition, offset) -> the stored row's sensor, period end, value, ingested_at and
    Kafka timestamp."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select kafka_partition, kafka_offset, sensor_id, period_end, value, ingested_at, "
            "kafka_timestamp from raw.openaq_measurements"
        ).fetchall()
    return {(p, o): tuple(rest) for p, o, *rest in rows}


def _quarantine(url: str) -> dict[tuple[int, int], str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select kafka_partition, kafka_offset, reason from raw.openaq_quarantine"
        ).fetchall()
    return {(p, o): reason for p, o, reason in rows}


def _bronze(aq_home: Path) -> list[tuple]:
    table = ds.dataset(aq_home / "bronze" / "openaq", format="parquet", partitioning="hive")
    columns = ["kafka_partition", "kafka_offset", "sensor_id", "period_end", "value", "event_date"]
    data = table.to_table(columns=columns).to_pydict()
    return sorted(zip(*(data[c] for c in columns), strict=True))


def _judged(bootstrap: str, topic: str) -> dict[tuple[int, int], tuple[dict | None, datetime]]:
    """(partition, offset) -> (what the judge says the warehouse stores or None, the record's
    Kafka timestamp), for every record of the topic as the broker holds it."""
    judged = {}
    for message in read_records(bootstrap, topic):
        stamp = datetime.fromtimestamp(message.timestamp()[1] / 1000, UTC)
        judged[(message.partition(), message.offset())] = (judge(message.value(), stamp), stamp)
    return judged


def test_standalone_cluster_run_stores_what_the_contract_says(
    tmp_path: Path, services: dict, fresh_database: str
) -> None:
    topic = f"test.cluster.{uuid.uuid4().hex[:8]}"
    bootstrap = services["kafka"]["bootstrap_servers"]
    events = list(simulate(SimulationConfig(locations=12, days=3, seed=41)))
    now = datetime.now(UTC)
    pool = event_pool(now)
    rng = random.Random(20261203)
    hostile = [m for _, m in nasty_corpus(pool, now)]
    hostile += [hostile_message(rng, pool, now) for _ in range(SAMPLE)]
    with EventProducer(bootstrap, topic, partitions=3) as producer:
        producer.send(events[: len(events) // 2])
    raw = Producer(client_config(bootstrap, "tests", acks="all"))
    for key, value in hostile:
        raw.produce(topic, value=value, key=key)
        raw.poll(0)
    assert raw.flush(60) == 0
    with EventProducer(bootstrap, topic, partitions=3) as producer:  # valid ones after them
        producer.send(events[len(events) // 2 :])

    env = isolated_env(tmp_path / "aq", KAFKA_BOOTSTRAP_SERVERS=bootstrap, AQ_KAFKA_TOPIC=topic,
                       AQ_DATABASE_URL=fresh_database)  # fmt: skip
    args = ["stream", "--available-now", "--max-offsets-per-trigger", "2500"]
    with standalone_cluster(tmp_path / "spark") as spark_master:
        result = run_aqi([*args, "--master", spark_master], env, tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    master_log = (tmp_path / "spark" / "master.log").read_text()
    assert "Registering app aqi-stream" in master_log, master_log
    # a small drain: the executors, other JVMs, get the driver's quick JIT too
    launches = [f.read_text() for f in (tmp_path / "spark" / "work").glob("app-*/*/stderr")]
    assert launches and all(QUICK_JIT in text.split("\n", 1)[0] for text in launches), [
        text[:2000] for text in launches]  # fmt: skip

    judged = _judged(bootstrap, topic)
    assert len(judged) == len(events) + len(hostile)
    accepted = {at: (event, stamp) for at, (event, stamp) in judged.items() if event is not None}
    assert len(accepted) >= len(events)  # the simulated ones and what the judge lets through
    raw, quarantine = _raw(fresh_database), _quarantine(fresh_database)
    # every record once: the accepted ones in raw, exactly as the judge types them
    assert set(raw) == set(accepted)
    fields = ("sensor_id", "period_end", "value", "ingested_at")
    wrong = [
        (at, raw[at])
        for at, (event, stamp) in accepted.items()
        if raw[at] != (*(event[name] for name in fields), stamp)
    ]
    assert wrong == [], wrong[:5]
    # every other message in the quarantine, once, with its reason
    assert set(quarantine) == set(judged) - set(accepted)
    assert all(reason.strip() for reason in quarantine.values())
    # Bronze: the same records, partitioned by the period end's date (UTC)
    expected = sorted(
        (p, o, e["sensor_id"], e["period_end"], e["value"], e["period_end"].date().isoformat())
        for (p, o), (e, _) in accepted.items()
    )
    bronze = _bronze(tmp_path / "aq")
    assert sorted((p, o, s, end.replace(tzinfo=UTC), v, d) for p, o, s, end, v, d in bronze) == (
        expected
    )
