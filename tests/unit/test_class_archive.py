"""The Spark driver's class archive: which file, and when the stream's JVM is told to map it
(the JVM that maps it is checked in tests/integration/test_stream.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spark_streaming import class_archive


@pytest.fixture
def jvm_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(class_archive, "jvm_libs_dir", lambda: tmp_path / "aq-jvm")
    return tmp_path / "aq-jvm"


def _fake_java(folder: Path) -> Path:
    java = folder / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755)
    return java


def test_no_archive_no_flag_and_with_it_the_flag(
    jvm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    _fake_java(tmp_path / "jdk")
    path = class_archive.archive_path()
    assert path is not None and path.parent == jvm_dir / "cds" and path.suffix == ".jsa"
    assert class_archive.driver_java_options() == ""
    path.parent.mkdir(parents=True)
    path.write_bytes(b"archive")
    assert class_archive.driver_java_options() == f"-XX:SharedArchiveFile={path}"


def test_another_java_or_spark_gets_its_own_archive(
    jvm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyspark

    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    java = _fake_java(tmp_path / "jdk")
    first = class_archive.archive_path()
    assert first is not None and first.name.startswith(f"spark-{pyspark.__version__}-")
    os.utime(java, ns=(1, 1))  # a JDK updated in place
    assert class_archive.archive_path() != first
    monkeypatch.setattr(pyspark, "__version__", "9.9.9")
    assert class_archive.archive_path().name.startswith("spark-9.9.9-")


def test_java_home_without_java_falls_back_to_path_and_none_without_any(
    jvm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "missing"))
    on_path = _fake_java(tmp_path / "path-jdk")
    monkeypatch.setenv("PATH", str(on_path.parent))
    via_path = class_archive.archive_path()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert via_path is not None and class_archive.archive_path() is None
    assert class_archive.driver_java_options() == ""
    assert class_archive.ensure_archive(echo=lambda line: None) is None
