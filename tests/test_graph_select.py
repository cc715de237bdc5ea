"""graph_select: walks on hand-built graphs, selection rules, and the signal on synthetic data."""

from __future__ import annotations

import os

os.environ.setdefault("DGLBACKEND", "pytorch")

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ecat_tasks.config import EcatConfig
from ecat_tasks.graph_select import (
    OUTPUT_FILE,
    Visits,
    build_graph,
    degree_ratios,
    graph_select,
    graph_weights,
    random_sample,
    score_samples,
    select_top,
    visit_scores,
)
from ecat_tasks.storage import MANIFEST, Layout, MissingPartitionError

DS = "2026-03-03"


def frame(rows: list[tuple], clicks: list[int] | None = None) -> pd.DataFrame:
    """Interactions from (user_id, item_id, category_id) tuples."""
    u, i, c = (np.array(col, dtype=np.int64) for col in zip(*rows))
    click = np.array(clicks if clicks is not None else [0] * len(rows), dtype=np.int64)
    return pd.DataFrame({"user_id": u, "item_id": i, "category_id": c, "click": click, "conversion": np.zeros_like(click)})


# --- hand-built graphs ------------------------------------------------------------------
def test_component_without_seeds_is_never_selected() -> None:
    cfg = EcatConfig(walks_per_seed=50)
    reached = [(1, 10, 100), (2, 10, 100), (2, 11, 100), (3, 11, 100)]
    island = [(7, 20, 200), (8, 20, 200), (8, 21, 200)]  # own users, items and category
    graph = build_graph(frame(reached + island), cfg)
    visits = visit_scores(graph, np.array([1]), np.array([10]), cfg)
    users = np.array([u for u, _, _ in reached + island])
    items = np.array([i for _, i, _ in reached + island])
    scores = pd.DataFrame({"sample_id": [f"s{k}" for k in range(len(users))],
                           "graph_score": score_samples(graph, visits, users, items)})
    assert (scores["graph_score"].iloc[: len(reached)] > 0).all()
    assert (scores["graph_score"].iloc[len(reached):] == 0).all()
    kept = select_top(scores, cap=100)  # a cap far above the rows: zero scores still stay out
    assert set(kept["sample_id"]) == {f"s{k}" for k in range(len(reached))}
    assert visits.counts["user"][np.searchsorted(graph.ids["user"], [7, 8])].sum() == 0


def test_one_hop_outscores_three_hops() -> None:
    # A chain u1 - i10 - u2 - i11 - u3 - i12, each item in its own category (no shortcut).
    cfg = EcatConfig(walks_per_seed=256, walk_length=8, restart_prob=0.3)
    chain = [(1, 10, 100), (2, 10, 100), (2, 11, 101), (3, 11, 101), (3, 12, 102)]
    graph = build_graph(frame(chain), cfg)
    visits = visit_scores(graph, np.array([1]), np.array([], dtype=np.int64), cfg)
    share = dict(zip(graph.ids["item"].tolist(), visits.shares["item"]))
    assert share[10] > share[11] > 0  # one hop vs three hops
    assert share[11] > share[12]
    one_hop, three_hops = score_samples(graph, visits, np.array([2, 3]), np.array([10, 11]))
    assert one_hop > three_hops > 0


def test_edge_weights_are_transition_probabilities() -> None:
    # User 1 saw item 10 once with a click (weight 1 + 3) and item 11 once (weight 1).
    cfg = EcatConfig(walks_per_seed=256, walk_length=1, restart_prob=0.0, seed=3)
    graph = build_graph(frame([(1, 10, 100), (1, 11, 100)], clicks=[1, 0]), cfg)
    visits = visit_scores(graph, np.array([1] * 20), np.array([], dtype=np.int64), cfg, max_walks=10**6)
    c10, c11 = visits.counts["item"][np.searchsorted(graph.ids["item"], [10, 11])]
    assert c10 + c11 == 256  # one step per walk; duplicate seeds count once
    assert 0.7 < c10 / 256 < 0.9  # expected 4 / 5


def test_duplicates_aggregate_and_large_raw_ids_remap() -> None:
    cfg = EcatConfig()
    rows = [(2**40 + 5, 5_000_123, 7), (2**40 + 5, 5_000_123, 7), (3, 5_000_123, 7), (3, 9_000_000_001, 8)]
    graph = build_graph(frame(rows, clicks=[1, 0, 0, 0]), cfg)
    assert graph.num_nodes() == {"user": 2, "item": 2, "category": 2}
    assert graph.num_edges() == {"interacts": 3, "interacted_by": 3, "belongs_to": 2, "contains": 2}
    g = graph.g
    src, dst = (t.numpy() for t in g.edges(etype="interacts"))
    w = g.edges["interacts"].data["weight"].numpy()
    by_pair = {(graph.ids["user"][s], graph.ids["item"][d]): float(x) for s, d, x in zip(src, dst, w)}
    assert by_pair[(2**40 + 5, 5_000_123)] == pytest.approx(1 + 3 + 1)  # two impressions, one click


