"""graph_select: coarse sample transfer by random walks with restart on the interaction graph.

The entire space (source) is far larger than the target mini-app, and most of it is
irrelevant or harmful to it. This step keeps only the source samples of ``ds`` whose user
and item lie close to the target in the user-item graph of the lookback window:

1. **Graph.** A DGL heterograph over the window's source and target interactions, with
   node types ``user``, ``item``, ``category``. Raw ids (any int64) are remapped to
   contiguous node ids. Duplicate (user, item) pairs aggregate into one edge weighted by
   ``sum(edge_weight_impression + edge_weight_click * click + edge_weight_conversion *
   conversion)``; both directions are stored (``interacts`` / ``interacted_by``). Items
   link to their categories both ways (``belongs_to`` / ``contains``).
2. **Walks.** Seeds are the target's users and items in the window (target-train rows only:
   held-out rows, the evaluation data, neither seed the walks nor weigh edges). ``walks_per_seed``
   walks start from every seed; before each of at most ``walk_length`` steps a walk stops
   with probability ``restart_prob`` (it "restarts" as the next walk from a seed), else it
   moves along an out-edge with probability proportional to the edge weight. Visit counts
   over all walks (starting nodes included) estimate the personalised PageRank of the
   target's seed set. From an item, a walk goes to its category with a fixed share
   ``CATEGORY_HOP`` of its moves, and from a category to one of its items in proportion to
   the item's interaction weight: two target items of one category are close even if no
   user links them yet.
3. **Score.** With ``graph_score_norm = "share"``, ``graph_score(u, i) = visits(u) / total
   user visits + visits(i) / total item visits``: the visit shares of the sample's user and
   item, each within its node type (so neither type dominates merely by having fewer nodes);
   a sample whose user and item were never reached scores 0. With ``"degree"``, each node's
   visits are divided by the visits its weighted degree alone would draw (its share of its
   type's edge weight), smoothed by one visit, and a sample scores the geometric mean of its
   user's and item's ratios: a hub visited only as often as its degree predicts scores 1, a
   node the walks favour beyond its popularity scores more.
4. **Select.** ``graph_selection = "top_k"``: keep the top-scoring source samples of ``ds``
   with a positive score, at most ``floor(max_source_ratio * target rows of ds)``, each of
   weight 1. ``"soft"``: coverage first, every source row of ``ds`` is a candidate (at most
   ``max_source_rows``, a compute budget: over it, a seeded random sample of that many), weighted by
   :func:`graph_weights`; domain_reweight multiplies these weights into its own. Ties break
   by ``sample_id``. With ``graph_enabled`` off (the "no graph" ablation) a seeded random
   sample of the same cap is kept instead, with ``graph_score`` NaN and weight 1.

Why not ``dgl.sampling.random_walk(prob='weight')`` for the walks: in DGL 1.1.3 a weighted
step copies the whole neighbour probability vector of the current node, O(degree) per
step; on a skewed graph walks pile up on the popular items, and 16M interactions take
minutes. The default engine (``"cdf"``) samples the same transition law by inverse CDF
over DGL's own CSR (one vectorised ``searchsorted`` per step, O(log E)). ``engine="dgl"``
keeps DGL's sampler for cross-checks; the tests check that both give the same visits.

Output: ``selection/graph/ds=<ds>/candidates.parquet`` with (sample_id, graph_score,
graph_weight), sorted by score descending then sample_id, plus ``_manifest.json``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ecat_tasks.config import EcatConfig
from ecat_tasks.inputs import domain_window, lake_rows, lake_table, target_train_table
from ecat_tasks.spec import KNOWN_LABELS, spec_of
from ecat_tasks.storage import Layout, atomic_dir, clean_stale_tmp, write_manifest

if TYPE_CHECKING:  # pragma: no cover - typing only; dgl is imported lazily
    import dgl

log = logging.getLogger(__name__)

AREA = "selection/graph"
OUTPUT_FILE = "candidates.parquet"
GRAPH_COLUMNS = ["user_id", "item_id", "category_id", "click", "conversion"]  # conversion: when the spec declares it

NTYPES = ("user", "item", "category")
# (source node type, edge type, destination node type)
ETYPES = (
    ("user", "interacts", "item"),
    ("item", "interacted_by", "user"),
    ("item", "belongs_to", "category"),
    ("category", "contains", "item"),
)
# From an item, the share of moves that go through its category rather than to a user.
# Not (yet) an EcatConfig field; a config field of the same name takes precedence.
CATEGORY_HOP = 0.1
# Upper bound on walks per run: with more seeds than MAX_WALKS / walks_per_seed, every
# seed gets fewer walks (at least one), so time and memory stay bounded at any scale.
MAX_WALKS = 4_000_000
# Selection ratios (kept / source rows) outside these bounds get a WARNING in the log.
RATIO_WARN_LOW, RATIO_WARN_HIGH = 0.001, 0.9


# --- graph ------------------------------------------------------------------------------
@dataclass
class InteractionGraph:
    """The DGL heterograph plus the raw id of every node (``ids[ntype][node] = raw id``)."""

    g: "dgl.DGLGraph"
    ids: dict[str, np.ndarray]
    interactions: int
    seconds: float
    strength: dict[str, np.ndarray] = field(default_factory=dict)  # summed edge weight of each user / item

    def num_nodes(self) -> dict[str, int]:
        return {nt: int(self.g.num_nodes(nt)) for nt in NTYPES}

    def num_edges(self) -> dict[str, int]:
        return {et: int(self.g.num_edges(et)) for _, et, _ in ETYPES}


def _interaction_weight(click: np.ndarray, conversion: np.ndarray, cfg: EcatConfig) -> np.ndarray:
    return (cfg.edge_weight_impression
            + cfg.edge_weight_click * click.astype(np.float64)
            + cfg.edge_weight_conversion * conversion.astype(np.float64))


def _category_hop(cfg: EcatConfig) -> float:
    return float(getattr(cfg, "category_hop", CATEGORY_HOP))


def build_graph(interactions: pd.DataFrame | pa.Table, cfg: EcatConfig) -> InteractionGraph:
    """Build the weighted user/item/category heterograph from interaction rows.

    ``interactions`` needs the columns user_id, item_id, category_id, click and, when the
    feature spec declares it, conversion (without it, conversions weigh nothing).
    Vectorised throughout (np.unique on packed int64 keys, bincount for weights), so it
    scales to tens of millions of rows.
    """
    import dgl
    import torch

    t0 = time.perf_counter()
    names = interactions.column_names if isinstance(interactions, pa.Table) else list(interactions.columns)
    cols = {c: _column(interactions, c) for c in GRAPH_COLUMNS if c in names}
    del interactions  # the caller may hand over its only reference: these arrays are all the build needs
    cols.setdefault("conversion", np.zeros(len(cols["user_id"]), np.int64))  # a spec without conversions
    n_rows = len(cols["user_id"])
    # each column is dropped once used and the inverses kept as int32, so the peak holds about
    # one id column's sort at a time (graph_select at 16M rows, bench/RESULTS.md)
    w = _interaction_weight(cols.pop("click"), cols.pop("conversion"), cfg)
    user_ids, u = _unique_inverse(cols.pop("user_id"))
    item_ids, i = _unique_inverse(cols.pop("item_id"))
    cat_ids, c = _unique_inverse(cols.pop("category_id"))
    n_u, n_i, n_c = len(user_ids), len(item_ids), len(cat_ids)

    # One edge per (user, item) pair, weighted by the sum of its interactions' weights.
    pair, pair_inv = np.unique(u.astype(np.int64) * max(n_i, 1) + i, return_inverse=True)
    pair_w = np.bincount(pair_inv.ravel(), weights=w, minlength=len(pair))
    del pair_inv
    keep = pair_w > 0  # zero-weight pairs carry no transition probability
    pair, pair_w = pair[keep], pair_w[keep]
    pu, pi = pair // max(n_i, 1), pair % max(n_i, 1)
    del pair

    # Item-category membership: every (item, category) pair seen (a catalogue may move an
    # item within the window). Item -> category weighs CATEGORY_HOP times the item's
    # interaction weight, so the share of category hops is the same for every item;
    # category -> item weighs the item's interaction weight (popular items more likely).
    ic = np.unique(i.astype(np.int64) * max(n_c, 1) + c)
    mi, mc = ic // max(n_c, 1), ic % max(n_c, 1)
    del ic, u, i, c, w
    item_strength = np.bincount(pi, weights=pair_w, minlength=n_i)
    memberships = np.bincount(mi, minlength=n_i).astype(np.float64)
    to_cat_w = _category_hop(cfg) * item_strength[mi] / np.maximum(memberships[mi], 1.0)
    to_item_w = item_strength[mi]

    idtype = torch.int32 if max(n_u, n_i, n_c, len(pu), len(mi)) < 2**31 - 1 else torch.int64
    np_id = np.int32 if idtype == torch.int32 else np.int64
    tpu, tpi = torch.from_numpy(pu.astype(np_id)), torch.from_numpy(pi.astype(np_id))
    tmi, tmc = torch.from_numpy(mi.astype(np_id)), torch.from_numpy(mc.astype(np_id))
    g = dgl.heterograph(
        {
            ("user", "interacts", "item"): (tpu, tpi),
            ("item", "interacted_by", "user"): (tpi, tpu),
            ("item", "belongs_to", "category"): (tmi, tmc),
            ("category", "contains", "item"): (tmc, tmi),
        },
        num_nodes_dict={"user": n_u, "item": n_i, "category": n_c},
        idtype=idtype,
    )
    pw = torch.from_numpy(pair_w.astype(np.float32))
    g.edges["interacts"].data["weight"] = pw
    g.edges["interacted_by"].data["weight"] = pw
    g.edges["belongs_to"].data["weight"] = torch.from_numpy(to_cat_w.astype(np.float32))
    g.edges["contains"].data["weight"] = torch.from_numpy(to_item_w.astype(np.float32))
    return InteractionGraph(
        g=g, ids={"user": user_ids, "item": item_ids, "category": cat_ids},
        interactions=n_rows, seconds=time.perf_counter() - t0,
        strength={"user": np.bincount(pu, weights=pair_w, minlength=n_u), "item": item_strength},
    )


def _unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and each row's index into them (int32 while it fits)."""
    ids, inverse = np.unique(values, return_inverse=True)
    return ids, inverse.astype(np.int32) if len(ids) < 2**31 - 1 else inverse


