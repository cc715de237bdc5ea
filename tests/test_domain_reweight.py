import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from conftest import DAYS, tiny_config
from ecat_tasks.domain_reweight import domain_reweight
from ecat_tasks.metrics import auc
from ecat_tasks.models.model import load_model
from ecat_tasks.models.reweighting import (
    effective_sample_size, fit_folds, fold_of, reweight, sampled, score_out_of_fold, tempered_weights,
)
from ecat_tasks.storage import read_manifest
from ecat_tasks.teacher_refresh import teacher_refresh

CFG = tiny_config(reweight_epochs=3, student_hidden=[32, 16], batch_size=256)


def _lake(layout, domain):
    return pd.concat([pq.read_table(layout.lake(domain, d)).to_pandas() for d in DAYS], ignore_index=True)


@pytest.fixture()
def teacher(layout):
    teacher_refresh(DAYS[1], CFG, layout)
    return load_model(layout.model("teacher", DAYS[1]))


# --- cross-fitting ----------------------------------------------------------------------
def test_no_row_is_scored_by_a_model_that_trained_on_it():
    """A memorising classifier scores its own rows perfectly; cross-fitted, it is at chance."""
    rng = np.random.default_rng(0)
    ids = np.array([f"s{k}" for k in range(4000)], dtype=object)
    domain = rng.integers(0, 2, len(ids))  # labels without any signal
    fold = fold_of(ids, 5, seed=3)
    x = torch.arange(len(ids))  # the "features" are the row numbers: a scorer sees which rows it scores

    def memoriser(train_rows):
        memory = {int(r): float(domain[r]) for r in train_rows}

        def score(xs):
            rows = set(xs.tolist())
            assert not rows & set(memory)  # the scored rows were never trained on
            return np.array([memory.get(r, 0.5) for r in xs.tolist()]) + rng.uniform(0, 1e-6, len(xs))
        return score

    scorers = fit_folds(fold, 5, memoriser)
    prob = score_out_of_fold(scorers, fold, x)
    assert len(scorers) == 5 and not np.isnan(prob).any()
    assert abs(auc(domain, prob) - 0.5) < 0.05  # out of fold: chance, as it must be
    assert auc(domain, domain.astype(float)) == 1.0  # what scoring its own rows would have claimed


def test_folds_and_fit_sample_are_seeded_and_independent_of_row_order():
    ids = np.array([f"x{k}" for k in range(5000)], dtype=object)
    rev = ids[::-1].copy()
    a = dict(zip(ids, fold_of(ids, 4, seed=1)))
    assert dict(zip(rev, fold_of(rev, 4, seed=1))) == a
    assert set(a.values()) == {0, 1, 2, 3}
    assert dict(zip(ids, fold_of(ids, 4, seed=2))) != a
    keep = sampled(ids, 0.2, seed=1)
    assert abs(keep.mean() - 0.2) < 0.03
    assert np.array_equal(sampled(rev, 0.2, seed=1)[::-1], keep)
    assert not np.array_equal(sampled(ids, 0.2, seed=2), keep)
    assert sampled(ids, 1.0, seed=1).all()


# --- tempered weights -------------------------------------------------------------------
def test_extreme_ratios_are_tempered_to_the_ess_floor_and_nothing_is_dropped():
    rng = np.random.default_rng(1)
    ratio = np.exp(rng.normal(0, 4, 5000))  # nearly separable domains: huge spread
    w, alpha = tempered_weights(ratio, min_ess=0.5, w_floor=0.1, w_max=5.0)
    assert 0 < alpha < 1
    assert effective_sample_size(w) >= 0.5 * len(w) * 0.98
    assert w.min() >= 0.1 and w.max() <= 5.0 and w.mean() == pytest.approx(1.0, abs=0.02)
    assert np.corrcoef(np.log(ratio), w)[0, 1] > 0.5  # still ranks rows by target-likeness
    mild = np.exp(rng.normal(0, 0.3, 5000))
    w_mild, alpha_mild = tempered_weights(mild, min_ess=0.5, w_floor=0.1, w_max=5.0)
    assert alpha_mild == 1.0  # nothing to temper
    assert np.allclose(w_mild / w_mild.mean(), mild / mild.mean(), rtol=0.05)


