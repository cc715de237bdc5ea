"""Two configurations compared on the validation slice: the same models, the same rows, paired.

    .venv/bin/python -m bench.compare_configs --data synthetic --old tmp/old/ecat-quality-* \\
        --new tmp/new/ecat-quality-* --models teacher ecat

Input: the homes ``bench.quality --keep`` leaves for one configuration (``--old``) and another
(``--new``), same data set, same seeds. For every seed, each model's scores of the guard's
validation rows (:func:`bench.guard_rules.decision_rows`: rows never trained on, every row once
under ``--rows once``, the default; each guard day's whole window under ``--rows window``) are
read from both homes; the rows must be the same. Reported per model: validation AUC and logloss
of each configuration (mean over the parts: seeds, or (seed, day) windows) and the lift of new over
old pooled over the parts by a paired bootstrap over users
(:func:`ecat_tasks.metrics.pooled_bootstrap_lift`; positive means new is better). Next-day and
cold-start rows are never read: this is what a default is decided on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.guard_rules import ROWS, decision_rows, home_config
from bench.quality import home_seed


def _by_seed(homes: list[Path]) -> dict[int, Path]:
    return {home_seed(home): home for home in homes}


def compare(old: list[Path], new: list[Path], data: str, conf_old: dict[str, Any], conf_new: dict[str, Any],
            models: list[str], n_resamples: int, against: list[str] = (), unseen: float | str = 0.0,
            rows: str = "once") -> dict[str, Any]:
    """Per model, new against old; and the new homes' first model against each of ``against`` in the
    old homes (a configuration that trains one model, judged against the others the old homes trained)."""
    from ecat_tasks.metrics import auc, logloss, pooled_bootstrap_lift

    olds, news = _by_seed(old), _by_seed(new)
    seeds = sorted(set(olds) & set(news))
    if not seeds:
        raise SystemExit("no seed has a home in both --old and --new")
    days: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {m: [] for m in models}
    versus: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {m: [] for m in against}
    per_part = []
    for seed in seeds:
        cfg_old = home_config(olds[seed], data, conf_old)
        cfg_new = home_config(news[seed], data, conf_new)
        parts_old = decision_rows(olds[seed], cfg_old, unseen, rows)
        parts_new = decision_rows(news[seed], cfg_new, unseen, rows)
        if rows == "window":  # the days both homes' guards decided on
            shared = {p[0] for p in parts_old} & {p[0] for p in parts_new}
            parts_old, parts_new = ([p for p in parts if p[0] in shared] for parts in (parts_old, parts_new))
        for (part, users, labels, s_old), (_, users_n, labels_n, s_new) in zip(parts_old, parts_new):
            if not (np.array_equal(users, users_n) and np.array_equal(labels, labels_n)):
                raise SystemExit(f"seed {seed} {part}: the two homes' validation rows differ (or, under --rows once, "
                                 "their guards decided on different days); not comparable")
            row = {"seed": seed, "part": part, "rows": len(labels)}
            for m in against:
                versus[m].append((users, labels, s_new[models[0]], s_old[m]))
            for m in models:
                days[m].append((users, labels, s_new[m], s_old[m]))
                row[m] = {"old_auc": auc(labels, s_old[m]), "new_auc": auc(labels, s_new[m]),
                          "old_logloss": logloss(labels, s_old[m]), "new_logloss": logloss(labels, s_new[m])}
            per_part.append(row)
    summary = {}
    for m in models:
        lift = pooled_bootstrap_lift(days[m], n_resamples=n_resamples, seed=0)
        summary[m] = {k: float(np.mean([d[m][k] for d in per_part])) for k in ("old_auc", "new_auc", "old_logloss", "new_logloss")}
        summary[m]["auc_lift"] = lift["auc"]
        summary[m]["logloss_lift"] = lift["logloss"]
    vs = {m: {k: pooled_bootstrap_lift(versus[m], n_resamples=n_resamples, seed=0)[k] for k in ("auc", "logloss")}
          for m in against}
    return {"seeds": seeds, "parts": per_part, "summary": summary, "versus": vs}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, choices=["synthetic", "movielens"])
    p.add_argument("--old", nargs="+", type=Path, required=True)
    p.add_argument("--new", nargs="+", type=Path, required=True)
    p.add_argument("--conf-old", default="{}", help="the --conf the old homes ran with (JSON)")
    p.add_argument("--conf-new", default="{}", help="the --conf the new homes ran with (JSON)")
    p.add_argument("--models", nargs="+", default=["teacher", "ecat"])
    p.add_argument("--against", nargs="+", default=[],
                   help="also: the new homes' first --models model against these models of the old homes")
    p.add_argument("--n-resamples", type=int, default=1000)
    p.add_argument("--rows", choices=ROWS, default="once", help="as bench.compare_models")
    p.add_argument("--json", type=Path)
    p.add_argument("--unseen-share", default="0", help="as bench.compare_models: a share of the validation users "
                   "scored as users no model knows, or 'auto'")
    args = p.parse_args(argv)
    result = compare(args.old, args.new, args.data, json.loads(args.conf_old), json.loads(args.conf_new),
                     args.models, args.n_resamples, args.against, args.unseen_share, args.rows)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float))
    print(f"{args.data}: seeds {result['seeds']}, {len(result['parts'])} part(s) of validation rows (rows {args.rows}), "
          f"{np.mean([d['rows'] for d in result['parts']]):.0f} rows each on average")
    print("| model | val AUC old -> new | lift new - old [95%] | val logloss old -> new | lift old - new [95%] |")
    print("|---|---|---|---|---|")
    for m, s in result["summary"].items():
        a, ll = s["auc_lift"], s["logloss_lift"]
        print(f"| {m} | {s['old_auc']:.4f} -> {s['new_auc']:.4f} | {a['lift']:+.4f} [{a['lo']:+.4f}, {a['hi']:+.4f}] | "
              f"{s['old_logloss']:.4f} -> {s['new_logloss']:.4f} | {ll['lift']:+.4f} [{ll['lo']:+.4f}, {ll['hi']:+.4f}] |")

    if result["versus"]:
        print(f"\n| new {args.models[0]} vs old | AUC lift [95%] | logloss lift (old - new) [95%] |\n|---|---|---|")
        for m, v in result["versus"].items():
            a, ll = v["auc"], v["logloss"]
            print(f"| {m} | {a['lift']:+.4f} [{a['lo']:+.4f}, {a['hi']:+.4f}] | {ll['lift']:+.4f} [{ll['lo']:+.4f}, {ll['hi']:+.4f}] |")


if __name__ == "__main__":
    main()
