"""The negative-transfer guard: the decision rule, and the task wired into evaluate and promote."""

import json
import logging

import mlflow
import numpy as np
import pytest

import ecat_tasks.guard as guard_module
from conftest import DAYS
from test_evaluate_promote import train_day
from ecat_tasks.config import SERVABLE
from ecat_tasks.domain_reweight import domain_reweight
from ecat_tasks.evaluate import evaluate
from ecat_tasks.graph_select import graph_select
from ecat_tasks.guard import CANDIDATES, candidates, decide, guard, switches
from bench.guard_rules import crossfit_day, fold_of
from bench.quality import score_next_day
from ecat_tasks.inputs import eval_sets, next_day_rows, validation_window
from ecat_tasks.metrics import logloss
from ecat_tasks.models.calibration import Calibration
from ecat_tasks.models.continual import load_model
from ecat_tasks.promote import ALIAS, promote
from ecat_tasks.report import model_dir
from ecat_tasks.score_previous_day import score_previous_day
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


def _all_candidates(rng, taste, best="finetune"):
    """Every candidate, simplest first: ECAT and its ablations follow the source, whose preference
    is the target's reversed; the baselines and the teacher follow the target with more or less
    noise; ``best`` follows it most closely."""
    noise = lambda sd: rng.normal(0, sd, len(taste))  # noqa: E731
    scores = {}
    for name in CANDIDATES:
        if name.startswith("ecat"):
            scores[name] = _sig(-taste + noise(1))
        elif name == best:
            scores[name] = _sig(taste + noise(0.7))
        else:
            scores[name] = _sig(0.5 * taste + noise(1.5))
    return scores


def test_a_day_where_the_source_hurts_serves_the_best_baseline():
    rng, users, taste, labels = _day()
    scores = _all_candidates(rng, taste, best="finetune")
    d = decide(users, labels, scores, margin=0.002)
    assert d.served == "finetune" and d.fallback
    ecat = next(c for c in d.comparisons if c["challenger"] == "ecat")
    assert ecat["incumbent"] == "finetune" and ecat["hi"] < 0 and not ecat["switch"]  # behind beyond the interval
    assert "finetune has the best validation AUC" in d.reason and "ecat vs finetune" in d.reason


def test_the_served_model_never_trails_the_best_candidate_by_more_than_the_margin():
    """Whatever the order of quality, the served model's validation AUC is within the margin of the best."""
    for seed in range(6):
        rng, users, taste, labels = _day(n_users=150, seed=seed)
        scores = {n: _sig(rng.uniform(0.3, 0.6) * taste + rng.normal(0, 1, len(taste))) for n in CANDIDATES}
        d = decide(users, labels, scores, margin=0.002, n_resamples=200)
        best = max(m["auc"] for m in d.metrics.values())
        assert d.metrics[d.served]["auc"] >= best - 0.002, (seed, d.reason)


def test_the_teacher_is_a_candidate_and_can_be_served():
    rng, users, taste, labels = _day(seed=3)
    scores = _all_candidates(rng, taste, best="teacher")
    d = decide(users, labels, scores, margin=0.002)
    assert d.served == "teacher" and d.fallback


def test_a_constant_candidate_is_left_out_with_its_reason():
    rng, users, taste, labels = _day(seed=4)
    scores = {"target_only": np.full(len(taste), 0.7), "mixed": _sig(taste + rng.normal(0, 1, len(taste))),
              "ecat": _sig(-taste)}
    d = decide(users, labels, scores, margin=0.002)
    assert d.served == "mixed" and d.excluded == {"target_only": "constant scores"}
    assert "left out: target_only (constant scores)" in d.reason
    assert [c["incumbent"] for c in d.comparisons] == ["mixed"]


def test_ecat_is_served_when_it_is_better():
    rng, users, taste, labels = _day(seed=1)
    scores = {"teacher_finetune": _sig(taste + rng.normal(0, 2, len(taste))),
              "ecat": _sig(taste + rng.normal(0, 0.5, len(taste)))}
    d = decide(users, labels, scores, margin=0.002)
    assert d.served == "ecat" and not d.fallback and d.comparisons[0]["lo"] > 0


