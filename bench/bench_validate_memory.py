"""Peak memory (and time, as a ratio) of ``validate`` alone: this checkout against another, side by side.

    git worktree add --detach /tmp/validate-before <commit>
    python -m bench.bench_validate_memory --sizes 1000000 4000000 --before /tmp/validate-before
    python -m bench.bench_validate_memory --sizes 16000000          # this checkout only

For each size (entire-space rows of one day) a fresh ECAT_HOME gets a synthetic warehouse and
the day is extracted into staging once; then ``validate_day`` (the suites, the drift check and
the report; publishing is a rename and is left out, so every run reads the same staged day) runs
in a subprocess of each checkout in turn, before then after. Each child reports its own peak
resident set (``ru_maxrss``); the parent also samples the child's RSS (``/proc/<pid>/status``
every 0.2 s) as a check. Memory does not depend on machine load; seconds do, so only their
ratio within one run is meaningful.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DS = "2026-11-01"


def child(mode: str, home: str, rows: int, conf: dict[str, Any]) -> dict[str, Any]:
    """In a subprocess whose PYTHONPATH is one checkout: seed+extract, or validate the staged day."""
    from ecat_tasks.config import EcatConfig
    from ecat_tasks.storage import Layout

    cfg = EcatConfig.from_mapping(conf)
    layout = Layout(home)
    t0 = time.perf_counter()
    if mode == "prepare":
        import duckdb

        from ecat_tasks.extract import extract
        from ecat_tasks.synthetic import seed_warehouse

        seed_warehouse(Path(home) / "warehouse.duckdb", DS, 1, rows)
        with duckdb.connect(str(Path(home) / "warehouse.duckdb"), read_only=True) as con:
            extract(con, DS, cfg, layout)
        out: dict[str, Any] = {}
    else:
        from ecat_tasks.spec import spec_of
        from ecat_tasks.validate import validate_day

        manifest = validate_day(DS, cfg, layout, spec_of(cfg))
        out = {"rows": manifest["target_rows"] + manifest["source_rows"]}
    out.update(seconds=time.perf_counter() - t0, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def run_child(checkout: Path, mode: str, home: Path, rows: int, conf: dict[str, Any]) -> dict[str, Any]:
    """This script as a child importing ``checkout``'s ecat_tasks, sampling its RSS while it runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECAT_", "AIRFLOW"))}
    env.update(ECAT_HOME=str(home), PYTHONPATH=str(checkout), GX_ANALYTICS_ENABLED="false",
               DGLBACKEND="pytorch", MLFLOW_DISABLE_TELEMETRY="true")
    command = [sys.executable, __file__, "--child", mode, "--home", str(home), "--rows", str(rows), "--conf", json.dumps(conf)]
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a chatty child never blocks on a full pipe
        proc = subprocess.Popen(command, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        sampled = 0.0
        while proc.poll() is None:
            sampled = max(sampled, _rss_mb(proc.pid))
            time.sleep(0.2)
        stdout = proc.stdout.read() if proc.stdout else ""
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{mode} in {checkout} failed:\n{err.read()[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["sampled_peak_mb"] = sampled
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--before", type=Path, help="another checkout (e.g. a worktree of main before the change)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--conf", default="{}", help="JSON config overrides for 'after' (e.g. validate_chunk_rows)")
    parser.add_argument("--child", choices=["prepare", "validate"], help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.home, args.rows, json.loads(args.conf))))
        return

    checkouts = ([("before", args.before.resolve())] if args.before else []) + [("after", ROOT)]
    results = []
    with tempfile.TemporaryDirectory(prefix="ecat-bench-validate-") as tmp:
        for rows in args.sizes:
            home = Path(tmp) / f"home_{rows}"
            prepared = run_child(ROOT, "prepare", home, rows, {})
            print(f"{rows:,} rows seeded and extracted in {prepared['seconds']:.0f}s", file=sys.stderr)
            row = {"rows": rows}
            for name, checkout in checkouts:
                row[name] = run_child(checkout, "validate", home, rows, json.loads(args.conf) if name == "after" else {})
                print(f"{rows:,} rows, {name}: {row[name]}", file=sys.stderr)
            results.append(row)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"machine: {os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}; after's conf {args.conf}")
    names = [n for n, _ in checkouts]
    print("| rows | " + " | ".join(f"{n}: peak MB (sampled) / s" for n in names)
          + (" | after / before: memory, time |" if args.before else " |"))
    print("|---|" + "---|" * (len(names) + bool(args.before)))
    for r in results:
        cells = [f"{r[n]['peak_mb']:,.0f} ({r[n]['sampled_peak_mb']:,.0f}) / {r[n]['seconds']:.0f}" for n in names]
        if args.before:
            cells.append(f"{r['after']['peak_mb'] / r['before']['peak_mb']:.2f}, "
                         f"{r['after']['seconds'] / r['before']['seconds']:.2f}")
        print(f"| {r['rows']:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
