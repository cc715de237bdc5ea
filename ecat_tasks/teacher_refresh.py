"""teacher_refresh: the entire-space teacher, trained continually day after day.

Warm start from the newest teacher dated before ``ds`` and train on the day's entire space
(source plus target-train rows) for ``teacher_warm_epochs``. With no earlier teacher,
cold-start on the lookback window for ``teacher_epochs``. The teacher has its own batch size
(``teacher_batch_size``): it is the one model that trains on the whole entire space every day.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from ecat_tasks.config import EcatConfig
from ecat_tasks.inputs import entire_space_parts, target_day, window_days
from ecat_tasks.models.continual import Phase, Recipe, fit_day
from ecat_tasks.models.model import ranking_kind
from ecat_tasks.models.stream import Part
from ecat_tasks.storage import Layout

log = logging.getLogger(__name__)


def teacher_arch(cfg: EcatConfig) -> dict[str, Any]:
    """The teacher's network; with ``teacher_scenario`` the scenario is a field (the entire space is
    many scenarios: without it the teacher predicts each scenario's average, which distillation
    then hands to the mini-app's student)."""
    return {"kind": ranking_kind(cfg.teacher_scenario), "embed_dim": cfg.embed_dim, "hidden": list(cfg.teacher_hidden)}


def teacher_recipe(cfg: EcatConfig, parts: Sequence[Part], cold: bool) -> Recipe:
    """The day's training: cold start (the lookback window) or one warm-start day of continual training."""
    epochs = cfg.teacher_epochs if cold else cfg.teacher_warm_epochs
    phase = Phase(parts, epochs, name="cold_start" if cold else "daily")
    return Recipe(teacher_arch(cfg), cfg.teacher_lr, [phase], batch_size=cfg.teacher_batch_size)


def teacher_refresh(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    layout = layout or Layout()
    cold = layout.latest_before("models/teacher", ds) is None
    days = window_days(ds, cfg, layout) if cold else [ds]
    parts = entire_space_parts(days, cfg, layout)
    validation = target_day(ds, cfg, layout).validation
    manifest = fit_day(
        "teacher", ds, cfg, layout,
        teacher_recipe(cfg, parts, cold),
        holdout=validation, task="teacher_refresh",
        manifest_extra={"train_days": days},
    )
    log.info(
        "teacher_refresh ds=%s: %s from %s, trained on %d rows of %d day(s), loss %.4f, target-validation AUC %s, "
        "%d epoch(s) of batch %d, new ids %s, wrote %s in %.1fs",
        ds, "cold start" if cold else "warm start", manifest["warm_start_ds"] or "scratch", manifest["rows"], len(days),
        manifest["losses"][-1], _fmt(manifest["holdout_auc"]), len(manifest["losses"]), manifest["batch_size"],
        sum(manifest["new_ids"].values()), manifest["path"],
        manifest["seconds"],
    )
    return _small(manifest)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _small(manifest: dict[str, Any]) -> dict[str, Any]:
    """What goes to XCom: paths and headline numbers only."""
    keys = ("path", "ds", "model", "warm_start_ds", "cold_start", "rows", "holdout_auc", "checksum", "seconds")
    return {k: manifest.get(k) for k in keys} | {"loss": manifest["losses"][-1]}
