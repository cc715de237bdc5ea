"""Quality benchmark: ECAT against its teacher, the baselines and its ablations, over seeds.

``python -m bench.quality --data synthetic|movielens --seeds 0 1 2 [--days N --rows R ...]``

For every seed the benchmark builds a fresh world in a temporary directory (its own
``ECAT_HOME``, ``AIRFLOW_HOME`` and DuckDB warehouse), so seeds never share state:

* ``--data synthetic``: the warehouse is seeded by :mod:`ecat_tasks.synthetic` with
  ``World(seed=seed)``, so the seed changes the world (users, items, tastes) and the rows.
* ``--data movielens``: MovieLens-100K mapped by :mod:`bench.movielens` (target genre a
  parameter, ``--target-genre``). The data is fixed; the seed changes the held-out users.

In both cases the seed is also the run's config ``seed`` (held-out split of the target
users, the random-walk streams, weight init and batch order of every model). Every day is
then run through Airflow, in date order, with ``airflow dags test ecat_daily <ds> --conf``;
a day counts only when ``airflow dags list-runs`` reports its DAG run ``success`` and its
``reports/ds=<ds>/metrics.json`` exists (the benchmark stops at the first failed day).

Metric of a model for one seed: the mean over the last ``--eval-days`` days of its metrics
on that day's held-out target users (``holdout`` in ``metrics.json``: target users of ``ds``
never trained on by any model). The table gives mean ± sample std over seeds, and ECAT's
lift over every other model, paired by seed (``ECAT - model`` per seed, then mean ± std);
a lift is *beyond the seed spread* when its mean exceeds its std over seeds and it has the
same sign in every seed. For logloss lower is better, so its lift is ``model - ECAT``.

The table is printed and (unless ``--no-write``) written into ``bench/RESULTS.md``, section
``## Quality``, subsection of the data set (replaced on rerun, other subsections kept),
with the command and the machine facts. Raw per-seed numbers go to
``bench/out/quality-<data>.json`` (git-ignored).

``--runner direct`` calls the step functions in-process instead of Airflow (same code,
same order, no scheduler): a faster loop for tuning experiments, never the numbers of record.
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
OUT_DIR = ROOT / "bench" / "out"
PY = sys.executable
AIRFLOW = str(Path(sys.executable).parent / "airflow")
METRICS = ("auc", "gauc", "logloss")
HIGHER_IS_BETTER = {"auc": True, "gauc": True, "logloss": False}

log = logging.getLogger("bench.quality")

# Per data set: benchmark defaults (days, rows, eval days) and the config the data needs.
DATASETS: dict[str, dict[str, Any]] = {
    "synthetic": {
        "start_ds": "2026-03-01", "days": 3, "rows": 400_000, "eval_days": 2,
        # ~12k target rows a day (~2.4k held out); fewer rows leave every model near AUC 0.6 and
        # the seed-to-seed noise larger than the differences between models
        "conf": {},
    },
    "movielens": {
        "start_ds": "2026-01-01", "days": 7, "rows": None, "eval_days": 6,
        # Film-Noir: ~1.7k ratings over 7 days (~250 a day), click = rating >= 4 (~55%)
        "conf": {"min_target_rows": 50, "min_source_rows": 100, "label_rate_max": 0.8},
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
        graph_select(ds, cfg, layout)
        domain_reweight(ds, cfg, layout)
        teacher_refresh(ds, cfg, layout)
        student_distill(ds, cfg, layout)
        train_baselines(ds, cfg, layout)
        evaluate(ds, cfg, layout)
        log.info("  ds=%s: steps done in %.0fs", ds, time.perf_counter() - t0)


def read_metrics(ecat_home: Path, eval_days: list[str]) -> dict[str, dict[str, float]]:
    """model -> metric -> mean over ``eval_days`` of the holdout metric."""
    per_day = [json.loads((ecat_home / "reports" / f"ds={ds}" / "metrics.json").read_text())["models"] for ds in eval_days]
    out: dict[str, dict[str, float]] = {}
    for model in per_day[-1]:
        out[model] = {m: float(sum(d[model]["holdout"][m] for d in per_day) / len(per_day)) for m in METRICS}
    return out


def run_seed(args: argparse.Namespace, seed: int, conf_base: dict[str, Any]) -> dict[str, Any]:
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
        metrics = read_metrics(ecat_home, days[-args.eval_days:])
        secs = time.perf_counter() - t0
        log.info("seed %d done in %.0fs: ECAT AUC %.4f", seed, secs, metrics["ecat"]["auc"])
        return {"seed": seed, "seconds": round(secs, 1), "data": stats, "metrics": metrics, "home": str(root)}
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


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


def lift_of(runs: list[dict[str, Any]], model: str, metric: str) -> dict[str, Any]:
    """ECAT's paired lift over ``model`` (positive = ECAT better) and whether it beats the spread."""
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    diffs = [sign * (r["metrics"]["ecat"][metric] - r["metrics"][model][metric]) for r in runs]
    mean, std = mean_std(diffs)
    same_sign = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
    beyond = len(diffs) > 1 and same_sign and abs(mean) > std
    verdict = ("ECAT ahead" if mean > 0 else "ECAT behind") if beyond else "within spread"
    return {"diffs": diffs, "mean": mean, "std": std, "wins": sum(d > 0 for d in diffs), "beyond": beyond,
            "verdict": verdict}


