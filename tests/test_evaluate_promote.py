import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import DAYS
from ecat_tasks.domain_reweight import domain_reweight
from ecat_tasks.evaluate import evaluate
from ecat_tasks.inputs import eval_sets, next_day_rows
from ecat_tasks.graph_select import graph_select
from ecat_tasks.metrics import all_metrics, paired_bootstrap_lift
from ecat_tasks.models.continual import load_model
from ecat_tasks.promote import ALIAS, gate, promote
from ecat_tasks.score_previous_day import score_previous_day
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
    (float("nan"), 0.65, None, False, "undefined"),
])
def test_gate(cfg, student, target_only, champion, passes, why):
    ok, reason = gate(student, target_only, champion, cfg)
    assert ok is passes and why in reason


def test_gate_of_a_served_baseline(cfg):
    """The guard may serve target_only itself (nothing beat it): it is not measured against itself,
    but the champion's tolerance still holds; another baseline must beat target_only like ECAT."""
    assert gate(0.70, 0.70, None, cfg, served="target_only") == (
        True, "target_only validation AUC 0.7000 (served: no transfer model beat it); no current champion")
    ok, reason = gate(0.70, 0.70, 0.72, cfg, served="target_only")
    assert not ok and reason.startswith("target_only validation AUC 0.7000 trails the champion's")
    ok, reason = gate(0.69, 0.70, None, cfg, served="star")
    assert not ok and reason.startswith("star validation AUC 0.6900 does not beat target_only")


def train_day(ds, cfg, layout):
    graph_select(ds, cfg, layout)
    teacher_refresh(ds, cfg, layout)
    domain_reweight(ds, cfg, layout)
    student_distill(ds, cfg, layout)
    train_baselines(ds, cfg, layout)


def _run(mc, ds, model):
    exp = mc.get_experiment_by_name(EXPERIMENT)
    return mc.search_runs([exp.experiment_id], filter_string=f"tags.ds = '{ds}' and tags.model = '{model}'")


def test_no_previous_day_is_a_logged_no_op(layout, cfg, caplog):
    caplog.set_level(logging.INFO, logger="ecat_tasks")
    m = score_previous_day(DAYS[0], cfg, layout)
    assert m["scored"] == [] and not layout.report("2026-02-28").exists()
    assert any("nothing to score" in r.getMessage() for r in caplog.records)


def test_evaluate_next_day_and_promotion(layout, cfg):
    cfg = cfg.replace(ablations=["no_kd"], baselines=["target_only", "mixed"])
    d1, d2 = DAYS
    train_day(d1, cfg, layout)
    m = evaluate(d1, cfg, layout)
    report = json.loads((layout.report(d1) / "metrics.json").read_text())
    models = {"ecat", "teacher", "target_only", "mixed", "ecat_no_kd"}
    assert set(report["models"]) == models
    assert set(report["models"]["ecat"]) == {"validation", "holdout"}
    for name in ("report.html", "auc_history.png", "metrics.csv"):
        assert (layout.report(d1) / name).is_file()
    assert (layout.report(d1) / "validation" / "summary.json").is_file()  # validate's output kept
    assert m["ecat_auc"] == report["models"]["ecat"]["validation"]["auc"]

    evaluate(d1, cfg, layout)  # a rerun replaces runs, never duplicates them
    mc = client(cfg, layout.root)
    runs = _run(mc, d1, "ecat")
    assert len(runs) == 1 and runs[0].data.metrics["validation_auc"] == pytest.approx(m["ecat_auc"])

    # promotion reads the validation slice; the registered model scores like the checkpoint
    lenient = cfg.replace(promote_min_lift=-1.0)
    result = promote(d1, lenient, layout)
    assert result["promoted"] and result["previous_champion"] is None
    import mlflow

    validation = eval_sets(d1, cfg, layout)["validation"]
    registered = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model}@{ALIAS}")
    expected = load_model(layout.model("student", d1)).score(validation, cfg.label)
    assert np.allclose(np.asarray(registered.predict(validation)), expected)
    assert json.loads((layout.report(d1) / "metrics.json").read_text())["promotion"]["version"] == result["version"]

    # day 2 starts by scoring day 1's models on all of day 2's target rows
    scored = score_previous_day(d2, cfg, layout)
    assert set(scored["scored"]) == models
    report = json.loads((layout.report(d1) / "metrics.json").read_text())
    n_target = json.loads((layout.lake("target", d2) / "_manifest.json").read_text())["rows"]
    # every row of d2 but its validation slice, which the guard of d2 reads scored by these same models
    n_validation = len(eval_sets(d2, cfg, layout)["validation"])
    assert 0 < n_validation < n_target and report["next_day"]["rows"] == n_target - n_validation
    for name in models:
        nd = report["models"][name]["next_day"]
        assert nd["rows"] == n_target - n_validation and nd["auc_lo"] <= nd["auc"] <= nd["auc_hi"]
    assert set(report["next_day"]["lift"]) == models - {"ecat"}
    # the numbers are the definitions' (all models are bootstrapped on one set of resamples): checked for one
    frame = next_day_rows(d2, cfg, layout)
    users, labels = frame["user_id"].to_numpy(), frame[cfg.label].to_numpy()
    ecat, mixed = (load_model(layout.model(n, d1)).score(frame, cfg.label) for n in ("student", "mixed"))
    band = paired_bootstrap_lift(users, labels, mixed, np.full(len(frame), 0.5), 1000, cfg.seed)["auc"]
    expected = {**all_metrics(users, labels, mixed), "auc_lo": band["lo"] + 0.5, "auc_hi": band["hi"] + 0.5}
    assert json.dumps(report["models"]["mixed"]["next_day"]) == json.dumps(expected)  # exact, NaN included
    expected = paired_bootstrap_lift(users, labels, ecat, mixed, 1000, cfg.seed)
    assert json.dumps(report["next_day"]["lift"]["mixed"]) == json.dumps(expected)
    for lift in report["next_day"]["lift"].values():
        assert lift["auc"]["lo"] <= lift["auc"]["lift"] <= lift["auc"]["hi"]
    assert report["next_day"]["champion_check"]["decision"] == "kept"  # the first champion replaced nothing
    assert report["promotion"]["promoted"]  # promote's decision carried over
    assert runs[0].info.run_id == _run(mc, d1, "ecat")[0].info.run_id  # added to day 1's run
    logged = _run(mc, d1, "ecat")[0].data.metrics
    assert logged["next_day_auc"] == pytest.approx(report["models"]["ecat"]["next_day"]["auc"])
    assert logged["validation_auc"] == pytest.approx(m["ecat_auc"])
    page = (layout.report(d1) / "report.html").read_text()
    assert f"scored on ds={d2}" in page and "ECAT AUC lift" in page and "Cold-start holdout" in page
    assert "PROMOTED" in page and "KEPT" in page
    with open(layout.report(d1) / "metrics.csv") as fh:
        assert sum(",next_day," in line for line in fh) == len(models)

    # a rerun of day 1's evaluation keeps the next-day scores of the unchanged checkpoints
    evaluate(d1, cfg, layout)
    rerun = json.loads((layout.report(d1) / "metrics.json").read_text())
    assert rerun["next_day"] == report["next_day"]
    assert rerun["models"]["ecat"]["next_day"] == report["models"]["ecat"]["next_day"]
    assert _run(mc, d1, "ecat")[0].data.metrics["next_day_auc"] == pytest.approx(logged["next_day_auc"])

    # a refused gate leaves the alias where it was and does not fail
    strict = cfg.replace(promote_min_lift=0.99)
    train_day(d2, cfg, layout)
    evaluate(d2, cfg, layout)
    refused = promote(d2, strict, layout)
    assert refused["promoted"] is False and "does not beat target_only" in refused["reason"]
    assert str(mc.get_model_version_by_alias(cfg.registered_model, ALIAS).version) == result["version"]
    assert "not promoted" in (layout.report(d2) / "report.html").read_text()


