"""score_previous_day: yesterday's models on today's target rows (the primary metric).

A model trained through day d-1 serves day d, so every model of d-1 (ECAT's student, the
teacher, each baseline and ablation with a checkpoint, and ``served``: the guard's choice
through the calibration fitted on d-1's validation rows) is scored on every validated target
row of d but d's validation slice (:func:`ecat_tasks.inputs.next_day_rows`), which no model
has trained on. The validation rows are left out because the guard of d decides on them,
scored by these same models (``guard_slice=previous_day``): a reported row never decides.
This runs before anything trains on d. It writes into d-1's report (``next_day`` in metrics.json, csv, html) and d-1's MLflow runs
(``next_day_*``), with ECAT's lift over each model by a paired bootstrap over users.

It also checks d-1's promotion: if the champion promoted on d-1 trails the version it
replaced on these rows by more than ``promote_tolerance`` in AUC, the ``champion`` alias
moves back to that version (rollback). Next-day numbers decide nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ecat_tasks.config import EcatConfig
from ecat_tasks.inputs import next_day_rows
from ecat_tasks.metrics import BootstrapDraws, all_metrics, paired_bootstrap_lift
from ecat_tasks.report import (
    SERVED, checkpoint_checksum, load_scorer, read_report, scorable_models, served_choice, write_report,
)
from ecat_tasks.storage import Layout, shift_ds
from ecat_tasks.tracking import (
    ALIAS, add_run_metrics, champion_version, client, score_version, versions_of_day,
)

if TYPE_CHECKING:
    from ecat_tasks.models.model import LoadedModel

log = logging.getLogger(__name__)

N_RESAMPLES = 1000
CONSTANT = "constant score 0.5"  # each model's AUC band is its lift over this (AUC exactly 0.5 on every resample)


def encoding_key(loaded: "LoadedModel") -> str:
    """Digest of everything a loaded model's ``batchable`` reads (feature spec, vocabularies, dense
    statistics, scenario vocabulary): models with equal keys encode a frame into equal tensors, and
    most of a day's models share their encoders."""
    digest = hashlib.sha256(json.dumps(loaded.arch.get("features"), sort_keys=True).encode())
    for name, tensor in sorted(loaded.encoder_state().state().items()):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def score_models(layout: Layout, days: dict[str, str], frame: pd.DataFrame, label: str) -> dict[str, np.ndarray]:
    """Probabilities of each model of ``days`` (name -> its checkpoint's day) on ``frame``, in ``days``' order.

    The frame is encoded once per distinct set of encoders, not once per model. ``served`` is the
    checkpoint of the guard's choice through its calibration: when that checkpoint is scored here
    anyway, the calibration is applied to its scores instead of loading and scoring it again.
    """
    encoded: dict[str, Any] = {}  # encoding_key -> the frame as that model's tensors (a Batchable)
    raw: dict[str, np.ndarray] = {}
    for name, day in days.items():
        if name == SERVED:
            continue
        loaded = load_scorer(layout, name, day)
        key = encoding_key(loaded)
        if key not in encoded:
            encoded[key] = loaded.batchable(frame, label)
        raw[name] = loaded.score_encoded(encoded[key])
    if SERVED in days:
        chosen, cal = served_choice(layout, days[SERVED])
        if chosen in raw and days[chosen] == days[SERVED]:
            raw[SERVED] = cal.apply(raw[chosen])
        else:  # the choice is not among the models scored (a checkpoint of another day): load it
            raw[SERVED] = load_scorer(layout, SERVED, days[SERVED]).score(frame, label)
    log.debug("score_previous_day: %d models, %d encodings of %d rows", len(raw), len(encoded), len(frame))
    return {name: np.asarray(raw[name], np.float64) for name in days}