def test_a_candidate_set_limits_what_the_rule_can_choose():
    """bench.guard_rules' ``rule@set``: finetune is the best candidate, but a set without it makes the
    rule choose among the others (the cross-fit that chooses ``guard_candidates``)."""
    rng, users, taste, labels = _day()
    scores = _all_candidates(rng, taste, best="finetune")
    out = crossfit_day(users, labels, scores, ["margin", "margin@small"], 0.002, splits=1, seed=0, n_resamples=200,
                       sets={"small": ["teacher", "ecat_no_kd"]})
    chosen = {(r["rule"], r["fold"]): r["chosen"] for r in out}
    assert {chosen[("margin", f)] for f in (0, 1)} == {"finetune"}
    assert {chosen[("margin@small", f)] for f in (0, 1)} <= {"teacher", "ecat_no_kd", "ecat"}


def test_a_window_rule_decides_on_its_newest_days_and_every_rule_is_scored_on_the_newest_day():
    """bench.guard_rules' ``rule%W`` (the cross-fit that chooses ``guard_window_days``): finetune is far
    better on the older day, ECAT on the newest; a one-day window serves ECAT, the two-day window
    finetune, and both are read on the newest day's held-out fold alone."""
    rng, users, taste, labels = _day(n_users=400)
    ages = (users >= 100).astype(int)  # users 0-99 validate on the newest day, the rest a day earlier
    newest = ages == 0
    scores = {"finetune": _sig(np.where(newest, -taste, taste) + rng.normal(0, 0.3, len(taste))),
              "ecat": _sig(np.where(newest, taste, -taste) + rng.normal(0, 0.3, len(taste)))}
    out = crossfit_day(users, labels, scores, ["evidence%1", "evidence%2"], 0.002, splits=1, seed=0,
                       n_resamples=200, ages=ages)
    chosen = {(r["rule"], r["fold"]): r["chosen"] for r in out}
    assert {chosen[("evidence%1", f)] for f in (0, 1)} == {"ecat"}
    assert {chosen[("evidence%2", f)] for f in (0, 1)} == {"finetune"}
    fold = fold_of(users, 0)
    for r in out:
        assert r["heldout_rows"] == int(((fold == r["fold"]) & newest).sum())
        assert r["candidates_auc"]["ecat"] > 0.7 > 0.3 > r["candidates_auc"]["finetune"]
    with pytest.raises(ValueError, match="ages"):
        crossfit_day(users, labels, scores, ["evidence%1"], 0.002, splits=1, seed=0, n_resamples=200)


def test_a_near_tie_goes_to_the_simpler_model():
    rng, users, taste, labels = _day(seed=2)
    base = taste + rng.normal(0, 1, len(taste))
    scores = {"teacher_finetune": _sig(base), "ecat": _sig(base + rng.normal(0, 0.01, len(base)))}  # same ranking, almost
    d = decide(users, labels, scores, margin=0.01)
    assert abs(d.comparisons[0]["auc_lift"]) < 0.01 and not d.comparisons[0]["lo"] > 0
    assert d.served == "teacher_finetune"


def test_a_near_tie_between_baselines_goes_to_the_simpler_one():
    """target_only and star rank almost alike; both beat ECAT: the simpler target_only is served."""
    rng, users, taste, labels = _day(seed=5)
    base = taste + rng.normal(0, 1, len(taste))
    scores = {"target_only": _sig(base), "star": _sig(base + rng.normal(0, 0.01, len(base))),
              "ecat": _sig(0.2 * taste + rng.normal(0, 1, len(base)))}
    d = decide(users, labels, scores, margin=0.005)
    assert abs(d.comparisons[0]["auc_lift"]) < 0.005 and not d.comparisons[0]["switch"]
    assert d.served == "target_only" and d.fallback


def test_one_label_class_serves_ecat_without_comparing():
    users, labels = np.arange(10), np.ones(10, int)
    d = decide(users, labels, {"teacher_finetune": np.linspace(0, 1, 10), "ecat": np.linspace(1, 0, 10)}, 0.002)
    assert d.served == "ecat" and "one label class" in d.reason


