import math

import pytest
import torch

from conftest import DAYS
from ecat_tasks.graph_select import graph_select
from ecat_tasks.domain_reweight import domain_reweight
from ecat_tasks.models.continual import load_model
from ecat_tasks.models.training import CheckpointError, load_checkpoint
from ecat_tasks.storage import read_manifest
from ecat_tasks.student_distill import student_distill
from ecat_tasks.teacher_refresh import teacher_refresh

D1, D2 = DAYS


def _weights(layout, name, ds):
    return {k: v.clone() for k, v in load_model(layout.model(name, ds)).model.state_dict().items()}


def test_teacher_cold_then_warm_start_from_previous_day(layout, cfg):
    m1 = teacher_refresh(D1, cfg, layout)
    assert m1["cold_start"] and m1["warm_start_ds"] is None
    # a near-zero learning rate: day 2 must come out (almost) equal to day 1, row for row
    m2 = teacher_refresh(D2, cfg.replace(teacher_lr=1e-6), layout)
    assert not m2["cold_start"] and m2["warm_start_ds"] == D1
    w1, w2 = _weights(layout, "teacher", D1), _weights(layout, "teacher", D2)
    for key, before in w1.items():
        after = w2[key][: before.shape[0]] if ".tables." in key else w2[key]
        assert torch.allclose(before, after, atol=1e-3), key
    manifest = read_manifest(layout.model("teacher", D2))
    assert manifest["train_days"] == [D2] and sum(manifest["new_ids"].values()) > 0  # new ids grew the tables


def test_cold_start_trains_on_the_lookback_window(layout, cfg):
    teacher_refresh(D2, cfg, layout)  # no earlier teacher: cold start over both days
    manifest = read_manifest(layout.model("teacher", D2))
    assert manifest["cold_start"] and manifest["train_days"] == [D1, D2]


def test_rerun_of_a_day_is_identical(layout, cfg):
    teacher_refresh(D1, cfg, layout)
    first = teacher_refresh(D2, cfg, layout)
    again = teacher_refresh(D2, cfg, layout)
    assert first["checksum"] == again["checksum"] and first["loss"] == again["loss"]


def test_corrupt_previous_checkpoint_is_an_error_not_a_cold_start(layout, cfg):
    teacher_refresh(D1, cfg, layout)
    (layout.model("teacher", D1) / "model.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=f"ds={D1}/model.pt"):
        teacher_refresh(D2, cfg, layout)
    assert not layout.model("teacher", D2).exists()


def test_architecture_change_is_refused_with_the_file_named(layout, cfg):
    teacher_refresh(D1, cfg, layout)
    with pytest.raises(CheckpointError, match="architecture change"):
        teacher_refresh(D2, cfg.replace(teacher_hidden=[64, 16]), layout)


def test_a_spec_change_is_refused_not_warm_started(layout, cfg, tmp_path):
    """A checkpoint records its features: a spec without one of them cannot warm-start from it."""
    import yaml

    from ecat_tasks.spec import DEMO_SPEC_PATH

    teacher_refresh(D1, cfg, layout)
    data = yaml.safe_load(DEMO_SPEC_PATH.read_text())
    data["sparse"] = [f for f in data["sparse"] if f["column"] != "device"]
    (tmp_path / "no_device.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match="a spec change needs a new chain") as err:
        teacher_refresh(D2, cfg.replace(feature_spec=str(tmp_path / "no_device.yaml")), layout)
    assert "'device'" in str(err.value)
    assert not layout.model("teacher", D2).exists()


def test_student_distills_and_warm_starts(layout, cfg):
    for ds in DAYS:
        graph_select(ds, cfg, layout)
        teacher_refresh(ds, cfg, layout)
        domain_reweight(ds, cfg, layout)
        m = student_distill(ds, cfg, layout)
    assert m["warm_start_ds"] == D1
    manifest = read_manifest(layout.model("student", D2))
    assert manifest["kd"]["enabled"] and manifest["source_rows"] > 0 and manifest["target_rows"] > 0
    assert manifest["holdout_auc"] is not None
    loaded = load_model(layout.model("student", D2))
    assert "student_projection" in loaded.extra  # g, the learned student->teacher projection, is checkpointed


def test_teacher_cold_start_and_warm_day_take_their_own_epochs_and_batch_size(layout, cfg):
    """A cold start trains teacher_epochs, a warm day teacher_warm_epochs, both in batches of
    teacher_batch_size (the optimiser's step count says how many batches it took)."""
    cfg = cfg.replace(teacher_epochs=2, teacher_warm_epochs=1, teacher_batch_size=100, batch_size=512)
    for ds, epochs in ((D1, 2), (D2, 1)):
        teacher_refresh(ds, cfg, layout)
        directory = layout.model("teacher", ds)
        manifest = read_manifest(directory)
        assert manifest["cold_start"] == (ds == D1)
        assert len(manifest["losses"]) == epochs and manifest["phases"][0]["epochs"] == epochs
        assert manifest["batch_size"] == 100
        steps = {float(s["step"]) for s in load_checkpoint(directory)["optimizer"]["state"].values()}
        day_steps = epochs * math.ceil(manifest["rows"] / 100)
        assert steps == ({day_steps} if ds == D1 else {day_steps + prior_steps})
        prior_steps = day_steps
