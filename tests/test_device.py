"""device=cuda routes every training step to the GPU: checked on CPU by recording where
models and tensors are sent (each move to CUDA is recorded, then served on the CPU)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from ecat_tasks.models.training import seed_everything, select_device

TRAINING_STEPS = ("domain_reweight", "teacher_refresh", "student_distill", "train_comparison")


def _is_cuda(args: tuple, kwargs: dict) -> bool:
    for value in (*args, kwargs.get("device")):
        if isinstance(value, (str, torch.device)) and torch.device(value).type == "cuda":
            return True
    return False


@pytest.fixture()
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Pretend CUDA exists; count modules and tensors sent to it and keep them on the CPU."""
    moved: Counter = Counter()
    tensor_to, module_to = torch.Tensor.to, nn.Module.to

    def to_tensor(self: torch.Tensor, *args, **kwargs):
        if _is_cuda(args, kwargs):
            moved["tensor"] += 1
            return tensor_to(self, "cpu")
        return tensor_to(self, *args, **kwargs)

    def to_module(self: nn.Module, *args, **kwargs):
        if _is_cuda(args, kwargs):
            moved[type(self).__name__] += 1
            return module_to(self, "cpu")
        return module_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "to", to_tensor)
    monkeypatch.setattr(nn.Module, "to", to_module)
    return moved


def test_asking_for_cuda_without_one_is_a_clear_error(cfg) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="device='cuda' requested but CUDA is not available"):
        select_device(cfg.replace(device="cuda"))


def test_deterministic_flag_sets_torch_and_cudnn() -> None:
    seed_everything(1, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    seed_everything(1)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic


def test_every_training_step_sends_its_models_and_batches_to_cuda(layout, cfg, fake_cuda: Counter) -> None:
    from ecat_tasks.domain_reweight import domain_reweight
    from ecat_tasks.graph_select import graph_select
    from ecat_tasks.storage import read_manifest
    from ecat_tasks.student_distill import student_distill
    from ecat_tasks.teacher_refresh import teacher_refresh
    from ecat_tasks.train_baselines import train_comparison

    from conftest import DAYS

    ds = DAYS[0]
    cfg = cfg.replace(device="cuda", baselines=["target_only"], ablations=["no_kd"])
    graph_select(ds, cfg, layout)  # not a training step: no torch
    steps = {
        "teacher_refresh": lambda: teacher_refresh(ds, cfg, layout),
        "domain_reweight": lambda: domain_reweight(ds, cfg, layout),  # reads the day's teacher
        "student_distill": lambda: student_distill(ds, cfg, layout),
        "train_comparison": lambda: train_comparison(ds, cfg, layout, "target_only"),
    }
    assert set(steps) == set(TRAINING_STEPS)
    for name, run in steps.items():
        fake_cuda.clear()
        run()
        assert fake_cuda["tensor"] > 0, f"{name}: no batch went to the GPU"
        if name == "domain_reweight":
            # the frozen teacher and one discriminator per cross-fitting fold
            assert fake_cuda["RankingModel"] == 1 and fake_cuda["Sequential"] == cfg.reweight_folds, fake_cuda
        elif name == "student_distill":  # the student, its KD projection and the frozen teacher
            assert fake_cuda["RankingModel"] == 2 and fake_cuda["Linear"] >= 1, fake_cuda
        else:
            assert fake_cuda["RankingModel"] == 1, (name, fake_cuda)
    for model in ("teacher", "student", "target_only"):
        assert read_manifest(layout.model(model, ds))["device"] == "cuda"
