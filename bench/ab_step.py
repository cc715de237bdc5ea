"""One pipeline step, old code against new, on copies of one home: the time ratio and the same outputs.

    .venv/bin/python -m bench.ab_step --old main --home /path/to/ECAT_HOME --step score_previous_day \\
        --ds 2026-11-01 --repeats 3

``--old`` is a git revision, archived into a scratch directory; the new code is this checkout.
``--home`` holds the step's inputs (a day run up to the step); it is never written: every run
gets a fresh copy. Each repeat runs the step once with each code (this checkout's
``bench_cost.run_one_step``, importing ``ecat_tasks`` from that code's tree; the time excludes
the interpreter's start and imports), the order alternating (old-new, new-old, ...) so drift on
a shared machine hits both alike. Reported per pair and as a median: the ratio of wall times
and of CPU times (user + system of the step, less sensitive to the machine's load); on a busy
machine only the ratios mean something. After each run the step's outputs are read back (every
report partition's ``metrics.json`` and the latest value of every MLflow metric); the tool fails
if old and new wrote different numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_cost import ROOT, _env


def outputs(home: Path) -> dict[str, Any]:
    """What a step wrote that must not depend on the code's speed: report metrics and MLflow metrics."""
    reports = {p.parent.name: p.read_text() for p in sorted((home / "reports").glob("ds=*/metrics.json"))}
    db = home / "mlflow.db"
    metrics: list[tuple] = []
    if db.is_file():
        with sqlite3.connect(db) as con:
            metrics = con.execute(
                "SELECT r.name, m.key, m.value FROM latest_metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
                "WHERE r.lifecycle_stage = ? ORDER BY 1, 2", ("active",)).fetchall()
    return {"reports": reports, "mlflow": metrics}


# The child: this checkout's run_one_step (by file path), with ecat_tasks from the tree it runs in.
_CHILD = """import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("ab_bench_cost", sys.argv[1])
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)
print(json.dumps(runner.run_one_step(sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]))))
"""


def run(tree: Path, step: str, ds: str, source: Path, scratch: Path, conf: dict[str, Any],
        ) -> tuple[float, float, dict]:
    """Wall and CPU seconds of one run of ``step`` with the code of ``tree`` on a fresh copy of ``source``."""
    home = scratch / "home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(source, home, symlinks=True)
    env = _env(home) | {"PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT / "bench" / "bench_cost.py"), step, ds, str(home),
                          json.dumps(conf)], capture_output=True, text=True, cwd=tree, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{step} with the code of {tree} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"], result["cpu_seconds"], outputs(home)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="git revision of the old code")
    parser.add_argument("--home", required=True, type=Path, help="an ECAT_HOME holding the step's inputs (copied)")
    parser.add_argument("--step", required=True, help="a step of bench_cost (ecat_tasks.airflow_edge.STEPS)")
    parser.add_argument("--ds", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--conf", default="{}", help="configuration overrides as JSON")
    args = parser.parse_args(argv)
    conf = json.loads(args.conf)
    with tempfile.TemporaryDirectory(prefix="ecat-ab-step-") as tmp:
        scratch, old_tree = Path(tmp), Path(tmp) / "old"
        old_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive.stdout, check=True)
        ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
        for i in range(args.repeats):
            seconds: dict[str, tuple[float, float]] = {}
            written: dict[str, dict] = {}
            for name in (("old", "new") if i % 2 == 0 else ("new", "old")):
                tree = old_tree if name == "old" else ROOT
                wall, cpu, written[name] = run(tree, args.step, args.ds, args.home, scratch, conf)
                seconds[name] = (wall, cpu)
            if written["old"] != written["new"]:
                raise SystemExit(f"repeat {i + 1}: old and new wrote different numbers: not the same step")
            for j, kind in enumerate(ratios):
                ratios[kind].append(seconds["new"][j] / seconds["old"][j])
            print(json.dumps({"repeat": i + 1, **{f"{k}_{kind}_s": round(v[j], 2) for k, v in seconds.items()
                                                  for j, kind in enumerate(ratios)},
                              **{f"new/old_{kind}": round(r[-1], 3) for kind, r in ratios.items()}}), flush=True)
    print(f"{args.step} on {args.home} ({args.ds}), new/old over {args.repeats} alternating pairs: " + "; ".join(
        f"{kind} median {statistics.median(r):.3f} ({', '.join(f'{x:.3f}' for x in r)})" for kind, r in ratios.items())
        + "; outputs identical")

if __name__ == "__main__":
    sys.exit(main())
