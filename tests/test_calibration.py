"""Calibration of the served model: fitted on validation rows, better logloss out of sample, same ranking."""

import numpy as np

from ecat_tasks.metrics import auc, logloss
from ecat_tasks.models.calibration import Calibration, fit_calibration


def _rows(n_users, seed, shift):
    """Rows whose true click rate is ~0.7; the model ranks them well but its probabilities are
    shifted by ``shift`` on the logit (distillation towards a source base rate)."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users) + 10_000 * seed, 5)
    taste = rng.normal(size=len(users))
    labels = (rng.random(len(users)) < 1 / (1 + np.exp(-(1.5 * taste + 1.0)))).astype(int)
    probs = 1 / (1 + np.exp(-(1.5 * taste + 1.0 - shift)))
    return users, labels, probs


def test_a_shifted_model_gets_a_lower_logloss_on_held_out_rows_and_the_same_auc():
    users, labels, probs = _rows(300, seed=0, shift=1.2)  # validation rows: the fit
    cal = fit_calibration(users, labels, probs, strength=20.0)
    assert cal.fitted and cal.slope > 0 and cal.intercept > 0.5  # it moves the base rate back up
    assert cal.cv_logloss_calibrated < cal.cv_logloss_raw
    _, next_labels, next_probs = _rows(300, seed=1, shift=1.2)  # the next day's rows: never seen by the fit
    calibrated = cal.apply(next_probs)
    assert logloss(next_labels, calibrated) < logloss(next_labels, next_probs) - 0.02
    assert auc(next_labels, calibrated) == auc(next_labels, next_probs)


def test_few_rows_keep_the_map_near_identity():
    many = fit_calibration(*_rows(300, seed=2, shift=1.2), strength=20.0)
    users, labels, probs = _rows(300, seed=2, shift=1.2)
    few = fit_calibration(users[:25], labels[:25], probs[:25], strength=20.0)
    assert abs(few.intercept) < abs(many.intercept) / 2 or not few.fitted


def test_a_calibrated_model_keeps_identity_with_the_reason():
    cal = fit_calibration(*_rows(300, seed=3, shift=0.0), strength=20.0)
    assert not cal.fitted and (cal.slope, cal.intercept) == (1.0, 0.0)
    assert cal.reason.startswith("cross-fitted logloss not better") and "identity kept" in cal.describe()


def test_constant_scores_or_one_label_class_keep_identity_with_the_reason():
    users, labels, probs = _rows(50, seed=4, shift=1.0)
    constant = fit_calibration(users, labels, np.full(len(labels), 0.4), strength=20.0)
    assert not constant.fitted and constant.reason == "constant scores"
    one_class = fit_calibration(users, np.ones(len(labels), int), probs, strength=20.0)
    assert not one_class.fitted and one_class.reason == "validation rows hold one label class"
    assert "calibration identity (validation rows hold one label class)" == one_class.describe()
    np.testing.assert_array_equal(one_class.apply(probs), probs)


def test_the_slope_is_never_negative():
    """A model that ranks backwards cannot be turned around by calibration (AUC decisions stay the guard's)."""
    users, labels, probs = _rows(300, seed=5, shift=0.0)
    cal = fit_calibration(users, labels, 1 - probs, strength=1.0)
    assert not cal.fitted and cal.slope == 1.0 and cal.reason.startswith("fitted slope at its floor")


def test_round_trip():
    cal = Calibration(slope=0.8, intercept=0.4, fitted=True, reason="fitted", rows=10, cv_logloss_raw=0.6,
                      cv_logloss_calibrated=0.5)
    assert Calibration.from_dict(cal.to_dict()) == cal
