"""domain_reweight: fine sample transfer, the day's importance weights of the graph candidates.

The method (a domain classifier behind gradient reversal reading (x, y), clipped and
normalised density-ratio weights, dropping below ``weight_threshold``) lives in
:mod:`ecat_tasks.models.reweighting`, shared with the "no graph" ablation; this step reads the
day's inputs, runs it, publishes ``selection/weights/ds=`` and logs the summary line.
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
from ecat_tasks.models.reweighting import Reweighting, effective_sample_size, reweight
from ecat_tasks.models.stream import LakeStream
from ecat_tasks.storage import Layout, atomic_dir, clean_stale_tmp, write_manifest

log = logging.getLogger(__name__)


def domain_reweight(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    """Task entry point: weight the graph candidates of ``ds``; write selection/weights/ds=."""
    layout = layout or Layout()
    t0 = time.perf_counter()
    graph = graph_candidates_ids(ds, layout)
    if graph.num_rows == 0:
        raise ValueError(f"graph_select kept no candidates for ds={ds}: nothing to reweight (check graph_select's log)")
    graph_ids = graph.column("sample_id").combine_chunks()
    candidates = source_subset_part(ds, layout, graph_ids)
    if cfg.reweight_enabled:
        rw = reweight(target_train_part([ds], cfg, layout), candidates, cfg)
    else:
        ids = pa.chunked_array([t.column("sample_id").combine_chunks() for t in LakeStream([candidates], ["sample_id"]).tables()],
                               type=pa.string())
        rw = Reweighting.unweighted(np.full(len(ids), np.nan), float("nan"), [], uniform=False, sample_id=ids)
    if len(rw.sample_id) < graph.num_rows:
        raise ValueError(f"{graph.num_rows - len(rw.sample_id)} graph candidates of ds={ds} are not in the source "
                         f"partition: re-run graph_select for this ds")
    score = graph.column("graph_score").to_numpy()[pc.index_in(rw.sample_id, value_set=graph_ids).to_numpy()]
    out = pa.table({
        "sample_id": rw.sample_id,
        "graph_score": score.astype(np.float64),
        "domain_prob": rw.domain_prob,
        "weight": rw.weight,
    }).filter(pa.array(rw.keep))
    out = out.take(pc.sort_indices(out, sort_keys=[("sample_id", "ascending")]))
    out_dir = layout.partition("selection/weights", ds)
    clean_stale_tmp(out_dir.parent)
    kept_w = rw.weight[rw.keep]
    q = np.quantile(kept_w, [0.05, 0.5, 0.95]) if len(kept_w) else np.zeros(3)
    ess = effective_sample_size(kept_w)
    stats = {
        "candidates": int(len(rw.keep)), "kept": int(rw.keep.sum()), "dropped_share": float(1 - rw.keep.mean()),
        "discriminator_auc": rw.discriminator_auc, "weight_q05": float(q[0]), "weight_median": float(q[1]),
        "weight_q95": float(q[2]), "ess": ess, "ess_share": ess / max(len(kept_w), 1), "losses": rw.losses,
        "enabled": cfg.reweight_enabled, "uniform_fallback": rw.uniform,
    }
    with atomic_dir(out_dir) as tmp:
        pq.write_table(out, tmp / "weights.parquet")
        manifest = write_manifest(tmp, "domain_reweight", ds, rows=int(out.num_rows), **stats,
                                  parameters={k: getattr(cfg, k) for k in ("grl_lambda", "weight_max", "weight_threshold",
                                                                           "reweight_min_auc", "reweight_epochs", "seed")})
    secs = time.perf_counter() - t0
    if cfg.reweight_enabled and rw.discriminator_auc > 0.95:
        log.warning("discriminator AUC %.3f: target and candidates are almost separable; weights will be extreme "
                    "and few candidates useful (check graph_select's selection)", rw.discriminator_auc)
    if rw.uniform:
        log.warning("discriminator AUC %.3f on held-out pairs is below reweight_min_auc %.2f: its weights would be "
                    "noise, so every candidate keeps weight 1 (nothing dropped)", rw.discriminator_auc, cfg.reweight_min_auc)
    if stats["dropped_share"] > 0.9:
        log.warning("domain_reweight dropped %.0f%% of candidates: the student sees little source data", 100 * stats["dropped_share"])
    if not cfg.reweight_enabled:
        note = " (reweighting disabled: all weights 1)"
    elif rw.uniform:
        note = " (weights 1: discriminator below reweight_min_auc)"
    else:
        note = ""
    log.info(
        "domain_reweight ds=%s: %d candidates -> kept %d (dropped %.1f%%), discriminator AUC %.3f, weights q05/median/q95 "
        "%.2f/%.2f/%.2f, ESS %.0f (%.0f%% of kept), wrote %s in %.1fs%s",
        ds, stats["candidates"], stats["kept"], 100 * stats["dropped_share"], rw.discriminator_auc, q[0], q[1], q[2],
        ess, 100 * stats["ess_share"], out_dir, secs, note,
    )
    return {"path": str(out_dir), "ds": ds, "kept": stats["kept"], "candidates": stats["candidates"],
            "discriminator_auc": rw.discriminator_auc, "ess": ess, "checksum": manifest["checksum"], "seconds": round(secs, 2)}
