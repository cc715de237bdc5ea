"""evaluate: ECAT's student, the teacher, the baselines and the ablations on day ``ds``'s own slices.

Two slices of ``ds``'s target rows that no model trained on: the validation slice (what
promotion reads) and the cold-start holdout (users new to the mini-app, reported only). The
primary metric, next-day, is written into this report later by ``score_previous_day`` of
``ds + 1``; a rerun of ``ds`` keeps it when the models it scored are unchanged. Writes
``reports/ds=/`` (``ecat_tasks.report``) and one MLflow run per (ds, model), replaced on rerun.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ecat_tasks.config import EcatConfig
from ecat_tasks.inputs import eval_sets, served_decision
from ecat_tasks.metrics import all_metrics
from ecat_tasks.report import (
    METRICS_FILE, SERVED, checkpoint_checksum, guard_tags, load_scorer, model_dir, model_kind, newest_checkpoint_day,
    read_report, write_report,
)
from ecat_tasks.storage import MANIFEST, Layout, shift_ds
from ecat_tasks.tracking import log_model_metrics

log = logging.getLogger(__name__)


def models_to_evaluate(cfg: EcatConfig) -> list[str]:
    return ["ecat", "teacher", *cfg.baselines, *[f"ecat_{a}" for a in cfg.ablations]]


def trained_days(ds: str, cfg: EcatConfig, layout: Layout) -> dict[str, str | None]:
    """Day of the checkpoint each comparison model is scored with: ``ds`` when it trained today,
    else its newest earlier one (``compare_every_days`` > 1), None when it never trained."""
    return {name: newest_checkpoint_day(layout, name, ds) for name in models_to_evaluate(cfg)
            if name not in ("ecat", "teacher")}


def score_models(ds: str, cfg: EcatConfig, layout: Layout,
                 trained: dict[str, str | None] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """metrics[model][eval_set] for every configured model that has a checkpoint, and ``served`` (the
    guard's choice through its calibration: in-sample on the validation slice, which it was fitted on)."""
    sets = eval_sets(ds, cfg, layout)
    trained = trained_days(ds, cfg, layout) if trained is None else trained
    out: dict[str, dict[str, dict[str, float]]] = {}
    served = [SERVED] if (model_dir(layout, SERVED, ds) / MANIFEST).is_file() else []
    for name in models_to_evaluate(cfg) + served:
        if name in trained and trained[name] is None:
            log.warning("comparison model %s has no checkpoint on or before %s yet: not scored", name, ds)
            continue
        loaded = load_scorer(layout, name, trained.get(name) or ds)
        out[name] = {}
        for set_name, frame in sets.items():
            probs = loaded.score(frame, cfg.label)
            out[name][set_name] = all_metrics(frame["user_id"].to_numpy(), frame[cfg.label].to_numpy(), probs)
    return out


def guard_summary(ds: str, layout: Layout) -> dict[str, Any]:
    """The guard's decision for ``ds`` (served model, fallback, reason); ECAT when the guard did not run."""
    m = served_decision(ds, layout)
    if m is None:
        return {"served": "ecat", "kind": "ECAT", "fallback": False, "reason": "the guard did not run for this ds: ECAT served"}
    return {"served": m["served"], "kind": model_kind(m["served"]), "fallback": bool(m["fallback"]), "reason": m["reason"],
            "comparisons": m.get("comparisons", []), "excluded": m.get("excluded", {}),
            "calibration": m.get("calibration"),
            "validation_rows": m.get("validation_rows")}


def carry_over(old: dict[str, Any] | None, report: dict[str, Any]) -> list[str]:
    """Copy the next-day scores (and the promotion) of an earlier report of the same day into
    ``report`` where the checkpoint they were computed on is still the one evaluated now.
    Returns the models whose next-day scores were dropped as stale."""
    if not old:
        return []
    now, stale = report["checkpoints"], []
    nxt = old.get("next_day")
    if nxt:
        scored = nxt.get("checkpoints", {})
        same = {m for m, c in scored.items() if c is not None and now.get(m) == c}
        stale = sorted(set(scored) - same)
        for m in same:
            report["models"][m]["next_day"] = old["models"][m]["next_day"]
        if same:
            lift = {m: v for m, v in nxt.get("lift", {}).items() if m in same and "ecat" in same}
            report["next_day"] = {**nxt, "checkpoints": {m: scored[m] for m in same}, "lift": lift}
    promo = old.get("promotion")
    if promo and promo.get("checkpoint") == now.get(promo.get("served", "ecat")):
        report["promotion"] = promo
    return stale


def evaluate(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    layout = layout or Layout()
    t0 = time.perf_counter()
    trained = trained_days(ds, cfg, layout)
    metrics = score_models(ds, cfg, layout, trained)
    baselines = [b for b in cfg.baselines if b in metrics]
    best = max(baselines, key=lambda b: np.nan_to_num(metrics[b]["validation"]["auc"]), default=None)
    ecat = metrics["ecat"]["validation"]
    lift = {
        "slice": "validation", "ecat_auc": ecat["auc"], "ecat_gauc": ecat["gauc"], "best_baseline": best,
        "best_baseline_auc": metrics[best]["validation"]["auc"] if best else float("nan"),
        "auc_lift": ecat["auc"] - metrics[best]["validation"]["auc"] if best else float("nan"),
        "gauc_lift": ecat["gauc"] - metrics[best]["validation"]["gauc"] if best else float("nan"),
    }
    guard = guard_summary(ds, layout)
    served_auc = metrics.get(guard["served"], {}).get("validation", {}).get("auc", float("nan"))
    lift |= {"served": guard["served"], "served_auc": served_auc,
             "served_auc_lift": served_auc - lift["best_baseline_auc"] if best else float("nan")}
    report = {"ds": ds, "label": cfg.label, "models": metrics, "summary": lift, "parameters": cfg.to_dict(),
              "checkpoints": {m: checkpoint_checksum(layout, m, trained.get(m) or ds) for m in metrics},
              "comparison_trained_ds": trained, "guard": guard}
    stale = carry_over(read_report(layout, ds), report)
    if stale:
        log.warning("evaluate ds=%s: the next-day scores of %s were computed on checkpoints this rerun replaced: "
                    "dropped; clear score_previous_day for %s to score the new ones", ds, ", ".join(stale), shift_ds(ds, 1))
    out_dir = write_report(layout, ds, report, "evaluate")
    for model, sets in metrics.items():
        flat = {f"{s}_{k}": v for s, m in sets.items() for k, v in m.items()}
        log_model_metrics(cfg, layout.root, ds, model, flat, {"label": cfg.label, "seed": cfg.seed},
                          tags=guard_tags(guard) if model in ("ecat", guard["served"], SERVED) else None)
    prev = read_report(layout, shift_ds(ds, -1))
    prev_auc = (prev or {}).get("models", {}).get("ecat", {}).get("validation", {}).get("auc")
    if prev_auc is not None and ecat["auc"] < prev_auc - 0.02:
        log.warning("ECAT validation AUC dropped from %.4f (%s) to %.4f: check the day's data and the teacher",
                    prev_auc, shift_ds(ds, -1), ecat["auc"])
    hold = metrics["ecat"]["holdout"]
    secs = time.perf_counter() - t0
    log.info(
        "evaluate ds=%s: %d models; validation (%d rows): ECAT AUC %.4f GAUC %.4f, best baseline %s AUC %.4f, "
        "lift AUC %+.4f GAUC %+.4f; served %s (%s%s) AUC %.4f, %+.4f over the best baseline; cold-start holdout (%d rows): ECAT AUC %.4f; comparison models not trained "
        "today: %s%s; report %s in %.1fs",
        ds, len(metrics), ecat["rows"], ecat["auc"], ecat["gauc"], best, lift["best_baseline_auc"], lift["auc_lift"],
        lift["gauc_lift"], guard["served"], guard["kind"], ", guard FALLBACK" if guard["fallback"] else "", served_auc,
        lift["served_auc_lift"], hold["rows"], hold["auc"],
        ", ".join(f"{m} (last {d or 'never'})" for m, d in trained.items() if d != ds) or "none",
        "; next-day scores kept" if "next_day" in report else "", out_dir / "report.html", secs,
    )
    return {"ds": ds, "metrics_path": str(out_dir / METRICS_FILE), "report": str(out_dir / "report.html"),
            "ecat_auc": ecat["auc"], "ecat_gauc": ecat["gauc"], "holdout_auc": hold["auc"], "best_baseline": best,
            "auc_lift": lift["auc_lift"], "seconds": round(secs, 2)}
