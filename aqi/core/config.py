"""The project's configuration, in one place.

Every setting comes from an environment variable, or from an optional ``.env`` file in the
working directory (real environment variables win over the file). Values are validated when
they are loaded so that a typo fails fast with one line that names the variable, instead of
a traceback from deep inside Kafka, Spark or psycopg later.

Public surface:

- :class:`Settings` - the validated, typed settings (frozen).
- :func:`load_settings` - build them from the environment (+ ``.env``).
- :data:`ENV_VARS` - every variable this module reads, with its description; the
  ``.env.example`` file and the docker-compose file are checked against it in tests.
- :class:`ConfigError` - raised for an invalid value; its message names the variable.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from aqi.core.aqi_categories import AQI_CATEGORIES, DEFAULT_ALERT_CATEGORY

__all__ = [
    "ENV_VARS",
    "SECRET_VARS",
    "STREAM_JIT_MODES",
    "STREAM_MAX_OFFSETS_PER_TRIGGER",
    "STREAM_MAX_RECORDS_PER_TASK",
    "STREAM_QUICK_JIT_MAX_BACKLOG",
    "STREAM_TRIGGER_SECONDS",
    "ConfigError",
    "Settings",
    "load_settings",
    "mask_url",
    "parse_bbox",
    "parse_country",
    "parse_emails",
    "parse_location_ids",
]

DEFAULT_OPENAQ_BASE_URL = "https://api.openaq.org/v3"
#: OpenAQ's public S3 archive (Open Data on AWS), read anonymously over HTTPS
DEFAULT_ARCHIVE_BASE_URL = "https://openaq-data-archive.s3.amazonaws.com"
DEFAULT_KAFKA_TOPIC = "openaq.measurements"
#: `aqi stream`: a new micro-batch at most every 2 s when records arrive, so an event is in
#: raw a few seconds after it was produced (docs/benchmarks.md); no records, no batch
STREAM_TRIGGER_SECONDS = 2.0
#: `aqi stream`: records per micro-batch at most. Large batches drain a backlog fastest (a
#: batch has a fixed cost of a few hundred ms) and 250k parsed rows fit the default memory
STREAM_MAX_OFFSETS_PER_TRIGGER = 250_000
#: `aqi stream`: a Kafka partition's share of a batch is split into Spark tasks of at most
#: this many records (Spark's maxRecordsPerPartition), so a large batch keeps every core busy
#: and one task's JVM parsing overlaps another's writing to PostgreSQL (docs/benchmarks.md)
STREAM_MAX_RECORDS_PER_TASK = 40_000
#: `aqi stream --available-now` (--jit auto): a drain of at most this many records starts
#: Spark's driver with the quick JIT (C1 only): ~40% less CPU for a small drain such as each
#: openaq_elt run's, as fast or faster up to ~120k records; at 600k the full JIT's optimised
#: code is ~25% faster and pays for itself (docs/benchmarks.md, "Driver JIT")
STREAM_QUICK_JIT_MAX_BACKLOG = 200_000
#: `aqi stream --jit`: auto (quick for a drain as above, else full), quick, full
STREAM_JIT_MODES = ("auto", "quick", "full")
#: openaq_elt runs every this many minutes (dags/openaq_elt.py); Superset's cached chart
#: results expire after as long, and each successful run clears them (aqi/services/superset_cache.py)
ELT_INTERVAL_MINUTES = 15

#: Every environment variable the project reads -> (default shown to people, description).
ENV_VARS: dict[str, tuple[str, str]] = {
    "OPENAQ_API_KEY": ("", "OpenAQ v3 API key (sent as X-API-Key). Secret."),
    "OPENAQ_BASE_URL": (DEFAULT_OPENAQ_BASE_URL, "Base URL of the OpenAQ v3 API (or a mock)."),
    "AQ_ARCHIVE_BASE_URL": (
        DEFAULT_ARCHIVE_BASE_URL,
        "aqi backfill --source archive: base URL of OpenAQ's S3 archive bucket (or a mock).",
    ),
    "KAFKA_BOOTSTRAP_SERVERS": (
        "",
        "host:port[,host:port...] of an external Kafka; unset = start the embedded broker.",
    ),
    "AQ_KAFKA_TOPIC": (DEFAULT_KAFKA_TOPIC, "Topic that carries one event per measurement."),
    "AQ_KAFKA_PARTITIONS": ("3", "Partitions of the topic when the project creates it."),
    "AQ_KAFKA_WAIT_SECONDS": (
        "15",
        (
            "Seconds aqi stream, collect, backfill, replay and services up wait for a broker "
            "that does not answer yet (one still starting, as in docker compose) before they "
            "give up with one line."
        ),
    ),
    "KAFKA_JVM_PERFORMANCE_OPTS": (
        "",
        (
            "JVM options for the embedded Kafka broker's garbage collector and compiler (Kafka's "
            "own variable, as in kafka-run-class.sh); unset = Kafka's: G1, 20 ms pauses."
        ),
    ),
    "AQ_DATABASE_URL": (
        "",
        (
            "postgresql://user:password@host:port/db of an external PostgreSQL; "
            "unset = start the embedded server. Secret (password)."
        ),
    ),
    "AQ_HOME": ("./.aq", "Where data, checkpoints, logs, Bronze Parquet and secrets live."),
    "AQ_PG_PORT": ("55432", "TCP port of the embedded PostgreSQL on 127.0.0.1."),
    "AQ_KAFKA_PORT": ("59092", "TCP port of the embedded Apache Kafka broker on 127.0.0.1."),
    "AQ_AIRFLOW_PORT": ("58080", "TCP port of the embedded Airflow API server / UI on 127.0.0.1."),
    "AQ_AIRFLOW_PARALLELISM": (
        "4",
        (
            "Tasks the embedded Airflow runs at once (LocalExecutor); each worker takes "
            "~150 MB. The dbt build runs in one task while its per-model tasks watch it."
        ),
    ),
    "AQ_SUPERSET_PORT": ("8088", "TCP port of the embedded Superset (dashboards) on 127.0.0.1."),
    "AQ_SUPERSET_RESULTS_CACHE": (
        "",
        (
            "Superset's cache of chart results: unset = files under AQ_HOME/superset/cache/"
            "results; redis://[:password@]host:port/db (docker compose: Redis); off = none. "
            "Expires with openaq_elt's schedule and is cleared when a run publishes. Secret "
            "(a Redis password)."
        ),
    ),
    "AQ_DOCS_PORT": ("8080", "TCP port of the dbt docs site (aqi docs, aqi demo) on 127.0.0.1."),
    "OPENAQ_REQUESTS_PER_MINUTE": (
        "60",
        "Client-side cap on OpenAQ requests in any 60 s (free tier: 60); raise for paid tiers.",
    ),
    "OPENAQ_REQUESTS_PER_HOUR": (
        "2000",
        "Client-side cap on OpenAQ requests in any hour (free tier: 2,000).",
    ),
    "AQ_COLLECT_LOCATIONS": ("", "aqi collect: comma-separated OpenAQ location ids to poll."),
    "AQ_COLLECT_BBOX": ("", "aqi collect: poll the locations in min_lon,min_lat,max_lon,max_lat."),
    "AQ_COLLECT_COUNTRY": ("", "aqi collect: poll the locations of an ISO 3166-1 alpha-2 country."),
    "AQ_COLLECT_INTERVAL_MINUTES": ("5", "aqi collect: minutes between two polling cycles."),
    "AQ_COLLECT_WORLD": ("", "aqi collect: 1 = poll every OpenAQ location (the world)."),
    "AQ_COLLECT_PARAMETERS": (
        "pm25,pm10,o3,no2,so2,co",
        "aqi collect: parameter names to read (every unit of each).",
    ),
    "AQ_COLLECT_BUDGET_SHARE": (
        "0.5",
        (
            "aqi collect: share of the key's requests per minute and per hour the collector may "
            "use (the rest is left to backfills); the interval widens to fit it."
        ),
    ),
    "AQ_BRONZE_URI": (
        "",
        (
            "Where aqi stream writes Bronze Parquet: a path or an object-store URI "
            "(s3a://bucket/prefix); unset = AQ_HOME/bronze/openaq."
        ),
    ),
    "AQ_DEBUG": ("", "1: on a failure, print the Python trace before the one-line error."),
    # --- alerts (aqi/alerts.py): off until a channel is configured ---------------------
    "AQ_ALERT_SMTP_HOST": ("", "Alerts by e-mail: the SMTP server; unset = no e-mail."),
    "AQ_ALERT_SMTP_PORT": ("587", "Alerts by e-mail: the SMTP port (465 = implicit TLS)."),
    "AQ_ALERT_SMTP_STARTTLS": ("1", "Alerts by e-mail: 1 = STARTTLS before logging in."),
    "AQ_ALERT_SMTP_USER": ("", "Alerts by e-mail: SMTP login; unset = no login."),
    "AQ_ALERT_SMTP_PASSWORD": ("", "Alerts by e-mail: SMTP password. Secret."),
    "AQ_ALERT_EMAIL_FROM": ("", "Alerts by e-mail: the sender; unset = AQ_ALERT_SMTP_USER."),
    "AQ_ALERT_EMAIL_TO": ("", "Alerts by e-mail: comma-separated recipients."),
    "AQ_ALERT_WEBHOOK_URL": (
        "",
        "Alerts as a JSON POST to this http(s) URL; unset = no webhook. Secret (its token).",
    ),
    "AQ_ALERT_DEADLINE_MINUTES": (
        "45",
        "Alert once when no openaq_elt run has succeeded for this many minutes.",
    ),
    "AQ_AQI_ALERT_CATEGORY": (
        DEFAULT_ALERT_CATEGORY,
        (
            "AQI alerts (gold.aqi_alerts): the NowCast AQI category, or worse, that opens an "
            "episode and alerts once (Unhealthy for Sensitive Groups, Unhealthy, Very "
            "Unhealthy, Hazardous, ...); off = no AQI alerts."
        ),
    ),
}

#: Variables whose values are never printed or logged in clear.
SECRET_VARS = frozenset(
    {
        "OPENAQ_API_KEY",
        "AQ_DATABASE_URL",
        "AQ_ALERT_SMTP_PASSWORD",
        "AQ_ALERT_WEBHOOK_URL",
        "AQ_SUPERSET_RESULTS_CACHE",
    }
)

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-_]+):(\d{1,5})$")
_TOPIC = re.compile(r"^[A-Za-z0-9._\-]{1,249}$")


class ConfigError(ValueError):
    """An invalid configuration value. ``str(err)`` is one line naming the variable."""

    def __init__(self, var: str, problem: str) -> None:
        self.var = var
        super().__init__(f"{var}: {problem}")


@dataclass(frozen=True)
class Settings:
    """Validated settings. Paths are absolute; ``None`` means "use the embedded service"."""

    openaq_api_key: str | None
    openaq_base_url: str
    kafka_bootstrap_servers: str | None
    kafka_topic: str
    kafka_partitions: int
    kafka_wait_seconds: float
    database_url: str | None
    aq_home: Path
    pg_port: int
    kafka_port: int
    airflow_port: int = 58080
    #: KAFKA_JVM_PERFORMANCE_OPTS, split as a shell would; empty = Kafka's own defaults
    kafka_jvm_performance_opts: tuple[str, ...] = ()
    airflow_parallelism: int = 4
    superset_port: int = 8088
    docs_port: int = 8080
    #: Superset's results cache: None = files (superset_results_cache_dir), "off", or redis://
    superset_results_cache: str | None = field(default=None, repr=False)
    openaq_requests_per_minute: int = 60
    openaq_requests_per_hour: int = 2000
    collect_locations: tuple[int, ...] = ()
    collect_bbox: tuple[float, float, float, float] | None = None
    collect_country: str | None = None
    collect_interval_minutes: float = 5.0
    collect_world: bool = False
    collect_parameters: tuple[str, ...] = ("pm25", "pm10", "o3", "no2", "so2", "co")
    collect_budget_share: float = 0.5
    bronze_uri: str | None = None
    archive_base_url: str = DEFAULT_ARCHIVE_BASE_URL
    #: alerts (aqi/alerts.py): e-mail when alert_smtp_host is set, webhook when its URL is
    alert_smtp_host: str | None = None
    alert_smtp_port: int = 587
    alert_smtp_starttls: bool = True
    alert_smtp_user: str | None = None
    alert_smtp_password: str | None = field(default=None, repr=False)
    alert_email_from: str | None = None
    alert_email_to: tuple[str, ...] = ()
    alert_webhook_url: str | None = field(default=None, repr=False)
    alert_deadline_minutes: float = 45.0
    #: AQI alerts (aqi/aqi_alerts.py): an episode opens at this category or worse; None = off
    aqi_alert_category: str | None = DEFAULT_ALERT_CATEGORY
    #: the raw variables that were set (after .env merge), for `aqi config` and children
    source: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    # --- derived locations under AQ_HOME -------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """Pid files, locks and service state."""
        return self.aq_home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.aq_home / "logs"

    @property
    def secrets_dir(self) -> Path:
        """Generated passwords (0600 files in a 0700 folder)."""
        return self.aq_home / "secrets"

    @property
    def postgres_data_dir(self) -> Path:
        return self.aq_home / "postgres" / "data"

    @property
    def kafka_dir(self) -> Path:
        """The embedded Kafka: its layout, configuration and log directories (one per node)."""
        return self.aq_home / "kafka"

    @property
    def bronze_dir(self) -> Path:
        return self.aq_home / "bronze" / "openaq"

    @property
    def bronze_location(self) -> str:
        """Where Bronze Parquet goes: ``AQ_BRONZE_URI`` if set, else ``bronze_dir``."""
        return self.bronze_uri or str(self.bronze_dir)

    @property
    def airflow_home(self) -> Path:
        """AIRFLOW_HOME of the embedded Airflow (config, logs)."""
        return self.aq_home / "airflow"

    @property
    def superset_home(self) -> Path:
        """SUPERSET_HOME of the embedded Superset (its data folder, version stamps)."""
        return self.aq_home / "superset"

    @property
    def superset_results_cache_dir(self) -> Path:
        """Superset's cached chart results when AQ_SUPERSET_RESULTS_CACHE is unset."""
        return self.superset_home / "cache" / "results"

    @property
    def exports_dir(self) -> Path:
        """CSV exports of the marts for BI tools other than Superset."""
        return self.aq_home / "exports"

    @property
    def docs_dir(self) -> Path:
        """The dbt docs site (one self-contained index.html) that ``aqi docs`` serves."""
        return self.aq_home / "dbt_docs"

    @property
    def gx_docs_dir(self) -> Path:
        """Great Expectations Data Docs (index.html)."""
        return self.aq_home / "gx_docs"

    @property
    def checkpoints_dir(self) -> Path:
        return self.aq_home / "checkpoints"

    @property
    def state_dir(self) -> Path:
        """Ingestion state: sent readings, backfill checkpoints, rate-limit history, caches."""
        return self.aq_home / "state"

    @property
    def embedded_postgres(self) -> bool:
        """True when the project runs its own PostgreSQL (``AQ_DATABASE_URL`` unset)."""
        return self.database_url is None

    @property
    def embedded_kafka(self) -> bool:
        """True when the project runs its own broker (``KAFKA_BOOTSTRAP_SERVERS`` unset)."""
        return self.kafka_bootstrap_servers is None


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    dotenv: Path | None = Path(".env"),
) -> Settings:
    """Read and validate the settings.

    ``environ`` defaults to ``os.environ``; ``dotenv`` (default ``./.env``, ``None`` to skip)
    supplies values for variables that are not set in ``environ``.
    """
    env = dict(_read_dotenv(dotenv)) if dotenv is not None else {}
    env.update(os.environ if environ is None else environ)
    values = {k: v.strip() for k, v in env.items() if k in ENV_VARS and v.strip() != ""}

    def get(var: str) -> str:
        return values.get(var, ENV_VARS[var][0])

    return Settings(
        openaq_api_key=values.get("OPENAQ_API_KEY"),
        openaq_base_url=_http_url("OPENAQ_BASE_URL", get("OPENAQ_BASE_URL")).rstrip("/"),
        kafka_bootstrap_servers=_bootstrap(values.get("KAFKA_BOOTSTRAP_SERVERS")),
        kafka_topic=_topic("AQ_KAFKA_TOPIC", get("AQ_KAFKA_TOPIC")),
        kafka_partitions=_int("AQ_KAFKA_PARTITIONS", get("AQ_KAFKA_PARTITIONS"), 1, 1000),
        kafka_wait_seconds=_positive_float("AQ_KAFKA_WAIT_SECONDS", get("AQ_KAFKA_WAIT_SECONDS")),
        database_url=_postgres_url(values.get("AQ_DATABASE_URL")),
        aq_home=_path("AQ_HOME", get("AQ_HOME")),
        pg_port=_int("AQ_PG_PORT", get("AQ_PG_PORT"), 1, 65535),
        kafka_port=_int("AQ_KAFKA_PORT", get("AQ_KAFKA_PORT"), 1, 65535),
        kafka_jvm_performance_opts=_jvm_options(
            "KAFKA_JVM_PERFORMANCE_OPTS", values.get("KAFKA_JVM_PERFORMANCE_OPTS")
        ),
        airflow_port=_int("AQ_AIRFLOW_PORT", get("AQ_AIRFLOW_PORT"), 1, 65535),
        airflow_parallelism=_int("AQ_AIRFLOW_PARALLELISM", get("AQ_AIRFLOW_PARALLELISM"), 1, 64),
        superset_port=_int("AQ_SUPERSET_PORT", get("AQ_SUPERSET_PORT"), 1, 65535),
        docs_port=_int("AQ_DOCS_PORT", get("AQ_DOCS_PORT"), 1, 65535),
        superset_results_cache=_results_cache(values.get("AQ_SUPERSET_RESULTS_CACHE")),
        openaq_requests_per_minute=_int(
            "OPENAQ_REQUESTS_PER_MINUTE", get("OPENAQ_REQUESTS_PER_MINUTE"), 1, 100_000
        ),
        openaq_requests_per_hour=_int(
            "OPENAQ_REQUESTS_PER_HOUR", get("OPENAQ_REQUESTS_PER_HOUR"), 1, 10_000_000
        ),
        collect_locations=parse_location_ids(
            "AQ_COLLECT_LOCATIONS", values.get("AQ_COLLECT_LOCATIONS", "")
        ),
        collect_bbox=parse_bbox("AQ_COLLECT_BBOX", values.get("AQ_COLLECT_BBOX")),
        collect_country=parse_country("AQ_COLLECT_COUNTRY", values.get("AQ_COLLECT_COUNTRY")),
        collect_interval_minutes=_positive_float(
            "AQ_COLLECT_INTERVAL_MINUTES", get("AQ_COLLECT_INTERVAL_MINUTES")
        ),
        collect_world=_flag("AQ_COLLECT_WORLD", values.get("AQ_COLLECT_WORLD")),
        collect_parameters=parse_parameters(
            "AQ_COLLECT_PARAMETERS", get("AQ_COLLECT_PARAMETERS")
        ),
        collect_budget_share=_share("AQ_COLLECT_BUDGET_SHARE", get("AQ_COLLECT_BUDGET_SHARE")),
        bronze_uri=values.get("AQ_BRONZE_URI"),
        archive_base_url=_http_url("AQ_ARCHIVE_BASE_URL", get("AQ_ARCHIVE_BASE_URL")).rstrip("/"),
        **_alert_settings(values, get),
        source=values,
    )