def test_evidence_a_noisy_point_best_challenger_does_not_replace_ecat():
    """Two equally good models on 120 validation rows: target_only's point lift over ECAT is noise.
    The margin rule serves it (winner's curse); under evidence ECAT, the incumbent, stays."""
    rng = np.random.default_rng(5)
    users = np.repeat(np.arange(60), 2)
    taste = rng.normal(size=len(users))
    labels = (rng.random(len(users)) < _sig(2 * taste)).astype(int)
    scores = {"target_only": _sig(taste + rng.normal(0, 1.2, len(users))),
              "ecat": _sig(taste + rng.normal(0, 1.2, len(users)))}
    assert decide(users, labels, scores, margin=0.002, n_resamples=300, rule="margin").served == "target_only"
    d = decide(users, labels, scores, margin=0.002, n_resamples=300, rule="evidence")
    (c,) = d.comparisons
    assert c["incumbent"] == "ecat" and c["auc_lift"] > 0.002 and c["lo"] < 0  # ahead on the point, not beyond noise
    assert d.served == "ecat" and not d.fallback and d.rule == "evidence" and "guard_rule=evidence" in d.reason


def test_evidence_a_day_where_the_source_hurts_still_falls_back():
    """ECAT ranks backwards: the simplest candidate ahead of it replaces it, and the best baseline,
    ahead of that one in turn, is served; ECAT is never put back."""
    rng, users, taste, labels = _day()
    d = decide(users, labels, _all_candidates(rng, taste, best="finetune"), margin=0.002, n_resamples=300,
               rule="evidence")
    assert d.served == "finetune" and d.fallback
    assert d.comparisons[0]["challenger"] == "target_only" and d.comparisons[0]["incumbent"] == "ecat"
    assert d.comparisons[0]["switch"] and d.comparisons[0]["lo"] > 0
    assert all(c["lo"] > 0 for c in d.comparisons if c["switch"])  # every switch was ahead beyond the interval


def test_rules_switch_on_their_own_evidence():
    noisy = {"lift": 0.03, "lo": -0.05, "hi": 0.11, "ahead": False}  # above the margin, interval across 0
    sure = {"lift": 0.03, "lo": 0.01, "hi": 0.05, "ahead": True}
    tiny = {"lift": 0.001, "lo": 0.0005, "hi": 0.0015, "ahead": True}  # ahead, below the margin
    assert switches("margin", noisy, 0.002) and not switches("evidence", noisy, 0.002)
    assert not switches("se_margin", noisy, 0.002)  # 0.03 < 0.002 + 0.16 / 3.92
    assert switches("evidence", sure, 0.002) and switches("se_margin", sure, 0.002)
    assert switches("margin", tiny, 0.002) and not switches("evidence", tiny, 0.002)
    with pytest.raises(ValueError, match="unknown guard rule"):
        switches("best", sure, 0.002)


class _Reversed:
    """A model on a day its transfer hurts: it ranks the validation rows backwards (AUC 0 by
    construction: on the tiny test day the teacher itself is near chance, so flipping a
    model's own scores would leave the outcome to noise)."""

    def __init__(self, loaded):
        self.loaded = loaded

    def score(self, frame, label):
        return 0.5 - 0.4 * (2.0 * frame[label].to_numpy() - 1.0) + 0.01 * self.loaded.score(frame, label)


