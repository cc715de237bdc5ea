"""Choose the guard's rule (``guard_rule``) on the validation slice alone, by a cross-fit of the rule itself.

With a dozen candidates and a few hundred validation rows a day, the model that a rule picks
scores well on the rows it was picked on partly by luck (winner's curse). So each day's guard
window (the validation rows the guard reads, ``inputs.validation_window``) is split into
two folds by a seeded hash of the user id: every rule decides (``guard.decide``) on fold A and
the AUC of its choice is read on fold B of the window's newest day, and vice versa (``--rows
once``, the default: consecutive windows overlap, and a row read in several groups would narrow
the interval; ``--rows window`` reads fold B of the whole window, the way of the tables before
2026-11-30 13:00). Rules are compared by the mean held-out fold AUC of their choice over days,
fold splits and kept homes (data sets, seeds), with a paired bootstrap over (home, day, fold)
groups. Next-day and cold-start rows are never read.

Input: the homes ``bench.quality --keep`` leaves (``--tmp-dir``); each home's models are scored
as the pipeline loads them (``load_model``). The seed of a home comes from its directory name
(``ecat-quality-<data>-s<seed>-*``), its config from ``bench.quality``'s data set conf plus ``--conf``.

    .venv/bin/python -m bench.guard_rules tmp/ecat-quality-movielens-s0-* --data movielens

A rule ``NAME@SET`` decides among the candidates of ``--candidate-sets``' SET and ECAT only, so
the candidate list (``guard_candidates``) is chosen the same way:

    .venv/bin/python -m bench.guard_rules HOMES --rules margin margin@no_ablations \\
        --candidate-sets '{"no_ablations": ["target_only", "mixed", "finetune", "teacher"]}'

A rule ``NAME%W`` decides on the newest W days of the window only, so the window
(``guard_window_days``) is chosen the same way; every choice is then scored on the newest day's
held-out fold, whatever ``--rows`` says: the only validation rows later than every row the models
trained on (the models have since trained on later rows of the older days' users):

    .venv/bin/python -m bench.guard_rules HOMES --rules evidence%7 evidence%3 evidence%1
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bench.quality import DATASETS, OUT_DIR, SLICE_FIELDS, home_days, home_seed, recorded_parameters

log = logging.getLogger("bench.guard_rules")

FOLD_SALT = 7919  # the fold hash's salt is FOLD_SALT + split: independent of the validation split's own hash


def home_config(home: Path, data: str, conf: dict[str, Any]) -> Any:
    """The config a kept ``bench.quality`` home ran with (its seed read from the directory name).

    The fields that decide which rows validate come from the home's own report, never from
    today's defaults: read under another rule, the "validation" rows may be rows its models
    trained on. ``conf`` may not contradict them."""
    from ecat_tasks.config import EcatConfig
    from ecat_tasks.storage import Layout

    days = guard_days(home)
    ran = recorded_parameters(Layout(home / "ecat_home"), days[0]) if days else None
    sliced = {k: ran[k] for k in SLICE_FIELDS if k in ran} if ran else {}
    clash = {k: (sliced[k], conf[k]) for k in sliced.keys() & conf.keys() if sliced[k] != conf[k]}
    if clash:
        raise SystemExit(f"{home}: --conf changes which rows validate ({clash}: recorded, asked); "
                         "those rows may have trained its models")
    return EcatConfig.from_mapping({**DATASETS[data]["conf"], **conf, **sliced, "seed": home_seed(home)}, env={})


def guard_days(home: Path) -> list[str]:
    """Days on which the guard decided in this home (every candidate of the day trained by then)."""
    from ecat_tasks.guard import SERVED_AREA
    from ecat_tasks.storage import Layout

    return Layout(home / "ecat_home").existing_days(f"models/{SERVED_AREA}")


UNSEEN_SALT = 104_729  # which validation users a view scores as unseen: independent of the folds' and slices' hashes


def unseen_user_share(home: Path, ds: str) -> float:
    """Share of each day's target rows, up to ``ds``, whose user no earlier day's lake holds
    (source or target), averaged over those days: how much of a next day comes from users no
    model trained on, as the training days show it (the next day's rows are never read)."""
    import pandas as pd

    from ecat_tasks.storage import Layout

    layout = Layout(home / "ecat_home")
    days = [d for d in home_days(home) if d <= ds]
    shares = []
    for (_, seen), day in zip(users_seen(layout, days), days[1:]):
        target = pd.read_parquet(layout.lake("target", day), columns=["user_id"])["user_id"]
        shares.append(float((~target.isin(seen)).mean()))
    return float(np.mean(shares)) if shares else 0.0


def users_seen(layout: Any, days: list[str], cfg: Any = None) -> Iterator[tuple[str, frozenset[int]]]:
    """(day, every user in the lake up to and including it, source or target), day by day; with
    ``cfg``, a target row counts only in the train slice it cuts (the users a model could have trained on)."""
    import pandas as pd

    from ecat_tasks.inputs import target_day

    seen: set[int] = set()
    for ds in days:
        seen.update(pd.read_parquet(layout.lake("source", ds), columns=["user_id"])["user_id"].tolist())
        target = (pd.read_parquet(layout.lake("target", ds), columns=["user_id"]) if cfg is None
                  else target_day(ds, cfg, layout).train)
        seen.update(target["user_id"].tolist())
        yield ds, frozenset(seen)


def slice_unseen_share(home: Path, cfg: Any, ds: str) -> float:
    """Share of the guard's decision rows on ``ds`` (:func:`ecat_tasks.guard.decision_slice`, under
    ``cfg.guard_slice``) whose user has no training row (source, or the target's train slice) on any
    lake day up to that of the checkpoints scoring the row: how much of the slice is new users to the
    models it reads, as a next day is. Scores no model and reads no next-day row."""
    import pandas as pd

    from ecat_tasks.guard import decision_slice
    from ecat_tasks.inputs import window_days
    from ecat_tasks.storage import Layout

    layout = Layout(home / "ecat_home")
    rows = decision_slice(ds, cfg, layout, [], window_days(ds, cfg, layout)[-cfg.guard_window_days:])
    if not len(rows.frame):
        return float("nan")
    known = dict(users_seen(layout, [d for d in home_days(home) if d <= ds], cfg))
    by = pd.to_datetime(rows.frame["ds"]).dt.strftime("%Y-%m-%d").map(rows.scored_by)
    new = sum(int((~rows.frame["user_id"][by == day].isin(known[day])).sum()) for day in set(by))
    return new / len(rows.frame)


def as_unseen(frame: Any, share: float, seed: int) -> Any:
    """``frame`` with a ``share`` of its users (a salted hash of the user) given fresh ids no model knows:
    those rows are scored as a new user's, which a validation slice of trained users never holds."""
    from ecat_tasks.splits import below_share, salted_hash

    users = frame["user_id"].to_numpy()
    pick = below_share(salted_hash(users, UNSEEN_SALT + seed), share)
    out = frame.copy()
    out["user_id"] = np.where(pick, -(np.abs(users) + 1) - 2**40, users)  # negative: never a real id here
    return out


def day_scores(ds: str, cfg: Any, home: Path, unseen: float | str = 0.0, window: int | None = None,
               ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The guard's window of validation rows on ``ds`` (its newest ``window`` days; default
    ``guard_window_days``): users, labels, every candidate's scores (simplest first) and each row's
    age in days (0 = ``ds``'s rows; ``NAME%W`` rules read it).
    The rows and scores are the guard's own (:func:`ecat_tasks.guard.decision_slice`, under
    ``cfg.guard_slice``), every model trained that day a candidate.
    ``unseen``: the share of the window's users scored as users no model knows (:func:`as_unseen`),
    or ``"auto"``: the share the training days show (:func:`unseen_user_share`); today's models score that view."""
    from ecat_tasks.config import SERVABLE
    from ecat_tasks.guard import candidates, decision_slice
    from ecat_tasks.inputs import validation_window, window_days
    from ecat_tasks.models.continual import load_model
    from ecat_tasks.report import model_dir
    from ecat_tasks.storage import Layout

    layout = Layout(home / "ecat_home")
    every = cfg.replace(guard_candidates=list(SERVABLE))  # every model trained that day, servable or not
    names = candidates(ds, every, layout)
    share = unseen_user_share(home, ds) if unseen == "auto" else float(unseen)
    days_back = cfg.guard_window_days if window is None else window
    if share > 0:
        frame = as_unseen(validation_window(ds, cfg, layout, days_back), share, cfg.seed)
        scores = {n: load_model(model_dir(layout, n, ds)).score(frame, cfg.label) for n in names}
    else:
        rows = decision_slice(ds, cfg, layout, names, window_days(ds, cfg, layout)[-days_back:])
        frame, scores = rows.frame, rows.scores
    days, age = np.unique(frame["ds"].astype(str).to_numpy(), return_inverse=True)  # ISO dates sort in time order
    return frame["user_id"].to_numpy(), frame[cfg.label].to_numpy(), scores, len(days) - 1 - age


ROWS = ("once", "window")


def decision_rows(home: Path, cfg: Any, unseen: float | str = 0.0, rows: str = "once",
                  ) -> list[tuple[str, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """The validation rows a bench tool compares models on, as parts to pool: (name, users, labels, scores).

    ``window``: one part per guard day, its whole window (:func:`day_scores`). The windows overlap, so
    a row is in up to ``guard_window_days`` parts, and a bootstrap that resamples each part's users
    independently reads it as that many independent rows: the interval comes out too narrow, and
    the oldest days weigh most. ``once`` (the default): every guard day's newest day of rows, each
    scored as the guard scores it (a one-day window: the older days' rows, which the guard scores
    the same way, are not scored again), joined into one part per home: every validation row counts
    once, and a user's rows of every day are resampled together.
    """
    if rows not in ROWS:
        raise ValueError(f"rows={rows!r}: one of {ROWS}")
    parts = []
    for ds in guard_days(home):
        users, labels, scores, _ = day_scores(ds, cfg, home, unseen, window=1 if rows == "once" else None)
        parts.append((ds, users, labels, scores))
    if rows == "window" or not parts:
        return parts
    return [(home.name, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
             {n: np.concatenate([p[3][n] for p in parts]) for n in parts[-1][3]})]


def fold_of(users: np.ndarray, split: int) -> np.ndarray:
    from ecat_tasks.splits import salted_hash

    return (salted_hash(users, FOLD_SALT + split) % np.uint64(2)).astype(int)


def servable(scores: dict[str, np.ndarray], rule: str, sets: dict[str, list[str]]) -> tuple[str, dict[str, np.ndarray]]:
    """A choice ``rule[@set]``: the guard rule and the candidates it may serve (``sets[set]`` and ECAT, in order)."""
    name, _, subset = rule.partition("@")
    if not subset:
        return name, scores
    if subset not in sets:
        raise SystemExit(f"choice {rule!r}: no candidate set {subset!r} in --candidate-sets ({sorted(sets)})")
    keep = {*sets[subset], "ecat"}
    return name, {n: s for n, s in scores.items() if n in keep}


def crossfit_day(users: np.ndarray, labels: np.ndarray, scores: dict[str, np.ndarray], rules: list[str],
                 margin: float, splits: int, seed: int, n_resamples: int,
                 sets: dict[str, list[str]] | None = None, ages: np.ndarray | None = None,
                 once: bool = True) -> list[dict[str, Any]]:
    """Per (split, fold, rule): the rule's choice on the other fold and its AUC on this fold; every
    candidate's AUC on this fold too (fixed choices, for reference). A rule ``name@set`` decides
    among the candidates of ``sets[set]`` and ECAT only (``guard_candidates``). A rule ``name%W``
    decides on the window's newest W days only (``ages``, from :func:`day_scores`; ``guard_window_days``).
    Every rule decides on the other fold of the whole window, but is scored on the newest day's
    fold alone (``once``, or any rule naming W): the windows of consecutive days overlap, so a
    held-out fold of the whole window would put a row in up to ``guard_window_days`` groups
    (:func:`decision_rows`); and windows are then compared on the same rows. No ``ages``: every
    row is the newest day's."""
    from ecat_tasks.guard import decide
    from ecat_tasks.metrics import auc

    windowed = any("%" in rule for rule in rules)
    if ages is None:
        if windowed:
            raise ValueError("a rule name%W needs each row's age in days (ages)")
        ages = np.zeros(len(users), dtype=int)
    out = []
    for split in range(splits):
        fold = fold_of(users, split)
        for held in (0, 1):
            ev = (fold == held) & (ages == 0) if windowed or once else fold == held
            if len(np.unique(labels[fold != held])) < 2 or len(np.unique(labels[ev])) < 2:
                continue
            held_auc = {n: auc(labels[ev], s[ev]) for n, s in scores.items()}
            for rule in rules:
                spec, _, days = rule.partition("%")
                fit = (fold != held) & (ages < int(days)) if days else fold != held
                name, allowed = servable(scores, spec, sets or {})
                d = decide(users[fit], labels[fit], {n: s[fit] for n, s in allowed.items()}, margin,
                           n_resamples=n_resamples, seed=seed, rule=name)
                out.append({"split": split, "fold": held, "rule": rule, "chosen": d.served,
                            "fit_rows": int(fit.sum()), "heldout_rows": int(ev.sum()),
                            "heldout_auc": held_auc[d.served], "candidates_auc": held_auc})
    return out


def group_means(records: list[dict[str, Any]], key: str) -> dict[tuple, float]:
    """(home, ds, fold) -> mean over fold splits of the held-out AUC of ``key`` (a rule or a fixed candidate)."""
    acc: dict[tuple, list[float]] = {}
    for r in records:
        if key in r["candidates_auc"] and r["rule"] == records[0]["rule"]:  # a fixed choice: once per (split, fold)
            acc.setdefault((r["home"], r["ds"], r["fold"]), []).append(r["candidates_auc"][key])
        elif r["rule"] == key:
            acc.setdefault((r["home"], r["ds"], r["fold"]), []).append(r["heldout_auc"])
    return {g: float(np.mean(v)) for g, v in acc.items()}


def paired_groups(a: dict[tuple, float], b: dict[tuple, float], n_boot: int, seed: int) -> dict[str, float]:
    """Mean of a - b over shared groups, with a 95% percentile bootstrap over the groups."""
    groups = sorted(set(a) & set(b))
    diff = np.array([a[g] - b[g] for g in groups])
    rng = np.random.default_rng(seed)
    draws = diff[rng.integers(0, len(diff), (n_boot, len(diff)))].mean(axis=1)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return {"lift": float(diff.mean()), "lo": float(lo), "hi": float(hi), "groups": len(groups)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("homes", nargs="+", type=Path,
                   help="bench.quality --keep homes (ecat-quality-<data>-s<seed>-*), or this script's earlier "
                        "JSON outputs, whose records are pooled with the rest")
    p.add_argument("--data", default="movielens", choices=sorted(DATASETS))
    p.add_argument("--conf", default="{}", help="the --conf the homes ran with (JSON)")
    p.add_argument("--rules", nargs="+", default=["margin", "evidence", "se_margin"],
                   help="guard rules, each optionally NAME@SET: decide among SET's candidates and ECAT only, "
                        "and NAME%%W: decide on the window's newest W days (every choice is then scored on the newest day)")
    p.add_argument("--candidate-sets", default="{}",
                   help='JSON {"SET": [models the guard may serve besides ECAT]} (guard_candidates)')
    p.add_argument("--splits", type=int, default=3, help="fold splits (hash salts) per day")
    p.add_argument("--rows", choices=ROWS, default="once",
                   help="score each choice on the held-out fold of the window's newest day (once: each validation "
                        "row in one group) or of the whole window (window: the old way; rows in up to "
                        "guard_window_days groups)")
    p.add_argument("--n-resamples", type=int, default=1000, help="the guard's own bootstrap resamples")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap over (home, day, fold) groups")
    p.add_argument("--name", default="", help="data set name recorded with the homes (e.g. the target genre)")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("ecat_tasks").setLevel(logging.WARNING)
    conf = json.loads(args.conf)
    sets = json.loads(args.candidate_sets)
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    for home in args.homes:
        if home.suffix == ".json":
            earlier = json.loads(home.read_text())
            if (earlier["rules"], earlier["splits"], earlier.get("rows", "window")) != (args.rules, args.splits, args.rows):
                raise SystemExit(f"{home}: rules {earlier['rules']} / {earlier['splits']} splits / rows "
                                 f"{earlier.get('rows', 'window')}, not this run's")
            records += earlier["records"]
            continue
        cfg = home_config(home, args.data, conf)
        for ds in guard_days(home):
            users, labels, scores, ages = day_scores(ds, cfg, home)
            day = crossfit_day(users, labels, scores, args.rules, cfg.guard_margin, args.splits, cfg.seed,
                               args.n_resamples, sets, ages, once=args.rows == "once")
            records += [{"home": f"{args.name}/{home.name}" if args.name else home.name, "ds": ds, **r} for r in day]
            chosen = {rule: sorted({r["chosen"] for r in day if r["rule"] == rule}) for rule in args.rules}
            log.info("%s ds=%s: %d validation rows, %d candidates; chosen per rule %s", home.name, ds, len(labels),
                     len(scores), chosen)
    ref = args.rules[0]
    rule_means = {r: group_means(records, r) for r in args.rules}
    fixed = sorted({n for r in records for n in r["candidates_auc"]})
    fixed_means = {n: group_means(records, n) for n in fixed}
    lines = [f"| choice | mean held-out fold AUC | lift vs {ref} [95% CI over groups] | chosen (count over day × split × fold) |",
             "| --- | --- | --- | --- |"]
    for r in args.rules:
        lift = paired_groups(rule_means[r], rule_means[ref], args.n_boot, 0)
        counts: dict[str, int] = {}
        for rec in records:
            if rec["rule"] == r:
                counts[rec["chosen"]] = counts.get(rec["chosen"], 0) + 1
        lift_txt = "—" if r == ref else f"{lift['lift']:+.4f} [{lift['lo']:+.4f}, {lift['hi']:+.4f}]"
        lines.append(f"| rule {r} | {np.mean(list(rule_means[r].values())):.4f} | {lift_txt} | "
                     + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) + " |")
    for n in fixed:
        lift = paired_groups(fixed_means[n], rule_means[ref], args.n_boot, 0)
        lines.append(f"| always {n} | {np.mean(list(fixed_means[n].values())):.4f} | "
                     f"{lift['lift']:+.4f} [{lift['lo']:+.4f}, {lift['hi']:+.4f}] | (fixed) |")
    for home in sorted({r["home"] for r in records}):
        lines.append(f"| {home}: mean per rule | " + " / ".join(
            f"{r} {np.mean([v for g, v in rule_means[r].items() if g[0] == home]):.4f}" for r in args.rules) + " | | |")
    groups = len(next(iter(rule_means.values())))
    wall = time.perf_counter() - t0
    homes = sorted({r["home"] for r in records})
    print(f"\n{groups} (home, day, fold) groups from {len(homes)} homes, {args.splits} fold splits, "
          f"rows scored {args.rows}; {wall:.0f}s\n")
    print("\n".join(lines))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"guard_rules{('-' + args.tag) if args.tag else ''}.json"
    out.write_text(json.dumps({"homes": homes, "inputs": [str(h) for h in args.homes], "conf": conf, "rules": args.rules,
                               "candidate_sets": sets, "splits": args.splits, "rows": args.rows, "table": lines, "records": records, "wall_s": wall}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
