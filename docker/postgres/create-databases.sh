#!/usr/bin/env bash
# First start of the compose PostgreSQL (docker-entrypoint-initdb.d, empty data volume only):
# one database and one owner role each for the warehouse (aq), Airflow's metadata (airflow)
# and Superset's metadata (superset), then the read-only role Superset queries the warehouse
# with (aq_superset, superset-reader-role.sql: the SQL of `aqi dashboards role-sql`).
# Passwords come from the environment (.env via docker-compose.yml) and reach the server as
# psql variables, quoted by psql (:'var'), never pasted into SQL text.
set -euo pipefail

: "${WAREHOUSE_DB_PASSWORD:?WAREHOUSE_DB_PASSWORD is not set}"
: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}"
: "${SUPERSET_DB_PASSWORD:?SUPERSET_DB_PASSWORD is not set}"
: "${SUPERSET_READER_PASSWORD:?SUPERSET_READER_PASSWORD is not set}"
READER_ROLE_SQL=/opt/aq-docker/superset-reader-role.sql

psql --no-psqlrc -v ON_ERROR_STOP=1 \
    --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
    -v aq_password="$WAREHOUSE_DB_PASSWORD" \
    -v airflow_password="$AIRFLOW_DB_PASSWORD" \
    -v superset_password="$SUPERSET_DB_PASSWORD" <<'SQL'
CREATE ROLE aq LOGIN PASSWORD :'aq_password';
CREATE DATABASE aq OWNER aq;
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE superset LOGIN PASSWORD :'superset_password';
CREATE DATABASE superset OWNER superset;
-- each database is private to its owner (aq_superset is granted CONNECT on aq below)
REVOKE ALL ON DATABASE aq, airflow, superset, postgres FROM PUBLIC;
SQL

# as the superuser, in the warehouse: gold is created owned by aq (dbt's role), so that the
# default privileges for the tables aq creates there can be declared before dbt runs
psql --no-psqlrc -v ON_ERROR_STOP=1 \
    --username "$POSTGRES_USER" --dbname aq \
    -v password="$SUPERSET_READER_PASSWORD" \
    -f "$READER_ROLE_SQL"
