"""The comparison models of train_baselines: each trains, warm-starts as documented, and the
two transfer baselines (teacher_finetune, mixed_scenario) do what their names promise."""

import json

import numpy as np
import pytest
import torch

from conftest import DAYS
from ecat_tasks.config import BASELINES, EcatConfig
from ecat_tasks.models.continual import load_model
from ecat_tasks.models.data import read_lake
from ecat_tasks.storage import read_manifest
from ecat_tasks.teacher_refresh import teacher_refresh
from ecat_tasks.train_baselines import plan_comparisons, train_baselines, train_comparison

D1, D2 = DAYS


def _state(layout, name, ds):
    return {k: v.clone() for k, v in load_model(layout.model(name, ds)).model.state_dict().items()}


def test_default_baselines_include_the_transfer_baselines():
    assert {"teacher_finetune", "mixed_scenario"} <= set(EcatConfig().baselines) == set(BASELINES)


def test_every_baseline_trains_and_warm_starts(layout, cfg):
    cfg = cfg.replace(baselines=list(BASELINES))
    for ds in DAYS:
        teacher_refresh(ds, cfg, layout)
        out = train_baselines(ds, cfg, layout)
        assert set(out["models"]) == set(BASELINES)
    for name in BASELINES:
        m = read_manifest(layout.model(name, D2))
        assert m["holdout_auc"] is not None and np.isfinite(m["losses"]).all(), name
        if name == "teacher_finetune":
            continue
        # student-sized: the student's layers, and a continual chain of their own
        assert m["arch"]["hidden"] == cfg.student_hidden and m["warm_start_ds"] == D1, name
        assert m["warm_start_from"] == str(layout.model(name, D1)), name


def test_teacher_finetune_starts_from_the_days_teacher_not_from_yesterday(layout, cfg):
    cfg = cfg.replace(baselines=["teacher_finetune"])
    teacher_refresh(D1, cfg, layout)
    train_baselines(D1, cfg, layout)
    teacher_refresh(D2, cfg, layout)
    teacher_manifest = read_manifest(layout.model("teacher", D2))
    # a near-zero learning rate: the fine-tune must come out equal to the day's teacher
    train_baselines(D2, cfg.replace(student_lr=1e-6), layout)
    m = read_manifest(layout.model("teacher_finetune", D2))
    assert m["warm_start_from"] == str(layout.model("teacher", D2)) and m["warm_start_ds"] == D2
    assert m["warm_start_checksum"] == teacher_manifest["checksum"] and not m["cold_start"]
    assert m["arch"]["hidden"] == cfg.teacher_hidden and m["phases"][0]["name"] == "finetune_target"
    teacher, tuned, yesterday = (_state(layout, "teacher", D2), _state(layout, "teacher_finetune", D2),
                                 _state(layout, "teacher_finetune", D1))
    assert tuned.keys() == teacher.keys()
    for key, value in teacher.items():
        assert torch.allclose(value, tuned[key], atol=1e-3), key
    assert not all(torch.allclose(v[: yesterday[k].shape[0]] if ".tables." in k else v, yesterday[k], atol=1e-3)
                   for k, v in tuned.items())
    # the teacher's own checkpoint is only read
    assert read_manifest(layout.model("teacher", D2))["checksum"] == teacher_manifest["checksum"]
    # at the real learning rate it does move away from the teacher
    train_baselines(D2, cfg, layout)
    tuned = _state(layout, "teacher_finetune", D2)
    assert not all(torch.allclose(v, tuned[k], atol=1e-3) for k, v in teacher.items())


def test_mixed_scenario_reads_the_scenario(layout, cfg):
    cfg = cfg.replace(baselines=["mixed_scenario"])
    for ds in DAYS:
        train_baselines(ds, cfg, layout)
    m = read_manifest(layout.model("mixed_scenario", D2))
    assert m["arch"]["kind"] == "ranking_scenario" and m["warm_start_ds"] == D1
    loaded = load_model(layout.model("mixed_scenario", D2))
    assert loaded.scenario_vocab is not None and len(loaded.scenario_vocab) > 2  # target and source scenarios
    rows = read_lake([layout.lake("target", D2)]).head(500)
    source_scenario = read_lake([layout.lake("source", D2)])["scenario"].iloc[0]
    as_target = loaded.score(rows, cfg.label)
    as_source = loaded.score(rows.assign(scenario=source_scenario), cfg.label)
    assert np.abs(as_target - as_source).max() > 1e-4  # same rows, another scenario: another prediction


