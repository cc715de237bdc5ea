"""Warm workers (ecat_tasks.warm_workers): a worker imports the training stack once, tasks inherit it."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ecat_tasks import warm_workers
from ecat_tasks.airflow_edge import STEPS

REPO = Path(__file__).resolve().parents[1]


def test_preload_list_covers_every_step_and_sets_omp_first() -> None:
    modules = warm_workers.preload_modules()
    assert modules[0] == "ecat_tasks.airflow_edge"  # sets OMP_WAIT_POLICY before torch loads
    assert modules.index("ecat_tasks.airflow_edge") < modules.index("torch")
    assert {target.split(":")[0] for target in STEPS.values()} <= set(modules)
    assert {"torch", "dgl", "great_expectations", "mlflow"} <= set(modules)


def test_preload_survives_a_broken_module_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even the list failing (a broken airflow_edge) leaves the worker alive: it serves tasks cold."""
    def broken() -> list[str]:
        raise ImportError("airflow_edge is broken")
    monkeypatch.setattr(warm_workers, "preload_modules", broken)
    result = warm_workers.preload()
    assert result["loaded"] == [] and "ImportError: airflow_edge is broken" in result["failed"]["ecat_tasks.airflow_edge"]


def test_warm_local_executor_starts_and_stops_its_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The executor as the scheduler drives it: start() spawns the workers (each preloads: here a
    marker file), end() stops them. Fails when an Airflow upgrade changes what _spawn_worker builds on."""
    marker = tmp_path / "preloaded"
    monkeypatch.setattr(warm_workers, "preload", _record_preload(str(marker)))
    executor = warm_workers.WarmLocalExecutor(parallelism=1)
    executor.start()
    try:
        (worker,) = executor.workers.values()
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.read_text() == "preloaded" and worker.is_alive()
        pid = worker.pid
    finally:
        executor.end()  # a poison pill per worker, then joins (and closes) them
    assert not psutil.pid_exists(pid)


def test_preload_skips_a_broken_module_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    result = warm_workers.preload(["json", "ecat_tasks_no_such_module"])
    assert result["loaded"] == ["json"]
    assert list(result["failed"]) == ["ecat_tasks_no_such_module"]
    assert "ModuleNotFoundError" in result["failed"]["ecat_tasks_no_such_module"]
    assert "preloading ecat_tasks_no_such_module failed" in caplog.text
    assert "preloaded 1 module(s)" in caplog.text and "1 failed: ecat_tasks_no_such_module" in caplog.text


def _record_preload(path: str):
    def preload(modules=None):
        Path(path).write_text("preloaded")
        return {"loaded": [], "failed": {}, "seconds": 0.0}
    return preload


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="the LocalExecutor forks its workers here")
def test_local_executor_worker_preloads_before_its_first_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker preloads, then serves its queue: here a poison pill only, so it exits 0 at once."""
    marker = tmp_path / "preloaded"
    monkeypatch.setattr(warm_workers, "preload", _record_preload(str(marker)))
    inbox: multiprocessing.SimpleQueue = multiprocessing.SimpleQueue()
    inbox.put(None)

    class Conf:
        team_name = None

    worker = multiprocessing.Process(target=warm_workers._warm_run_worker, kwargs={
        "logger_name": "test", "input": inbox, "output": multiprocessing.Queue(),
        "unread_messages": multiprocessing.Value("I", 1), "team_conf": Conf()})
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    assert marker.read_text() == "preloaded"


CELERY = r"""
import sys
from pathlib import Path
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from airflow.configuration import conf
from celery.signals import celeryd_init, import_modules
from ecat_tasks import warm_workers

calls = []
warm_workers.preload = lambda modules=None: calls.append(modules)
config = conf.getimport("celery", "celery_config_options")  # as Airflow's Celery app reads it
assert config == DEFAULT_CELERY_CONFIG
assert conf.getimport("celery", "celery_config_options") is config  # one hook, however often it is read
import_modules.send(sender=None)  # Flower sends this one too: no preload there
assert calls == [], calls
celeryd_init.send(sender="worker@host", instance=None, conf=None, options={})  # a worker, before its pool forks
print(len(calls))
"""


def test_celery_config_is_airflows_plus_one_preload_hook(tmp_path: Path) -> None:
    """In a fresh process: reading the config must not preload (the scheduler reads it too), nor
    may ``import_modules`` (Flower sends it); a worker's ``celeryd_init`` preloads once."""
    proc = subprocess.run([sys.executable, "-c", CELERY], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path),
                               "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "ecat_tasks.warm_workers.CELERY_CONFIG"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "1"


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        warm_workers.NOT_A_CONFIG  # noqa: B018
