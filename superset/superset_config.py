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

Telemetry is off: the front end's tracking pixel is not allowed by the content security
policy below, and nothing else phones home. Map tiles come from OpenStreetMap when the
browser can reach it (no API key); without it the map shows its points on a plain background.
"""

import os


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

# the metadata database is shared by 2 gunicorn workers and the provisioning command
SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 5}

# --- what users may do --------------------------------------------------------------------
# The warehouse connection uses a role that can only read the gold schema; on top of that,
# its database object (superset/bundle/databases/) allows no DML, uploads or CREATE TABLE AS.
PREVENT_UNSAFE_DB_CONNECTIONS = True
FEATURE_FLAGS = {
    "ALERT_REPORTS": False,
    "ENABLE_TEMPLATE_PROCESSING": False,
}

# --- maps: OpenStreetMap raster tiles, no Mapbox key ---------------------------------------
MAPBOX_API_KEY = ""
DECKGL_BASE_MAP = [
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
