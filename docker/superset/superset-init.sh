#!/usr/bin/env bash
# One-shot set-up of Superset's metadata (the superset-init service of docker-compose.yml):
# schema migrations, the admin user from .env (skipped if it exists), roles and permissions.
set -euo pipefail
: "${SUPERSET_ADMIN_PASSWORD:?SUPERSET_ADMIN_PASSWORD is not set}"
admin="${SUPERSET_ADMIN_USERNAME:-admin}"

superset db upgrade
superset fab create-admin \
    --username "$admin" --firstname Superset --lastname Admin \
    --email "$admin@example.com" --password "$SUPERSET_ADMIN_PASSWORD"
superset init
