"""Deterministic held-out split of target data, shared by every training and evaluation step.

A row is held out by a stable hash of its user (or sample) id salted with the seed, so the
same rows are held out on every rerun and no training step ever sees them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecat_tasks.config import EcatConfig


def holdout_mask(frame: pd.DataFrame, cfg: EcatConfig) -> np.ndarray:
    key = frame["user_id"] if cfg.holdout_by == "user" else frame["sample_id"]
    hashed = pd.util.hash_array(key.to_numpy(), hash_key=f"ecat{cfg.seed:012d}"[:16])
    return (hashed % np.uint64(10_000)) < np.uint64(round(cfg.holdout_pct * 10_000))


def split_target(frame: pd.DataFrame, cfg: EcatConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout) parts of a target frame."""
    mask = holdout_mask(frame, cfg)
    return frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)
