"""The student of ECAT and its variants: weighted target and source rows, adaptive distillation.

Shared by ``student_distill`` (the student) and ``train_baselines`` (the ablations, each the
student with one component off). The teacher is frozen: its logits and hidden vectors are
computed once per slice before training (no per-batch teacher pass) and are fixed targets; a
learned projection g on the student side maps the student's hidden space onto the teacher's
(models/distill.py says why that side).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import nn

from ecat_tasks.config import EcatConfig
from ecat_tasks.models.continual import fit_day
from ecat_tasks.models.daycache import DayCache, column_values
from ecat_tasks.models.distill import distillation_loss
from ecat_tasks.models.model import LoadedModel, ranking_kind
from ecat_tasks.models.stream import Part, part_totals
from ecat_tasks.models.trainer import Phase, Recipe, TrainHooks, pretrain_finetune
from ecat_tasks.models.training import LossFn, predict_logits
from ecat_tasks.storage import Layout


STUDENT_PROJECTION = "student_projection"
TEACHER_TARGETS = "teacher_targets"  # the day cache's kind of the teacher's logits and hidden vectors


def student_arch(cfg: EcatConfig) -> dict[str, Any]:
    """The student-sized tower (every baseline's too, which choose their own kind)."""
    return {"kind": "ranking", "embed_dim": cfg.embed_dim, "hidden": list(cfg.student_hidden)}


def ecat_student_arch(cfg: EcatConfig) -> dict[str, Any]:
    """The ECAT student's network: the tower, with the scenario as a field when ``student_scenario``.

    The student trains on the target and one or two orders of magnitude more source rows; without
    a scenario input every row shares one function, so the source's scenarios set the target's
    base rate and tastes. With it the mini-app has its own embedding (the ``mixed_scenario``
    network, here fed by weighted candidates and distillation).
    """
    return {**student_arch(cfg), "kind": ranking_kind(cfg.student_scenario)}


def student_phases(target_train: Part, candidates: Part, cfg: EcatConfig) -> list[Phase]:
    """Target plus weighted source, then ``student_target_epochs`` on the target rows alone; or,
    under ``student_schedule=pretrain_finetune``, one pass over the weighted source, then
    ``student_epochs`` on the target alone.

    The source outweighs the target by one or two orders of magnitude in rows, so the mixed
    phase pulls the student towards the source's base rate and tastes; the closing target-only
    phase (distillation still on) specialises it to the mini-app it serves. The finetune
    baseline, which orders its rows source first and target last, led ECAT on MovieLens
    Western's next day (bench/RESULTS.md, "The next day split into new and returning users").
    """
    if cfg.student_schedule == "pretrain_finetune":
        return pretrain_finetune(candidates, target_train, cfg.student_epochs)
    phases = [Phase([target_train, candidates], cfg.student_epochs, name="target+source")]
    if cfg.student_target_epochs > 0:
        phases.append(Phase([target_train], cfg.student_target_epochs, name="target_only"))
    return phases


class DistillHooks(TrainHooks):
    """Adaptive distillation from a frozen teacher: its logits and hidden vectors are computed
    once per slice of rows (fixed targets), a projection g maps the student's hidden space onto
    the teacher's, and the loss is :func:`~ecat_tasks.models.distill.distillation_loss`.

    With a ``cache``, the targets of a slice are shared with the day's other students (the
    ablations train on the same rows against the same teacher): keyed by the teacher's
    checkpoint, device and threads and the values of every column the teacher reads, so a hit
    is exactly what this run would compute. A teacher not loaded from a checkpoint is never cached.
    """

    def __init__(self, teacher: LoadedModel, cfg: EcatConfig, cache: DayCache | None = None) -> None:
        self.teacher, self.cfg = teacher, cfg
        self.cache = cache if teacher.checksum else None

    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        # student -> teacher; a new name, so a checkpoint of the old teacher-side projection is not loaded into it
        return {STUDENT_PROJECTION: nn.Linear(model.hidden_dim, self.teacher.model.hidden_dim)}

    def columns(self) -> list[str]:
        return ["scenario"] if self.teacher.scenario_vocab is not None else []

    def inputs(self, model: LoadedModel, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
        key = self._key(frame) if self.cache is not None else None
        if key is not None and (hit := self.cache.get(TEACHER_TARGETS, key)) is not None:
            return {"t_logit": torch.from_numpy(hit["t_logit"]), "t_hidden": torch.from_numpy(hit["t_hidden"])}
        t_logit, hidden = predict_logits(self.teacher.model, self.teacher.batchable(frame, self.cfg.label))
        if key is not None:
            self.cache.put(TEACHER_TARGETS, key, t_logit=t_logit.numpy(), t_hidden=hidden.numpy())
        return {"t_logit": t_logit, "t_hidden": hidden}

    def _key(self, frame: pd.DataFrame) -> str:
        """What the teacher's outputs on ``frame`` depend on: its weights, where and how it runs,
        and the columns it reads (its features and, for a scenario network, the scenario)."""
        spec = self.teacher.encoders.spec
        columns = [*spec.sparse_names, *spec.dense_names, *self.columns()]
        device = next(self.teacher.model.parameters()).device
        return DayCache.key(TEACHER_TARGETS, self.teacher.checksum, device, torch.get_num_threads(),
                            *column_values(frame, columns))

    def loss(self, model: nn.Module, extras: dict[str, nn.Module]) -> LossFn:
        cfg, projection = self.cfg, extras[STUDENT_PROJECTION]

        def loss(m: nn.Module, b: Any) -> torch.Tensor:
            s_logit, h_s = m(b.sparse, b.dense, **b.extra)
            return distillation_loss(
                s_logit, h_s, b.label, b.weight, b.extra["t_logit"], b.extra["t_hidden"], projection,
                cfg.kd_lambda, cfg.kd_temperature, cfg.kd_adaptive, cfg.kd_hidden, cfg.kd_logit,
            )
        return loss


def train_student(
    name: str,
    ds: str,
    cfg: EcatConfig,
    layout: Layout,
    target_train: Part,
    validation: pd.DataFrame,
    candidates: Part,
    teacher: LoadedModel | None,
    task: str,
) -> dict[str, Any]:
    """Fit one student variant: BCE on weighted rows plus (optionally) adaptive KD.

    ``target_train`` and ``candidates`` are streamed parts (the candidates carry their
    importance weights). ``teacher`` serves the distillation (``kd_enabled``) and, with
    ``student_init_from_teacher``, the embedding initialisation; either may be off.
    """
    target_rows, _ = part_totals(target_train)
    source_rows, source_weight_sum = part_totals(candidates)
    use_kd = teacher is not None and cfg.kd_enabled and cfg.kd_lambda > 0

    recipe = Recipe({**ecat_student_arch(cfg), "kd": use_kd}, cfg.student_lr, student_phases(target_train, candidates, cfg),
                    hooks=DistillHooks(teacher, cfg, DayCache(layout, ds)) if use_kd else TrainHooks(),
                    embedding_init=teacher if cfg.student_init_from_teacher else None)
    return fit_day(
        name, ds, cfg, layout, recipe, holdout=validation, task=task,
        manifest_extra={
            "target_rows": target_rows, "source_rows": source_rows, "source_weight_sum": source_weight_sum,
            "init_from_teacher": bool(cfg.student_init_from_teacher and teacher is not None),
            "kd": {"enabled": use_kd, "lambda": cfg.kd_lambda, "temperature": cfg.kd_temperature,
                   "adaptive": cfg.kd_adaptive, "hidden": cfg.kd_hidden, "logit": cfg.kd_logit},
        },
    )
