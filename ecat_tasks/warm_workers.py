"""Warm workers: a worker imports the training stack once, and every task it forks inherits it.

Airflow runs each task in a process forked from its worker (a LocalExecutor worker, a Celery
pool process). A task that imports torch, DGL, Great Expectations and MLflow itself pays
seconds before it reads a row: measured on 2 cores, about 6 s per task, 129 s of a 1M-row day's
22 tasks. Imported once in the worker, the modules are in every fork (copy-on-write), so a task
starts with them loaded. Nothing here runs when the DAG is parsed: only a worker calls
:func:`preload`. Each worker holds its own copy (about 430 MB private): size the executor's
slots (``[core] parallelism``, Celery's ``worker_concurrency``) to the tasks the machine runs at
once, not beyond.

Two entry points, one per executor:
- :class:`WarmLocalExecutor`: ``AIRFLOW__CORE__EXECUTOR=ecat_tasks.warm_workers.WarmLocalExecutor``
  (the scheduler harness of the tests and ``bench.bench_cost --slots``);
- ``CELERY_CONFIG`` (:func:`celery_config`): ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=ecat_tasks.warm_workers.CELERY_CONFIG``
  (docker compose, ``scripts/celery_integration.sh``): Airflow's default Celery config, plus a
  hook that preloads in the worker's main process before it forks its pool.

A module that fails to import is logged and skipped, and so is a preload that fails as a
whole: the task that needs the module imports it again and fails there, with its own error and
on-call hint. A worker never dies of its preload.
"""

from __future__ import annotations

import functools
import gc
import importlib
import logging
import os
import signal
import time
from typing import Any

from airflow.executors.local_executor import LocalExecutor, _run_worker

from ecat_tasks.runtime import library_defaults

log = logging.getLogger(__name__)

# Libraries the steps import inside their functions (so that the DAG parses without them),
# then the step modules themselves (airflow_edge.STEPS).
HEAVY_LIBRARIES = ("torch", "dgl", "great_expectations", "mlflow", "sklearn.metrics", "duckdb", "pyarrow.dataset")


def preload_modules() -> list[str]:
    """Every module a task imports that is worth importing once per worker."""
    from ecat_tasks.airflow_edge import STEPS

    steps = sorted({target.split(":")[0] for target in STEPS.values()})
    return ["ecat_tasks.airflow_edge", *HEAVY_LIBRARIES, *steps]


def preload(modules: list[str] | None = None) -> dict[str, Any]:
    """Import ``modules`` (default :func:`preload_modules`) into this process, then move what they
    allocated out of the garbage collector's reach (``gc.freeze``), so that a forked task's
    collections do not write to, and so copy, the inherited pages. A failure is logged and
    skipped. Returns what loaded, what failed and the seconds it took."""
    library_defaults()  # before torch, MLflow and GX load: they read these once
    t0 = time.perf_counter()
    loaded, failed = [], {}
    try:
        names = preload_modules() if modules is None else modules
    except Exception as exc:  # noqa: BLE001 - a worker never dies of its preload
        names, failed["ecat_tasks.airflow_edge"] = [], f"{type(exc).__name__}: {exc}"
    for name in names:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:  # noqa: BLE001 - the task that needs it fails with its own error
            failed[name] = f"{type(exc).__name__}: {exc}"
    for name, error in failed.items():
        log.warning("warm worker pid=%d: preloading %s failed (%s); tasks import it themselves",
                    os.getpid(), name, error)
    gc.freeze()
    seconds = time.perf_counter() - t0
    log.info("warm worker pid=%d: preloaded %d module(s) in %.1fs%s", os.getpid(), len(loaded), seconds,
             f", {len(failed)} failed: {', '.join(failed)}" if failed else "")
    return {"loaded": loaded, "failed": failed, "seconds": seconds}


def _warm_run_worker(**kwargs: Any) -> None:
    """A LocalExecutor worker that preloads before it takes its first task."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as _run_worker does: ctrl-c stops the scheduler, not this
    try:
        preload()
    except Exception:  # noqa: BLE001 - serve tasks cold rather than not at all
        log.exception("warm worker pid=%d: preload failed; tasks import what they need themselves", os.getpid())
    _run_worker(**kwargs)


class WarmLocalExecutor(LocalExecutor):
    """LocalExecutor whose worker processes import the training stack once, at start.

    Each worker preloads in its own process (the scheduler stays free of torch); the tasks it
    then forks start with the modules loaded. ``_spawn_worker`` mirrors Airflow 3.3.2's with
    another target (``tests/test_warm_workers.py`` starts and stops one, so an upgrade that
    changes it fails a unit test)."""

    def _spawn_worker(self) -> None:
        import multiprocessing

        process = multiprocessing.Process(
            target=_warm_run_worker,
            kwargs={
                "logger_name": self.log.name,
                "input": self.activity_queue,
                "output": self.result_queue,
                "unread_messages": self._unread_messages,
                "team_conf": self.conf,
            },
        )
        process.start()
        self.workers[process.pid] = process


@functools.cache
def celery_config() -> dict[str, Any]:
    """Airflow's default Celery config, with :func:`preload` hooked to ``celeryd_init``: only a
    worker sends it (not the scheduler, not Flower), in its main process, before it forks its pool.
    Airflow's own ``worker_ready`` handler unfreezes the collector once the pool is up."""
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
    from celery.signals import celeryd_init

    celeryd_init.connect(lambda **_: preload(), weak=False)
    return DEFAULT_CELERY_CONFIG


def __getattr__(name: str) -> Any:
    """``CELERY_CONFIG`` is built on first use, so the LocalExecutor path never imports Celery."""
    if name == "CELERY_CONFIG":
        return celery_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