def test_cap_honoured_and_ties_broken_by_sample_id() -> None:
    scores = pd.DataFrame({"sample_id": ["e", "d", "c", "b", "a", "z"],
                           "graph_score": [0.1, 0.5, 0.5, 0.5, 0.2, 0.0]})
    kept = select_top(scores, cap=2)
    assert list(kept["sample_id"]) == ["b", "c"]
    assert list(select_top(scores, cap=4)["sample_id"]) == ["b", "c", "d", "a"]
    assert list(select_top(scores, cap=100)["sample_id"]) == ["b", "c", "d", "a", "e"]  # never the zero
    assert select_top(scores, cap=0).empty


def test_same_seed_same_visits() -> None:
    rng = np.random.default_rng(0)
    rows = list(zip(rng.integers(0, 300, 3000), rng.integers(0, 80, 3000), rng.integers(0, 5, 3000)))
    cfg = EcatConfig(seed=11)
    graph = build_graph(frame(rows), cfg)
    seeds_u, seeds_i = np.arange(0, 300, 7), np.arange(0, 80, 9)
    a = visit_scores(graph, seeds_u, seeds_i, cfg)
    b = visit_scores(build_graph(frame(rows), cfg), seeds_u, seeds_i, cfg)
    c = visit_scores(graph, seeds_u, seeds_i, cfg.replace(seed=12))
    for nt in ("user", "item", "category"):
        assert np.array_equal(a.counts[nt], b.counts[nt])
    assert not np.array_equal(a.counts["user"], c.counts["user"])


def _exact_visits(graph, seeds_u: np.ndarray, seeds_i: np.ndarray, cfg: EcatConfig) -> dict[str, np.ndarray]:
    """Expected visits per walk start, sum_t (1 - restart)^t s P^t, from the dense weight matrix."""
    n = graph.num_nodes()
    off = {"user": 0, "item": n["user"], "category": n["user"] + n["item"]}
    m = np.zeros((sum(n.values()),) * 2)
    for src_t, et, dst_t in [("user", "interacts", "item"), ("item", "interacted_by", "user"),
                             ("item", "belongs_to", "category"), ("category", "contains", "item")]:
        s, d = (t.numpy() for t in graph.g.edges(etype=et))
        np.add.at(m, (s + off[src_t], d + off[dst_t]), graph.g.edges[et].data["weight"].numpy())
    p = m / m.sum(1, keepdims=True)
    x = np.zeros(len(m))
    x[np.searchsorted(graph.ids["user"], seeds_u) + off["user"]] = 1
    x[np.searchsorted(graph.ids["item"], seeds_i) + off["item"]] = 1
    total = x.copy()
    for _ in range(cfg.walk_length):
        x = (1 - cfg.restart_prob) * x @ p
        total += x
    return {nt: total[off[nt]: off[nt] + n[nt]] for nt in n}


@pytest.mark.parametrize("engine", ["cdf", "dgl"])
def test_walks_follow_the_weighted_transition_law(engine: str) -> None:
    # Both engines (ours and dgl.sampling.random_walk(prob='weight')) must match the exact law.
    rng = np.random.default_rng(1)
    n = 600
    items = (rng.pareto(1.0, n) * 2).astype(np.int64) % 12  # skewed item popularity
    rows = list(zip(rng.integers(0, 30, n), items, items % 3))
    cfg = EcatConfig(walks_per_seed=6000, walk_length=4, restart_prob=0.2)
    graph = build_graph(frame(rows, clicks=rng.integers(0, 2, n).tolist()), cfg)
    seeds_u, seeds_i = np.arange(0, 30, 3), np.array([0, 5])
    visits = visit_scores(graph, seeds_u, seeds_i, cfg, engine=engine)
    exact = _exact_visits(graph, seeds_u, seeds_i, cfg)
    for nt in ("user", "item", "category"):
        tv = 0.5 * np.abs(visits.shares[nt] - exact[nt] / exact[nt].sum()).sum()
        assert tv < 0.03, (nt, tv)  # single-run noise is ~0.01; ignoring weights gives 0.05-0.27
        expected = exact[nt].sum() * visits.walks_per_seed
        assert abs(visits.counts[nt].sum() / expected - 1) < 0.02, nt  # restart law: walk lengths


def test_random_sample_ablation_is_seeded_and_order_free() -> None:
    ids = np.array([f"s{k:05d}" for k in range(1000)], dtype=object)
    a = random_sample(ids, 100, seed=5)
    b = random_sample(ids[::-1].copy(), 100, seed=5)
    assert len(a) == 100 and a["graph_score"].isna().all()
    assert set(a["sample_id"]) == set(b["sample_id"])
    assert set(random_sample(ids, 100, seed=6)["sample_id"]) != set(a["sample_id"])


