"""`aqi stream --master spark://...` on a Spark standalone cluster gives what local[*] gives.

The cluster is the installed Spark's own (pyspark's ``bin/spark-class``): one master and two
workers on 127.0.0.1, each worker with one core, so the executors are other JVMs than the
driver and the Kafka connector jars reach them through ``spark.jars``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pyarrow.dataset as ds
import pyspark
import pytest
from conftest import free_port, isolated_env, run_aqi

from aqi.services.process import port_is_open, wait_until
from ingestion.producer import EventProducer
from ingestion.simulator import SimulationConfig, simulate
from spark_streaming.session import QUICK_JIT

pytestmark = pytest.mark.integration

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


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


def _raw(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return sorted(conn.execute(
            "select sensor_id, period_end, value, ingested_at, kafka_partition, kafka_offset, "
            "kafka_timestamp from raw.openaq_measurements"
        ).fetchall())  # fmt: skip


def _quarantine(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return sorted(conn.execute(
            "select kafka_partition, kafka_offset, reason from raw.openaq_quarantine"
        ).fetchall())  # fmt: skip


def _bronze(aq_home: Path) -> list[tuple]:
    table = ds.dataset(aq_home / "bronze" / "openaq", format="parquet", partitioning="hive")
    columns = ["kafka_partition", "kafka_offset", "sensor_id", "period_end", "value", "event_date"]
    data = table.to_table(columns=columns).to_pydict()
    return sorted(zip(*(data[c] for c in columns), strict=True))


def test_standalone_cluster_run_equals_local_run(
    tmp_path: Path, services: dict, aq_settings
) -> None:
    from conftest import temporary_database

    topic = f"test.cluster.{uuid.uuid4().hex[:8]}"
    bootstrap = services["kafka"]["bootstrap_servers"]
    events = list(simulate(SimulationConfig(locations=12, days=3, seed=41)))
    with EventProducer(bootstrap, topic, partitions=3) as producer:
        producer.send(events)
        producer.send([{"sensor_id": 1, "not": "an event"}])  # one for the quarantine

    results = {}
    with temporary_database(aq_settings) as local_db, temporary_database(aq_settings) as cluster_db:
        for name, url, master in (("local", local_db, None), ("cluster", cluster_db, "cluster")):
            env = isolated_env(tmp_path / name, KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                               AQ_KAFKA_TOPIC=topic, AQ_DATABASE_URL=url)  # fmt: skip
            args = ["stream", "--available-now", "--max-offsets-per-trigger", "2500"]
            if master is None:
                result = run_aqi(args, env, tmp_path, timeout=900)
            else:
                with standalone_cluster(tmp_path / "spark") as spark_master:
                    result = run_aqi([*args, "--master", spark_master], env, tmp_path,
                                     timeout=900)  # fmt: skip
                master_log = (tmp_path / "spark" / "master.log").read_text()
                assert "Registering app aqi-stream" in master_log, master_log
                # a small drain: the executors, other JVMs, get the driver's quick JIT too
                launches = [f.read_text() for f in (tmp_path / "spark" / "work").glob("app-*/*/stderr")]
                assert launches and all(QUICK_JIT in text.split("\n", 1)[0] for text in launches), [
                    text[:2000] for text in launches]  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
            results[name] = (_raw(url), _quarantine(url), _bronze(tmp_path / name))
    local, cluster = results["local"], results["cluster"]
    assert len(local[0]) == len(events) and len(local[1]) == 1
    assert cluster[0] == local[0]
    assert cluster[1] == local[1]
    assert cluster[2] == local[2] and len(cluster[2]) == len(events)
