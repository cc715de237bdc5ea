"""Shared training machinery: seeding, device choice, the epoch loop, prediction, checkpoints.

Checkpoints hold tensors and plain containers only and load with ``weights_only=True``.
A corrupt or mismatched checkpoint raises :class:`CheckpointError` naming the file, never
a silent cold start.
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ecat_tasks.config import EcatConfig
from ecat_tasks.errors import PermanentError
from ecat_tasks.models.data import Batchable, Encoders
from ecat_tasks.storage import MANIFEST, dir_checksum, read_manifest

log = logging.getLogger(__name__)

CHECKPOINT = "model.pt"


class CheckpointError(PermanentError, RuntimeError):
    """A checkpoint file cannot be read or does not fit the model it should warm-start."""


def seed_everything(seed: int, threads: int = 0, deterministic: bool = True) -> torch.Generator:
    """Seed every RNG a step touches and pick deterministic kernels; returns the batch-order generator.

    Seeding alone does not make a re-run reproduce its checkpoint bit for bit: with more than
    one intra-op thread, accumulating backward kernels (``index_put_(accumulate=True)`` behind
    advanced indexing, embedding gradients on CUDA) may sum in a run-dependent order.
    Deterministic algorithms select order-stable kernels (``warn_only``: an op without a
    deterministic kernel warns, never fails). On CUDA, ``CUBLAS_WORKSPACE_CONFIG`` makes cuBLAS
    deterministic too; it must be set before the first CUDA call, which is why it is set here.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, if CUDA is used
    # torch.use_deterministic_algorithms also sets the same flag in torch._inductor's config,
    # importing the compiler stack (seconds per task process); nothing here compiles.
    torch._C._set_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def select_device(cfg: EcatConfig) -> torch.device:
    """The configured device of every training step (models, batches, the teacher's pass);
    asking for CUDA where there is none is an error, not a fallback."""
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device!r} requested but CUDA is not available on this worker; use device='cpu'")
    return device


def make_optimizer(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel: one pass over every parameter instead of a Python loop of
    small ops, which matters when large embedding tables get a dense update every step
    (about 5x faster per step on CPU here); the same algorithm, so results stay deterministic."""
    return torch.optim.Adam(params, lr=lr, fused=True)


LossFn = Callable[[nn.Module, Batchable], torch.Tensor]


def train_epochs(model: nn.Module, data: Batchable, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
                 epochs: int, batch_size: int, generator: torch.Generator, name: str) -> list[float]:
    """Plain mini-batch loop; logs one line per epoch (never per batch)."""
    losses = []
    model.train()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        total, n = 0.0, 0
        for batch in data.batches(batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(batch)
            n += len(batch)
        mean = float(total) / max(n, 1)
        losses.append(mean)
        secs = time.perf_counter() - t0
        log.info("%s epoch %d/%d: loss=%.4f rows=%d batch=%d %.1fs (%.0f rows/s)", name, epoch + 1, epochs, mean, n,
                 batch_size, secs, n / max(secs, 1e-9))
    return losses


@torch.no_grad()
def predict_logits(model: nn.Module, data: Batchable, batch_size: int = 65_536) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and last hidden representations (CPU tensors), in row order.

    Distillation takes the teacher's logits from here: probabilities clipped and mapped back
    through the logit would flatten a confident teacher.
    """
    model.eval()
    device = next(model.parameters()).device
    logits = hidden = None  # filled in place: no list of pieces and a concatenated copy (twice the memory)
    start = 0
    for batch in data.batches(batch_size, None, shuffle=False):
        batch = batch.to(device)
        logit, h = model(batch.sparse, batch.dense, **batch.extra)
        if logits is None or hidden is None:
            logits = torch.empty((len(data), *logit.shape[1:]), dtype=logit.dtype)
            hidden = torch.empty((len(data), *h.shape[1:]), dtype=h.dtype)
        logits[start:start + len(batch)] = logit.cpu()
        hidden[start:start + len(batch)] = h.cpu()
        start += len(batch)
    if logits is None or hidden is None:
        return torch.zeros(0), torch.zeros(0)
    return logits, hidden


def predict(model: nn.Module, data: Batchable, batch_size: int = 65_536) -> tuple[np.ndarray, torch.Tensor]:
    """Probabilities (numpy) and last hidden representations (tensor), in row order."""
    logits, hidden = predict_logits(model, data, batch_size)
    return torch.sigmoid(logits).numpy().astype(np.float64), hidden


def weighted_bce(logit: torch.Tensor, label: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (nn.functional.binary_cross_entropy_with_logits(logit, label, reduction="none") * weight).mean()


# --- checkpoints ----------------------------------------------------------------------
def save_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, encoders: Encoders,
                    arch: dict[str, Any], extra_modules: dict[str, nn.Module] | None = None) -> Path:
    path = directory / CHECKPOINT
    torch.save({
        "arch": arch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "encoders": encoders.state(),
        "extra": {k: m.state_dict() for k, m in (extra_modules or {}).items()},
    }, path)
    return path


def verify_checkpoint(directory: Path) -> str:
    """The partition's checksum, after checking it against the manifest written with it.

    A flipped byte inside a tensor record still unpickles (the zip reader does not check it),
    so without this a garbled checkpoint warm-starts a model into NaN.
    """
    path = directory / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        expected = read_manifest(directory)["checksum"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} has no readable {MANIFEST} with a checksum to verify it against: {exc}") from exc
    actual = dir_checksum(directory)
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {path} does not match its manifest: checksum {actual[:12]}..., manifest says {expected[:12]}...; "
            f"the file was changed or corrupted after it was written")
    return actual


