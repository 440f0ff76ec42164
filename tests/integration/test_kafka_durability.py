"""No acknowledged event is lost when a node of three Kafka brokers dies mid-stream (the
single broker killed with 9: tests/integration/test_fault_drills.py).

Its own stack (`aqi services up --kafka-brokers 3` in a private AQ_HOME) because it kills
it: the real Apache Kafka the project installs, the real PostgreSQL, real Spark.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import AQI, private_stack, run_aqi
from stream_support import bronze_count, raw_keys, unique_events

from aqi.core.connections import kafka_bootstrap_servers
from aqi.core.topics import end_offsets
from aqi.services.kafka import EmbeddedKafka
from ingestion.producer import EventProducer
from spark_streaming.job import QUERY_NAME, checkpoint_is_caught_up

pytestmark = pytest.mark.integration


@pytest.mark.drill
def test_three_brokers_one_killed_while_producing_and_streaming(tmp_path: Path) -> None:
    """Replication factor 3, min.insync.replicas 2: a node dies mid-stream, nothing changes."""
    with private_stack(tmp_path, kafka_brokers=3) as stack:
        env, settings, url = stack["env"], stack["settings"], stack["url"]
        bootstrap = kafka_bootstrap_servers(settings)
        assert len(bootstrap.split(",")) == 3
        events = unique_events(20_000, seed=32)
        stream = subprocess.Popen(  # the quick JIT: a driver of a minute (C2 costs more)
            [AQI, "stream", "--trigger-seconds", "1", "--jit", "quick"], env=env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(stream.stdout), daemon=True)
        reader.start()
        try:
            killed = False
            with EventProducer(bootstrap, settings.kafka_topic) as producer:
                for start in range(0, len(events), 1_000):
                    producer.send(events[start : start + 1_000])
                    if not killed and start >= len(events) // 3:
                        producer.flush()
                        EmbeddedKafka(settings).kill(2)  # a leader of some partitions
                        killed = True
                    time.sleep(0.1)  # spread the load over the stream's batches
            assert killed and producer.sent == len(events)

            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and stream.poll() is None:
                if sum(raw_keys(url).values()) >= len(events):
                    break
                time.sleep(2)
            assert stream.poll() is None, "".join(output)
            # every record is in raw; once the batch that read up to the topic's end is
            # committed, anything doubled has landed too (no batch runs without new data)
            checkpoint = settings.checkpoints_dir / QUERY_NAME
            ends = end_offsets(bootstrap, settings.kafka_topic)
            while time.monotonic() < deadline and stream.poll() is None:
                if checkpoint_is_caught_up(checkpoint, settings.kafka_topic, ends):
                    break
                time.sleep(0.5)
            assert checkpoint_is_caught_up(checkpoint, settings.kafka_topic, ends), "".join(output)
        finally:
            os.killpg(stream.pid, signal.SIGTERM)
            stream.wait(timeout=120)
        keys = raw_keys(url)
        assert sum(keys.values()) == len(events), "".join(output[-20:])  # 0 doubled
        assert keys == Counter((e["sensor_id"], e["period_end"]) for e in events)  # 0 lost
        assert bronze_count(settings.aq_home) == len(events)
        # the dead node comes back and the cluster is whole again
        up = run_aqi(["services", "up"], env, tmp_path, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "node 2 on" in up.stdout and "node 1 already running" in up.stdout
