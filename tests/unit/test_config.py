"""The config module: defaults, validation errors that name the variable, .env merging."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqi.core.config import (
    DEFAULT_KAFKA_TOPIC,
    DEFAULT_OPENAQ_BASE_URL,
    ENV_VARS,
    ConfigError,
    load_settings,
    mask_url,
)
from aqi.core.connections import database_url, kafka_bootstrap_servers

pytestmark = pytest.mark.unit


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings({}, dotenv=None)
    assert s.openaq_base_url == DEFAULT_OPENAQ_BASE_URL
    assert s.kafka_topic == DEFAULT_KAFKA_TOPIC == "openaq.measurements"
    assert s.aq_home == (tmp_path / ".aq").resolve()
    assert s.embedded_postgres and s.embedded_kafka
    assert s.openaq_api_key is None
    assert s.bronze_dir == s.aq_home / "bronze" / "openaq"
    assert s.checkpoints_dir == s.aq_home / "checkpoints"
    assert s.kafka_wait_seconds == 15


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("OPENAQ_BASE_URL", "ftp://example.org"),
        ("OPENAQ_BASE_URL", "not a url"),
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost"),
        ("KAFKA_BOOTSTRAP_SERVERS", "a:9092,b:notaport"),
        ("KAFKA_BOOTSTRAP_SERVERS", "a:70000"),
        ("AQ_KAFKA_TOPIC", "bad topic!"),
        ("AQ_KAFKA_PARTITIONS", "0"),
        ("AQ_KAFKA_PARTITIONS", "three"),
        ("AQ_KAFKA_WAIT_SECONDS", "0"),
        ("AQ_KAFKA_WAIT_SECONDS", "soon"),
        ("AQ_DATABASE_URL", "mysql://u:p@h/db"),
        ("AQ_DATABASE_URL", "postgresql://u:p@h:5432"),
        ("AQ_DATABASE_URL", "postgresql://u:p@h:99999/db"),
        ("AQ_PG_PORT", "-1"),
        ("AQ_KAFKA_PORT", "http"),
    ],
)
def test_invalid_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({var: value}, dotenv=None)
    message = str(info.value)
    assert message.startswith(f"{var}: ")
    assert "\n" not in message


def test_aq_home_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ConfigError, match="^AQ_HOME: "):
        load_settings({"AQ_HOME": str(file)}, dotenv=None)


def test_secret_not_echoed_in_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"AQ_DATABASE_URL": "mysql://user:hunter2@h/db"}, dotenv=None)
    assert "hunter2" not in str(info.value)


def test_dotenv_fills_gaps_and_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("AQ_KAFKA_TOPIC=from.dotenv\nAQ_PG_PORT=6000\nUNRELATED=1\n")
    s = load_settings({"AQ_PG_PORT": "7000"}, dotenv=dotenv)
    assert s.kafka_topic == "from.dotenv"
    assert s.pg_port == 7000
    assert "UNRELATED" not in s.source


def test_empty_values_mean_default() -> None:
    s = load_settings({"KAFKA_BOOTSTRAP_SERVERS": "", "AQ_DATABASE_URL": "  "}, dotenv=None)
    assert s.embedded_kafka and s.embedded_postgres


def test_external_services_are_used_when_set(tmp_path: Path) -> None:
    s = load_settings(
        {
            "AQ_HOME": str(tmp_path),
            "AQ_DATABASE_URL": "postgresql://u:p@db.example:5433/wh?sslmode=require",
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9093",
        },
        dotenv=None,
    )
    assert not s.embedded_postgres and not s.embedded_kafka
    assert database_url(s) == "postgresql://u:p@db.example:5433/wh?sslmode=require"
    assert database_url(s, "airflow") == "postgresql://u:p@db.example:5433/airflow?sslmode=require"
    assert kafka_bootstrap_servers(s) == "k1:9092,k2:9093"


def test_embedded_database_url_uses_generated_password(tmp_path: Path) -> None:
    s = load_settings({"AQ_HOME": str(tmp_path), "AQ_PG_PORT": "5555"}, dotenv=None)
    url = database_url(s)
    password = (s.secrets_dir / "postgres_aq_password").read_text().strip()
    assert len(password) >= 24
    assert url == f"postgresql://aq:{password}@127.0.0.1:5555/aq"
    assert database_url(s) == url  # stable across calls


def test_mask_url() -> None:
    assert mask_url("postgresql://u:secret@h:1/db") == "postgresql://u:***@h:1/db"
    assert mask_url("postgresql://h/db") == "postgresql://h/db"


def test_env_example_documents_every_variable() -> None:
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    assigned = {
        line.split("=", 1)[0].strip()
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert set(ENV_VARS) <= assigned


def test_kafka_jvm_performance_opts_replace_kafkas_collector_settings(tmp_path: Path) -> None:
    from aqi.services.kafka import EmbeddedKafka

    home = {"AQ_HOME": str(tmp_path)}
    default = EmbeddedKafka(load_settings(home, dotenv=None))._jvm_options()
    assert "-XX:+UseG1GC" in default and "-Xmx512m" in default
    value = "-XX:TieredStopAtLevel=1  -XX:+UseSerialGC '-Dsome.path=a b'"
    settings = load_settings({**home, "KAFKA_JVM_PERFORMANCE_OPTS": value}, dotenv=None)
    assert settings.kafka_jvm_performance_opts == (
        "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Dsome.path=a b"
    )  # fmt: skip
    options = EmbeddedKafka(settings)._jvm_options()
    assert "-XX:+UseG1GC" not in options and "-XX:+UseSerialGC" in options
    assert "-Xmx512m" in options and "-XX:+ExitOnOutOfMemoryError" in options


@pytest.mark.parametrize("value", ["UseSerialGC", "-Xmx1g 'unclosed"])
def test_kafka_jvm_performance_opts_that_are_not_jvm_options_are_refused(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(ConfigError, match="^KAFKA_JVM_PERFORMANCE_OPTS: expected JVM options"):
        load_settings({"AQ_HOME": str(tmp_path), "KAFKA_JVM_PERFORMANCE_OPTS": value}, dotenv=None)
