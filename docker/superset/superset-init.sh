#!/usr/bin/env bash
# One-shot set-up of Superset (the superset-init service of docker-compose.yml), the steps
# `aqi dashboards up` takes (aqi/services/superset.py) with the project's own files:
#
# 1. `superset db upgrade` + `superset init`: Superset's metadata in the superset database;
# 2. superset/provision.py: the admin user from .env (created, or its password reset to the
#    one in .env) and the bundle superset/bundle (database, datasets, charts, the "Air
#    quality" dashboard), overwritten by UUID. The warehouse is queried as the read-only role
#    aq_superset that the postgres service created on first start.
#
# Secrets reach provision.py as one JSON document on stdin, never on a command line.
set -euo pipefail
: "${SUPERSET_ADMIN_PASSWORD:?SUPERSET_ADMIN_PASSWORD is not set}"
: "${SUPERSET_READER_PASSWORD:?SUPERSET_READER_PASSWORD is not set}"
: "${SUPERSET_WAREHOUSE_URL:?SUPERSET_WAREHOUSE_URL is not set}"
: "${SUPERSET_BUNDLE:?SUPERSET_BUNDLE is not set}"
: "${SUPERSET_PROVISION_SCRIPT:?SUPERSET_PROVISION_SCRIPT is not set}"

superset db upgrade
superset init

python - <<'PY' | python "$SUPERSET_PROVISION_SCRIPT"
import json
import os
import sys
from urllib.parse import quote, urlsplit

# SUPERSET_WAREHOUSE_URL names role, host, port and database; the password is added here
# (provision.py masks it in the imported database and passes it on separately)
url = urlsplit(os.environ["SUPERSET_WAREHOUSE_URL"])
password = os.environ["SUPERSET_READER_PASSWORD"]
netloc = f"{url.username}:{quote(password, safe='')}@{url.hostname}:{url.port or 5432}"
json.dump(
    {
        "bundle": os.environ["SUPERSET_BUNDLE"],
        "admin": {
            "username": os.environ.get("SUPERSET_ADMIN_USERNAME") or "admin",
            "password": os.environ["SUPERSET_ADMIN_PASSWORD"],
        },
        "warehouse": {"uri": url._replace(netloc=netloc).geturl(), "password": password},
    },
    sys.stdout,
)
PY