def _alert_settings(values: Mapping[str, str], get: Callable[[str], str]) -> dict:
    """The AQ_ALERT_* settings. A channel half configured is an error (e-mail settings but no
    server, a server but no recipient, a user without a password), not a silent "no alerts"."""
    host = values.get("AQ_ALERT_SMTP_HOST")
    port = _int("AQ_ALERT_SMTP_PORT", get("AQ_ALERT_SMTP_PORT"), 1, 65535)
    starttls = _flag("AQ_ALERT_SMTP_STARTTLS", get("AQ_ALERT_SMTP_STARTTLS"))
    user = values.get("AQ_ALERT_SMTP_USER")
    password = values.get("AQ_ALERT_SMTP_PASSWORD")
    to = parse_emails("AQ_ALERT_EMAIL_TO", values.get("AQ_ALERT_EMAIL_TO"))
    sender = values.get("AQ_ALERT_EMAIL_FROM") or user
    if host is None:
        stray = [v for v in _SMTP_ONLY if v in values]
        if stray:
            raise ConfigError(stray[0], "is set but AQ_ALERT_SMTP_HOST is not (no e-mail alerts)")
    else:
        if not re.fullmatch(r"[A-Za-z0-9.\-_]+|\[[0-9a-fA-F:.]+\]", host):
            raise ConfigError(
                "AQ_ALERT_SMTP_HOST", f"expected a host name or address, got {host!r}"
            )
        if not to:
            raise ConfigError(
                "AQ_ALERT_EMAIL_TO", "AQ_ALERT_SMTP_HOST is set: who gets the alerts?"
            )
        if (user is None) != (password is None):
            missing = "AQ_ALERT_SMTP_PASSWORD" if password is None else "AQ_ALERT_SMTP_USER"
            raise ConfigError(missing, "the SMTP login needs both a user and a password")
        if password is not None and not (starttls or port == 465 or _loopback(host)):
            raise ConfigError(
                "AQ_ALERT_SMTP_STARTTLS",
                "0 would send the SMTP password in clear: use 1 (or port 465, implicit TLS)",
            )
        if "AQ_ALERT_EMAIL_FROM" not in values and "@" not in (user or ""):
            raise ConfigError(
                "AQ_ALERT_EMAIL_FROM", "not set, and AQ_ALERT_SMTP_USER is no address to send from"
            )
        (sender,) = parse_emails("AQ_ALERT_EMAIL_FROM", sender)
    webhook = values.get("AQ_ALERT_WEBHOOK_URL")
    if webhook is not None:
        parts = urlsplit(webhook)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # not the value itself: it may hold the webhook's token
            raise ConfigError("AQ_ALERT_WEBHOOK_URL", "expected an http(s):// URL with a host")
    return {
        "alert_smtp_host": host,
        "alert_smtp_port": port,
        "alert_smtp_starttls": starttls,
        "alert_smtp_user": user,
        "alert_smtp_password": password,
        "alert_email_from": sender if host is not None else None,
        "alert_email_to": to,
        "alert_webhook_url": webhook,
        "alert_deadline_minutes": _positive_float(
            "AQ_ALERT_DEADLINE_MINUTES", get("AQ_ALERT_DEADLINE_MINUTES")
        ),
        "aqi_alert_category": parse_alert_category(
            "AQ_AQI_ALERT_CATEGORY", get("AQ_AQI_ALERT_CATEGORY")
        ),
    }


