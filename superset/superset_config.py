"""Superset settings of the dashboards (SUPERSET_CONFIG_PATH points here).

The one settings file of both ways to run Superset: the embedded one (`aqi dashboards up`,
aqi/services/superset.py, Superset's own interpreter superset/.venv) and the official image of
docker-compose.yml (which mounts this file). It imports nothing from the main environment:
everything comes through the environment. A missing variable stops Superset with one line
naming it, never a built-in default such as Superset's "CHANGE_ME" secret key.

- SUPERSET_SECRET_KEY         signs sessions and encrypts stored database passwords
                              (generated into AQ_HOME/secrets/superset_secret_key; compose:
                              from .env)
- SUPERSET_METADATA_URI       Superset's own metadata: database `superset` of the project's
                              PostgreSQL (postgresql+psycopg2://...)
- SUPERSET_HOME               Superset's data folder (AQ_HOME/superset; compose: the image's
                              /app/superset_home)
- SUPERSET_RESULTS_CACHE      where chart results are cached (optional: see "results cache")
- SUPERSET_BASEMAP_ARCHIVE    the npm archive of world-atlas (Natural Earth's countries) the
                              offline map tiles are drawn from (installed by `aqi setup --only
                              superset` into superset/.venv/share/aq-basemap; compose: downloaded
                              into the image by docker/superset/Dockerfile)

Telemetry is off: the front end's tracking pixel is not allowed by the content security
policy below, and nothing else phones home. Maps: Superset itself serves tiles of land,
coastlines and country borders (aq_basemap.py, next to this file), so the map has geography
without the internet; OpenStreetMap and CARTO remain choices of its "Map Style" when the
browser can reach them (no API key).
"""

import importlib.util
import os
import sys


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise RuntimeError(
            f"{name} is not set: start Superset with `aqi dashboards up` "
            "(docker compose: set it in .env, see .env.example)"
        )
    return value


SECRET_KEY = _required("SUPERSET_SECRET_KEY")
SQLALCHEMY_DATABASE_URI = _required("SUPERSET_METADATA_URI")
DATA_DIR = _required("SUPERSET_HOME")
_BASEMAP_ARCHIVE = _required("SUPERSET_BASEMAP_ARCHIVE")
if not os.path.isfile(_BASEMAP_ARCHIVE):
    raise RuntimeError(
        f"SUPERSET_BASEMAP_ARCHIVE: no file at {_BASEMAP_ARCHIVE}: run `aqi setup --only superset`"
    )


def _sibling(name: str):
    """A module next to this file (Superset loads this file by path, not as a package)."""
    if name not in sys.modules:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


aq_basemap = _sibling("aq_basemap")

# the metadata database is shared by 2 gunicorn workers and the provisioning command
SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 5}

# --- results cache: a chart's data is served from here until the next openaq_elt run ---------
# SUPERSET_RESULTS_CACHE: a folder (embedded: AQ_HOME/superset/cache/results), redis://...
# (compose) or off; unset = a folder under SUPERSET_HOME. Entries expire after
# SUPERSET_RESULTS_CACHE_TIMEOUT seconds (openaq_elt's schedule, 900), and the run's publish
# task empties the cache as soon as new gold data is in (aqi/services/superset_cache.py,
# whose REDIS_KEY_PREFIX is the prefix below).
_RESULTS = os.environ.get("SUPERSET_RESULTS_CACHE", "").strip() or os.path.join(
    DATA_DIR, "cache", "results"
)
_RESULTS_TIMEOUT = int(os.environ.get("SUPERSET_RESULTS_CACHE_TIMEOUT", "900"))
if _RESULTS == "off":
    DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}
elif _RESULTS.startswith(("redis://", "rediss://")):
    DATA_CACHE_CONFIG = {
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": _RESULTS,
        "CACHE_KEY_PREFIX": "aq_results_",
        "CACHE_DEFAULT_TIMEOUT": _RESULTS_TIMEOUT,
    }
else:
    DATA_CACHE_CONFIG = {
        "CACHE_TYPE": "FileSystemCache",
        "CACHE_DIR": _RESULTS,
        "CACHE_DEFAULT_TIMEOUT": _RESULTS_TIMEOUT,
        "CACHE_THRESHOLD": 20000,
    }

