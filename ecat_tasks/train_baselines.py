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
import pandas as pd

from ecat_tasks.config import EcatConfig
from ecat_tasks.domain_reweight import reweight
from ecat_tasks.inputs import source_day, target_day, weighted_candidates
from ecat_tasks.models.continual import Phase, fit_day, load_model, checkpoint_arch
from ecat_tasks.storage import Layout
from ecat_tasks.student_distill import student_arch, train_student

log = logging.getLogger(__name__)


def _random_candidates(source: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 17])
    idx = np.sort(rng.choice(len(source), size=min(n, len(source)), replace=False))
    return source.iloc[idx].reset_index(drop=True)


def train_baselines(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    layout = layout or Layout()
    t0 = time.perf_counter()
    split = target_day(ds, cfg, layout)
    target_train, validation = split.train, split.validation
    source = source_day(ds, layout)
    arch = student_arch(cfg)
    results: dict[str, dict[str, Any]] = {}

    def fit(name: str, phases: list[Phase], model_arch: dict[str, Any] = arch, init_from: Path | None = None) -> None:
        results[name] = fit_day(name, ds, cfg, layout, phases, model_arch, cfg.student_lr, validation,
                                init_from=init_from, task="train_baselines")

    if "target_only" in cfg.baselines:
        fit("target_only", [Phase(target_train, cfg.student_epochs, name="target")])
    if "mixed" in cfg.baselines:
        fit("mixed", [Phase(pd.concat([target_train, source], ignore_index=True), cfg.student_epochs, name="target+all_source")])
    if "mixed_scenario" in cfg.baselines:
        fit("mixed_scenario", [Phase(pd.concat([target_train, source], ignore_index=True), cfg.student_epochs,
                                     name="target+all_source")], {**arch, "kind": "ranking_scenario"})
    if "finetune" in cfg.baselines:
        fit("finetune", [Phase(source, 1, name="pretrain_source"), Phase(target_train, cfg.student_epochs, name="finetune_target")])
    if "teacher_finetune" in cfg.baselines:
        teacher_dir = layout.require(layout.model("teacher", ds))
        fit("teacher_finetune", [Phase(target_train, cfg.student_epochs, name="finetune_target")],
            checkpoint_arch(teacher_dir), init_from=teacher_dir)
    if "star" in cfg.baselines:
        fit("star", [Phase(pd.concat([target_train, source], ignore_index=True), 1, name="all_scenarios")],
            {**arch, "kind": "star"})

    if cfg.ablations:
        candidates, weight = weighted_candidates(ds, layout, source)
        teacher = load_model(layout.require(layout.model("teacher", ds)))
        variants: dict[str, tuple[pd.DataFrame, np.ndarray, EcatConfig]] = {}
        if "no_graph" in cfg.ablations:
            graph_kept = len(pd.read_parquet(layout.require(layout.partition("selection/graph", ds)), columns=["sample_id"]))
            rand = _random_candidates(source, graph_kept, cfg.seed)
            rw = reweight(target_train, rand, cfg)
            variants["no_graph"] = (rand[rw.keep].reset_index(drop=True), rw.weight[rw.keep], cfg)
        if "no_weights" in cfg.ablations:
            graph = pd.read_parquet(layout.require(layout.partition("selection/graph", ds)), columns=["sample_id"])
            cands = source.merge(graph, on="sample_id").sort_values("sample_id", kind="stable").reset_index(drop=True)
            variants["no_weights"] = (cands, np.ones(len(cands), np.float32), cfg)
        if "no_kd" in cfg.ablations:
            variants["no_kd"] = (candidates, weight, cfg.replace(kd_enabled=False))
        if "fixed_kd" in cfg.ablations:
            variants["fixed_kd"] = (candidates, weight, cfg.replace(kd_adaptive=False))
        if "no_teacher_init" in cfg.ablations:
            variants["no_teacher_init"] = (candidates, weight, cfg.replace(student_init_from_teacher=False))
        for name, (cands, w, vcfg) in variants.items():
            results[name] = train_student(name, ds, vcfg, layout, target_train, validation, cands, np.asarray(w),
                                          teacher, "train_baselines")

    secs = time.perf_counter() - t0
    summary = ", ".join(
        f"{n}={'n/a' if r['holdout_auc'] is None else format(r['holdout_auc'], '.4f')}"
        f"({'warm' if not r['cold_start'] else 'cold'})" for n, r in results.items()
    )
    log.info("train_baselines ds=%s: %d models trained in %.1fs; validation AUC: %s", ds, len(results), secs, summary)
    return {"ds": ds, "seconds": round(secs, 2),
            "models": {n: {"path": r["path"], "holdout_auc": r["holdout_auc"], "warm_start_ds": r["warm_start_ds"]}
                       for n, r in results.items()}}
