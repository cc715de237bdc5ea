"""guard: the negative-transfer guard -- which model the pipeline serves and promotes today.

ECAT's transfer can hurt (a source that disagrees with the mini-app, a shifted day). Each day
the guard compares ECAT's student with every comparison model that trained *today* -- the
configured baselines, the teacher of the day and the ECAT ablations -- on the *validation*
users only (never trained on, on any day; their target rows of the last ``guard_window_days``
days of the lookback window), each day's rows scored, under ``guard_slice=previous_day`` (the
default), by the candidates' checkpoints of the day before: the models that served that day, which
never saw it, so the slice is a sample of what tomorrow is to today's models (new users included).
A comparison model on a ``compare_every_days`` cadence that did
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
from ecat_tasks.inputs import days_sliced_as_today, previous_day_pairs, target_day, validation_window, window_days
from ecat_tasks.metrics import all_metrics, paired_bootstrap_lift
from ecat_tasks.models.calibration import CALIBRATION_FILE, Calibration, fit_calibration
from ecat_tasks.models.continual import load_model
from ecat_tasks.report import checkpoint_checksum, load_scorer, model_dir, model_kind, scorable_models
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


@dataclass
class DecisionSlice:
    """The rows the guard decides on and each candidate's scores of them (see :func:`decision_slice`)."""
    frame: pd.DataFrame
    scores: dict[str, np.ndarray]
    kind: str  # "previous_day" or "today": whose checkpoints scored the rows
    scored_by: dict[str, str]  # each day whose validation rows these are -> the day of the checkpoints that scored them
    missing: dict[str, str] = field(default_factory=dict)  # candidate -> why it has no scores here
    note: str = ""  # why the slice is not the configured one, when it is not

    @property
    def days(self) -> list[str]:
        return list(self.scored_by)


def decision_slice(ds: str, cfg: EcatConfig, layout: Layout, names: list[str], days: list[str]) -> DecisionSlice:
    """The validation rows of ``days`` (the guard's window, oldest first) and the scores ``names`` give them.

    ``guard_slice=previous_day``: each day's rows are scored by each candidate's checkpoint of the
    lake day before it (a comparison model's newest on or before it, as the next-day report scores
    it), so a row is scored by a model that served its day and never saw it; a day without an
    earlier lake day or ECAT checkpoint is left out, and a candidate without a checkpoint for some
    day is left out with the reason. ``today`` (or no day left): today's checkpoints score every day's rows.
    """
    pairs = []
    if cfg.guard_slice == "previous_day":
        pairs = [(before, day) for before, day in previous_day_pairs(ds, cfg, layout, len(days))
                 if day in days and (model_dir(layout, "ecat", before) / MANIFEST).is_file()]
    if not pairs:
        note = "" if cfg.guard_slice == "today" else "no earlier day's ECAT in the window: today's models score it"
        frame = validation_window(ds, cfg, layout, len(days))
        scores = {n: load_model(layout.require(model_dir(layout, n, ds))).score(frame, cfg.label) for n in names} \
            if len(frame) else {}
        return DecisionSlice(frame, scores, "today", {day: ds for day in days}, note=note)
    checkpoints = {before: scorable_models(layout, before) for before, _ in pairs}
    missing: dict[str, str] = {}
    for before, _ in pairs:  # the oldest day a candidate has no checkpoint for
        for n in names:
            if n not in checkpoints[before]:
                missing.setdefault(n, f"no checkpoint on or before {before}, so no previous-day scores")
    kept = [n for n in names if n not in missing]
    frames, scores = [], {n: [] for n in kept}
    for before, day in pairs:
        rows = target_day(day, cfg, layout).validation
        if len(rows):
            frames.append(rows)
            for n in kept:
                scores[n].append(load_scorer(layout, n, checkpoints[before][n]).score(rows, cfg.label))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return DecisionSlice(frame, {n: np.concatenate(v) for n, v in scores.items()} if frames else {}, "previous_day",
                         {day: before for before, day in pairs}, missing)


