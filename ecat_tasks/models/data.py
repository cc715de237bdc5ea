"""From lake rows to model tensors: growing vocabularies, dense normalisation, batching.

A :class:`Vocabulary` maps raw ids of any size to embedding rows. Index 0 is the reserved
bucket for ids never seen; new ids are appended (``grow``) so existing rows keep their
meaning across days, which is what makes a warm start real. All mapping is vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from ecat_tasks.features import DEFAULT_SPEC, FeatureSpec


class Vocabulary:
    """Raw id -> row index (1..n); 0 is the out-of-vocabulary bucket."""

    def __init__(self, ids: np.ndarray | None = None) -> None:
        self.ids = np.asarray(ids if ids is not None else [], dtype=np.int64)  # insertion order
        self._refresh()

    def _refresh(self) -> None:
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    def __len__(self) -> int:
        return len(self.ids) + 1  # + OOV row

    def grow(self, raw: np.ndarray) -> int:
        """Append ids not yet known (in sorted order, so growth is deterministic)."""
        uniq = np.unique(np.asarray(raw, dtype=np.int64))
        new = uniq[self.lookup(uniq) == 0]
        if len(new):
            self.ids = np.concatenate([self.ids, new])
            self._refresh()
        return len(new)

    def lookup(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.int64)
        if len(self.ids) == 0:
            return np.zeros(len(raw), dtype=np.int64)
        pos = np.searchsorted(self._sorted, raw)
        pos = np.clip(pos, 0, len(self._sorted) - 1)
        hit = self._sorted[pos] == raw
        return np.where(hit, self._order[pos] + 1, 0)


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
        vocabs = {name: Vocabulary() for name in spec.sparse_names}
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
        vocabs = {name: Vocabulary() for name in stats.spec.sparse_names}
        for name, vocab in vocabs.items():
            vocab.grow(stats.ids[name])
        return cls(vocabs, stats.dense_mean(), stats.dense_std(), stats.spec)

    def grow(self, frame: "pd.DataFrame | ColumnStats") -> dict[str, int]:
        """Append unseen ids of a frame (or of a stream's :class:`ColumnStats`); new ids per column."""
        if isinstance(frame, ColumnStats):
            return {name: vocab.grow(frame.ids[name]) for name, vocab in self.vocabs.items()}
        return {name: vocab.grow(frame[name].to_numpy()) for name, vocab in self.vocabs.items()}

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
        vocabs = {n: Vocabulary(state[f"vocab.{n}"].numpy()) for n in spec.sparse_names}
        return cls(vocabs, state["dense_mean"].numpy(), state["dense_std"].numpy(), spec)


def dense_psi(frame: pd.DataFrame, profile: dict[str, dict]) -> dict[str, float]:
    """Population stability index of each profiled dense feature of ``frame`` against a model's profile.

    ``frame`` is standardised with the profile's own statistics and binned like the profile.
    """
    out = {}
    for name, ref in profile.items():
        if name not in frame:
            continue
        x = frame[name].to_numpy(np.float64)
        x = np.log1p(np.clip(x, 0, None)) if ref.get("log", True) else x
        z = np.clip((x - ref["mean"]) / max(ref["std"], DENSE_STD_FLOOR), -DENSE_CLIP, DENSE_CLIP)
        actual = np.maximum(np.histogram(z, DRIFT_EDGES)[0] / max(len(z), 1), _PSI_EPS)
        expected = np.maximum(np.asarray(ref["hist"], dtype=np.float64), _PSI_EPS)
        out[name] = float(((actual - expected) * np.log(actual / expected)).sum())
    return out


class ColumnStats:
    """Distinct ids of every sparse column and moments of the transformed dense columns,
    accumulated frame by frame: what :meth:`Encoders.fit` needs, without the whole frame."""

    SAMPLE_ROWS = 200_000  # dense rows kept for the drift profile (an evenly spaced sample)

    def __init__(self, spec: FeatureSpec = DEFAULT_SPEC) -> None:
        self.spec = spec
        self.ids = {n: np.zeros(0, np.int64) for n in spec.sparse_names}
        self.rows = 0
        self._sum = np.zeros(len(spec.dense_names))
        self._sumsq = np.zeros(len(spec.dense_names))
        self._sample: list[tuple[np.ndarray, np.ndarray]] = []  # (row numbers, raw dense values)
        self._stride = 1

    def add(self, frame: pd.DataFrame) -> None:
        for name in self.ids:
            self.ids[name] = np.union1d(self.ids[name], np.unique(frame[name].to_numpy(np.int64)))
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
