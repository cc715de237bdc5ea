"""Per-task cost of one day of the pipeline: wall time and peak memory at several sizes.

    python -m bench.bench_cost --sizes 100000 1000000 4000000
    python -m bench.bench_cost --sizes 1000000 --e2e      # plus one day through `airflow dags test`

For each size (entire-space rows of the day) a fresh ECAT_HOME gets a synthetic warehouse of
one day (seeding is timed: the generator's rows/s), then every step of ``ecat_daily`` runs in
date order, each in its own subprocess so its peak resident memory (``ru_maxrss``) is its
own. The step's wall time excludes the interpreter's start and imports; the table shows both.
The configuration is the DAG's default (every baseline and ablation) unless ``--conf`` says
otherwise. Day 1 is a cold start whose lookback window is that one day, so the teacher
trains on the same rows as on a warm day.

``--e2e`` also runs the same day through Airflow (``airflow dags test``, in a fresh
AIRFLOW_HOME) and reports its wall time: the figure an operator sees.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DS = "2026-11-01"
STEPS = ("extract", "validate", "graph_select", "domain_reweight", "teacher_refresh", "student_distill",
         "train_baselines", "evaluate", "promote")


def run_one_step(step: str, ds: str, home: str, conf: dict[str, Any]) -> dict[str, Any]:
    """Child process: run one step with plain arguments, report its time and peak RSS."""
    import duckdb

    from ecat_tasks.airflow_edge import STEPS as STEP_FUNCS
    from ecat_tasks.config import EcatConfig
    from ecat_tasks.storage import Layout

    module_name, func_name = STEP_FUNCS[step].split(":")
    module = __import__(module_name, fromlist=[func_name])
    func = getattr(module, func_name)
    cfg = EcatConfig.from_mapping(conf)
    layout = Layout(home)
    t0 = time.perf_counter()
    if step == "extract":
        with duckdb.connect(str(Path(home) / "warehouse.duckdb"), read_only=True) as con:
            manifest = func(con, ds, cfg, layout)
    else:
        manifest = func(ds, cfg, layout)
    seconds = time.perf_counter() - t0
    return {"step": step, "seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rows": manifest.get("rows") or manifest.get("source_rows") or manifest.get("kept")}


def _child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "bench.bench_cost", *args], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - t0
    return result


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECAT_", "AIRFLOW"))}
    env.update(ECAT_HOME=str(home), ECAT_WAREHOUSE=str(home / "warehouse.duckdb"), PYTHONPATH=str(ROOT),
               DGLBACKEND="pytorch", MLFLOW_DISABLE_TELEMETRY="true", GX_ANALYTICS_ENABLED="false")
    return env


def bench_size(rows: int, conf: dict[str, Any], workdir: Path, e2e: bool) -> dict[str, Any]:
    home = workdir / f"home_{rows}"
    env = _env(home)
    seeded = _child(["--seed-only", "--rows", str(rows), "--home", str(home)], env)
    steps = [_child(["--one-step", step, "--home", str(home), "--conf", json.dumps(conf)], env) for step in STEPS]
    result = {"rows": rows, "seed": seeded, "steps": steps, "total_step_seconds": sum(s["seconds"] for s in steps),
              "total_process_seconds": sum(s["process_seconds"] for s in steps)}
    if e2e:
        result["e2e_seconds"] = dags_test(rows, conf, workdir / f"e2e_{rows}")
    return result


def dags_test(rows: int, conf: dict[str, Any], home: Path) -> float:
    """One day through Airflow (``airflow dags test``), fresh homes: the operator's wall time."""
    env = _env(home / "ecat")
    env.update(AIRFLOW_HOME=str(home / "airflow"))
    sourced = subprocess.run(["bash", "-c", f'source "{ROOT}/scripts/env.sh" >/dev/null && env -0'], env=env,
                             capture_output=True, check=True)
    env = dict(item.split("=", 1) for item in sourced.stdout.decode().split("\0") if "=" in item)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, check=True)
    _child(["--seed-only", "--rows", str(rows), "--home", str(home / "ecat")], env)
    t0 = time.perf_counter()
    out = subprocess.run([airflow, "dags", "test", "ecat_daily", DS, "--conf", json.dumps(conf)], env=env,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0 or "state=success" not in out.stdout + out.stderr:
        raise RuntimeError(f"airflow dags test failed:\n{(out.stdout + out.stderr)[-3000:]}")
    return seconds


def table(results: list[dict[str, Any]]) -> str:
    sizes = [r["rows"] for r in results]
    lines = ["| task | " + " | ".join(f"{n:,} rows: s / peak MB" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    seed_cells = [f"{r['seed']['seconds']:.1f} ({r['rows'] / r['seed']['seconds']:,.0f} rows/s) / {r['seed']['peak_mb']:,.0f}"
                  for r in results]
    lines.append("| generate (synthetic) | " + " | ".join(seed_cells) + " |")
    for i, step in enumerate(STEPS):
        cells = []
        for r in results:
            s = r["steps"][i]
            extra = f" ({r['rows'] / s['seconds']:,.0f} rows/s)" if step in ("extract", "validate") else ""
            cells.append(f"{s['seconds']:.1f}{extra} / {s['peak_mb']:,.0f}")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines.append("| all steps (step time) | " + " | ".join(f"{r['total_step_seconds']:.0f}" for r in results) + " |")
    lines.append("| all steps (with process start and imports) | "
                 + " | ".join(f"{r['total_process_seconds']:.0f}" for r in results) + " |")
    if any("e2e_seconds" in r for r in results):
        lines.append("| one day through `airflow dags test` | "
                     + " | ".join(f"{r['e2e_seconds']:.0f}" if "e2e_seconds" in r else "-" for r in results) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 4_000_000])
    parser.add_argument("--conf", default="{}", help="JSON config overrides, as in --conf of a DAG run")
    parser.add_argument("--e2e", action="store_true", help="also time one day through `airflow dags test`")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--one-step", help=argparse.SUPPRESS)
    parser.add_argument("--seed-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    conf = json.loads(args.conf)

    if args.seed_only:
        from ecat_tasks.synthetic import seed_warehouse

        t0 = time.perf_counter()
        seed_warehouse(Path(args.home) / "warehouse.duckdb", DS, 1, args.rows)
        print(json.dumps({"seconds": time.perf_counter() - t0,
                          "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    if args.one_step:
        print(json.dumps(run_one_step(args.one_step, DS, args.home, conf)))
        return

    with tempfile.TemporaryDirectory(prefix="ecat-bench-cost-") as tmp:
        results = []
        for rows in args.sizes:
            results.append(bench_size(rows, conf, Path(tmp), args.e2e and rows == 1_000_000))
            print(f"{rows:,} rows done: {results[-1]['total_step_seconds']:.0f}s of steps", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"machine: {os.cpu_count()} CPUs; conf {conf or 'defaults'}")
    print(table(results))


if __name__ == "__main__":
    main()
