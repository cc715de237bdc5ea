"""CLI: every evaluated day at a glance (``python -m ecat_tasks.summary``).

Primary: next-day AUC, GAUC and logloss (the models of ``ds`` on the target rows of the day
after but its validation slice, written by that day's scoring); secondary: the cold-start holdout of ``ds``. Then
ECAT's lift over each model per day (paired bootstrap over users, from ``metrics.json``) and
pooled over every day that has next-day scores: the pooled interval needs the per-row scores,
so the checkpoints are scored again on the next day's rows, and only where their checksums are
those the day's report scored (``--no-pooled`` skips it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecat_tasks.storage import Layout

if TYPE_CHECKING:
    from ecat_tasks.config import EcatConfig

METRICS = ("auc", "gauc", "logloss")


def _reports(layout: Layout) -> list[dict[str, Any]]:
    out = []
    for day in layout.existing_days("reports"):
        path = layout.report(day) / "metrics.json"
        if path.is_file():
            out.append(json.loads(path.read_text()))
    return out


def _f(m: dict[str, Any] | None, key: str) -> str:
    return "-" if not m or m.get(key) is None or not np.isfinite(m[key]) else f"{m[key]:.4f}"


def verdict(lift: dict[str, Any]) -> str:
    return "ECAT ahead" if lift["ahead"] else "ECAT behind" if lift["behind"] else "not separated"


def _interval(lift: dict[str, Any]) -> str:
    return f"{lift['lift']:+.4f} [{lift['lo']:+.4f}, {lift['hi']:+.4f}]"


def _order(report: dict[str, Any]) -> list[str]:
    """ECAT first, then by next-day AUC (cold-start AUC where the day has no next day)."""
    def key(item: tuple[str, dict[str, Any]]) -> tuple[bool, float]:
        name, sets = item
        m = sets.get("next_day") or sets.get("holdout") or {}
        return name != "ecat", -float(np.nan_to_num(m.get("auc", np.nan), nan=-1.0))
    return [name for name, _ in sorted(report["models"].items(), key=key)]


def metrics_table(layout: Layout) -> list[str]:
    """Markdown rows: per day and model, next-day metrics (with the AUC's 95% band) and cold start."""
    lines = ["| ds | scored on | model | next-day AUC [95%] | next-day GAUC | next-day logloss | cold-start AUC "
             "| cold-start GAUC | cold-start logloss |", "|---|---|---|---|---|---|---|---|---|"]
    for report in _reports(layout):
        scored_on = (report.get("next_day") or {}).get("ds", "-")
        for model in _order(report):
            sets = report["models"][model]
            nxt, cold = sets.get("next_day"), sets.get("holdout")
            band = f" [{nxt['auc_lo']:.4f}, {nxt['auc_hi']:.4f}]" if nxt and "auc_lo" in nxt else ""
            auc = _f(nxt, "auc") + (band if nxt else "")
            lines.append(f"| {report['ds']} | {scored_on} | {model} | {auc} | {_f(nxt, 'gauc')} | {_f(nxt, 'logloss')} "
                         f"| {_f(cold, 'auc')} | {_f(cold, 'gauc')} | {_f(cold, 'logloss')} |")
    return lines


def served_table(layout: Layout) -> list[str]:
    """Markdown rows: per day, the model the guard served (ECAT, an ablation, a baseline or the
    teacher), its validation AUC (what the guard decided on) and its next-day scores."""
    from ecat_tasks.report import model_kind

    from ecat_tasks.report import SERVED, guard_tags

    lines = ["| ds | served | kind | validation AUC | next-day AUC | next-day logloss (calibrated) | calibration "
             "| guard's reason |", "|---|---|---|---|---|---|---|---|"]
    for report in _reports(layout):
        guard = report.get("guard") or {"served": "ecat", "fallback": False, "reason": "the guard did not run"}
        sets = report["models"].get(SERVED) or report["models"].get(guard["served"], {})
        lines.append(f"| {report['ds']} | {guard['served']} | {model_kind(guard['served'])} "
                     f"| {_f(sets.get('validation'), 'auc')} | {_f(sets.get('next_day'), 'auc')} "
                     f"| {_f(sets.get('next_day'), 'logloss')} | {guard_tags(guard)['calibration'].replace('|', '/')} "
                     f"| {guard['reason'].replace('|', '/')} |")
    return lines


def lift_table(layout: Layout) -> list[str]:
    """Markdown rows: ECAT's next-day lift over each model per day, as ``metrics.json`` holds it."""
    lines = ["| ds | vs model | ΔAUC [95%] | ΔGAUC [95%] | Δlogloss [95%] | AUC verdict |", "|---|---|---|---|---|---|"]
    for report in _reports(layout):
        for model, lift in ((report.get("next_day") or {}).get("lift") or {}).items():
            lines.append(f"| {report['ds']} | {model} | " + " | ".join(_interval(lift[k]) for k in METRICS)
                         + f" | {verdict(lift['auc'])} |")
    return lines


def next_day_scores(layout: Layout, checkpoints: dict[str, str], next_ds: str,
                    cfg: EcatConfig) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Users and labels of ``next_ds``'s next-day rows (:func:`ecat_tasks.inputs.next_day_rows`, sliced
    by ``cfg``) and each model's scores of them; ``checkpoints``: model -> the day of its checkpoint
    (``report.scorable_models``)."""
    from ecat_tasks.inputs import next_day_rows
    from ecat_tasks.report import load_scorer

    frame = next_day_rows(next_ds, cfg, layout)
    scores = {m: np.asarray(load_scorer(layout, m, day).score(frame, cfg.label), np.float64) for m, day in checkpoints.items()}
    return frame["user_id"].to_numpy(), frame[cfg.label].to_numpy(), scores


def report_config(report: dict[str, Any]) -> EcatConfig:
    """The label and slice settings a day's report recorded (what its next-day rows are cut by)."""
    from ecat_tasks.config import EcatConfig
    from ecat_tasks.splits import SLICE_SETTINGS

    ran = report.get("parameters") or {}
    return EcatConfig.from_mapping({"label": report["label"], **{k: ran[k] for k in SLICE_SETTINGS if k in ran}}, env={})


