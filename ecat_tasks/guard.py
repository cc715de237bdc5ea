"""guard: the negative-transfer guard -- which model the pipeline serves and promotes today.

ECAT's transfer can hurt (a source that disagrees with the mini-app, a shifted day). Each day
the guard compares ECAT's student with every comparison model that trained *today* -- the
configured baselines, the teacher of the day and the ECAT ablations -- on the *validation*
users only (never trained on, on any day; their target rows of the last ``guard_window_days``
days of the lookback window). A comparison model on a ``compare_every_days`` cadence that did
not train today is not a candidate: it would serve a stale checkpoint; nor is one left out of
``guard_candidates``: by default the baselines and the teacher, not the ablations, which still
train and are reported (fewer candidates, less winner's curse: chosen by a cross-fit on the
validation slice, ``bench/guard_rules.py``, bench/RESULTS.md issue 14).

Candidates are taken simplest first (``CANDIDATES``: target-only, the source-using baselines, the
teacher, the teacher fine-tuned, ECAT without one component, ECAT last); ``guard_rule`` says when
one replaces the current choice, given its paired-bootstrap AUC lift over it (95% interval over users):

- ``margin``: the simplest candidate starts; a more complex one replaces the current choice when its
  lift is ahead (the interval excludes 0) or its point lift exceeds ``guard_margin``. The served
  model trails the best candidate by at most ``guard_margin`` in validation AUC -- but with a dozen
  candidates and a few hundred validation rows the point-best is partly noise (winner's curse).
- ``evidence``: ECAT, the model the pipeline exists for, starts as the choice; a candidate (simplest
  first) replaces the current choice only when its lift is ahead *and* above ``guard_margin``. A
  noisy point-best does not move it; a day where the source hurts (ECAT behind beyond the noise)
  still falls back, to the simplest candidate ahead, and a more complex one must then be ahead of it.
- ``se_margin``: as ``evidence``, but the lift must exceed ``guard_margin`` plus one bootstrap
  standard error (the interval's half-width / 1.96): a margin that grows with the noise.

A candidate with non-finite or constant scores is left out, with its reason.
``models/served/ds=`` holds the decision (served model, reason, every comparison) in its
manifest; evaluate puts it in the report and the MLflow tags, promote registers the served
model's checkpoint. The served model's calibration (:mod:`ecat_tasks.models.calibration`),
fitted on the same validation rows, goes into the manifest and ``calibration.json`` there:
every use of the served model's probabilities (``served`` in the reports, the registry) applies it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ecat_tasks.config import EcatConfig
from ecat_tasks.inputs import days_sliced_as_today, validation_window, window_days
from ecat_tasks.metrics import all_metrics, paired_bootstrap_lift
from ecat_tasks.models.calibration import CALIBRATION_FILE, Calibration, fit_calibration
from ecat_tasks.models.continual import load_model
from ecat_tasks.report import checkpoint_checksum, model_dir, model_kind
from ecat_tasks.splits import SLICE_SETTINGS
from ecat_tasks.storage import MANIFEST, Layout, atomic_dir, clean_stale_tmp, write_manifest

log = logging.getLogger(__name__)

SERVED_AREA = "served"
GUARD_RULES = ("margin", "evidence", "se_margin")  # EcatConfig.guard_rule's enum
# simplest first: target rows only; target plus source (unweighted, with the scenario, pre-train then
# fine-tune, multi-scenario); the teacher, then fine-tuned on the target; ECAT without one component; ECAT
CANDIDATES = ("target_only", "mixed", "mixed_scenario", "finetune", "star", "teacher", "teacher_finetune",
              "ecat_no_kd", "ecat_no_graph", "ecat_no_weights", "ecat_no_teacher_init", "ecat_teacher_init", "ecat_fixed_kd", "ecat_no_scenario", "ecat")


@dataclass
class GuardDecision:
    served: str
    reason: str
    rule: str = "margin"
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)  # candidate -> why it could not be compared

    @property
    def fallback(self) -> bool:
        return self.served != "ecat"


def unusable(scores: np.ndarray, metrics: dict[str, float]) -> str | None:
    """Why a candidate's validation scores cannot be compared (None when they can)."""
    if not np.isfinite(scores).all():
        return "non-finite scores"
    if np.ptp(scores) == 0:
        return "constant scores"
    if not np.isfinite(metrics["auc"]):
        return "undefined AUC"
    return None


