"""Superset's results cache without Superset: where the settings put it, what clearing a
folder cache removes, and that superset_config.py and the clearing agree on Redis keys.

The cache itself (a chart's second request served from it, emptied by openaq_elt's publish
task) is tested on the real Superset in tests/integration/test_dashboards.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aqi.core.config import ConfigError, load_settings
from aqi.services.superset import CONFIG_PATH, superset_env
from aqi.services.superset_cache import (
    REDIS_KEY_PREFIX,
    RESULTS_CACHE_TIMEOUT_S,
    clear_results_cache,
    results_cache,
)

pytestmark = pytest.mark.unit


def settings(tmp_path: Path, **env: str):
    return load_settings({"AQ_HOME": str(tmp_path / "aq"), **env}, dotenv=None)


def test_by_default_the_cache_is_a_folder_under_aq_home_kept_one_schedule(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert results_cache(s) == str(tmp_path / "aq" / "superset" / "cache" / "results")
    env = superset_env(s)
    assert env["SUPERSET_RESULTS_CACHE"] == results_cache(s)
    assert env["SUPERSET_RESULTS_CACHE_TIMEOUT"] == str(RESULTS_CACHE_TIMEOUT_S) == "900"


def test_redis_or_off_pass_through_and_anything_else_is_refused(tmp_path: Path) -> None:
    url = "redis://:s3cret@cache:6379/1"
    s = settings(tmp_path, AQ_SUPERSET_RESULTS_CACHE=url)
    assert superset_env(s)["SUPERSET_RESULTS_CACHE"] == url
    assert "s3cret" not in repr(s)
    assert results_cache(settings(tmp_path, AQ_SUPERSET_RESULTS_CACHE="OFF")) == "off"
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, AQ_SUPERSET_RESULTS_CACHE="memcached://x:pw@cache:11211")
    assert str(caught.value).startswith("AQ_SUPERSET_RESULTS_CACHE: expected redis://")
    assert "pw" not in str(caught.value)


def test_superset_config_reads_the_same_variables_and_key_prefix() -> None:
    text = CONFIG_PATH.read_text()
    assert f'"CACHE_KEY_PREFIX": "{REDIS_KEY_PREFIX}"' in text
    for name in ("SUPERSET_RESULTS_CACHE", "SUPERSET_RESULTS_CACHE_TIMEOUT"):
        assert f'os.environ.get("{name}"' in text
    assert '"CACHE_TYPE": "FileSystemCache"' in text and '"CACHE_TYPE": "RedisCache"' in text


def test_clearing_a_folder_cache_removes_its_entries_and_says_how_many(tmp_path: Path) -> None:
    s = settings(tmp_path)
    folder = s.superset_results_cache_dir
    lines: list[str] = []
    assert clear_results_cache(s, echo=lines.append) == 0  # not created yet: nothing to do
    folder.mkdir(parents=True)
    for name in ("2029f0c8e9a1", "7b1d3c0a55e2", "__wz_cache_count"):
        (folder / name).write_bytes(b"x")
    assert clear_results_cache(s, echo=lines.append) == 2
    assert list(folder.iterdir()) == []
    assert lines[-1] == f"superset results cache: cleared 2 entries ({folder})"


def test_an_off_cache_is_not_touched(tmp_path: Path) -> None:
    lines: list[str] = []
    s = settings(tmp_path, AQ_SUPERSET_RESULTS_CACHE="off")
    assert clear_results_cache(s, echo=lines.append) is None and lines == []


def test_a_cache_that_cannot_be_cleared_is_one_line_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aqi.services.superset_cache as cache

    def broken(folder: Path) -> int:
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(cache, "_clear_folder", broken)
    lines: list[str] = []
    assert clear_results_cache(settings(tmp_path), echo=lines.append) is None
    folder = settings(tmp_path).superset_results_cache_dir
    expected = f"not cleared (PermissionError: [Errno 13] Permission denied: '{folder}')"
    assert lines == [f"superset results cache: {expected}"]
