"""Model health before publish: garbled checkpoints, NaN training and constant predictions never publish."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import DAYS
from ecat_tasks.models.health import ModelHealthError, check_health
from ecat_tasks.models.training import CHECKPOINT, CheckpointError
from ecat_tasks.storage import MANIFEST, dir_checksum, read_manifest
from ecat_tasks.teacher_refresh import teacher_refresh

D1, D2 = DAYS


def garble_tensor_record(path: Path, n_bytes: int = 64) -> None:
    """Overwrite ``n_bytes`` in the middle of the largest tensor record with 0xFF, keeping the file size.

    0xFFFFFFFF is a float32 NaN; the zip reader does not check the record, so the file still loads.
    """
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    start -= start % 4
    size = len(raw)
    raw[start:start + n_bytes] = b"\xff" * n_bytes
    assert len(raw) == size
    path.write_bytes(bytes(raw))


def test_garbled_checkpoint_is_refused_by_its_checksum(layout, cfg):
    teacher_refresh(D1, cfg, layout)
    ckpt = layout.model("teacher", D1) / CHECKPOINT
    garble_tensor_record(ckpt)
    torch.load(ckpt, weights_only=True)  # the garbled file still loads: only the checksum can tell
    with pytest.raises(CheckpointError, match=f"ds={D1}/model.pt does not match its manifest"):
        teacher_refresh(D2, cfg, layout)
    assert not layout.model("teacher", D2).exists()


def test_nan_weights_train_to_nan_and_are_not_published(layout, cfg):
    """Weights broken before the manifest was written (checksum agrees): the health check stops them."""
    teacher_refresh(D1, cfg, layout)
    d1 = layout.model("teacher", D1)
    garble_tensor_record(d1 / CHECKPOINT)
    manifest = read_manifest(d1)
    manifest["checksum"] = dir_checksum(d1)
    (d1 / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelHealthError, match=f"^teacher ds={D2} loss is nan"):
        teacher_refresh(D2, cfg, layout)
    assert not layout.model("teacher", D2).exists()


def test_constant_predictions_are_not_published(layout, cfg):
    with pytest.raises(ModelHealthError, match=f"^teacher ds={D1} predictions are constant"):
        teacher_refresh(D1, cfg.replace(health_min_pred_std=0.5), layout)
    assert not layout.model("teacher", D1).exists()
    m = teacher_refresh(D1, cfg.replace(teacher_epochs=3), layout)  # one tiny epoch ranks at chance level
    assert read_manifest(layout.model("teacher", D1))["health"]["pred_std"] > cfg.health_min_pred_std
    assert m["holdout_auc"] > 0.5


def test_check_health_names_each_check():
    good = nn.Linear(3, 1)
    spread = np.linspace(0.1, 0.9, 50)
    assert check_health("m", D1, [0.5, 0.4], [good], spread, 1e-4)["pred_std"] > 0.2
    with pytest.raises(ModelHealthError, match="loss is inf from epoch 2"):
        check_health("m", D1, [0.5, float("inf")], [good], spread, 1e-4)
    broken = nn.Linear(3, 1)
    with torch.no_grad():
        broken.weight[0, 1] = float("nan")
    with pytest.raises(ModelHealthError, match="has 1 of 8 parameters NaN or infinite .first: weight"):
        check_health("m", D1, [0.5], [good, broken], spread, 1e-4)
    with pytest.raises(ModelHealthError, match="predicts NaN for 1 of 50"):
        check_health("m", D1, [0.5], [good], np.r_[spread[:-1], np.nan], 1e-4)
    with pytest.raises(ModelHealthError, match="predictions are constant: std 0 "):
        check_health("m", D1, [0.5], [good], np.full(50, 0.03), 1e-4)
