"""The checkpoint chain of one model: find the warm start of a day, publish a day atomically.

Each model ``name`` has one partition per day (``models/<name>/ds=``). A day warm-starts
from the newest partition dated before it, so a rerun of the day starts from the same
checkpoint and, with the same seed, replaces its outputs exactly. A partition is written to
a temporary sibling and renamed into place with its manifest, never half-written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecat_tasks.models.data import Encoders, Vocabulary, VocabularyError
from ecat_tasks.models.model import DERIVED_ARCH_KEYS, checkpoint_features, scenario_vocab_of
from ecat_tasks.models.training import CHECKPOINT, CheckpointError, load_checkpoint, save_checkpoint
from ecat_tasks.spec import ModelFeatures
from ecat_tasks.storage import Layout, atomic_dir, clean_stale_tmp, read_manifest, write_manifest

if TYPE_CHECKING:
    from ecat_tasks.models.trainer import TrainedModel


def unbounded(features: ModelFeatures) -> ModelFeatures:
    """``features`` without vocabulary bounds: what a warm start may not change (the bounds
    it may, within what :meth:`Vocabulary.rebound` allows)."""
    return ModelFeatures(tuple(replace(f, vocab_size=None, hash_buckets=0, min_count=1) for f in features.sparse),
                         features.dense)


@dataclass(frozen=True)
class WarmStart:
    """Where a day's training starts: an earlier checkpoint (loaded), or nothing (cold start)."""

    directory: Path | None = None
    state: dict[str, Any] | None = None

    @property
    def cold(self) -> bool:
        return self.state is None

    @property
    def ds(self) -> str | None:
        d = self.directory
        return d.name[3:] if d is not None and d.name.startswith("ds=") else None

    def check(self, arch: dict[str, Any], features: ModelFeatures, spec_path: str = "") -> None:
        """Refuse to warm-start a model whose configured architecture or features (bounds
        aside) differ from the checkpoint's: that needs a new chain."""
        if self.state is None:
            return
        old = {k: v for k, v in self.state["arch"].items() if k not in DERIVED_ARCH_KEYS}
        new = {k: v for k, v in arch.items() if k not in DERIVED_ARCH_KEYS}
        if old != new:
            raise CheckpointError(
                f"checkpoint {self.directory / CHECKPOINT} was trained with {self.state['arch']}, this run asks for {arch}: "
                f"an architecture change needs a new chain (re-run from a day with no earlier checkpoint)"
            )
        trained = checkpoint_features(self.state["arch"])
        if unbounded(trained) != unbounded(features):
            raise CheckpointError(
                f"checkpoint {self.directory / CHECKPOINT} was trained on features {trained.sparse_names} + "
                f"{trained.dense_names}, the feature spec {spec_path} declares {features.sparse_names} + "
                f"{features.dense_names} (or other types or normalisations): a spec change needs a new chain (a fresh "
                f"ECAT_HOME, or re-run from a day with no earlier checkpoint)"
            )

    def encoders(self, features: ModelFeatures) -> tuple[Encoders, Vocabulary | None]:
        """The checkpoint's encoders under the run's vocabulary bounds (more room is fine; moved
        rows are not), and its scenario vocabulary."""
        assert self.state is not None and self.directory is not None
        try:
            enc = Encoders.from_state(self.state["encoders"], checkpoint_features(self.state["arch"])).rebound(features)
        except VocabularyError as exc:
            raise CheckpointError(f"checkpoint {self.directory / CHECKPOINT}: {exc}") from exc
        return enc, scenario_vocab_of(self.state)

    def provenance(self) -> dict[str, Any]:
        """Manifest fields that say which checkpoint this day started from."""
        d = self.directory
        return {
            "warm_start_from": str(d) if d else None,
            "warm_start_ds": self.ds,
            "warm_start_checksum": read_manifest(d).get("checksum") if d else None,
            "cold_start": self.cold,
        }


def checkpoint_arch(directory: Path) -> dict[str, Any]:
    """The architecture a checkpoint was trained with, without the parts the data derives
    (vocabulary sizes, dense width, features): what a model that starts from it must be built as."""
    return {k: v for k, v in load_checkpoint(directory)["arch"].items() if k not in DERIVED_ARCH_KEYS}


def find_warm_start(layout: Layout, name: str, ds: str, init_from: Path | None = None) -> WarmStart:
    """The checkpoint model ``name`` starts from on ``ds``: ``init_from`` when given, else the
    newest partition dated before ``ds``; a cold start when there is none. A corrupt file is a
    :class:`CheckpointError` naming it, never a silent cold start."""
    out_dir = layout.model(name, ds)
    clean_stale_tmp(out_dir.parent)
    area = out_dir.parent.relative_to(layout.root).as_posix()
    prev_ds = layout.latest_before(area, ds)
    start_dir = init_from or (layout.model(name, prev_ds) if prev_ds else None)
    return WarmStart(start_dir, load_checkpoint(start_dir) if start_dir else None)


def publish(layout: Layout, name: str, ds: str, task: str, trained: "TrainedModel", **fields: Any) -> dict[str, Any]:
    """Write ``trained`` as ``models/<name>/ds=`` with its manifest (``fields``), atomically;
    returns the manifest with its ``path``."""
    out_dir = layout.model(name, ds)
    loaded = trained.loaded
    with atomic_dir(out_dir) as tmp:
        save_checkpoint(tmp, loaded.model, trained.optimizer, loaded.encoder_state(), loaded.arch, trained.extras)
        manifest = write_manifest(tmp, task, ds, model=name, **fields)
    manifest["path"] = str(out_dir)
    return manifest
