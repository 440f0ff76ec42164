"""Great Expectations quality gates on the raw table and the gold marts, written as code.

- :mod:`expectations.runner` - :func:`~expectations.runner.run_checks` /
  :func:`~expectations.runner.require_checks`: the one entry point of the Airflow DAG and of
  ``aqi check``; Data Docs under ``AQ_HOME/gx_docs``.
- :mod:`expectations.suites` - the suites themselves (the source of truth; every run
  adds-or-updates them in the GX Data Context).
- :mod:`expectations.reference` - the thresholds they share with dbt, read from dbt's seeds
  and yml files.
- :mod:`expectations.report` - the readable report (one line per failed expectation).

Nothing is imported here: Great Expectations takes seconds to import, so callers import the
runner where they run checks.
"""
