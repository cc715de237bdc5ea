"""CLI: the metrics table of every evaluated day (``python -m ecat_tasks.summary``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ecat_tasks.storage import Layout


def metrics_table(layout: Layout) -> list[str]:
    """Markdown rows: per day and model, holdout AUC / GAUC (and next-day AUC when present)."""
    lines = ["| ds | model | AUC | GAUC | logloss | next-day AUC |", "|---|---|---|---|---|---|"]
    for day in layout.existing_days("reports"):
        path = layout.report(day) / "metrics.json"
        if not path.is_file():
            continue
        models = json.loads(path.read_text())["models"]
        for model, sets in sorted(models.items(), key=lambda kv: -kv[1]["holdout"]["auc"]):
            h, n = sets["holdout"], sets.get("next_day")
            nxt = f"{n['auc']:.4f}" if n else "-"
            lines.append(f"| {day} | {model} | {h['auc']:.4f} | {h['gauc']:.4f} | {h['logloss']:.4f} | {nxt} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=None, help="ECAT_HOME (default: the environment's)")
    args = parser.parse_args(argv)
    layout = Layout(args.home)
    print(f"Outputs under {layout.root}: lake/, selection/, models/, reports/ (report.html per day), mlflow.db")
    print("\n".join(metrics_table(layout)))


if __name__ == "__main__":
    main()
