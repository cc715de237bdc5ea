"""The day cache: what the student and its ablations compute alike (the candidates' positions,
the frozen teacher's targets) is computed once a day and read back only for the same inputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import DAYS, tiny_config

from ecat_tasks.models.daycache import DayCache
from ecat_tasks.storage import MANIFEST, atomic_dir


def test_entries_are_read_back_by_key_and_the_cache_holds_one_day(tmp_path) -> None:
    from ecat_tasks.storage import Layout

    layout = Layout(tmp_path)
    day1, day2 = DayCache(layout, "2026-03-01"), DayCache(layout, "2026-03-02")
    key = day1.key("kind", np.arange(5), "x")
    assert day1.get("kind", key) is None
    day1.put("kind", key, a=np.arange(5), b=np.ones((2, 3), np.float32))
    got = day1.get("kind", key)
    assert got is not None and np.array_equal(got["a"], np.arange(5)) and got["b"].dtype == np.float32
    assert day1.get("kind", day1.key("kind", np.arange(6), "x")) is None  # other inputs: another key
    assert day1.get("other", key) is None
    day1._path("kind", "bad").write_bytes(b"not an npz")
    assert day1.get("kind", "bad") is None  # unreadable: computed again, never trusted
    day2.put("kind", key, a=np.zeros(1))
    assert day1.get("kind", key) is None and not day1.directory.exists()  # a new day drops the old one
    assert [p.name for p in day2.directory.iterdir()] == [f"kind-{key}.npz"]  # nothing half-written left


@pytest.fixture()
def day(layout):
    """Day 1 of the fixture lake with its graph candidates and teacher."""
    from ecat_tasks.graph_select import graph_select
    from ecat_tasks.teacher_refresh import teacher_refresh

    cfg = tiny_config()
    graph_select(DAYS[0], cfg, layout)
    teacher_refresh(DAYS[0], cfg, layout)
    return layout, cfg


def test_source_rows_are_shared_for_the_same_ids_and_weights_until_the_source_is_republished(day, monkeypatch) -> None:
    import ecat_tasks.inputs as inputs
    from ecat_tasks.inputs import graph_candidates_ids, source_subset_part

    layout, _ = day
    ds = DAYS[0]
    calls = []
    real = inputs.select_ids
    monkeypatch.setattr(inputs, "select_ids", lambda *a, **k: calls.append(1) or real(*a, **k))
    ids = graph_candidates_ids(ds, layout).column("sample_id").combine_chunks()
    weight = np.linspace(0.5, 2.0, len(ids)).astype(np.float32)
    first = source_subset_part(ds, layout, ids, weight)
    again = source_subset_part(ds, layout, ids, weight)
    assert len(calls) == 1  # the second selection read the first one's positions
    assert np.array_equal(first.rows, again.rows) and np.array_equal(first.row_weight, again.row_weight)
    source_subset_part(ds, layout, ids, weight * 2)  # other weights
    source_subset_part(ds, layout, ids[: len(ids) // 2], weight[: len(ids) // 2])  # other ids
    unweighted = source_subset_part(ds, layout, ids)
    assert len(calls) == 4 and unweighted.row_weight is None
    with atomic_dir(layout.lake_day(ds)) as tmp:  # validate publishes the day again: a new version
        for domain in ("source", "target"):
            shutil.copytree(layout.lake(domain, ds), tmp / domain)
    republished = source_subset_part(ds, layout, ids, weight)
    assert len(calls) == 5 and np.array_equal(republished.rows, first.rows)


def test_teacher_targets_are_shared_only_for_the_same_teacher_and_the_columns_it_reads(day, monkeypatch) -> None:
    import ecat_tasks.models.student as student
    from ecat_tasks.inputs import target_rows
    from ecat_tasks.models.model import load_model

    layout, cfg = day
    ds = DAYS[0]
    teacher = load_model(layout.model("teacher", ds))
    assert teacher.checksum == json.loads((layout.model("teacher", ds) / MANIFEST).read_text())["checksum"]
    calls = []
    real = student.predict_logits
    monkeypatch.setattr(student, "predict_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    hooks = student.DistillHooks(teacher, cfg, DayCache(layout, ds))
    frame = target_rows(ds, layout)
    first = hooks.inputs(teacher, frame)
    again = hooks.inputs(teacher, frame.assign(**{cfg.label: 1 - frame[cfg.label]}))  # a column it does not read
    assert len(calls) == 1
    assert all(torch.equal(first[k], again[k]) for k in first)
    changed = frame.copy()
    changed.loc[0, teacher.encoders.spec.dense_names[0]] += 1.0  # one value the teacher reads
    hooks.inputs(teacher, changed)
    hooks.inputs(teacher, frame.iloc[1:])  # other rows
    other = student.DistillHooks(replace(teacher, checksum="another checkpoint"), cfg,
                                 DayCache(layout, ds))
    other.inputs(teacher, frame)
    assert len(calls) == 4
    no_checkpoint = student.DistillHooks(replace(teacher, checksum=""), cfg, DayCache(layout, ds))
    no_checkpoint.inputs(teacher, frame)
    assert len(calls) == 5 and no_checkpoint.cache is None  # a teacher not loaded from a checkpoint: never cached


def test_a_rerun_with_the_cache_writes_the_same_student_and_ablation(day) -> None:
    """The student fills the cache, an ablation on the same rows reads it; each rerun (cache
    full, then emptied) replaces its checkpoint byte for byte."""
    from ecat_tasks.domain_reweight import domain_reweight
    from ecat_tasks.models.training import CHECKPOINT
    from ecat_tasks.storage import file_sha256
    from ecat_tasks.student_distill import student_distill
    from ecat_tasks.train_baselines import train_comparison

    layout, _ = day
    ds = DAYS[0]
    cfg = tiny_config(ablations=["fixed_kd"])
    domain_reweight(ds, cfg, layout)
    cache = DayCache(layout, ds)

    def run() -> tuple[str, str]:
        student_distill(ds, cfg, layout)
        train_comparison(ds, cfg, layout, "fixed_kd")
        return (file_sha256(layout.model("student", ds) / CHECKPOINT),
                file_sha256(layout.model("fixed_kd", ds) / CHECKPOINT))

    first = run()
    kinds = sorted({p.name.split("-")[0] for p in cache.directory.glob("*.npz")})
    assert kinds == ["source_rows", "teacher_targets"]
    assert run() == first  # from the cache
    shutil.rmtree(cache.directory)
    assert run() == first  # computed again
