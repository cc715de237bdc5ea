"""Pipeline steps, old code against new, on copies of one home: the time ratio and the same outputs.

    .venv/bin/python -m bench.ab_step --old main --home /path/to/ECAT_HOME --step score_previous_day \\
        --ds 2026-11-01 --repeats 3
    .venv/bin/python -m bench.ab_step --old main --home HOME --ds 2026-11-01 \\
        --step student_distill train_comparison:fixed_kd train_comparison:no_kd    # several, in order

``--old`` is a git revision, archived into a scratch directory; the new code is this checkout.
``--home`` holds the steps' inputs (a day run up to the first step); it is never written: every
run gets a fresh copy, on which the steps run one after another (what one writes, the next may
read). Each repeat runs the steps once with each code (this checkout's
``bench_cost.run_one_step``, importing ``ecat_tasks`` from that code's tree; the time excludes
the interpreter's start and imports), the order alternating (old-new, new-old, ...) so drift on
a shared machine hits both alike. Reported per pair and as a median: the ratio of wall times
and of CPU times (user + system of the steps, less sensitive to the machine's load), of each
step and of all together; on a busy machine only the ratios mean something. After each run the
outputs are read back (every report partition's ``metrics.json``, the latest value of every
MLflow metric and every model partition's checksum); the tool fails if old and new wrote
different numbers or checkpoints, unless ``--outputs-may-differ`` (a change whose outputs
were checked on the validation slice apart: then it only says what differs).
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
    models = {p.parent.relative_to(home).as_posix(): json.loads(p.read_text()).get("checksum")
              for p in sorted((home / "models").glob("**/ds=*/_manifest.json"))}
    return {"reports": reports, "mlflow": metrics, "models": models}


# The child: this checkout's run_one_step (by file path), with ecat_tasks from the tree it runs in.
_CHILD = """import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("ab_bench_cost", sys.argv[1])
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)
print(json.dumps(runner.run_one_step(sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]))))
"""


def run(tree: Path, steps: list[str], ds: str, source: Path, scratch: Path, conf: dict[str, Any],
        ) -> tuple[list[tuple[float, float]], dict]:
    """Wall and CPU seconds of each of ``steps``, run in order with the code of ``tree`` on one
    fresh copy of ``source``, and what they wrote."""
    home = scratch / "home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(source, home, symlinks=True)
    env = _env(home) | {"PYTHONPATH": str(tree)}
    seconds = []
    for step in steps:
        out = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT / "bench" / "bench_cost.py"), step, ds, str(home),
                              json.dumps(conf)], capture_output=True, text=True, cwd=tree, env=env)
        if out.returncode != 0:
            raise SystemExit(f"{step} with the code of {tree} failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        seconds.append((result["seconds"], result["cpu_seconds"]))
    return seconds, outputs(home)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="git revision of the old code")
    parser.add_argument("--home", required=True, type=Path, help="an ECAT_HOME holding the step's inputs (copied)")
    parser.add_argument("--step", required=True, nargs="+",
                        help="steps of bench_cost (ecat_tasks.airflow_edge.STEPS; train_comparison:<model>), run in order")
    parser.add_argument("--ds", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--conf", default="{}", help="configuration overrides as JSON")
    parser.add_argument("--outputs-may-differ", action="store_true",
                        help="a change that alters outputs (checked on the validation slice apart): time it, say what differs")
    args = parser.parse_args(argv)
    conf = json.loads(args.conf)
    with tempfile.TemporaryDirectory(prefix="ecat-ab-step-") as tmp:
        scratch, old_tree = Path(tmp), Path(tmp) / "old"
        old_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive.stdout, check=True)
        names = [*args.step, "all"] if len(args.step) > 1 else args.step
        ratios: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
        for i in range(args.repeats):
            seconds: dict[str, list[tuple[float, float]]] = {}
            written: dict[str, dict] = {}
            for name in (("old", "new") if i % 2 == 0 else ("new", "old")):
                tree = old_tree if name == "old" else ROOT
                seconds[name], written[name] = run(tree, args.step, args.ds, args.home, scratch, conf)
                if len(args.step) > 1:
                    seconds[name].append((sum(w for w, _ in seconds[name]), sum(c for _, c in seconds[name])))
            if written["old"] != written["new"]:
                differ = [k for k in written["old"] if written["old"][k] != written["new"][k]]
                if not args.outputs_may_differ:
                    raise SystemExit(f"repeat {i + 1}: old and new wrote different {', '.join(differ)}: not the same steps")
                print(f"repeat {i + 1}: old and new wrote different {', '.join(differ)} (--outputs-may-differ)", flush=True)
            for n, step in enumerate(names):
                for j, kind in enumerate(("wall", "cpu")):
                    ratios[step][kind].append(seconds["new"][n][j] / seconds["old"][n][j])
                print(json.dumps({"repeat": i + 1, "step": step,
                                  **{f"{k}_{kind}_s": round(v[n][j], 2) for k, v in seconds.items()
                                     for j, kind in enumerate(("wall", "cpu"))},
                                  **{f"new/old_{kind}": round(r[-1], 3) for kind, r in ratios[step].items()}}),
                      flush=True)
    for step in names:
        print(f"{step} on {args.home} ({args.ds}), new/old over {args.repeats} alternating pairs: " + "; ".join(
            f"{kind} median {statistics.median(r):.3f} ({', '.join(f'{x:.3f}' for x in r)})"
            for kind, r in ratios[step].items()) + ("" if args.outputs_may_differ else "; outputs identical"))


if __name__ == "__main__":
    sys.exit(main())