def _column(data: pd.DataFrame | pa.Table, name: str) -> np.ndarray:
    if isinstance(data, pa.Table):
        return data.column(name).to_numpy()
    return data[name].to_numpy()


# --- walks ------------------------------------------------------------------------------
@dataclass
class Visits:
    """Visit counts of the walks and their shares within each node type."""

    counts: dict[str, np.ndarray]
    shares: dict[str, np.ndarray]
    seeds: dict[str, int]
    walks: int
    walks_per_seed: int
    seconds: float
    engine: str
    reached: dict[str, float] = field(default_factory=dict)


@dataclass
class _Relation:
    """One out-relation of a node type as a CSR with cumulative weights (for inverse CDF)."""

    dst: int
    indptr: np.ndarray
    indices: np.ndarray
    cw: np.ndarray  # cumulative weights in CSR order, cw[0] = 0, len E + 1
    total: np.ndarray  # out-weight per source node


def _relations(graph: InteractionGraph) -> dict[int, list[_Relation]]:
    g = graph.g
    rels: dict[int, list[_Relation]] = {k: [] for k in range(len(NTYPES))}
    for src, et, dst in ETYPES:
        indptr, indices, eids = (t.numpy() for t in g.adj_tensors("csr", etype=et))
        w = g.edges[et].data["weight"].numpy()[eids.astype(np.int64)]
        cw = np.zeros(len(w) + 1, np.float64)
        np.cumsum(w, dtype=np.float64, out=cw[1:])
        indptr = indptr.astype(np.int64)
        rels[NTYPES.index(src)].append(_Relation(NTYPES.index(dst), indptr, indices, cw, cw[indptr[1:]] - cw[indptr[:-1]]))
    return rels


