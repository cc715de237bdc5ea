import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ecat_tasks.metrics import all_metrics, auc, calibration, gauc, logloss


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2_000)
    s = np.round(rng.random(2_000) + 0.3 * y, 1)  # many ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_hand_computed():
    # pairs (pos, neg): (0.8,0.1) win, (0.8,0.4) win, (0.35,0.1) win, (0.35,0.4) loss -> 3/4
    assert auc(np.array([1, 0, 1, 0]), np.array([0.8, 0.1, 0.35, 0.4])) == 0.75


def test_gauc_weights_users_by_impressions_and_skips_single_class_users():
    users = np.array([1, 1, 1, 1, 2, 2, 3, 3, 3])
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 1, 1])
    scores = np.array([0.8, 0.1, 0.35, 0.4, 0.2, 0.9, 0.5, 0.6, 0.7])
    # user 1: AUC 0.75 over 4 rows; user 2: AUC 0 over 2 rows; user 3: one class -> skipped
    assert gauc(users, labels, scores) == pytest.approx((0.75 * 4 + 0.0 * 2) / 6)


def test_gauc_equals_per_user_sklearn():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 30, 3_000)
    y = rng.integers(0, 2, 3_000)
    s = rng.random(3_000) + 0.2 * y
    expected_num, expected_den = 0.0, 0
    for u in np.unique(users):
        m = users == u
        if len(np.unique(y[m])) == 2:
            expected_num += roc_auc_score(y[m], s[m]) * m.sum()
            expected_den += m.sum()
    assert gauc(users, y, s) == pytest.approx(expected_num / expected_den)


def test_logloss_calibration_and_bundle():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.2, 0.6, 0.3])
    assert logloss(y, p) == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.6, 0.7])))
    assert calibration(y, p) == pytest.approx(0.5 / 0.5)
    m = all_metrics(np.array([1, 1, 2, 2]), y, p)
    assert set(m) == {"auc", "gauc", "logloss", "calibration", "rows"} and m["rows"] == 4
    assert np.isnan(auc(np.ones(3), np.ones(3)))