def switches(rule: str, lift: dict[str, Any], margin: float) -> bool:
    """Whether a challenger with this bootstrap AUC ``lift`` over the current choice replaces it under ``rule``."""
    if rule == "margin":
        return bool(lift["ahead"] or lift["lift"] > margin)
    if rule == "evidence":
        return bool(lift["ahead"] and lift["lift"] > margin)
    if rule == "se_margin":
        se = (lift["hi"] - lift["lo"]) / (2 * 1.96)
        return bool(np.isfinite(se) and lift["lift"] > margin + se)
    raise ValueError(f"unknown guard rule {rule!r}: one of {', '.join(GUARD_RULES)}")


def decide(users: np.ndarray, labels: np.ndarray, scores: dict[str, np.ndarray], margin: float,
           n_resamples: int = 1000, seed: int = 0, rule: str = "margin") -> GuardDecision:
    """Pure decision over candidates given simplest first (``scores`` in that order, ECAT last) under ``rule``."""
    if rule not in GUARD_RULES:
        raise ValueError(f"unknown guard rule {rule!r}: one of {', '.join(GUARD_RULES)}")
    names = list(scores)
    if not names:
        raise ValueError("the guard needs at least one candidate model")
    scores = {n: np.asarray(s, np.float64) for n, s in scores.items()}
    metrics = {n: all_metrics(users, labels, np.nan_to_num(s, nan=0.5)) for n, s in scores.items()}
    if len(np.unique(labels)) < 2:
        return GuardDecision("ecat" if "ecat" in scores else names[-1],
                             "validation rows hold one label class: nothing to compare, ECAT served", rule, [], metrics)
    excluded = {n: why for n in names if (why := unusable(scores[n], metrics[n])) is not None}
    left = [n for n in names if n not in excluded]
    dropped = "; left out: " + ", ".join(f"{n} ({why})" for n, why in excluded.items()) if excluded else ""
    if not left:
        return GuardDecision("ecat" if "ecat" in scores else names[-1],
                             f"no candidate has a defined validation AUC: ECAT served{dropped}", rule, [], metrics,
                             excluded)
    if rule != "margin" and "ecat" in left:  # ECAT is the incumbent; the others challenge it simplest first
        left = ["ecat", *(n for n in left if n != "ecat")]
    current = left[0]
    comparisons = []
    for challenger in left[1:]:
        lift = paired_bootstrap_lift(users, labels, scores[challenger], scores[current], n_resamples, seed)["auc"]
        switch = switches(rule, lift, margin)
        comparisons.append({"challenger": challenger, "incumbent": current, "auc_lift": lift["lift"],
                            "lo": lift["lo"], "hi": lift["hi"], "switch": switch})
        if switch:
            current = challenger
    steps = "; ".join(f"{c['challenger']} vs {c['incumbent']} {c['auc_lift']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}]"
                      f"{' -> switch' if c['switch'] else ' -> keep'}" for c in comparisons)
    if rule == "margin":
        why = f"{current} has the best validation AUC ({metrics[current]['auc']:.4f}) up to the margin {margin:.4f}"
    else:
        need = "ahead" if rule == "evidence" else "above margin + 1 SE"
        why = (f"{current} served (validation AUC {metrics[current]['auc']:.4f}; guard_rule={rule}: "
               f"{'ECAT the incumbent, ' if left[0] == 'ecat' else ''}a challenger replaces it only when its lift is "
               f"{need}, margin {margin:.4f})")
    reason = why + (f" ({steps})" if steps else "") + dropped
    return GuardDecision(current, reason, rule, comparisons, metrics, excluded)


def candidates(ds: str, cfg: EcatConfig, layout: Layout) -> list[str]:
    """The candidates configured, servable (``guard_candidates``) and trained on ``ds`` (baselines, the teacher,
    ablations), simplest first, ECAT last."""
    configured = {*cfg.baselines, "teacher", *(f"ecat_{a}" for a in cfg.ablations)} & set(cfg.guard_candidates) | {"ecat"}
    return [n for n in CANDIDATES if n in configured and (model_dir(layout, n, ds) / MANIFEST).is_file()]


