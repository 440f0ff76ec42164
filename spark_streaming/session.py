"""The SparkSession every streaming job and test uses, configured in one place.

Why these settings: the embedded default runs ``local[*]`` on a small machine, so shuffles
use few partitions and the driver binds to 127.0.0.1 (its UI too, through ``SPARK_LOCAL_IP``:
``spark.driver.bindAddress`` does not reach it); Python workers must run this
environment's interpreter (or they miss pyarrow, see the field notes); Parquet output uses
dynamic partition overwrite so that re-running a micro-batch replaces exactly its own files.

Spark's own log goes to a file when asked (``aqi stream``: ``AQ_HOME/logs/spark-stream.log``).
A short-lived driver may ask for the quick JIT (``quick_jit``: C1 only, :data:`QUICK_JIT`):
``aqi stream`` does for a small ``--available-now`` drain (:func:`spark_streaming.job.choose_jit`).

Spark's Kafka source is loaded from the jars ``make jvm`` installed (``spark.jars``: on a
cluster Spark ships them to the executors), never fetched when a stream starts.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from pyspark.sql import SparkSession

from aqi.core.environments import jvm_jars
from spark_streaming.class_archive import driver_java_options

__all__ = ["DEFAULT_MASTER", "QUICK_JIT", "get_spark"]

DEFAULT_MASTER = "local[*]"
#: the driver JVM's option for the quick JIT: the C1 compiler only, no C2 (HotSpot)
QUICK_JIT = "-XX:TieredStopAtLevel=1"


def get_spark(
    master: str | None = None,
    app_name: str = "aqi-stream",
    *,
    log_file: Path | None = None,
    quick_jit: bool = False,
    **conf: str,
) -> SparkSession:
    """Create (or reuse) the session. Extra ``conf`` entries override the defaults.

    ``log_file``: Spark's own log (the driver JVM's log4j) goes there instead of the
    terminal, where its Java traces would bury the stream's one-line messages.
    ``quick_jit``: the driver JVM (and a cluster's executors) compile with C1 only
    (:data:`QUICK_JIT`), which costs far less CPU on a short run and more on a long one
    (docs/benchmarks.md, "Driver JIT").
    """
    # pyspark warns about pandas 3 at start; the stream does not use pandas
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    defaults = {
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.python.worker.reuse": "true",
        "spark.driver.memory": "2g",
        "spark.sql.debug.maxToStringFields": "200",
        "spark.jars": ",".join(str(jar) for jar in jvm_jars("spark")),
    }
    # a deployment may set any of these through PYSPARK_SUBMIT_ARGS (docker-compose binds the
    # driver to 0.0.0.0): it wins over the defaults
    submitted = os.environ.get("PYSPARK_SUBMIT_ARGS", "")
    java_options = []
    if log_file is not None and "log4j2.configurationFile" not in submitted:
        java_options.append(f"-Dlog4j2.configurationFile={_log_config(log_file)}")
    if "SharedArchiveFile" not in submitted:
        # the driver's classes from the archive `make jvm` wrote (spark_streaming.class_archive)
        java_options.append(driver_java_options())
    if quick_jit and "TieredStopAtLevel" not in submitted:
        java_options.append(QUICK_JIT)
        # a cluster's executors live as long as the application: a short one too
        defaults["spark.executor.extraJavaOptions"] = QUICK_JIT
    if any(java_options):
        defaults["spark.driver.extraJavaOptions"] = " ".join(o for o in java_options if o)
    if "spark.driver.bindAddress" not in submitted:
        # the driver's UI (port 4040) binds to SPARK_LOCAL_IP, or to every interface without it
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(master or DEFAULT_MASTER).appName(app_name)
    for key, value in defaults.items():
        if key not in submitted:
            builder = builder.config(key, value)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _log_config(log_file: Path) -> Path:
    """A log4j2 configuration that appends Spark's log (WARN and up) to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    config = log_file.with_name(log_file.name + ".log4j2.properties")
    config.write_text(
        "rootLogger.level = warn\n"
        "rootLogger.appenderRef.file.ref = file\n"
        "appender.file.type = File\n"
        "appender.file.name = file\n"
        f"appender.file.fileName = {log_file}\n"
        "appender.file.append = true\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = %d{yyyy-MM-dd HH:mm:ss} %p %c{1}: %m%n%ex\n"
    )
    return config
