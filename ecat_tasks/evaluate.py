"""evaluate: ECAT's student, the teacher, the baselines and the ablations on held-out target data.

The held-out set is the deterministic holdout of ``ds``'s target rows (never trained on) and,
when the next day's partition exists (backfills), that day's target rows too. Writes
``reports/ds=/metrics.json``, ``metrics.csv``, an HTML report with a PNG of AUC history per
model, and one MLflow run per (ds, model), replaced on rerun.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecat_tasks.config import EcatConfig
from ecat_tasks.inputs import target_day
from ecat_tasks.metrics import all_metrics
from ecat_tasks.models.continual import load_model
from ecat_tasks.storage import Layout, atomic_dir, clean_stale_tmp, shift_ds, write_manifest
from ecat_tasks.tracking import log_model_metrics

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def models_to_evaluate(cfg: EcatConfig) -> list[str]:
    return ["ecat", "teacher", *cfg.baselines, *[f"ecat_{a}" for a in cfg.ablations]]


def model_dir(layout: Layout, name: str, ds: str) -> Path:
    if name == "ecat":
        return layout.model("student", ds)
    if name.startswith("ecat_"):
        return layout.model(name[len("ecat_"):], ds)
    return layout.model(name, ds)


def eval_sets(ds: str, cfg: EcatConfig, layout: Layout) -> dict[str, pd.DataFrame]:
    split = target_day(ds, cfg, layout)
    return {"validation": split.validation, "holdout": split.holdout}


def score_models(ds: str, cfg: EcatConfig, layout: Layout) -> dict[str, dict[str, dict[str, float]]]:
    """metrics[model][eval_set] for every configured model."""
    sets = eval_sets(ds, cfg, layout)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in models_to_evaluate(cfg):
        loaded = load_model(layout.require(model_dir(layout, name, ds)))
        out[name] = {}
        for set_name, frame in sets.items():
            probs = loaded.score(frame, cfg.label)
            out[name][set_name] = all_metrics(frame["user_id"].to_numpy(), frame[cfg.label].to_numpy(), probs)
    return out


def history(layout: Layout, ds: str) -> pd.DataFrame:
    """Holdout AUC per model and day, from every metrics.json up to ``ds``."""
    rows = []
    for day in layout.existing_days("reports"):
        path = layout.report(day) / METRICS_FILE
        if day > ds or not path.is_file():
            continue
        for model, sets in json.loads(path.read_text())["models"].items():
            rows.append({"ds": day, "model": model, "auc": sets["holdout"]["auc"], "gauc": sets["holdout"]["gauc"]})
    return pd.DataFrame(rows, columns=["ds", "model", "auc", "gauc"])


def _plot(hist: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for model, part in hist.sort_values("ds").groupby("model"):
        style = dict(linewidth=3, color="black") if model == "ecat" else dict(linewidth=1.2, alpha=0.85)
        ax.plot(pd.to_datetime(part["ds"]), part["auc"], marker="o", label=model, **style)
    ax.set_title("Holdout AUC per model by day (target mini-app)")
    ax.set_xlabel("ds")
    ax.set_ylabel("AUC")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _html(ds: str, metrics: dict[str, Any], lift: dict[str, Any]) -> str:
    rows = []
    for model, sets in sorted(metrics.items(), key=lambda kv: -np.nan_to_num(kv[1]["holdout"]["auc"])):
        cells = "".join(
            f"<td>{sets[s][k]:.4f}</td>" if s in sets else "<td>-</td>"
            for s in ("holdout", "next_day") for k in ("auc", "gauc", "logloss", "calibration")
        )
        style = ' style="font-weight:bold"' if model == "ecat" else ""
        rows.append(f"<tr{style}><td>{html.escape(model)}</td>{cells}</tr>")
    head = "".join(f"<th>{s} {k}</th>" for s in ("holdout", "next_day") for k in ("AUC", "GAUC", "logloss", "calib."))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>ECAT report {ds}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}}
td:first-child{{text-align:left}}</style></head><body>
<h1>ECAT offline evaluation, ds={ds}</h1>
<p>ECAT holdout AUC {lift['ecat_auc']:.4f}, GAUC {lift['ecat_gauc']:.4f}; best baseline {html.escape(str(lift['best_baseline']))}
AUC {lift['best_baseline_auc']:.4f}; lift {lift['auc_lift']:+.4f}.</p>
<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>
<h2>AUC history</h2><img src="auc_history.png" alt="AUC history per model">
</body></html>"""


