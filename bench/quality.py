"""Quality benchmark: ECAT against its teacher, the baselines and its ablations, over seeds.

``python -m bench.quality --data synthetic|movielens --seeds 0 1 2 [--days N --rows R ...]``

For every seed the benchmark builds a fresh world in a temporary directory (its own
``ECAT_HOME``, ``AIRFLOW_HOME`` and DuckDB warehouse), so seeds never share state:

* ``--data synthetic``: the warehouse is seeded by :mod:`ecat_tasks.synthetic` with
  ``World(seed=seed)``, so the seed changes the world (users, items, tastes) and the rows.
* ``--data movielens``: MovieLens-100K in its own columns (:mod:`bench.movielens`, the table
  ``ratings``), which the pipeline reads through ``specs/movielens.yaml`` alone (target genre a
  parameter, ``--target-genre``: Film-Noir, or Western, the second target fixed in
  ``bench/RESULTS.md`` before any result was seen). The data is fixed.

In both cases the seed is also the run's config ``seed``: the seed-salted validation and
cold-start slices of the target users, the random-walk streams, weight init and batch order
of every model. Every day is then run through Airflow, in date order, with ``airflow dags test ecat_daily <ds> --conf``;
a day counts only when ``airflow dags list-runs`` reports its DAG run ``success`` and its
``reports/ds=<ds>/metrics.json`` exists (the benchmark stops at the first failed day).

Primary metric: **next day**. The models of day ``d`` (trained through ``d``) score the
target rows of ``d + 1`` but its validation slice (which the guard of ``d + 1`` reads, scored by
the same models), rows no model of ``d`` has trained on; the benchmark loads each day's
checkpoints and scores them itself (so the per-row scores are at hand for the bootstrap) and,
where ``metrics.json`` of ``d`` already holds a ``next_day`` entry (the pipeline's next-day
scoring), checks that its own AUC and logloss equal it. The ``served`` row is the guard's choice
of each day through the calibration fitted on that day's validation rows. Secondary: **cold start**, the same-day holdout
users of ``d`` (``holdout`` in ``metrics.json``: users new to the mini-app that day). Both are
averaged over the last ``--eval-days`` days that have a next day (default: all of them), then
mean ± std over seeds.

Uncertainty: ECAT's lift over every other model by a paired bootstrap over users (1,000
resamples, :func:`ecat_tasks.metrics.pooled_bootstrap_lift`), pooled over every (seed, day):
each resample draws each day's next-day users with replacement and averages the per-day
lifts. Lift is ``ECAT - model`` (``model - ECAT`` for logloss), so positive is ECAT better.
"Ahead" means the pooled 95% interval excludes 0 on ECAT's side *and* ECAT's lift is positive
in every seed (mean over that seed's days); "behind" the mirror; anything else "not separated".

The table is printed and (unless ``--no-write``) written into ``bench/RESULTS.md``, section
``## Quality``, subsection of the data set (replaced on rerun, other subsections kept),
with the command and the machine facts. Raw per-seed numbers go to
``bench/out/quality-<data>.json`` (git-ignored).

``--jobs N`` runs N seeds side by side (Airflow runner; each seed has its own homes and processes).

``--runner direct`` calls the step functions in-process instead of Airflow (same code,
same order, no scheduler): a faster loop for tuning experiments, never the numbers of record.

``--replay HOME [HOME ...]`` rebuilds the tables from homes an earlier run kept (``--keep``) under
another ``--conf`` that changes only the guard's decision (``guard_candidates``, ``guard_rule``,
``guard_margin``, calibration): no model trains again. Each home is copied (``--tmp-dir``; the kept
home is never written, and the copy's MLflow store points at the copy) and, in the DAG's order,
each day's ``guard`` -> ``evaluate`` (the ``served`` row's validation and cold-start numbers)
runs again, then the next day's ``score_previous_day`` (every next-day number, ``served``
included); the tables are then measured from the copies exactly as after a run. Not replayed:
``promote`` (the registry keeps the home's promotions, so the next-day champion check reads them;
neither enters the tables) and the MLflow tags beyond those evaluate rewrites. The seed is read
from the home's name; its config is the data set's conf + ``--conf`` + the seed, and may differ
from what the home ran with (its reports' ``parameters``) only in the fields the guard alone reads
(``REPLAYABLE``): a change to training would need the run itself, so the replay refuses it.
The section says it is a replay, of which homes, with which conf; its default ``--results`` is
``bench/out/results-replay-<section>.md``, not ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from ecat_tasks.splits import SLICE_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
OUT_DIR = ROOT / "bench" / "out"
PY = sys.executable
AIRFLOW = str(Path(sys.executable).parent / "airflow")
METRICS = ("auc", "gauc", "logloss")
VIEWS = ("next_day", "cold_start")  # primary, secondary
HIGHER_IS_BETTER = {"auc": True, "gauc": True, "logloss": False}

log = logging.getLogger("bench.quality")

# Per data set: benchmark defaults (days, rows) and the config the data needs.
DATASETS: dict[str, dict[str, Any]] = {
    "synthetic": {
        "start_ds": "2026-03-01", "days": 3, "rows": 400_000,
        # ~12k target rows a day (~2.4k held out); fewer rows leave every model near AUC 0.6 and
        # the seed-to-seed noise larger than the differences between models
        "conf": {},
    },
    "movielens": {
        "start_ds": "2026-01-01", "days": 7, "rows": None,
        # Film-Noir 1,733 ratings, Western 1,854, over 7 days (~250 a day); click = liked = rating >= 4.
        # MovieLens's own table (bench/movielens.py): the pipeline reads it through its spec alone.
        "conf": {"feature_spec": "specs/movielens.yaml", "min_target_rows": 50, "min_source_rows": 100,
                 "label_rate_max": 0.8},
    },
}


# ----------------------------------------------------------------------------------------
# One seed
# ----------------------------------------------------------------------------------------
def days_of(start_ds: str, n: int) -> list[str]:
    start = dt.date.fromisoformat(start_ds)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(n)]


def project_env(ecat_home: Path, airflow_home: Path) -> dict[str, str]:
    """The environment of scripts/env.sh for this seed's homes (as the DAG tests build it)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AIRFLOW__") and k not in ("AIRFLOW_CONN_ECAT_WAREHOUSE", "ECAT_WAREHOUSE")}
    env.update(ECAT_HOME=str(ecat_home), AIRFLOW_HOME=str(airflow_home))
    out = subprocess.run(
        ["bash", "-c", f'source "{ROOT}/scripts/env.sh" && "{PY}" -c "import os, json; print(json.dumps(dict(os.environ)))"'],
        env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def seed_data(data: str, warehouse: Path, seed: int, start_ds: str, days: int, rows: int | None,
              target_genre: str) -> dict[str, Any]:
    if data == "synthetic":
        from ecat_tasks.synthetic import World, seed_warehouse

        return seed_warehouse(warehouse, start_ds, days, rows, World(seed=seed))
    from bench.movielens import seed_movielens_warehouse

    stats = seed_movielens_warehouse(warehouse, target_genre, days, start_ds)
    return {k: stats[k] for k in ("rows", "days", "target_rows", "target_genre") if k in stats}


def _run_state(env: dict[str, str], ds: str) -> str:
    out = subprocess.run([AIRFLOW, "dags", "list-runs", "ecat_daily", "-o", "json"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    listing = next((line for line in reversed(out.stdout.splitlines()) if line.startswith("[")), "[]")
    runs = [r for r in json.loads(listing) if str(r.get("logical_date", "")).startswith(ds)]
    return runs[-1]["state"] if runs else "missing"


def run_airflow(days: list[str], conf: dict[str, Any], ecat_home: Path, airflow_home: Path) -> None:
    env = project_env(ecat_home, airflow_home)
    t0 = time.perf_counter()
    out = subprocess.run([AIRFLOW, "db", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{(out.stdout + out.stderr)[-3000:]}")
    log.info("  airflow db migrate in %.0fs", time.perf_counter() - t0)
    for ds in days:
        t0 = time.perf_counter()
        logfile = airflow_home / f"dags_test_{ds}.log"
        with logfile.open("w") as fh:
            rc = subprocess.run([AIRFLOW, "dags", "test", "ecat_daily", ds, "--conf", json.dumps(conf)],
                                env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=7200).returncode
        state = _run_state(env, ds)
        metrics = ecat_home / "reports" / f"ds={ds}" / "metrics.json"
        if rc != 0 or state != "success" or not metrics.is_file():
            tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-60:])
            raise RuntimeError(f"ecat_daily ds={ds}: rc={rc}, DAG run state={state!r}, metrics.json "
                               f"{'present' if metrics.is_file() else 'missing'}; log {logfile}:\n{tail}")
        log.info("  ds=%s: DAG run %s in %.0fs", ds, state, time.perf_counter() - t0)


def run_direct(days: list[str], conf: dict[str, Any], ecat_home: Path, warehouse: Path) -> None:
    """The DAG's steps in its order, in-process (tuning loop; not the benchmark of record)."""
    os.environ["ECAT_HOME"] = str(ecat_home)
    os.environ["ECAT_WAREHOUSE"] = str(warehouse)
    import duckdb

    from ecat_tasks.config import EcatConfig
    from ecat_tasks.domain_reweight import domain_reweight
    from ecat_tasks.evaluate import evaluate
    from ecat_tasks.extract import extract
    from ecat_tasks.graph_select import graph_select
    from ecat_tasks.guard import guard
    from ecat_tasks.score_previous_day import score_previous_day
    from ecat_tasks.student_distill import student_distill
    from ecat_tasks.storage import Layout
    from ecat_tasks.teacher_refresh import teacher_refresh
    from ecat_tasks.train_baselines import train_baselines
    from ecat_tasks.validate import validate

    cfg = EcatConfig.from_mapping(conf, env={})
    layout = Layout(ecat_home)
    for ds in days:
        t0 = time.perf_counter()
        with duckdb.connect(str(warehouse), read_only=True) as con:
            extract(con, ds, cfg, layout)
        validate(ds, cfg, layout)
        score_previous_day(ds, cfg, layout)
        graph_select(ds, cfg, layout)
        teacher_refresh(ds, cfg, layout)
        domain_reweight(ds, cfg, layout)
        student_distill(ds, cfg, layout)
        train_baselines(ds, cfg, layout)
        guard(ds, cfg, layout)
        evaluate(ds, cfg, layout)
        log.info("  ds=%s: steps done in %.0fs", ds, time.perf_counter() - t0)


def eval_pairs(days: list[str], eval_days: int) -> list[tuple[str, str]]:
    """(day whose models are evaluated, the next day they score): the last ``eval_days`` with a next day."""
    return list(zip(days[:-1], days[1:]))[-eval_days:]


def score_next_day(ecat_home: Path, conf: dict[str, Any], pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Per evaluated day: the next day's target users and labels and every model's scores of them.

    Where the pipeline already wrote ``next_day`` into the day's ``metrics.json``, its AUC must
    equal ours: the benchmark reports what the pipeline measures, nothing of its own.
    """
    from ecat_tasks.config import EcatConfig
    from ecat_tasks.inputs import served_decision
    from ecat_tasks.metrics import auc, logloss
    from ecat_tasks.report import scorable_models
    from ecat_tasks.storage import Layout
    from ecat_tasks.summary import next_day_scores

    cfg = EcatConfig.from_mapping(conf, env={})
    layout = Layout(ecat_home)
    out = []
    for ds, nxt in pairs:
        users, labels, scores = next_day_scores(layout, scorable_models(layout, ds), nxt, cfg)
        reported = json.loads((layout.report(ds) / "metrics.json").read_text())["models"]
        for model, s in scores.items():
            pipeline = reported.get(model, {}).get("next_day")
            for name, ours in (("auc", auc(labels, s)), ("logloss", logloss(labels, s))):
                if pipeline and not math.isclose(pipeline[name], ours, abs_tol=1e-6):
                    raise RuntimeError(f"{model} ds={ds}: next-day {name} {ours:.6f} here, "
                                       f"{pipeline[name]:.6f} in metrics.json: the benchmark scores differently")
        # "served" (scorable_models) is the guard's choice of the day through the calibration fitted on
        # that day's validation rows: the probabilities the pipeline serves
        guard = served_decision(ds, layout)
        out.append({"ds": ds, "scored_ds": nxt, "users": users, "labels": labels, "scores": scores,
                    "served": guard["served"] if guard is not None else None})
    return out


def day_metrics(ecat_home: Path, scored: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """ds -> model -> {"next_day": metrics, "cold_start": metrics} (cold start from metrics.json)."""
    from ecat_tasks.metrics import all_metrics

    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for day in scored:
        reported = json.loads((ecat_home / "reports" / f"ds={day['ds']}" / "metrics.json").read_text())["models"]
        out[day["ds"]] = {
            model: {"next_day": {k: v for k, v in all_metrics(day["users"], day["labels"], s).items() if k in METRICS},
                    "cold_start": {k: float(reported[model if model in reported else day["served"]]["holdout"][k])
                                   for k in METRICS}}
            for model, s in day["scores"].items()
        }
    return out


def seed_means(per_day: dict[str, dict[str, dict[str, dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    """view ("next_day" / "cold_start") -> model -> metric -> mean over the evaluated days."""
    days = list(per_day.values())
    return {view: {model: {k: float(sum(d[model][view][k] for d in days) / len(days)) for k in METRICS}
                   for model in days[-1]}
            for view in VIEWS}


def run_seed(args: argparse.Namespace, seed: int, conf_base: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One seed's summary (JSON-able) and its scored next days (for the bootstrap)."""
    days = days_of(args.start_ds, args.days)
    conf = {**conf_base, "seed": seed}
    root = Path(tempfile.mkdtemp(prefix=f"ecat-quality-{args.data}-s{seed}-", dir=args.tmp_dir))
    ecat_home, airflow_home = root / "ecat_home", root / "airflow_home"
    ecat_home.mkdir()
    airflow_home.mkdir()
    warehouse = ecat_home / "warehouse.duckdb"
    t0 = time.perf_counter()
    try:
        stats = seed_data(args.data, warehouse, seed, args.start_ds, args.days, args.rows, args.target_genre)
        log.info("seed %d: warehouse %s seeded (%s rows) in %.0fs", seed, warehouse, stats.get("rows"), time.perf_counter() - t0)
        if args.runner == "airflow":
            run_airflow(days, conf, ecat_home, airflow_home)
        else:
            run_direct(days, conf, ecat_home, warehouse)
        return measure(seed, ecat_home, conf, eval_pairs(days, args.eval_days), t0, stats, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def measure(seed: int, ecat_home: Path, conf: dict[str, Any], pairs: list[tuple[str, str]], t0: float,
            stats: dict[str, Any], home: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One seed's summary (JSON-able) and its scored next days, from the home its days ran in."""
    scored = score_next_day(ecat_home, conf, pairs)
    per_day = day_metrics(ecat_home, scored)
    means = seed_means(per_day)
    secs = time.perf_counter() - t0
    log.info("seed %d done in %.0fs: served (ECAT or its guard's fallback) next-day AUC %.4f", seed, secs,
             means["next_day"][method_of(means["next_day"])]["auc"])
    run = {"seed": seed, "seconds": round(secs, 1), "data": stats, **means, "per_day": per_day, "home": str(home)}
    return run, scored


# ----------------------------------------------------------------------------------------
# Replay of kept homes (--replay)
# ----------------------------------------------------------------------------------------
# what the guard alone reads: a replay may change these, and nothing else, from what a home ran with
REPLAYABLE = ("guard_enabled", "guard_margin", "guard_rule", "guard_candidates", "guard_window_days", "guard_slice",
              "serve_calibration", "calibration_strength")


def home_seed(home: Path) -> int:
    """The seed of a kept home, from its directory name (``ecat-quality-<data>-s<seed>-*``)."""
    match = re.search(r"-s(\d+)-", Path(home).name)
    if not match:
        raise SystemExit(f"{home}: not a bench.quality home (expected ecat-quality-<data>-s<seed>-*)")
    return int(match.group(1))


def home_days(home: Path) -> list[str]:
    """The days a kept home's lake holds (validated), in order."""
    from ecat_tasks.storage import Layout

    layout = Layout(Path(home) / "ecat_home")
    days = sorted(p.name[3:] for p in (layout.root / "lake").glob("ds=*") if layout.lake_has(p.name[3:]))
    if not days:
        raise SystemExit(f"{home}: no validated day in {layout.root / 'lake'}: not a kept bench.quality home")
    return days


def copy_home(home: Path, parent: Path | None) -> Path:
    """A copy of ``home`` under a new directory of ``parent`` (same name: it carries the seed), whose MLflow
    store names the copy's artifacts instead of the kept home's, so nothing the replay does writes there."""
    import sqlite3

    src = Path(home).resolve()
    dest = Path(tempfile.mkdtemp(prefix="replay-", dir=parent)) / src.name
    shutil.copytree(src, dest, symlinks=True)  # partitions are relative symlinks to their versions
    db = dest / "ecat_home" / "mlflow.db"
    if db.is_file():
        old, new = f"{src}/", f"{dest}/"
        with sqlite3.connect(db) as con:
            for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                for col in [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')
                            if any(t in r[2].upper() for t in ("CHAR", "TEXT", "CLOB"))]:
                    con.execute(f'UPDATE "{table}" SET "{col}" = replace("{col}", ?, ?) WHERE instr("{col}", ?) > 0',
                                (old, new, old))
    return dest


# Parameters added after homes were kept, with the value every earlier run had: a home that does
# not record one ran with this, not with today's default.
LEGACY_PARAMETERS = {"validation_by": "user"}
# which rows validate (splits.SLICE_SETTINGS), less the seed: a kept home's comes from its directory name
SLICE_FIELDS = tuple(k for k in SLICE_SETTINGS if k != "seed")


def recorded_parameters(layout: Any, day: str) -> dict[str, Any] | None:
    """The config a home's report of ``day`` recorded, with :data:`LEGACY_PARAMETERS` where it predates them."""
    from ecat_tasks.report import read_report

    ran = (read_report(layout, day) or {}).get("parameters")
    return {**LEGACY_PARAMETERS, **ran} if ran else None


def check_replayable(layout: Any, day: str, cfg: Any) -> str:
    """Refuse a replay config that differs from the home's own (its report's ``parameters``) beyond ``REPLAYABLE``;
    returns the code version that trained the home."""
    from ecat_tasks.storage import read_manifest

    ran = recorded_parameters(layout, day)
    if not ran:
        raise SystemExit(f"{layout.root}: reports/ds={day} records no parameters: cannot tell what the home ran with")
    now = json.loads(json.dumps(cfg.to_dict(), default=str))  # as the report recorded it
    differ = {k: (ran[k], now[k]) for k in sorted(ran.keys() & now.keys()) if ran[k] != now[k] and k not in REPLAYABLE}
    if differ:
        raise SystemExit(f"{layout.root}: the replay's config differs from the home's beyond the guard's fields "
                         f"({', '.join(REPLAYABLE)}): " + "; ".join(f"{k} ran {a!r}, replay {b!r}" for k, (a, b) in differ.items())
                         + " -- a change to training needs a run, not a replay (or pass the home's value in --conf)")
    return str(read_manifest(layout.model("student", day)).get("code_version", "unknown"))


def replay_home(copy: Path, days: list[str], conf: dict[str, Any]) -> dict[str, Any]:
    """Replay, on ``copy`` (a kept home's copy, :func:`copy_home`), what the DAG does after training under
    ``conf``: each day in order, ``guard`` -> ``evaluate``, then the next day's ``score_previous_day`` (which
    the DAG runs before that day trains). Returns the copy's data facts."""
    for key in ("ECAT_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"):
        if os.environ.get(key):
            raise SystemExit(f"{key} is set: the replay would write into that MLflow store, not the copy's; unset it")
    from ecat_tasks.config import EcatConfig
    from ecat_tasks.evaluate import evaluate
    from ecat_tasks.guard import SERVED_AREA, guard
    from ecat_tasks.inputs import target_rows
    from ecat_tasks.score_previous_day import score_previous_day
    from ecat_tasks.storage import Layout, shift_ds

    layout = Layout(copy / "ecat_home")
    cfg = EcatConfig.from_mapping(conf, env={})
    trained_by = check_replayable(layout, days[0], cfg)
    guarded = layout.existing_days(f"models/{SERVED_AREA}")
    for ds in guarded:
        t0 = time.perf_counter()
        decision = guard(ds, cfg, layout)
        evaluate(ds, cfg, layout)
        nxt = shift_ds(ds, 1)
        if nxt in days:
            score_previous_day(nxt, cfg, layout)
        log.info("  %s ds=%s: replayed guard (serving %s), evaluate%s in %.0fs", copy.name, ds, decision["served"],
                 f", score_previous_day {nxt}" if nxt in days else "", time.perf_counter() - t0)
    return {"days": len(days), "target_rows": sum(len(target_rows(d, layout)) for d in days),
            "replayed_days": guarded, "trained_by": trained_by}


def replay_seed(args: argparse.Namespace, home: Path, conf_base: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One kept home replayed on a copy (:func:`replay_home`), then measured as :func:`run_seed` measures a run."""
    seed = home_seed(home)
    conf = {**conf_base, "seed": seed}
    t0 = time.perf_counter()
    days = home_days(home)
    copy = copy_home(home, Path(args.tmp_dir) if args.tmp_dir else None)
    try:
        stats = {**replay_home(copy, days, conf), "replayed_from": str(Path(home).resolve())}
        return measure(seed, copy / "ecat_home", conf, eval_pairs(days, args.eval_days), t0, stats, copy)
    finally:
        if not args.keep:
            shutil.rmtree(copy.parent, ignore_errors=True)


# ----------------------------------------------------------------------------------------
# Statistics and tables
# ----------------------------------------------------------------------------------------
def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def _ms(xs: Sequence[float], digits: int = 4) -> str:
    mean, std = mean_std(xs)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if not math.isnan(std) else f"{mean:.{digits}f}"


def lift_of(runs: list[dict[str, Any]], model: str, metric: str, pooled: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """ECAT's lift over ``model`` (positive = ECAT better): the pooled interval and each seed's lift."""
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    method = method_of(runs[0]["next_day"])
    per_seed = [sign * (r["next_day"][method][metric] - r["next_day"][model][metric]) for r in runs]
    p = pooled[metric]
    if p["ahead"] and all(d > 0 for d in per_seed):
        verdict = "ECAT ahead"
    elif p["behind"] and all(d < 0 for d in per_seed):
        verdict = "ECAT behind"
    else:
        verdict = "not separated"
    return {**p, "per_seed": per_seed, "wins": sum(d > 0 for d in per_seed), "verdict": verdict}


def lifts(runs: list[dict[str, Any]], scored: list[list[dict[str, Any]]], n_resamples: int) -> dict[str, dict[str, Any]]:
    """model -> metric -> ECAT's pooled next-day lift over the model (every seed's days pooled)."""
    from ecat_tasks.metrics import pooled_bootstrap_lift

    out = {}
    for model in model_order(runs[0]["next_day"]):
        method = method_of(runs[0]["next_day"])
        if model == method:
            continue
        groups = [(d["users"], d["labels"], d["scores"][method], d["scores"][model]) for seed_days in scored for d in seed_days]
        pooled = pooled_bootstrap_lift(groups, n_resamples=n_resamples, seed=0)
        out[model] = {k: lift_of(runs, model, k, pooled) for k in METRICS}
    return out


def method_of(models: Sequence[str]) -> str:
    """The model the pipeline serves: the guard's choice (``served``) where it ran, else ECAT's student."""
    return "served" if "served" in models else "ecat"


def model_order(models: Sequence[str]) -> list[str]:
    from ecat_tasks.config import ABLATIONS, BASELINES

    preferred = ["served", "ecat", "teacher", *BASELINES, *[f"ecat_{a}" for a in ABLATIONS]]
    return [m for m in preferred if m in models] + sorted(set(models) - set(preferred))


def kind_of(model: str) -> str:
    if model == "served":
        return "method (served: ECAT or the guard's fallback, calibrated)"
    if model == "ecat":
        return "ECAT student"
    if model == "teacher":
        return "teacher"
    return "ablation" if model.startswith("ecat_") else "baseline"


def tables(runs: list[dict[str, Any]], lift: dict[str, dict[str, Any]], n_resamples: int) -> str:
    models = model_order(runs[0]["next_day"])
    lines = ["| model | kind | next-day AUC | next-day GAUC | next-day logloss | cold-start AUC | cold-start GAUC "
             "| cold-start logloss |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in models:
        cells = [_ms([r[view][m][k] for r in runs]) for view in VIEWS for k in METRICS]
        name = f"**{m}**" if m == method_of(models) else m
        lines.append(f"| {name} | {kind_of(m)} | " + " | ".join(cells) + " |")
    n = len(runs)
    lines += ["", f"The served model's next-day lift over each model (the served model is ECAT or, where the guard chose it, a fallback): point lift, pooled 95% paired-bootstrap interval over users "
              f"({n_resamples:,} resamples, every seed's days pooled), seeds where ECAT is better, verdict "
              "(ahead/behind: the interval excludes 0 and every seed agrees). Logloss lift = model − ECAT, so "
              "positive is ECAT better.", "",
              "| vs model | kind | ΔAUC [95% CI] | seeds | AUC verdict | ΔGAUC [95% CI] | seeds | GAUC verdict "
              "| Δlogloss [95% CI] | seeds | logloss verdict |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in models:
        if m == method_of(models):
            continue
        cells = [f"{x['lift']:+.4f} [{x['lo']:+.4f}, {x['hi']:+.4f}] | {x['wins']}/{n} | {x['verdict']}"
                 for x in (lift[m][k] for k in METRICS)]
        lines.append(f"| {m} | {kind_of(m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if cpu == "unknown":
        cpu = platform.processor() or "unknown"
    import torch

    return {"nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count()),
            "cpu": cpu, "torch_threads": str(torch.get_num_threads()), "python": platform.python_version(),
            "torch": torch.__version__, "os": platform.platform()}


def section_key(args: argparse.Namespace) -> str:
    """RESULTS.md subsection of a run: one per data set and target genre."""
    if args.data == "synthetic":
        return "nextday-synthetic"
    return "nextday-movielens-" + re.sub(r"[^a-z0-9]+", "-", args.target_genre.lower()).strip("-")


def section_text(args: argparse.Namespace, runs: list[dict[str, Any]], lift: dict[str, dict[str, Any]],
                 conf: dict[str, Any], wall: float, command: str) -> str:
    from ecat_tasks.config import EcatConfig

    facts = machine_facts()
    threads = EcatConfig.from_mapping(conf, env={}).torch_threads  # what each training task ran with
    facts["torch_threads"] = str(threads or facts["torch_threads"])
    per_seed = ", ".join(f"{r['seconds'] / 60:.1f}" for r in runs)
    title = {"synthetic": "Synthetic entire space",
             "movielens": f"MovieLens-100K (target genre {args.target_genre})"}[args.data]
    pairs = eval_pairs(days_of(args.start_ds, args.days), args.eval_days)
    if args.replay:
        homes = ", ".join(f"`{r['data']['replayed_from']}`" for r in runs)
        trained_by = ", ".join(sorted({r["data"]["trained_by"] for r in runs}))
        data_line = (f"the kept homes' lake, {args.days} days from {args.start_ds}, "
                     f"{'/'.join(str(r['data']['target_rows']) for r in runs)} target rows"
                     + (", world seed = seed" if args.data == "synthetic" else f" (ML-100K, target = {args.target_genre})"))
        runner = ("**replay of kept homes** (`--replay`): on a copy of each, every day's guard -> evaluate -> next "
                  "day's score_previous_day under this config; no model trained again")
    else:
        data_line = (f"{args.days} days × {args.rows:,} rows/day from {args.start_ds}, world seed = seed"
                     if args.data == "synthetic" else
                     f"ML-100K cut into {args.days} days from {args.start_ds}, target = {args.target_genre} ratings "
                     f"({runs[0]['data'].get('target_rows', '?')} rows); the data is fixed")
        runner = ("`airflow dags test` per day, every DAG run checked `success`" if args.runner == "airflow"
                  else "in-process step functions (not Airflow)")
    head = [
        f"### {title}",
        "",
        f"Command: `{command}`  ",
        *([f"**Replay** of the kept homes {homes} (trained by code version {trained_by}, with the homes' own config) "
           f"under the config below, which differs from each home's recorded one in the guard's fields alone "
           f"(`REPLAYABLE`, checked): the guard decided again, the models are the homes'.  "] if args.replay else []),
        f"Measured {dt.date.today().isoformat()} on {facts['nproc']} CPU(s) (`nproc`), {facts['cpu']}; torch "
        f"{facts['torch']} with {facts['torch_threads']} threads; shared machine. Runner: {runner}; "
        f"wall time {wall / 60:.1f} min for {len(runs)} seed(s) ({per_seed} min each).  ",
        f"Data: {data_line}. Seeds {[r['seed'] for r in runs]} (config `seed` = seed: slices and training). "
        f"Primary: next day, the models of {', '.join(d for d, _ in pairs)} scored on every target row of the day "
        f"after; secondary: cold start, the same day's held-out target users. Mean over those {len(pairs)} day(s), "
        f"then mean ± std over seeds.  ",
        f"Config overrides (`--conf`): `{json.dumps({k: v for k, v in conf.items() if k != 'seed'}, sort_keys=True)}` "
        f"(everything else: `ecat_tasks/config.py` defaults).",
        "",
    ]
    return "\n".join(head) + "\n" + tables(runs, lift, args.n_resamples) + "\n"


QUALITY_INTRO = """## Quality

Offline ranking quality of ECAT against its teacher, the baselines and its own ablations, by
`bench/quality.py` (see its docstring for the protocol: a fresh warehouse, `ECAT_HOME` and
`AIRFLOW_HOME` per seed, every day run through `airflow dags test`). Primary: next-day
metrics (the models of day d on every target row of d + 1); secondary: the same-day
cold-start holdout. Lifts come with a paired bootstrap over users pooled over days and seeds;
"ahead" means the 95% interval excludes 0 and every seed agrees.
"""


def write_results(path: Path, key: str, body: str) -> None:
    """Replace (or add) the ``key`` subsection inside ``## Quality``; keep everything else."""
    text = path.read_text() if path.exists() else ""
    begin, end = f"<!-- quality:{key}:begin -->", f"<!-- quality:{key}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    match = re.search(r"^## Quality\s*$", text, flags=re.M)
    if not match:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + QUALITY_INTRO + "\n" + block
    else:
        nxt = re.search(r"^## ", text[match.end():], flags=re.M)
        sec_end = match.end() + nxt.start() if nxt else len(text)
        section = text[match.start():sec_end]
        if begin in section and end in section:
            section = re.sub(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", lambda _: block, section, flags=re.S)
        else:
            section = section.rstrip() + "\n\n" + block
        text = text[:match.start()] + section.rstrip() + "\n" + ("\n" + text[sec_end:] if sec_end < len(text) else "")
    path.write_text(text)


# ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(DATASETS), default="synthetic")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--days", type=int, help="days to run (synthetic 3, movielens 7)")
    p.add_argument("--rows", type=int, help="synthetic rows per day (400000)")
    p.add_argument("--start-ds", help="first day (synthetic 2026-03-01, movielens 2026-01-01)")
    p.add_argument("--eval-days", type=int, help="average over the last N days that have a next day (default: all of them)")
    p.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples of the lift intervals")
    p.add_argument("--target-genre", default="Film-Noir", help="movielens: genre whose ratings are the target")
    p.add_argument("--conf", default="{}", help="JSON config overrides for every run (on top of the data set's)")
    p.add_argument("--runner", choices=["airflow", "direct"], default="airflow")
    p.add_argument("--jobs", type=int, default=1, help="seeds run side by side (Airflow runner only; each seed its own processes)")
    p.add_argument("--results", type=Path, default=None,
                   help="markdown file to write the Quality section into (bench/RESULTS.md; with --replay "
                        "bench/out/results-replay-<section>.md)")
    p.add_argument("--replay", type=Path, nargs="+", metavar="HOME",
                   help="kept homes (--keep) of one data set to replay the guard on (copies) under --conf, "
                        "instead of running; the seeds are the homes'")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    p.add_argument("--keep", action="store_true", help="keep each seed's temporary homes")
    p.add_argument("--tmp-dir", default=None, help="parent of the per-seed temporary homes")
    p.add_argument("--tag", default="", help="suffix of the raw JSON output name")
    args = p.parse_args(argv)
    d = DATASETS[args.data]
    if args.replay:  # the homes say which seeds and days they ran
        if any(f"ecat-quality-{args.data}-" not in h.name for h in args.replay):
            p.error(f"--replay: every home must be an ecat-quality-{args.data}-s<seed>-* home of --data {args.data}")
        days = {tuple(home_days(h)) for h in args.replay}
        if len(days) != 1:
            p.error(f"--replay: the homes hold different days: {sorted(days)}")
        (days,) = days
        args.seeds = [home_seed(h) for h in args.replay]
        args.start_ds, args.days = days[0], len(days)
    args.days = args.days or d["days"]
    args.rows = args.rows or d["rows"]
    args.start_ds = args.start_ds or d["start_ds"]
    if args.days < 2:
        p.error("--days must be at least 2: the primary metric scores day d's models on day d + 1")
    args.eval_days = min(args.eval_days or args.days - 1, args.days - 1)
    return args


def run_seeds(args: argparse.Namespace, conf: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every seed's run, in seed order; ``--jobs`` seeds at a time under the Airflow runner.

    Each seed has its own homes, warehouse and Airflow processes, so seeds share nothing but the
    CPU; the direct runner sets the process environment per seed and stays one seed at a time.
    """
    jobs = min(args.jobs, len(args.seeds)) if args.runner == "airflow" else 1
    if jobs <= 1:
        return [run_seed(args, seed, conf) for seed in args.seeds]
    if args.data == "movielens":  # unpack the ratings once, before the seeds read them side by side
        from bench.movielens import load_movielens

        load_movielens()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="seed") as pool:
        return list(pool.map(lambda seed: run_seed(args, seed, conf), args.seeds))


def main(argv: list[str] | None = None) -> int:
    raw_argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.runner == "direct":
        logging.getLogger("ecat_tasks").setLevel(logging.WARNING)
    conf = {**DATASETS[args.data]["conf"], **json.loads(args.conf)}
    t0 = time.perf_counter()
    runs, scored = [], []
    # a replay takes one home at a time, in this process
    seeds = [replay_seed(args, home, conf) for home in args.replay] if args.replay else run_seeds(args, conf)
    for run, days in seeds:
        runs.append(run)
        scored.append(days)
    t1 = time.perf_counter()
    lift = lifts(runs, scored, args.n_resamples)
    log.info("bootstrap of %d lifts over %d (seed, day) groups in %.1fs", len(lift), sum(map(len, scored)),
             time.perf_counter() - t1)
    wall = time.perf_counter() - t0
    command = ".venv/bin/python -m bench.quality " + " ".join(shlex.quote(a) for a in raw_argv)
    text = section_text(args, runs, lift, conf, wall, command)
    print()
    print(text)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    key = section_key(args)
    raw = OUT_DIR / f"quality-{key}{'-replay' if args.replay else ''}{('-' + args.tag) if args.tag else ''}.json"
    raw.write_text(json.dumps({"command": command, "conf": conf, "runs": runs, "lift": lift, "wall_s": wall,
                               "machine": machine_facts(), "replay": [str(h) for h in args.replay or []]}, indent=2))
    if not args.no_write and (args.runner == "airflow" or args.replay):
        args.results = args.results or (OUT_DIR / f"results-replay-{key}.md" if args.replay else RESULTS)
        write_results(args.results, key, text)
        print(f"wrote {args.results} (## Quality / {key}) and {raw}")
    else:
        print(f"wrote {raw} ({'--no-write' if args.no_write else 'direct runner'}: RESULTS.md untouched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
