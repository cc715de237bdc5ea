"""The next day split by user: users no earlier day's lake holds (new) against returning users.

    .venv/bin/python -m bench.new_users --data movielens --homes /work/s19/tabs/tmp-Western/* \\
        --models served finetune target_only teacher_finetune

``--against-homes`` adds the first model of other homes (same seeds, another config) as
``<model>@against`` (``--against-models``: those models instead): the same next-day rows, so the lift is paired.

Input: the homes ``bench.quality --keep`` leaves (one per seed). For every evaluated day, the
next day's target rows are scored as ``bench.quality`` scores them (``summary.next_day_scores``,
the served model through its calibration) and split by whether the user appears in any earlier
day's lake, source or target: a new user's rows go through the unseen-user row of every model.
Per segment (and for every row): the share of rows, each model's AUC (mean over seeds and days) and the first
model's lift over each other one, pooled over (seed, day) by a paired bootstrap over users.

Reported only, like every next-day figure: it says where the served model gains or loses,
it chooses nothing (the validation slice does).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.guard_rules import home_config, users_seen
from bench.quality import DATASETS, home_days, home_seed


def segments(home: Path, data: str, conf: dict[str, Any], models: list[str]) -> list[dict[str, Any]]:
    """Per evaluated day of ``home``: users, labels, the models' scores and which rows are new users'."""
    from ecat_tasks.report import scorable_models
    from ecat_tasks.storage import Layout
    from ecat_tasks.summary import next_day_scores

    cfg = home_config(home, data, conf)  # its seed and slice rules: they cut the next-day rows
    layout = Layout(home / "ecat_home")
    days = home_days(home)
    out = []
    for (ds, seen), following in zip(users_seen(layout, days), days[1:]):
        trained = scorable_models(layout, ds)
        missing = [m for m in models if m not in trained]
        if missing:
            raise SystemExit(f"{home} ds={ds}: no checkpoint of {', '.join(missing)}")
        users, labels, scores = next_day_scores(layout, {m: trained[m] for m in models}, following, cfg)
        out.append({"home": home, "ds": ds, "users": users, "labels": labels, "scores": scores,
                    "new": ~np.isin(users, np.fromiter(seen, np.int64, len(seen)))})
    return out


def main(argv: list[str] | None = None) -> None:
    from ecat_tasks.metrics import auc, pooled_bootstrap_lift

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, choices=sorted(DATASETS))
    p.add_argument("--homes", nargs="+", type=Path, required=True)
    p.add_argument("--conf", default="{}", help="the --conf the homes ran with beyond the data set's (JSON)")
    p.add_argument("--models", nargs="+", required=True, help="the first one's lift over each other one is reported")
    p.add_argument("--n-resamples", type=int, default=1000)
    p.add_argument("--against-homes", nargs="+", type=Path, help="other homes of the same seeds (another config): "
                   "the first model here against the same model there, paired by seed and day, per segment")
    p.add_argument("--against-conf", default="{}", help="the --conf the --against-homes ran with beyond the data set's")
    p.add_argument("--against-models", nargs="+", default=[], help="models of the --against-homes to add (default: "
                   "the first model), e.g. the baselines, which a config of the student alone does not change")
    args = p.parse_args(argv)
    days = [d for home in args.homes for d in segments(home, args.data, json.loads(args.conf), args.models)]
    if args.against_homes:
        first = args.models[0]
        added = args.against_models or [first]
        other = {(home_seed(h), d["ds"]): d for h in args.against_homes
                 for d in segments(h, args.data, json.loads(args.against_conf), added)}
        for home in args.homes:
            for d in (d for d in days if d["home"] == home):
                twin = other.get((home_seed(home), d["ds"]))
                if twin is None or not np.array_equal(twin["users"], d["users"]):
                    raise SystemExit(f"{home} ds={d['ds']}: no --against-homes twin scoring the same next-day rows")
                d["scores"].update({f"{m}@against": twin["scores"][m] for m in added})
        args.models = [*args.models, *(f"{m}@against" for m in added)]
    if not days:
        raise SystemExit("no evaluated day with a next day in these homes")
    first = args.models[0]
    print(f"{args.data}: {len(args.homes)} home(s), {len(days)} (seed, day) next days; reported only")
    for name, pick in (("every user", lambda d: np.ones_like(d["new"])), ("new users", lambda d: d["new"]),
                       ("returning users", lambda d: ~d["new"])):
        kept = [(d, pick(d)) for d in days if 0 < d["labels"][pick(d)].mean() < 1]
        share = np.mean([pick(d).mean() for d in days])
        if not kept:
            print(f"\n{name}: {share:.0%} of the next days' rows; no day with both labels among them: no AUC")
            continue
        print(f"\n{name}: {share:.0%} of the next days' rows, {len(kept)} day(s) with both labels\n")
        print(f"| model | AUC | {first} - model [95%] |\n|---|---|---|")
        for model in args.models:
            level = np.mean([auc(d["labels"][m], d["scores"][model][m]) for d, m in kept])
            if model == first:
                print(f"| {model} | {level:.4f} | |")
                continue
            lift = pooled_bootstrap_lift([(d["users"][m], d["labels"][m], d["scores"][first][m], d["scores"][model][m])
                                          for d, m in kept], n_resamples=args.n_resamples, seed=0)["auc"]
            interval = (f"[{lift['lo']:+.4f}, {lift['hi']:+.4f}]" if np.isfinite(lift["lo"])
                        else "[undefined: some resamples held one label only]")
            print(f"| {model} | {level:.4f} | {lift['lift']:+.4f} {interval} |")


if __name__ == "__main__":
    main()
