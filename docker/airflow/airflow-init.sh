#!/usr/bin/env bash
# One-shot set-up before the Airflow components start (the airflow-init service of
# docker-compose.yml): the two steps `aqi airflow up` takes before it starts them.
#
# 1. `airflow db migrate`: the metadata schema in the airflow database.
# 2. `aqi dbt parse --quiet` (what aqi.orchestration.prepare_dbt_manifest runs): Cosmos renders
#    openaq_elt from dbt_project/target/manifest.json, and dbt_project/ is mounted from the
#    checkout, so the manifest baked into the image may describe other models. dbt writes it
#    to the dbt-target volume that every Airflow container mounts at dbt_project/target.
#    `dbt parse` renders the profile (AQ_DATABASE_URL) but does not connect.
set -euo pipefail
airflow db migrate
aqi dbt parse --quiet
echo "airflow-init: metadata migrated, dbt manifest written"