def test_missing_partition_names_it(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "home")
    with pytest.raises(MissingPartitionError) as err:
        graph_select(DS, EcatConfig(), layout)
    assert str(layout.lake("source", DS)) in str(err.value)
    assert "extract" in str(err.value)


# --- synthetic warehouse -> extract -> graph_select -------------------------------------
@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    duckdb = pytest.importorskip("duckdb")
    from ecat_tasks.extract import extract
    from ecat_tasks.synthetic import seed_warehouse
    from ecat_tasks.validate import validate

    root = tmp_path_factory.mktemp("graph_select")
    seed_warehouse(root / "warehouse.duckdb", "2026-03-01", 3, 60_000)
    layout = Layout(root / "home")
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        extract(con, DS, EcatConfig(), layout)
    validate(DS, EcatConfig(), layout)  # publishes the day and its lookback days into the lake
    return layout


def _share_by_kind(layout: Layout, path: Path) -> dict[str, float]:
    from ecat_tasks.synthetic import scenario_kinds

    source = pq.read_table(layout.lake("source", DS) / "part-00000.parquet", columns=["sample_id", "scenario"]).to_pandas()
    kept = pq.read_table(path / OUTPUT_FILE).to_pandas()
    source["kept"] = source["sample_id"].isin(kept["sample_id"])
    source["kind"] = source["scenario"].map(scenario_kinds())
    return source.groupby("kind")["kept"].mean().to_dict()


def test_selects_similar_scenario_over_conflicting(lake: Layout, caplog: pytest.LogCaptureFixture) -> None:
    cfg = EcatConfig(graph_selection="top_k", graph_score_norm="share", max_source_ratio=3.0)  # a cap that forces a choice
    with caplog.at_level(logging.INFO, logger="ecat_tasks.graph_select"):
        m = graph_select(DS, cfg, lake)
    path = Path(m["path"])
    manifest = json.loads((path / MANIFEST).read_text())
    kept = pq.read_table(path / OUTPUT_FILE).to_pandas()
    target_rows = pq.read_metadata(lake.lake("target", DS) / "part-00000.parquet").num_rows
    assert m["kept"] == len(kept) == manifest["rows"] <= manifest["cap"] == int(cfg.max_source_ratio * target_rows)
    assert list(kept.columns) == ["sample_id", "graph_score", "graph_weight"]
    assert (kept["graph_score"] > 0).all() and kept["sample_id"].is_unique and (kept["graph_weight"] == 1.0).all()
    assert manifest["task"] == "graph_select" and manifest["window_days"]["source"] == ["2026-03-01", "2026-03-02", DS]
    assert manifest["nodes"]["category"] == 40 and manifest["seeds"]["user"] > 0

    share = _share_by_kind(lake, path)
    # mini_games shares the target's users and items; coupons/live_stream use other items.
    assert share["similar"] > 3 * share["conflict"], share
    assert share["similar"] > share["generic"] > share["conflict"], share
    closing = [r.getMessage() for r in caplog.records if "reached" in r.getMessage()]
    assert closing and "seeds users=" in closing[-1] and "walk" in closing[-1]

    again = graph_select(DS, cfg, lake)  # re-running a day replaces it with the same rows
    assert pq.read_table(Path(again["path"]) / OUTPUT_FILE).equals(pq.read_table(path / OUTPUT_FILE).cast(
        pq.read_table(Path(again["path"]) / OUTPUT_FILE).schema))


