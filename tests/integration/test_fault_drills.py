"""Fault drills on one private stack: the broker killed (kill -9) with acknowledged events not
yet streamed, then PostgreSQL killed while the stream writes; after each `aqi services up`,
and the stream again: every event in raw and Bronze exactly once.

Its own stack (a private AQ_HOME) because it kills it; everything real: the embedded
PostgreSQL and Apache Kafka, Spark, the `aqi` command. One stack for both kills: each
stack costs a PostgreSQL and a broker start and the drill's events a drain of their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import AQI, private_stack, run_aqi
from stream_support import bronze_count, event_keys, raw_keys, unique_events

from aqi.core.connections import kafka_bootstrap_servers
from aqi.core.topics import end_offsets
from aqi.services.kafka import EmbeddedKafka
from aqi.services.postgres import EmbeddedPostgres
from ingestion.producer import EventProducer

pytestmark = pytest.mark.integration


@pytest.mark.drill
def test_broker_then_postgres_killed_lose_and_double_nothing(tmp_path: Path) -> None:
    with private_stack(tmp_path) as stack:
        env, settings, url = stack["env"], stack["settings"], stack["url"]
        events = unique_events(20_000, seed=41)
        bootstrap = kafka_bootstrap_servers(settings)
        with EventProducer(bootstrap, settings.kafka_topic) as producer:
            producer.send(events)
        assert producer.sent == len(events)  # acknowledged (acks=all), not yet streamed

        # 1. the broker killed with 9: what it acknowledged is on its log after a restart
        EmbeddedKafka(settings).kill(1)
        up = run_aqi(["services", "up"], env, tmp_path, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "kafka: starting" in up.stdout
        assert sum(end_offsets(bootstrap, settings.kafka_topic).values()) == len(events)

        # 2. PostgreSQL killed while the stream writes
        # small batches, so that PostgreSQL dies with some batches written and more to come
        stream = subprocess.Popen(
            # the quick JIT: this driver lives a minute, where C2 costs more than it gives
            [AQI, "stream", "--trigger-seconds", "1", "--max-offsets-per-trigger", "2500",
             "--jit", "quick"],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 600
            written = 0
            while written == 0 and time.monotonic() < deadline and stream.poll() is None:
                time.sleep(0.5)
                try:
                    written = sum(raw_keys(url).values())
                except Exception:  # noqa: BLE001 - raw not created yet
                    written = 0
            assert 0 < written < len(events), (written, stream.poll())
            postgres = EmbeddedPostgres(settings).status()["pid"]
            os.kill(postgres, signal.SIGKILL)
            out, err = stream.communicate(timeout=300)
        finally:
            if stream.poll() is None:
                os.killpg(stream.pid, signal.SIGKILL)
        # the stream ends on its own, with one line naming the cause
        assert stream.returncode == 1, out[-2000:] + err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        (line,) = [x for x in err.splitlines() if x.startswith("aqi:")]
        assert line.startswith("aqi: error:"), err[-3000:]

        up = run_aqi(["services", "up"], env, tmp_path, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        again = run_aqi(["stream", "--available-now"], env, tmp_path, timeout=900)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
        keys = raw_keys(url)
        assert sum(keys.values()) == len(events)  # 0 doubled
        assert keys == event_keys(events)  # 0 lost
        assert bronze_count(settings.aq_home) == len(events)
