"""The core every other part stands on: configuration, errors, connections, secrets, the
warehouse's migrations and their SQL, warehouse and environment helpers, Kafka topics.

It imports nothing else of the project (pyproject.toml's import-linter contracts, checked by
tests/unit/test_layers.py): the pipeline stages (``ingestion``, ``spark_streaming``,
``expectations``) import only this, the service supervisors (``aqi.services``) sit on the
stages, and the shell (the ``aqi`` command, demo, DAG glue, exports, alerts) on top.
"""