def test_weights_normalise_per_label_class():
    """A ratio that only follows the label leaves each class at weight 1: the candidates' label mix stays."""
    label = np.array([0, 0, 0, 1, 1, 1])
    w, alpha = tempered_weights(np.array([1, 1, 1, 9, 9, 9.0]), min_ess=0.0, w_floor=0.0, w_max=10.0, label=label)
    assert alpha == 1.0 and np.allclose(w, 1.0)
    w, _ = tempered_weights(np.array([1, 2, 3, 1, 2, 3.0]), min_ess=0.0, w_floor=0.0, w_max=10.0, label=label)
    assert w[:3].mean() == pytest.approx(1.0) and w[3:].mean() == pytest.approx(1.0)


# --- on data ----------------------------------------------------------------------------
def test_same_distribution_gives_weights_near_one_and_auc_near_half(layout, teacher):
    target = _lake(layout, "target")
    half = np.arange(len(target)) % 2 == 0
    rw = reweight(target[half].reset_index(drop=True), target[~half].reset_index(drop=True),
                  CFG.replace(reweight_min_auc=0.0), teacher)
    assert abs(rw.discriminator_auc - 0.5) < 0.06
    assert abs(np.median(rw.weight) - 1.0) < 0.2 and rw.weight.min() > 0 and not rw.uniform


def test_a_discriminator_without_out_of_fold_signal_keeps_weight_one(layout, teacher):
    target = _lake(layout, "target")
    half = np.arange(len(target)) % 2 == 0
    rw = reweight(target[half].reset_index(drop=True), target[~half].reset_index(drop=True), CFG, teacher)
    assert rw.discriminator_auc < CFG.reweight_min_auc and rw.uniform
    assert (rw.weight == 1.0).all() and len(rw.weight) == int((~half).sum())


def test_a_clearly_different_part_is_down_weighted_never_dropped(layout, teacher):
    target = _lake(layout, "target")
    half = np.arange(len(target)) % 2 == 0
    alike = target[~half]
    other = _lake(layout, "source")
    other = other[other["scenario"] == "coupons"].head(len(alike)).copy()
    other["item_price"] *= 40.0  # a different price regime and the conflicting scenario's items and labels
    candidates = pd.concat([alike, other], ignore_index=True)
    rw = reweight(target[half].reset_index(drop=True), candidates, CFG.replace(reweight_min_auc=0.0), teacher)
    is_other = np.arange(len(candidates)) >= len(alike)
    assert rw.discriminator_auc > 0.55  # out of fold; at most ~0.75: half the candidates are target-like
    # (the tiny teacher's representation, dense inputs clipped: a mild shift, so a mild down-weighting)
    assert rw.weight[is_other].mean() < rw.weight[~is_other].mean()
    assert rw.domain_prob[is_other].mean() < rw.domain_prob[~is_other].mean()
    assert len(rw.weight) == len(candidates) and rw.weight.min() >= CFG.weight_floor  # far rows keep the floor
    assert effective_sample_size(rw.weight) >= CFG.reweight_min_ess * len(rw.weight) * 0.98


def test_the_fit_sample_is_bounded_but_every_candidate_is_scored(layout, teacher):
    target = _lake(layout, "target")
    half = np.arange(len(target)) % 2 == 0
    candidates = _lake(layout, "source")
    cfg = CFG.replace(reweight_fit_rows=1_000, reweight_min_auc=0.0)
    rw = reweight(target[half].reset_index(drop=True), candidates, cfg, teacher)
    assert 0 < rw.fit_rows <= 1.15 * cfg.reweight_fit_rows < len(candidates)  # a Bernoulli sample of the budget
    assert len(rw.domain_prob) == len(candidates) and not np.isnan(rw.domain_prob).any()
    assert sorted(rw.sample_id.to_pylist()) == sorted(candidates["sample_id"])
    again = reweight(target[half].reset_index(drop=True), candidates, cfg, teacher)
    assert np.array_equal(again.weight, rw.weight)  # deterministic given the seed


