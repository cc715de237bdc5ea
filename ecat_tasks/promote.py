"""promote: the gate that moves the registry's ``champion`` alias to today's served model.

The served model is the negative-transfer guard's choice (``report["guard"]``: ECAT's student,
or a fallback -- an ablation, a baseline or the teacher -- when the transfer did not pay on the
validation slice); ECAT's student when the guard did not run. Its own checkpoint is registered,
with the calibration the guard fitted for it (the registered model's probabilities are calibrated).
The gate reads the validation slice of ``ds`` and nothing else. The model passes when its
validation AUC beats the target-only baseline's by more than ``promote_min_lift`` (unless it is
target_only itself) and trails
the current champion's AUC, scored on today's same validation slice, by no more than
``promote_tolerance``. A refusal is a normal outcome: the task succeeds, says why, and the
alias stays where it was. Each promotion records the version it replaced
(``replaced_version``), so the next day's ``score_previous_day`` can roll it back.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ecat_tasks.config import EcatConfig
from ecat_tasks.inputs import eval_sets
from ecat_tasks.metrics import auc
from ecat_tasks.models.calibration import CALIBRATION_FILE
from ecat_tasks.report import SERVED, guard_tags, model_dir, model_kind, read_report, write_report
from ecat_tasks.storage import Layout
from ecat_tasks.tracking import (
    ALIAS, RegistryError, champion_version, client, current_champion, register_model, score_version,
)

log = logging.getLogger(__name__)

__all__ = ["ALIAS", "RegistryError", "current_champion", "gate", "promote"]


def gate(student_auc: float, target_only_auc: float | None, champion_auc: float | None, cfg: EcatConfig,
         served: str = "ecat") -> tuple[bool, str]:
    """Pure decision on the served model's validation AUC: (passes, reason)."""
    who = "student" if served == "ecat" else served
    if not math.isfinite(student_auc):
        return False, f"{who} validation AUC is undefined (constant predictions, or one label class in the validation slice)"
    if target_only_auc is None:
        return False, "no target_only baseline metrics for this ds: the gate needs them (add 'target_only' to baselines)"
    if served != "target_only" and not student_auc > target_only_auc + cfg.promote_min_lift:
        return False, (f"{who} validation AUC {student_auc:.4f} does not beat target_only {target_only_auc:.4f} "
                       f"by more than {cfg.promote_min_lift:.4f}")
    if champion_auc is not None and student_auc < champion_auc - cfg.promote_tolerance:
        return False, (f"{who} validation AUC {student_auc:.4f} trails the champion's {champion_auc:.4f} on today's "
                       f"validation slice by more than the tolerance {cfg.promote_tolerance:.4f}")
    vs = "no current champion" if champion_auc is None else f"champion {champion_auc:.4f}"
    if served == "target_only":  # the guard found nothing better than the model the gate measures against
        return True, f"target_only validation AUC {student_auc:.4f} (served: no transfer model beat it); {vs}"
    return True, f"{who} validation AUC {student_auc:.4f} beats target_only {target_only_auc:.4f}; {vs}"


def promote(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    layout = layout or Layout()
    layout.require(layout.report(ds))
    report = read_report(layout, ds)
    if report is None or "validation" not in report.get("models", {}).get("ecat", {}):
        raise ValueError(f"reports/ds={ds} has no validation metrics of ECAT: run evaluate for {ds} first")
    models = report["models"]
    guard = report.get("guard") or {"served": "ecat", "fallback": False, "reason": "the guard did not run"}
    served = guard["served"]
    if "validation" not in models.get(served, {}):
        raise ValueError(f"reports/ds={ds} has no validation metrics of the served model {served}: rerun evaluate")
    student_auc = models[served]["validation"]["auc"]
    target_only = models.get("target_only", {}).get("validation", {}).get("auc")
    champ = champion_version(cfg, layout.root)
    champ_v = str(champ.version) if champ is not None else None
    if champ is not None and champ.tags.get("ds") == ds:
        log.info("promote ds=%s: version %s from this ds is already champion; nothing to do", ds, champ_v)
        return {"ds": ds, "promoted": True, "version": champ_v, "reason": "already champion"}
    validation = eval_sets(ds, cfg, layout)["validation"]
    champ_auc = (auc(validation[cfg.label].to_numpy(), score_version(cfg, layout.root, champ_v, validation))
                 if champ is not None else None)
    passes, reason = gate(student_auc, target_only, champ_auc, cfg, served)
    if served != "ecat":
        reason = f"{served} ({model_kind(served)}, guard fallback): {reason}"
    decision: dict[str, Any] = {"promoted": passes, "reason": reason, "served": served,
                                "checkpoint": report.get("checkpoints", {}).get(served),
                                "replaced_version": None, "version": None,
                                "champion_version": champ_v}
    if passes:
        calibration = model_dir(layout, SERVED, ds) / CALIBRATION_FILE  # the guard's: absent when it did not run
        registered = register_model(
            cfg, layout.root, ds, model_dir(layout, served, ds), validation.head(5),
            tags={"ds": ds, "validation_auc": f"{student_auc:.6f}", "gate": reason,
                  "replaced_version": champ_v or "", **guard_tags(guard)},
            calibration=calibration if calibration.is_file() else None,
        )
        client(cfg, layout.root).set_registered_model_alias(cfg.registered_model, ALIAS, str(registered.version))
        decision.update(version=str(registered.version), replaced_version=champ_v,
                        champion_version=str(registered.version))
    write_report(layout, ds, {**report, "promotion": decision}, "promote")
    if passes:
        log.info("promote ds=%s: PROMOTED %s version %s to '%s' (replaced %s): %s", ds, cfg.registered_model,
                 decision["version"], ALIAS, decision["replaced_version"] or "none", reason)
    else:
        log.warning("promote ds=%s: NOT promoted: %s; alias '%s' stays on version %s", ds, reason, ALIAS,
                    champ_v or "none")
    return {"ds": ds, "promoted": passes, "served": served, "version": decision["version"], "reason": reason,
            "previous_champion": champ_v}
