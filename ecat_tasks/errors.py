"""Errors that retrying cannot heal.

A step raises a :class:`PermanentError` for bad data or bad configuration: the same input
gives the same failure on every try, so the Airflow edge turns it into a failure without
retries (``AirflowFailException``). Everything else keeps the task's retries; in extract
that means connection and lock errors of the warehouse. Standard library only: the DAG file
imports the config, which imports this.
"""

from __future__ import annotations


class PermanentError(Exception):
    """Retrying cannot help: fail the task at once, and say what to fix."""


class DataError(PermanentError, ValueError):
    """The day's data breaks the contract; the message names the column and the day."""


class ConfigError(PermanentError, ValueError):
    """A run parameter is unknown or invalid; the message names it (and the closest valid name)."""
