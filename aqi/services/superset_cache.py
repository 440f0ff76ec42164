"""Superset's results cache: where it is, and clearing it when the warehouse changed.

The dashboards read gold tables that change only when ``openaq_elt`` runs, so a chart's
result can be served from a cache until the next run: Superset keeps results for
:data:`~aqi.core.config.ELT_INTERVAL_MINUTES` (superset/superset_config.py,
``DATA_CACHE_CONFIG``), and the run's ``publish`` task empties the cache as soon as the new
gold data is there (:func:`clear_results_cache`), so nobody waits up to 15 minutes for it.

Where (``AQ_SUPERSET_RESULTS_CACHE``, handed to Superset as ``SUPERSET_RESULTS_CACHE``):

- unset: files under ``AQ_HOME/superset/cache/results`` (the embedded Superset; the publish
  task runs on the same machine and removes them);
- ``redis://host:port/db``: Redis (docker compose; Superset and Airflow run in different
  containers). The keys carry :data:`REDIS_KEY_PREFIX`, and only they are deleted;
- ``off``: no cache.

Public surface: :func:`results_cache`, :func:`clear_results_cache`, :data:`REDIS_KEY_PREFIX`,
:data:`RESULTS_CACHE_TIMEOUT_S`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from aqi.core.config import ELT_INTERVAL_MINUTES, Settings, mask_url
from aqi.core.errors import first_line

__all__ = [
    "REDIS_KEY_PREFIX",
    "RESULTS_CACHE_TIMEOUT_S",
    "clear_results_cache",
    "results_cache",
]

log = logging.getLogger(__name__)
Echo = Callable[[str], None]

#: the prefix of the results' keys in Redis (superset_config.py uses the same)
REDIS_KEY_PREFIX = "aq_results_"
#: how long Superset keeps a result: until the next openaq_elt run at the latest
RESULTS_CACHE_TIMEOUT_S = ELT_INTERVAL_MINUTES * 60
_REDIS_TIMEOUT_S = 5.0


def results_cache(settings: Settings) -> str:
    """What Superset's ``SUPERSET_RESULTS_CACHE`` says: a folder, a redis:// URL or ``off``."""
    return settings.superset_results_cache or str(settings.superset_results_cache_dir)


def clear_results_cache(settings: Settings, echo: Echo = print) -> int | None:
    """Empty the results cache; returns the entries removed (``None``: the cache is off, or
    could not be reached, which is one warning line and no exception: stale charts for at
    most one schedule interval do not fail a run whose data is in)."""
    where = results_cache(settings)
    if where == "off":
        return None
    try:
        if where.startswith(("redis://", "rediss://")):
            removed = _clear_redis(where)
            shown = mask_url(where)
        else:
            removed = _clear_folder(Path(where))
            shown = where
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        line = f"superset results cache: not cleared ({type(exc).__name__}: {first_line(exc)})"
        log.warning(line)
        echo(line)
        return None
    echo(f"superset results cache: cleared {removed} entries ({shown})")
    return removed


def _clear_folder(folder: Path) -> int:
    """Flask-Caching's FileSystemCache: one file per entry (and a count file) in ``folder``."""
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.iterdir():
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += not path.name.startswith("__wz_cache_count")
    return removed


def _clear_redis(url: str) -> int:
    import redis

    client = redis.Redis.from_url(
        url, socket_timeout=_REDIS_TIMEOUT_S, socket_connect_timeout=_REDIS_TIMEOUT_S
    )
    try:
        removed = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{REDIS_KEY_PREFIX}*", count=500):
            batch.append(key)
            if len(batch) == 500:
                removed += client.delete(*batch)
                batch.clear()
        if batch:
            removed += client.delete(*batch)
        return removed
    finally:
        client.close()
