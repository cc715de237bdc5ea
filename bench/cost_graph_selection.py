"""The production steps of a warm day under top_k against soft graph selection, side by side.

    .venv/bin/python -m bench.cost_graph_selection --home HOME [--reps 2] [--soft '{"max_source_rows": 600000}']

HOME is a warm home with the day's production path already run once: bench_cost's two days
seeded, every step of ``2026-10-31`` run, then ``2026-11-01``'s production path (bench_cost's own
``--one-step`` calls; it keeps no home itself). Each configuration gets its own copy of HOME; graph_select, domain_reweight and
student_distill run in that order, each its own process (``bench.bench_cost --one-step``), the
two configurations alternating, the day cache cleared before each. Prints one JSON line per step
(wall and CPU seconds, peak MB, candidate rows).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench.bench_cost import DS, _child, _env

STEPS = ("graph_select", "domain_reweight", "student_distill")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, required=True)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--soft", default="{}", help="extra config of the soft side (JSON)")
    args = p.parse_args(argv)
    confs = {"top_k": {"graph_selection": "top_k", "graph_score_norm": "share"},
             "soft": {"graph_selection": "soft", "graph_score_norm": "degree", "graph_weight_power": 1.0,
                      **json.loads(args.soft)}}
    with tempfile.TemporaryDirectory(prefix="cost-graph-selection-") as tmp:
        homes = {name: Path(tmp) / name for name in confs}
        for home in homes.values():
            shutil.copytree(args.home, home, symlinks=True)
        for rep in range(args.reps):
            order = list(confs) if rep % 2 == 0 else list(reversed(list(confs)))
            for name in order:
                shutil.rmtree(homes[name] / "cache", ignore_errors=True)
                for step in STEPS:
                    r = _child(["--one-step", step, "--ds", DS, "--home", str(homes[name]),
                                "--conf", json.dumps(confs[name])], _env(homes[name]))
                    print(json.dumps({"rep": rep, "conf": name, "step": step, "seconds": round(r["seconds"], 2),
                                      "cpu_seconds": round(r["cpu_seconds"], 2), "peak_mb": round(r["peak_mb"]),
                                      "rows": r.get("rows")}), flush=True)


if __name__ == "__main__":
    main()
