"""Two models of the same runs compared on the validation slice: a component's lift, paired.

    .venv/bin/python -m bench.compare_models --data synthetic --homes tmp/ecat-quality-synthetic-s* \\
        --conf '{"ablations": ["no_scenario"]}' --pairs ecat:ecat_no_scenario ecat:mixed_scenario

Input: the homes ``bench.quality --keep`` leaves (one per seed). On every day the guard
decided, both models' scores of the guard's validation window (:func:`bench.guard_rules.day_scores`:
validation rows, never trained on, scored as the guard scores them under ``guard_slice``) are compared; the lift of the first over the
second is pooled over (seed, day) by a paired bootstrap over users. An ablation against ECAT
is what its component adds; next-day and cold-start rows are never read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.guard_rules import day_scores, guard_days, home_config, slice_unseen_share


def main(argv: list[str] | None = None) -> None:
    from ecat_tasks.metrics import auc, logloss, pooled_bootstrap_lift

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, choices=["synthetic", "movielens"])
    p.add_argument("--homes", nargs="+", type=Path, required=True)
    p.add_argument("--conf", default="{}", help="the --conf the homes ran with (JSON)")
    p.add_argument("--pairs", nargs="+", required=True, help="a:b, the lift of model a over model b")
    p.add_argument("--n-resamples", type=int, default=1000)
    p.add_argument("--unseen-share", default="0", help="share of the validation users scored as users no model "
                   "knows (fresh ids), or 'auto': the share of each day's target rows from new users that the "
                   "training days show (bench.guard_rules.unseen_user_share); the next day's rows are never read")
    args = p.parse_args(argv)
    pairs = [tuple(pair.split(":", 1)) for pair in args.pairs]
    days: dict[tuple, list] = {pair: [] for pair in pairs}
    level: dict[str, list[tuple[float, float]]] = {}
    unseen = []
    for home in args.homes:
        cfg = home_config(home, args.data, json.loads(args.conf))
        for ds in guard_days(home):
            users, labels, scores, _ = day_scores(ds, cfg, home, args.unseen_share)
            unseen.append((slice_unseen_share(home, cfg, ds), len(labels)))
            for a, b in pairs:
                days[(a, b)].append((users, labels, scores[a], scores[b]))
            for name in {m for pair in pairs for m in pair}:
                level.setdefault(name, []).append((auc(labels, scores[name]), logloss(labels, scores[name])))
    n = len(next(iter(days.values())))
    print(f"{args.data}: {len(args.homes)} home(s), {n} (seed, day) validation windows (guard_slice={cfg.guard_slice}), "
          f"{np.mean([u[1] for u in unseen]):.0f} rows each on average, {np.mean([u[0] for u in unseen]):.1%} of them "
          "from users no training row of the scoring checkpoints' days holds")
    print("| model | validation AUC | validation logloss |\n|---|---|---|")
    for name, vals in level.items():
        print(f"| {name} | {np.mean([v[0] for v in vals]):.4f} | {np.mean([v[1] for v in vals]):.4f} |")
    print("\n| a vs b | AUC lift a - b [95%] | logloss lift b - a [95%] |\n|---|---|---|")
    for a, b in pairs:
        lift = pooled_bootstrap_lift(days[(a, b)], n_resamples=args.n_resamples, seed=0)
        x, y = lift["auc"], lift["logloss"]
        print(f"| {a} vs {b} | {x['lift']:+.4f} [{x['lo']:+.4f}, {x['hi']:+.4f}] | {y['lift']:+.4f} [{y['lo']:+.4f}, {y['hi']:+.4f}] |")


if __name__ == "__main__":
    main()
