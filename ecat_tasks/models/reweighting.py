"""Fine sample transfer: an adversarial domain classifier (DANN) and importance weights.

Shared by ``domain_reweight`` (the graph candidates) and ``train_baselines`` (the "no graph"
ablation reweights random candidates).

An encoder shared by a task head (the label) and a domain head behind gradient reversal is
trained on target-train rows (domain 1) and graph candidates (domain 0). The reversal keeps
the encoder from leaning on domain differences that do not matter for the label, so the
domain head's p = P(target | x, y) measures task-relevant target-likeness; reading the label
too makes p/(1-p) the joint ratio p_T(x,y)/p_S(x,y), which also catches source scenarios whose
labels disagree with the target's. Each candidate gets
w = clip(c * p / (1 - p), 0, w_max), c making the mean kept weight 1; candidates with w below
``weight_threshold`` are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch.nn import functional as F

from ecat_tasks.config import EcatConfig
from ecat_tasks.metrics import auc
from ecat_tasks.models.data import ColumnStats, Encoders, make_batchable
from ecat_tasks.spec import spec_of
from ecat_tasks.models.networks import DomainAdversarialModel
from ecat_tasks.models.stream import LakeStream, Part, drop_rows, part_totals, with_filter
from ecat_tasks.models.training import make_optimizer, seed_everything, select_device
from ecat_tasks.splits import holdout_mask


@dataclass
class Reweighting:
    domain_prob: np.ndarray  # P(target | x) of each candidate
    weight: np.ndarray  # importance weight (0 where dropped)
    keep: np.ndarray  # bool mask of kept candidates
    discriminator_auc: float  # on held-out target/candidate pairs
    losses: list[float]
    uniform: bool = False  # the discriminator failed the held-out check: weights 1, nothing dropped
    sample_id: pa.ChunkedArray | None = None  # the candidates' ids, in the order of the arrays above

    @classmethod
    def unweighted(cls, domain_prob: np.ndarray, discriminator_auc: float, losses: list[float],
                   uniform: bool, sample_id: pa.ChunkedArray | None = None) -> "Reweighting":
        """Every candidate kept at weight 1."""
        ones = np.ones(len(domain_prob))
        return cls(domain_prob, ones, ones.astype(bool), discriminator_auc, losses, uniform, sample_id)


def _solve_scale(ratio: np.ndarray, low: float, high: float, iters: int = 100) -> float:
    """c > 0 with mean(clip(c * ratio, low, high)) = 1 (bisection in log c; the mean rises with c)."""
    pos = ratio[ratio > 0]
    if not len(pos):
        return 1.0
    lo, hi = math.log(1e-12 / pos.max()), math.log(high / pos.min()) + 1.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if np.clip(math.exp(mid) * ratio, low, high).mean() < 1.0:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def normalised_weights(p: np.ndarray, w_max: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """w = clip(c * p/(1-p), 0, w_max), kept weights averaging 1; candidates with w < threshold dropped.

    The drop is decided once, on the weights normalised over *all* candidates (mean 1 after
    clipping); the kept ones are then rescaled, within [threshold, w_max], to average 1.
    Re-normalising after each drop and dropping again (the earlier loop) cascades when the
    ratios are heavy-tailed: a few clipped weights inflate the kept mean, the scale shrinks,
    more candidates fall under the threshold, and the selection collapses to a handful.
    """
    ratio = p / np.clip(1.0 - p, 1e-6, None)
    if len(ratio) == 0:
        return np.zeros(0), np.zeros(0, bool)
    c = _solve_scale(ratio, 0.0, w_max)
    keep = c * ratio >= threshold
    if not keep.any():
        return np.zeros(len(p)), keep
    low = min(threshold, 1.0)
    c_kept = _solve_scale(ratio[keep], low, max(w_max, 1.0))
    w = np.zeros(len(p))
    w[keep] = np.clip(c_kept * ratio[keep], low, w_max)
    return w, keep


def normalised_weights_by_label(p: np.ndarray, label: np.ndarray, w_max: float,
                                threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`normalised_weights` within each label class (kept weights average 1 per class).

    The joint head's p/(1-p) can lean on the label alone; normalised over all candidates, it
    then keeps one class and drops the other (measured: a day whose kept source was all
    negatives), and the student learns a wrong base rate. Per class, the weights still rank
    candidates by target-likeness but the kept rows keep the candidates' label mix.
    """
    weight, keep = np.zeros(len(p)), np.zeros(len(p), bool)
    for value in np.unique(label):
        rows = label == value
        weight[rows], keep[rows] = normalised_weights(p[rows], w_max, threshold)
    return weight, keep


