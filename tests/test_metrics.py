import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ecat_tasks.metrics import (
    BOOTSTRAP_METRICS,
    BootstrapDraws,
    _chunk_size,
    _lift_draws,
    all_metrics,
    auc,
    calibration,
    gauc,
    logloss,
    paired_bootstrap_lift,
    pooled_bootstrap_lift,
    resample_counts,
)


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


# --- paired bootstrap over users ---


def _day(seed: int, n: int = 3_000, n_users: int = 300, gap: float = 0.0):
    """Users, labels and two models' scores; model a separates the classes ``gap`` better than b."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n) * 7 + 1000  # ids that are neither 0..U-1 nor sorted
    labels = (rng.random(n) < 0.25).astype(np.int64)
    noise = rng.random(n)
    b = np.clip(0.2 + 0.1 * labels + 0.5 * noise, 0.01, 0.99)
    a = np.clip(0.2 + (0.1 + gap) * labels + 0.5 * noise, 0.01, 0.99)
    return users, labels, np.round(a, 2), np.round(b, 2)  # rounded: many ties


def _slow_draws(users, labels, a, b, counts):
    """Reference: materialise each resample (a user drawn k times is k distinct users) and score it."""
    codes, _ = pd.factorize(users)
    out = {m: [] for m in BOOTSTRAP_METRICS}
    for r in range(counts.shape[1]):
        idx, new_users = [], []
        for u, k in enumerate(counts[:, r].astype(int)):
            rows = np.flatnonzero(codes == u)
            for copy in range(k):
                idx.append(rows)
                new_users.append(np.full(len(rows), u * 1000 + copy))
        idx, new_users = np.concatenate(idx), np.concatenate(new_users)
        ma = all_metrics(new_users, labels[idx], a[idx])
        mb = all_metrics(new_users, labels[idx], b[idx])
        out["auc"].append(ma["auc"] - mb["auc"])
        out["gauc"].append(ma["gauc"] - mb["gauc"])
        out["logloss"].append(mb["logloss"] - ma["logloss"])
    return {m: np.array(v) for m, v in out.items()}


def test_bootstrap_matches_materialised_resamples():
    users, labels, a, b = _day(0, n=400, n_users=40, gap=0.05)
    n_resamples, seed = 30, 5
    point, draws = _lift_draws(users, labels, a, b, n_resamples, np.random.default_rng(seed))
    n_users = len(np.unique(users))
    counts = np.concatenate(
        list(resample_counts(n_users, n_resamples, np.random.default_rng(seed), _chunk_size(len(labels), n_users))),
        axis=1,
    )
    assert counts.shape == (n_users, n_resamples) and (counts.sum(axis=0) == n_users).all()
    expected = _slow_draws(users, labels, a, b, counts)
    for m in BOOTSTRAP_METRICS:
        np.testing.assert_allclose(draws[m], expected[m], rtol=0, atol=1e-12)
    result = paired_bootstrap_lift(users, labels, a, b, n_resamples=n_resamples, seed=seed)
    assert result["auc"]["lift"] == pytest.approx(auc(labels, a) - auc(labels, b))
    assert result["logloss"]["lift"] == pytest.approx(logloss(labels, b) - logloss(labels, a))
    lo, hi = np.percentile(expected["gauc"], [2.5, 97.5])
    assert (result["gauc"]["lo"], result["gauc"]["hi"]) == pytest.approx((lo, hi))


def test_many_pairs_on_one_set_of_resamples_equal_one_call_per_pair():
    """score_previous_day bootstraps a dozen pairs on one set of resamples: every lift must be exactly
    paired_bootstrap_lift's with the same seed (the report's numbers do not depend on the batching)."""
    users, labels, a, b = _day(3, n=600, n_users=50, gap=0.05)
    scores = {"a": a, "b": b, "c": np.round(a, 1), "const": np.full(len(a), 0.5)}
    boot = BootstrapDraws(users, labels, scores, 120, np.random.default_rng(7))
    for x, y in [("a", "b"), ("a", "c"), ("b", "const"), ("c", "const"), ("const", "a")]:
        assert boot.lift(x, y) == paired_bootstrap_lift(users, labels, scores[x], scores[y], n_resamples=120, seed=7)
    assert boot.point["c"] == all_metrics(users, labels, scores["c"])
    with pytest.raises(ValueError, match="same length"):
        BootstrapDraws(users, labels, {"a": a, "short": b[:-1]}, 10, np.random.default_rng(0))


def test_bootstrap_identical_models_give_zero_lift():
    users, labels, a, _ = _day(1)
    result = paired_bootstrap_lift(users, labels, a, a.copy(), n_resamples=200)
    for m in BOOTSTRAP_METRICS:
        r = result[m]
        assert r["lift"] == 0 and r["lo"] <= 0 <= r["hi"] and not r["ahead"] and not r["behind"]


def test_bootstrap_clearly_better_model_is_ahead_and_its_mirror_behind():
    users, labels, a, b = _day(2, gap=0.15)
    better = paired_bootstrap_lift(users, labels, a, b, n_resamples=300)
    worse = paired_bootstrap_lift(users, labels, b, a, n_resamples=300)
    for m in ("auc", "gauc"):
        assert better[m]["lift"] > 0 and better[m]["lo"] > 0 and better[m]["ahead"] and not better[m]["behind"]
        assert worse[m]["hi"] < 0 and worse[m]["behind"] and not worse[m]["ahead"]
        assert better[m]["lo"] < better[m]["lift"] < better[m]["hi"]


def test_bootstrap_noise_only_difference_is_not_ahead():
    users, labels, _, b = _day(3)
    other = np.clip(b + np.random.default_rng(9).normal(0, 0.01, len(b)), 0.01, 0.99)
    result = paired_bootstrap_lift(users, labels, other, b, n_resamples=300)
    assert result["auc"]["lo"] < 0 < result["auc"]["hi"] and not result["auc"]["ahead"]


def test_bootstrap_is_deterministic_for_a_seed():
    users, labels, a, b = _day(4, gap=0.02)
    first = paired_bootstrap_lift(users, labels, a, b, n_resamples=100, seed=3)
    assert paired_bootstrap_lift(users, labels, a, b, n_resamples=100, seed=3) == first
    assert paired_bootstrap_lift(users, labels, a, b, n_resamples=100, seed=4)["auc"]["lo"] != first["auc"]["lo"]


def test_bootstrap_refuses_nan_scores_and_reports_undefined_auc_as_nan():
    users, labels, a, b = _day(5)
    broken = a.astype(np.float64)
    broken[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap_lift(users, labels, broken, b, n_resamples=10)
    one_class = paired_bootstrap_lift(users, np.zeros_like(labels), a, b, n_resamples=10)
    assert np.isnan(one_class["auc"]["lift"]) and np.isnan(one_class["auc"]["lo"]) and not one_class["auc"]["ahead"]
    assert np.isfinite(one_class["logloss"]["lo"])


def test_pooled_bootstrap_averages_days_and_reduces_to_one_day():
    days = [_day(10 + d, gap=0.03) for d in range(3)]
    single = pooled_bootstrap_lift(days[:1], n_resamples=100, seed=1)
    assert single == paired_bootstrap_lift(*days[0], n_resamples=100, seed=1)
    pooled = pooled_bootstrap_lift(days, n_resamples=200, seed=1)
    per_day = [paired_bootstrap_lift(*d, n_resamples=200) for d in days]
    assert pooled["auc"]["lift"] == pytest.approx(np.mean([r["auc"]["lift"] for r in per_day]))
    # pooling three days narrows the interval against any one of them
    width = pooled["auc"]["hi"] - pooled["auc"]["lo"]
    assert width < min(r["auc"]["hi"] - r["auc"]["lo"] for r in per_day)
    assert pooled["auc"]["ahead"]
    with pytest.raises(ValueError, match="no days"):
        pooled_bootstrap_lift([])