class _Fake:
    """A loaded model: its encoders are named by ``vocab``; it scores an encoded frame as ``offset`` + the encoding."""

    def __init__(self, vocab: int, offset: float, encodings: list) -> None:
        import torch

        self.arch, self.offset, self.encodings = {"features": None}, offset, encodings
        self._state = {"vocab.user_id": torch.tensor([vocab])}

    def encoder_state(self):
        return SimpleNamespace(state=lambda: self._state)

    def batchable(self, frame, label):
        self.encodings.append(int(self._state["vocab.user_id"][0]))
        return np.linspace(0.1, 0.5, len(frame))

    def score_encoded(self, data):
        return data + self.offset


def test_score_models_shares_encodings_and_derives_served(monkeypatch):
    """Models with the same encoders share one encoding of the frame; served is its chosen model's
    scores through the calibration (no second load), unless the choice is not among those scored."""
    import pandas as pd

    import ecat_tasks.score_previous_day as spd
    from ecat_tasks.models.calibration import Calibration

    encodings, loads = [], []
    models = {"ecat": (1, 0.0), "teacher": (1, 0.1), "mixed": (2, 0.2)}

    def fake_scorer(layout, name, day):
        loads.append(name)
        if name == "served":
            return SimpleNamespace(score=lambda frame, label: np.full(len(frame), 0.9))
        return _Fake(*models[name], encodings)

    cal = Calibration(slope=0.5, intercept=0.3, fitted=True, reason="fitted")
    monkeypatch.setattr(spd, "load_scorer", fake_scorer)
    monkeypatch.setattr(spd, "served_choice", lambda layout, ds: ("teacher", cal))
    frame = pd.DataFrame({"click": [0, 1, 0, 1]})
    days = {"ecat": "d1", "teacher": "d1", "served": "d1", "mixed": "d0"}
    scores = spd.score_models(None, days, frame, "click")
    assert list(scores) == list(days) and loads == ["ecat", "teacher", "mixed"] and encodings == [1, 2]
    assert np.array_equal(scores["served"], cal.apply(scores["teacher"]))
    assert np.array_equal(scores["teacher"], np.linspace(0.1, 0.5, 4) + 0.1)
    # the guard's choice scored from another day's checkpoint: served is loaded and scored on its own
    monkeypatch.setattr(spd, "served_choice", lambda layout, ds: ("mixed", cal))
    loads.clear()
    scores = spd.score_models(None, days, frame, "click")
    assert loads == ["ecat", "teacher", "mixed", "served"] and np.array_equal(scores["served"], np.full(4, 0.9))
