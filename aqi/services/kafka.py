"""The embedded Apache Kafka: KRaft nodes (broker + controller in one JVM) on 127.0.0.1.

What users run in production, started from the jars ``make jvm`` resolved from Maven Central
(``jvm/kafka/pom.xml``; never downloaded here) with ``java -cp ... kafka.Kafka``:

- one node by default, its broker on ``AQ_KAFKA_PORT``; ``aqi services up --kafka-brokers 3``
  makes a three-node cluster whose topics get replication factor 3 and
  ``min.insync.replicas=2`` by default, so one node can die without losing an acknowledged
  event (the producer sends with ``acks=all``);
- each node's log directory and configuration live under ``AQ_HOME/kafka/node-<id>/``; the
  storage is formatted once (``kafka.tools.StorageTool format``) and the cluster id and
  ports are kept in ``AQ_HOME/kafka/cluster.json`` (:class:`aqi.core.connections.KafkaLayout`);
- the heap is capped at :data:`HEAP` per node; Kafka keeps its log in files (the page cache),
  not in the heap, so a ``kill -9`` of the process loses nothing it acknowledged, and ``up``
  recovers the log and starts it again.

Public surface: :class:`EmbeddedKafka`, :func:`kafka_version`.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aqi.core.config import Settings
from aqi.core.connections import (
    EMBEDDED_HOST,
    KafkaLayout,
    KafkaNode,
    kafka_bootstrap_servers,
    kafka_layout_path,
    read_kafka_layout,
    write_kafka_layout,
)
from aqi.core.environments import jvm_jars
from aqi.core.errors import AqiError, ServiceError
from aqi.core.topics import KafkaUnavailable, ensure_topic, wait_for_broker
from aqi.services.process import (
    Daemon,
    PidFile,
    port_is_open,
    spawn_daemon,
    stop_daemons,
    wait_until,
)

__all__ = ["HEAP", "EmbeddedKafka", "kafka_version"]

HOST = EMBEDDED_HOST
#: maximum (and initial) heap of each node: ample for this project's rates (docs/benchmarks.md)
HEAP = "512m"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
Echo = Callable[[str], None]

_HEAP_OPTIONS = (f"-Xms{HEAP}", f"-Xmx{HEAP}", "-XX:MaxMetaspaceSize=256m")
#: Kafka's own collector settings (kafka-run-class.sh); KAFKA_JVM_PERFORMANCE_OPTS replaces
#: them, as it does there (the tests' short-lived brokers take C1 and the serial collector)
_PERFORMANCE_OPTIONS = (
    "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
)  # fmt: skip
_OTHER_OPTIONS = ("-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true")
#: root WARN keeps a laptop's log small; the lines that say the node started are kept
_LOG4J = """\
# written by aqi (aqi/services/kafka.py): everything to stdout, which is AQ_HOME/logs/{log}
status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
logger.version.name = org.apache.kafka.common.utils.AppInfoParser
logger.version.level = info
"""


def kafka_version() -> str:
    """The Apache Kafka version of the installed jars (from ``kafka_2.13-<version>.jar``)."""
    for jar in jvm_jars("kafka"):
        if jar.name.startswith("kafka_2.13-"):
            return jar.name.removeprefix("kafka_2.13-").removesuffix(".jar")
    raise ServiceError("the Kafka jars lack kafka_2.13-*.jar: run `make jvm`")


class EmbeddedKafka:
    """Start, stop and describe the project's own Kafka cluster (one node unless asked)."""

    name = "kafka"

    def __init__(self, settings: Settings, brokers: int | None = None) -> None:
        self.settings = settings
        self.brokers = brokers
        self.port = settings.kafka_port

    # --- public -----------------------------------------------------------------------
    def up(self, echo: Echo = print) -> dict:
        """Start the nodes that are not running, wait for the cluster, ensure the topic."""
        layout = self._layout()
        started = time.monotonic()
        starting = []
        for node in layout.nodes:
            record = self._pidfile(node).live()
            if record is not None:
                echo(f"kafka: {self._label(node, 'already running')} (pid {record.pid}, "
                     f"{HOST}:{self._broker_port(node)})")  # fmt: skip
                continue
            starting.append(node)
        if starting:
            classpath = self._classpath()
            version = kafka_version()
            children = {}
            for node in starting:
                self._pidfile(node).remove()
                self._check_ports(node)
                self._format(layout, node, classpath, echo)
                echo(f"kafka: starting Apache Kafka {version}{self._label(node, '')} on "
                     f"{HOST}:{self._broker_port(node)} ...")  # fmt: skip
                children[node.node_id] = self._start(node, classpath)
            self._wait_ready(layout, starting, children)
            echo(f"kafka: ready in {time.monotonic() - started:.1f} s")
        servers = kafka_bootstrap_servers(self.settings)
        try:
            created = ensure_topic(
                servers, self.settings.kafka_topic, self.settings.kafka_partitions
            )
        except KafkaUnavailable as exc:
            raise ServiceError(f"kafka: {exc}; see {self._log_path(layout.nodes[0])}") from None
        if created:
            echo(
                f"kafka: created topic {self.settings.kafka_topic} "
                f"({self.settings.kafka_partitions} partitions)"
            )
        return self.status()

    def down(self, echo: Echo = print) -> None:
        """Stop every node (all at once: a cluster cannot shut down in order without quorum)."""
        layout = read_kafka_layout(self.settings)
        nodes = layout.nodes if layout is not None else (KafkaNode(1, self.port, 0),)
        daemons = [
            Daemon(self._label(node, "").strip(), self._pidfile(node), stop_timeout=STOP_TIMEOUT_S)
            for node in nodes
        ]
        stop_daemons("kafka", daemons, echo, together=True)

    def kill(self, node_id: int) -> int:
        """SIGKILL one node (for failure tests); returns its pid."""
        layout = self._existing_layout()
        node = next(n for n in layout.nodes if n.node_id == node_id)
        record = self._pidfile(node).live()
        if record is None:
            raise ServiceError(f"kafka: node {node_id} is not running")
        os.kill(record.pid, signal.SIGKILL)
        wait_until(lambda: not record.is_alive(), timeout=30, reap=record.pid)
        return record.pid

    def status(self) -> dict:
        layout = read_kafka_layout(self.settings)
        nodes = layout.nodes if layout is not None else (KafkaNode(1, self.port, 0),)
        described = []
        for node in nodes:
            record = self._pidfile(node).live()
            described.append({
                "node_id": node.node_id,
                "pid": record.pid if record else None,
                "running": record is not None and port_is_open(HOST, self._broker_port(node)),
                "address": f"{HOST}:{self._broker_port(node)}",
                "controller": f"{HOST}:{node.controller_port}" if node.controller_port else None,
                "log_dir": str(self._node_dir(node) / "data"),
                "log": str(self._log_path(node)),
            })  # fmt: skip
        try:
            broker = f"Apache Kafka {kafka_version()} (KRaft)"
        except AqiError:
            broker = "Apache Kafka (jars not installed: make jvm)"
        return {
            "managed": "embedded",
            "running": all(n["running"] for n in described),
            "pid": described[0]["pid"],
            "bootstrap_servers": kafka_bootstrap_servers(self.settings),
            "topic": self.settings.kafka_topic,
            "broker": broker,
            "brokers": len(described),
            "heap_per_node": HEAP,
            "data_dir": str(self.settings.kafka_dir),
            "log": str(self._log_path(nodes[0])),
            "nodes": described,
        }

    # --- layout ---------------------------------------------------------------------------
    def _layout(self) -> KafkaLayout:
        """The persisted layout; created (cluster id, ports) on the very first ``up``."""
        layout = read_kafka_layout(self.settings)
        if layout is None:
            if kafka_layout_path(self.settings).exists():
                raise ServiceError(
                    f"kafka: {kafka_layout_path(self.settings)} is unreadable; stop the "
                    f"services and remove {self.settings.kafka_dir} to start afresh"
                )
            layout = self._new_layout(self.brokers or 1)
            write_kafka_layout(self.settings, layout)
            return layout
        if self.brokers is not None and self.brokers != len(layout.nodes):
            raise ServiceError(
                f"kafka: the embedded Kafka in {self.settings.kafka_dir} has "
                f"{len(layout.nodes)} broker(s), not {self.brokers}; to change that, "
                f"`aqi services down` and remove {self.settings.kafka_dir} (its topics are "
                f"deleted), then `aqi services up --kafka-brokers {self.brokers}`"
            )
        return layout

    def _existing_layout(self) -> KafkaLayout:
        layout = read_kafka_layout(self.settings)
        if layout is None:
            raise ServiceError("kafka: not set up yet (aqi services up)")
        return layout

    def _new_layout(self, brokers: int) -> KafkaLayout:
        """Node 1's broker on AQ_KAFKA_PORT; the other ports the next free ones after it."""
        taken = {self.port}
        nodes = []
        for node_id in range(1, brokers + 1):
            broker = self.port if node_id == 1 else _next_free_port(self.port, taken)
            taken.add(broker)
            controller = _next_free_port(self.port, taken)
            taken.add(controller)
            nodes.append(KafkaNode(node_id, broker, controller))
        return KafkaLayout(cluster_id=_new_cluster_id(), nodes=tuple(nodes))

    # --- one node -------------------------------------------------------------------------
    def _label(self, node: KafkaNode, what: str, *, before: bool = False) -> str:
        """``what`` said of the broker: plain for one node, naming the node in a cluster."""
        layout = read_kafka_layout(self.settings)
        if layout is None or len(layout.nodes) == 1:
            return what
        name = f"node {node.node_id}"
        if not what:
            return f" {name}"
        return f"{what} {name}" if before else f"{name} {what}"

    def _broker_port(self, node: KafkaNode) -> int:
        return self.port if node.node_id == 1 else node.broker_port

    def _node_dir(self, node: KafkaNode) -> Path:
        return self.settings.kafka_dir / f"node-{node.node_id}"

    def _pidfile(self, node: KafkaNode) -> PidFile:
        name = "kafka" if node.node_id == 1 else f"kafka-{node.node_id}"
        return PidFile(self.settings.run_dir / f"{name}.pid")

    def _log_path(self, node: KafkaNode) -> Path:
        name = "kafka" if node.node_id == 1 else f"kafka-{node.node_id}"
        return self.settings.logs_dir / f"{name}.log"

    def _classpath(self) -> str:
        return os.pathsep.join(str(jar) for jar in jvm_jars("kafka"))

    def _check_ports(self, node: KafkaNode) -> None:
        if port_is_open(HOST, self._broker_port(node)):
            if node.node_id == 1:
                raise ServiceError(
                    f"AQ_KAFKA_PORT: {HOST}:{self.port} is already in use by another program; "
                    "set AQ_KAFKA_PORT to a free port"
                )
            raise ServiceError(self._port_taken(node, self._broker_port(node), "broker"))
        if port_is_open(HOST, node.controller_port):
            raise ServiceError(self._port_taken(node, node.controller_port, "controller"))

    def _port_taken(self, node: KafkaNode, port: int, role: str) -> str:
        return (
            f"kafka: {HOST}:{port} ({role} of node {node.node_id}, kept in "
            f"{kafka_layout_path(self.settings)}) is in use by another program; stop it, or "
            f"remove {self.settings.kafka_dir} to start afresh (its topics are deleted)"
        )

    def _write_config(self, layout: KafkaLayout, node: KafkaNode) -> Path:
        folder = self._node_dir(node)
        folder.mkdir(parents=True, exist_ok=True)
        replicas = len(layout.nodes)
        voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in layout.nodes)
        min_isr = 2 if replicas >= 3 else 1
        properties = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{HOST}:{self._broker_port(node)},"
            f"CONTROLLER://{HOST}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self._broker_port(node)}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": folder / "data",
            "num.partitions": self.settings.kafka_partitions,
            # topics are created by the project (aqi.core.topics.ensure_topic), never by a typo
            "auto.create.topics.enable": "false",
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": 0,
            # a node restarted after kill -9 re-registers once its old session expired: keep
            # that short (default 9 s), which also moves leaders off a dead node sooner
            "broker.session.timeout.ms": 4000,
            "broker.heartbeat.interval.ms": 1000,
            "num.network.threads": 2,
            "num.io.threads": 4,
        }
        path = folder / "server.properties"
        lines = ["# written by aqi (aqi/services/kafka.py) at every start"]
        lines += [f"{key}={value}" for key, value in properties.items()]
        path.write_text("\n".join(lines) + "\n")
        (folder / "log4j2.properties").write_text(
            _LOG4J.format(log=self._log_path(node).name)
        )
        return path

    def _jvm_options(self) -> tuple[str, ...]:
        """The node JVM's options: heap, then KAFKA_JVM_PERFORMANCE_OPTS or Kafka's own."""
        performance = self.settings.kafka_jvm_performance_opts or _PERFORMANCE_OPTIONS
        return (*_HEAP_OPTIONS, *performance, *_OTHER_OPTIONS)

    def _format(self, layout: KafkaLayout, node: KafkaNode, classpath: str, echo: Echo) -> None:
        """Write the node's configuration; format its log directory the first time only."""
        config = self._write_config(layout, node)
        if (self._node_dir(node) / "data" / "meta.properties").is_file():
            return
        echo(f"kafka: formatting {self._node_dir(node) / 'data'} (cluster {layout.cluster_id})")
        result = subprocess.run(
            [_java(), *self._jvm_options(), "-cp", classpath,
             f"-Dlog4j2.configurationFile={self._node_dir(node) / 'log4j2.properties'}",
             "kafka.tools.StorageTool", "format", "--cluster-id", layout.cluster_id,
             "--config", str(config)],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ServiceError(f"kafka: formatting the log directory failed: {' | '.join(tail)}")

    def _start(self, node: KafkaNode, classpath: str) -> subprocess.Popen[bytes]:
        folder = self._node_dir(node)
        proc = spawn_daemon(
            [_java(), *self._jvm_options(), "-cp", classpath,
             f"-Dlog4j2.configurationFile={folder / 'log4j2.properties'}",
             "kafka.Kafka", str(folder / "server.properties")],
            log_path=self._log_path(node),
            cwd=folder,
        )  # fmt: skip
        address = f"{HOST}:{self._broker_port(node)}"
        self._pidfile(node).write(proc.pid, f"kafka node {node.node_id}", address)
        return proc

    def _wait_ready(
        self,
        layout: KafkaLayout,
        started: list[KafkaNode],
        children: dict[int, subprocess.Popen[bytes]],
    ) -> None:
        """Every started node accepts connections, and the cluster answers with all brokers."""
        for node in started:
            proc = children[node.node_id]
            ready = wait_until(
                lambda p=proc, n=node: p.poll() is not None
                or port_is_open(HOST, self._broker_port(n)),
                timeout=START_TIMEOUT_S,
            )
            if not ready or proc.poll() is not None:
                self._pidfile(node).remove()
                if proc.poll() is None:
                    proc.kill()
                raise ServiceError(
                    f"kafka: {self._label(node, 'did not start')}, see {self._log_path(node)}"
                )
        servers = kafka_bootstrap_servers(self.settings)
        try:
            wait_for_broker(servers, timeout=START_TIMEOUT_S, brokers=len(layout.nodes))
        except KafkaUnavailable as exc:
            raise ServiceError(f"kafka: {exc}; see {self._log_path(started[0])}") from None


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").is_file():
        return str(Path(home, "bin", "java"))
    found = shutil.which("java")
    if found is None:
        raise ServiceError(
            "Apache Kafka needs Java 17+: install it (e.g. apt-get install -y "
            "openjdk-17-jre-headless)"
        )
    return found


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 characters)."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):  # Kafka's own rule: a leading '-' reads as an option
            return value


def _next_free_port(after: int, taken: set[int]) -> int:
    """The first port above ``after`` that nothing listens on and we have not assigned."""
    port = after + 1
    while port < 65535:
        if port not in taken and _bindable(port):
            return port
        port += 1
    raise ServiceError(f"kafka: no free port above {after} on {HOST}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
            return True
        except OSError:
            return False
