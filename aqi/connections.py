"""Where the services are: the one place that turns settings into connection addresses.

Every component (ingestion, Spark, dbt, Airflow, Superset, tests) asks here instead of
re-deriving URLs, so that "embedded" versus "external" is decided in exactly one spot:
an external service is used when its variable (``AQ_DATABASE_URL``,
``KAFKA_BOOTSTRAP_SERVERS``) is set, the embedded one otherwise.
"""

from __future__ import annotations

from urllib.parse import quote

from aqi.config import Settings
from aqi.secrets import get_or_create_secret

__all__ = [
    "APP_ROLE",
    "DATABASES",
    "SUPERUSER",
    "app_password",
    "database_url",
    "embedded_database_url",
    "kafka_bootstrap_servers",
    "superuser_password",
]

#: role that owns the project's databases in the embedded server
APP_ROLE = "aq"
#: superuser of the embedded server (used only by `aqi services` to provision)
SUPERUSER = "postgres"
#: databases the embedded server provides: the warehouse first, then Airflow's and Superset's metadata
DATABASES = ("aq", "airflow", "superset")
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
    password = quote(app_password(settings), safe="")
    return (
        f"postgresql://{APP_ROLE}:{password}@{EMBEDDED_HOST}:{settings.pg_port}/"
        f"{database or DATABASES[0]}"
    )


def kafka_bootstrap_servers(settings: Settings) -> str:
    """``host:port[,...]`` of the broker: the external one if configured, else the embedded one."""
    if settings.kafka_bootstrap_servers is not None:
        return settings.kafka_bootstrap_servers
    return f"{EMBEDDED_HOST}:{settings.kafka_port}"


def app_password(settings: Settings) -> str:
    return get_or_create_secret(settings.secrets_dir, "postgres_aq_password")


def superuser_password(settings: Settings) -> str:
    return get_or_create_secret(settings.secrets_dir, "postgres_superuser_password")
