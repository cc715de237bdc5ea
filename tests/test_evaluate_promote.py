import json

import numpy as np
import pytest

from conftest import DAYS
from ecat_tasks.domain_reweight import domain_reweight
from ecat_tasks.evaluate import evaluate, eval_sets
from ecat_tasks.graph_select import graph_select
from ecat_tasks.models.continual import load_model
from ecat_tasks.promote import ALIAS, gate, promote
from ecat_tasks.student_distill import student_distill
from ecat_tasks.teacher_refresh import teacher_refresh
from ecat_tasks.tracking import EXPERIMENT, client
from ecat_tasks.train_baselines import train_baselines


@pytest.mark.parametrize("student,target_only,champion,passes,why", [
    (0.70, 0.65, None, True, "no current champion"),
    (0.70, 0.71, None, False, "does not beat target_only"),
    (0.70, 0.65, 0.704, True, "champion 0.7040"),
    (0.70, 0.65, 0.72, False, "trails the champion"),
    (0.70, None, None, False, "no target_only"),
])
def test_gate(cfg, student, target_only, champion, passes, why):
    ok, reason = gate(student, target_only, champion, cfg)
    assert ok is passes and why in reason


def _train_day(ds, cfg, layout):
    graph_select(ds, cfg, layout)
    domain_reweight(ds, cfg, layout)
    teacher_refresh(ds, cfg, layout)
    student_distill(ds, cfg, layout)
    train_baselines(ds, cfg, layout)


def test_evaluate_report_history_and_promotion(layout, cfg):
    cfg = cfg.replace(ablations=["no_kd"], baselines=["target_only", "mixed"])
    _train_day(DAYS[0], cfg, layout)
    m = evaluate(DAYS[0], cfg, layout)
    report = json.loads((layout.report(DAYS[0]) / "metrics.json").read_text())
    assert set(report["models"]) == {"ecat", "teacher", "target_only", "mixed", "ecat_no_kd"}
    assert set(report["models"]["ecat"]) == {"validation", "holdout"}
    for name in ("report.html", "auc_history.png", "metrics.csv"):
        assert (layout.report(DAYS[0]) / name).is_file()
    assert (layout.report(DAYS[0]) / "validation" / "summary.json").is_file()  # validate's output kept
    assert m["ecat_auc"] == report["models"]["ecat"]["holdout"]["auc"]

    evaluate(DAYS[0], cfg, layout)  # a rerun replaces runs, never duplicates them
    mc = client(cfg, layout.root)
    exp = mc.get_experiment_by_name(EXPERIMENT)
    runs = mc.search_runs([exp.experiment_id], filter_string=f"tags.ds = '{DAYS[0]}' and tags.model = 'ecat'")
    assert len(runs) == 1 and runs[0].data.metrics["holdout_auc"] == pytest.approx(m["ecat_auc"])

    # promotion: make the gate pass by construction, then check the registered model scores identically
    lenient = cfg.replace(promote_min_lift=-1.0)
    result = promote(DAYS[0], lenient, layout)
    assert result["promoted"] and result["previous_champion"] is None
    import mlflow

    holdout = eval_sets(DAYS[0], cfg, layout)["holdout"]
    registered = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model}@{ALIAS}")
    expected = load_model(layout.model("student", DAYS[0])).score(holdout, cfg.label)
    assert np.allclose(np.asarray(registered.predict(holdout)), expected)

    # a refused gate leaves the alias where it was and does not fail
    strict = cfg.replace(promote_min_lift=0.99)
    _train_day(DAYS[1], cfg, layout)
    evaluate(DAYS[1], cfg, layout)
    refused = promote(DAYS[1], strict, layout)
    assert refused["promoted"] is False and "does not beat target_only" in refused["reason"]
    assert mc.get_model_version_by_alias(cfg.registered_model, ALIAS).version == result["version"]
