"""A class-data-sharing archive of the Spark driver's classes: a stream starts ~4 s sooner.

Why: every ``aqi stream`` (each Airflow run's ``drain_stream``, the demo, a restart after a
crash) starts a JVM that loads and verifies ~10,000 Spark classes before it reads a record;
a session and a first small job took 14.5 s and 22.8 s of CPU on 2 cores. The JVM's own
class-data sharing (CDS, JDK 13+: ``-XX:ArchiveClassesAtExit`` writes the classes a run
loaded, ``-XX:SharedArchiveFile`` maps them at the next start) cuts that to 10.3 s and
15.2 s of CPU (docs/benchmarks.md, "Stream start"). Nothing about what the stream computes changes: the same classes, loaded from a
memory-mapped file instead of the jars.

``aqi setup --only jvm`` (``make jvm``) writes the archive once with :func:`ensure_archive`,
running a small Spark job of the stream's own parse in a child process. It lives beside the
jars (replaced with them), named for the pyspark version and the Java binary, so another
JDK or Spark gets its own. :func:`driver_java_options` gives the flag only when the
archive for this Java and Spark exists; a JVM that cannot map it (another build) starts
without it and says nothing (``-Xshare:auto``).

Public surface: :func:`archive_path`, :func:`driver_java_options`, :func:`ensure_archive`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aqi.core.environments import jvm_libs_dir
from aqi.core.errors import AqiError

__all__ = ["archive_path", "driver_java_options", "ensure_archive"]


def archive_path() -> Path | None:
    """Where the archive for this Java and this pyspark lives; None without a Java."""
    java = _java()
    if java is None:
        return None
    import pyspark

    stat = java.stat()
    identity = f"{java}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    name = f"spark-{pyspark.__version__}-{hashlib.sha256(identity).hexdigest()[:12]}.jsa"
    return jvm_libs_dir() / "cds" / name


def driver_java_options() -> str:
    """``-XX:SharedArchiveFile=...`` when the archive exists, else the empty string."""
    path = archive_path()
    return f"-XX:SharedArchiveFile={path}" if path is not None and path.is_file() else ""


def ensure_archive(echo: Callable[[str], None] = print, *, force: bool = False) -> Path | None:
    """Write the archive unless it exists: one small local Spark job in a child process.

    The child's JVM writes the file when it exits; it is written under a temporary name and
    renamed, so a stream never maps half an archive. Returns its path (None without Java).
    """
    target = archive_path()
    if target is None:
        echo("spark: no Java found, no class archive written")
        return None
    if target.is_file() and not force:
        echo(f"spark: class archive up to date ({target.name})")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.stem}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    echo("spark: writing the class archive of the stream's driver (once, ~30 s) ...")
    with tempfile.TemporaryDirectory(prefix="aq-cds-") as work:
        result = subprocess.run(
            [sys.executable, "-m", "spark_streaming.class_archive", str(staging)],
            cwd=work, capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
        )  # fmt: skip
    if result.returncode != 0 or not staging.is_file():
        staging.unlink(missing_ok=True)
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise AqiError(f"writing Spark's class archive failed (exit {result.returncode}): {tail}")
    staging.replace(target)
    for old in target.parent.glob("spark-*.jsa"):
        if old != target:
            old.unlink(missing_ok=True)
    echo(f"spark: class archive written: {target} ({target.stat().st_size // 2**20} MiB)")
    return target


def _java() -> Path | None:
    """The java that pyspark's launcher runs: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home, "bin", "java") if home else None
    if candidate is None or not candidate.is_file():
        found = shutil.which("java")
        candidate = Path(found) if found else None
    return candidate.resolve() if candidate is not None else None


def _train(out: Path) -> None:
    """The job whose classes are archived: the stream's parse over simulated Kafka rows,
    written to Parquet and read back, and Spark's Kafka source looked up (not connected).

    It runs the quick JIT (C1 only): a job this short costs ~18 s less CPU without C2, and
    the archive holds classes, not compiled code, so drivers of either JIT map it."""
    from spark_streaming.parse import parse_records
    from spark_streaming.session import QUICK_JIT, get_spark

    spark = get_spark(
        app_name="aqi-class-archive",
        **{"spark.driver.extraJavaOptions": f"-XX:ArchiveClassesAtExit={out} {QUICK_JIT}"},
    )
    now = datetime.now(UTC)
    events = [_event(now - timedelta(minutes=15 * i), 10.0 + i) for i in range(200)]
    rows = [(str(e["sensor_id"]).encode(), json.dumps(e).encode(), "openaq.measurements",
             i % 3, i, now, 0) for i, e in enumerate(events)]  # fmt: skip
    rows.append((b"1", b"not json", "openaq.measurements", 0, len(rows), now, 0))
    schema = ("key binary, value binary, topic string, partition int, offset long, "
              "timestamp timestamp, timestampType int")  # fmt: skip
    parsed = parse_records(spark.createDataFrame(rows, schema))
    folder = Path.cwd() / "parsed"
    parsed.write.mode("overwrite").partitionBy("kafka_partition").parquet(str(folder))
    assert spark.read.parquet(str(folder)).count() == len(rows)
    (spark.readStream.format("kafka").option("kafka.bootstrap.servers", "127.0.0.1:9")
     .option("subscribe", "openaq.measurements").load())  # fmt: skip
    spark.stop()


def _event(period_end: datetime, value: float) -> dict:
    """One valid event of the contract (ingestion/schemas/measurement_event.v1.json)."""
    start = period_end - timedelta(minutes=15)
    return {
        "schema_version": 1, "source": "openaq", "ingest_mode": "simulate",
        "ingested_at": f"{period_end:%Y-%m-%dT%H:%M:%SZ}", "location_id": 17,
        "location_name": "R K Puram, Delhi - DPCC", "sensor_id": 12234785, "parameter_id": 3,
        "parameter": "o3", "units": "µg/m³", "value": value,
        "period_start": f"{start:%Y-%m-%dT%H:%M:%SZ}", "period_end": f"{period_end:%Y-%m-%dT%H:%M:%SZ}",
        "timezone": "Asia/Kolkata", "latitude": 28.563262, "longitude": 77.186937,
        "country_code": "IN", "provider": "CPCB", "is_mobile": False, "is_monitor": True,
        "flagged": False, "coverage_percent": 100.0,
    }  # fmt: skip


if __name__ == "__main__":
    _train(Path(sys.argv[1]))