def _walk_cdf(graph: InteractionGraph, starts: dict[str, np.ndarray], cfg: EcatConfig) -> dict[str, np.ndarray]:
    """Weighted walks with termination, vectorised over walkers (one searchsorted per step)."""
    rng = np.random.default_rng(cfg.seed)
    rels = _relations(graph)
    n_nodes = graph.num_nodes()
    counts = {nt: np.zeros(n_nodes[nt], np.int64) for nt in NTYPES}
    typ = np.concatenate([np.full(len(starts[nt]), NTYPES.index(nt), np.int8) for nt in NTYPES])
    cur = np.concatenate([starts[nt].astype(np.int64) for nt in NTYPES])
    for k, nt in enumerate(NTYPES):
        counts[nt] += np.bincount(cur[typ == k], minlength=n_nodes[nt])
    for _ in range(cfg.walk_length):
        alive = rng.random(len(cur)) >= cfg.restart_prob
        cur, typ = cur[alive], typ[alive]
        if not len(cur):
            break
        u_rel, u_edge = rng.random(len(cur)), rng.random(len(cur))
        new_cur = np.full(len(cur), -1, np.int64)
        new_typ = np.full(len(cur), -1, np.int8)
        for k, rel_list in rels.items():
            at = np.flatnonzero(typ == k)
            if not len(at) or not rel_list:
                continue
            nodes = cur[at]
            totals = np.stack([r.total[nodes] for r in rel_list], axis=1)
            cum = np.cumsum(totals, axis=1)
            pick = (u_rel[at, None] * cum[:, -1:] >= cum).sum(axis=1)  # relation, by weight
            for r_idx, rel in enumerate(rel_list):
                sel = np.flatnonzero((pick == r_idx) & (cum[:, -1] > 0))
                if not len(sel):
                    continue
                n = nodes[sel]
                lo_e, hi_e = rel.indptr[n], rel.indptr[n + 1]
                lo, hi = rel.cw[lo_e], rel.cw[hi_e]
                j = np.searchsorted(rel.cw, lo + u_edge[at[sel]] * (hi - lo), side="right") - 1
                j = np.clip(j, lo_e, hi_e - 1)
                new_cur[at[sel]] = rel.indices[j]
                new_typ[at[sel]] = rel.dst
        moved = new_typ >= 0  # walks at a node without out-edges stop
        cur, typ = new_cur[moved], new_typ[moved]
        for k, nt in enumerate(NTYPES):
            counts[nt] += np.bincount(cur[typ == k], minlength=n_nodes[nt])
    return counts


