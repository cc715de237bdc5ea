"""Per-task cost of one day of the pipeline: wall time and peak memory at several sizes.

    python -m bench.bench_cost --sizes 100000 1000000 4000000
    python -m bench.bench_cost --sizes 1000000 --e2e      # plus one day through `airflow dags test`

For each size (entire-space rows of the day) a fresh ECAT_HOME gets a synthetic warehouse of
one day (seeding is timed: the generator's rows/s), then every step of ``ecat_daily`` runs in
date order, each in its own subprocess so its peak resident memory (``ru_maxrss``) is its
own. The step's wall time excludes the interpreter's start and imports; the table shows both.
The configuration is the DAG's default (every baseline and ablation) unless ``--conf`` says
otherwise. Day 1 is a cold start whose lookback window is that one day, so the teacher
trains on the same rows as on a warm day.

``--warm`` measures the day a production pipeline runs every day instead: the warehouse holds
the day before too, whose every step (comparison models included) runs first, unmeasured, so
each model of the measured day warm-starts from its own checkpoint (the teacher's warm day is
``teacher_warm_epochs``, a cold start ``teacher_epochs``).

``--e2e`` also runs the same day through Airflow (``airflow dags test``, in a fresh
AIRFLOW_HOME) and reports its wall time: the figure an operator sees. ``dags test`` runs one
task at a time; ``--slots N`` runs the day through the scheduler instead (LocalExecutor with N
task slots, the api-server and dag-processor beside it, as ``tests/integration`` starts them),
so N mapped comparison models train at once, as on a deployment's workers:

    python -m bench.bench_cost --sizes 1000000 --warm --slots 2 --conf '{"torch_threads": 1}'
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DS = "2026-11-01"
DS_BEFORE = "2026-10-31"  # --warm: the day whose checkpoints the measured day warm-starts from
TASK_TITLE = re.compile(r"airflow worker -- ([0-9a-f-]{36})")  # the task runner's process title: its ti id
PRODUCTION = ("extract", "validate", "score_previous_day", "graph_select", "teacher_refresh", "domain_reweight", "student_distill")
FINAL = ("guard", "evaluate", "promote")  # the guard after every comparison model, as in the DAG


def run_one_step(step: str, ds: str, home: str, conf: dict[str, Any]) -> dict[str, Any]:
    """Child process: run one step with plain arguments, report its time and peak RSS.

    ``train_comparison:<model>`` is one mapped comparison-model task."""
    import duckdb

    from ecat_tasks.airflow_edge import STEPS as STEP_FUNCS
    from ecat_tasks.config import EcatConfig
    from ecat_tasks.storage import Layout

    step, _, model = step.partition(":")
    module_name, func_name = STEP_FUNCS[step].split(":")
    module = __import__(module_name, fromlist=[func_name])
    func = getattr(module, func_name)
    cfg = EcatConfig.from_mapping(conf)
    layout = Layout(home)
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    if step == "extract":
        with duckdb.connect(str(Path(home) / "warehouse.duckdb"), read_only=True) as con:
            manifest = func(con, ds, cfg, layout)
    elif model:
        manifest = func(ds, cfg, layout, model=model)
    else:
        manifest = func(ds, cfg, layout)
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    if isinstance(manifest, list):  # plan_comparisons
        return {"step": step, "seconds": seconds, "plan": manifest,
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return {"step": step + (f":{model}" if model else ""), "seconds": seconds, "cpu_seconds": cpu,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rows": manifest.get("rows") or manifest.get("source_rows") or manifest.get("kept")}


def _cpu_seconds() -> float:
    """User plus system CPU time of this process and its threads: on a machine shared with other
    jobs, less sensitive to their load than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(args: list[str], env: dict[str, str], module: str = "bench.bench_cost") -> dict[str, Any]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - t0
    return result


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECAT_", "AIRFLOW"))}
    env.update(ECAT_HOME=str(home), ECAT_WAREHOUSE=str(home / "warehouse.duckdb"), PYTHONPATH=str(ROOT),
               DGLBACKEND="pytorch", MLFLOW_DISABLE_TELEMETRY="true", GX_ANALYTICS_ENABLED="false")
    return env