def test_graph_off_keeps_random_sample_of_same_cap(lake: Layout, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ecat_tasks.graph_select"):
        m = graph_select(DS, EcatConfig(graph_enabled=False, graph_selection="top_k"), lake)
    kept = pq.read_table(Path(m["path"]) / OUTPUT_FILE).to_pandas()
    assert len(kept) == m["cap"] and kept["graph_score"].isna().all()
    assert any("ablation" in r.getMessage() for r in caplog.records)
    share = _share_by_kind(lake, Path(m["path"]))
    assert max(share.values()) < 1.5 * min(share.values()), share  # no preference


def test_extreme_ratio_warns(lake: Layout, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ecat_tasks.graph_select"):
        m = graph_select(DS, EcatConfig(graph_selection="top_k", max_source_ratio=0.01), lake)
    assert m["selection_ratio"] < 0.001
    assert any(r.levelno == logging.WARNING and "selection ratio" in r.getMessage() for r in caplog.records)


def test_held_out_target_rows_never_seed_the_walks(lake: Layout) -> None:
    """Evaluation rows (validation and holdout users) neither seed the walks nor weigh the graph's edges."""
    from ecat_tasks.splits import split_target

    cfg = EcatConfig()
    m = graph_select(DS, cfg, lake)
    manifest = json.loads((Path(m["path"]) / MANIFEST).read_text())
    days = manifest["window_days"]["target"]
    target = pd.concat([pq.read_table(lake.lake("target", d)).to_pandas() for d in days], ignore_index=True)
    train, validation, held = split_target(target, cfg)
    assert len(held) and len(validation) and manifest["seeds"]["user"] == train["user_id"].nunique()


# --- soft selection -----------------------------------------------------------------------
def test_graph_weights_keep_unreached_rows_at_the_floor_and_average_one() -> None:
    score = np.array([0.0, 0.0, 1.0, 2.0, 4.0, 8.0])
    w = graph_weights(score, power=0.5, w_floor=0.1, w_max=5.0)
    assert w.mean() == pytest.approx(1.0) and (w >= 0.1 - 1e-12).all() and (w <= 5.0 + 1e-12).all()
    assert w[0] == w[1] == w.min() >= 0.1  # never reached: a candidate all the same, at the (rescaled) floor
    assert np.all(np.diff(w[2:]) > 0)  # nearer the mini-app, more weight
    assert (graph_weights(score, power=0.0, w_floor=0.1, w_max=5.0) == 1.0).all()  # power 0: every row 1


def test_degree_ratio_does_not_reward_a_hub_for_its_degree() -> None:
    """A hub visited exactly as often as its weighted degree predicts scores 1; a node the walks
    favour beyond its degree scores more, though it has fewer visits than the hub."""
    graph = build_graph(frame([(1, 10, 100), (2, 10, 100), (3, 10, 100), (3, 11, 100), (4, 12, 100)]), EcatConfig())
    strength = graph.strength["item"]  # item 10: 3 edges, 11 and 12: one each
    counts = {"user": np.zeros(4, np.int64), "item": np.array([30, 15, 5]), "category": np.zeros(1, np.int64)}
    visits = Visits(counts=counts, shares={}, seeds={}, walks=0, walks_per_seed=0, seconds=0.0, engine="cdf")
    ratio = degree_ratios(graph, visits, "item")
    assert strength[0] == 3 * strength[1]
    assert ratio[0] == pytest.approx(1.0)  # 30 visits of 50 with 3/5 of the weight: 30 expected
    assert ratio[1] == pytest.approx(16 / 11) and ratio[1] > ratio[0] > ratio[2]  # 15 visits where 10 expected


@pytest.mark.parametrize("norm", ["degree", "share"])
def test_soft_selection_keeps_every_source_row_weighted_towards_the_target(lake: Layout, norm: str) -> None:
    cfg = EcatConfig(graph_selection="soft", graph_score_norm=norm, graph_weight_power=1.0)
    m = graph_select(DS, cfg, lake)
    kept = pq.read_table(Path(m["path"]) / OUTPUT_FILE).to_pandas()
    source = pq.read_table(lake.lake("source", DS) / "part-00000.parquet", columns=["sample_id", "scenario"]).to_pandas()
    assert m["soft"] and m["kept"] == len(kept) == len(source) == m["source_rows"]  # coverage: none dropped
    assert kept["graph_weight"].mean() == pytest.approx(1.0, abs=1e-6)
    assert kept["graph_weight"].min() >= cfg.weight_floor - 1e-12 and kept["graph_weight"].max() <= cfg.weight_max + 1e-12
    assert (kept.loc[kept["graph_score"] <= 0, "graph_weight"] == kept["graph_weight"].min()).all()

    from ecat_tasks.synthetic import scenario_kinds

    kind = source.set_index("sample_id")["scenario"].map(scenario_kinds())
    weight_by_kind = kept.assign(kind=kind.reindex(kept["sample_id"]).to_numpy()).groupby("kind")["graph_weight"].mean()
    assert weight_by_kind["similar"] > weight_by_kind["conflict"], weight_by_kind

    budget = graph_select(DS, cfg.replace(max_source_rows=5_000), lake)  # a compute budget: a seeded random sample
    sample = pq.read_table(Path(budget["path"]) / OUTPUT_FILE).to_pandas().set_index("sample_id")
    assert len(sample) == 5_000 and sample.index.isin(kept["sample_id"]).all()
    scores = kept.set_index("sample_id")["graph_score"]
    assert np.allclose(sample["graph_score"], scores.loc[sample.index])  # the same scores, not only the top ones
    assert sample["graph_score"].min() < np.sort(scores.to_numpy())[-5_000]
    assert sample["graph_weight"].mean() == pytest.approx(1.0, abs=1e-6)
    again = pq.read_table(Path(graph_select(DS, cfg.replace(max_source_rows=5_000), lake)["path"]) / OUTPUT_FILE)
    assert set(again.column("sample_id").to_pylist()) == set(sample.index)  # seeded: a rerun keeps the same rows
