"""The trainer: one day of training of one model, apart from the networks it trains.

:func:`train` takes a :class:`Recipe` (architecture, learning rate, phases, and the
:class:`TrainHooks` that add a loss's extra modules and per-row inputs, as distillation
does) and a :class:`~ecat_tasks.models.store.WarmStart`; it builds the vocabularies
(admitting new ids within the spec's bounds), restores weights and optimiser state, runs the
phases and returns a :class:`TrainedModel`. It reads the lake but writes no files: the store
finds the warm start and publishes the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ecat_tasks.config import EcatConfig
from ecat_tasks.models.data import Batchable, ColumnStats, Encoders, Vocabulary, drop_user_ids
from ecat_tasks.models.model import SCENARIO_KINDS, LoadedModel, build_network, scenario_codes
from ecat_tasks.models.store import WarmStart
from ecat_tasks.models.stream import LakeStream, Part
from ecat_tasks.models.training import (
    LossFn, make_optimizer, seed_everything, select_device, train_epochs, warm_load, weighted_bce,
)
from ecat_tasks.spec import ModelFeatures


@dataclass
class Phase:
    """One pass of training over some rows (fine-tuning is two phases).

    ``frame`` is either lake parts, streamed (:mod:`ecat_tasks.models.stream`), or a small
    in-memory frame with an optional per-row ``weight``.
    """

    frame: pd.DataFrame | Sequence[Part]
    epochs: int
    weight: np.ndarray | None = None
    name: str = "train"

    def parts(self) -> list[Part]:
        if isinstance(self.frame, pd.DataFrame):
            return [Part.from_frame(self.frame, self.weight, name=self.name)]
        return list(self.frame)


def pretrain_finetune(source: Part, target: Part, target_epochs: int) -> list[Phase]:
    """One pass over ``source``, then ``target_epochs`` over ``target`` alone: the finetune
    baseline's order, and the student's under ``student_schedule=pretrain_finetune``."""
    return [Phase([source], 1, name="pretrain_source"), Phase([target], target_epochs, name="finetune_target")]


class TrainHooks:
    """What a loss adds to plain training; the default is weighted BCE with nothing extra."""

    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Extra trained modules (checkpointed next to the model), e.g. a projection."""
        return {}

    def inputs(self, model: LoadedModel, frame: pd.DataFrame) -> dict[str, Any]:
        """Extra per-row tensors of a slice of rows (batched along with it)."""
        return {}

    def columns(self) -> list[str]:
        """Lake columns :meth:`inputs` reads beyond the model's own (e.g. a teacher's scenario)."""
        return []

    def loss(self, model: nn.Module, extras: dict[str, nn.Module]) -> LossFn:
        return lambda m, b: weighted_bce(m(b.sparse, b.dense, **b.extra)[0], b.label, b.weight)


@dataclass
class Recipe:
    """What to train for a day: the model's architecture and how to fit it."""

    arch: dict[str, Any]
    lr: float
    phases: list[Phase]
    hooks: TrainHooks = field(default_factory=TrainHooks)
    embedding_init: LoadedModel | None = None  # see :func:`train`
    batch_size: int | None = None  # None: the config's rule (:meth:`batch`)

    def batch(self, cfg: EcatConfig, rows: int) -> int:
        """The mini-batch size of a phase of ``rows`` rows: the recipe's own, else
        ``rows // min_steps_per_epoch`` rounded down to a power of two and clamped to
        [``batch_size``, ``max_batch_size``].

        Per-step costs (Adam's dense update of every embedding row, Python per step) are paid
        per batch, so a phase over a whole space trains in large batches, while a small phase
        (a target's few thousand rows) keeps ``batch_size`` and its number of steps. The power
        of two keeps the batch the same from one day to the next as row counts drift (it moves
        only when a phase doubles or halves), and every phase under
        ``2 * min_steps_per_epoch * batch_size`` rows trains exactly as at a fixed ``batch_size``.
        """
        if self.batch_size:
            return self.batch_size
        want = rows // cfg.min_steps_per_epoch
        pow2 = 1 << (want.bit_length() - 1) if want > 0 else 0
        return max(cfg.batch_size, min(pow2, cfg.max_batch_size))


@dataclass
class TrainedModel:
    loaded: LoadedModel
    optimizer: torch.optim.Optimizer
    extras: dict[str, nn.Module]
    losses: list[float]
    phase_rows: list[int]
    phase_batches: list[int]  # the mini-batch size each phase trained with
    new_ids: dict[str, int]
    device: torch.device
    dense_profile: dict[str, Any]  # of the rows it trained on: validate checks the next day's data against it
    last_phase: LakeStream
    columns: list[str]

    @property
    def rows(self) -> int:
        return sum(self.phase_rows)

    def first_rows(self) -> pd.DataFrame:
        """The first slice of the last phase's rows, as a frame (health checks when there is no holdout)."""
        for table in self.last_phase.tables(self.columns):
            return table.to_pandas()
        return pd.DataFrame(columns=self.columns)

    def to_cpu(self) -> None:
        self.loaded.model.cpu()
        for module in self.extras.values():
            module.cpu()


def _start_encoders(recipe: Recipe, warm: WarmStart, stats: ColumnStats, features: ModelFeatures,
                    norm_momentum: float) -> tuple[Encoders, Vocabulary | None]:
    """The warm start's encoders (dense statistics moved towards the day's), else the init
    model's (a copy), else fitted on the day's statistics."""
    if not warm.cold:
        enc, scen = warm.encoders(features)
        enc.refresh(stats, norm_momentum)
        return enc, scen
    scen = Vocabulary() if recipe.arch["kind"] in SCENARIO_KINDS else None
    if recipe.embedding_init is not None:
        return recipe.embedding_init.encoders.rebound(features), scen
    return Encoders.from_stats(stats), scen


