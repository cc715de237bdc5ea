"""The summary CLI: next-day metrics first, cold start second, ECAT's lifts per day and pooled."""

import json

import numpy as np
import pytest

from ecat_tasks import summary
from ecat_tasks.storage import MANIFEST, Layout


def _lift(lift, lo, hi):
    return {"lift": lift, "lo": lo, "hi": hi, "ahead": lo > 0, "behind": hi < 0}


def _m(auc, **extra):
    return {"auc": auc, "gauc": auc - 0.01, "logloss": 0.6, "calibration": 1.0, "rows": 100, **extra}


def _write(layout, ds, report):
    path = layout.report(ds)
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(report))
    (path / MANIFEST).write_text("{}")


@pytest.fixture()
def two_days(tmp_path):
    layout = Layout(tmp_path)
    both = {"auc": _lift(0.02, 0.01, 0.03), "gauc": _lift(0.01, -0.01, 0.03), "logloss": _lift(-0.02, -0.03, -0.01)}
    _write(layout, "2026-03-01", {
        "ds": "2026-03-01", "label": "click",
        "models": {"target_only": {"holdout": _m(0.60), "next_day": _m(0.61, auc_lo=0.59, auc_hi=0.63)},
                   "ecat": {"holdout": _m(0.66), "next_day": _m(0.63, auc_lo=0.61, auc_hi=0.65)}},
        "next_day": {"ds": "2026-03-02", "lift": {"target_only": both},
                     "checkpoints": {"ecat": "a1", "target_only": "b1"}},
        "guard": {"served": "target_only", "fallback": True, "reason": "target_only has the best validation AUC"},
    })
    _write(layout, "2026-03-02", {  # the last day: no next day yet
        "ds": "2026-03-02", "label": "click",
        "models": {"ecat": {"holdout": _m(0.67)}, "target_only": {"holdout": _m(0.62)}},
    })
    return layout


def test_tables_put_next_day_first_with_bands_and_cold_start_second(two_days):
    rows = summary.metrics_table(two_days)
    assert rows[0].split("|")[4].strip() == "next-day AUC [95%]" and "cold-start AUC" in rows[0]
    body = rows[2:]
    assert body[0] == ("| 2026-03-01 | 2026-03-02 | ecat | 0.6300 [0.6100, 0.6500] | 0.6200 | 0.6000 | 0.6600 | 0.6500 "
                       "| 0.6000 |")
    assert body[1].startswith("| 2026-03-01 | 2026-03-02 | target_only | 0.6100 [0.5900, 0.6300] |")
    assert body[2].startswith("| 2026-03-02 | - | ecat | - | - | - | 0.6700 |")  # no next day yet: cold start only
    lifts = summary.lift_table(two_days)
    assert lifts[2] == ("| 2026-03-01 | target_only | +0.0200 [+0.0100, +0.0300] | +0.0100 [-0.0100, +0.0300] "
                        "| -0.0200 [-0.0300, -0.0100] | ECAT ahead |")
    assert len(lifts) == 3


def test_pooled_lift_scores_unchanged_checkpoints_only(two_days, monkeypatch):
    import ecat_tasks.report

    rng = np.random.default_rng(0)
    users, labels = rng.integers(0, 200, 2_000), rng.integers(0, 2, 2_000)
    noise = rng.random(2_000)
    scores = {"ecat": 0.3 * labels + noise, "target_only": noise}  # ECAT clearly better
    calls = []

    def fake_scores(layout, checkpoints, next_ds, cfg):
        calls.append((checkpoints, next_ds, cfg.label))
        return users, labels, {m: np.clip(scores[m] / 1.3, 0.01, 0.99) for m in checkpoints}

    monkeypatch.setattr(summary, "next_day_scores", fake_scores)
    checksums = {"ecat": "a1", "target_only": "b1"}
    # target_only trains every other day (compare_every_days): its newest checkpoint is the day before
    trained = {"ecat": "2026-03-01", "target_only": "2026-02-28"}
    monkeypatch.setattr(ecat_tasks.report, "scorable_models", lambda layout, ds: dict(trained))
    monkeypatch.setattr(ecat_tasks.report, "checkpoint_checksum",
                        lambda layout, m, ds: checksums[m] if ds == trained[m] else None)
    days, lifts, notes = summary.pooled_lifts(two_days, n_resamples=200)
    assert days == ["2026-03-01"] and calls == [(trained, "2026-03-02", "click")]
    assert not notes and lifts["target_only"]["auc"]["ahead"] and lifts["target_only"]["auc"]["lo"] > 0
    table = summary.pooled_table(days, lifts, notes)
    assert table[-1].startswith("| target_only | +0.") and "ECAT ahead" in table[-1]

    checksums["target_only"] = "retrained"  # the day was rerun after it was scored
    days, lifts, notes = summary.pooled_lifts(two_days, n_resamples=200)
    assert days == [] and lifts == {} and "target_only" in notes[0] and "2026-03-01 left out" in notes[0]
    assert summary.pooled_table(days, lifts, notes)[0].startswith("(no day with next-day scores")


def test_cli_prints_every_section(two_days, monkeypatch, capsys):
    summary.main(["--home", str(two_days.root), "--no-pooled"])
    out = capsys.readouterr().out
    assert "Next day (primary" in out and "| 2026-03-01 | target_only | +0.0200" in out and "pooled" not in out


def test_served_table_names_the_guards_choice_whatever_it_is(two_days):
    rows = summary.served_table(two_days)
    assert rows[2] == ("| 2026-03-01 | target_only | baseline | - | 0.6100 | 0.6000 | identity: not recorded "
                       "| target_only has the best validation AUC |")
    assert rows[3].startswith("| 2026-03-02 | ecat | ECAT | - | - | - | identity: not recorded | the guard did not run |")


def test_served_table_reads_the_calibrated_served_row(tmp_path):
    layout = Layout(tmp_path)
    _write(layout, "2026-03-01", {
        "ds": "2026-03-01", "label": "click",
        "models": {"star": {"validation": _m(0.70), "next_day": _m(0.66)},
                   "served": {"validation": _m(0.70), "next_day": {**_m(0.66), "logloss": 0.55}}},
        "guard": {"served": "star", "fallback": True, "reason": "star has the best validation AUC",
                  "calibration": {"fitted": True, "slope": 0.9, "intercept": 0.5}},
    })
    assert summary.served_table(layout)[2] == ("| 2026-03-01 | star | baseline | 0.7000 | 0.6600 | 0.5500 "
                                               "| slope=0.900000 intercept=0.500000 | star has the best validation AUC |")