def _walk_dgl(graph: InteractionGraph, starts: dict[str, np.ndarray], cfg: EcatConfig) -> dict[str, np.ndarray]:
    """Reference engine: DGL's weighted random_walk on the homogeneous view of the graph."""
    import dgl
    import torch

    hg = dgl.to_homogeneous(graph.g, edata=["weight"])
    n_nodes = graph.num_nodes()
    offsets = {}
    off = 0
    for nt in graph.g.ntypes:  # to_homogeneous lays node types out in g.ntypes order
        offsets[nt] = off
        off += n_nodes[nt]
    nodes = np.concatenate([starts[nt].astype(np.int64) + offsets[nt] for nt in NTYPES])
    traces, _ = dgl.sampling.random_walk(
        hg, torch.from_numpy(nodes).to(hg.idtype), length=cfg.walk_length,
        restart_prob=cfg.restart_prob, prob="weight",
    )
    flat = traces.numpy().ravel()
    flat = flat[flat >= 0].astype(np.int64)  # -1 pads a walk that stopped
    total = np.bincount(flat, minlength=off)
    return {nt: total[offsets[nt]:offsets[nt] + n_nodes[nt]].copy() for nt in NTYPES}


def _to_nodes(raw: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Node ids of the raw ids present in the graph (others dropped)."""
    raw = np.unique(np.asarray(raw, dtype=np.int64))
    if not len(ids) or not len(raw):
        return np.empty(0, np.int64)
    pos = np.searchsorted(ids, raw).clip(0, len(ids) - 1)
    return pos[ids[pos] == raw].astype(np.int64)


def visit_scores(
    graph: InteractionGraph,
    seed_users: np.ndarray,
    seed_items: np.ndarray,
    cfg: EcatConfig,
    *,
    engine: str = "cdf",
    max_walks: int = MAX_WALKS,
) -> Visits:
    """Walk from the seeds (raw ids) and return visit counts and per-type visit shares.

    Deterministic for a given ``cfg.seed`` (numpy, torch and DGL RNGs are all seeded).
    """
    import dgl
    import torch

    t0 = time.perf_counter()
    dgl.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    seeds = {"user": _to_nodes(seed_users, graph.ids["user"]),
             "item": _to_nodes(seed_items, graph.ids["item"]),
             "category": np.empty(0, np.int64)}
    n_seeds = sum(len(s) for s in seeds.values())
    per_seed = cfg.walks_per_seed
    if n_seeds and n_seeds * per_seed > max_walks:
        per_seed = max(1, max_walks // n_seeds)
        log.info("graph_select: %d seeds x %d walks exceeds %d walks; using %d walk(s) per seed",
                 n_seeds, cfg.walks_per_seed, max_walks, per_seed)
    starts = {nt: np.repeat(s, per_seed) for nt, s in seeds.items()}
    n_nodes = graph.num_nodes()
    if not n_seeds:
        counts = {nt: np.zeros(n_nodes[nt], np.int64) for nt in NTYPES}
    elif engine == "cdf":
        counts = _walk_cdf(graph, starts, cfg)
    elif engine == "dgl":
        counts = _walk_dgl(graph, starts, cfg)
    else:
        raise ValueError(f"unknown walk engine {engine!r}; use 'cdf' or 'dgl'")
    shares = {nt: counts[nt] / max(int(counts[nt].sum()), 1) for nt in NTYPES}
    reached = {nt: float((counts[nt] > 0).mean()) if n_nodes[nt] else 0.0 for nt in NTYPES}
    total_nodes = sum(n_nodes.values())
    reached["all"] = sum(int((counts[nt] > 0).sum()) for nt in NTYPES) / max(total_nodes, 1)
    return Visits(
        counts=counts, shares=shares, seeds={nt: len(seeds[nt]) for nt in ("user", "item")},
        walks=n_seeds * per_seed, walks_per_seed=per_seed, seconds=time.perf_counter() - t0,
        engine=engine, reached=reached,
    )


def score_samples(graph: InteractionGraph, visits: Visits, user_ids: np.ndarray, item_ids: np.ndarray,
                  norm: str = "share") -> np.ndarray:
    """A sample's graph score from its user's and item's visits (0 for an id not in the graph).

    ``share``: the user's share of user visits plus the item's share of item visits.
    ``degree``: the geometric mean of the two nodes' :func:`degree_ratios`.
    """
    if norm == "share":
        return _share_of(user_ids, graph.ids["user"], visits.shares["user"]) + _share_of(
            item_ids, graph.ids["item"], visits.shares["item"])
    if norm == "degree":
        return np.sqrt(_share_of(user_ids, graph.ids["user"], degree_ratios(graph, visits, "user"))
                       * _share_of(item_ids, graph.ids["item"], degree_ratios(graph, visits, "item")))
    raise ValueError(f"unknown graph_score_norm {norm!r}; use 'share' or 'degree'")


def degree_ratios(graph: InteractionGraph, visits: Visits, ntype: str) -> np.ndarray:
    """(visits + 1) / (expected + 1) per node, expected = the type's visits x the node's share of its edge weight.

    A walk over the whole graph visits a node in proportion to its weighted degree, so a hub is
    visited often whatever the seeds; this ratio says how much more the mini-app's walks visit
    it than its degree predicts. The one-visit smoothing keeps a rarely seen node from a large
    ratio on a single visit.
    """
    counts = visits.counts[ntype].astype(np.float64)
    strength = graph.strength[ntype]
    expected = counts.sum() * strength / max(float(strength.sum()), 1e-300)
    return (counts + 1.0) / (expected + 1.0)


def graph_weights(score: np.ndarray, power: float, w_floor: float, w_max: float) -> np.ndarray:
    """Soft selection: (score / mean positive score) ** power, clipped to [w_floor, w_max], mean 1.

    A row the walks never reached (score 0) keeps the floor: it stays a candidate, only less
    weighted. ``power`` 0 weighs every row 1.
    """
    from ecat_tasks.models.reweighting import clip_to_mean_one

    score = np.asarray(score, np.float64)
    if not len(score):
        return np.ones(0)
    if power == 0:
        return np.ones(len(score))
    pos = score > 0
    base = float(score[pos].mean()) if pos.any() else 1.0
    raw = np.where(pos, (np.where(pos, score, base) / base) ** power, 0.0)
    return clip_to_mean_one(raw, w_floor, w_max)


def _share_of(raw: np.ndarray, ids: np.ndarray, share: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw, dtype=np.int64)
    if not len(ids):
        return np.zeros(len(raw))
    pos = np.searchsorted(ids, raw).clip(0, len(ids) - 1)
    return np.where(ids[pos] == raw, share[pos], 0.0)


# --- selection --------------------------------------------------------------------------
def select_top(scores: pd.DataFrame, cap: int, positive_only: bool = True) -> pd.DataFrame:
    """The ``cap`` highest-scoring rows (with a positive score unless not ``positive_only``),
    ties broken by sample_id.

    Only the rows at or above the cap-th score are sorted, so this stays cheap when the
    source day has millions of rows.
    """
    s = scores["graph_score"].to_numpy(dtype=np.float64)
    pos = np.flatnonzero(s > 0) if positive_only else np.arange(len(s))
    if cap <= 0 or not len(pos):
        return scores.iloc[0:0][["sample_id", "graph_score"]].reset_index(drop=True)
    if len(pos) > cap:
        threshold = np.partition(s[pos], len(pos) - cap)[len(pos) - cap]
        pos = pos[s[pos] >= threshold]
    # sorted in Arrow: pandas' sort of millions of string ids held several copies of them
    top = pa.table({"sample_id": pa.array(scores["sample_id"], pa.string()).take(pa.array(pos)),
                    "graph_score": s[pos]})
    order = pc.sort_indices(top, sort_keys=[("graph_score", "descending"), ("sample_id", "ascending")])
    return top.take(order.slice(0, cap)).to_pandas()


def random_sample(sample_ids: np.ndarray, cap: int, seed: int) -> pd.DataFrame:
    """The "no graph" ablation: a seeded random subset of ``cap`` samples, score NaN.

    Rows are ranked by a seeded hash of their sample_id, so the subset does not depend on
    the order the rows were read in.
    """
    ids = pd.Series(sample_ids, dtype=object)
    order = _random_rows(ids, cap, seed)
    return pd.DataFrame({"sample_id": ids.to_numpy()[order].astype(str), "graph_score": np.full(len(order), np.nan)})


def _random_rows(ids: pd.Series | pa.ChunkedArray, cap: int, seed: int, chunk: int = 1_000_000) -> np.ndarray:
    """Positions of ``cap`` rows ranked by a seeded hash of their sample_id (independent of row order).

    Hashed a chunk at a time: Python strings are made for one chunk only, not the day's ids.
    """
    key = f"{seed:016d}"[-16:]
    hashes = [np.zeros(0, np.uint64)]
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        values = part.to_numpy(zero_copy_only=False) if isinstance(part, pa.ChunkedArray) else part.to_numpy()
        hashes.append(pd.util.hash_array(np.asarray(values, dtype=object), hash_key=key))
    return np.argsort(np.concatenate(hashes), kind="stable")[: max(cap, 0)]


def _weight_summary(weight: np.ndarray, w_floor: float) -> dict[str, Any]:
    from ecat_tasks.models.reweighting import floor_share

    q = np.quantile(weight, [0.05, 0.5, 0.95]) if len(weight) else np.ones(3)
    return {"quantiles": [round(float(v), 4) for v in q], "floor_share": round(floor_share(weight, w_floor), 6)}


# --- task -------------------------------------------------------------------------------
def graph_select(ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    """Task entry point: score and select the source samples of ``ds``; returns a small manifest."""
    layout = layout or Layout()
    t0 = time.perf_counter()
    clean_stale_tmp(layout.root / AREA)
    src_path = layout.require(layout.lake("source", ds))
    tgt_path = layout.require(layout.lake("target", ds))
    timings: dict[str, float] = {}

    labels = spec_of(cfg).label_names
    graph_columns = [c for c in GRAPH_COLUMNS if c not in KNOWN_LABELS or c in labels]
    target_rows = lake_rows(tgt_path)
    source_rows = lake_rows(src_path)
    soft = cfg.graph_selection == "soft"
    cap = min(source_rows, cfg.max_source_rows) if soft else int(math.floor(cfg.max_source_ratio * target_rows))
    info: dict[str, Any] = {"window_days": {}, "seeds": {}, "nodes": {}, "edges": {}, "reached": {}, "walks": 0}

    if cfg.graph_enabled:
        src_days = domain_window(layout, "source", ds, cfg.lookback_days)
        tgt_days = domain_window(layout, "target", ds, cfg.lookback_days)
        # seeds and edges come from target-train rows only (validation rows and held-out users are evaluation data)
        targets = [target_train_table(tgt_path, cfg, graph_columns)] + [
            target_train_table(layout.lake("target", d), cfg, graph_columns)
                                                         for d in tgt_days if d != ds]
        target_all = pa.concat_tables(targets).combine_chunks()
        timings["read"] = time.perf_counter() - t0
        # Only the graph's columns while it is built (no sample_id), and no reference kept here:
        # build_graph frees the Arrow table once it holds the columns as arrays.
        days = [ds] + [d for d in src_days if d != ds]  # the day first, as the walks' weights have always summed
        graph = build_graph(pa.concat_tables([lake_table(layout.lake("source", d), graph_columns) for d in days]
                                             + [target_all]), cfg)
        timings["build"] = graph.seconds
        visits = visit_scores(graph, target_all.column("user_id").to_numpy(), target_all.column("item_id").to_numpy(), cfg)
        timings["walk"] = visits.seconds
        del target_all
        t1 = time.perf_counter()
        source = lake_table(src_path, ["sample_id", "user_id", "item_id"])
        scores = pd.DataFrame({  # Arrow-backed strings: 16M Python str objects would be ~1 GB
            "sample_id": source.column("sample_id").to_pandas(),
            "graph_score": score_samples(graph, visits, source.column("user_id").to_numpy(),
                                         source.column("item_id").to_numpy(), cfg.graph_score_norm),
        })
        if soft and len(scores) > cap:
            # over the budget: a seeded random sample of it, each row keeping its graph weight (an
            # unbiased subsample of the weighted objective; a top-k by score is what held ECAT back)
            scores = scores.iloc[np.sort(_random_rows(source.column("sample_id"), cap, cfg.seed))]
        selected = select_top(scores, cap, positive_only=not soft)
        timings["select"] = time.perf_counter() - t1
        info.update(
            window_days={"source": src_days, "target": tgt_days}, seeds=visits.seeds,
            nodes=graph.num_nodes(), edges=graph.num_edges(), reached=visits.reached,
            walks=visits.walks, walks_per_seed=visits.walks_per_seed, engine=visits.engine,
            interactions=graph.interactions, zero_score_rows=int((scores["graph_score"].to_numpy() <= 0).sum()),
        )
        del scores, graph, visits, source
    else:
        timings["read"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        selected = random_sample(lake_table(src_path, ["sample_id"]).column("sample_id").to_numpy(zero_copy_only=False),
                                 cap, cfg.seed)
        timings["select"] = time.perf_counter() - t1
        log.info("graph_select ds=%s: graph selection is OFF (graph_enabled=false, the 'no graph' ablation): "
                 "keeping a seeded random sample of %d source rows, graph_score=NaN", ds, min(cap, source_rows))

    kept = len(selected)
    ratio = kept / source_rows if source_rows else 0.0
    score = selected["graph_score"].to_numpy(np.float64)
    weight = (graph_weights(score, cfg.graph_weight_power, cfg.weight_floor, cfg.weight_max)
              if soft and cfg.graph_enabled else np.ones(kept))
    info["graph_weight"] = _weight_summary(weight, cfg.weight_floor)
    out = layout.partition(AREA, ds)
    t2 = time.perf_counter()
    with atomic_dir(out) as tmp:
        table = pa.table({"sample_id": pa.array(selected["sample_id"], pa.string()),
                          "graph_score": pa.array(score, pa.float64()),
                          "graph_weight": pa.array(weight, pa.float64())})
        pq.write_table(table, tmp / OUTPUT_FILE)
        timings["write"] = time.perf_counter() - t2
        timings["total"] = time.perf_counter() - t0
        write_manifest(
            tmp, "graph_select", ds,
            rows=kept, cap=cap, source_rows=source_rows, target_rows=target_rows,
            selection_ratio=round(ratio, 6), graph_enabled=cfg.graph_enabled,
            inputs={"source": str(src_path), "target": str(tgt_path)},
            columns=["sample_id", "graph_score", "graph_weight"],
            parameters={
                "graph_selection": cfg.graph_selection, "max_source_ratio": cfg.max_source_ratio,
                "max_source_rows": cfg.max_source_rows, "graph_weight_power": cfg.graph_weight_power,
                "graph_score_norm": cfg.graph_score_norm, "walk_length": cfg.walk_length,
                "walks_per_seed": cfg.walks_per_seed, "restart_prob": cfg.restart_prob,
                "edge_weight_impression": cfg.edge_weight_impression, "edge_weight_click": cfg.edge_weight_click,
                "edge_weight_conversion": cfg.edge_weight_conversion, "lookback_days": cfg.lookback_days,
                "category_hop": _category_hop(cfg), "max_walks": MAX_WALKS, "seed": cfg.seed,
            },
            timings={k: round(v, 3) for k, v in timings.items()},
            **info,
        )
    secs = time.perf_counter() - t0

    if cfg.graph_enabled:
        n, e, r = info["nodes"], info["edges"], info["reached"]
        log.info(
            "graph_select ds=%s: graph users=%d items=%d categories=%d, edges user-item=%d item-category=%d "
            "(x2 directions) from %d interactions over %d day(s); seeds users=%d items=%d, %d walks; "
            "reached %.1f%% of nodes (users %.1f%%, items %.1f%%); kept %d of %d source rows (%.2f%%, %s); "
            "graph weights q05/median/q95 %.2f/%.2f/%.2f, at floor %.1f%% -> %s; build %.2fs, walk %.2fs, total %.1fs",
            ds, n["user"], n["item"], n["category"], e["interacts"], e["belongs_to"], info["interactions"],
            len(info["window_days"]["source"]), info["seeds"]["user"], info["seeds"]["item"], info["walks"],
            100 * r["all"], 100 * r["user"], 100 * r["item"], kept, source_rows, 100 * ratio,
            (f"soft, budget {cfg.max_source_rows} rows, {cfg.graph_score_norm} scores ** {cfg.graph_weight_power}" if soft
             else f"top_k, cap {cap} = {cfg.max_source_ratio:.1f} x {target_rows} target rows"),
            *info["graph_weight"]["quantiles"], 100 * info["graph_weight"]["floor_share"],
            out, timings["build"], timings["walk"], secs,
        )
    else:
        log.info("graph_select ds=%s: no-graph ablation kept %d of %d source rows (%.2f%%, cap %d) -> %s in %.1fs",
                 ds, kept, source_rows, 100 * ratio, cap, out, secs)
    ratio_high = 1.0 if soft else RATIO_WARN_HIGH  # soft keeps every row under its budget: only a low ratio is odd
    if source_rows and not (RATIO_WARN_LOW <= ratio <= ratio_high):
        log.warning(
            "graph_select ds=%s: selection ratio %.4f (kept %d of %d source rows) is outside [%.3f, %.1f]: "
            "check the target size (%d rows), max_source_ratio=%.2f and the graph's reach (%d of them scored 0)",
            ds, ratio, kept, source_rows, RATIO_WARN_LOW, ratio_high, target_rows, cfg.max_source_ratio,
            info.get("zero_score_rows", 0),
        )
    return {"ds": ds, "path": str(out), "kept": kept, "cap": cap, "source_rows": source_rows, "soft": soft,
            "target_rows": target_rows, "selection_ratio": round(ratio, 6), "seconds": round(secs, 2)}
