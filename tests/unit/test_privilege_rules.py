"""Least privilege without a server: who gets which credentials, and which folders we touch.

The real server's side (owners, privileges, the daemons' environments, modes as root) is in
tests/integration/test_least_privilege.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aqi.core.config import load_settings
from aqi.core.connections import app_password, database_url, role_password
from aqi.core.errors import ServiceError

pytestmark = pytest.mark.unit


def _settings(home: Path, **env: str):
    return load_settings({"AQ_HOME": str(home), "AQ_PG_PORT": "5999", **env}, dotenv=None)


def test_each_database_is_reached_as_its_own_role(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    for database, role in (("aq", "aq"), ("airflow", "airflow"), ("superset", "superset")):
        url = database_url(settings, database)
        assert url.startswith(f"postgresql://{role}:{role_password(settings, role)}@")
        assert url.endswith(f"@127.0.0.1:5999/{database}")
    assert database_url(settings) == database_url(settings, "aq")
    # a test's scratch database belongs to the warehouse owner
    assert database_url(settings, "test_x").startswith("postgresql://aq:")
    passwords = {role_password(settings, r) for r in ("aq", "airflow", "superset")}
    assert len(passwords) == 3
    for secret in tmp_path.joinpath("secrets").iterdir():
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_the_airflow_daemons_do_not_carry_the_warehouse_owners_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aqi.services.airflow import airflow_env

    monkeypatch.delenv("AQ_DATABASE_URL", raising=False)
    settings = _settings(tmp_path)
    env = airflow_env(settings)
    assert "AQ_DATABASE_URL" not in env
    assert app_password(settings) not in "\n".join(env.values())
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")


def test_an_external_database_url_still_reaches_the_airflow_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aqi.services.airflow import airflow_env

    url = "postgresql://boss:pw@db.example:6543/wh"
    monkeypatch.delenv("AQ_DATABASE_URL", raising=False)  # e.g. it came from a .env file
    env = airflow_env(_settings(tmp_path, AQ_DATABASE_URL=url))
    assert env["AQ_DATABASE_URL"] == url


def test_a_dbt_task_resolves_the_warehouse_url_when_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aqi.orchestration import warehouse_env

    monkeypatch.delenv("AQ_DATABASE_URL", raising=False)
    monkeypatch.setenv("AQ_HOME", str(tmp_path))
    monkeypatch.setenv("AQ_PG_PORT", "5999")
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    warehouse_env({})
    assert os.environ["AQ_DATABASE_URL"] == database_url(_settings(tmp_path))
    monkeypatch.setenv("AQ_DATABASE_URL", "postgresql://boss:pw@db.example:6543/wh")
    warehouse_env({})
    assert os.environ["AQ_DATABASE_URL"] == "postgresql://boss:pw@db.example:6543/wh"


def test_the_dbt_tasks_have_the_callback() -> None:
    """The DAG wires warehouse_env into Cosmos' operators (checked in the DAG file's text:
    parsing the DAG needs dbt's manifest)."""
    text = (Path(__file__).resolve().parents[2] / "dags" / "openaq_elt.py").read_text()
    assert '"on_execute_callback": orchestration.warehouse_env' in text


def test_a_folder_the_server_user_cannot_enter_is_one_line_and_left_alone(
    tmp_path: Path,
) -> None:
    from aqi.services.postgres import _require_reachable

    nobody = (65534, 65534)
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    tmp_path.chmod(0o711)
    parents = {p: p.stat().st_mode for p in tmp_path.parents}
    with pytest.raises(ServiceError) as err:
        _require_reachable(closed / "aq", nobody)
    assert str(err.value).count("\n") == 0
    assert f"cannot enter {closed} (mode 700)" in str(err.value)
    assert stat.S_IMODE(closed.stat().st_mode) == 0o700
    assert {p: p.stat().st_mode for p in tmp_path.parents} == parents
    opened = tmp_path / "open"
    opened.mkdir()
    opened.chmod(0o711)
    if all(p.stat().st_mode & stat.S_IXOTH for p in tmp_path.parents):
        _require_reachable(opened / "aq", nobody)  # no error
        assert (opened / "aq").is_dir()


def test_the_server_install_is_copied_once_readable_by_all(tmp_path: Path) -> None:
    from aqi.services.postgres import _private_install, _relocatable

    site = tmp_path / "venv" / "site-packages"
    source = site / "pgserver" / "pginstall"
    for folder in ("bin", "lib", "share/postgresql"):
        (source / folder).mkdir(parents=True)
        (source / folder).chmod(0o700)
    (source / "bin" / "postgres").write_text("#!/bin/sh\n")
    (source / "bin" / "postgres").chmod(0o700)
    (source / "lib" / "libx.so").write_text("x")
    (source / "lib" / "libx.so").chmod(0o600)
    (source / "lib" / "libx.so.1").symlink_to("libx.so")
    (site / "pgserver.libs").mkdir(mode=0o700)
    (site / "pgserver.libs" / "libpq-1.so.5").write_text("pq")
    assert _relocatable(source / "bin")
    before = {p: p.stat().st_mode for p in site.rglob("*")}
    postgres_dir = tmp_path / "aq" / "postgres"
    postgres_dir.mkdir(parents=True)
    bin_dir = _private_install(source / "bin", postgres_dir)
    copy = bin_dir.parents[2]
    assert copy.parent == postgres_dir
    assert bin_dir == copy / "pgserver" / "pginstall" / "bin"
    # the binaries find the wheel's libraries by the same relative path as in the wheel
    assert (bin_dir / ".." / ".." / ".." / "pgserver.libs" / "libpq-1.so.5").is_file()
    assert stat.S_IMODE((bin_dir / "postgres").stat().st_mode) == 0o755
    assert stat.S_IMODE((bin_dir.parent / "lib" / "libx.so").stat().st_mode) == 0o644
    assert (bin_dir.parent / "lib" / "libx.so.1").is_symlink()
    assert stat.S_IMODE(bin_dir.parent.joinpath("share", "postgresql").stat().st_mode) == 0o755
    assert {p: p.stat().st_mode for p in site.rglob("*")} == before, "the source changed"
    marker = bin_dir / "marker"
    marker.touch()
    assert _private_install(source / "bin", postgres_dir) == bin_dir and marker.exists()
    # a rebuilt server is a new copy, and the old one goes
    (source / "bin" / "postgres").write_text("#!/bin/sh\n# rebuilt\n")
    again = _private_install(source / "bin", postgres_dir)
    assert again != bin_dir and not copy.exists()
    assert [p.name for p in postgres_dir.iterdir()] == [again.parents[2].name]
