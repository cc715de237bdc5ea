"""From lake rows to model tensors: bounded vocabularies, dense normalisation, batching.

A :class:`Vocabulary` maps raw ids of any size to embedding rows. Row 0 is the
out-of-vocabulary row, the next ``hash_buckets`` rows are shared by ids without a row of
their own (by a hash of the id), and admitted ids follow in admission order. New ids are
appended (``grow``) so existing rows keep their meaning across days, which is what makes a
warm start real. An id is admitted once seen ``min_count`` times in one day's rows, and only
while the vocabulary holds fewer than ``capacity`` ids, so a table never outgrows
``1 + hash_buckets + capacity`` rows however many ids stream through (the spec's
``vocab_size``, ``hash_buckets`` and ``min_count``; unbounded by default). All mapping is
vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from ecat_tasks.errors import PermanentError
from ecat_tasks.features import DEFAULT_SPEC, FeatureSpec, SparseFeature
from ecat_tasks.splits import below_share, salted_hash, splitmix64


def bucket_hash(raw: np.ndarray) -> np.ndarray:
    """splitmix64 of the raw ids (uint64): fixed across processes and versions (a checkpoint's
    bucket rows keep their meaning), and spreads any id pattern evenly over the buckets."""
    return splitmix64(np.asarray(raw, dtype=np.int64).view(np.uint64))


def _most_frequent(ids: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` most frequent ids, ties broken by the id's hash (a bijection, so
    the choice is unique): partitions instead of sorting, as millions may compete for a few rows."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    kth = np.partition(counts, len(counts) - k)[len(counts) - k]  # the k-th largest count
    above = np.flatnonzero(counts > kth)
    tied = np.flatnonzero(counts == kth)
    need = k - len(above)
    if need < len(tied):
        tied = tied[np.argpartition(bucket_hash(ids[tied]), need - 1)[:need]]
    return np.concatenate([above, tied])


class VocabularyError(PermanentError, ValueError):
    """A warm start's vocabulary does not fit the run's bounds (the message says which and what to do)."""


class Vocabulary:
    """Raw id -> embedding row: 0 out-of-vocabulary, 1..hash_buckets shared buckets, then one
    row per admitted id (at most ``capacity`` of them; None: unbounded)."""

    def __init__(self, ids: np.ndarray | None = None, capacity: int | None = None, hash_buckets: int = 0,
                 min_count: int = 1) -> None:
        self.ids = np.asarray(ids if ids is not None else [], dtype=np.int64)  # admission order
        self.capacity, self.hash_buckets, self.min_count = capacity, hash_buckets, min_count
        self.offset = 1 + hash_buckets  # row of the first admitted id
        self._refresh()

    @classmethod
    def for_feature(cls, feature: SparseFeature, ids: np.ndarray | None = None) -> "Vocabulary":
        return cls(ids, feature.vocab_size, feature.hash_buckets, feature.min_count)

    def rebound(self, feature: SparseFeature) -> "Vocabulary":
        """This vocabulary's ids under ``feature``'s bounds (a warm start under the run's spec).

        The size and ``min_count`` may change; the hash buckets may not (every admitted id's
        row would move), and a size below the ids already admitted is refused.
        """
        if feature.hash_buckets != self.hash_buckets:
            raise VocabularyError(
                f"{feature.name}: the checkpoint's vocabulary has {self.hash_buckets} hash buckets, the spec asks for "
                f"{feature.hash_buckets}: every row would change meaning; start a new chain (re-run from a day with "
                f"no earlier checkpoint) or keep hash_buckets")
        if feature.vocab_size is not None and len(self.ids) > feature.vocab_size:
            raise VocabularyError(
                f"{feature.name}: the checkpoint's vocabulary holds {len(self.ids)} ids, the spec's vocab_size is "
                f"{feature.vocab_size}: a warm start cannot shrink a table; raise vocab_size or start a new chain")
        return Vocabulary(self.ids, feature.vocab_size, feature.hash_buckets, feature.min_count)

    def _refresh(self) -> None:
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    def __len__(self) -> int:
        return self.offset + len(self.ids)

    def _room(self) -> int | None:
        return None if self.capacity is None else max(self.capacity - len(self.ids), 0)

    def _position(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index into ``ids`` of each id, and whether it is admitted."""
        raw = np.asarray(raw, dtype=np.int64)
        if len(self.ids) == 0:
            return np.zeros(len(raw), dtype=np.int64), np.zeros(len(raw), dtype=bool)
        pos = np.clip(np.searchsorted(self._sorted, raw), 0, len(self._sorted) - 1)
        return self._order[pos], self._sorted[pos] == raw

    def known(self, raw: np.ndarray) -> np.ndarray:
        """Whether each id has a row of its own."""
        return self._position(raw)[1]

    def _append(self, new: np.ndarray) -> int:
        if len(new):
            self.ids = np.concatenate([self.ids, np.sort(new)])
            self._refresh()
        return len(new)

    def grow(self, raw: np.ndarray, counts: np.ndarray | None = None) -> int:
        """Admit ids not yet known that occur ``min_count`` times, while there is room; returns how many.

        ``raw`` is one day's ids (with repeats), or its distinct ids with their ``counts``. When
        more ids qualify than there is room for, the most frequent go first (ties: by the id's
        hash, not its size); the admitted ones are appended in sorted order, so growth is
        deterministic and independent of row order.
        """
        if counts is None:
            uniq, counts = np.unique(np.asarray(raw, dtype=np.int64), return_counts=True)
        else:
            uniq = np.asarray(raw, dtype=np.int64)
        fresh = ~self.known(uniq) & (np.asarray(counts) >= self.min_count)
        new, counts = uniq[fresh], np.asarray(counts)[fresh]
        room = self._room()
        if room is not None and len(new) > room:
            new = new[_most_frequent(new, counts, room)]
        return self._append(new)

    def admit(self, ids: np.ndarray) -> int:
        """Admit ``ids`` regardless of ``min_count`` (another model's vocabulary, admitted under
        the same bounds), earliest first while there is room; returns how many."""
        uniq, first = np.unique(np.asarray(ids, dtype=np.int64), return_index=True)
        fresh = ~self.known(uniq)
        new, first = uniq[fresh], first[fresh]
        room = self._room()
        if room is not None and len(new) > room:
            new = new[np.argsort(first, kind="stable")[:room]]
        return self._append(new)

    def rows_of(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each id's own row (0 where it has none), and whether it has one."""
        index, hit = self._position(raw)
        return np.where(hit, index + self.offset, 0), hit

    def unseen_rows(self, raw: np.ndarray) -> np.ndarray:
        """The row each id gets when it has no row of its own: its hash bucket, or the out-of-vocabulary row 0."""
        raw = np.asarray(raw, dtype=np.int64)
        if not self.hash_buckets:
            return np.zeros(len(raw), dtype=np.int64)
        return 1 + (bucket_hash(raw) % np.uint64(self.hash_buckets)).astype(np.int64)

    def lookup(self, raw: np.ndarray) -> np.ndarray:
        """Row of each id; an id without its own row gets its hash bucket, or the out-of-vocabulary row 0."""
        raw = np.asarray(raw, dtype=np.int64)
        rows, hit = self.rows_of(raw)
        if not self.hash_buckets:
            return rows
        return np.where(hit, rows, self.unseen_rows(raw))


# Dense normalisation. A column that is constant on the day the statistics were first fitted
# has std 0: dividing by it turned the next day's values into ~1e6 and saturated every model.
DENSE_STD_FLOOR = 0.05  # smallest scale, in log1p units
DENSE_CLIP = 5.0  # standardised values are clipped to +-this
# Bins (in standardised units) of the dense profile a model keeps for drift checks (PSI).
DRIFT_EDGES = np.array([-np.inf, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, np.inf])
_PSI_EPS = 1e-4


def _logged(spec: FeatureSpec) -> np.ndarray:
    """Which dense features the spec normalises in log space (``log_standard``)."""
    return np.array([f.normalisation == "log_standard" for f in spec.dense], dtype=bool)


def _transform_dense(raw: np.ndarray, logged: np.ndarray) -> np.ndarray:
    """Dense values before standardisation: log1p(max(x, 0)) where ``logged``, x elsewhere."""
    if logged.all():
        return np.log1p(np.clip(raw, 0, None))
    out = raw.copy()
    out[:, logged] = np.log1p(np.clip(raw[:, logged], 0, None))
    return out


def _log_dense(frame: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    return _transform_dense(frame[spec.dense_names].to_numpy(np.float64), _logged(spec))


@dataclass
class Encoders:
    """Everything needed to turn a frame into tensors the same way every day.

    ``dense_mean``/``dense_std`` are the (log1p) dense statistics; :meth:`refresh` moves them
    towards each new day's (an EMA kept with the checkpoint), :meth:`scale` floors the std.
    """

    vocabs: dict[str, Vocabulary]
    dense_mean: np.ndarray
    dense_std: np.ndarray
    spec: FeatureSpec = DEFAULT_SPEC

    @classmethod
    def fit(cls, frame: pd.DataFrame, spec: FeatureSpec = DEFAULT_SPEC) -> "Encoders":
        vocabs = {f.name: Vocabulary.for_feature(f) for f in spec.sparse}
        for name, vocab in vocabs.items():
            vocab.grow(frame[name].to_numpy())
        dense = _log_dense(frame, spec)
        return cls(vocabs, dense.mean(0), dense.std(0), spec)

    def refresh(self, frame: "pd.DataFrame | ColumnStats", momentum: float) -> None:
        """EMA of the dense mean and second moment towards ``frame``'s, or a stream's
        :class:`ColumnStats`' (weight ``momentum``)."""
        if isinstance(frame, ColumnStats):
            if not frame.rows or momentum <= 0:
                return
            mean, second_new = frame.dense_mean(), frame.dense_second_moment()
        else:
            if not len(frame) or momentum <= 0:
                return
            dense = _log_dense(frame, self.spec)
            mean, second_new = dense.mean(0), (dense ** 2).mean(0)
        second = (1 - momentum) * (self.dense_std ** 2 + self.dense_mean ** 2) + momentum * second_new
        self.dense_mean = (1 - momentum) * self.dense_mean + momentum * mean
        self.dense_std = np.sqrt(np.clip(second - self.dense_mean ** 2, 0, None))

    def scale(self) -> np.ndarray:
        return np.maximum(self.dense_std, DENSE_STD_FLOOR)

    def standardise(self, frame: pd.DataFrame) -> np.ndarray:
        return np.clip((_log_dense(frame, self.spec) - self.dense_mean) / self.scale(), -DENSE_CLIP, DENSE_CLIP)

    def dense_profile(self, frame: pd.DataFrame) -> dict[str, dict[str, float | list[float]]]:
        """Per dense feature: the statistics and the share of ``frame``'s rows in each drift bin."""
        z = self.standardise(frame)
        out: dict[str, dict[str, float | list[float]]] = {}
        for j, name in enumerate(self.spec.dense_names):
            counts = np.histogram(z[:, j], DRIFT_EDGES)[0]
            out[name] = {"mean": float(self.dense_mean[j]), "std": float(self.dense_std[j]),
                         "log": self.spec.dense[j].normalisation == "log_standard",
                         "hist": [round(float(c), 6) for c in counts / max(len(z), 1)]}
        return out

    @staticmethod
    def columns(label: str, spec: FeatureSpec = DEFAULT_SPEC) -> list[str]:
        """The lake columns a model reads: its features and the label."""
        return [*spec.sparse_names, *spec.dense_names, label]

    @classmethod
    def from_stats(cls, stats: "ColumnStats") -> "Encoders":
        """:meth:`fit` from statistics accumulated over a stream (the same vocabularies and moments)."""
        vocabs = {f.name: Vocabulary.for_feature(f) for f in stats.spec.sparse}
        for name, vocab in vocabs.items():
            vocab.grow(stats.ids[name], stats.counts[name])
        return cls(vocabs, stats.dense_mean(), stats.dense_std(), stats.spec)

    def grow(self, frame: "pd.DataFrame | ColumnStats") -> dict[str, int]:
        """Admit the new ids of a frame (or of a stream's :class:`ColumnStats`) within each
        vocabulary's bounds; new ids per column."""
        if isinstance(frame, ColumnStats):
            return {name: vocab.grow(frame.ids[name], frame.counts[name]) for name, vocab in self.vocabs.items()}
        return {name: vocab.grow(frame[name].to_numpy()) for name, vocab in self.vocabs.items()}

    def rebound(self, spec: FeatureSpec) -> "Encoders":
        """These encoders under ``spec``'s vocabulary bounds (a warm start; see :meth:`Vocabulary.rebound`)."""
        vocabs = {f.name: self.vocabs[f.name].rebound(f) for f in spec.sparse}
        return Encoders(vocabs, self.dense_mean.copy(), self.dense_std.copy(), spec)


    def vocab_sizes(self) -> dict[str, int]:
        return {name: len(v) for name, v in self.vocabs.items()}

    def transform(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = np.stack([self.vocabs[n].lookup(frame[n].to_numpy()) for n in self.spec.sparse_names], axis=1)
        return torch.from_numpy(sparse), torch.from_numpy(self.standardise(frame).astype(np.float32))

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors only, so a checkpoint loads with ``weights_only=True``."""
        out = {f"vocab.{n}": torch.from_numpy(v.ids.copy()) for n, v in self.vocabs.items()}
        out["dense_mean"] = torch.from_numpy(self.dense_mean.copy())
        out["dense_std"] = torch.from_numpy(self.dense_std.copy())
        return out

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], spec: FeatureSpec = DEFAULT_SPEC) -> "Encoders":
        """The encoders as saved, under ``spec``'s vocabulary bounds: the checkpoint's features
        when scoring (ids map exactly as in training); :meth:`rebound` applies a run's spec."""
        vocabs = {f.name: Vocabulary.for_feature(f, state[f"vocab.{f.name}"].numpy()) for f in spec.sparse}
        return cls(vocabs, state["dense_mean"].numpy(), state["dense_std"].numpy(), spec)


class DenseHistogram:
    """Counts of each profiled dense feature in the profile's bins, accumulated frame by frame:
    the PSI of a whole day (:func:`dense_psi`) without holding the day in memory."""

    def __init__(self, profile: dict[str, dict]) -> None:
        self.profile = profile
        self.counts: dict[str, np.ndarray] = {}
        self.rows: dict[str, int] = {}

    def add(self, frame: pd.DataFrame) -> None:
        """Bin ``frame``'s rows, standardised with the profile's own statistics."""
        for name, ref in self.profile.items():
            if name not in frame:
                continue
            x = frame[name].to_numpy(np.float64)
            x = np.log1p(np.clip(x, 0, None)) if ref.get("log", True) else x
            z = np.clip((x - ref["mean"]) / max(ref["std"], DENSE_STD_FLOOR), -DENSE_CLIP, DENSE_CLIP)
            self.counts[name] = self.counts.get(name, 0) + np.histogram(z, DRIFT_EDGES)[0]
            self.rows[name] = self.rows.get(name, 0) + len(z)

    def psi(self) -> dict[str, float]:
        """Population stability index of each feature seen against the profile."""
        out = {}
        for name, counts in self.counts.items():
            actual = np.maximum(counts / max(self.rows[name], 1), _PSI_EPS)
            expected = np.maximum(np.asarray(self.profile[name]["hist"], dtype=np.float64), _PSI_EPS)
            out[name] = float(((actual - expected) * np.log(actual / expected)).sum())
        return out


def dense_psi(frame: pd.DataFrame, profile: dict[str, dict]) -> dict[str, float]:
    """Population stability index of each profiled dense feature of ``frame`` against a model's profile.

    ``frame`` is standardised with the profile's own statistics and binned like the profile.
    """
    hist = DenseHistogram(profile)
    hist.add(frame)
    return hist.psi()


class ColumnStats:
    """Distinct ids (and how often each occurs) of every sparse column and moments of the
    transformed dense columns, accumulated frame by frame: what :meth:`Encoders.fit` needs,
    without the whole frame."""

    SAMPLE_ROWS = 200_000  # dense rows kept for the drift profile (an evenly spaced sample)

    def __init__(self, spec: FeatureSpec = DEFAULT_SPEC) -> None:
        self.spec = spec
        self.ids = {n: np.zeros(0, np.int64) for n in spec.sparse_names}  # sorted, distinct
        self.counts = {n: np.zeros(0, np.int64) for n in spec.sparse_names}  # rows of each id
        self.rows = 0
        self._sum = np.zeros(len(spec.dense_names))
        self._sumsq = np.zeros(len(spec.dense_names))
        self._sample: list[tuple[np.ndarray, np.ndarray]] = []  # (row numbers, raw dense values)
        self._stride = 1

    def add(self, frame: pd.DataFrame) -> None:
        for name in self.ids:
            uniq, counts = np.unique(frame[name].to_numpy(np.int64), return_counts=True)
            ids, counts = np.concatenate([self.ids[name], uniq]), np.concatenate([self.counts[name], counts])
            order = np.argsort(ids, kind="stable")  # two sorted runs: the stable sort merges them in linear time
            ids, counts = ids[order], counts[order]
            starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]])) if len(ids) else order
            self.ids[name], self.counts[name] = ids[starts], np.add.reduceat(counts, starts) if len(ids) else counts
        raw = frame[self.spec.dense_names].to_numpy(np.float64)
        dense = _transform_dense(raw, _logged(self.spec))
        rownum = np.arange(self.rows, self.rows + len(frame))
        keep = rownum % self._stride == 0
        self._sample.append((rownum[keep], raw[keep]))
        if sum(len(r) for r, _ in self._sample) > self.SAMPLE_ROWS:  # halve: every other kept row
            self._stride *= 2
            self._sample = [(r[r % self._stride == 0], v[r % self._stride == 0]) for r, v in self._sample]
        self.rows += len(frame)
        self._sum += dense.sum(0)
        self._sumsq += (dense ** 2).sum(0)

    def dense_second_moment(self) -> np.ndarray:
        return self._sumsq / max(self.rows, 1)

    def dense_sample(self) -> pd.DataFrame:
        """Raw dense values of evenly spaced rows (at most ``SAMPLE_ROWS``), for profiles."""
        values = np.concatenate([v for _, v in self._sample]) if self._sample else np.zeros((0, len(self.spec.dense_names)))
        return pd.DataFrame(values, columns=self.spec.dense_names)

    def dense_mean(self) -> np.ndarray:
        return self._sum / max(self.rows, 1)

    def dense_std(self) -> np.ndarray:
        return np.sqrt(np.clip(self._sumsq / max(self.rows, 1) - self.dense_mean() ** 2, 0, None))


