"""bench.bench_cost's reading of a day through the scheduler: per-task peak memory and the tables."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

from bench.bench_cost import _hex, sample_task_rss, scheduler_as_steps, scheduler_table


def test_task_processes_are_found_by_title_and_their_peak_rss_kept() -> None:
    """A child whose command line reads as a task runner's title (``airflow worker -- <ti id>``) is
    sampled under its task instance id, in the form SQLite keeps it; other children are not."""
    ti = uuid.uuid4()
    task = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(200 * 2**20); time.sleep(4)",
                             f"airflow worker -- {ti}"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(4)", "airflow supervisor: x"])
    peaks: dict[str, float] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_task_rss, args=(os.getpid(), stop, peaks))
    sampler.start()
    time.sleep(3)
    stop.set()
    sampler.join()
    task.wait()
    other.wait()
    assert list(peaks) == [ti.hex] == [_hex(str(ti))]
    assert peaks[ti.hex] > 200  # MB: the child's buffer


def test_scheduler_runs_tabulate_and_plot_as_steps() -> None:
    runs = [{"rows": 1_000_000, "executor": "ecat_tasks.warm_workers.WarmLocalExecutor", "slots": 2, "seconds": 128.4,
             "task_seconds": {"extract": 5.6, "train_comparison:mixed": 10.7},
             "task_peak_mb": {"extract": 850.0}}]
    table = scheduler_table(runs)
    assert "| extract | 5.6 / 850 |" in table
    assert "| comparison: mixed | 10.7 / nan |" in table  # a task the sampler missed says so
    assert "**128**" in table
    steps = scheduler_as_steps(runs[0])
    assert steps["rows"] == 1_000_000 and [s["step"] for s in steps["steps"]] == ["extract", "train_comparison:mixed"]