def test_task_writes_weights_partition(layout):
    from ecat_tasks.graph_select import graph_select

    graph_select(DAYS[1], CFG, layout)
    teacher_refresh(DAYS[1], CFG, layout)
    m = domain_reweight(DAYS[1], CFG, layout)
    part = layout.partition("selection/weights", DAYS[1])
    table = pq.read_table(part).to_pandas()
    graph = pq.read_table(layout.partition("selection/graph", DAYS[1])).to_pandas()
    assert list(table.columns) == ["sample_id", "graph_score", "graph_weight", "domain_prob", "weight"]
    assert len(table) == len(graph) == m["candidates"] == read_manifest(part)["rows"]  # nothing dropped
    assert table["weight"].mean() == pytest.approx(1.0, abs=0.02) and (table["weight"] >= CFG.weight_floor).all()
    manifest = read_manifest(part)
    assert {"discriminator_auc", "alpha", "ess", "floor_share", "fit_rows", "seconds"} <= set(manifest)
    again = domain_reweight(DAYS[1], CFG, layout)  # deterministic rerun
    assert again["checksum"] == m["checksum"]


def test_reweighting_switched_off_keeps_every_candidate_at_weight_one(layout):
    from ecat_tasks.graph_select import graph_select

    cfg = CFG.replace(reweight_enabled=False, graph_selection="top_k")  # soft selection's graph weights: below
    graph_select(DAYS[1], cfg, layout)
    m = domain_reweight(DAYS[1], cfg, layout)  # needs no teacher
    part = layout.partition("selection/weights", DAYS[1])
    table = pq.read_table(part).to_pandas()
    assert m["candidates"] == len(table) > 0
    assert (table["weight"] == 1.0).all() and table["domain_prob"].isna().all()
    manifest = read_manifest(part)
    assert manifest["enabled"] is False and manifest["uniform_fallback"] is False


def test_soft_selection_weights_multiply_into_the_domain_weights(layout):
    from ecat_tasks.graph_select import graph_select
    from ecat_tasks.models.reweighting import clip_to_mean_one

    cfg = CFG.replace(graph_selection="soft", graph_weight_power=1.0)
    graph_select(DAYS[1], cfg, layout)
    graph = pq.read_table(layout.partition("selection/graph", DAYS[1])).to_pandas().set_index("sample_id")
    assert graph["graph_weight"].std() > 0
    domain_reweight(DAYS[1], cfg.replace(reweight_enabled=False), layout)  # domain weights 1: the graph's alone
    alone = pq.read_table(layout.partition("selection/weights", DAYS[1])).to_pandas().set_index("sample_id")
    assert np.allclose(alone["weight"], graph.loc[alone.index, "graph_weight"])

    teacher_refresh(DAYS[1], cfg, layout)
    domain_reweight(DAYS[1], cfg, layout)
    both = pq.read_table(layout.partition("selection/weights", DAYS[1])).to_pandas().set_index("sample_id")
    uniform = cfg.replace(graph_weight_power=0.0)  # the same candidates, graph weights 1: the domain weights alone
    graph_select(DAYS[1], uniform, layout)
    domain_reweight(DAYS[1], uniform, layout)
    domain = pq.read_table(layout.partition("selection/weights", DAYS[1])).to_pandas().set_index("sample_id")
    expected = clip_to_mean_one(domain.loc[both.index, "weight"].to_numpy() * both["graph_weight"].to_numpy(),
                                cfg.weight_floor, cfg.weight_max)
    assert np.allclose(both["weight"], expected) and both["weight"].mean() == pytest.approx(1.0)


def test_the_scenario_alone_does_not_tell_the_domains_apart(layout, teacher):
    """A teacher that reads the scenario sees every row as a mini-app row: the same rows under
    another scenario get the same probabilities (else the classifier separates the domains by
    the scenario field and the weights collapse)."""
    assert teacher.scenario_vocab is not None
    target = _lake(layout, "target")
    half = np.arange(len(target)) % 2 == 0
    alike = target[~half].reset_index(drop=True)
    cfg = CFG.replace(reweight_min_auc=0.0)
    as_target = reweight(target[half].reset_index(drop=True), alike, cfg, teacher)
    as_source = reweight(target[half].reset_index(drop=True), alike.assign(scenario="coupons"), cfg, teacher)
    np.testing.assert_array_equal(as_target.domain_prob, as_source.domain_prob)