def next_day_metrics(users: np.ndarray, labels: np.ndarray, scores: dict[str, np.ndarray], seed: int,
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Each model's metrics with its AUC band (95% bootstrap over users: its lift over a constant
    score, plus 0.5), and ECAT's lift over each model. Every interval is a paired bootstrap with
    the same seed, so all are on the same resamples: drawn once, each model prepared once."""
    if not scores:
        return {}, {}
    boot = BootstrapDraws(users, labels, {**scores, CONSTANT: np.full(len(labels), 0.5)}, N_RESAMPLES,
                          np.random.default_rng(seed))
    metrics: dict[str, dict[str, Any]] = {}
    for name in scores:
        band = boot.lift(name, CONSTANT)["auc"]
        metrics[name] = {**boot.point[name], "auc_lo": band["lo"] + 0.5, "auc_hi": band["hi"] + 0.5}
    lift = {name: boot.lift("ecat", name) for name in scores if name != "ecat"} if "ecat" in scores else {}
    return metrics, lift


def champion_check(cfg: EcatConfig, layout: Layout, prev: str, ds: str, frame: pd.DataFrame) -> dict[str, Any]:
    """Compare the version promoted on ``prev`` with the version it replaced on ``frame``;
    roll the alias back when it trails by more than ``promote_tolerance``. Idempotent."""
    mc = client(cfg, layout.root)
    promoted = versions_of_day(cfg, layout.root, prev)
    if not promoted:
        return {"decision": "none", "reason": f"no model was promoted on {prev}"}
    v = promoted[0]
    version = str(v.version)
    check: dict[str, Any] = {"version": version, "replaced_version": v.tags.get("replaced_version") or None}
    if v.tags.get("rolled_back_on"):
        return {**check, "decision": "rolled_back", "champion_auc": float(v.tags["next_day_auc"]),
                "replaced_auc": float(v.tags["replaced_next_day_auc"]),
                "reason": f"version {version} was rolled back on {v.tags['rolled_back_on']}: {v.tags.get('rollback_reason', '')}"}
    current = champion_version(cfg, layout.root)
    if current is None or str(current.version) != version:
        return {**check, "decision": "superseded",
                "reason": f"alias '{ALIAS}' has moved from version {version} to "
                          f"{str(current.version) if current else 'none'} since: nothing to check"}
    if not check["replaced_version"]:
        return {**check, "decision": "kept", "reason": f"version {version} was the first champion: nothing to roll back to"}
    labels, users = frame[cfg.label].to_numpy(), frame["user_id"].to_numpy()
    new_scores = score_version(cfg, layout.root, version, frame)
    old_scores = score_version(cfg, layout.root, check["replaced_version"], frame)
    lift = paired_bootstrap_lift(users, labels, new_scores, old_scores, N_RESAMPLES, cfg.seed)
    new_auc = all_metrics(users, labels, new_scores)["auc"]
    old_auc = all_metrics(users, labels, old_scores)["auc"]
    check.update(champion_auc=new_auc, replaced_auc=old_auc, lift=lift)
    if not new_auc >= old_auc - cfg.promote_tolerance:  # NaN counts as a failure too
        reason = (f"next-day AUC {new_auc:.4f} on {ds} trails the replaced version {check['replaced_version']}'s "
                  f"{old_auc:.4f} by more than promote_tolerance {cfg.promote_tolerance:.4f}")
        mc.set_registered_model_alias(cfg.registered_model, ALIAS, check["replaced_version"])
        for key, value in (("rolled_back_on", ds), ("rollback_reason", reason), ("next_day_auc", f"{new_auc:.6f}"),
                           ("replaced_next_day_auc", f"{old_auc:.6f}")):
            mc.set_model_version_tag(cfg.registered_model, version, key, value)
        log.error("ECAT ROLLBACK model=%s alias=%s: version %s (promoted %s) -> version %s: %s | what to do: nothing "
                  "urgent, the replaced version serves again; compare the models in reports/ds=%s/report.html",
                  cfg.registered_model, ALIAS, version, prev, check["replaced_version"], reason, prev)
        return {**check, "decision": "rolled_back", "reason": reason}
    return {**check, "decision": "kept",
            "reason": f"next-day AUC {new_auc:.4f} on {ds} vs the replaced version {check['replaced_version']}'s "
                      f"{old_auc:.4f} (tolerance {cfg.promote_tolerance:.4f})"}


def score_previous_day(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    layout = layout or Layout()
    t0 = time.perf_counter()
    prev = shift_ds(ds, -1)
    days = scorable_models(layout, prev)  # comparison models: their newest checkpoint (compare_every_days)
    names = list(days)
    if not names:
        log.info("score_previous_day ds=%s: no models of %s (first day, or that day did not train): nothing to score",
                 ds, prev)
        return {"ds": ds, "previous_ds": prev, "scored": [], "seconds": round(time.perf_counter() - t0, 2)}
    frame = next_day_rows(ds, cfg, layout)
    users, labels = frame["user_id"].to_numpy(), frame[cfg.label].to_numpy()
    scores: dict[str, np.ndarray] = {}
    for name, probs in score_models(layout, days, frame, cfg.label).items():
        if not np.isfinite(probs).all():
            log.error("score_previous_day ds=%s: model %s of %s gives non-finite scores on %s: not scored", ds, name, prev, ds)
            continue
        scores[name] = probs
    metrics, lift = next_day_metrics(users, labels, scores, cfg.seed)
    check = champion_check(cfg, layout, prev, ds, frame)

    report = read_report(layout, prev) or {"ds": prev, "label": cfg.label, "models": {}}
    for name, m in metrics.items():
        report["models"].setdefault(name, {})["next_day"] = m
    report["next_day"] = {
        "ds": ds, "rows": int(len(frame)), "users": int(pd.Series(users).nunique()),
        "checkpoints": {n: checkpoint_checksum(layout, n, days[n]) for n in metrics},
        "lift": lift, "champion_check": check, "n_resamples": N_RESAMPLES,
    }
    write_report(layout, prev, report, "score_previous_day")
    flat = {name: {f"next_day_{k}": v for k, v in m.items()} for name, m in metrics.items()}
    for name in lift:
        flat[name] |= {f"next_day_ecat_lift_{k}": v["lift"] for k, v in lift[name].items()}
    add_run_metrics(cfg, layout.root, prev, flat)

    secs = time.perf_counter() - t0
    ecat = metrics.get("ecat")
    ahead = [n for n, v in lift.items() if v["auc"]["ahead"]]
    behind = [n for n, v in lift.items() if v["auc"]["behind"]]
    log.info(
        "score_previous_day ds=%s: %d models of %s on %d target rows of %s; ECAT next-day AUC %s; ECAT ahead of %s, "
        "behind %s (AUC, 95%% bootstrap); champion check: %s; wrote %s in %.1fs",
        ds, len(metrics), prev, len(frame), ds, "n/a" if ecat is None else f"{ecat['auc']:.4f}",
        ",".join(ahead) or "none", ",".join(behind) or "none", check["decision"], layout.report(prev), secs,
    )
    return {"ds": ds, "previous_ds": prev, "scored": sorted(metrics), "rows": int(len(frame)),
            "ecat_next_day_auc": None if ecat is None else ecat["auc"], "champion_check": check["decision"],
            "champion_reason": check["reason"], "seconds": round(secs, 2)}