def guard(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    """Task entry point: decide today's served model; its manifest in ``models/served/ds=``."""
    layout = layout or Layout()
    t0 = time.perf_counter()
    layout.require(model_dir(layout, "ecat", ds))
    names = candidates(ds, cfg, layout)
    reads = cfg.guard_enabled or cfg.serve_calibration
    window, changed = (days_sliced_as_today(window_days(ds, cfg, layout)[-cfg.guard_window_days:], cfg, layout)
                       if reads else ([], None))
    if changed:
        log.warning("guard ds=%s: the slice settings (%s) changed after %s, whose student trained under others: the "
                    "window is cut to the %d day(s) since, whose validation rows no model trained on",
                    ds, ", ".join(SLICE_SETTINGS), changed, max(len(window), 1))
    rows = (decision_slice(ds, cfg, layout, names if cfg.guard_enabled else ["ecat"], window or [ds]) if reads
            else DecisionSlice(pd.DataFrame(), {}, "today", {}))
    frame = rows.frame
    if not cfg.guard_enabled or len(frame) == 0 or names == ["ecat"]:
        why = ("guard disabled (guard_enabled=false)" if not cfg.guard_enabled else
               "no validation rows in the window" if len(frame) == 0 else "no other candidate trained today")
        decision = GuardDecision("ecat", f"{why}: ECAT served", cfg.guard_rule, [], {})
    else:
        decision = decide(frame["user_id"].to_numpy(), frame[cfg.label].to_numpy(), rows.scores, cfg.guard_margin,
                          seed=cfg.seed, rule=cfg.guard_rule)
        if rows.missing:
            decision.excluded.update(rows.missing)
            decision.reason += "; no previous-day scores: " + ", ".join(rows.missing)
    cal = calibrate(decision.served, ds, cfg, layout, rows)
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
                       window_days=len(rows.days), slice=rows.kind, slice_days=rows.days, slice_note=rows.note,
                       slices_changed_after=changed)
    secs = time.perf_counter() - t0
    fallback = f" ({model_kind(decision.served)}; FALLBACK: ECAT not served)" if decision.fallback else ""
    scored_by = "the day before's models" if rows.kind == "previous_day" else "today's models"
    line = (f"guard ds={ds}: serving {decision.served}{fallback} -- "
            f"[guard_rule={decision.rule}] {decision.reason}; {cal.describe()}; {len(frame)} validation rows of "
            f"{len(rows.days)} day(s) scored by {scored_by}{' (' + rows.note + ')' if rows.note else ''}, "
            f"candidates {', '.join(names)}; {out} in {secs:.1f}s")
    (log.warning if decision.fallback else log.info)(line)
    return {"ds": ds, "served": decision.served, "fallback": decision.fallback, "reason": decision.reason,
            "rule": decision.rule, "slice": rows.kind, "calibrated": cal.fitted, "path": str(out),
            "seconds": round(secs, 2)}


def calibrate(served: str, ds: str, cfg: EcatConfig, layout: Layout, rows: DecisionSlice) -> Calibration:
    """The served model's calibration, fitted on the rows the guard decided on, scored by today's
    checkpoint of the served model: the map is applied to that checkpoint's scores, so it is fitted on
    them (under ``guard_slice=previous_day`` the guard's own scores are the day before's checkpoints').
    Identity, with the reason, when off."""
    if not cfg.serve_calibration:
        return Calibration(reason="serve_calibration=false")
    if len(rows.frame) == 0:
        return Calibration(reason="no validation rows in the window")
    probs = rows.scores.get(served) if rows.kind == "today" else None
    if probs is None:
        probs = load_model(layout.require(model_dir(layout, served, ds))).score(rows.frame, cfg.label)
    return fit_calibration(rows.frame["user_id"].to_numpy(), rows.frame[cfg.label].to_numpy(), probs,
                           cfg.calibration_strength, seed=cfg.seed)
