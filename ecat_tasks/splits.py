"""Deterministic, seed-salted slices of a day's target rows, shared by every step.

Each target row falls in exactly one slice:

- ``holdout``: the cold-start view, whole users (or samples, ``holdout_by``) new to the
  mini-app, by a salted hash of the id and the seed; reported, never decides;
- ``validation``: the only data any decision reads (promotion, guards, early stopping). With
  ``validation_by=time`` (the default) it is each day's latest rows of the other users: the
  users the models train on, later in the day, which is what production scores the next day.
  With ``validation_by=user`` it is whole users, disjoint from the training users;
- ``train``: everything a model may learn from.

No model trains on a holdout or validation row. The hash is a splitmix64 mix of the id with a
seed-derived constant: the same seed gives the same slices in every process and rerun, a
different seed different ones. (``pd.util.hash_array`` ignores its ``hash_key`` for integer
input, so it cannot be salted that way.)

The time cut is row-local given a day's cutoff: a row validates when its (event time, salted
sample hash) is at or after the cutoff's, so ties in time split at the requested share, and a
streamed batch is sliced exactly as its whole day is (:func:`time_cutoffs` of the day first).
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


def below_share(hashes: np.ndarray, share: float) -> np.ndarray:
    """Which of ``hashes`` (uniform uint64, :func:`salted_hash`) fall in the lowest ``share`` of
    their range: a stable pick of about that share of the keys. Exact at 0 and 1, where a float
    threshold near 2**64 would round past the range and fail to convert."""
    if share <= 0:
        return np.zeros(len(hashes), dtype=bool)
    if share >= 1:
        return np.ones(len(hashes), dtype=bool)
    return hashes < np.uint64(int(share * 2**64))


Cutoffs = dict[int, tuple[int, int]]  # day (days since the epoch) -> (event time in us, sample hash)
_NEVER = (np.iinfo(np.int64).max, np.iinfo(np.uint64).max)  # a cutoff no row reaches


def _held(frame: pd.DataFrame, cfg: EcatConfig) -> tuple[np.ndarray, np.ndarray]:
    """(bucket of each row, holdout mask): the holdout is cut first and never moves with the validation rule."""
    key = frame["user_id"] if cfg.holdout_by == "user" else frame["sample_id"]
    bucket = salted_hash(key.to_numpy(), cfg.seed) % np.uint64(_BUCKETS)
    return bucket, bucket < np.uint64(round(cfg.holdout_pct * _BUCKETS))


def _day_and_time(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(day since the epoch, event time in us) of each row; a missing one is an error, since it
    would silently sort first and train."""
    day = np.asarray(frame["ds"], dtype="datetime64[D]")
    ts = np.asarray(frame["event_ts"], dtype="datetime64[us]")
    if np.isnat(day).any() or np.isnat(ts).any():
        raise ValueError("rows without ds or event_ts cannot be cut by time (validation_by=time): "
                         f"{int(np.isnat(day).sum())} without ds, {int(np.isnat(ts).sum())} without event_ts")
    return day.astype(np.int64), ts.astype(np.int64)


def _tie_hash(frame: pd.DataFrame, cfg: EcatConfig) -> np.ndarray:
    """The salted sample hash that orders rows of one event time (its own salt, not the holdout's)."""
    return salted_hash(frame["sample_id"].to_numpy(), cfg.seed + 1)


def time_cutoffs(frame: pd.DataFrame, cfg: EcatConfig) -> Cutoffs:
    """Per day of ``frame`` (all of that day's target rows), the (time, hash) from which its
    non-holdout rows validate: the latest ``validation_pct / (1 - holdout_pct)`` of them, so
    the validation slice is ``validation_pct`` of the day's rows, as under ``validation_by=user``."""
    _, held = _held(frame, cfg)
    day, ts = _day_and_time(frame)
    tie = _tie_hash(frame, cfg)
    share = cfg.validation_pct / (1.0 - cfg.holdout_pct)
    cutoffs: Cutoffs = {}
    for d in np.unique(day):
        rows = np.flatnonzero((day == d) & ~held)
        n_valid = round(share * len(rows))
        if n_valid == 0:
            cutoffs[int(d)] = _NEVER
            continue
        order = np.lexsort((tie[rows], ts[rows]))
        first = rows[order[len(rows) - n_valid]]
        cutoffs[int(d)] = (int(ts[first]), int(tie[first]))
    return cutoffs


def slice_codes(frame: pd.DataFrame, cfg: EcatConfig, cutoffs: Cutoffs | None = None) -> np.ndarray:
    """TRAIN / VALIDATION / HOLDOUT per row. The holdout is buckets [0, holdout) of the salted
    hash, so it does not move when ``validation_pct`` or ``validation_by`` does. Under
    ``validation_by=time``, ``cutoffs`` are those of the frame's whole days (default: computed
    from ``frame``, which must then hold each of its days whole); ``frame`` needs ``ds``,
    ``event_ts`` and ``sample_id`` besides the holdout key."""
    bucket, held = _held(frame, cfg)
    codes = np.full(len(frame), TRAIN, dtype=np.int8)
    if cfg.validation_by == "user":
        valid_end = round(cfg.holdout_pct * _BUCKETS) + round(cfg.validation_pct * _BUCKETS)
        codes[bucket < np.uint64(valid_end)] = VALIDATION
    else:
        cutoffs = time_cutoffs(frame, cfg) if cutoffs is None else cutoffs
        day, ts = _day_and_time(frame)
        for d in np.unique(day):
            if int(d) not in cutoffs:
                raise ValueError(f"no validation cutoff for day {np.datetime64(int(d), 'D')}: "
                                 "time_cutoffs must read each day whole")
            c_ts, c_tie = cutoffs[int(d)]
            on_day = day == d
            later = on_day & (ts > c_ts)
            tied = np.flatnonzero(on_day & (ts == c_ts))  # only rows at the cutoff's time need the hash
            if len(tied):
                later[tied] = _tie_hash(frame.iloc[tied], cfg) >= np.uint64(c_tie)
            codes[later] = VALIDATION
    codes[held] = HOLDOUT
    return codes


SLICE_KEYS = ("user_id", "sample_id", "ds", "event_ts")  # every column slice_codes may read
SLICE_SETTINGS = ("seed", "validation_by", "validation_pct", "holdout_pct", "holdout_by")  # every field slice_codes reads


def slice_settings(cfg: EcatConfig) -> dict[str, object]:
    """The config fields that decide which rows of a day validate or are held out. Every model's
    manifest records them: a chain trained under other settings has trained on rows that validate now."""
    return {k: getattr(cfg, k) for k in SLICE_SETTINGS}


def holdout_mask(frame: pd.DataFrame, cfg: EcatConfig) -> np.ndarray:
    """Rows of the cold-start holdout."""
    return _held(frame, cfg)[1]


def train_mask(frame: pd.DataFrame, cfg: EcatConfig, cutoffs: Cutoffs | None = None) -> np.ndarray:
    """Rows a model may train on (neither holdout nor validation)."""
    return slice_codes(frame, cfg, cutoffs) == TRAIN


class TargetSplit(NamedTuple):
    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame


def split_target(frame: pd.DataFrame, cfg: EcatConfig) -> TargetSplit:
    """The (train, validation, holdout) parts of a target frame, each in its original order."""
    codes = slice_codes(frame, cfg)
    return TargetSplit(*(frame[codes == c].reset_index(drop=True) for c in (TRAIN, VALIDATION, HOLDOUT)))
