"""Offline ranking metrics: AUC, GAUC, logloss and calibration, vectorised.

GAUC follows FuxiCTR's reference definition: per-user AUC weighted by the user's number of
impressions, users with a single label class skipped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted half (equals sklearn's roc_auc_score)."""
    y = np.asarray(labels, dtype=np.float64)
    pos = y.sum()
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUC over users with both classes."""
    frame = pd.DataFrame({"u": np.asarray(users), "y": np.asarray(labels, np.float64), "s": np.asarray(scores)})
    # rank within user (average ties), then the per-user Mann-Whitney statistic, all grouped
    frame["r"] = frame.groupby("u")["s"].rank(method="average")
    grouped = frame.groupby("u")
    n = grouped["y"].size()
    pos = grouped["y"].sum()
    neg = n - pos
    rank_pos = frame["r"].where(frame["y"] == 1, 0.0).groupby(frame["u"]).sum()
    valid = (pos > 0) & (neg > 0)
    if not valid.any():
        return float("nan")
    user_auc = (rank_pos[valid] - pos[valid] * (pos[valid] + 1) / 2) / (pos[valid] * neg[valid])
    return float(np.average(user_auc, weights=n[valid]))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, np.float64), eps, 1 - eps)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean prediction over observed positive rate (1.0 is perfectly calibrated on average)."""
    rate = float(np.mean(labels))
    return float(np.mean(probs) / rate) if rate > 0 else float("nan")


def all_metrics(users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    return {
        "auc": auc(labels, probs),
        "gauc": gauc(users, labels, probs),
        "logloss": logloss(labels, probs),
        "calibration": calibration(labels, probs),
        "rows": int(len(labels)),
    }
