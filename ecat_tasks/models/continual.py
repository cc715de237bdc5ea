"""One day of a model's continual chain: find the warm start, train, check, publish.

Shared by the teacher, the student and every baseline. Each job is its own function:
:func:`~ecat_tasks.models.store.find_warm_start` (the newest checkpoint of the same model
dated before ``ds``), :func:`~ecat_tasks.models.trainer.train` (vocabularies admit new ids
within the spec's bounds, optimiser state carries over), :func:`check_before_publish`
(health checks and the validation AUC) and :func:`~ecat_tasks.models.store.publish`
(``models/<name>/ds=`` written atomically with its manifest). Rerunning a day starts from
the same earlier checkpoint with the same seed, so it replaces its outputs exactly.

The manifest keeps the model's dense profile, which ``validate`` checks the next day's data
against. The names other modules import from here (``load_model``, ``Phase``, ...) live in
:mod:`~ecat_tasks.models.model`, :mod:`~ecat_tasks.models.trainer` and
:mod:`~ecat_tasks.models.store`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from ecat_tasks.config import EcatConfig
from ecat_tasks.metrics import auc
from ecat_tasks.models.health import check_health
from ecat_tasks.models.model import LoadedModel, build_network, load_model
from ecat_tasks.models.store import checkpoint_arch, find_warm_start, publish
from ecat_tasks.models.trainer import Phase, Recipe, TrainedModel, TrainHooks, copy_embeddings, pretrain_finetune, train
from ecat_tasks.spec import spec_of
from ecat_tasks.splits import slice_settings
from ecat_tasks.storage import Layout

# load_model is also what a registered champion's pyfunc imports from here
__all__ = ["LoadedModel", "Phase", "Recipe", "TrainHooks", "build_network", "check_before_publish", "checkpoint_arch",
           "copy_embeddings", "fit_day", "load_model", "phase_batches", "pretrain_finetune"]


def fit_day(name: str, ds: str, cfg: EcatConfig, layout: Layout, recipe: Recipe, *,
            holdout: pd.DataFrame | None = None, task: str = "train", init_from: Path | None = None,
            manifest_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train model ``name`` for ``ds`` by ``recipe`` and publish it; returns its manifest.

    Warm-starts from ``init_from``, else from the newest checkpoint of ``name`` before ``ds``;
    ``holdout`` (the validation slice) is what the health checks and the AUC read.
    """
    t0 = time.perf_counter()
    spec = spec_of(cfg)  # the run's features and vocabulary bounds
    warm = find_warm_start(layout, name, ds, init_from)
    trained = train(recipe, warm, cfg, name, spec.model_features(), spec.path)
    health, holdout_auc = check_before_publish(name, ds, cfg, trained, holdout)
    trained.to_cpu()
    return publish(
        layout, name, ds, task, trained,
        **warm.provenance(),
        rows=trained.rows,
        phases=[{"name": p.name, "rows": n, "epochs": p.epochs, "batch_size": b}
                for p, n, b in zip(recipe.phases, trained.phase_rows, trained.phase_batches)],
        losses=[round(x, 6) for x in trained.losses],
        holdout_auc=holdout_auc,
        health=health,
        dense_profile=trained.dense_profile,
        new_ids=trained.new_ids,
        arch=trained.loaded.arch,
        lr=recipe.lr,
        batch_size=max(trained.phase_batches),  # the largest phase's; each phase's is in ``phases``
        seed=cfg.seed,
        slices=slice_settings(cfg),
        device=str(trained.device),
        seconds=round(time.perf_counter() - t0, 2),
        **(manifest_extra or {}),
    )


def phase_batches(manifest: dict[str, Any]) -> str:
    """The batch size each phase of a model's manifest trained with, for a summary line ("1024/256")."""
    return "/".join(str(p["batch_size"]) for p in manifest["phases"])


def check_before_publish(name: str, ds: str, cfg: EcatConfig, trained: TrainedModel,
                         holdout: pd.DataFrame | None) -> tuple[dict[str, Any], float | None]:
    """Health checks on the trained model (raise ModelHealthError) and its AUC on ``holdout``.

    Predictions are checked on ``holdout`` (the callers pass the validation slice: rows the
    model did not train on); without one, on the first rows of the last phase.
    """
    rows = holdout if holdout is not None and len(holdout) else trained.first_rows()
    probs = trained.loaded.score(rows, cfg.label)
    modules = [trained.loaded.model, *trained.extras.values()]
    health = check_health(name, ds, trained.losses, modules, probs, cfg.health_min_pred_std)
    holdout_auc = None
    if rows is holdout and holdout[cfg.label].nunique() == 2:
        holdout_auc = auc(holdout[cfg.label].to_numpy(), probs)
    return health, holdout_auc