def test_the_teacher_is_served_reported_tagged_and_promoted(layout, cfg, caplog, monkeypatch):
    """A day where every model but the teacher ranks backwards: the guard serves the teacher,
    evaluate reports and tags it, promote registers the teacher's own checkpoint, and the
    registered model scores the validation rows (same features) exactly as the teacher does."""
    cfg = cfg.replace(ablations=["no_kd"], baselines=["target_only"], promote_min_lift=-1.0, guard_rule="margin")
    ds = DAYS[0]
    graph_select(ds, cfg, layout)
    teacher_refresh(ds, cfg, layout)
    domain_reweight(ds, cfg, layout)
    student_distill(ds, cfg, layout)
    train_baselines(ds, cfg, layout)
    # the ablation trained, but by default the guard never serves it (guard_candidates); configured, it can be
    assert candidates(ds, cfg, layout) == ["target_only", "teacher", "ecat"]
    assert candidates(ds, cfg.replace(guard_candidates=["teacher"]), layout) == ["teacher", "ecat"]
    cfg = cfg.replace(guard_candidates=list(SERVABLE))
    assert candidates(ds, cfg, layout) == ["target_only", "teacher", "ecat_no_kd", "ecat"]
    teacher = model_dir(layout, "teacher", ds)
    real = guard_module.load_model
    monkeypatch.setattr(guard_module, "load_model", lambda d: real(d) if d == teacher else _Reversed(real(d)))
    # a fixed calibration (its fit is tested in test_calibration): every use of the served model applies it
    cal = Calibration(slope=0.5, intercept=0.3, fitted=True, reason="fitted", rows=1, cv_logloss_raw=0.7,
                      cv_logloss_calibrated=0.6)
    monkeypatch.setattr(guard_module, "fit_calibration", lambda *a, **k: cal)
    with caplog.at_level(logging.INFO, logger="ecat_tasks"):
        out = guard(ds, cfg, layout)
    assert out["served"] == "teacher" and out["fallback"]
    manifest = json.loads((layout.model("served", ds) / MANIFEST).read_text())
    assert manifest["served"] == "teacher" and manifest["kind"] == "teacher"
    assert manifest["candidates"] == ["target_only", "teacher", "ecat_no_kd", "ecat"]
    assert manifest["checkpoint_dir"] == str(teacher)
    assert manifest["validation_rows"] == len(validation_window(ds, cfg, layout, cfg.guard_window_days)) > 0
    assert manifest["window_days"] == 1 and manifest["slices_changed_after"] is None  # the lake's one day, sliced as today
    assert [c["switch"] for c in manifest["comparisons"]] == [True, False, False] and manifest["rule"] == "margin"
    line = [r for r in caplog.records if r.getMessage().startswith(f"guard ds={ds}")]
    assert line and line[0].levelname == "WARNING" and "serving teacher (teacher; FALLBACK" in line[0].getMessage()
    assert "[guard_rule=margin]" in line[0].getMessage()
    assert "calibration slope 0.500 intercept +0.300" in line[0].getMessage()
    assert manifest["calibration"] == cal.to_dict()

    evaluate(ds, cfg, layout)
    report = json.loads((layout.report(ds) / "metrics.json").read_text())
    assert report["guard"]["served"] == "teacher" and report["guard"]["reason"] == manifest["reason"]
    assert report["summary"]["served"] == "teacher"
    assert report["summary"]["served_auc"] == report["models"]["teacher"]["validation"]["auc"]
    assert "Served model: teacher</b> (teacher; FALLBACK" in (layout.report(ds) / "report.html").read_text()
    validation = eval_sets(ds, cfg, layout)["validation"]
    raw = load_model(teacher).score(validation, cfg.label)
    served = report["models"]["served"]["validation"]  # the teacher through its calibration
    assert served["auc"] == report["models"]["teacher"]["validation"]["auc"]
    assert np.isclose(served["logloss"], logloss(validation[cfg.label].to_numpy(), cal.apply(raw)))
    mc = client(cfg, layout.root)
    exp = mc.get_experiment_by_name(EXPERIMENT)
    for model in ("ecat", "teacher"):
        run = mc.search_runs([exp.experiment_id], filter_string=f"tags.ds = '{ds}' and tags.model = '{model}'")[0]
        assert run.data.tags["served"] == "teacher" and run.data.tags["guard_fallback"] == "true"
        assert run.data.tags["served_kind"] == "teacher"

    result = promote(ds, cfg, layout)
    assert result["promoted"] and result["served"] == "teacher"
    registered = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model}@{ALIAS}")
    assert np.allclose(np.asarray(registered.predict(validation)), cal.apply(raw))  # the teacher's checkpoint, calibrated
    promotion = json.loads((layout.report(ds) / "metrics.json").read_text())["promotion"]
    assert promotion["served"] == "teacher" and promotion["reason"].startswith("teacher (teacher, guard fallback)")

    # the next day: the pipeline and bench.quality score the served row with the same calibrated probabilities
    score_previous_day(DAYS[1], cfg, layout)
    nxt = next_day_rows(DAYS[1], cfg, layout)
    expected = cal.apply(load_model(teacher).score(nxt, cfg.label))
    pipeline = json.loads((layout.report(ds) / "metrics.json").read_text())["models"]["served"]["next_day"]
    assert np.isclose(pipeline["logloss"], logloss(nxt[cfg.label].to_numpy(), expected))
    bench = score_next_day(layout.root, {}, [(ds, DAYS[1])])[0]
    assert bench["served"] == "teacher" and np.allclose(bench["scores"]["served"], expected)