def _one_step(name: str, ds: str, home: Path, conf: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """One step of ``ds`` in its own process (:func:`run_one_step`): its time and exact peak RSS."""
    return _child(["--one-step", name, "--ds", ds, "--home", str(home), "--conf", json.dumps(conf)], env)


def _seed_args(rows: int, home: Path, warm: bool) -> list[str]:
    return ["--seed-only", "--rows", str(rows), "--home", str(home), *(["--warm"] if warm else [])]


def bench_size(rows: int, conf: dict[str, Any], workdir: Path, e2e: bool, comparisons: bool,
               warm: bool = False, slots: int = 0) -> dict[str, Any]:
    """Every step of one day at ``rows`` rows; comparison models (one task each) unless ``comparisons`` is off.

    ``warm``: the day before runs first, unmeasured (see the module docstring)."""
    home = workdir / f"home_{rows}"
    env = _env(home)
    seeded = _child(_seed_args(rows, home, warm), env)

    def day(ds: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        def step(name: str) -> dict[str, Any]:
            result = _one_step(name, ds, home, conf, env)
            print(f"{rows:,} rows, {ds}: {json.dumps(result)}", file=sys.stderr, flush=True)  # a stopped run keeps its steps
            return result

        production = [step(s) for s in PRODUCTION]
        plan = step("plan_comparisons")["plan"]
        return production, [step(f"train_comparison:{m}") for m in plan], [step(s) for s in FINAL]

    if warm:
        day(DS_BEFORE)
    production, compare, final = day(DS)
    steps = production + compare + final
    # promote's gate compares the student with target_only: that one belongs to the production path
    prod = production + [c for c in compare if c["step"] == "train_comparison:target_only"] + final
    compare = [c for c in compare if c["step"] != "train_comparison:target_only"]
    result = {"rows": rows, "seed": seeded, "steps": steps, "comparisons": comparisons, "warm": warm,
              "production_seconds": sum(s["seconds"] for s in prod),
              "production_process_seconds": sum(s["process_seconds"] for s in prod),
              "comparison_seconds": sum(s["seconds"] for s in compare),
              "total_step_seconds": sum(s["seconds"] for s in steps),
              "total_process_seconds": sum(s["process_seconds"] for s in steps),
              "peak_mb": max(s["peak_mb"] for s in steps)}
    if e2e:
        result["e2e_seconds"] = dags_test(rows, conf, workdir / f"e2e_{rows}", warm)
    if slots:
        result["scheduler"] = scheduler_day(rows, conf, workdir / f"scheduler_{rows}", warm, slots)
    return result


def bench_until(rows: int, conf: dict[str, Any], workdir: Path, last: str) -> list[dict[str, Any]]:
    """The production steps of one cold day up to ``last``, each in its own process: exact peak
    RSS (``ru_maxrss``) of the early, data-sized steps without training a model."""
    if last not in PRODUCTION:
        raise SystemExit(f"--until: one of {', '.join(PRODUCTION)}")
    home = workdir / f"home_{rows}"
    env = _env(home)
    _child(_seed_args(rows, home, False), env)
    steps = []
    for name in PRODUCTION[:PRODUCTION.index(last) + 1]:
        steps.append(_one_step(name, DS, home, conf, env))
        print(f"{rows:,} rows: {steps[-1]['step']} {steps[-1]['seconds']:.1f}s, peak {steps[-1]['peak_mb']:,.0f} MB",
              flush=True)
    return steps


def dags_test(rows: int, conf: dict[str, Any], home: Path, warm: bool = False) -> float:
    """One day through Airflow (``airflow dags test``), fresh homes: the operator's wall time
    (``warm``: of the second of two days)."""
    env = _env(home / "ecat")
    env.update(AIRFLOW_HOME=str(home / "airflow"))
    sourced = subprocess.run(["bash", "-c", f'source "{ROOT}/scripts/env.sh" >/dev/null && env -0'], env=env,
                             capture_output=True, check=True)
    env = dict(item.split("=", 1) for item in sourced.stdout.decode().split("\0") if "=" in item)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, check=True)
    _child(_seed_args(rows, home / "ecat", warm), env)
    seconds = 0.0
    for ds in ([DS_BEFORE] if warm else []) + [DS]:
        t0 = time.perf_counter()
        out = subprocess.run([airflow, "dags", "test", "ecat_daily", ds, "--conf", json.dumps(conf)], env=env,
                             capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if out.returncode != 0 or "state=success" not in out.stdout + out.stderr:
            raise RuntimeError(f"airflow dags test {ds} failed:\n{(out.stdout + out.stderr)[-3000:]}")
    return seconds


def scheduler_day(rows: int, conf: dict[str, Any], home: Path, warm: bool, slots: int,
                  executor: str | None = None) -> dict[str, Any]:
    """One day through the scheduler with ``slots`` task slots (``warm``: of the second of two days,
    run as one backfill): the run's wall time as the metadata DB records it, and how many of its
    comparison models trained at once at most."""
    sys.path.insert(0, str(ROOT))
    from tests.integration.airflow_harness import AirflowStack, parse_db_time

    stack = AirflowStack(home, parallelism=slots, extra_env={"AIRFLOW__CORE__EXECUTOR": executor} if executor else None)
    _child(_seed_args(rows, stack.ecat_home, warm), _env(stack.ecat_home))
    stack.migrate()
    days = ([DS_BEFORE] if warm else []) + [DS]
    peaks: dict[str, float] = {}
    stop = threading.Event()
    with stack.running():
        sampler = threading.Thread(target=sample_task_rss, args=(stack.procs["scheduler"].pid, stop, peaks), daemon=True)
        sampler.start()
        stack.wait_for_dag("ecat_daily")
        stack.create_backfill("ecat_daily", "--from-date", days[0], "--to-date", DS, "--reprocess-behavior",
                              "completed", "--max-active-runs", "1", "--dag-run-conf", json.dumps(conf))
        run = stack.wait_for_runs("ecat_daily", days, timeout=6 * 3600)[DS]
        stop.set()
        sampler.join()
        tis = stack.task_instances("ecat_daily", DS)
    spans = [(parse_db_time(t["start_date"]), parse_db_time(t["end_date"])) for t in tis
             if t["task_id"] == "train_comparison" and t["start_date"] and t["end_date"]]
    together = max((sum(1 for s, e in spans if s <= start < e) for start, _ in spans), default=0)
    seconds = (parse_db_time(run["end_date"]) - parse_db_time(run["start_date"])).total_seconds()
    return {"slots": slots, "seconds": seconds, "comparison_models_at_once": together,
            "executor": stack.env["AIRFLOW__CORE__EXECUTOR"],
            "task_seconds": {_ti_name(t): (parse_db_time(t["end_date"]) - parse_db_time(t["start_date"])).total_seconds()
                             for t in tis if t["start_date"] and t["end_date"]},
            "task_peak_mb": {_ti_name(t): round(peaks[_hex(t["id"])], 1) for t in tis if _hex(t["id"]) in peaks}}


def sample_task_rss(root_pid: int, stop: threading.Event, peaks: dict[str, float]) -> None:
    """Until ``stop``, every second: the RSS (MB) of each task process under ``root_pid``, the
    largest seen kept per task instance id. A task process's title is ``airflow worker -- <ti id>``
    (the task runner sets it); a peak between two reads is missed."""
    import psutil

    root = psutil.Process(root_pid)
    while not stop.wait(1.0):
        try:
            processes = root.children(recursive=True)
        except psutil.Error:
            continue
        for process in processes:
            try:
                title, rss = " ".join(process.cmdline()), process.memory_info().rss / 2**20
            except psutil.Error:
                continue
            match = TASK_TITLE.search(title)
            if match:
                key = _hex(match.group(1))
                peaks[key] = max(peaks.get(key, 0.0), rss)


def _hex(ti_id: str) -> str:
    """A task instance id without dashes: SQLite keeps the UUID as 32 hex digits, the title prints it with them."""
    return str(ti_id).replace("-", "").lower()


def _ti_name(ti: Any) -> str:
    """A task instance's name: the task id, with a mapped one's model (its rendered map index) or index."""
    if int(ti["map_index"]) < 0:
        return ti["task_id"]
    return f"{ti['task_id']}:{ti['rendered_map_index']}" if ti["rendered_map_index"] else f"{ti['task_id']}[{ti['map_index']}]"


def scheduler_table(runs: list[dict[str, Any]]) -> str:
    """Runs through the scheduler (``--executors`` JSON), one column each: every task's seconds
    (process start included) and sampled peak RSS, and the run's wall time."""
    head = [f"{r['rows']:,} rows, {r['executor'].rsplit('.', 1)[-1]}, {r['slots']} slots" for r in runs]
    lines = ["| task | " + " | ".join(f"{h}: s / peak MB" for h in head) + " |",
             "| --- |" + " ---: |" * len(runs)]
    for name in dict.fromkeys(n for r in runs for n in r["task_seconds"]):
        cells = [f"{r['task_seconds'][name]:.1f} / {r['task_peak_mb'].get(name, float('nan')):,.0f}"
                 if name in r["task_seconds"] else "-" for r in runs]
        lines.append(f"| {name.replace('train_comparison:', 'comparison: ')} | " + " | ".join(cells) + " |")
    lines.append("| peak RSS of any task, MB | " + " | ".join(f"{max(r['task_peak_mb'].values(), default=float('nan')):,.0f}"
                                                          for r in runs) + " |")
    lines.append("| **the day through the scheduler (wall, metadata DB)** | "
                 + " | ".join(f"**{r['seconds']:.0f}**" for r in runs) + " |")
    return "\n".join(lines)


def scheduler_as_steps(run: dict[str, Any]) -> dict[str, Any]:
    """A run through the scheduler in the shape :func:`plot` reads: one step per task instance."""
    steps = [{"step": name, "seconds": seconds, "peak_mb": run["task_peak_mb"].get(name, float("nan"))}
             for name, seconds in run["task_seconds"].items()]
    return {"rows": run["rows"], "day_seconds": run["seconds"], "steps": steps}


def compare_executors(sizes: list[int], conf: dict[str, Any], executors: list[str], slots: int, warm: bool,
                      repeats: int, out: Path | None) -> None:
    """The same day through the scheduler under each executor, in rounds whose order alternates
    (A B, then B A, ...), so a shared machine's load falls on both alike; prints each run and
    the mean per executor."""
    if repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    runs = []
    with tempfile.TemporaryDirectory(prefix="ecat-bench-executors-") as tmp:
        for rows in sizes:
            for round_ in range(repeats):
                for executor in executors if round_ % 2 == 0 else executors[::-1]:
                    home = Path(tmp) / f"{rows}_{round_}_{executor.rsplit('.', 1)[-1]}"
                    run = {"rows": rows, "round": round_, **scheduler_day(rows, conf, home, warm, slots, executor)}
                    shutil.rmtree(home, ignore_errors=True)
                    runs.append(run)
                    print(f"{rows:,} rows, round {round_}, {executor}: {run['seconds']:.1f}s, peak task RSS "
                          f"{max(run['task_peak_mb'].values(), default=float('nan')):.0f} MB "
                          f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    if out:
        out.write_text(json.dumps(runs, indent=2))
    for rows in sizes:
        seconds = {e: [r["seconds"] for r in runs if r["rows"] == rows and r["executor"] == e] for e in executors}
        means = {e: sum(s) / len(s) for e, s in seconds.items()}
        print(f"{rows:,} rows, {slots} slots, {'warm' if warm else 'cold'} day, {repeats} round(s): "
              + "; ".join(f"{e} {s:.1f}s" for e, s in means.items())
              + (f"; {executors[1]} / {executors[0]} = {means[executors[1]] / means[executors[0]]:.3f}"
                 if len(executors) == 2 else ""))


def table(results: list[dict[str, Any]]) -> str:
    sizes = [r["rows"] for r in results]
    lines = ["| task | " + " | ".join(f"{n:,} rows: s / peak MB" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    seed_cells = [f"{r['seed']['seconds']:.1f} ({r['rows'] / r['seed']['seconds']:,.0f} rows/s) / {r['seed']['peak_mb']:,.0f}"
                  for r in results]
    lines.append("| generate (synthetic) | " + " | ".join(seed_cells) + " |")
    names = list(dict.fromkeys(s["step"] for r in results for s in r["steps"]))
    for name in names:
        cells = []
        for r in results:
            s = next((x for x in r["steps"] if x["step"] == name), None)
            if s is None:
                cells.append("-")
                continue
            extra = f" ({r['rows'] / s['seconds']:,.0f} rows/s)" if name in ("extract", "validate") else ""
            cells.append(f"{s['seconds']:.1f}{extra} / {s['peak_mb']:,.0f}")
        lines.append(f"| {name.replace('train_comparison:', 'comparison: ')} | " + " | ".join(cells) + " |")
    lines.append("| production path (extract..promote; of the comparison models only target_only, the gate's reference), step time | "
                 + " | ".join(f"{r['production_seconds']:.0f}" for r in results) + " |")
    lines.append("| production path with process start and imports | "
                 + " | ".join(f"{r['production_process_seconds']:.0f}" for r in results) + " |")
    lines.append("| comparison models (one task each), step time | "
                 + " | ".join(f"{r['comparison_seconds']:.0f}" if r["comparisons"] else "not run" for r in results) + " |")
    lines.append("| full day, step time | " + " | ".join(
        f"{r['total_step_seconds']:.0f}" if r["comparisons"] else "-" for r in results) + " |")
    lines.append("| full day with process start and imports | " + " | ".join(
        f"{r['total_process_seconds']:.0f}" if r["comparisons"] else "-" for r in results) + " |")
    lines.append("| peak RSS of any task, MB | " + " | ".join(f"{r['peak_mb']:,.0f}" for r in results) + " |")
    if any("scheduler" in r for r in results):
        lines.append("| one day through the scheduler (task slots; comparison models at once) | " + " | ".join(
            f"{r['scheduler']['seconds']:.0f} ({r['scheduler']['slots']}; {r['scheduler']['comparison_models_at_once']})"
            if "scheduler" in r else "-" for r in results) + " |")
    if any("e2e_seconds" in r for r in results):
        lines.append("| one day through `airflow dags test` | "
                     + " | ".join(f"{r['e2e_seconds']:.0f}" if "e2e_seconds" in r else "-" for r in results) + " |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Cost growth: each task's seconds and peak memory against the day's rows (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5))
    names = list(dict.fromkeys(s["step"] for r in results for s in r["steps"]))
    for name in names:
        pts = [(r["rows"], s["seconds"], s["peak_mb"]) for r in results for s in r["steps"] if s["step"] == name]
        if len(pts) < 1:
            continue
        x, t, m = zip(*pts)
        label = name.replace("train_comparison:", "cmp:")
        ax_t.plot(x, t, marker="o", label=label)
        ax_m.plot(x, m, marker="o", label=label)
    x = [r["rows"] for r in results]
    key, label = (("production_seconds", "production path") if all("production_seconds" in r for r in results)
                  else ("day_seconds", "the day through the scheduler"))
    ax_t.plot(x, [r[key] for r in results], marker="s", color="black", linewidth=3, label=label)
    ax_m.axhline(3000, color="red", linestyle="--", label="3 GB goal")
    for ax, title, unit in ((ax_t, "time per task", "seconds"), (ax_m, "peak resident memory per task", "MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("entire-space rows of the day")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    ax_m.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 4_000_000])
    parser.add_argument("--conf", default="{}", help="JSON config overrides, as in --conf of a DAG run")
    parser.add_argument("--e2e", action="store_true", help="also time one day through `airflow dags test`")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--plot", type=Path, help="write the cost-growth PNG here (with --merge: from every JSON)")
    parser.add_argument("--merge", type=Path, nargs="+", help="no run: tabulate (and plot) earlier --json files "
                        "(all of --executors runs: a table of every task through the scheduler)")
    parser.add_argument("--no-comparisons", action="store_true",
                        help="only the production path: extract..promote with target_only (the gate's reference) "
                             "and no other comparison model")
    parser.add_argument("--warm", action="store_true",
                        help="measure a warm-start day: the day before (every step) runs first, unmeasured")
    parser.add_argument("--slots", type=int, default=0,
                        help="also time the day through the scheduler with this many task slots (the scheduler harness's "
                             "executor: ecat_tasks.warm_workers.WarmLocalExecutor)")
    parser.add_argument("--executors", nargs="+", metavar="EXECUTOR",
                        help="no steps: only the day through the scheduler (--slots, default 2), once per executor "
                             "class, over --repeats rounds of alternating order (e.g. LocalExecutor "
                             "ecat_tasks.warm_workers.WarmLocalExecutor: cold against warm workers)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of --executors")
    parser.add_argument("--until", metavar="STEP", help="no comparison models, no Airflow: the production steps of "
                        "one cold day up to STEP (e.g. graph_select), each step's time and exact peak RSS")
    parser.add_argument("--one-step", help=argparse.SUPPRESS)
    parser.add_argument("--ds", default=DS, help=argparse.SUPPRESS)
    parser.add_argument("--seed-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    conf = json.loads(args.conf)

    if args.seed_only:
        from ecat_tasks.synthetic import seed_warehouse

        t0 = time.perf_counter()
        first, days = (DS_BEFORE, 2) if args.warm else (DS, 1)
        seed_warehouse(Path(args.home) / "warehouse.duckdb", first, days, args.rows)
        print(json.dumps({"seconds": time.perf_counter() - t0,
                          "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    if args.one_step:
        print(json.dumps(run_one_step(args.one_step, args.ds, args.home, conf)))
        return

    if args.no_comparisons:
        conf = {**conf, "baselines": ["target_only"], "ablations": []}  # evaluate's gate needs target-only
    if args.until:
        with tempfile.TemporaryDirectory(prefix="ecat-bench-cost-") as tmp:
            steps = [{"rows": rows, **s} for rows in args.sizes for s in bench_until(rows, conf, Path(tmp), args.until)]
        if args.json:
            args.json.write_text(json.dumps(steps, indent=2))
        return
    if args.executors:
        compare_executors(args.sizes, conf, args.executors, args.slots or 2, args.warm, args.repeats, args.json)
        return
    merged = sorted((r for f in args.merge or [] for r in json.loads(f.read_text())), key=lambda r: r["rows"])
    if merged and all("executor" in r for r in merged):  # --executors runs: every task through the scheduler
        print(scheduler_table(merged))
        if args.plot:
            plot([scheduler_as_steps(r) for r in merged], args.plot)
        return
    if args.merge:
        results = merged
    else:
        with tempfile.TemporaryDirectory(prefix="ecat-bench-cost-") as tmp:
            results = []
            for rows in args.sizes:
                results.append(bench_size(rows, conf, Path(tmp), args.e2e and rows == 1_000_000, not args.no_comparisons,
                                          args.warm, args.slots))
                print(f"{rows:,} rows done: {results[-1]['total_step_seconds']:.0f}s of steps", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)
    print(f"machine: {os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}; conf {conf or 'defaults'}; "
          f"{'warm-start day (the day before ran first)' if args.warm else 'cold-start day'}")
    print(table(results))


if __name__ == "__main__":
    main()
