"""Where a step's peak memory comes from: RSS and peak RSS printed around chosen functions.

    .venv/bin/python -m bench.probe_memory student_distill --home /work/g16/home --ds 2026-11-01 \\
        --wrap ecat_tasks.student_distill:candidates_part ecat_tasks.models.trainer:train_epochs

The step runs in this process on an existing ``ECAT_HOME`` (e.g. a ``bench_cost`` home or a
copy of its lake), with ``--conf`` as a DAG run's; each ``module:function`` is replaced in its
module by a wrapper that prints the process's RSS and peak RSS (``ru_maxrss``) before and after
each call. Used for the stage-by-stage figures of graph_select, domain_reweight and
student_distill at 16M rows in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import time
from typing import Any, Callable

import psutil


def _report(tag: str) -> None:
    rss = psutil.Process().memory_info().rss / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{time.strftime('%H:%M:%S')} {tag}: rss {rss:,.0f} MB, peak {peak:,.0f} MB", flush=True)


def _wrapped(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        _report(f"before {name}")
        out = func(*args, **kwargs)
        _report(f"after {name}")
        return out
    return call


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", help="a step of ecat_tasks.airflow_edge.STEPS taking (ds, cfg, layout)")
    p.add_argument("--home", required=True)
    p.add_argument("--ds", required=True)
    p.add_argument("--conf", default="{}")
    p.add_argument("--wrap", nargs="*", default=[], help="module:function to report around")
    args = p.parse_args(argv)

    from ecat_tasks.airflow_edge import STEPS
    from ecat_tasks.config import EcatConfig
    from ecat_tasks.storage import Layout

    for target in args.wrap:
        module_name, func_name = target.split(":")
        module = importlib.import_module(module_name)
        setattr(module, func_name, _wrapped(func_name, getattr(module, func_name)))
    module_name, func_name = STEPS[args.step].split(":")
    step = getattr(importlib.import_module(module_name), func_name)
    _report("start")
    step(args.ds, EcatConfig.from_mapping(json.loads(args.conf)), Layout(args.home))
    _report("end")


if __name__ == "__main__":
    main()
