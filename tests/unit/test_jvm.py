"""The JVM side of the environment (jvm/pom.xml): pinned, consistent with pyspark, on disk."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pyspark
import pytest
from jvm_support import module_dependencies, pom_properties

from aqi.core.environments import JVM_MODULES, JVM_PROJECT_DIR, jvm_jars, jvm_libs_dir

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _locked(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    (version,) = [p["version"] for p in lock["package"] if p["name"] == package]
    return version


def test_every_version_is_pinned_exactly() -> None:
    for module in JVM_MODULES:
        for group, artifact, version in module_dependencies(module):
            assert re.fullmatch(r"\d+(\.\d+)+", version), f"{module}: {group}:{artifact}:{version}"


def test_the_connector_is_built_for_the_spark_pyspark_runs() -> None:
    """spark-sql-kafka must be the exact Spark release of pyspark (uv.lock) and Scala 2.13."""
    spark = pom_properties()["spark.version"]
    assert spark == _locked("pyspark") == pyspark.__version__
    connector = [d for d in module_dependencies("spark") if d[1].startswith("spark-sql-kafka")]
    assert connector == [("org.apache.spark", "spark-sql-kafka-0-10_2.13", spark)]


def test_kafka_is_a_4x_kraft_broker() -> None:
    kafka = pom_properties()["kafka.version"]
    assert kafka.startswith("4.")
    assert ("org.apache.kafka", "kafka_2.13", kafka) in module_dependencies("kafka")


def _artifact(jar: Path) -> str:
    """'kafka-clients-3.9.2.jar' -> 'kafka-clients' (the version: digits, a dot, a digit...)."""
    match = re.fullmatch(r"(.+?)-(\d+\.\d[\w.\-]*)\.jar", jar.name)
    return match.group(1) if match else jar.name


def test_installed_jars_add_nothing_spark_already_has() -> None:
    """The connector folder holds only what pyspark's jars/ lacks: one copy of each library."""
    installed = jvm_jars("spark")  # fails with `make jvm` advice when not installed
    spark_own = {_artifact(j) for j in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    added = {_artifact(j) for j in installed}
    assert "spark-sql-kafka-0-10_2.13" in added and "kafka-clients" in added
    assert added & spark_own == set()


def test_installed_jars_match_the_poms() -> None:
    stamp = jvm_libs_dir() / "installed-from.sha256"
    assert stamp.is_file(), "run `make jvm`"
    from aqi.core.environments import _poms_digest

    assert stamp.read_text().strip() == _poms_digest(), "jvm/*/pom.xml changed: run `make jvm`"
    broker = {_artifact(j) for j in jvm_jars("kafka")}
    assert {"kafka_2.13", "kafka-server", "kafka-raft", "log4j-core"} <= broker
    assert (JVM_PROJECT_DIR / "pom.xml").is_file()
