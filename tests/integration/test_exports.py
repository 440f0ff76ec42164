"""`aqi export` on the real embedded PostgreSQL and real dbt: day files, incremental runs.

Events go straight into raw.openaq_measurements of a fresh database (as in test_warehouse.py),
`aqi dbt build` builds gold, and the real `aqi export` writes the CSV files. Two locations:
one in UTC and one in Asia/Kolkata (+05:30, so its local days run one day past the UTC ones).
A late correction of one UTC-site hour on the last UTC day touches exactly that day in every
partitioned table (no later day exists for the 30-day exceedance to carry it to).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import free_port, isolated_env, run_aqi, run_aqi_dbt
from warehouse_support import load_raw_events

from ingestion.events import Location, Sensor, make_event

pytestmark = pytest.mark.integration

AS_OF = "2025-03-05T06:00:00Z"
START = datetime(2025, 3, 1, tzinfo=UTC)
DAYS = 4
UTC_SITE = Location(
    id=901, name="Export, UTC \"site\"", timezone="UTC", latitude=10.0, longitude=20.0,
    country_code="XX", provider="test", is_mobile=False, is_monitor=True,
    sensors={9011: Sensor(9011, 2, "pm25", "µg/m³")},
)  # fmt: skip
KOLKATA_SITE = Location(
    id=902, name="Export Kolkata", timezone="Asia/Kolkata", latitude=22.5, longitude=88.3,
    country_code="IN", provider="test", is_mobile=False, is_monitor=True,
    sensors={9021: Sensor(9021, 2, "pm25", "µg/m³"), 9022: Sensor(9022, 1, "pm10", "µg/m³")},
)  # fmt: skip
#: the day the correction touches, and the files that must be rewritten for it
CHANGED_DAY = "2025-03-04"
CHANGED_FILES = {
    f"pm25_15min/pm25_15min_{CHANGED_DAY}.csv",
    f"daily_avg/daily_avg_{CHANGED_DAY}.csv",
    f"exceedance_30d/exceedance_30d_{CHANGED_DAY}.csv",
    "latest.csv",
}
DAYS_OF = {
    "pm25_15min": [f"2025-03-0{d}" for d in range(1, 5)],  # UTC dates
    "daily_avg": [f"2025-03-0{d}" for d in range(1, 6)],  # Kolkata's 03-05 starts 00:00Z
    "exceedance_30d": [f"2025-03-0{d}" for d in range(1, 6)],
}


def _events() -> list[dict]:
    events = []
    for site in (UTC_SITE, KOLKATA_SITE):
        for sensor in site.sensors.values():
            for hour in range(DAYS * 24):
                start = START + timedelta(hours=hour)
                value = 8.0 + (hour * 7 + sensor.id) % 31
                events.append(make_event(
                    mode="replay", location=site, sensor=sensor, value=value,
                    period_start=start, period_end=start + timedelta(hours=1),
                    ingested_at=start + timedelta(hours=1, minutes=5),
                ))  # fmt: skip
    return events


def _correction() -> list[dict]:
    """A new version of the UTC site's 11:00-12:00 reading on the last UTC day."""
    start = datetime.fromisoformat(f"{CHANGED_DAY}T11:00:00+00:00")
    return [make_event(
        mode="replay", location=UTC_SITE, sensor=UTC_SITE.sensors[9011], value=250.0,
        period_start=start, period_end=start + timedelta(hours=1),
        ingested_at=datetime(2025, 3, 5, 2, tzinfo=UTC),
    )]  # fmt: skip


