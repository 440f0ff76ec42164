# The two commands a newcomer needs: `make demo` and `make test`.
# Both bootstrap everything on a fresh machine: uv (into .tools/ if it is not on PATH),
# the main environment from uv.lock, the JVM jars from jvm/pom.xml (Maven Central, once),
# Superset's environment from superset/uv.lock, and a Java check.

SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
VENV := $(CURDIR)/.venv
AQI := $(VENV)/bin/aqi
PYTEST_ARGS ?=
# worker processes of `make test` / `make test-integration` (pytest-xdist; 0 = one process):
# tests sharing a module's fixture stay on one worker (--dist loadgroup, xdist_group marks)
PYTEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadgroup)

.PHONY: help uv env jvm superset-env java-check dashboards-browser demo demo-live demo-down test test-unit test-integration test-drills services-down lint clean bench bench-archive bench-collect bench-dag bench-dashboards bench-driver-jit bench-fuzz bench-kafka-jvm bench-parse-plan bench-stream-start bench-warehouse

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

uv: ## install uv into .tools/ unless it is on PATH
	@if [ ! -x "$(UV)" ]; then \
	  echo "==> installing uv $(UV_VERSION) into .tools/"; \
	  python3 -m venv .tools && .tools/bin/pip install --quiet "uv==$(UV_VERSION)"; \
	fi
	@echo "==> uv: $$($(UV) --version)"

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on CI machines and in many
# containers) Python never caches bytecode, and every dbt/airflow/aqi process recompiled
# ~1,300 modules (+1.5 s per dbt command, measured in docs/benchmarks.md)
env: uv ## create/refresh the main environment (.venv) from uv.lock
	@echo "==> main environment: uv sync --frozen --compile-bytecode"
	@$(UV) sync --frozen --quiet --compile-bytecode
	@echo "==> main environment ready: $(VENV)"

jvm: env ## Apache Kafka + Spark's Kafka connector from Maven Central (jvm/pom.xml), once
	@$(AQI) setup --only jvm

superset-env: env ## create/refresh Superset's own environment from superset/uv.lock
	@$(AQI) setup --only superset

java-check: ## Spark needs Java 17 or newer
	@command -v java >/dev/null 2>&1 || { echo "ERROR: Java 17+ is required for Spark and was not found on PATH. Install it, e.g.: sudo apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }
	@v=$$(java -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -n1); \
	 if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "ERROR: Java 17+ is required for Spark, found: $$(java -version 2>&1 | head -n1)" >&2; exit 1; fi; \
	 echo "==> java $$v: ok"

# make demo DEMO_ARGS="--locations 10 --days 7"   (see: .venv/bin/aqi demo --help)
DEMO_ARGS ?=
demo: env jvm superset-env java-check ## the whole pipeline on simulated data, left running with its dashboards
	@$(AQI) demo $(DEMO_ARGS)

# needs OPENAQ_API_KEY and one of AQ_COLLECT_LOCATIONS / AQ_COLLECT_BBOX / AQ_COLLECT_COUNTRY (.env)
demo-live: env jvm superset-env java-check ## the same from the real OpenAQ API, collecting and streaming on
	@$(AQI) demo --live $(DEMO_ARGS)

demo-down: ## stop everything the demo started
	@$(AQI) demo --down

test: env jvm superset-env java-check lint ## lint, then the whole test suite (unit + integration, real services)
	@echo "==> running the test suite: pytest"
	@$(VENV)/bin/pytest $(XDIST) $(PYTEST_ARGS)

test-unit: env ## only the fast unit tests
	@$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

dashboards-browser: ## Debian chromium + playwright-core for `aqi dashboards screenshot`
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium; } || { echo "ERROR: chromium is missing: apt-get install -y chromium" >&2; exit 1; }
	@cd superset/screenshot && npm ci --no-audit --no-fund --loglevel=error

