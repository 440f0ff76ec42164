"""Where the services are: the one place that turns settings into connection addresses.

Every component (ingestion, Spark, dbt, Airflow, Superset, tests) asks here instead of
re-deriving URLs, so that "embedded" versus "external" is decided in exactly one spot:
an external service is used when its variable (``AQ_DATABASE_URL``,
``KAFKA_BOOTSTRAP_SERVERS``) is set, the embedded one otherwise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

from aqi.core.config import Settings
from aqi.core.secrets import get_or_create_secret

__all__ = [
    "APP_ROLE",
    "DATABASES",
    "DATABASE_OWNERS",
    "SUPERUSER",
    "KafkaLayout",
    "KafkaNode",
    "app_password",
    "database_url",
    "embedded_database_url",
    "kafka_bootstrap_servers",
    "kafka_layout_path",
    "read_kafka_layout",
    "role_password",
    "superuser_password",
    "write_kafka_layout",
]

#: role that owns the warehouse in the embedded server (the stream, dbt and the checks use it)
APP_ROLE = "aq"
#: superuser of the embedded server (used only by `aqi services` to provision)
SUPERUSER = "postgres"
#: databases the embedded server provides: the warehouse first, then Airflow's and Superset's metadata
DATABASES = ("aq", "airflow", "superset")
#: the role that owns each database, as in docker-compose: Airflow and Superset hold their own
#: metadata's password, never the warehouse owner's
DATABASE_OWNERS = {"aq": APP_ROLE, "airflow": "airflow", "superset": "superset"}
#: file under AQ_HOME/secrets of each owner role's password (the names predate the roles)
_ROLE_SECRETS = {
    APP_ROLE: "postgres_aq_password",
    "airflow": "postgres_airflow_metadata_password",
    "superset": "postgres_superset_metadata_password",
}
EMBEDDED_HOST = "127.0.0.1"


def database_url(settings: Settings, database: str | None = None) -> str:
    """SQLAlchemy/libpq URL of the warehouse (or of ``database`` on the same server)."""
    if settings.database_url is not None:
        if database is None:
            return settings.database_url
        base = settings.database_url.rsplit("/", 1)[0]
        query = settings.database_url.partition("?")[2]
        return f"{base}/{database}" + (f"?{query}" if query else "")
    return embedded_database_url(settings, database)


def embedded_database_url(settings: Settings, database: str | None = None) -> str:
    """URL of ``database`` (default the warehouse) on the embedded server, as its owner role.

    A database that is not one of :data:`DATABASES` (a test's scratch database) belongs to
    :data:`APP_ROLE`.
    """
    database = database or DATABASES[0]
    role = DATABASE_OWNERS.get(database, APP_ROLE)
    password = quote(role_password(settings, role), safe="")
    return f"postgresql://{role}:{password}@{EMBEDDED_HOST}:{settings.pg_port}/{database}"


def kafka_bootstrap_servers(settings: Settings) -> str:
    """``host:port[,...]`` of Kafka: the external one if configured, else the embedded one.

    The embedded cluster has one broker on ``AQ_KAFKA_PORT`` unless ``aqi services up
    --kafka-brokers N`` made it larger: then every broker of its layout is listed.
    """
    if settings.kafka_bootstrap_servers is not None:
        return settings.kafka_bootstrap_servers
    layout = read_kafka_layout(settings)
    ports = [settings.kafka_port]
    if layout is not None:
        ports += [node.broker_port for node in layout.nodes[1:]]
    return ",".join(f"{EMBEDDED_HOST}:{port}" for port in ports)


@dataclass(frozen=True)
class KafkaNode:
    """One process of the embedded Kafka: a KRaft broker and controller in one JVM.

    Node 1's broker listens on ``AQ_KAFKA_PORT`` (its ``broker_port`` here is informative);
    the other ports are chosen when the cluster is first formatted and kept, since the
    controllers find each other by them.
    """

    node_id: int
    broker_port: int
    controller_port: int


@dataclass(frozen=True)
class KafkaLayout:
    """The embedded Kafka cluster as formatted: its id and its nodes (1 or more)."""

    cluster_id: str
    nodes: tuple[KafkaNode, ...]


def kafka_layout_path(settings: Settings) -> Path:
    return settings.kafka_dir / "cluster.json"


def read_kafka_layout(settings: Settings) -> KafkaLayout | None:
    """The layout of the embedded Kafka in ``AQ_HOME/kafka``, or None before the first ``up``."""
    try:
        data = json.loads(kafka_layout_path(settings).read_text())
        return KafkaLayout(
            cluster_id=str(data["cluster_id"]),
            nodes=tuple(KafkaNode(**node) for node in data["nodes"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_kafka_layout(settings: Settings, layout: KafkaLayout) -> None:
    path = kafka_layout_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(layout), indent=2) + "\n")
    tmp.replace(path)


def app_password(settings: Settings) -> str:
    """The warehouse owner's password (role :data:`APP_ROLE`)."""
    return role_password(settings, APP_ROLE)


def role_password(settings: Settings, role: str) -> str:
    """The password of one of the owner roles of :data:`DATABASE_OWNERS` (generated once)."""
    return get_or_create_secret(settings.secrets_dir, _ROLE_SECRETS[role])


def superuser_password(settings: Settings) -> str:
    return get_or_create_secret(settings.secrets_dir, "postgres_superuser_password")
