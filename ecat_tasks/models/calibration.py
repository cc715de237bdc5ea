"""Calibration of the served model: a 2-parameter logistic map of its logit, fitted on validation rows.

Distillation pulls ECAT's student towards the teacher's probabilities, whose base rate is the
source's, not the mini-app's: the ranking pays, the logloss does not. The guard fits, on the
validation users' rows it decided on, ``p' = sigmoid(slope * logit(p) + intercept)`` for the
model it serves (Platt scaling on the logit). Day d's fit is applied to day d + 1's rows, which
it has never seen.

- The fit minimises the logloss plus ``strength / 2 * ((slope - 1)^2 + intercept^2)``: with few
  rows the penalty dominates and the map stays near identity.
- The slope is never below ``MIN_SLOPE`` (a fit that reaches it keeps the identity): the map is
  strictly increasing, so every AUC, GAUC and guard decision is unchanged.
- It is kept only when it helps out of sample: a cross-fit by user folds (each fold calibrated
  by a fit on the other folds) must give a lower logloss than the raw scores; otherwise, and on
  one label class, constant or non-finite scores or too few users, the map is the identity and
  ``reason`` says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ecat_tasks.metrics import logloss

MIN_SLOPE = 0.05
EPS = 1e-7


@dataclass(frozen=True)
class Calibration:
    slope: float = 1.0
    intercept: float = 0.0
    fitted: bool = False
    reason: str = "not fitted"
    rows: int = 0
    cv_logloss_raw: float | None = None  # cross-fitted on the fitting rows (user folds)
    cv_logloss_calibrated: float | None = None

    def apply(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, np.float64)
        if not self.fitted:
            return probs
        return _sigmoid(self.slope * logit(probs) + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "Calibration":
        return cls(**values) if values else cls(reason="no calibration recorded")

    def describe(self) -> str:
        if not self.fitted:
            return f"calibration identity ({self.reason})"
        return (f"calibration slope {self.slope:.3f} intercept {self.intercept:+.3f} on {self.rows} validation rows "
                f"(cross-fitted logloss {self.cv_logloss_raw:.4f} -> {self.cv_logloss_calibrated:.4f})")


def logit(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warning at large |x|


def _objective(z: np.ndarray, y: np.ndarray, strength: float, a: float, b: float) -> float:
    x = a * z + b
    return float(np.sum(np.logaddexp(0.0, x) - y * x) + 0.5 * strength * ((a - 1) ** 2 + b ** 2))


def fit_map(z: np.ndarray, y: np.ndarray, strength: float, iters: int = 100) -> tuple[float, float]:
    """(slope, intercept) minimising the logloss of sigmoid(slope z + intercept) on ``y`` (summed over
    rows) plus ``strength / 2 * ((slope - 1)^2 + intercept^2)`` with slope >= ``MIN_SLOPE``: damped
    Newton steps on a convex objective, projected onto the slope's bound."""
    theta = np.array([1.0, 0.0])
    f = _objective(z, y, strength, *theta)
    for _ in range(iters):
        p = _sigmoid(theta[0] * z + theta[1])
        r, w = p - y, p * (1 - p)
        grad = np.array([r @ z + strength * (theta[0] - 1), r.sum() + strength * theta[1]])
        if theta[0] <= MIN_SLOPE and grad[0] > 0:  # the bound binds: move the intercept alone
            grad[0] = 0.0
            step = np.array([0.0, grad[1] / (w.sum() + strength)])
        else:
            hess = np.array([[w @ (z * z) + strength, w @ z], [w @ z, w.sum() + strength]])
            step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:  # backtracking: Newton's full step can overshoot where the sigmoid saturates
            cand = theta - t * step
            cand[0] = max(cand[0], MIN_SLOPE)
            fc = _objective(z, y, strength, *cand)
            if fc <= f - 1e-4 * t * float(grad @ step) or t < 1e-8:
                break
            t *= 0.5
        if fc > f:  # no descent left at machine precision
            break
        done = f - fc < 1e-10 * max(1.0, abs(f))
        theta, f = cand, fc
        if done:
            break
    return float(theta[0]), float(theta[1])


def fit_calibration(users: np.ndarray, labels: np.ndarray, probs: np.ndarray, strength: float,
                    folds: int = 5, seed: int = 0) -> Calibration:
    """The served model's calibration from validation rows, or the identity with the reason."""
    y = np.asarray(labels, np.float64)
    probs = np.asarray(probs, np.float64)
    n = len(y)
    if n == 0:
        return Calibration(reason="no validation rows")
    if not np.isfinite(probs).all():
        return Calibration(reason="non-finite scores", rows=n)
    if len(np.unique(y)) < 2:
        return Calibration(reason="validation rows hold one label class", rows=n)
    z = logit(probs)
    if np.ptp(z) == 0:
        return Calibration(reason="constant scores", rows=n)
    codes, uniques = pd.factorize(np.asarray(users))
    k = min(folds, len(uniques))
    if k < 2:
        return Calibration(reason="fewer than 2 validation users: no cross-fit", rows=n)
    fold_of_user = np.random.default_rng(seed).permutation(len(uniques)) % k
    fold = fold_of_user[codes]
    crossed = np.empty(n)
    for f in range(k):
        held = fold == f
        a, b = fit_map(z[~held], y[~held], strength)
        crossed[held] = _sigmoid(a * z[held] + b)
    raw, cal = logloss(y, probs), logloss(y, crossed)
    a, b = fit_map(z, y, strength)
    common = dict(rows=n, cv_logloss_raw=raw, cv_logloss_calibrated=cal)
    if not cal < raw:
        return Calibration(reason=f"cross-fitted logloss not better ({raw:.4f} raw, {cal:.4f} calibrated, "
                                  f"{k} user folds): identity kept", **common)
    if a <= MIN_SLOPE:
        return Calibration(reason=f"fitted slope at its floor {MIN_SLOPE}: the scores barely rank the validation "
                                  "rows; identity kept", **common)
    return Calibration(slope=a, intercept=b, fitted=True, reason=f"fitted ({k} user folds)", **common)


CALIBRATION_FILE = "calibration.json"  # in models/served/ds=D: what the registered model reads too


def read_calibration(path: Any) -> Calibration:
    """The calibration a ``calibration.json`` holds (its extra keys, such as the model it belongs to, ignored)."""
    import json
    from dataclasses import fields

    values = json.loads(open(path).read())
    return Calibration(**{f.name: values[f.name] for f in fields(Calibration) if f.name in values})


class CalibratedModel:
    """A loaded model whose probabilities pass through its calibration (the served model)."""

    def __init__(self, loaded: Any, calibration: Calibration) -> None:
        self.loaded, self.calibration = loaded, calibration

    def score(self, frame: pd.DataFrame, label: str) -> np.ndarray:
        return self.calibration.apply(self.loaded.score(frame, label))
