"""Process-wide defaults for the libraries the steps use, set before any of them is imported.

One place, because a warm worker (:mod:`ecat_tasks.warm_workers`) imports torch, MLflow and
Great Expectations before any step runs: defaults that a step set just before its own import
would come too late there. The worker's environment wins over every default.
"""

from __future__ import annotations

import logging
import os

DEFAULTS = {
    # Torch's OpenMP threads spin while they wait for work. When two training tasks share a
    # worker's cores (teacher_refresh next to domain_reweight, student_distill next to a
    # comparison model), the spinning threads starve each other: measured on 2 cores, three
    # concurrent teacher_refresh processes took 21 s each with spinning and 3.8 s with passive
    # waits (same checkpoints). Read once, when torch loads its OpenMP runtime.
    "OMP_WAIT_POLICY": "PASSIVE",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # read when mlflow is imported
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GX_ANALYTICS_ENABLED": "false",
}
QUIET_LOGGERS = ("great_expectations", "alembic")  # INFO chatter that buries the task's own lines


def library_defaults() -> None:
    """Set :data:`DEFAULTS` where the environment leaves them unset, and quieten :data:`QUIET_LOGGERS`."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