# --- event log: one row per chart data request, not three ------------------------------------
# Superset's DBEventLogger writes a row of its `logs` table (an insert and a commit) for each
# logged step: a chart data request logs itself ("ChartDataRestApi.data": who, which chart,
# from the cache or not, how long) and two of its own sub-steps ("_get_data_response" and
# "ChartDataRestApi.json_dumps"). Those two commits were a third of a cached request's CPU
# (38 -> 26 ms, docs/benchmarks.md "Dashboards, cold and warm"): they are not written; every
# other event (logins, dashboard and explore views, the front end's events) is.
_UNLOGGED_STEPS = frozenset({"_get_data_response", "ChartDataRestApi.json_dumps"})
try:
    from superset.utils.log import DBEventLogger
except ModuleNotFoundError:  # read outside Superset's environment (the project's unit tests)
    DBEventLogger = None
if DBEventLogger is not None:

    class RequestEventLogger(DBEventLogger):
        """Superset's DB event logger without the sub-steps of a chart data request."""

        def log(self, user_id, action, *args, **kwargs):
            if action not in _UNLOGGED_STEPS:
                super().log(user_id, action, *args, **kwargs)

    EVENT_LOGGER = RequestEventLogger()

# --- permission checks: answered from memory while the roles' permissions are unchanged -------
# Every request, a cached chart's included, asks Flask-AppBuilder whether the public role and
# then the user's roles may call it, read all databases, all datasources, the dataset: five to
# seven queries of the metadata database. aq_security.py (next to this file) keeps the answers
# per gunicorn worker and role, and a request reads one number first: triggers that
# provision.py installs change it with any change of roles, permissions or view menus, so a
# change made anywhere (UI, API, CLI, SQL) applies from the next request, in every worker.
aq_security = _sibling("aq_security")
if DBEventLogger is not None:  # (Superset is installed: see the event log above)
    CUSTOM_SECURITY_MANAGER = aq_security.security_manager_class()

# --- what users may do --------------------------------------------------------------------
# The warehouse connection uses a role that can only read the gold schema; on top of that,
# its database object (superset/bundle/databases/) allows no DML, uploads or CREATE TABLE AS.
PREVENT_UNSAFE_DB_CONNECTIONS = True
FEATURE_FLAGS = {
    "ALERT_REPORTS": False,
    "ENABLE_TEMPLATE_PROCESSING": False,
}

# --- maps: tiles of borders served here (offline), OpenStreetMap when online; no Mapbox key --
# /aq-tiles/{z}/{x}/{y}.png: land, coastlines and country borders from Natural Earth, drawn by
# aq_basemap.py from the installed world-atlas archive. The first entry is the default style of
# a new map; the bundle's map uses it. A `tile://` style with a path (no host) is fetched from
# Superset's own origin, whatever host and port the browser uses.
MAPBOX_API_KEY = ""
FLASK_APP_MUTATOR = aq_basemap.app_mutator(_BASEMAP_ARCHIVE)
DECKGL_BASE_MAP = [
    [aq_basemap.STYLE, "Borders (offline, Natural Earth)"],
    ["https://tile.openstreetmap.org/{z}/{x}/{y}.png", "Streets (OSM)"],
    ["tile://https://a.basemaps.cartocdn.com/light_all/{z}/{x}/{y}.png", "Light (CARTO, OSM)"],
]

# The legend of the dashboard is a Markdown block with inline colours (EPA's AQI colours):
# let its HTML keep `style` attributes.
HTML_SANITIZATION = True
HTML_SANITIZATION_SCHEMA_EXTENSIONS = {"attributes": {"*": ["style", "className"]}}

# --- security headers: Superset's defaults minus the telemetry pixel's hosts ---------------
TALISMAN_ENABLED = True
_TILES = ["https://tile.openstreetmap.org", "https://a.basemaps.cartocdn.com"]
TALISMAN_CONFIG = {
    "content_security_policy": {
        "base-uri": ["'self'"],
        "default-src": ["'self'"],
        "img-src": ["'self'", "blob:", "data:", *_TILES],
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'", *_TILES],
        "object-src": "'none'",
        "style-src": ["'self'", "'unsafe-inline'"],
        "font-src": ["'self'"],
        "script-src": ["'self'", "'strict-dynamic'"],
    },
    "content_security_policy_nonce_in": ["script-src"],
    "force_https": False,
    "session_cookie_secure": False,
}
CONTENT_SECURITY_POLICY_WARNING = False
