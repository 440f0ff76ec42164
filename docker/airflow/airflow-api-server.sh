#!/usr/bin/env bash
# Starts the Airflow API server with the admin password from .env (AIRFLOW_ADMIN_PASSWORD via
# docker-compose.yml) instead of the random one Airflow's simple auth manager would generate:
# the password goes into the manager's passwords file (mode 0600), then the variable is dropped.
set -euo pipefail
: "${AIRFLOW_ADMIN_PASSWORD:?AIRFLOW_ADMIN_PASSWORD is not set}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE is not set}"
python - <<'PY'
import json
import os

os.umask(0o077)
user = os.environ.get("AIRFLOW_ADMIN_USERNAME") or "admin"
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
with open(path, "w", encoding="utf-8") as fh:
    json.dump({user: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
PY
unset AIRFLOW_ADMIN_PASSWORD
exec airflow api-server