def evaluate(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    layout = layout or Layout()
    t0 = time.perf_counter()
    metrics = score_models(ds, cfg, layout)
    baselines = [b for b in cfg.baselines if b in metrics]
    best = max(baselines, key=lambda b: np.nan_to_num(metrics[b]["holdout"]["auc"]), default=None)
    ecat = metrics["ecat"]["holdout"]
    lift = {
        "ecat_auc": ecat["auc"], "ecat_gauc": ecat["gauc"], "best_baseline": best,
        "best_baseline_auc": metrics[best]["holdout"]["auc"] if best else float("nan"),
        "auc_lift": ecat["auc"] - metrics[best]["holdout"]["auc"] if best else float("nan"),
        "gauc_lift": ecat["gauc"] - metrics[best]["holdout"]["gauc"] if best else float("nan"),
    }
    report = {"ds": ds, "label": cfg.label, "models": metrics, "summary": lift, "parameters": cfg.to_dict()}
    out_dir = layout.report(ds)
    clean_stale_tmp(out_dir.parent)
    # The report partition also holds validate's output: carry it over into the new partition.
    with atomic_dir(out_dir) as tmp:
        if (out_dir / "validation").is_dir():
            import shutil

            shutil.copytree(out_dir / "validation", tmp / "validation")
        (tmp / METRICS_FILE).write_text(json.dumps(report, indent=1, default=float))
        with open(tmp / "metrics.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["ds", "model", "eval_set", "auc", "gauc", "logloss", "calibration", "rows"])
            for model, sets in metrics.items():
                for s, m in sets.items():
                    w.writerow([ds, model, s, m["auc"], m["gauc"], m["logloss"], m["calibration"], m["rows"]])
        hist = pd.concat([history(layout, shift_ds(ds, -1)),
                          pd.DataFrame([{"ds": ds, "model": m, "auc": v["holdout"]["auc"], "gauc": v["holdout"]["gauc"]}
                                        for m, v in metrics.items()])], ignore_index=True)
        _plot(hist, tmp / "auc_history.png")
        (tmp / "report.html").write_text(_html(ds, metrics, lift))
        write_manifest(tmp, "evaluate", ds, models=list(metrics), summary=lift)
    for model, sets in metrics.items():
        flat = {f"{s}_{k}": v for s, m in sets.items() for k, v in m.items()}
        log_model_metrics(cfg, layout.root, ds, model, flat, {"label": cfg.label, "seed": cfg.seed})
    prev = history(layout, shift_ds(ds, -1))
    prev_ecat = prev[prev["model"] == "ecat"].sort_values("ds")
    if len(prev_ecat) and ecat["auc"] < prev_ecat["auc"].iloc[-1] - 0.02:
        log.warning("ECAT AUC dropped from %.4f (%s) to %.4f: check the day's data and the teacher",
                    prev_ecat["auc"].iloc[-1], prev_ecat["ds"].iloc[-1], ecat["auc"])
    secs = time.perf_counter() - t0
    log.info(
        "evaluate ds=%s: %d models on %d holdout rows%s; ECAT AUC %.4f GAUC %.4f; best baseline %s AUC %.4f; "
        "lift AUC %+.4f GAUC %+.4f; report %s in %.1fs",
        ds, len(metrics), ecat["rows"], " + next day" if "next_day" in metrics["ecat"] else "", ecat["auc"], ecat["gauc"],
        best, lift["best_baseline_auc"], lift["auc_lift"], lift["gauc_lift"], out_dir / "report.html", secs,
    )
    return {"ds": ds, "metrics_path": str(out_dir / METRICS_FILE), "report": str(out_dir / "report.html"),
            "ecat_auc": ecat["auc"], "ecat_gauc": ecat["gauc"], "best_baseline": best, "auc_lift": lift["auc_lift"],
            "seconds": round(secs, 2)}