def reweight(target: pd.DataFrame | Part, candidates: pd.DataFrame | Part, cfg: EcatConfig) -> Reweighting:
    """Train the DANN on target (1) vs candidates (0) and weight the candidates.

    Both sides are streamed (:class:`Part`; a frame is wrapped as one): the classifier reads
    the lake block by block, and only the candidates' ids, labels and probabilities are held.
    """
    generator = seed_everything(cfg.seed, cfg.torch_threads, cfg.deterministic)
    device = select_device(cfg)
    target = Part.from_frame(target, name="target") if isinstance(target, pd.DataFrame) else target
    candidates = Part.from_frame(candidates, name="candidates") if isinstance(candidates, pd.DataFrame) else candidates
    features = spec_of(cfg).model_features()
    columns = Encoders.columns(cfg.label, features)
    held_cfg = cfg.replace(holdout_by="sample")  # held-out pairs for the discriminator AUC
    stats = ColumnStats(features)
    for table in LakeStream([target, candidates], columns).tables():
        stats.add(table.to_pandas())
    enc = Encoders.from_stats(stats)
    model = DomainAdversarialModel(enc.vocab_sizes(), len(enc.spec.dense_names), cfg.embed_dim,
                                   cfg.student_hidden, cfg.grl_lambda).to(device)
    opt = make_optimizer(list(model.parameters()), cfg.student_lr)
    key = ("user_id", "sample_id")
    not_held = drop_rows(lambda f: holdout_mask(f, held_cfg), key)
    train_t, train_c = with_filter(target, not_held, key), with_filter(candidates, not_held, key)
    # balance the domains: the target is usually the smaller one
    n1, n0 = max(part_totals(train_t)[0], 1), max(part_totals(train_c)[0], 1)
    train_t = replace(train_t, weight=lambda t: np.full(t.num_rows, n0 / n1, np.float32), const={"domain": 1.0})
    train_c = replace(train_c, weight=None, const={"domain": 0.0})
    train = LakeStream([train_t, train_c], columns, buffer_rows=cfg.shuffle_buffer_rows, device=device,
                       encode=lambda frame, w, const: make_batchable(frame, enc, cfg.label, w, **const))
    steps_total = max(1, cfg.reweight_epochs * math.ceil(len(train) / cfg.batch_size))
    step = 0
    losses = []
    model.train()
    for _ in range(cfg.reweight_epochs):
        total = 0.0
        for b in train.batches(cfg.batch_size, generator):
            # DANN's schedule: the reversal strength ramps up from 0 to grl_lambda
            model.grl_lambda = cfg.grl_lambda * (2.0 / (1.0 + math.exp(-10.0 * step / steps_total)) - 1.0)
            task_logit, dom_logit = model(b.sparse, b.dense, b.label)
            loss = F.binary_cross_entropy_with_logits(task_logit, b.label) + (
                F.binary_cross_entropy_with_logits(dom_logit, b.extra["domain"], reduction="none") * b.weight).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(b)
            step += 1
        losses.append(float(total) / max(len(train), 1))
    model.eval()
    held_prob, held_dom, cand_p, cand_label, cand_ids = [], [], [], [], []
    with torch.no_grad():
        for domain, part in ((1, target), (0, candidates)):
            for table in LakeStream([part], [*columns, *key]).tables():
                frame = table.to_pandas()
                b = make_batchable(frame, enc, cfg.label).to(device)
                prob = torch.sigmoid(model.domain_logit_raw(b.sparse, b.dense, b.label)).cpu().numpy().astype(np.float64)
                held = holdout_mask(frame, held_cfg)
                held_prob.append(prob[held])
                held_dom.append(np.full(int(held.sum()), domain))
                if domain == 0:
                    cand_p.append(prob)
                    cand_label.append(frame[cfg.label].to_numpy())
                    cand_ids.append(table.column("sample_id").combine_chunks().cast(pa.string()))
    held_dom_all = np.concatenate(held_dom)
    disc_auc = auc(held_dom_all, np.concatenate(held_prob)) if len(held_dom_all) else float("nan")
    cand_p_all = np.concatenate(cand_p) if cand_p else np.zeros(0)
    ids = pa.chunked_array(cand_ids, type=pa.string())
    if not disc_auc >= cfg.reweight_min_auc:  # also NaN: no held-out pairs to check it on
        # A classifier that cannot tell target from candidates on held-out pairs has learned
        # noise; weighting (and dropping) by it only shrinks the source. Measured on the demo
        # data: held-out AUC 0.44 while the weights dropped 69% of the candidates.
        return Reweighting.unweighted(cand_p_all, disc_auc, losses, uniform=True, sample_id=ids)
    if cfg.reweight_per_label:
        weight, keep = normalised_weights_by_label(cand_p_all, np.concatenate(cand_label), cfg.weight_max,
                                                   cfg.weight_threshold)
    else:
        weight, keep = normalised_weights(cand_p_all, cfg.weight_max, cfg.weight_threshold)
    return Reweighting(cand_p_all, weight, keep, disc_auc, losses, sample_id=ids)


def effective_sample_size(w: np.ndarray) -> float:
    return float(w.sum() ** 2 / max((w ** 2).sum(), 1e-12))
