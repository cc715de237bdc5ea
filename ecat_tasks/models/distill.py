"""Adaptive knowledge distillation (ECAT's representation transfer).

Per sample i:

    l_i = w_i * BCE(y_i, s_i) + lambda * a_i * (mean_k (g(h_s,i) - sg(h_t,i))_k^2 + KL(p_t,i || p_s,i))

and the loss is the *mean* of l_i over the batch. g is a linear projection on the student
side (student hidden -> teacher hidden) and sg() stops the gradient: the teacher's hidden
vector is a fixed regression target, so the only way to shrink the term is to make the
student's representation carry what the teacher's does. (A trainable projection applied to
the teacher side could shrink the term by mapping the teacher to whatever the student
already is, transferring nothing.) The hidden term is the mean over the teacher's hidden
units, so its scale does not grow with the layer width.

a_i = exp(-BCE(y_i, t_i) / T), normalised to mean 1 in the batch: large where the teacher is
right on the sample's label, small where it is wrong, so the student learns from the teacher
only where the teacher helps. ``adaptive=False`` gives the fixed-weight ablation. Teacher
outputs enter as logits (never probabilities clipped and mapped back), so a confident
teacher's KL term is exact.
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


def hidden_regression(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, projection: nn.Module) -> torch.Tensor:
    """mean_k (g(h_s) - sg(h_t))_k^2 per sample: the student regresses onto a fixed teacher target."""
    return (projection(student_hidden) - teacher_hidden.detach()).pow(2).mean(dim=1)


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
    """Batch mean of the per-sample loss in the module docstring; ``projection`` maps student -> teacher."""
    teacher_logit = teacher_logit.detach()
    loss = weight * F.binary_cross_entropy_with_logits(student_logit, label, reduction="none")
    if kd_lambda > 0 and (use_hidden or use_logit):
        kd = torch.zeros_like(loss)
        if use_hidden:
            kd = kd + hidden_regression(student_hidden, teacher_hidden, projection)
        if use_logit:
            kd = kd + bernoulli_kl(teacher_logit, student_logit)
        a = adaptive_weights(teacher_logit, label, temperature) if adaptive else torch.ones_like(kd)
        loss = loss + kd_lambda * a * kd
    return loss.mean()