#: the e-mail settings that mean nothing without AQ_ALERT_SMTP_HOST
_SMTP_ONLY = (
    "AQ_ALERT_EMAIL_TO",
    "AQ_ALERT_EMAIL_FROM",
    "AQ_ALERT_SMTP_USER",
    "AQ_ALERT_SMTP_PASSWORD",
)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def mask_url(url: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db`` (for display and logs).

    An http(s) URL (a webhook: its path or query is often the token, as in Slack's
    ``/services/T…/B…/secret``) keeps only its scheme, host, port and first path segment:
    ``https://hooks.example.com/services/***``.
    """
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        host = parts.netloc.rsplit("@", 1)[-1]
        segments = parts.path.lstrip("/").split("/", 1)
        path = f"/{segments[0]}" if segments[0] else ""
        hidden = len(segments) > 1 or parts.query or parts.fragment or "@" in parts.netloc
        return f"{parts.scheme}://{host}{path}{'/***' if hidden else ''}"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


# --- validators: each raises ConfigError naming the variable -----------------------------


def _read_dotenv(path: Path) -> Mapping[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _int(var: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(var, f"expected an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(var, f"expected an integer between {lo} and {hi}, got {value}")
    return value


def _http_url(var: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(var, f"expected an http(s):// URL, got {raw!r}")
    return raw


def _bootstrap(raw: str | None) -> str | None:
    if raw is None:
        return None
    servers = [s.strip() for s in raw.split(",") if s.strip()]
    for server in servers:
        match = _HOST_PORT.match(server)
        if not match or not 0 < int(match.group(2)) < 65536:
            raise ConfigError(
                "KAFKA_BOOTSTRAP_SERVERS", f"expected host:port[,host:port...], got {server!r}"
            )
    return ",".join(servers)


def _topic(var: str, raw: str) -> str:
    if not _TOPIC.match(raw) or raw in (".", ".."):
        raise ConfigError(var, f"not a valid Kafka topic name (letters, digits, . _ -): {raw!r}")
    return raw


def _postgres_url(raw: str | None) -> str | None:
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ConfigError(
            "AQ_DATABASE_URL",
            f"expected postgresql://user:password@host:port/database, got {mask_url(raw)!r}",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError("AQ_DATABASE_URL", "the port is not a number in 1-65535") from None
    if not parts.path.strip("/"):
        raise ConfigError("AQ_DATABASE_URL", "the URL names no database (…/database)")
    return raw


def _path(var: str, raw: str) -> Path:
    path = Path(raw).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if path.exists() and not path.is_dir():
        raise ConfigError(var, f"{path} exists and is not a directory")
    return path.resolve()


def parse_location_ids(var: str, raw: str) -> tuple[int, ...]:
    """``"2178, 17"`` -> ``(2178, 17)``; shared by the settings and the CLI options."""
    ids = []
    for part in raw.replace(" ", ",").split(","):
        if not part:
            continue
        if not part.isdigit() or int(part) == 0:
            raise ConfigError(var, f"expected positive location ids, got {part!r}")
        ids.append(int(part))
    return tuple(dict.fromkeys(ids))


def parse_bbox(var: str, raw: str | None) -> tuple[float, float, float, float] | None:
    """``"min_lon,min_lat,max_lon,max_lat"`` (OpenAQ's order) -> a validated tuple."""
    if raw is None or not raw.strip():
        return None
    try:
        values = tuple(float(v) for v in raw.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ConfigError(var, f"expected min_lon,min_lat,max_lon,max_lat, got {raw!r}")
    min_lon, min_lat, max_lon, max_lat = values
    if not (-180 <= min_lon < max_lon <= 180 and -90 <= min_lat < max_lat <= 90):
        raise ConfigError(var, f"not a valid box (lon -180..180, lat -90..90, min < max): {raw!r}")
    return min_lon, min_lat, max_lon, max_lat


def parse_country(var: str, raw: str | None) -> str | None:
    """An ISO 3166-1 alpha-2 code, upper-cased."""
    if raw is None or not raw.strip():
        return None
    code = raw.strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", code):
        raise ConfigError(var, f"expected a two-letter ISO country code, got {raw!r}")
    return code


def _jvm_options(var: str, raw: str | None) -> tuple[str, ...]:
    """JVM options split as a shell would (quotes group); each must start with ``-``, so a
    stray word is a configuration error here, not a JVM that will not start."""
    if raw is None:
        return ()
    try:
        options = tuple(shlex.split(raw))
    except ValueError as exc:  # an unbalanced quote
        raise ConfigError(var, f"expected JVM options such as -XX:+UseSerialGC: {exc}") from None
    stray = [o for o in options if not o.startswith("-")]
    if stray:
        raise ConfigError(var, f"expected JVM options such as -XX:+UseSerialGC, got {stray[0]!r}")
    return options


def _results_cache(raw: str | None) -> str | None:
    """AQ_SUPERSET_RESULTS_CACHE: None (files), ``"off"``, or a redis:// / rediss:// URL."""
    if raw is None:
        return None
    if raw.lower() == "off":
        return "off"
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        # not the value itself: it may hold the Redis password
        raise ConfigError(
            "AQ_SUPERSET_RESULTS_CACHE",
            "expected redis://host:port/db (or rediss://), off, or nothing (files under AQ_HOME)",
        )
    return raw


def parse_alert_category(var: str, raw: str) -> str | None:
    """The AQI category named by ``raw`` (any case; spaces, ``_`` or ``-``; ``USG`` for
    "Unhealthy for Sensitive Groups"), or ``None`` for ``off``."""
    wanted = " ".join(raw.replace("_", " ").replace("-", " ").split()).lower()
    if wanted in ("off", "none", "no", "false", "0"):
        return None
    if wanted == "usg":
        return "Unhealthy for Sensitive Groups"
    for category in AQI_CATEGORIES:
        if category.lower() == wanted:
            return category
    choices = ", ".join(AQI_CATEGORIES)
    raise ConfigError(var, f"expected an AQI category ({choices}) or off, got {raw!r}")


def parse_parameters(var: str, raw: str | None) -> tuple[str, ...]:
    """``"pm25,pm10"`` -> OpenAQ parameter names (lower case, no repeats)."""
    names = [part.strip().lower() for part in (raw or "").split(",") if part.strip()]
    if not names:
        raise ConfigError(var, "expected parameter names such as pm25,pm10,o3,no2,so2,co")
    for name in names:
        if not re.fullmatch(r"[a-z][a-z0-9_.]{0,31}", name):
            raise ConfigError(var, f"not an OpenAQ parameter name: {name!r}")
    return tuple(dict.fromkeys(names))


def parse_emails(var: str, raw: str | None) -> tuple[str, ...]:
    """``"a@x.org, b@y.org"`` -> the addresses (no repeats); each must look like one."""
    addresses = [part.strip() for part in (raw or "").split(",") if part.strip()]
    for address in addresses:
        if not re.fullmatch(r"[^@\s<>,;\"]+@[A-Za-z0-9.\-]+", address):
            raise ConfigError(var, f"not an e-mail address: {address!r}")
    return tuple(dict.fromkeys(addresses))


def _flag(var: str, raw: str | None) -> bool:
    text = (raw or "").strip().lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise ConfigError(var, f"expected 1 or 0, got {raw!r}")


def _share(var: str, raw: str) -> float:
    value = _positive_float(var, raw)
    if value > 1:
        raise ConfigError(var, f"expected a share in (0, 1], e.g. 0.5, got {raw!r}")
    return value


def _positive_float(var: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(var, f"expected a number, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(var, f"expected a positive number, got {raw!r}")
    return value
