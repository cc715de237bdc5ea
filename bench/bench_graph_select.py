"""Benchmark of graph_select's three stages: graph build, walks, selection.

    python -m bench.bench_graph_select --sizes 1000000 4000000 16000000

``--sizes`` are interactions in the lookback window (source and target). Each size runs in a
fresh subprocess so its peak memory (``ru_maxrss``) is its own. Interactions are generated
directly as numpy arrays with a realistic skew (Pareto item popularity, log-normal user
activity), not through the warehouse; the last of ``--days`` days is the scored source
day, and 3% of the rows are the target, drawn from a quarter of the users and a fifth of
the categories. Generation is not timed; the peak memory includes it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

os.environ.setdefault("DGLBACKEND", "pytorch")


def make_interactions(n: int, days: int = 7, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` skewed interactions with raw (non-contiguous) ids, a day index and a target flag."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(n // 25, 100), max(n // 250, 50)
    n_cats = max(n_items // 100, 10)
    item_cat = rng.integers(0, n_cats, n_items)
    item_pop = rng.pareto(1.2, n_items) + 1.0
    user_act = rng.lognormal(0.0, 1.0, n_users)
    target = rng.random(n) < 0.03
    users = np.empty(n, np.int64)
    items = np.empty(n, np.int64)
    # Source: the whole platform.
    src = np.flatnonzero(~target)
    users[src] = rng.choice(n_users, len(src), p=user_act / user_act.sum())
    items[src] = rng.choice(n_items, len(src), p=item_pop / item_pop.sum())
    # Target: a quarter of the users, the items of a fifth of the categories.
    tu = rng.permutation(n_users)[: n_users // 4]
    ti = np.flatnonzero(item_cat < max(n_cats // 5, 1))
    tgt = np.flatnonzero(target)
    users[tgt] = tu[rng.choice(len(tu), len(tgt), p=user_act[tu] / user_act[tu].sum())]
    items[tgt] = ti[rng.choice(len(ti), len(tgt), p=item_pop[ti] / item_pop[ti].sum())]
    click = (rng.random(n) < 0.05).astype(np.int8)
    conversion = (click.astype(bool) & (rng.random(n) < 0.1)).astype(np.int8)
    return {
        "user_id": users * 7 + 1_000_003,  # raw ids: large and not contiguous
        "item_id": items * 13 + 5_000_123,
        "category_id": item_cat[items] + 100,
        "click": click,
        "conversion": conversion,
        "day": rng.integers(0, days, n).astype(np.int8),
        "target": target,
    }


def run_one(n: int, engine: str, days: int) -> dict[str, Any]:
    """Time one size in this process; returns the row of the table."""
    import pandas as pd

    from ecat_tasks.config import EcatConfig
    from ecat_tasks.graph_select import build_graph, score_samples, select_top, visit_scores

    cfg = EcatConfig()
    t = time.perf_counter()
    data = make_interactions(n, days)
    gen_s = time.perf_counter() - t
    frame = pd.DataFrame({k: data[k] for k in ("user_id", "item_id", "category_id", "click", "conversion")})
    day_src = np.flatnonzero((data["day"] == days - 1) & ~data["target"])
    n_target_day = int(((data["day"] == days - 1) & data["target"]).sum())
    seed_users, seed_items = data["user_id"][data["target"]], data["item_id"][data["target"]]
    src_users, src_items = data["user_id"][day_src], data["item_id"][day_src]
    sample_ids = pd.Series(day_src).map("s{:012d}".format).to_numpy()
    del data

    import dgl  # noqa: F401  (import cost is not the step's)

    t = time.perf_counter()
    graph = build_graph(frame, cfg)
    build_s = time.perf_counter() - t
    del frame
    t = time.perf_counter()
    visits = visit_scores(graph, seed_users, seed_items, cfg, engine=engine)
    walk_s = time.perf_counter() - t
    t = time.perf_counter()
    scores = pd.DataFrame({"sample_id": sample_ids, "graph_score": score_samples(graph, visits, src_users, src_items)})
    cap = int(cfg.max_source_ratio * n_target_day)
    kept = len(select_top(scores, cap))
    select_s = time.perf_counter() - t
    nodes, edges = graph.num_nodes(), graph.num_edges()
    return {
        "interactions": n, "engine": engine, "generate_s": round(gen_s, 1),
        "build_s": round(build_s, 2), "walk_s": round(walk_s, 2), "select_s": round(select_s, 2),
        "total_s": round(build_s + walk_s + select_s, 2),
        "peak_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "users": nodes["user"], "items": nodes["item"], "categories": nodes["category"],
        "ui_edges": edges["interacts"], "seeds": visits.seeds["user"] + visits.seeds["item"],
        "walks": visits.walks, "reached": round(visits.reached["all"], 3),
        "source_rows": len(day_src), "kept": kept,
    }


COLUMNS = [
    ("interactions", "interactions"), ("engine", "engine"), ("users", "users"), ("items", "items"),
    ("ui_edges", "user-item edges"), ("seeds", "seeds"), ("walks", "walks"), ("reached", "reached"),
    ("source_rows", "source rows (ds)"), ("kept", "kept"), ("build_s", "build s"), ("walk_s", "walk s"),
    ("select_s", "select s"), ("total_s", "total s"), ("peak_gb", "peak RSS GB"),
]


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(h for _, h in COLUMNS) + " |"
    sep = "| " + " | ".join("---:" if k not in ("engine",) else "---" for k, _ in COLUMNS) + " |"
    body = ["| " + " | ".join(f"{r[k]:,}" if isinstance(r[k], int) else str(r[k]) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    p.add_argument("--engine", choices=["cdf", "dgl"], nargs="+", default=["cdf"],
                   help="walk engine(s); 'dgl' is DGL's weighted random_walk (slow on skewed graphs)")
    p.add_argument("--days", type=int, default=7, help="days in the window; the last is scored")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_one(args.worker, args.engine[0], args.days)))
        return 0
    rows = []
    for n in args.sizes:
        for engine in args.engine:
            out = subprocess.run(
                [sys.executable, "-m", "bench.bench_graph_select", "--worker", str(n), "--engine", engine, "--days", str(args.days)],
                capture_output=True, text=True,
            )
            if out.returncode != 0:
                print(f"size {n} engine {engine} failed (rc {out.returncode}):\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"done: {rows[-1]}", file=sys.stderr, flush=True)
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
