"""train_baselines: the models ECAT must beat, and its ablations, trained side by side.

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
Ablations of ECAT (same student, one component off): no_graph (random candidates of the
same cap, reweighted), no_weights (graph candidates, weight 1), no_kd, fixed_kd,
no_teacher_init (student embeddings not initialised from the teacher's).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecat_tasks.config import EcatConfig
from ecat_tasks.domain_reweight import reweight
from ecat_tasks.inputs import (
    candidates_part, graph_candidates_ids, source_part, source_subset_part, target_day, target_train_part,
)
from ecat_tasks.models.continual import Phase, checkpoint_arch, fit_day, load_model
from ecat_tasks.models.stream import Part
from ecat_tasks.storage import Layout
from ecat_tasks.student_distill import student_arch, train_student

log = logging.getLogger(__name__)


def _random_ids(source_ids: pa.ChunkedArray, n: int, seed: int) -> pa.Array:
    """A seeded random sample of ``n`` source sample_ids, in file order."""
    rng = np.random.default_rng([seed, 17])
    idx = np.sort(rng.choice(len(source_ids), size=min(n, len(source_ids)), replace=False))
    return source_ids.take(pa.array(idx)).combine_chunks()


def train_baselines(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    layout = layout or Layout()
    t0 = time.perf_counter()
    validation = target_day(ds, cfg, layout).validation
    target_train, source = target_train_part([ds], cfg, layout), source_part([ds], layout)
    arch = student_arch(cfg)
    results: dict[str, dict[str, Any]] = {}

    def fit(name: str, phases: list[Phase], model_arch: dict[str, Any] = arch, init_from: Path | None = None) -> None:
        results[name] = fit_day(name, ds, cfg, layout, phases, model_arch, cfg.student_lr, validation,
                                init_from=init_from, task="train_baselines")

    if "target_only" in cfg.baselines:
        fit("target_only", [Phase([target_train], cfg.student_epochs, name="target")])
    if "mixed" in cfg.baselines:
        fit("mixed", [Phase([target_train, source], cfg.student_epochs, name="target+all_source")])
    if "mixed_scenario" in cfg.baselines:
        fit("mixed_scenario", [Phase([target_train, source], cfg.student_epochs, name="target+all_source")],
            {**arch, "kind": "ranking_scenario"})
    if "finetune" in cfg.baselines:
        fit("finetune", [Phase([source], 1, name="pretrain_source"), Phase([target_train], cfg.student_epochs, name="finetune_target")])
    if "teacher_finetune" in cfg.baselines:
        teacher_dir = layout.require(layout.model("teacher", ds))
        fit("teacher_finetune", [Phase([target_train], cfg.student_epochs, name="finetune_target")],
            checkpoint_arch(teacher_dir), init_from=teacher_dir)
    if "star" in cfg.baselines:
        fit("star", [Phase([target_train, source], 1, name="all_scenarios")], {**arch, "kind": "star"})

    if cfg.ablations:
        candidates, _, _ = candidates_part(ds, layout)
        teacher = load_model(layout.require(layout.model("teacher", ds)))
        variants: dict[str, tuple[Part, EcatConfig]] = {}
        if "no_graph" in cfg.ablations or "no_weights" in cfg.ablations:
            graph_ids = graph_candidates_ids(ds, layout).column("sample_id").combine_chunks()
        if "no_graph" in cfg.ablations:
            source_ids = pq.read_table(layout.require(layout.lake("source", ds)), columns=["sample_id"]).column("sample_id")
            rand = source_subset_part(ds, layout, _random_ids(source_ids, len(graph_ids), cfg.seed), name="random")
            rw = reweight(target_train, rand, cfg)
            kept = rw.sample_id.filter(pa.array(rw.keep)).combine_chunks()
            variants["no_graph"] = (source_subset_part(ds, layout, kept, rw.weight[rw.keep], name="random_weighted"), cfg)
        if "no_weights" in cfg.ablations:
            variants["no_weights"] = (source_subset_part(ds, layout, graph_ids, name="graph_unweighted"), cfg)
        if "no_kd" in cfg.ablations:
            variants["no_kd"] = (candidates, cfg.replace(kd_enabled=False))
        if "fixed_kd" in cfg.ablations:
            variants["fixed_kd"] = (candidates, cfg.replace(kd_adaptive=False))
        if "no_teacher_init" in cfg.ablations:
            variants["no_teacher_init"] = (candidates, cfg.replace(student_init_from_teacher=False))
        for name, (cands, vcfg) in variants.items():
            results[name] = train_student(name, ds, vcfg, layout, target_train, validation, cands, teacher, "train_baselines")

    secs = time.perf_counter() - t0
    summary = ", ".join(
        f"{n}={'n/a' if r['holdout_auc'] is None else format(r['holdout_auc'], '.4f')}"
        f"({'warm' if not r['cold_start'] else 'cold'})" for n, r in results.items()
    )
    log.info("train_baselines ds=%s: %d models trained in %.1fs; validation AUC: %s", ds, len(results), secs, summary)
    return {"ds": ds, "seconds": round(secs, 2),
            "models": {n: {"path": r["path"], "holdout_auc": r["holdout_auc"], "warm_start_ds": r["warm_start_ds"]}
                       for n, r in results.items()}}
