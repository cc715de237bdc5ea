"""A trained model with everything needed to score frames: network, encoders, architecture.

:func:`build_network` turns an architecture dict (kind, embedding size, layer sizes,
vocabulary sizes) into a plain ``nn.Module``; :func:`load_model` rebuilds one from its
checkpoint directory. Training lives in :mod:`ecat_tasks.models.trainer`, the checkpoint
chain (finding a warm start, publishing a day) in :mod:`ecat_tasks.models.store`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ecat_tasks.models.data import Batchable, Encoders, Vocabulary, make_batchable
from ecat_tasks.models.networks import RankingModel, StarModel
from ecat_tasks.models.training import CHECKPOINT, CheckpointError, load_checkpoint, predict
from ecat_tasks.spec import ModelFeatures
from ecat_tasks.storage import read_manifest

N_SCENARIO_BUCKETS = 32  # STAR's scenario-specific parameter slots (row 0 = unseen scenario)
SCENARIO_KINDS = ("star", "ranking_scenario")  # networks that read the scenario index of each sample
# Set by the trainer from the data and the feature spec, not chosen. ``features`` (the spec's
# sparse and dense features) travels in every checkpoint, so scoring needs no spec file.
DERIVED_ARCH_KEYS = ("vocab_sizes", "n_dense", "features")


def ranking_kind(scenario: bool) -> str:
    """The ranking network's kind, with the scenario as one more field or without it."""
    return "ranking_scenario" if scenario else "ranking"


def scenario_codes(names: pd.Series) -> np.ndarray:
    """Stable int64 code per scenario name (for the scenario vocabulary)."""
    return pd.util.hash_array(names.to_numpy(dtype=object), hash_key="ecat-scenarios00").view(np.int64)


def build_network(arch: dict[str, Any], vocab_sizes: dict[str, int], n_dense: int) -> nn.Module:
    if arch["kind"] == "ranking":
        return RankingModel(vocab_sizes, n_dense, arch["embed_dim"], arch["hidden"])
    if arch["kind"] == "ranking_scenario":
        return RankingModel(vocab_sizes, n_dense, arch["embed_dim"], arch["hidden"], N_SCENARIO_BUCKETS)
    if arch["kind"] == "star":
        return StarModel(vocab_sizes, n_dense, arch["embed_dim"], arch["hidden"], N_SCENARIO_BUCKETS)
    raise CheckpointError(f"unknown model kind {arch['kind']!r}")


@dataclass
class LoadedModel:
    model: nn.Module
    encoders: Encoders
    scenario_vocab: Vocabulary | None
    arch: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    checksum: str = ""  # of the checkpoint it was loaded from (verified against its manifest); "" if none

    def batchable(self, frame: pd.DataFrame, label: str, weight: np.ndarray | None = None, **extra: Any) -> Batchable:
        if self.scenario_vocab is not None:
            codes = self.scenario_vocab.lookup(scenario_codes(frame["scenario"]))
            extra["scenario"] = np.clip(codes, 0, N_SCENARIO_BUCKETS - 1)
        return make_batchable(frame, self.encoders, label, weight, **extra)

    def score(self, frame: pd.DataFrame, label: str) -> np.ndarray:
        return self.score_encoded(self.batchable(frame, label))

    def score_encoded(self, data: Batchable) -> np.ndarray:
        """Probabilities of a frame already encoded by :meth:`batchable` (by this model or one with the same encoders)."""
        probs, _ = predict(self.model, data)
        return probs

    def encoder_state(self) -> "EncoderState":
        """The encoders plus the scenario vocabulary, as one checkpoint entry."""
        extra = {"scenario_vocab": torch.from_numpy(self.scenario_vocab.ids.copy())} if self.scenario_vocab is not None else {}
        return EncoderState(self.encoders, extra)


class EncoderState:
    """Encoders plus extra tensors (the scenario vocabulary) in one checkpoint entry."""

    def __init__(self, enc: Encoders, extra: dict[str, torch.Tensor]) -> None:
        self.enc, self.extra = enc, extra

    def state(self) -> dict[str, torch.Tensor]:
        return {**self.enc.state(), **self.extra}


def checkpoint_features(arch: dict[str, Any]) -> ModelFeatures:
    """The features a checkpoint was trained on (the demo spec's for checkpoints older than the spec)."""
    from ecat_tasks.features import DEFAULT_SPEC

    return ModelFeatures.from_dict(arch["features"]) if "features" in arch else DEFAULT_SPEC


def scenario_vocab_of(state: dict[str, Any]) -> Vocabulary | None:
    """The scenario vocabulary a checkpoint keeps (networks of :data:`SCENARIO_KINDS` only)."""
    enc = state["encoders"]
    return Vocabulary(enc["scenario_vocab"].numpy()) if "scenario_vocab" in enc else None


def load_model(directory: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild a trained model from its checkpoint directory, ready to score frames."""
    state = load_checkpoint(directory)  # verified against the manifest's checksum first
    arch = state["arch"]
    enc = Encoders.from_state(state["encoders"], checkpoint_features(arch))
    model = build_network(arch, arch["vocab_sizes"], arch["n_dense"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {directory / CHECKPOINT} does not match its architecture: {exc}") from exc
    return LoadedModel(model.to(device), enc, scenario_vocab_of(state), arch, state.get("extra", {}),
                       read_manifest(directory)["checksum"])
