"""Adaptive knowledge distillation (ECAT's representation transfer).

Per sample: w_i * BCE(y_i, s_i) + lambda * a_i * (||h_s - g(h_t)||^2 + KL(p_t || p_s)).
a_i = exp(-BCE(y_i, t_i) / T), normalised to mean 1 in the batch: large where the teacher
is right on the sample's label, small where it is wrong, so the student learns from the
teacher only where the teacher helps. ``adaptive=False`` gives the fixed-weight ablation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def adaptive_weights(teacher_logit: torch.Tensor, label: torch.Tensor, temperature: float) -> torch.Tensor:
    """a_i = exp(-BCE(y_i, t_i) / T) / mean_batch(...)."""
    bce = F.binary_cross_entropy_with_logits(teacher_logit, label, reduction="none")
    a = torch.exp(-bce / temperature)
    return a / a.mean().clamp_min(1e-12)


def bernoulli_kl(teacher_logit: torch.Tensor, student_logit: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(p_t) || Bernoulli(p_s)) per sample, computed stably from logits."""
    p_t = torch.sigmoid(teacher_logit)
    log_pt, log_1pt = F.logsigmoid(teacher_logit), F.logsigmoid(-teacher_logit)
    log_ps, log_1ps = F.logsigmoid(student_logit), F.logsigmoid(-student_logit)
    return p_t * (log_pt - log_ps) + (1 - p_t) * (log_1pt - log_1ps)


def distillation_loss(
    student_logit: torch.Tensor,
    student_hidden: torch.Tensor,
    label: torch.Tensor,
    weight: torch.Tensor,
    teacher_logit: torch.Tensor,
    teacher_hidden: torch.Tensor,
    projection: nn.Module,
    kd_lambda: float,
    temperature: float,
    adaptive: bool = True,
    use_hidden: bool = True,
    use_logit: bool = True,
) -> torch.Tensor:
    loss = weight * F.binary_cross_entropy_with_logits(student_logit, label, reduction="none")
    if kd_lambda > 0 and (use_hidden or use_logit):
        kd = torch.zeros_like(loss)
        if use_hidden:
            kd = kd + (student_hidden - projection(teacher_hidden)).pow(2).mean(dim=1)
        if use_logit:
            kd = kd + bernoulli_kl(teacher_logit, student_logit)
        a = adaptive_weights(teacher_logit, label, temperature) if adaptive else torch.ones_like(kd)
        loss = loss + kd_lambda * a * kd
    return loss.mean()
