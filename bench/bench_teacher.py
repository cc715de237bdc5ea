"""The teacher's cost under two configurations, side by side on the same seeded days.

    python -m bench.bench_teacher --rows 1000000 --conf '{"teacher_batch_size": 256, "teacher_warm_epochs": 3}' \\
        --conf '{}'

Two synthetic days of ``--rows`` entire-space rows each are seeded, extracted and validated
once (each step in its own process, as :mod:`bench.bench_cost` does). Then, for every
``--conf`` in turn, ``teacher_refresh`` runs on day 1 (a cold start: its lookback window is
that one day, so it trains on the same number of rows as a warm day) and on day 2 (a warm
start from that configuration's day-1 teacher), each in its own process. A configuration's
day-1 teacher replaces the previous one's, so every warm start continues its own chain.
Reported: step seconds (imports and process start excluded), the teacher's validation AUC
from its manifest (the slice every decision reads), and each configuration's time as a ratio
of the first's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_cost import _child, _env

DAY1 = "2026-11-01"
DAY2 = (dt.date.fromisoformat(DAY1) + dt.timedelta(days=1)).isoformat()


def run_step(step: str, ds: str, home: str, conf: dict[str, Any]) -> dict[str, Any]:
    """Child process: one step of one day; its seconds, peak RSS and (teacher) manifest figures."""
    import duckdb

    from ecat_tasks.config import EcatConfig
    from ecat_tasks.extract import extract
    from ecat_tasks.storage import Layout, read_manifest
    from ecat_tasks.teacher_refresh import teacher_refresh
    from ecat_tasks.validate import validate

    cfg, layout = EcatConfig.from_mapping(conf), Layout(home)
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    if step == "extract":
        with duckdb.connect(str(Path(home) / "warehouse.duckdb"), read_only=True) as con:
            extract(con, ds, cfg, layout)
    elif step == "validate":
        validate(ds, cfg, layout)
    else:
        small = teacher_refresh(ds, cfg, layout)
        full = read_manifest(Path(small["path"]))
        out = {"holdout_auc": full["holdout_auc"], "cold_start": full["cold_start"], "epochs": len(full["losses"]),
               "batch_size": full["batch_size"], "rows": full["rows"], "loss": full["losses"][-1]}
    return {"step": step, "ds": ds, "seconds": time.perf_counter() - t0,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="entire-space rows per day")
    parser.add_argument("--conf", action="append", required=True,
                        help="JSON config overrides of one configuration (repeat: the first is the reference)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--ds", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        if args.step == "seed":
            from ecat_tasks.synthetic import seed_warehouse

            seed_warehouse(Path(args.home) / "warehouse.duckdb", DAY1, 2, args.rows)
            print(json.dumps({"step": "seed"}))
        else:
            print(json.dumps(run_step(args.step, args.ds, args.home, json.loads(args.conf[0]))))
        return

    confs = [json.loads(c) for c in args.conf]
    with tempfile.TemporaryDirectory(prefix="ecat-bench-teacher-") as tmp:
        home = Path(tmp) / "home"
        env = _env(home)

        def child(step: str, ds: str = "", conf: dict[str, Any] | None = None) -> dict[str, Any]:
            return _child_teacher(["--step", step, "--ds", ds, "--home", str(home), "--rows", str(args.rows),
                                   "--conf", json.dumps(conf or {})], env)

        child("seed")
        for ds in (DAY1, DAY2):
            child("extract", ds)
            child("validate", ds)
        results = []
        for conf in confs:
            runs = [child("teacher", ds, conf) for ds in (DAY1, DAY2)]
            results.append({"conf": conf, "cold": runs[0], "warm": runs[1]})
            print(f"{json.dumps(conf)}: cold {runs[0]['seconds']:.1f}s, warm {runs[1]['seconds']:.1f}s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    ref = results[0]
    print(f"machine: {os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}; {args.rows:,} rows per day")
    print("| configuration | cold start: s / epochs x batch / val AUC | warm day: s / epochs x batch / val AUC | "
          "warm-day time vs the first |")
    print("|---|---|---|---|")
    for r in results:
        cells = [f"{r[k]['seconds']:.1f} / {r[k]['epochs']} x {r[k]['batch_size']} / {r[k]['holdout_auc']:.4f}"
                 for k in ("cold", "warm")]
        ratio = r["warm"]["seconds"] / ref["warm"]["seconds"]
        print(f"| `{json.dumps(r['conf'])}` | {cells[0]} | {cells[1]} | {ratio:.2f} |")


def _child_teacher(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    return _child(args, env, module="bench.bench_teacher")


if __name__ == "__main__":
    main()
