"""Model health before publish: a broken model fails its task instead of becoming a quiet AUC of 0.5.

Checked on every model :func:`ecat_tasks.models.continual.fit_day` trains, just before it is
written: every epoch's loss is finite, every parameter is finite, and the model's
predictions on the validation slice are not constant (their standard deviation is above
``health_min_pred_std``). A failure raises :class:`ModelHealthError` whose first line names
the model, the day and the check, so on-call reads what broke in the ECAT FAILURE line.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ecat_tasks.errors import PermanentError


class ModelHealthError(PermanentError, RuntimeError):
    """A freshly trained model failed a health check; it was not published."""


def check_health(name: str, ds: str, losses: list[float], modules: Iterable[nn.Module], probs: np.ndarray,
                 min_pred_std: float) -> dict[str, float | int]:
    """Raise :class:`ModelHealthError` naming the first failed check; return the health numbers.

    ``probs`` are the model's predictions on the validation slice (rows it did not train on).
    """
    where = f"{name} ds={ds}"
    bad = [i for i, x in enumerate(losses) if not math.isfinite(x)]
    if bad:
        raise ModelHealthError(
            f"{where} loss is {losses[bad[0]]} from epoch {bad[0] + 1} of {len(losses)}: training diverged or started "
            f"from broken weights; the model was not published")
    total = nonfinite = 0
    first = ""
    for module in modules:
        for pname, p in module.named_parameters():
            n_bad = int((~torch.isfinite(p.detach())).sum())
            total += p.numel()
            if n_bad and not first:
                first = pname
            nonfinite += n_bad
    if nonfinite:
        raise ModelHealthError(
            f"{where} has {nonfinite} of {total} parameters NaN or infinite (first: {first}); "
            f"the model was not published")
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) == 0:
        raise ModelHealthError(f"{where} has no validation rows to check its predictions on; the model was not published")
    if not np.isfinite(probs).all():
        raise ModelHealthError(
            f"{where} predicts NaN for {int((~np.isfinite(probs)).sum())} of {len(probs)} validation rows; "
            f"the model was not published")
    spread = float(probs.std())
    if not spread > min_pred_std:
        raise ModelHealthError(
            f"{where} predictions are constant: std {spread:.3g} <= health_min_pred_std {min_pred_std:g} over "
            f"{len(probs)} validation rows (mean {probs.mean():.4f}); saturated or collapsed model, not published")
    return {"pred_std": round(spread, 6), "pred_mean": round(float(probs.mean()), 6), "validation_rows": int(len(probs)),
            "parameters": total}