test-integration: env jvm superset-env java-check ## only the integration tests
	@$(VENV)/bin/pytest -m integration $(XDIST) $(PYTEST_ARGS)

test-drills: env jvm java-check ## only the stream's fault drills (kill -9 of its driver, broker, PostgreSQL; a recreated topic)
	@$(VENV)/bin/pytest -m drill $(XDIST) $(PYTEST_ARGS)

services-down: ## stop the embedded services
	@$(AQI) services down

lint: env ## ruff
	@echo "==> ruff check"
	@$(VENV)/bin/ruff check aqi ingestion openaq_mock spark_streaming expectations dags tests docker benchmarks superset/provision.py superset/superset_config.py superset/aq_basemap.py

clean: services-down ## stop services and remove environments and AQ_HOME (./.aq)
	rm -rf .venv superset/.venv .tools .aq superset/screenshot/node_modules

bench: env jvm java-check ## benchmarks, ~20 min (results go to docs/benchmarks.md by hand, with machine and date)
	@$(VENV)/bin/python benchmarks/bench_services.py
	@$(VENV)/bin/python benchmarks/bench_ingestion.py
	@$(VENV)/bin/python benchmarks/bench_stream.py
	@$(VENV)/bin/python benchmarks/bench_latency.py

bench-archive: env jvm java-check ## `aqi backfill --source archive`: 3,497 mock archive files into the embedded Kafka, 3 runs (~2 min)
	@$(VENV)/bin/python benchmarks/bench_archive.py

bench-collect: env ## a simulated day of `aqi collect --world` on the mock's world profile with the real rate limits (~15 min)
	@$(VENV)/bin/python benchmarks/bench_collect.py --hours 24

bench-dag: env jvm java-check ## openaq_elt under the embedded scheduler: tiny warehouse, then 1M and 10M raw + one world hour (~40 min; quiet machine)
	@$(VENV)/bin/python benchmarks/bench_dag.py tiny --stream running
	@$(VENV)/bin/python benchmarks/bench_dag.py tiny --stream none
	@$(VENV)/bin/python benchmarks/bench_dag.py world --rows 1000000
	@$(VENV)/bin/python benchmarks/bench_dag.py world --rows 10000000

bench-dashboards: env superset-env ## the dashboard's chart data requests, cold and warm (results cache), at 10M raw rows (~20 min; quiet machine)
	@$(VENV)/bin/python benchmarks/bench_dashboards.py --rows 10000000

bench-driver-jit: env jvm java-check ## `aqi stream --available-now` with the quick and the full JIT at 5k, 120k and 600k records (~10 min; quiet machine)
	@$(VENV)/bin/python benchmarks/bench_driver_jit.py --rounds 2

bench-fuzz: env jvm java-check ## the stream's parser on 1,000,000 fuzzed messages, held to the contract (~25 min)
	@$(VENV)/bin/python benchmarks/bench_fuzz_parse.py --messages 1000000

bench-kafka-jvm: env jvm java-check ## the embedded broker's CPU (start, idle minute) with Kafka's JVM options and the tests' (~5 min; quiet machine)
	@$(VENV)/bin/python benchmarks/bench_kafka_jvm.py --rounds 2

bench-parse-plan: env jvm java-check ## building the stream's parse plan in a fresh driver: py4j calls, time, CPU (~3 min; quiet machine)
	@$(VENV)/bin/python benchmarks/bench_parse_plan.py --rounds 4

bench-stream-start: env jvm java-check ## the Spark driver's start with and without the class archive of `make jvm` (~2 min; quiet machine)
	@$(VENV)/bin/python benchmarks/bench_stream_start.py --rounds 4

bench-warehouse: env jvm ## dbt full vs incremental at 1M and 10M raw rows (~30 min; run on a quiet machine)
	@$(VENV)/bin/python benchmarks/bench_warehouse.py --rows 1000000
	@$(VENV)/bin/python benchmarks/bench_warehouse.py --rows 10000000