def test_comparison_models_train_one_per_task_and_a_bad_name_is_refused(layout, cfg):
    cfg = cfg.replace(baselines=["target_only", "mixed"], ablations=[])
    out = train_comparison(D1, cfg, layout, "mixed")
    assert out["model"] == "mixed" and out["cold_start"] and layout.model("mixed", D1).exists()
    assert not layout.model("target_only", D1).exists()  # one task trains one model, and only it
    with pytest.raises(ValueError, match="comparison model 'star' is not configured"):
        train_comparison(D1, cfg, layout, "star")


def test_cadence_trains_every_n_days_and_evaluation_scores_the_newest_checkpoint(layout, cfg):
    """compare_every_days=2: day 1 trains, day 2 does not (evaluation scores day 1's model and
    says so), and a day once due stays due on a rerun."""
    from ecat_tasks.domain_reweight import domain_reweight
    from ecat_tasks.evaluate import evaluate
    from ecat_tasks.graph_select import graph_select
    from ecat_tasks.student_distill import student_distill

    cfg = cfg.replace(baselines=["target_only"], ablations=[], compare_every_days=2)
    assert plan_comparisons(D1, cfg, layout) == ["target_only"]
    for ds in DAYS:
        graph_select(ds, cfg, layout)
        teacher_refresh(ds, cfg, layout)
        domain_reweight(ds, cfg, layout)
        student_distill(ds, cfg, layout)
        for model in plan_comparisons(ds, cfg, layout):
            train_comparison(ds, cfg, layout, model)
        evaluate(ds, cfg, layout)
    assert plan_comparisons(D2, cfg, layout) == []  # trained on D1, one day ago
    assert plan_comparisons(D2, cfg.replace(compare_every_days=1), layout) == ["target_only"]
    assert plan_comparisons(D1, cfg, layout) == ["target_only"]  # a rerun of D1 decides as before
    assert layout.model("target_only", D1).exists() and not layout.model("target_only", D2).exists()
    report = json.loads((layout.report(D2) / "metrics.json").read_text())
    assert report["comparison_trained_ds"] == {"target_only": D1}
    assert "target_only" in report["models"]  # scored with its newest checkpoint
    assert f"target_only trained {D1}" in (layout.report(D2) / "report.html").read_text()


def test_ecat_student_reads_the_scenario_and_its_ablations_switch_one_setting(layout, cfg):
    """``student_scenario``: the student has the mini-app's own scenario embedding (another
    scenario, another prediction for the same rows); the ``no_scenario`` ablation is the
    student without it, so the report and the guard can tell what the field adds. The teacher
    (``teacher_scenario``) reads it too, and a student without the field still distils from it
    (the scenario column is streamed for the teacher alone). ``teacher_init`` is the student
    started from the teacher's embeddings, which ECAT no longer is by default."""
    from ecat_tasks.domain_reweight import domain_reweight
    from ecat_tasks.graph_select import graph_select
    from ecat_tasks.student_distill import student_distill

    teacher_refresh(D1, cfg, layout)
    graph_select(D1, cfg, layout)
    domain_reweight(D1, cfg, layout)
    student_distill(D1, cfg, layout)
    train_comparison(D1, cfg.replace(ablations=["no_scenario"]), layout, "no_scenario")
    student, ablation = load_model(layout.model("student", D1)), load_model(layout.model("no_scenario", D1))
    assert student.arch["kind"] == "ranking_scenario" and ablation.arch["kind"] == "ranking"
    assert ablation.scenario_vocab is None
    assert load_model(layout.model("teacher", D1)).arch["kind"] == "ranking_scenario"
    assert read_manifest(layout.model("no_scenario", D1))["kd"]["enabled"]
    rows = read_lake([layout.lake("target", D1)]).head(300)
    other = read_lake([layout.lake("source", D1)])["scenario"].iloc[0]
    assert np.abs(student.score(rows, cfg.label) - student.score(rows.assign(scenario=other), cfg.label)).max() > 1e-4
    assert np.array_equal(ablation.score(rows, cfg.label), ablation.score(rows.assign(scenario=other), cfg.label))
    assert not EcatConfig().student_init_from_teacher and "teacher_init" in EcatConfig().ablations
    train_comparison(D1, cfg.replace(ablations=["teacher_init"]), layout, "teacher_init")
    assert not read_manifest(layout.model("student", D1))["init_from_teacher"]
    assert read_manifest(layout.model("teacher_init", D1))["init_from_teacher"]
