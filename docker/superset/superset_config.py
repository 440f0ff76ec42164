"""Superset settings for docker-compose.yml (SUPERSET_CONFIG_PATH points here).

Metadata lives in the `superset` database of the compose PostgreSQL; the secret key and the
database password come from .env through the environment. A missing one stops Superset with
one line naming it, never a built-in default.
"""

import os
from urllib.parse import quote


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise RuntimeError(f"{name} is not set: add it to .env (see .env.example)")
    return value


SECRET_KEY = _required("SUPERSET_SECRET_KEY")
SQLALCHEMY_DATABASE_URI = (
    "postgresql+psycopg2://superset:"
    + quote(_required("SUPERSET_DB_PASSWORD"), safe="")
    + "@postgres:5432/superset"
)
