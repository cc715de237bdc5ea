"""promote: the gate that moves the registry's ``champion`` alias to today's student.

The gate reads the validation slice of ``ds`` and nothing else. The student passes when its
validation AUC beats the target-only baseline's by more than ``promote_min_lift`` and trails
the current champion's AUC, scored on today's same validation slice,
by no more than ``promote_tolerance``. A refusal is a normal outcome: the task succeeds,
says why, and the alias stays where it was.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ecat_tasks.config import EcatConfig
from ecat_tasks.evaluate import METRICS_FILE, eval_sets
from ecat_tasks.metrics import auc
from ecat_tasks.storage import Layout
from ecat_tasks.tracking import client, register_model, tracking_uri

log = logging.getLogger(__name__)

ALIAS = "champion"


def gate(student_auc: float, target_only_auc: float | None, champion_auc: float | None, cfg: EcatConfig) -> tuple[bool, str]:
    """Pure decision: (passes, reason)."""
    if target_only_auc is None:
        return False, "no target_only baseline metrics for this ds: the gate needs them (add 'target_only' to baselines)"
    if not student_auc > target_only_auc + cfg.promote_min_lift:
        return False, (f"student AUC {student_auc:.4f} does not beat target_only {target_only_auc:.4f} "
                       f"by more than {cfg.promote_min_lift:.4f}")
    if champion_auc is not None and student_auc < champion_auc - cfg.promote_tolerance:
        return False, (f"student AUC {student_auc:.4f} trails the champion's {champion_auc:.4f} on today's validation slice "
                       f"by more than the tolerance {cfg.promote_tolerance:.4f}")
    vs = "no current champion" if champion_auc is None else f"champion {champion_auc:.4f}"
    return True, f"student AUC {student_auc:.4f} beats target_only {target_only_auc:.4f}; {vs}"


class RegistryError(RuntimeError):
    """The model registry could not be read: promotion cannot decide, so the task fails."""


def current_champion(mc: Any, name: str, uri: str) -> Any:
    """The ModelVersion the alias points at; None only when the model or its alias does not exist yet.

    Every other registry error (server down, permission denied, bad name) raises
    :class:`RegistryError`: treating it as "no champion" would promote past the real one.
    """
    from mlflow.exceptions import MlflowException

    try:
        try:
            model = mc.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        number = model.aliases.get(ALIAS)
        return None if number is None else mc.get_model_version(name, number)
    except MlflowException as exc:
        first = str(exc.message).splitlines()[0][:200]
        raise RegistryError(f"cannot read alias '{ALIAS}' of registered model '{name}' at {uri}: "
                            f"{exc.error_code}: {first}") from exc


def champion_auc_today(cfg: EcatConfig, layout: Layout, ds: str) -> tuple[float | None, Any]:
    """The current champion scored on today's validation slice (None when there is no champion)."""
    import mlflow

    mc = client(cfg, layout.root)
    version = current_champion(mc, cfg.registered_model, tracking_uri(layout.root))
    if version is None:
        return None, None
    validation = eval_sets(ds, cfg, layout)["validation"]
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model}@{ALIAS}")
    return auc(validation[cfg.label].to_numpy(), model.predict(validation)), version


def promote(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    layout = layout or Layout()
    report = json.loads((layout.require(layout.report(ds)) / METRICS_FILE).read_text())
    models = report["models"]
    student_auc = models["ecat"]["validation"]["auc"]
    target_only = models.get("target_only", {}).get("validation", {}).get("auc")
    champ_auc, champ = champion_auc_today(cfg, layout, ds)
    if champ is not None and champ.tags.get("ds") == ds:
        log.info("promote ds=%s: version %s from this ds is already champion; nothing to do", ds, champ.version)
        return {"ds": ds, "promoted": True, "version": champ.version, "reason": "already champion"}
    passes, reason = gate(student_auc, target_only, champ_auc, cfg)
    if not passes:
        log.warning("promote ds=%s: NOT promoted: %s; alias '%s' stays on version %s", ds, reason, ALIAS,
                    champ.version if champ else "none")
        return {"ds": ds, "promoted": False, "reason": reason, "champion_version": champ.version if champ else None}
    validation = eval_sets(ds, cfg, layout)["validation"]
    version = register_model(
        cfg, layout.root, ds, layout.model("student", ds), validation.head(5),
        tags={"ds": ds, "validation_auc": f"{student_auc:.6f}", "gate": reason},
    )
    client(cfg, layout.root).set_registered_model_alias(cfg.registered_model, ALIAS, version.version)
    log.info("promote ds=%s: PROMOTED %s version %s to '%s' (previous %s): %s", ds, cfg.registered_model,
             version.version, ALIAS, champ.version if champ else "none", reason)
    return {"ds": ds, "promoted": True, "version": version.version, "reason": reason,
            "previous_champion": champ.version if champ else None}