def test_a_comparison_model_not_trained_today_is_no_candidate(layout, cfg):
    """target_only is configured but did not train today: only the teacher of the day and ECAT compete."""
    ds = DAYS[0]
    graph_select(ds, cfg, layout)
    teacher_refresh(ds, cfg, layout)
    domain_reweight(ds, cfg, layout)
    student_distill(ds, cfg, layout)
    assert "target_only" in cfg.baselines and candidates(ds, cfg, layout) == ["teacher", "ecat"]
    out = guard(ds, cfg, layout)
    manifest = json.loads((layout.model("served", ds) / MANIFEST).read_text())
    assert out["served"] in ("teacher", "ecat") and manifest["candidates"] == ["teacher", "ecat"]
    (c,) = manifest["comparisons"]
    assert {c["challenger"], c["incumbent"]} == {"teacher", "ecat"} and manifest["rule"] == cfg.guard_rule


class _Oracle:
    """A checkpoint that ranks the rows it scores perfectly (AUC 1 by construction)."""

    def __init__(self, loaded):
        self.loaded = loaded

    def score(self, frame, label):
        return 0.5 + 0.4 * (2.0 * frame[label].to_numpy() - 1.0) + 0.01 * self.loaded.score(frame, label)


def test_the_previous_day_slice_scores_each_day_with_the_checkpoints_of_the_day_before(layout, cfg, monkeypatch):
    """guard_slice=previous_day: day 2's validation rows are scored by day 1's checkpoints, which never
    saw day 2. The teacher's day-1 checkpoint ranks them perfectly and its day-2 checkpoint backwards:
    the teacher is served under previous_day and not under today. target_only trained on day 2 only:
    it has no previous-day scores, so it is left out with the reason. The first day has no day before:
    today's models score it, and the manifest says so."""
    cfg = cfg.replace(guard_rule="margin")
    assert cfg.guard_slice == "previous_day"  # the default
    train_day(DAYS[0], cfg.replace(baselines=[]), layout)
    guard(DAYS[0], cfg, layout)
    first = json.loads((layout.model("served", DAYS[0]) / MANIFEST).read_text())
    assert first["slice"] == "today" and "no earlier day" in first["slice_note"] and first["slice_days"] == [DAYS[0]]
    train_day(DAYS[1], cfg, layout)
    assert candidates(DAYS[1], cfg, layout) == ["target_only", "teacher", "ecat"]

    real_scorer, real_load = guard_module.load_scorer, guard_module.load_model
    scored = []

    def scorer(lay, name, day):
        scored.append((name, day))
        return _Oracle(real_scorer(lay, name, day)) if name == "teacher" else real_scorer(lay, name, day)

    teacher_today = model_dir(layout, "teacher", DAYS[1])
    monkeypatch.setattr(guard_module, "load_scorer", scorer)
    monkeypatch.setattr(guard_module, "load_model", lambda d: _Reversed(real_load(d)) if d == teacher_today else real_load(d))
    fitted = []
    monkeypatch.setattr(guard_module, "fit_calibration",
                        lambda users, labels, probs, *a, **k: fitted.append(probs) or Calibration(reason="not under test"))

    out = guard(DAYS[1], cfg, layout)
    manifest = json.loads((layout.model("served", DAYS[1]) / MANIFEST).read_text())
    assert out["served"] == "teacher" and out["slice"] == "previous_day"
    assert manifest["slice"] == "previous_day" and manifest["slice_days"] == [DAYS[1]] and manifest["slice_note"] == ""
    assert {day for _, day in scored} == {DAYS[0]} and {name for name, _ in scored} == {"teacher", "ecat"}
    day_two = len(eval_sets(DAYS[1], cfg, layout)["validation"])
    assert manifest["validation_rows"] == day_two > 0  # day 2's rows only
    # the calibration is fitted on the served checkpoint of today, whose scores it maps, on the same rows
    rows = eval_sets(DAYS[1], cfg, layout)["validation"]
    assert np.allclose(fitted[-1], _Reversed(real_load(teacher_today)).score(rows, cfg.label))
    assert manifest["excluded"] == {"target_only": f"no checkpoint on or before {DAYS[0]}, so no previous-day scores"}
    assert "no previous-day scores: target_only" in manifest["reason"]

    today = guard(DAYS[1], cfg.replace(guard_slice="today"), layout)  # today's teacher ranks backwards
    assert today["served"] != "teacher" and today["slice"] == "today"
    manifest = json.loads((layout.model("served", DAYS[1]) / MANIFEST).read_text())
    assert manifest["validation_rows"] == len(validation_window(DAYS[1], cfg, layout, 2)) > day_two  # both days' rows
    assert manifest["slice_days"] == list(DAYS) and manifest["excluded"] == {}
