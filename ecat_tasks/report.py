"""A day's report partition ``reports/ds=D``: metrics.json, metrics.csv, report.html, the plot.

Three tasks write into a day's report, each rewriting the whole partition atomically and
carrying over what the others wrote: ``evaluate`` (day D, the validation slice and the
cold-start holdout), ``promote`` (day D, the gate's decision) and ``score_previous_day`` of
D+1 (the next-day metrics of D's models, the lift of ECAT over each, the champion check and
any rollback). ``metrics.json``::

    {"ds", "label", "parameters",
     "models": {model: {"validation": m, "holdout": m, "next_day": m}},   m = all_metrics(...)
     "checkpoints": {model: checksum of the checkpoint evaluated},
     "summary": {...},                                  # ECAT vs the best baseline, validation slice
     "guard": {"served", "fallback", "reason", "comparisons"},  # the model served and promoted today
     "promotion": {"promoted", "served", "version", "replaced_version", "reason"},
     "next_day": {"ds": D+1, "rows", "users", "checkpoints", "lift": {model: lift},
                  "champion_check": {"decision", "reason", ...}}}

``next_day`` entries of ``models`` also carry ``auc_lo``/``auc_hi`` (95% bootstrap band);
``lift`` is ECAT over each model (:func:`ecat_tasks.metrics.paired_bootstrap_lift`).
"""

from __future__ import annotations

import csv
import html
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecat_tasks.config import ABLATIONS
from ecat_tasks.storage import MANIFEST, Layout, atomic_dir, clean_stale_tmp, read_manifest, write_manifest

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PLOT_FILE = "auc_history.png"
SETS = ("next_day", "validation", "holdout")
SERVED = "served"  # the report's row of the model the guard serves, its calibration applied
CARRIED_DIRS = ("validation",)  # validate's output lives in the same partition


def model_dir(layout: Layout, name: str, ds: str) -> Path:
    """Checkpoint directory of a reported model name (``ecat``, ``teacher``, a baseline, ``ecat_<ablation>``)."""
    if name == "ecat":
        return layout.model("student", ds)
    if name.startswith("ecat_"):
        return layout.model(name[len("ecat_"):], ds)
    return layout.model(name, ds)


def model_kind(name: str) -> str:
    """What a reported model is: ``ECAT`` (the student), ``ablation``, ``teacher``, ``baseline``, or
    ``served`` (the guard's choice of the day through its calibration)."""
    if name in ("teacher", SERVED):
        return name
    return "ECAT" if name == "ecat" else "ablation" if name.startswith("ecat_") else "baseline"


def served_choice(layout: Layout, ds: str) -> tuple[str, Any]:
    """The model the guard serves on ``ds`` and the :class:`Calibration` fitted for it (``models/served/ds=``)."""
    from ecat_tasks.models.calibration import CALIBRATION_FILE, Calibration, read_calibration

    served_dir = layout.require(model_dir(layout, SERVED, ds))
    path = served_dir / CALIBRATION_FILE
    return (read_manifest(served_dir)["served"],
            read_calibration(path) if path.is_file() else Calibration(reason="no calibration recorded"))


def load_scorer(layout: Layout, name: str, ds: str) -> Any:
    """What scores a reported model of ``ds`` (``.score(frame, label)``): its checkpoint; for ``served``,
    the checkpoint of the guard's choice with the calibration fitted for it (:func:`served_choice`)."""
    from ecat_tasks.models.continual import load_model

    if name != SERVED:
        return load_model(layout.require(model_dir(layout, name, ds)))
    from ecat_tasks.models.calibration import CalibratedModel

    chosen, cal = served_choice(layout, ds)
    return CalibratedModel(load_model(layout.require(model_dir(layout, chosen, ds))), cal)


def guard_tags(guard: dict[str, Any]) -> dict[str, str]:
    """MLflow tags of the guard's decision (ECAT's run, the served model's run, the registered version)."""
    cal = guard.get("calibration") or {}
    return {"served": str(guard["served"]), "served_kind": model_kind(str(guard["served"])),
            "guard_fallback": str(bool(guard["fallback"])).lower(),
            "guard_reason": str(guard["reason"])[:5000],
            "calibration": (f"slope={cal['slope']:.6f} intercept={cal['intercept']:.6f}" if cal.get("fitted")
                            else f"identity: {cal.get('reason', 'not recorded')}")[:5000]}


def newest_checkpoint_day(layout: Layout, name: str, ds: str) -> str | None:
    """Day of the newest checkpoint of ``name`` on or before ``ds`` (comparison models train
    every ``compare_every_days`` days; in between the newest one stands for them)."""
    area = model_dir(layout, name, ds).parent.relative_to(layout.root).as_posix()
    return layout.latest_on_or_before(area, ds)