def train(recipe: Recipe, warm: WarmStart, cfg: EcatConfig, name: str, features: ModelFeatures,
          spec_path: str = "") -> TrainedModel:
    """Train one model for a day from ``warm`` (or from scratch) on ``features`` (the run's spec).

    ``recipe.embedding_init`` (the student's teacher): the model's vocabularies also take every
    id that model knows, and each embedding row this run creates (all of them on a cold start,
    the rows of new ids on a warm start) starts from that model's row of the same id. Ids the
    model trains on rarely or never (held-out users, users seen only in the entire space)
    then carry what the entire space taught, not a random vector or the shared unseen-id row.
    On a cold start the dense normalisation is that model's too.

    A warm start moves the dense statistics towards the day's rows (``norm_momentum``).
    """
    generator = seed_everything(cfg.seed, cfg.torch_threads, cfg.deterministic)
    device = select_device(cfg)
    arch = recipe.arch
    warm.check(arch, features, spec_path)
    scenario = arch["kind"] in SCENARIO_KINDS
    columns = [*Encoders.columns(cfg.label, features), *(["scenario"] if scenario else [])]
    columns += [c for c in recipe.hooks.columns() if c not in columns]
    streams = [LakeStream(p.parts(), columns, encode=None, buffer_rows=cfg.shuffle_buffer_rows, device=device)
               for p in recipe.phases]
    stats, scenario_ids = ColumnStats(features), np.zeros(0, np.int64)
    for stream in streams:  # one pass over the ids and dense columns: vocabularies and moments
        for table in stream.tables(columns):
            frame = table.to_pandas()
            stats.add(frame)
            if scenario:
                scenario_ids = np.union1d(scenario_ids, np.unique(scenario_codes(frame["scenario"])))

    enc, scen = _start_encoders(recipe, warm, stats, features, cfg.norm_momentum)
    init = recipe.embedding_init
    old_sizes = enc.vocab_sizes() if not warm.cold else {n: 0 for n in enc.vocabs}
    if init is not None:
        for n, vocab in enc.vocabs.items():
            vocab.admit(init.encoders.vocabs[n].ids)
    new_ids = enc.grow(stats)
    if scen is not None:
        scen.grow(scenario_ids)
    arch = {**arch, "vocab_sizes": enc.vocab_sizes(), "n_dense": len(enc.spec.dense_names), "features": features.to_dict()}
    model = build_network(arch, arch["vocab_sizes"], arch["n_dense"]).to(device)
    extras = recipe.hooks.modules(model)
    for module in extras.values():
        module.to(device)
    params = list(model.parameters()) + [p for m in extras.values() for p in m.parameters()]
    optimizer = make_optimizer(params, recipe.lr)
    if not warm.cold:
        warm_load(model, optimizer, warm.state, warm.directory, extras)
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr  # the run's learning rate wins over the checkpoint's
    if init is not None:
        copy_embeddings(model, enc, init, old_sizes)
    loaded = LoadedModel(model, enc, scen, arch)
    loss_fn = recipe.hooks.loss(model, extras)

    def encode(frame: pd.DataFrame, weight: np.ndarray, const: dict[str, np.ndarray]) -> Batchable:
        data = loaded.batchable(frame, cfg.label, weight, **const, **recipe.hooks.inputs(loaded, frame))
        drop_user_ids(data, frame, enc, cfg.user_dropout, cfg.seed)
        return data

    losses: list[float] = []
    phase_rows = [len(s) for s in streams]
    phase_batches = [recipe.batch(cfg, rows) for rows in phase_rows]
    for phase, stream, batch_size in zip(recipe.phases, streams, phase_batches):
        stream.encode = encode
        losses += train_epochs(model, stream, loss_fn, optimizer, phase.epochs, batch_size, generator,
                               f"{name}/{phase.name}")
    return TrainedModel(loaded, optimizer, extras, losses, phase_rows, phase_batches, new_ids, device,
                        enc.dense_profile(stats.dense_sample()), streams[-1], columns)


@torch.no_grad()
def copy_embeddings(model: nn.Module, enc: Encoders, source: LoadedModel, old_sizes: dict[str, int]) -> int:
    """Set rows ``old_sizes[name]:`` of ``model``'s tables from ``source``'s rows of the same ids.

    The shared rows (row 0 and the hash buckets) are copied too on a cold start (``old_sizes``
    0) when ``source`` has the same buckets. Rows whose id ``source`` does not know keep
    their initialisation. Returns the number of rows copied.
    """
    src_tables = source.model.embedding.tables
    copied = 0
    for name, table in model.embedding.tables.items():
        start = old_sizes.get(name, 0)
        src = src_tables[name].weight
        if src.shape[1] != table.weight.shape[1]:
            raise ValueError(f"embedding_init: {name} has dimension {src.shape[1]}, the model {table.weight.shape[1]}")
        vocab, src_vocab = enc.vocabs[name], source.encoders.vocabs[name]
        rows = np.arange(max(start, vocab.offset), len(vocab))
        src_rows, hit = src_vocab.rows_of(vocab.ids[rows - vocab.offset])
        idx = torch.from_numpy(rows[hit])
        table.weight[idx] = src[torch.from_numpy(src_rows[hit])].to(table.weight.device)
        copied += int(hit.sum())
        if start == 0:
            shared = vocab.offset if src_vocab.hash_buckets == vocab.hash_buckets else 1
            table.weight[:shared] = src[:shared].to(table.weight.device)
            copied += shared
    return copied
