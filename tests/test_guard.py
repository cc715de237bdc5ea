"""The negative-transfer guard: the decision rule, and the task wired into evaluate and promote."""

import json
import logging

import mlflow
import numpy as np
import pytest

import ecat_tasks.guard as guard_module
from conftest import DAYS
from ecat_tasks.domain_reweight import domain_reweight
from ecat_tasks.evaluate import evaluate
from ecat_tasks.graph_select import graph_select
from ecat_tasks.guard import candidates, decide, guard
from ecat_tasks.inputs import eval_sets, validation_window
from ecat_tasks.models.continual import load_model
from ecat_tasks.promote import ALIAS, promote
from ecat_tasks.report import model_dir
from ecat_tasks.storage import MANIFEST
from ecat_tasks.student_distill import student_distill
from ecat_tasks.teacher_refresh import teacher_refresh
from ecat_tasks.tracking import EXPERIMENT, client
from ecat_tasks.train_baselines import train_baselines


def _day(n_users=300, rows_per_user=4, seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), rows_per_user)
    taste = rng.normal(size=len(users))  # what the target's users really like
    labels = (rng.random(len(users)) < 1 / (1 + np.exp(-2 * taste))).astype(int)
    return rng, users, taste, labels


def _sig(x):
    return 1 / (1 + np.exp(-x))


def test_a_day_where_the_source_hurts_serves_the_fallback():
    """ECAT's scores follow the source, whose preference is the target's reversed; the
    target-tuned fallback follows the target: the guard must serve the fallback."""
    rng, users, taste, labels = _day()
    scores = {"teacher_finetune": _sig(taste + rng.normal(0, 1, len(taste))),
              "ecat_no_kd": _sig(-0.5 * taste + rng.normal(0, 1, len(taste))),
              "ecat": _sig(-taste + rng.normal(0, 1, len(taste)))}
    d = decide(users, labels, scores, margin=0.002)
    assert d.served == "teacher_finetune" and d.fallback
    assert [c["switch"] for c in d.comparisons] == [False, False]
    assert d.comparisons[-1]["hi"] < 0  # ECAT is behind beyond the interval
    assert "teacher_finetune" in d.reason and "ecat vs teacher_finetune" in d.reason


def test_ecat_is_served_when_it_is_better():
    rng, users, taste, labels = _day(seed=1)
    scores = {"teacher_finetune": _sig(taste + rng.normal(0, 2, len(taste))),
              "ecat": _sig(taste + rng.normal(0, 0.5, len(taste)))}
    d = decide(users, labels, scores, margin=0.002)
    assert d.served == "ecat" and not d.fallback and d.comparisons[0]["lo"] > 0


def test_a_near_tie_goes_to_the_simpler_model():
    rng, users, taste, labels = _day(seed=2)
    base = taste + rng.normal(0, 1, len(taste))
    scores = {"teacher_finetune": _sig(base), "ecat": _sig(base + rng.normal(0, 0.01, len(base)))}  # same ranking, almost
    d = decide(users, labels, scores, margin=0.01)
    assert abs(d.comparisons[0]["auc_lift"]) < 0.01 and not d.comparisons[0]["lo"] > 0
    assert d.served == "teacher_finetune"


def test_one_label_class_serves_ecat_without_comparing():
    users, labels = np.arange(10), np.ones(10, int)
    d = decide(users, labels, {"teacher_finetune": np.linspace(0, 1, 10), "ecat": np.linspace(1, 0, 10)}, 0.002)
    assert d.served == "ecat" and "one label class" in d.reason


class _Reversed:
    """ECAT's student on a day its transfer hurts: it ranks the validation rows backwards."""

    def __init__(self, loaded):
        self.loaded = loaded

    def score(self, frame, label):
        return 1.0 - self.loaded.score(frame, label)


def test_the_fallback_is_served_reported_tagged_and_promoted(layout, cfg, caplog, monkeypatch):
    cfg = cfg.replace(ablations=["no_kd"], baselines=["target_only"], promote_min_lift=-1.0)
    ds = DAYS[0]
    graph_select(ds, cfg, layout)
    domain_reweight(ds, cfg, layout)
    teacher_refresh(ds, cfg, layout)
    student_distill(ds, cfg, layout)
    train_baselines(ds, cfg, layout)
    assert candidates(ds, cfg, layout) == ["ecat_no_kd", "ecat"]  # target_only is no fallback of ECAT
    student = model_dir(layout, "ecat", ds)
    real = guard_module.load_model
    monkeypatch.setattr(guard_module, "load_model", lambda d: _Reversed(real(d)) if d == student else real(d))
    with caplog.at_level(logging.INFO, logger="ecat_tasks"):
        out = guard(ds, cfg, layout)
    assert out["served"] == "ecat_no_kd" and out["fallback"]
    manifest = json.loads((layout.model("served", ds) / MANIFEST).read_text())
    assert manifest["served"] == "ecat_no_kd" and manifest["candidates"] == ["ecat_no_kd", "ecat"]
    assert manifest["validation_rows"] == len(validation_window(ds, cfg, layout, cfg.guard_window_days)) > 0
    assert manifest["comparisons"][0]["auc_lift"] < 0 and not manifest["comparisons"][0]["switch"]
    line = [r for r in caplog.records if r.getMessage().startswith(f"guard ds={ds}")]
    assert line and line[0].levelname == "WARNING" and "serving ecat_no_kd (FALLBACK" in line[0].getMessage()

    evaluate(ds, cfg, layout)
    report = json.loads((layout.report(ds) / "metrics.json").read_text())
    assert report["guard"]["served"] == "ecat_no_kd" and report["guard"]["reason"] == manifest["reason"]
    assert "Served model: ecat_no_kd" in (layout.report(ds) / "report.html").read_text()
    mc = client(cfg, layout.root)
    exp = mc.get_experiment_by_name(EXPERIMENT)
    for model in ("ecat", "ecat_no_kd"):
        run = mc.search_runs([exp.experiment_id], filter_string=f"tags.ds = '{ds}' and tags.model = '{model}'")[0]
        assert run.data.tags["served"] == "ecat_no_kd" and run.data.tags["guard_fallback"] == "true"

    result = promote(ds, cfg, layout)
    assert result["promoted"] and result["served"] == "ecat_no_kd"
    validation = eval_sets(ds, cfg, layout)["validation"]
    registered = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model}@{ALIAS}")
    expected = load_model(model_dir(layout, "ecat_no_kd", ds)).score(validation, cfg.label)
    assert np.allclose(np.asarray(registered.predict(validation)), expected)  # the fallback's checkpoint
    assert json.loads((layout.report(ds) / "metrics.json").read_text())["promotion"]["served"] == "ecat_no_kd"


def test_without_a_fallback_trained_today_ecat_is_served(layout, cfg):
    ds = DAYS[0]
    graph_select(ds, cfg, layout)
    domain_reweight(ds, cfg, layout)
    teacher_refresh(ds, cfg, layout)
    student_distill(ds, cfg, layout)
    out = guard(ds, cfg, layout)
    assert out["served"] == "ecat" and not out["fallback"] and "no fallback trained today" in out["reason"]
