"""Comparison models: the models ECAT must beat, and its ablations, one training task each.

The DAG maps :func:`train_comparison` over :func:`plan_comparisons`' list (one task per model,
retried alone, on the train queue); ``compare_every_days`` sets how often each is retrained.
:func:`train_baselines` trains every due model in one process (benchmarks, the direct runner).

Baselines (student-sized unless noted), each a continual chain of its own unless noted:
- target_only: target-train rows only.
- mixed: target plus every source row of the day, unweighted.
- mixed_scenario: mixed, with the scenario as one more sparse field (its embedding enters
  the pairwise products), so one model can learn where scenarios differ.
- finetune: a pass over the day's source rows, then the target rows (pre-train, fine-tune).
- teacher_finetune (teacher-sized): the day's teacher (weights, vocabularies, optimiser
  state) fine-tuned on the target-train rows. It is not a chain of its own: every day starts
  again from that day's teacher, which carries the continual state; yesterday's fine-tune is
  discarded. The simplest transfer a platform team would try first.
- star: a STAR-style multi-scenario model on the whole entire space with the scenario as
  input (shared plus scenario-specific weights); the platform's default choice.
Ablations of ECAT (same student, one setting switched): no_graph (random candidates of the
same cap, reweighted), no_weights (graph candidates, no domain weights), no_kd, fixed_kd,
teacher_init / no_teacher_init (student embeddings initialised from the teacher's, or not),
no_scenario (the student without the scenario field).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa

from ecat_tasks.config import EcatConfig
from ecat_tasks.inputs import (
    candidates_part, graph_candidates_ids, source_part, source_sample_ids, source_subset_part, target_day,
    target_train_part,
)
from ecat_tasks.models.continual import (
    Phase, Recipe, checkpoint_arch, fit_day, load_model, phase_batches, pretrain_finetune,
)
from ecat_tasks.models.reweighting import reweight
from ecat_tasks.models.stream import Part
from ecat_tasks.models.student import student_arch, train_student
from ecat_tasks.models.training import select_device
from ecat_tasks.storage import Layout, shift_ds

log = logging.getLogger(__name__)


def _random_ids(source_ids: pa.ChunkedArray, n: int, seed: int) -> pa.Array:
    """A seeded random sample of ``n`` source sample_ids, in file order."""
    rng = np.random.default_rng([seed, 17])
    idx = np.sort(rng.choice(len(source_ids), size=min(n, len(source_ids)), replace=False))
    return source_ids.take(pa.array(idx)).combine_chunks()


def comparison_models(cfg: EcatConfig) -> list[str]:
    """Every configured comparison model: the baselines, then the ablations."""
    return [*cfg.baselines, *cfg.ablations]


def plan_comparisons(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> list[str]:
    """The comparison models due on ``ds`` under the cadence ``compare_every_days``.

    A model is due when it has no checkpoint before ``ds`` or its newest one is at least
    ``compare_every_days`` old; a rerun of ``ds`` therefore makes the same decision. The DAG
    maps one training task over this list (empty: nothing to train today).
    """
    layout = layout or Layout()
    due, skipped = [], {}
    for model in comparison_models(cfg):
        prev = layout.latest_before(f"models/baselines/{model}", ds)
        if prev is None or prev <= shift_ds(ds, -cfg.compare_every_days):
            due.append(model)
        else:
            skipped[model] = prev
    log.info("plan_comparisons ds=%s: every %d day(s); %d to train (%s), %d not due (last trained: %s)",
             ds, cfg.compare_every_days, len(due), ", ".join(due) or "none", len(skipped),
             ", ".join(f"{m} {d}" for m, d in skipped.items()) or "-")
    return due


def train_comparison(ds: str, cfg: EcatConfig, layout: Layout | None = None, model: str = "") -> dict[str, Any]:
    """Train one comparison model for ``ds`` (one mapped task of the DAG; retried alone)."""
    layout = layout or Layout()
    if model not in comparison_models(cfg):
        raise ValueError(f"comparison model {model!r} is not configured; configured: {comparison_models(cfg)}")
    t0 = time.perf_counter()
    validation = target_day(ds, cfg, layout).validation
    target_train = target_train_part([ds], cfg, layout)
    if model in cfg.baselines:
        m = _fit_baseline(model, ds, cfg, layout, target_train, validation)
    else:
        m = _fit_ablation(model, ds, cfg, layout, target_train, validation)
    secs = time.perf_counter() - t0
    auc = "n/a" if m["holdout_auc"] is None else f"{m['holdout_auc']:.4f}"
    log.info("train_comparison ds=%s model=%s: %s from %s, %d rows (batch %s), loss %.4f, validation AUC %s, "
             "wrote %s in %.1fs", ds, model, "cold start" if m["cold_start"] else "warm start",
             m["warm_start_ds"] or "scratch", m["rows"], phase_batches(m), m["losses"][-1], auc, m["path"], secs)
    return {"ds": ds, "model": model, "path": m["path"], "holdout_auc": m["holdout_auc"],
            "warm_start_ds": m["warm_start_ds"], "cold_start": m["cold_start"], "rows": m["rows"],
            "seconds": round(secs, 2)}


def _fit_baseline(model: str, ds: str, cfg: EcatConfig, layout: Layout, target_train: Part,
                  validation: Any) -> dict[str, Any]:
    source = source_part([ds], layout)
    arch = student_arch(cfg)
    init_from = None
    if model == "target_only":
        phases = [Phase([target_train], cfg.student_epochs, name="target")]
    elif model == "mixed":
        phases = [Phase([target_train, source], cfg.student_epochs, name="target+all_source")]
    elif model == "mixed_scenario":
        phases = [Phase([target_train, source], cfg.student_epochs, name="target+all_source")]
        arch = {**arch, "kind": "ranking_scenario"}
    elif model == "finetune":
        phases = pretrain_finetune(source, target_train, cfg.student_epochs)
    elif model == "teacher_finetune":
        init_from = layout.require(layout.model("teacher", ds))
        phases = [Phase([target_train], cfg.student_epochs, name="finetune_target")]
        arch = checkpoint_arch(init_from)
    elif model == "star":
        phases = [Phase([target_train, source], 1, name="all_scenarios")]
        arch = {**arch, "kind": "star"}
    else:
        raise ValueError(f"unknown baseline {model!r}")
    return fit_day(model, ds, cfg, layout, Recipe(arch, cfg.student_lr, phases), holdout=validation,
                   task="train_comparison", init_from=init_from)


def _fit_ablation(model: str, ds: str, cfg: EcatConfig, layout: Layout, target_train: Part,
                  validation: Any) -> dict[str, Any]:
    teacher = load_model(layout.require(layout.model("teacher", ds)), select_device(cfg))
    vcfg = cfg
    if model == "no_graph":  # random candidates of the graph's cap, reweighted like the graph's
        graph_ids = graph_candidates_ids(ds, layout).column("sample_id")
        source_ids = source_sample_ids(ds, layout)
        rand = source_subset_part(ds, layout, _random_ids(source_ids, len(graph_ids), cfg.seed), name="random")
        rw = reweight(target_train, rand, cfg, teacher)
        candidates = source_subset_part(ds, layout, rw.sample_id.combine_chunks(), rw.weight, name="random_weighted")
    elif model == "no_weights":  # graph candidates without domain weights (the graph's own: 1 unless soft)
        graph = graph_candidates_ids(ds, layout)
        g_weight = graph.column("graph_weight").to_numpy().astype(np.float32)
        candidates = source_subset_part(ds, layout, graph.column("sample_id").combine_chunks(),
                                        None if np.all(g_weight == 1.0) else g_weight, name="graph_unweighted")
    else:
        candidates, _, _ = candidates_part(ds, layout)
        overrides = {"no_kd": {"kd_enabled": False}, "fixed_kd": {"kd_adaptive": False},
                     "teacher_init": {"student_init_from_teacher": True},
                     "no_teacher_init": {"student_init_from_teacher": False}, "no_scenario": {"student_scenario": False}}
        if model not in overrides:
            raise ValueError(f"unknown ablation {model!r}")
        vcfg = cfg.replace(**overrides[model])
    return train_student(model, ds, vcfg, layout, target_train, validation, candidates, teacher, "train_comparison")


def train_baselines(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    """Every comparison model due on ``ds``, one after another (the DAG maps them as tasks)."""
    layout = layout or Layout()
    t0 = time.perf_counter()
    results = {m: train_comparison(ds, cfg, layout, m) for m in plan_comparisons(ds, cfg, layout)}
    secs = time.perf_counter() - t0
    summary = ", ".join(
        f"{n}={'n/a' if r['holdout_auc'] is None else format(r['holdout_auc'], '.4f')}"
        f"({'warm' if not r['cold_start'] else 'cold'})" for n, r in results.items()
    )
    log.info("train_baselines ds=%s: %d models trained in %.1fs; validation AUC: %s", ds, len(results), secs, summary)
    return {"ds": ds, "seconds": round(secs, 2),
            "models": {n: {"path": r["path"], "holdout_auc": r["holdout_auc"], "warm_start_ds": r["warm_start_ds"]}
                       for n, r in results.items()}}
