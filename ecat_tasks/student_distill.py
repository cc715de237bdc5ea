"""student_distill: the mini-app's student, trained on target rows plus weighted source rows
with adaptive distillation from the day's teacher, warm-starting from the previous student.

The teacher is frozen: its logits and hidden vectors are computed once per day before
training (no per-batch teacher pass) and are fixed targets; a learned projection g on the
student side maps the student's hidden space onto the teacher's (models/distill.py says why
that side). The training is :func:`ecat_tasks.models.student.train_student`, which the
ablations in train_baselines share.
"""

from __future__ import annotations

import logging
from typing import Any

from ecat_tasks.config import EcatConfig
from ecat_tasks.inputs import candidates_part, target_day, target_train_part
from ecat_tasks.models.continual import load_model, phase_batches
from ecat_tasks.models.student import train_student
from ecat_tasks.models.training import select_device
from ecat_tasks.storage import Layout

log = logging.getLogger(__name__)


def student_distill(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    layout = layout or Layout()
    validation = target_day(ds, cfg, layout).validation
    candidates, _, _ = candidates_part(ds, layout)
    needs_teacher = cfg.kd_enabled or cfg.student_init_from_teacher
    teacher = load_model(layout.require(layout.model("teacher", ds)), select_device(cfg)) if needs_teacher else None
    m = train_student("student", ds, cfg, layout, target_train_part([ds], cfg, layout), validation, candidates, teacher,
                      "student_distill")
    log.info(
        "student_distill ds=%s: %s from %s, %d target + %d weighted source rows (weight sum %.0f, batch %s), KD %s "
        "(lambda=%.2f, adaptive=%s), loss %.4f, validation AUC %s, wrote %s in %.1fs",
        ds, "cold start" if m["cold_start"] else "warm start", m["warm_start_ds"] or "scratch", m["target_rows"],
        m["source_rows"], m["source_weight_sum"], phase_batches(m), "on" if m["kd"]["enabled"] else "off",
        cfg.kd_lambda, cfg.kd_adaptive,
        m["losses"][-1], "n/a" if m["holdout_auc"] is None else f"{m['holdout_auc']:.4f}", m["path"], m["seconds"],
    )
    keys = ("path", "ds", "model", "warm_start_ds", "cold_start", "rows", "holdout_auc", "checksum", "seconds")
    return {k: m.get(k) for k in keys} | {"loss": m["losses"][-1]}