def guard(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    """Task entry point: decide today's served model; its manifest in ``models/served/ds=``."""
    layout = layout or Layout()
    t0 = time.perf_counter()
    layout.require(model_dir(layout, "ecat", ds))
    names = candidates(ds, cfg, layout)
    reads = cfg.guard_enabled or cfg.serve_calibration
    window, changed = (days_sliced_as_today(window_days(ds, cfg, layout)[-cfg.guard_window_days:], cfg, layout)
                       if reads else ([], None))
    n_days = max(len(window), 1)  # today's rows at least
    if changed:
        log.warning("guard ds=%s: the slice settings (%s) changed after %s, whose student trained under others: the "
                    "window is cut to the %d day(s) since, whose validation rows no model trained on",
                    ds, ", ".join(SLICE_SETTINGS), changed, n_days)
    frame = validation_window(ds, cfg, layout, n_days) if reads else pd.DataFrame()
    users, labels = (frame["user_id"].to_numpy(), frame[cfg.label].to_numpy()) if len(frame) else (None, None)
    scores: dict[str, np.ndarray] = {}
    if not cfg.guard_enabled or len(frame) == 0 or names == ["ecat"]:
        why = ("guard disabled (guard_enabled=false)" if not cfg.guard_enabled else
               "no validation rows in the window" if len(frame) == 0 else "no other candidate trained today")
        decision = GuardDecision("ecat", f"{why}: ECAT served", cfg.guard_rule, [], {})
    else:
        scores = {n: load_model(layout.require(model_dir(layout, n, ds))).score(frame, cfg.label) for n in names}
        decision = decide(users, labels, scores, cfg.guard_margin, seed=cfg.seed, rule=cfg.guard_rule)
    cal = calibrate(decision.served, ds, cfg, layout, frame, scores)
    out = layout.model(SERVED_AREA, ds)
    clean_stale_tmp(out.parent)
    with atomic_dir(out) as tmp:
        (tmp / CALIBRATION_FILE).write_text(json.dumps(
            {**cal.to_dict(), "model": decision.served, "model_checksum": checkpoint_checksum(layout, decision.served, ds)},
            indent=1, sort_keys=True))
        write_manifest(tmp, "guard", ds, served=decision.served, kind=model_kind(decision.served), calibration=cal.to_dict(),
                       fallback=decision.fallback, reason=decision.reason,
                       checkpoint_dir=str(model_dir(layout, decision.served, ds)), candidates=names,
                       excluded=decision.excluded, comparisons=decision.comparisons, validation_rows=int(len(frame)),
                       validation_metrics=decision.metrics, rule=decision.rule, margin=cfg.guard_margin,
                       window_days=n_days, slices_changed_after=changed)
    secs = time.perf_counter() - t0
    fallback = f" ({model_kind(decision.served)}; FALLBACK: ECAT not served)" if decision.fallback else ""
    line = (f"guard ds={ds}: serving {decision.served}{fallback} -- "
            f"[guard_rule={decision.rule}] {decision.reason}; {cal.describe()}; {len(frame)} validation rows, candidates {', '.join(names)}; "
            f"{out} in {secs:.1f}s")
    (log.warning if decision.fallback else log.info)(line)
    return {"ds": ds, "served": decision.served, "fallback": decision.fallback, "reason": decision.reason,
            "rule": decision.rule, "calibrated": cal.fitted, "path": str(out), "seconds": round(secs, 2)}


def calibrate(served: str, ds: str, cfg: EcatConfig, layout: Layout, frame: pd.DataFrame,
              scores: dict[str, np.ndarray]) -> Calibration:
    """The served model's calibration, fitted on the guard's validation rows (identity, with the reason, when off)."""
    if not cfg.serve_calibration:
        return Calibration(reason="serve_calibration=false")
    if len(frame) == 0:
        return Calibration(reason="no validation rows in the window")
    probs = scores.get(served)
    if probs is None:
        probs = load_model(layout.require(model_dir(layout, served, ds))).score(frame, cfg.label)
    return fit_calibration(frame["user_id"].to_numpy(), frame[cfg.label].to_numpy(), probs, cfg.calibration_strength,
                           seed=cfg.seed)
