"""Daily continual training shared by the teacher, the student and every baseline.

:func:`fit_day` warm-starts from the newest checkpoint of the same model dated before
``ds`` (vocabularies grow for new ids, optimiser state carries over), trains one or more
phases, scores a holdout and writes ``models/<name>/ds=`` atomically with its manifest.
Rerunning a day starts from the same earlier checkpoint with the same seed, so it
replaces its outputs exactly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ecat_tasks.config import EcatConfig
from ecat_tasks.metrics import auc
from ecat_tasks.models.data import Batchable, ColumnStats, Encoders, Vocabulary, VocabularyError, make_batchable
from ecat_tasks.models.health import check_health
from ecat_tasks.models.networks import RankingModel, StarModel
from ecat_tasks.models.stream import LakeStream, Part
from ecat_tasks.models.training import (
    CHECKPOINT, CheckpointError, LossFn, load_checkpoint, make_optimizer, predict, save_checkpoint, seed_everything,
    select_device, train_epochs, warm_load, weighted_bce,
)
from ecat_tasks.spec import ModelFeatures, spec_of
from ecat_tasks.storage import Layout, atomic_dir, clean_stale_tmp, read_manifest, write_manifest

log = logging.getLogger(__name__)

N_SCENARIO_BUCKETS = 32  # STAR's scenario-specific parameter slots (row 0 = unseen scenario)


def scenario_codes(names: pd.Series) -> np.ndarray:
    """Stable int64 code per scenario name (for the scenario vocabulary)."""
    return pd.util.hash_array(names.to_numpy(dtype=object), hash_key="ecat-scenarios00").view(np.int64)


# Set by fit_day from the data and the feature spec, not chosen. ``features`` (the spec's
# sparse and dense features) travels in every checkpoint, so scoring needs no spec file.
DERIVED_ARCH_KEYS = ("vocab_sizes", "n_dense", "features")
SCENARIO_KINDS = ("star", "ranking_scenario")  # networks that read the scenario index of each sample


def build_network(arch: dict[str, Any], vocab_sizes: dict[str, int], n_dense: int) -> nn.Module:
    if arch["kind"] == "ranking":
        return RankingModel(vocab_sizes, n_dense, arch["embed_dim"], arch["hidden"])
    if arch["kind"] == "ranking_scenario":
        return RankingModel(vocab_sizes, n_dense, arch["embed_dim"], arch["hidden"], N_SCENARIO_BUCKETS)
    if arch["kind"] == "star":
        return StarModel(vocab_sizes, n_dense, arch["embed_dim"], arch["hidden"], N_SCENARIO_BUCKETS)
    raise CheckpointError(f"unknown model kind {arch['kind']!r}")


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


@dataclass
class LoadedModel:
    model: nn.Module
    encoders: Encoders
    scenario_vocab: Vocabulary | None
    arch: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def batchable(self, frame: pd.DataFrame, label: str, weight: np.ndarray | None = None, **extra: Any) -> Batchable:
        if self.scenario_vocab is not None:
            codes = self.scenario_vocab.lookup(scenario_codes(frame["scenario"]))
            extra["scenario"] = np.clip(codes, 0, N_SCENARIO_BUCKETS - 1)
        return make_batchable(frame, self.encoders, label, weight, **extra)

    def score(self, frame: pd.DataFrame, label: str) -> np.ndarray:
        probs, _ = predict(self.model, self.batchable(frame, label))
        return probs


def load_model(directory: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild a trained model from its checkpoint directory, ready to score frames."""
    state = load_checkpoint(directory)
    arch = state["arch"]
    enc = Encoders.from_state(state["encoders"], checkpoint_features(arch))
    scen = Vocabulary(state["encoders"]["scenario_vocab"].numpy()) if "scenario_vocab" in state["encoders"] else None
    model = build_network(arch, arch["vocab_sizes"], arch["n_dense"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {directory / CHECKPOINT} does not match its architecture: {exc}") from exc
    return LoadedModel(model.to(device), enc, scen, arch, state.get("extra", {}))


def checkpoint_features(arch: dict[str, Any]) -> ModelFeatures:
    """The features a checkpoint was trained on (the demo spec's for checkpoints older than the spec)."""
    from ecat_tasks.features import DEFAULT_SPEC

    return ModelFeatures.from_dict(arch["features"]) if "features" in arch else DEFAULT_SPEC


def unbounded(features: ModelFeatures) -> ModelFeatures:
    """``features`` without vocabulary bounds: what a warm start may not change (the bounds
    it may, within what :meth:`Vocabulary.rebound` allows)."""
    return ModelFeatures(tuple(replace(f, vocab_size=None, hash_buckets=0, min_count=1) for f in features.sparse),
                         features.dense)


def checkpoint_arch(directory: Path) -> dict[str, Any]:
    """The architecture a checkpoint was trained with, without the parts the data derives
    (vocabulary sizes, dense width): what a model that starts from it must be built as."""
    return {k: v for k, v in load_checkpoint(directory)["arch"].items() if k not in DERIVED_ARCH_KEYS}


ExtraFn = Callable[[LoadedModel, pd.DataFrame], dict[str, Any]]
LossFactory = Callable[[nn.Module, dict[str, nn.Module]], LossFn]


def fit_day(
    name: str,
    ds: str,
    cfg: EcatConfig,
    layout: Layout,
    phases: list[Phase],
    arch: dict[str, Any],
    lr: float,
    holdout: pd.DataFrame | None = None,
    init_from: Path | None = None,
    extra_modules: Callable[[nn.Module], dict[str, nn.Module]] | None = None,
    extra_data: ExtraFn | None = None,
    loss_factory: LossFactory | None = None,
    task: str = "train",
    manifest_extra: dict[str, Any] | None = None,
    embedding_init: LoadedModel | None = None,
) -> dict[str, Any]:
    """Train model ``name`` for ``ds`` (warm start when an earlier checkpoint exists).

    ``embedding_init`` (the student's teacher): the model's vocabularies also take every id
    that model knows, and each embedding row this run creates (all of them on a cold start,
    the rows of new ids on a warm start) starts from that model's row of the same id. Ids the
    model trains on rarely or never (held-out users, users seen only in the entire space)
    then carry what the entire space taught, not a random vector or the shared unseen-id row.
    On a cold start the dense normalisation is that model's too.

    A warm start moves the dense statistics towards the day's rows (``norm_momentum``), and the
    manifest keeps the model's dense profile, which ``validate`` checks the next day's data against.
    """
    t0 = time.perf_counter()
    generator = seed_everything(cfg.seed, cfg.torch_threads, cfg.deterministic)
    device = select_device(cfg)
    out_dir = layout.model(name, ds)
    clean_stale_tmp(out_dir.parent)
    area = out_dir.parent.relative_to(layout.root).as_posix()
    prev_ds = layout.latest_before(area, ds)
    start_dir = init_from or (layout.model(name, prev_ds) if prev_ds else None)
    features = spec_of(cfg).model_features()  # the run's spec: features and vocabulary bounds
    columns = [*Encoders.columns(cfg.label, features), *(["scenario"] if arch["kind"] in SCENARIO_KINDS else [])]
    streams = [LakeStream(p.parts(), columns, encode=None, buffer_rows=cfg.shuffle_buffer_rows, device=device)
               for p in phases]
    stats, scenario_ids = ColumnStats(features), np.zeros(0, np.int64)
    for stream in streams:  # one pass over the ids and dense columns: vocabularies and moments
        for table in stream.tables(columns):
            frame = table.to_pandas()
            stats.add(frame)
            if arch["kind"] in SCENARIO_KINDS:
                scenario_ids = np.union1d(scenario_ids, np.unique(scenario_codes(frame["scenario"])))

    state = load_checkpoint(start_dir) if start_dir else None
    if state is not None:
        derived = DERIVED_ARCH_KEYS
        if {k: v for k, v in state["arch"].items() if k not in derived} != {k: v for k, v in arch.items() if k not in derived}:
            raise CheckpointError(
                f"checkpoint {start_dir / CHECKPOINT} was trained with {state['arch']}, this run asks for {arch}: "
                f"an architecture change needs a new chain (re-run from a day with no earlier checkpoint)"
            )
        trained = checkpoint_features(state["arch"])
        if unbounded(trained) != unbounded(features):
            raise CheckpointError(
                f"checkpoint {start_dir / CHECKPOINT} was trained on features {trained.sparse_names} + "
                f"{trained.dense_names}, the feature spec {spec_of(cfg).path} declares {features.sparse_names} + "
                f"{features.dense_names} (or other types or normalisations): a spec change needs a new chain (a fresh "
                f"ECAT_HOME, or re-run from a day with no earlier checkpoint)"
            )
        try:  # the vocabularies as trained, under the run's bounds (more room is fine; moved rows are not)
            enc = Encoders.from_state(state["encoders"], trained).rebound(features)
        except VocabularyError as exc:
            raise CheckpointError(f"checkpoint {start_dir / CHECKPOINT}: {exc}") from exc
        enc.refresh(stats, cfg.norm_momentum)
        scen = Vocabulary(state["encoders"]["scenario_vocab"].numpy()) if "scenario_vocab" in state["encoders"] else None
    elif embedding_init is not None:
        enc = embedding_init.encoders.rebound(features)
        scen = Vocabulary() if arch["kind"] in SCENARIO_KINDS else None
    else:
        enc = Encoders.from_stats(stats)
        scen = Vocabulary() if arch["kind"] in SCENARIO_KINDS else None
    old_sizes = enc.vocab_sizes() if state is not None else {n: 0 for n in enc.vocabs}
    if embedding_init is not None:
        for n, vocab in enc.vocabs.items():
            vocab.admit(embedding_init.encoders.vocabs[n].ids)
    new_ids = enc.grow(stats)
    if scen is not None:
        scen.grow(scenario_ids)
    arch = {**arch, "vocab_sizes": enc.vocab_sizes(), "n_dense": len(enc.spec.dense_names), "features": features.to_dict()}
    model = build_network(arch, arch["vocab_sizes"], arch["n_dense"]).to(device)
    extras = extra_modules(model) if extra_modules else {}
    for module in extras.values():
        module.to(device)
    params = list(model.parameters()) + [p for m in extras.values() for p in m.parameters()]
    optimizer = make_optimizer(params, lr)
    if state is not None:
        warm_load(model, optimizer, state, start_dir, extras)
        for group in optimizer.param_groups:
            group["lr"] = lr  # the run's learning rate wins over the checkpoint's
    if embedding_init is not None:
        copy_embeddings(model, enc, embedding_init, old_sizes)
    loaded = LoadedModel(model, enc, scen, arch)
    loss_fn = loss_factory(model, extras) if loss_factory else (
        lambda m, b: weighted_bce(m(b.sparse, b.dense, **b.extra)[0], b.label, b.weight))

    losses: list[float] = []
    rows = 0
    def encode(frame: pd.DataFrame, weight: np.ndarray, const: dict[str, np.ndarray]) -> Batchable:
        extra = extra_data(loaded, frame) if extra_data else {}
        return loaded.batchable(frame, cfg.label, weight, **const, **extra)

    for phase, stream in zip(phases, streams):
        stream.encode = encode
        rows += len(stream)
        losses += train_epochs(model, stream, loss_fn, optimizer, phase.epochs, cfg.batch_size, generator,
                               f"{name}/{phase.name}")

    fallback = holdout if holdout is not None and len(holdout) else _first_rows(streams[-1], columns)
    health, holdout_auc = check_before_publish(name, ds, cfg, loaded, extras, losses, holdout, fallback)
    model.cpu()
    for module in extras.values():
        module.cpu()
    enc_state_extra = {"scenario_vocab": torch.from_numpy(scen.ids.copy())} if scen is not None else {}
    with atomic_dir(out_dir) as tmp:
        save_checkpoint(tmp, model, optimizer, _EncWithExtra(enc, enc_state_extra), arch, extras)
        manifest = write_manifest(
            tmp, task, ds,
            model=name,
            warm_start_from=(str(start_dir) if start_dir else None),
            warm_start_ds=(start_dir.name[3:] if start_dir and start_dir.name.startswith("ds=") else None),
            warm_start_checksum=(read_manifest(start_dir).get("checksum") if start_dir else None),
            cold_start=state is None,
            rows=rows,
            phases=[{"name": p.name, "rows": len(st), "epochs": p.epochs} for p, st in zip(phases, streams)],
            losses=[round(x, 6) for x in losses],
            holdout_auc=holdout_auc,
            health=health,
            dense_profile=enc.dense_profile(stats.dense_sample()),
            new_ids=new_ids,
            arch=arch,
            lr=lr,
            seed=cfg.seed,
            device=str(device),
            seconds=round(time.perf_counter() - t0, 2),
            **(manifest_extra or {}),
        )
    manifest["path"] = str(out_dir)
    return manifest


def check_before_publish(name: str, ds: str, cfg: EcatConfig, loaded: LoadedModel, extras: dict[str, nn.Module],
                         losses: list[float], holdout: pd.DataFrame | None,
                         fallback: pd.DataFrame) -> tuple[dict[str, Any], float | None]:
    """Health checks on the trained model (raise ModelHealthError) and its AUC on ``holdout``.

    Predictions are checked on ``holdout`` (the callers pass the validation slice: rows the
    model did not train on); without one, on the last phase's rows.
    """
    rows = holdout if holdout is not None and len(holdout) else fallback
    probs = loaded.score(rows, cfg.label)
    health = check_health(name, ds, losses, [loaded.model, *extras.values()], probs, cfg.health_min_pred_std)
    holdout_auc = None
    if rows is holdout and holdout[cfg.label].nunique() == 2:
        holdout_auc = auc(holdout[cfg.label].to_numpy(), probs)
    return health, holdout_auc


def _first_rows(stream: LakeStream, columns: list[str]) -> pd.DataFrame:
    """The first slice of a stream's rows, as a frame (health checks when there is no holdout)."""
    for table in stream.tables(columns):
        return table.to_pandas()
    return pd.DataFrame(columns=columns)


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


class _EncWithExtra:
    """Encoders plus extra tensors (the scenario vocabulary) in one checkpoint entry."""

    def __init__(self, enc: Encoders, extra: dict[str, torch.Tensor]) -> None:
        self.enc, self.extra = enc, extra

    def state(self) -> dict[str, torch.Tensor]:
        return {**self.enc.state(), **self.extra}