def pooled_lifts(layout: Layout, n_resamples: int = 1000, seed: int = 0) -> tuple[list[str], dict[str, Any], list[str]]:
    """(days pooled, model -> lift, notes): ECAT over each model, pooled over the days with next-day
    scores whose checkpoints are unchanged since they were scored."""
    from ecat_tasks.metrics import pooled_bootstrap_lift
    from ecat_tasks.report import checkpoint_checksum, scorable_models

    days, groups, notes = [], [], []
    models: set[str] | None = None
    for report in _reports(layout):
        nxt = report.get("next_day")
        if not nxt or "ecat" not in (nxt.get("checkpoints") or {}):
            continue
        names = list(nxt["checkpoints"])
        trained = scorable_models(layout, report["ds"])  # comparison models: their newest checkpoint
        stale = [m for m in names if m not in trained
                 or checkpoint_checksum(layout, m, trained[m]) != nxt["checkpoints"][m]]
        if stale:
            notes.append(f"{report['ds']} left out: checkpoints of {', '.join(stale)} changed since they were scored "
                         f"on {nxt['ds']} (rerun {nxt['ds']}'s scoring)")
            continue
        users, labels, scores = next_day_scores(layout, {m: trained[m] for m in names}, nxt["ds"], report_config(report))
        days.append(report["ds"])
        groups.append((users, labels, scores))
        models = set(names) if models is None else models & set(names)
    out = {}
    for model in sorted((models or set()) - {"ecat"}):
        out[model] = pooled_bootstrap_lift([(u, y, s["ecat"], s[model]) for u, y, s in groups], n_resamples, seed)
    return days, out, notes


def pooled_table(days: list[str], lifts: dict[str, Any], notes: list[str]) -> list[str]:
    if not lifts:
        return ["(no day with next-day scores of ECAT yet)", *notes]
    lines = [f"Pooled over {len(days)} day(s) ({', '.join(days)}): each resample draws every day's users and "
             "averages the per-day lifts.", "",
             "| vs model | ΔAUC [95%] | AUC verdict | ΔGAUC [95%] | GAUC verdict | Δlogloss [95%] | logloss verdict |",
             "|---|---|---|---|---|---|---|"]
    for model, lift in lifts.items():
        lines.append(f"| {model} | " + " | ".join(f"{_interval(lift[k])} | {verdict(lift[k])}" for k in METRICS) + " |")
    return lines + notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="ECAT_HOME (default: the environment's)")
    parser.add_argument("--no-pooled", action="store_true", help="skip the pooled lift (it scores checkpoints again)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the pooled lift")
    args = parser.parse_args(argv)
    layout = Layout(args.home)
    out = [f"Outputs under {layout.root}: lake/, selection/, models/, reports/ (report.html per day), mlflow.db", "",
           "Next day (primary: the models of ds on the target rows of the day after but its validation slice) and cold start (secondary: "
           "ds's held-out users)", "", *metrics_table(layout), "",
           "Served model per day (the negative-transfer guard's choice on the validation slice)", "",
           *served_table(layout), "",
           "ECAT's next-day lift over each model per day (paired bootstrap over users; logloss: model − ECAT, "
           "positive = ECAT better)", "", *lift_table(layout)]
    if not args.no_pooled:
        out += ["", "ECAT's next-day lift pooled over days", "", *pooled_table(*pooled_lifts(layout, args.resamples))]
    print("\n".join(out))


if __name__ == "__main__":
    main()
