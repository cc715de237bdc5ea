import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from conftest import DAYS, tiny_config
from ecat_tasks.domain_reweight import domain_reweight
from ecat_tasks.models.reweighting import normalised_weights, normalised_weights_by_label, reweight
from ecat_tasks.storage import read_manifest

CFG = tiny_config(reweight_epochs=4, student_hidden=[32, 16], batch_size=256)


def _lake(layout, domain):
    return pd.concat([pq.read_table(layout.lake(domain, d)).to_pandas() for d in DAYS], ignore_index=True)


def test_normalised_weights_clip_normalise_and_drop():
    p = np.array([0.5, 0.5, 0.9, 0.01, 0.2])
    w, keep = normalised_weights(p, w_max=3.0, threshold=0.1)
    assert not keep[3] and w[3] == 0.0  # far from the target: dropped
    assert w[keep].mean() == np.float64(1.0) or abs(w[keep].mean() - 1.0) < 1e-6
    assert w.max() <= 3.0 and w[2] == w.max()


def test_heavy_tail_does_not_collapse_the_selection():
    """A few near-certain candidates must not push everyone else under the threshold."""
    p = np.concatenate([np.full(5, 0.999), np.linspace(0.2, 0.5, 995)])
    w, keep = normalised_weights(p, w_max=5.0, threshold=0.2)
    assert keep.mean() > 0.9
    assert abs(w[keep].mean() - 1.0) < 1e-6 and w.max() <= 5.0


def test_per_label_weights_keep_both_classes_when_the_head_leans_on_the_label():
    """Positives scored as far more target-like must not wipe out the negatives."""
    rng = np.random.default_rng(0)
    label = (rng.random(2000) < 0.3).astype(int)
    p = np.where(label == 1, 0.9, 0.05) + rng.uniform(-0.02, 0.02, 2000)
    _, joint_keep = normalised_weights(p, w_max=5.0, threshold=0.2)
    w, keep = normalised_weights_by_label(p, label, w_max=5.0, threshold=0.2)
    assert label[joint_keep].mean() > 0.95  # the joint normalisation keeps (almost) only positives
    assert abs(label[keep].mean() - label.mean()) < 0.05  # per label, the label mix survives
    for value in (0, 1):
        assert abs(w[keep & (label == value)].mean() - 1.0) < 1e-6


def test_same_distribution_gives_weights_near_one_and_auc_near_half(layout):
    target = _lake(layout, "target")
    half = np.arange(len(target)) % 2 == 0
    rw = reweight(target[half].reset_index(drop=True), target[~half].reset_index(drop=True),
                  CFG.replace(reweight_min_auc=0.0))
    assert abs(rw.discriminator_auc - 0.5) < 0.08
    assert abs(np.median(rw.weight) - 1.0) < 0.2
    assert rw.keep.mean() > 0.95 and not rw.uniform


def test_a_discriminator_without_held_out_signal_gives_uniform_weights(layout):
    """Same distribution: the classifier's AUC is ~0.5, so it must not drop or weight anything."""
    target = _lake(layout, "target")
    half = np.arange(len(target)) % 2 == 0
    rw = reweight(target[half].reset_index(drop=True), target[~half].reset_index(drop=True), CFG)
    assert rw.discriminator_auc < CFG.reweight_min_auc and rw.uniform
    assert rw.keep.all() and (rw.weight == 1.0).all()


def test_a_clearly_different_part_is_down_weighted_and_mostly_dropped(layout):
    target = _lake(layout, "target")
    half = np.arange(len(target)) % 2 == 0
    alike = target[~half]
    other = _lake(layout, "source")
    other = other[other["scenario"] == "coupons"].head(len(alike)).copy()
    other["item_price"] *= 40.0  # a different price regime and the conflicting scenario's items and labels
    candidates = pd.concat([alike, other], ignore_index=True)
    rw = reweight(target[half].reset_index(drop=True), candidates, CFG)
    is_other = np.arange(len(candidates)) >= len(alike)
    assert rw.discriminator_auc > 0.7  # at most ~0.75: half the candidates are target-like
    assert np.mean(rw.domain_prob[is_other]) < np.mean(rw.domain_prob[~is_other])
    assert (~rw.keep[is_other]).mean() > 0.5  # most of the different part is dropped
    assert rw.keep[~is_other].mean() > 0.8


def test_task_writes_weights_partition(layout):
    from ecat_tasks.graph_select import graph_select

    graph_select(DAYS[1], CFG, layout)
    m = domain_reweight(DAYS[1], CFG, layout)
    part = layout.partition("selection/weights", DAYS[1])
    table = pq.read_table(part).to_pandas()
    assert list(table.columns) == ["sample_id", "graph_score", "domain_prob", "weight"]
    assert len(table) == m["kept"] == read_manifest(part)["rows"]
    assert abs(table["weight"].mean() - 1.0) < 1e-3 and (table["weight"] >= CFG.weight_threshold).all()
    again = domain_reweight(DAYS[1], CFG, layout)  # deterministic rerun
    assert again["checksum"] == m["checksum"]


def test_reweighting_switched_off_keeps_every_candidate_at_weight_one(layout):
    from ecat_tasks.graph_select import graph_select

    cfg = CFG.replace(reweight_enabled=False)
    graph_select(DAYS[1], cfg, layout)
    m = domain_reweight(DAYS[1], cfg, layout)
    part = layout.partition("selection/weights", DAYS[1])
    table = pq.read_table(part).to_pandas()
    assert m["kept"] == m["candidates"] == len(table) > 0
    assert (table["weight"] == 1.0).all() and table["domain_prob"].isna().all()
    manifest = read_manifest(part)
    assert manifest["enabled"] is False and manifest["uniform_fallback"] is False