def scorable_models(layout: Layout, ds: str) -> dict[str, str]:
    """Every model that can be scored as ``ds``'s: ECAT, the teacher and the served model (the guard's
    choice, calibrated) of ``ds``, and each comparison model's newest checkpoint on or before ``ds``
    (name -> its day)."""
    out = {n: ds for n in ("ecat", "teacher", SERVED) if (model_dir(layout, n, ds) / MANIFEST).is_file()}
    base = layout.root / "models" / "baselines"
    if base.is_dir():
        for d in sorted(p.name for p in base.iterdir() if p.is_dir()):
            name = f"ecat_{d}" if d in ABLATIONS else d
            day = newest_checkpoint_day(layout, name, ds)
            if day is not None:
                out[name] = day
    return out


def checkpoint_checksum(layout: Layout, name: str, ds: str) -> str | None:
    path = model_dir(layout, name, ds)
    return read_manifest(path).get("checksum") if (path / MANIFEST).is_file() else None


def read_report(layout: Layout, ds: str) -> dict[str, Any] | None:
    path = layout.report(ds) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_report(layout: Layout, ds: str, report: dict[str, Any], task: str) -> Path:
    """Replace ``reports/ds=`` with ``report`` (json, csv, html, plot), keeping validate's output."""
    out_dir = layout.report(ds)
    clean_stale_tmp(out_dir.parent)
    with atomic_dir(out_dir) as tmp:
        for name in CARRIED_DIRS:
            if (out_dir / name).is_dir():
                shutil.copytree(out_dir / name, tmp / name)
        (tmp / METRICS_FILE).write_text(json.dumps(report, indent=1, default=float))
        with open(tmp / "metrics.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["ds", "model", "eval_set", "auc", "gauc", "logloss", "calibration", "rows", "auc_lo", "auc_hi"])
            for model, sets in report.get("models", {}).items():
                for s, m in sets.items():
                    w.writerow([ds, model, s, m["auc"], m["gauc"], m["logloss"], m["calibration"], m["rows"],
                                m.get("auc_lo", ""), m.get("auc_hi", "")])
        hist = next_day_history(layout, ds, report)
        plot_history(hist, tmp / PLOT_FILE)
        (tmp / "report.html").write_text(render_html(ds, report))
        write_manifest(tmp, task, ds, models=sorted(report.get("models", {})),
                       next_day=report.get("next_day", {}).get("ds"))
    return out_dir


def next_day_history(layout: Layout, ds: str, current: dict[str, Any] | None = None) -> pd.DataFrame:
    """Next-day AUC (and its band) per model and model day, from every report up to ``ds``."""
    rows = []
    for day in sorted(set(layout.existing_days("reports")) | {ds}):
        if day > ds:
            continue
        report = current if day == ds and current is not None else read_report(layout, day)
        for model, sets in (report or {}).get("models", {}).items():
            nd = sets.get("next_day")
            if nd:
                rows.append({"ds": day, "model": model, "auc": nd["auc"], "lo": nd.get("auc_lo", np.nan),
                             "hi": nd.get("auc_hi", np.nan)})
    return pd.DataFrame(rows, columns=["ds", "model", "auc", "lo", "hi"])


def plot_history(hist: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # a dozen models: no two share a colour
    if hist.empty:
        ax.text(0.5, 0.5, "no next-day scores yet: a day's models are scored when the next day runs",
                ha="center", va="center", transform=ax.transAxes)
    for model, part in hist.sort_values("ds").groupby("model"):
        x = pd.to_datetime(part["ds"])
        style = dict(linewidth=3, color="black", zorder=5) if model == "ecat" else dict(linewidth=1.2, alpha=0.85)
        line, = ax.plot(x, part["auc"], marker="o", label=model, **style)
        ax.fill_between(x, part["lo"], part["hi"], color=line.get_color(), alpha=0.12, linewidth=0)
    ax.set_title("Next-day AUC of each day's models (95% bootstrap band over users)")
    ax.set_xlabel("model day (scored on the following day's target rows)")
    ax.set_ylabel("AUC")
    ax.xaxis.set_major_locator(mdates.DayLocator())
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    ax.grid(alpha=0.3)
    if not hist.empty:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _f(x: Any, spec: str = ".4f") -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def _interval(d: dict[str, Any]) -> str:
    return f"{_f(d['lift'], '+.4f')} [{_f(d['lo'], '+.4f')}, {_f(d['hi'], '+.4f')}]"


def _verdict(d: dict[str, Any]) -> str:
    return "ahead" if d.get("ahead") else "behind" if d.get("behind") else "no clear difference"


def render_html(ds: str, report: dict[str, Any]) -> str:
    models = report.get("models", {})
    nxt = report.get("next_day") or {}
    parts = [f"<h1>ECAT offline evaluation, models of ds={html.escape(ds)}</h1>"]

    promo = report.get("promotion")
    check = nxt.get("champion_check")
    decision = []
    if promo:
        word = "PROMOTED" if promo.get("promoted") else "not promoted"
        decision.append(f"<p><b>Promotion on {html.escape(ds)}</b> (validation slice): {word}"
                        f"{' version ' + html.escape(str(promo['version'])) if promo.get('version') else ''}"
                        f"{' replacing version ' + html.escape(str(promo['replaced_version'])) if promo.get('replaced_version') else ''}"
                        f": {html.escape(str(promo.get('reason', '')))}</p>")
    if check:
        style = ' style="color:#b00020;font-weight:bold"' if check["decision"] == "rolled_back" else ""
        decision.append(f"<p{style}><b>Next-day check on {html.escape(str(nxt.get('ds')))}</b>: "
                        f"{html.escape(check['decision'].replace('_', ' ').upper())}: {html.escape(check['reason'])}</p>")
    guard = report.get("guard")
    if guard:
        kind = f"{model_kind(str(guard['served']))}; FALLBACK: ECAT not served" if guard.get("fallback") else "ECAT"
        cal = guard_tags(guard)["calibration"]
        decision.append(f"<p><b>Served model: {html.escape(str(guard['served']))}</b> ({kind}; negative-transfer guard, "
                        f"validation slice): {html.escape(str(guard.get('reason', '')))}. Its probabilities are "
                        f"calibrated (row <code>served</code>): {html.escape(cal)}</p>")
    parts += decision or ["<p>No promotion decision recorded for this day yet.</p>"]

    if nxt:
        parts.append(f"<h2>Next day (primary): scored on ds={html.escape(str(nxt['ds']))}, {nxt['rows']} target rows "
                     f"(its validation slice left out: the guard decides on it), {nxt['users']} users; ECAT's lift over each model, 95% paired bootstrap over users</h2>")
        rows = []
        for model, sets in sorted(models.items(), key=lambda kv: -np.nan_to_num(kv[1].get("next_day", {}).get("auc", np.nan))):
            nd = sets.get("next_day")
            if not nd:
                continue
            lift = nxt.get("lift", {}).get(model)
            cells = [f"{_f(nd['auc'])} [{_f(nd.get('auc_lo'))}, {_f(nd.get('auc_hi'))}]", _f(nd["gauc"]), _f(nd["logloss"])]
            cells += ([_interval(lift["auc"]), _verdict(lift["auc"]), _interval(lift["gauc"]), _interval(lift["logloss"])]
                      if lift else ["(ECAT)" if model == "ecat" else "-", "", "", ""])
            style = ' style="font-weight:bold"' if model == "ecat" else ""
            rows.append(f"<tr{style}><td>{html.escape(model)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("<table><tr><th>model</th><th>AUC [95%]</th><th>GAUC</th><th>logloss</th>"
                     "<th>ECAT AUC lift [95%]</th><th>ECAT is</th><th>ECAT GAUC lift [95%]</th>"
                     "<th>ECAT logloss gain [95%]</th></tr>" + "".join(rows) + "</table>")
    else:
        parts.append("<h2>Next day (primary)</h2><p>Not scored yet: these models are scored on the next day's "
                     "target rows when that day's run starts (task score_previous_day).</p>")

    stale = {m: d for m, d in report.get("comparison_trained_ds", {}).items() if d != ds}
    if stale:
        parts.append("<p>Comparison models not trained on this day (<code>compare_every_days</code>), scored with their "
                     "newest checkpoint: " + html.escape(", ".join(f"{m} trained {d or 'never'}" for m, d in stale.items()))
                     + "</p>")
    parts.append(f'<h2>Next-day AUC over days</h2><img src="{PLOT_FILE}" alt="next-day AUC per model by day">')

    for set_name, title in (("validation", "Validation slice (the only slice decisions read)"),
                            ("holdout", "Cold-start holdout (secondary: users new to the mini-app)")):
        rows = []
        for model, sets in sorted(models.items(), key=lambda kv: -np.nan_to_num(kv[1].get(set_name, {}).get("auc", np.nan))):
            m = sets.get(set_name)
            if m:
                style = ' style="font-weight:bold"' if model == "ecat" else ""
                rows.append(f"<tr{style}><td>{html.escape(model)}</td>" + "".join(
                    f"<td>{_f(m[k])}</td>" for k in ("auc", "gauc", "logloss", "calibration")) + f"<td>{m['rows']}</td></tr>")
        if rows:
            note = ("<p><code>served</code> is calibrated on these validation rows: its logloss here is "
                    "in-sample.</p>" if set_name == "validation" and SERVED in models else "")
            parts.append(f"<h2>{title}</h2><table><tr><th>model</th><th>AUC</th><th>GAUC</th><th>logloss</th>"
                         f"<th>calib.</th><th>rows</th></tr>{''.join(rows)}</table>{note}")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>ECAT report {html.escape(ds)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}}
td:first-child{{text-align:left}}</style></head><body>
{''.join(parts)}
</body></html>"""