def load_checkpoint(directory: Path, verify: bool = True) -> dict[str, Any]:
    """The checkpoint's contents; ``verify`` (always, in the pipeline) checks it against its manifest first."""
    path = directory / CHECKPOINT
    if verify:
        verify_checkpoint(directory)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist") from exc
    except Exception as exc:  # unpickling, truncation, zip errors: all mean the file is unusable
        raise CheckpointError(f"checkpoint {path} is corrupt or not a weights-only checkpoint: {exc}") from exc
    missing = {"arch", "model", "optimizer", "encoders"} - set(state)
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {sorted(missing)}")
    return state


def _pad_rows(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``new`` with ``old``'s values in its leading rows (embedding tables that grew)."""
    out = new.clone()
    out[: old.shape[0]] = old
    return out


def warm_load(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], source: Path,
              extra_modules: dict[str, nn.Module] | None = None) -> None:
    """Load weights and optimiser state into a model whose embedding tables may have grown."""
    own = model.state_dict()
    loaded = {}
    for key, value in state["model"].items():
        if key not in own:
            raise CheckpointError(f"checkpoint {source / CHECKPOINT} has parameter {key!r} the model lacks: architecture changed")
        target = own[key]
        if value.shape == target.shape:
            loaded[key] = value
        elif value.dim() == target.dim() and value.shape[1:] == target.shape[1:] and value.shape[0] < target.shape[0] and ".tables." in key:
            loaded[key] = _pad_rows(value, target)
        else:
            raise CheckpointError(
                f"checkpoint {source / CHECKPOINT}: {key} has shape {tuple(value.shape)}, model expects {tuple(target.shape)}"
            )
    absent = set(own) - set(loaded)
    if absent:
        raise CheckpointError(f"checkpoint {source / CHECKPOINT} lacks parameters {sorted(absent)[:5]}: architecture changed")
    model.load_state_dict(loaded)
    for name, module in (extra_modules or {}).items():
        if name in state.get("extra", {}):
            module.load_state_dict(state["extra"][name])
    opt_state = state["optimizer"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for idx, slot in opt_state.get("state", {}).items():
        if idx >= len(params):
            raise CheckpointError(f"checkpoint {source / CHECKPOINT}: optimiser state does not match the model")
        for k in ("exp_avg", "exp_avg_sq"):
            if k in slot and slot[k].shape != params[idx].shape:
                slot[k] = _pad_rows(slot[k], torch.zeros_like(params[idx]))
    try:
        optimizer.load_state_dict(opt_state)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {source / CHECKPOINT}: optimiser state does not match the model: {exc}") from exc


def checksum_model(model: nn.Module) -> float:
    """A cheap fingerprint of the weights (sum of absolute values), for manifests and tests."""
    with torch.no_grad():
        return float(sum(p.detach().abs().sum() for p in model.parameters()))
