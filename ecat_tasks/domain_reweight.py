"""domain_reweight: fine sample transfer, the day's importance weights of the graph candidates.

The method (a cross-fitted domain classifier on the day's frozen teacher's hidden layer and the
label, density-ratio weights tempered to an ESS floor, clipped to [``weight_floor``,
``weight_max``], never dropping a row) lives in :mod:`ecat_tasks.models.reweighting`, shared
with the "no graph" ablation; this step reads the day's inputs and teacher, runs it, publishes
``selection/weights/ds=`` and logs the summary line. It runs after teacher_refresh.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ecat_tasks.config import EcatConfig
from ecat_tasks.inputs import graph_candidates_ids, source_subset_part, target_train_part
from ecat_tasks.models.model import load_model
from ecat_tasks.models.reweighting import Reweighting, clip_to_mean_one, effective_sample_size, reweight
from ecat_tasks.models.stream import LakeStream
from ecat_tasks.models.training import select_device
from ecat_tasks.storage import Layout, atomic_dir, clean_stale_tmp, write_manifest

log = logging.getLogger(__name__)


def domain_reweight(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    """Task entry point: weight the graph candidates of ``ds``; write selection/weights/ds=."""
    layout = layout or Layout()
    t0 = time.perf_counter()
    graph = graph_candidates_ids(ds, layout)
    if graph.num_rows == 0:
        raise ValueError(f"graph_select kept no candidates for ds={ds}: nothing to reweight (check graph_select's log)")
    # the ids once (one array) and the scores, not the table: at 16M rows each copy of the ids is ~0.25 GB
    graph_ids, graph_score, n_graph = graph.column("sample_id").combine_chunks(), graph.column("graph_score").to_numpy(), graph.num_rows
    graph_weight = graph.column("graph_weight").to_numpy()
    del graph
    candidates = source_subset_part(ds, layout, graph_ids)
    if cfg.reweight_enabled:
        teacher = load_model(layout.require(layout.model("teacher", ds)), select_device(cfg))
        rw = reweight(target_train_part([ds], cfg, layout), candidates, cfg, teacher)
    else:
        ids = pa.chunked_array([t.column("sample_id").combine_chunks() for t in LakeStream([candidates], ["sample_id"]).tables()],
                               type=pa.string())
        rw = Reweighting.unweighted(np.full(len(ids), np.nan), float("nan"), [], uniform=False, sample_id=ids)
    if len(rw.sample_id) < n_graph:
        raise ValueError(f"{n_graph - len(rw.sample_id)} graph candidates of ds={ds} are not in the source "
                         f"partition: re-run graph_select for this ds")
    at = pc.index_in(rw.sample_id, value_set=graph_ids).to_numpy()
    score, g_weight = graph_score[at], graph_weight[at]
    graph_weighted = not np.all(g_weight == 1.0)  # soft selection
    # the graph's weight times the domain weight, clipped and rescaled to mean 1 again
    weight = clip_to_mean_one(rw.weight * g_weight, cfg.weight_floor, cfg.weight_max) if graph_weighted else rw.weight
    out = pa.table({
        "sample_id": rw.sample_id,
        "graph_score": score.astype(np.float64),
        "graph_weight": g_weight.astype(np.float64),
        "domain_prob": rw.domain_prob,
        "weight": weight,
    })
    out = out.take(pc.sort_indices(out, sort_keys=[("sample_id", "ascending")]))
    out_dir = layout.partition("selection/weights", ds)
    clean_stale_tmp(out_dir.parent)
    q = np.quantile(weight, [0.05, 0.5, 0.95])
    ess = effective_sample_size(weight)
    secs = time.perf_counter() - t0
    stats = {
        "candidates": int(len(weight)), "discriminator_auc": rw.discriminator_auc, "alpha": rw.alpha,
        "weight_q05": float(q[0]), "weight_median": float(q[1]), "weight_q95": float(q[2]),
        "ess": ess, "ess_share": ess / max(len(weight), 1), "floor_share": rw.floor_share(cfg.weight_floor),
        "graph_weighted": graph_weighted,
        "fit_rows": rw.fit_rows, "losses": rw.losses, "enabled": cfg.reweight_enabled, "uniform_fallback": rw.uniform,
        "seconds": round(secs, 2),
    }
    with atomic_dir(out_dir) as tmp:
        pq.write_table(out, tmp / "weights.parquet")
        manifest = write_manifest(tmp, "domain_reweight", ds, rows=int(out.num_rows), **stats,
                                  parameters={k: getattr(cfg, k) for k in (
                                      "reweight_folds", "reweight_fit_rows", "reweight_min_ess", "weight_floor",
                                      "weight_max", "reweight_min_auc", "reweight_epochs", "reweight_per_label",
                                      "seed")})
    if rw.uniform and cfg.reweight_enabled:
        log.warning("discriminator AUC %.3f out of fold is below reweight_min_auc %.2f: its weights would be "
                    "noise, so every candidate keeps weight 1", rw.discriminator_auc, cfg.reweight_min_auc)
    if cfg.reweight_enabled and not rw.uniform and rw.alpha < 0.2:
        log.warning("domain_reweight ds=%s: the ESS floor tempered the density ratio to alpha %.2f: target and "
                    "candidates are nearly separable on the teacher's representation (check graph_select's "
                    "selection)", ds, rw.alpha)
    note = (" (reweighting disabled: all weights 1)" if not cfg.reweight_enabled
            else " (weights 1: discriminator below reweight_min_auc)" if rw.uniform else "")
    log.info(
        "domain_reweight ds=%s: %d candidates (none dropped), discriminator AUC (out of fold) %.3f, alpha %.2f, "
        "weights q05/median/q95 %.2f/%.2f/%.2f, at floor %.1f%%, ESS %.0f (%.0f%%), fit on %d rows, wrote %s in %.1fs%s",
        ds, stats["candidates"], rw.discriminator_auc, rw.alpha, q[0], q[1], q[2], 100 * stats["floor_share"], ess,
        100 * stats["ess_share"], rw.fit_rows, out_dir, secs, note,
    )
    return {"path": str(out_dir), "ds": ds, "rows": stats["candidates"], "candidates": stats["candidates"],
            "discriminator_auc": rw.discriminator_auc, "alpha": rw.alpha, "ess": ess, "checksum": manifest["checksum"], "seconds": round(secs, 2)}
