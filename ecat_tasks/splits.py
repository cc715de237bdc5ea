"""Deterministic, seed-salted slices of a day's target users, shared by every step.

Each target user (or sample, ``holdout_by``) falls in exactly one slice, by a salted hash of
its id and the seed:

- ``holdout``: the cold-start view, users new to the mini-app; reported, never decides;
- ``validation``: the only data any decision reads (promotion, guards, early stopping);
- ``train``: everything a model may learn from.

No model trains on the holdout or the validation users' target rows. The hash is a
splitmix64 mix of the id with a seed-derived constant: the same seed gives the same users in
every process and rerun, a different seed different users. (``pd.util.hash_array`` ignores
its ``hash_key`` for integer input, so it cannot be salted that way.)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ecat_tasks.config import EcatConfig

TRAIN, VALIDATION, HOLDOUT = 0, 1, 2
_BUCKETS = 10_000
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x + _GOLDEN).astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def salted_hash(keys: pd.Series | np.ndarray, seed: int) -> np.ndarray:
    """uint64 hash of each key, salted by ``seed``; integer ids are mixed directly,
    other ids (string sample ids) are first hashed to uint64 by pandas (unsalted)."""
    values = np.asarray(keys)
    if np.issubdtype(values.dtype, np.integer):
        base = values.astype(np.int64).view(np.uint64)
    else:
        base = pd.util.hash_array(values.astype(object))
    salt = splitmix64(np.array([seed], dtype=np.uint64))[0]
    return splitmix64(base ^ salt)


def slice_codes(frame: pd.DataFrame, cfg: EcatConfig) -> np.ndarray:
    """TRAIN / VALIDATION / HOLDOUT per row: buckets [0, holdout) hold out, the next
    ``validation_pct`` validate, so the holdout does not move when ``validation_pct`` does."""
    key = frame["user_id"] if cfg.holdout_by == "user" else frame["sample_id"]
    bucket = salted_hash(key.to_numpy(), cfg.seed) % np.uint64(_BUCKETS)
    held = round(cfg.holdout_pct * _BUCKETS)
    valid_end = held + round(cfg.validation_pct * _BUCKETS)
    codes = np.full(len(frame), TRAIN, dtype=np.int8)
    codes[bucket < np.uint64(valid_end)] = VALIDATION
    codes[bucket < np.uint64(held)] = HOLDOUT
    return codes


def holdout_mask(frame: pd.DataFrame, cfg: EcatConfig) -> np.ndarray:
    """Rows of the cold-start holdout."""
    return slice_codes(frame, cfg) == HOLDOUT


def train_mask(frame: pd.DataFrame, cfg: EcatConfig) -> np.ndarray:
    """Rows a model may train on (neither holdout nor validation)."""
    return slice_codes(frame, cfg) == TRAIN


class TargetSplit(NamedTuple):
    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame


def split_target(frame: pd.DataFrame, cfg: EcatConfig) -> TargetSplit:
    """The (train, validation, holdout) parts of a target frame, each in its original order."""
    codes = slice_codes(frame, cfg)
    return TargetSplit(*(frame[codes == c].reset_index(drop=True) for c in (TRAIN, VALIDATION, HOLDOUT)))
