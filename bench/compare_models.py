"""Two models of the same runs compared on the validation slice: a component's lift, paired.

    .venv/bin/python -m bench.compare_models --data synthetic --homes tmp/ecat-quality-synthetic-s* \\
        --conf '{"ablations": ["no_scenario"]}' --pairs ecat:ecat_no_scenario ecat:mixed_scenario

Input: the homes ``bench.quality --keep`` leaves (one per seed). Both models' scores of the
guard's validation rows (:func:`bench.guard_rules.decision_rows`: rows never trained on, scored as
the guard scores them under ``guard_slice``) are compared; the lift of the first over the second
is pooled by a paired bootstrap over users. ``--rows once`` (the default) reads every validation
row once, a part per seed; ``--rows window`` a part per (seed, day), the guard's whole window, so
that rows of overlapping windows count several times (the tables before 2026-11-30 13:00). An
ablation against ECAT is what its component adds; next-day and cold-start rows are never read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.guard_rules import ROWS, decision_rows, guard_days, home_config, slice_unseen_share


def main(argv: list[str] | None = None) -> None:
    from ecat_tasks.metrics import auc, logloss, paired_bootstrap_lift, pooled_bootstrap_lift

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, choices=["synthetic", "movielens"])
    p.add_argument("--homes", nargs="+", type=Path, required=True)
    p.add_argument("--conf", default="{}", help="the --conf the homes ran with (JSON)")
    p.add_argument("--pairs", nargs="+", required=True, help="a:b, the lift of model a over model b")
    p.add_argument("--n-resamples", type=int, default=1000)
    p.add_argument("--rows", choices=ROWS, default="once", help="every validation row once, a part per seed "
                   "(once), or each guard day's whole window, a part per (seed, day) (window)")
    p.add_argument("--unseen-share", default="0", help="share of the validation users scored as users no model "
                   "knows (fresh ids), or 'auto': the share of each day's target rows from new users that the "
                   "training days show (bench.guard_rules.unseen_user_share); the next day's rows are never read")
    p.add_argument("--per-part", action="store_true", help="also each part's own lift and interval: under --rows "
                   "window, what the guard's bootstrap sees on one day's window")
    args = p.parse_args(argv)
    pairs = [tuple(pair.split(":", 1)) for pair in args.pairs]
    parts: dict[tuple, list] = {pair: [] for pair in pairs}  # per pair, (users, labels, a, b) per part
    level: dict[str, list[tuple[float, float]]] = {}
    unseen: list[float] = []
    rows: list[int] = []
    names: list[str] = []
    for home in args.homes:
        cfg = home_config(home, args.data, json.loads(args.conf))
        unseen += [slice_unseen_share(home, cfg, ds) for ds in guard_days(home)]
        for part, users, labels, scores in decision_rows(home, cfg, args.unseen_share, args.rows):
            rows.append(len(labels))
            names.append(f"s{cfg.seed} {part}")
            for a, b in pairs:
                parts[(a, b)].append((users, labels, scores[a], scores[b]))
            for name in dict.fromkeys(m for pair in pairs for m in pair):  # in the order --pairs names them
                level.setdefault(name, []).append((auc(labels, scores[name]), logloss(labels, scores[name])))
    n = len(next(iter(parts.values())))
    print(f"{args.data}: {len(args.homes)} home(s), {len(unseen)} guard windows (guard_slice={cfg.guard_slice}), "
          f"{np.mean(unseen):.1%} of their rows from users no training row of the scoring checkpoints' days holds; "
          f"pooled: {n} part(s) (rows {args.rows}), {np.mean(rows):.0f} rows each on average")
    print("| model | validation AUC | validation logloss |\n|---|---|---|")
    for name, vals in level.items():
        print(f"| {name} | {np.mean([v[0] for v in vals]):.4f} | {np.mean([v[1] for v in vals]):.4f} |")
    print("\n| a vs b | AUC lift a - b [95%] | logloss lift b - a [95%] |\n|---|---|---|")
    for a, b in pairs:
        lift = pooled_bootstrap_lift(parts[(a, b)], n_resamples=args.n_resamples, seed=0)
        x, y = lift["auc"], lift["logloss"]
        print(f"| {a} vs {b} | {x['lift']:+.4f} [{x['lo']:+.4f}, {x['hi']:+.4f}] | {y['lift']:+.4f} [{y['lo']:+.4f}, {y['hi']:+.4f}] |")
    if args.per_part:
        for a, b in pairs:
            print(f"\n| {a} vs {b}: part | rows | AUC lift [95%] |\n|---|---|---|")
            lifts = [paired_bootstrap_lift(*part, n_resamples=args.n_resamples, seed=0)["auc"] for part in parts[(a, b)]]
            for name, part, x in zip(names, parts[(a, b)], lifts):
                print(f"| {name} | {len(part[1])} | {x['lift']:+.4f} [{x['lo']:+.4f}, {x['hi']:+.4f}] |")
            defined = [x for x in lifts if np.isfinite(x["lo"])]
            half = [(x["hi"] - x["lo"]) / 2 for x in defined]
            print(f"{a} vs {b}: {sum(x['ahead'] for x in defined)} part(s) ahead and {sum(x['behind'] for x in defined)} "
                  f"behind of {len(lifts)} ({len(lifts) - len(defined)} without an interval); median half-width of "
                  f"a part's interval {np.median(half) if half else float('nan'):.4f}")


if __name__ == "__main__":
    main()