def model_order(models: Sequence[str]) -> list[str]:
    from ecat_tasks.config import ABLATIONS, BASELINES

    preferred = ["ecat", "teacher", *BASELINES, *[f"ecat_{a}" for a in ABLATIONS]]
    return [m for m in preferred if m in models] + sorted(set(models) - set(preferred))


def kind_of(model: str) -> str:
    if model == "ecat":
        return "method"
    if model == "teacher":
        return "teacher"
    return "ablation" if model.startswith("ecat_") else "baseline"


def tables(runs: list[dict[str, Any]]) -> str:
    models = model_order(runs[0]["metrics"])
    lines = ["| model | kind | AUC | GAUC | logloss |", "| --- | --- | --- | --- | --- |"]
    for m in models:
        cells = [_ms([r["metrics"][m][k] for r in runs]) for k in METRICS]
        name = f"**{m}**" if m == "ecat" else m
        lines.append(f"| {name} | {kind_of(m)} | " + " | ".join(cells) + " |")
    lines += ["", "ECAT's lift over each model, paired by seed (mean ± std over seeds; wins = seeds where ECAT is "
              "better; logloss lift = model − ECAT, so positive is ECAT better):", "",
              "| vs model | kind | ΔAUC | wins | AUC verdict | ΔGAUC | wins | ΔGAUC verdict | Δlogloss | wins |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    n = len(runs)
    for m in models:
        if m == "ecat":
            continue
        la, lg, ll = (lift_of(runs, m, k) for k in METRICS)
        lines.append(
            f"| {m} | {kind_of(m)} | {la['mean']:+.4f} ± {la['std']:.4f} | {la['wins']}/{n} | {la['verdict']} | "
            f"{lg['mean']:+.4f} ± {lg['std']:.4f} | {lg['wins']}/{n} | {lg['verdict']} | "
            f"{ll['mean']:+.4f} ± {ll['std']:.4f} | {ll['wins']}/{n} |"
        )
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


def section_text(args: argparse.Namespace, runs: list[dict[str, Any]], conf: dict[str, Any], wall: float,
                 command: str) -> str:
    facts = machine_facts()
    per_seed = ", ".join(f"{r['seconds'] / 60:.1f}" for r in runs)
    title = {"synthetic": "Synthetic entire space",
             "movielens": f"MovieLens-100K (target genre {args.target_genre})"}[args.data]
    days = days_of(args.start_ds, args.days)
    data_line = (f"{args.days} days × {args.rows:,} rows/day from {args.start_ds}, world seed = seed"
                 if args.data == "synthetic" else
                 f"ML-100K cut into {args.days} days from {args.start_ds}, target = {args.target_genre} ratings "
                 f"({runs[0]['data'].get('target_rows', '?')} rows); the seed changes the held-out users")
    head = [
        f"### {title}",
        "",
        f"Command: `{command}`  ",
        f"Measured {dt.date.today().isoformat()} on {facts['nproc']} CPU(s) (`nproc`), {facts['cpu']}; torch "
        f"{facts['torch']} with {facts['torch_threads']} threads; shared machine. Runner: "
        f"{'`airflow dags test` per day, every DAG run checked `success`' if args.runner == 'airflow' else 'in-process step functions (not Airflow)'}; "
        f"wall time {wall / 60:.1f} min for {len(runs)} seed(s) ({per_seed} min each).  ",
        f"Data: {data_line}. Seeds {[r['seed'] for r in runs]} (config `seed` = seed). "
        f"Metrics: held-out target users, mean over the last {args.eval_days} day(s) "
        f"({', '.join(days[-args.eval_days:])}), then mean ± std over seeds.  ",
        f"Config overrides (`--conf`): `{json.dumps({k: v for k, v in conf.items() if k != 'seed'}, sort_keys=True)}` "
        f"(everything else: `ecat_tasks/config.py` defaults).",
        "",
    ]
    return "\n".join(head) + "\n" + tables(runs) + "\n"


QUALITY_INTRO = """## Quality

Offline ranking quality of ECAT on held-out target users, against its teacher, the baselines
and its own ablations, by `bench/quality.py` (see its docstring for the protocol: a fresh
warehouse, `ECAT_HOME` and `AIRFLOW_HOME` per seed, every day run through `airflow dags test`,
metrics read from `reports/ds=*/metrics.json`). "Beyond the seed spread" means the paired
lift (ECAT − model, per seed) has the same sign in every seed and its mean exceeds its std.
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
    p.add_argument("--eval-days", type=int, help="average holdout metrics over the last N days (synthetic 2, movielens 6: all but the cold-start day)")
    p.add_argument("--target-genre", default="Film-Noir", help="movielens: genre whose ratings are the target")
    p.add_argument("--conf", default="{}", help="JSON config overrides for every run (on top of the data set's)")
    p.add_argument("--runner", choices=["airflow", "direct"], default="airflow")
    p.add_argument("--results", type=Path, default=RESULTS, help="markdown file to write the Quality section into")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    p.add_argument("--keep", action="store_true", help="keep each seed's temporary homes")
    p.add_argument("--tmp-dir", default=None, help="parent of the per-seed temporary homes")
    p.add_argument("--tag", default="", help="suffix of the raw JSON output name")
    args = p.parse_args(argv)
    d = DATASETS[args.data]
    args.days = args.days or d["days"]
    args.rows = args.rows or d["rows"]
    args.start_ds = args.start_ds or d["start_ds"]
    args.eval_days = min(args.eval_days or d["eval_days"], args.days)
    return args


def main(argv: list[str] | None = None) -> int:
    raw_argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.runner == "direct":
        logging.getLogger("ecat_tasks").setLevel(logging.WARNING)
    conf = {**DATASETS[args.data]["conf"], **json.loads(args.conf)}
    t0 = time.perf_counter()
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(args, seed, conf))
    wall = time.perf_counter() - t0
    command = ".venv/bin/python -m bench.quality " + " ".join(shlex.quote(a) for a in raw_argv)
    text = section_text(args, runs, conf, wall, command)
    print()
    print(text)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    raw = OUT_DIR / f"quality-{args.data}{('-' + args.tag) if args.tag else ''}.json"
    raw.write_text(json.dumps({"command": command, "conf": conf, "runs": runs, "wall_s": wall,
                               "machine": machine_facts()}, indent=2))
    if not args.no_write and args.runner == "airflow":
        write_results(args.results, args.data, text)
        print(f"wrote {args.results} (## Quality / {args.data}) and {raw}")
    else:
        print(f"wrote {raw} ({'--no-write' if args.no_write else 'direct runner'}: RESULTS.md untouched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
