"""ECAT pipeline: every step of the ``ecat_daily`` DAG as a plain, testable function."""

import logging

# Library code logs; callers (Airflow, tests, scripts) decide where logs go.
logging.getLogger(__name__).addHandler(logging.NullHandler())