@dataclass
class Batchable:
    """A day's training tensors, sliced into batches without per-row Python."""

    sparse: torch.Tensor
    dense: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor
    extra: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.label)

    def to(self, device: torch.device) -> "Batchable":
        return Batchable(self.sparse.to(device), self.dense.to(device), self.label.to(device),
                         self.weight.to(device), {k: v.to(device) for k, v in self.extra.items()})

    def batches(self, batch_size: int, generator: torch.Generator | None, shuffle: bool = True) -> Iterator["Batchable"]:
        n = len(self)
        order = torch.randperm(n, generator=generator).to(self.label.device) if shuffle else None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size] if order is not None else slice(start, start + batch_size)
            yield Batchable(self.sparse[idx], self.dense[idx], self.label[idx], self.weight[idx],
                            {k: v[idx] for k, v in self.extra.items()})


USER_DROPOUT_SALT = 0x5EED_D80B  # keeps the dropped rows independent of the slices' and folds' hashes


def drop_user_ids(data: Batchable, frame: pd.DataFrame, enc: Encoders, rate: float, seed: int,
                  column: str = "user_id") -> int:
    """Give a ``rate`` share of ``frame``'s rows (encoded as ``data``) the row of an unseen user, in place.

    Why: a user the model never trained on is scored through the unseen-id row (row 0, or a
    hash bucket), which no training row reaches, so its prediction for a new user is whatever
    that row's initialisation makes of the item. On MovieLens 80-90% of the next day's target
    rows are such users. Trained on a share of rows without their user, that row learns the
    prediction for a user the model knows nothing about but the other fields. Which rows is a
    salted hash of the row's sparse values: the same rows on every epoch, block and rerun.
    Returns how many rows were dropped.
    """
    names = enc.spec.sparse_names
    if rate <= 0 or column not in names or not len(frame):
        return 0
    keys = pd.util.hash_pandas_object(frame[names], index=False).to_numpy()
    drop = below_share(salted_hash(keys, seed ^ USER_DROPOUT_SALT), rate)
    col = names.index(column)
    rows = torch.from_numpy(np.flatnonzero(drop)).to(data.sparse.device)
    data.sparse[rows, col] = torch.from_numpy(enc.vocabs[column].unseen_rows(frame[column].to_numpy()[drop])).to(data.sparse)
    return int(drop.sum())


def make_batchable(frame: pd.DataFrame, enc: Encoders, label: str, weight: np.ndarray | None = None,
                   **extra: np.ndarray | torch.Tensor) -> Batchable:
    sparse, dense = enc.transform(frame)
    # scoring frames (the registry's pyfunc) may carry no label: predictions ignore it
    y = torch.from_numpy(frame[label].to_numpy(np.float32)) if label in frame else torch.zeros(len(frame))
    w = torch.ones(len(frame)) if weight is None else torch.as_tensor(np.asarray(weight, np.float32))
    ext = {k: torch.as_tensor(v) for k, v in extra.items()}
    return Batchable(sparse, dense, y, w, ext)


def read_lake(paths: Sequence[Path], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Concatenate Parquet partitions (directories) into one frame, in path order."""
    frames = [pq.read_table(p, columns=list(columns) if columns else None).to_pandas() for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pq.read_table(paths[0], columns=list(columns) if columns else None).to_pandas()
    return pd.concat(frames, ignore_index=True)
