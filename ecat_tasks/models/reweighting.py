"""Fine sample transfer: cross-fitted density ratios on the frozen teacher's representation.

Shared by ``domain_reweight`` (the graph candidates) and ``train_baselines`` (the "no graph"
ablation reweights random candidates).

A small classifier tells target-train rows (1) from candidates (0). It reads the day's frozen
teacher's last hidden layer and the label, ``[h, sign(y) h, sign(y)]`` -- never item or
scenario ids directly, nor anything being trained -- so no adversarial game runs that could
collapse, and it cannot learn the domains from ids only one side uses. Reading the label makes
p/(1-p) the joint ratio p_T(x, y) / p_S(x, y), which also catches source rows whose labels
disagree with the target's.

*Cross-fitted*: every row falls in one of ``reweight_folds`` folds by a seeded hash of its
sample_id; classifier k fits on rows outside fold k and scores fold k only, so no row is scored
by a model that saw it, and the discriminator AUC (on the fit sample's out-of-fold scores) is an
honest one: a classifier that memorised its rows is at 0.5 there.

*Bounded in rows*: the classifiers fit on a seeded sample of at most ``reweight_fit_rows`` rows
(up to half of them target-train rows, all of them when fewer); then one streamed pass runs the
teacher over every candidate in chunks and keeps only its probability, label and id.

*Weights never drop a row*: w = r^alpha, alpha in [0, 1] the largest whose weights keep an
effective sample size of at least ``reweight_min_ess`` of the candidates, clipped to
[``weight_floor``, ``weight_max``] and normalised to mean 1 within each label class
(``reweight_per_label``). However separable the domains, the weights cannot collapse onto a few
rows (alpha -> 0 gives weight 1).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import nn
from torch.nn import functional as F

from ecat_tasks.config import EcatConfig
from ecat_tasks.metrics import auc
from ecat_tasks.models.data import Encoders
from ecat_tasks.models.model import LoadedModel
from ecat_tasks.models.stream import LakeStream, Part, part_totals, with_filter
from ecat_tasks.models.training import predict_logits, seed_everything, select_device

log = logging.getLogger(__name__)

DISCRIMINATOR_HIDDEN = 32
DISCRIMINATOR_BATCH = 2048
MIN_STEPS = 100  # per epoch, however few the fit rows
MIN_BATCH = 16


@dataclass
class Reweighting:
    domain_prob: np.ndarray  # cross-fitted P(target | h_teacher, y) of each candidate (NaN when not scored)
    weight: np.ndarray  # importance weight, mean 1 (per label class), never 0
    discriminator_auc: float  # of the fit sample's out-of-fold scores, target-train vs candidates
    alpha: float  # the temperature the ESS floor allowed (1 = the raw ratio, 0 = weights 1)
    losses: list[float]  # last-epoch loss of each fold's classifier
    uniform: bool = False  # the discriminator failed the out-of-fold check: weights 1
    sample_id: pa.ChunkedArray | None = None  # the candidates' ids, in the order of the arrays above
    fit_rows: int = 0  # rows the classifiers fit on (target + candidates, all folds)

    @classmethod
    def unweighted(cls, domain_prob: np.ndarray, discriminator_auc: float, losses: list[float], uniform: bool,
                   sample_id: pa.ChunkedArray | None = None, fit_rows: int = 0) -> "Reweighting":
        """Every candidate at weight 1."""
        return cls(domain_prob, np.ones(len(domain_prob)), discriminator_auc, 0.0, losses, uniform, sample_id, fit_rows)

    def floor_share(self, w_floor: float) -> float:
        """Share of candidates held at the floor weight (the least target-like)."""
        return 0.0 if self.uniform else floor_share(self.weight, w_floor)


def floor_share(weight: np.ndarray, w_floor: float) -> float:
    """Share of ``weight`` at the floor ``w_floor`` (0 for no weights)."""
    return float(np.mean(weight <= w_floor * (1 + 1e-9))) if len(weight) else 0.0


# --- cross-fitting ----------------------------------------------------------------------
def _hash(sample_ids: np.ndarray | pa.Array | pa.ChunkedArray, key: str) -> np.ndarray:
    if isinstance(sample_ids, (pa.Array, pa.ChunkedArray)):
        sample_ids = sample_ids.to_numpy(zero_copy_only=False)
    return pd.util.hash_array(np.asarray(sample_ids, dtype=object), hash_key=key[:16])


def fold_of(sample_ids: np.ndarray | pa.Array | pa.ChunkedArray, folds: int, seed: int) -> np.ndarray:
    """Fold index of each row: a seeded hash of its sample_id (independent of row order and of the day's size)."""
    return (_hash(sample_ids, f"fold{seed:012d}") % np.uint64(folds)).astype(np.int64)


def sampled(sample_ids: np.ndarray | pa.Array | pa.ChunkedArray, rate: float, seed: int) -> np.ndarray:
    """Seeded Bernoulli(rate) row mask from a hash of sample_id (the fit sample; independent of the folds)."""
    if rate >= 1.0:
        return np.ones(len(sample_ids), bool)
    u = (_hash(sample_ids, f"fit{seed:013d}") >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return u < rate


Scorer = Callable[[torch.Tensor], np.ndarray]


def fit_folds(fold: np.ndarray, folds: int, fit: Callable[[np.ndarray], Scorer]) -> list[Scorer]:
    """Scorer k = ``fit(rows outside fold k)``, for k in range(folds)."""
    return [fit(np.flatnonzero(fold != k)) for k in range(folds)]


def score_out_of_fold(scorers: list[Scorer], fold: np.ndarray, x: torch.Tensor) -> np.ndarray:
    """Each row scored by the scorer of its own fold -- the one that never trained on that fold."""
    out = np.full(len(fold), np.nan)
    for k, score in enumerate(scorers):
        rows = np.flatnonzero(fold == k)
        if len(rows):
            out[rows] = score(x[torch.from_numpy(rows)])
    return out


def features(hidden: torch.Tensor, label: np.ndarray) -> torch.Tensor:
    """[h, sign(y) h, sign(y)]: the joint (x, y) view of a frozen representation (unstandardised)."""
    sign = torch.from_numpy(2.0 * np.asarray(label, np.float32) - 1.0).unsqueeze(1).to(hidden.device)
    h = hidden.float()
    return torch.cat([h, h * sign, sign], dim=1)


def mlp_fit(x: torch.Tensor, domain: np.ndarray, cfg: EcatConfig, generator: torch.Generator,
            losses: list[float], device: torch.device) -> Callable[[np.ndarray], Scorer]:
    """A fit function for :func:`fit_folds`: a small MLP on standardised features, domains balanced by weight."""
    y = torch.from_numpy(domain.astype(np.float32)).to(x.device)

    def fit(rows: np.ndarray) -> Scorer:
        idx = torch.from_numpy(rows).to(x.device)
        yt = y[idx]
        n1 = float(yt.sum())
        n0 = float(len(yt)) - n1
        if n1 == 0 or n0 == 0:
            raise ValueError("a training fold holds only one domain")
        mean, std = x[idx].mean(0), x[idx].std(0).clamp_min(1e-6)  # this fold's rows only
        xt = (x[idx] - mean) / std
        model = nn.Sequential(nn.Linear(x.shape[1], DISCRIMINATOR_HIDDEN), nn.ReLU(),
                              nn.Linear(DISCRIMINATOR_HIDDEN, 1)).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.student_lr)
        pos_weight = n0 / n1
        # small days: smaller batches, so that each epoch still takes ~MIN_STEPS optimiser steps
        batch = max(MIN_BATCH, min(DISCRIMINATOR_BATCH, len(idx) // MIN_STEPS))
        model.train()
        total = 0.0
        for _ in range(cfg.reweight_epochs):
            total = 0.0
            order = torch.randperm(len(idx), generator=generator).to(x.device)
            for start in range(0, len(order), batch):
                b = order[start:start + batch]
                logit = model(xt[b]).squeeze(1)
                loss = F.binary_cross_entropy_with_logits(logit, yt[b], weight=1.0 + (pos_weight - 1.0) * yt[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
        losses.append(total / max(len(idx), 1))
        del xt
        model.eval()

        def score(xs: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return torch.sigmoid(model((xs.to(mean.device) - mean) / std).squeeze(1)).cpu().numpy().astype(np.float64)
        return score
    return fit


# --- weights ----------------------------------------------------------------------------
def effective_sample_size(w: np.ndarray) -> float:
    return float(w.sum() ** 2 / max((w ** 2).sum(), 1e-12))


def tempered_weights(ratio: np.ndarray, min_ess: float, w_floor: float, w_max: float,
                     label: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(weights, alpha): w = ratio^alpha, the largest alpha in [0, 1] with ESS >= min_ess * n (per
    label class when given), clipped to [w_floor, w_max] and normalised to mean 1 (per class).

    alpha = 0 gives weight 1: however separable the domains, the weights cannot collapse onto a
    few rows, and none is dropped.
    """
    log_r = np.log(np.clip(np.asarray(ratio, np.float64), 1e-12, None))
    groups = [np.arange(len(log_r))] if label is None else [np.flatnonzero(label == v) for v in np.unique(label)]
    groups = [g for g in groups if len(g)]

    def raw(alpha: float) -> np.ndarray:
        w = np.empty(len(log_r))
        for g in groups:
            x = np.exp(alpha * (log_r[g] - log_r[g].max()))
            w[g] = x / max(x.mean(), 1e-300)
        return w

    def ok(alpha: float) -> bool:
        w = raw(alpha)
        return all(effective_sample_size(w[g]) >= min_ess * len(g) for g in groups)

    if ok(1.0):
        alpha = 1.0
    else:
        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        alpha = lo
    w = raw(alpha)
    for g in groups:
        w[g] = clip_to_mean_one(w[g], w_floor, w_max)
    return w, alpha


def clip_to_mean_one(w: np.ndarray, w_floor: float, w_max: float) -> np.ndarray:
    """``w`` clipped to [w_floor, w_max] and rescaled to mean 1: a few rounds settle both bounds."""
    w = np.asarray(w, np.float64).copy()
    for _ in range(20):
        w = np.clip(w, w_floor, w_max)
        w = w / max(w.mean(), 1e-300)
    return np.clip(w, w_floor, w_max)


# --- the streamed method ------------------------------------------------------------------
def _teacher_columns(teacher: LoadedModel, cfg: EcatConfig) -> list[str]:
    cols = Encoders.columns(cfg.label, teacher.encoders.spec)
    return [*cols, "scenario"] if teacher.scenario_vocab is not None else cols


def _teacher_view(stream: LakeStream, teacher: LoadedModel, cfg: EcatConfig) -> Iterator[tuple[pa.Table, torch.Tensor, np.ndarray]]:
    """(table, features, label) per streamed slice: the frozen teacher's hidden layer, in chunks.

    A teacher that reads the scenario sees every row as a mini-app row (``target_scenario``):
    its own scenario would tell the domains apart by itself, which is the collapse the
    classifier must not have; what is left is how target-like the row's user, item and context are.
    """
    for table in stream.tables():
        frame = table.to_pandas()
        if teacher.scenario_vocab is not None:
            frame["scenario"] = cfg.target_scenario
        label = frame[cfg.label].to_numpy()
        _, hidden = predict_logits(teacher.model, teacher.batchable(frame, cfg.label))
        yield table, features(hidden, label), label


def reweight(target: pd.DataFrame | Part, candidates: pd.DataFrame | Part, cfg: EcatConfig,
             teacher: LoadedModel) -> Reweighting:
    """Cross-fitted target (1) vs candidates (0) classifier on ``teacher``'s hidden layer; weights for the candidates.

    Memory: the fit sample's features (at most ``reweight_fit_rows`` rows) plus the candidates'
    ids, labels and probabilities; both sides are streamed (a frame is wrapped as one part).
    """
    generator = seed_everything(cfg.seed, cfg.torch_threads, cfg.deterministic)
    device = select_device(cfg)
    target = Part.from_frame(target, name="target") if isinstance(target, pd.DataFrame) else target
    candidates = Part.from_frame(candidates, name="candidates") if isinstance(candidates, pd.DataFrame) else candidates
    columns = [*_teacher_columns(teacher, cfg), "sample_id"]
    t0 = time.perf_counter()

    # 1. the fit sample: all target-train rows up to half the budget, candidates for the rest
    n_t, n_c = part_totals(target)[0], part_totals(candidates)[0]
    take_t = min(n_t, cfg.reweight_fit_rows // 2)
    take_c = min(n_c, cfg.reweight_fit_rows - take_t)
    xs, labels, domains, folds = [], [], [], []
    for domain, part, take, n in ((1, target, take_t, n_t), (0, candidates, take_c, n_c)):
        rate = take / max(n, 1)
        part = with_filter(part, lambda t, r=rate: sampled(t.column("sample_id"), r, cfg.seed), ["sample_id"])
        for table, x, label in _teacher_view(LakeStream([part], columns), teacher, cfg):
            xs.append(x)
            labels.append(label)
            domains.append(np.full(len(label), domain))
            folds.append(fold_of(table.column("sample_id"), cfg.reweight_folds, cfg.seed))
    fit_rows = sum(len(d) for d in domains)
    losses: list[float] = []
    if not fit_rows:
        return Reweighting.unweighted(np.full(n_c, np.nan), float("nan"), losses, uniform=True,
                                      sample_id=_candidate_ids(candidates))
    x = torch.cat(xs).to(device)
    domain = np.concatenate(domains)
    fold = np.concatenate(folds)
    t_sample = time.perf_counter() - t0

    # 2. one classifier per fold, each fit outside its fold; the AUC of the sample's out-of-fold scores
    try:
        with _one_thread(device):
            scorers = fit_folds(fold, cfg.reweight_folds, mlp_fit(x, domain, cfg, generator, losses, device))
    except ValueError as exc:  # a fold without one of the domains (tiny days)
        log.warning("reweight: cannot cross-fit (%s): every candidate keeps weight 1", exc)
        return Reweighting.unweighted(np.full(n_c, np.nan), float("nan"), losses, uniform=True,
                                      sample_id=_candidate_ids(candidates), fit_rows=fit_rows)
    disc_auc = auc(domain, score_out_of_fold(scorers, fold, x))
    del x, xs
    t_fit = time.perf_counter() - t0 - t_sample

    # 3. every candidate, streamed once: the teacher in chunks, each row scored by its own fold's model
    probs, cand_labels, ids = [], [], []
    for table, xc, label in _teacher_view(LakeStream([candidates], columns), teacher, cfg):
        probs.append(score_out_of_fold(scorers, fold_of(table.column("sample_id"), cfg.reweight_folds, cfg.seed), xc))
        cand_labels.append(label)
        ids.append(table.column("sample_id").combine_chunks().cast(pa.string()))
    cand_p = np.concatenate(probs) if probs else np.zeros(0)
    cand_ids_all = pa.chunked_array(ids, type=pa.string())
    log.info("reweight: fit sample %d rows (%d target, %d candidates) in %.1fs, %d folds fit in %.1fs, "
             "%d candidates scored in %.1fs", fit_rows, int(domain.sum()), int(len(domain) - domain.sum()), t_sample,
             cfg.reweight_folds, t_fit, len(cand_p), time.perf_counter() - t0 - t_sample - t_fit)
    if not disc_auc >= cfg.reweight_min_auc:  # also NaN
        # A classifier that cannot tell target from candidates on rows it never saw has
        # learned noise; weighting by it only adds variance.
        return Reweighting.unweighted(cand_p, disc_auc, losses, uniform=True, sample_id=cand_ids_all, fit_rows=fit_rows)
    ratio = cand_p / np.clip(1.0 - cand_p, 1e-6, None)
    label = np.concatenate(cand_labels) if cfg.reweight_per_label else None
    weight, alpha = tempered_weights(ratio, cfg.reweight_min_ess, cfg.weight_floor, cfg.weight_max, label)
    return Reweighting(cand_p, weight, disc_auc, alpha, losses, sample_id=cand_ids_all, fit_rows=fit_rows)


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Fit the tiny discriminators on one CPU thread: for a 65x32 MLP, intra-op threads only add
    synchronisation (measured: a fold 3x slower on 2 threads than on 1 on a busy 2-core machine)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _candidate_ids(candidates: Part) -> pa.ChunkedArray:
    return pa.chunked_array([t.column("sample_id").combine_chunks().cast(pa.string())
                             for t in LakeStream([candidates], ["sample_id"]).tables()], type=pa.string())