def _aqi(env: dict, cwd: Path, *args: str, timeout: float = 600) -> str:
    result = run_aqi(list(args), env, cwd, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return result.stdout


def _build(env: dict, cwd: Path) -> None:
    result = run_aqi_dbt(["build", "--vars", json.dumps({"as_of": AS_OF})], env, cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def _files(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every CSV under directory (temporary files excluded): relative path -> (mtime, bytes)."""
    return {
        str(path.relative_to(directory)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(directory.rglob("*.csv"))
        if not path.name.startswith(".")
    }


def _marks(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("select * from raw.export_marks order by table_name").fetchall()


@pytest.fixture
def warehouse(tmp_path: Path, fresh_database: str) -> dict:
    """A fresh database with the events loaded and gold built; env of `aqi` against it."""
    env = isolated_env(tmp_path / "aq", AQ_DATABASE_URL=fresh_database)
    load_raw_events(fresh_database, _events())
    _build(env, tmp_path)
    return {"env": env, "cwd": tmp_path, "url": fresh_database, "dir": tmp_path / "aq/exports"}


def test_incremental_export_rewrites_only_the_changed_day(warehouse: dict) -> None:
    env, cwd, url, exports = (warehouse[k] for k in ("env", "cwd", "url", "dir"))
    out = _aqi(env, cwd, "export")
    assert out.count("every day: first export") == 3, out

    first = _files(exports)
    want = {f"{t}/{t}_{day}.csv" for t, days in DAYS_OF.items() for day in days}
    assert set(first) == want | {"latest.csv"}
    with psycopg.connect(url) as conn:
        for table in (*DAYS_OF, "latest"):
            rows = conn.execute(f"select count(*) from gold.{table}").fetchone()[0]
            cursor = conn.execute(f"select * from gold.{table} limit 0")
            columns = [c.name for c in cursor.description if c.name != "rebuilt_at"]
            texts = [v[1].decode() for k, v in first.items() if k.split("/")[0] in (
                table, f"{table}.csv")]  # fmt: skip
            assert rows > 0 and sum(t.count("\n") - 1 for t in texts) == rows, table
            assert {t.split("\n", 1)[0] for t in texts} == {",".join(columns)}, table
    day_text = first[f"daily_avg/daily_avg_{CHANGED_DAY}.csv"][1].decode()
    assert '"Export, UTC ""site"""' in day_text  # CSV quoting of a name with , and "

    # a file of a day not in the table, and the single file of the layout before day folders
    stale = exports / "daily_avg" / "daily_avg_2024-01-01.csv"
    stale.write_text("location_id\n1\n")
    legacy = exports / "daily_avg.csv"
    legacy.write_text("location_id\n1\n")

    load_raw_events(url, _correction())
    _build(env, cwd)
    out = _aqi(env, cwd, "export")
    assert out.count("days rebuilt since") == 3, out
    assert "exceedance_30d: 1 days" in out, out

    second = _files(exports)
    rewritten = {k for k in first if second[k] != first[k]}
    assert rewritten == CHANGED_FILES
    assert second[f"daily_avg/daily_avg_{CHANGED_DAY}.csv"][1] != day_text.encode()
    assert stale.exists() and legacy.exists()  # only --all removes files

    # the incremental files equal a fresh export of every day, byte for byte; --dir moves
    # no mark
    marks = _marks(url)
    assert [m[0] for m in marks] == sorted(DAYS_OF)
    fresh = cwd / "fresh"
    out = _aqi(env, cwd, "export", "--dir", str(fresh))
    assert out.count("(every day)") == 3, out
    assert _marks(url) == marks
    expected = {k: v[1] for k, v in _files(fresh).items()}
    got = {k: v[1] for k, v in second.items() if k not in ("daily_avg/daily_avg_2024-01-01.csv",
                                                           "daily_avg.csv")}  # fmt: skip
    assert got == expected

    # --all removes what is not in the tables, rewrites the rest to the same bytes and
    # moves the marks
    _aqi(env, cwd, "export", "--all")
    assert not stale.exists() and not legacy.exists()
    assert {k: v[1] for k, v in _files(exports).items()} == expected
    assert all(new[2] > old[2] for new, old in zip(_marks(url), marks, strict=True))


def test_a_failed_export_keeps_the_mark_so_the_next_run_writes_the_days_again(
    warehouse: dict,
) -> None:
    env, cwd, url, exports = (warehouse[k] for k in ("env", "cwd", "url", "dir"))
    _aqi(env, cwd, "export")
    marks = _marks(url)
    load_raw_events(url, _correction())
    _build(env, cwd)

    # a folder where the changed day's file goes: its rename fails, even for root
    blocked = exports / "daily_avg" / f"daily_avg_{CHANGED_DAY}.csv"
    blocked.unlink()
    blocked.mkdir()
    (blocked / "keep").write_text("x")
    result = run_aqi(["export"], env, cwd)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"aqi: error: export: cannot write {blocked}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert _marks(url) == marks
    assert not list(exports.rglob(".*.tmp")), "a temporary file was left behind"

    shutil.rmtree(blocked)
    out = _aqi(env, cwd, "export")
    assert "daily_avg: 1 days" in out, out
    fresh = cwd / "fresh"
    _aqi(env, cwd, "export", "--dir", str(fresh))
    assert {k: v[1] for k, v in _files(exports).items()} == {
        k: v[1] for k, v in _files(fresh).items()
    }
    assert all(new[2] > old[2] for new, old in zip(_marks(url), marks, strict=True))

    # a new column: every file of that table gets it, not only the changed days
    with psycopg.connect(url) as conn:
        conn.execute("alter table gold.daily_avg add column note text")
    out = _aqi(env, cwd, "export")
    assert "daily_avg: 5 days" in out and "the table's columns changed" in out, out
    headers = {p.read_text().split("\n", 1)[0] for p in (exports / "daily_avg").glob("*.csv")}
    assert len(headers) == 1 and headers.pop().endswith(",note")


def test_an_empty_warehouse_is_one_line(tmp_path: Path, fresh_database: str) -> None:
    env = isolated_env(tmp_path / "aq", AQ_DATABASE_URL=fresh_database)
    result = run_aqi(["export"], env, tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("aqi: error: no table gold.pm25_15min, gold.daily_avg")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("case", ["no-database", "dir-under-a-file"])
def test_user_mistakes_are_one_line(tmp_path: Path, case: str) -> None:
    url = f"postgresql://aq:x@127.0.0.1:{free_port()}/warehouse"
    env = isolated_env(tmp_path / "aq", AQ_DATABASE_URL=url)
    args = ["export"]
    want = "aqi: error: export: cannot reach the warehouse database"
    if case == "dir-under-a-file":
        (tmp_path / "file").write_text("")
        args += ["--dir", str(tmp_path / "file" / "csv")]
        want = f"aqi: error: export: cannot create {tmp_path / 'file' / 'csv'}"
    result = run_aqi(args, env, tmp_path, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(want), result.stderr
    assert result.stderr.count("\n") == 1
