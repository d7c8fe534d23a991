"""Knowledge distillation (Hinton et al. 2015): a student matches a teacher's softened outputs.

``kd_loss = alpha * T**2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)``
for student logits ``s``, teacher logits ``t``, labels ``y`` and temperature ``T``
(:class:`KDConfig`); the ``T**2`` keeps the soft term's gradients on the scale of the
hard one. :class:`KDLoss` is the module form; pass it with a teacher to
:func:`tinyqml.classical.train.train` (``loss=KDLoss(...), teacher=dense``), which
runs the teacher in eval mode without gradients. Any teacher and student with the
same number of classes work (a pruned student and its dense original, for one).

>>> import torch
>>> s, t, y = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([0])
>>> round(float(kd_loss(s, t, y, KDConfig(temperature=1.0, alpha=0.0))), 4)   # plain cross-entropy
0.1269
>>> round(float(kd_loss(t, t, y, KDConfig(temperature=4.0, alpha=1.0))), 6)   # student == teacher
0.0
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tinyqml.classical.errors import CompressionError

__all__ = ["KDConfig", "kd_loss", "KDLoss"]


@dataclass(frozen=True)
class KDConfig:
    """Softmax temperature ``T > 0`` and the weight ``alpha`` in [0, 1] of the soft (teacher) term."""

    temperature: float = 4.0
    alpha: float = 0.9

    def __post_init__(self) -> None:
        t, a = self.temperature, self.alpha
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
            raise CompressionError(f"KDConfig.temperature must be a number > 0, got {t!r}")
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
            raise CompressionError(f"KDConfig.alpha must be a number in [0, 1], got {a!r}")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
            config: KDConfig = KDConfig()) -> torch.Tensor:
    """The batch-mean distillation loss (a scalar); no gradient flows into ``teacher_logits``."""
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise CompressionError(f"student and teacher logits must both be [batch, classes], got "
                               f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if targets.shape != student_logits.shape[:1]:
        raise CompressionError(f"targets must be [batch] = [{student_logits.shape[0]}], got {tuple(targets.shape)}")
    t = float(config.temperature)
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits.detach() / t, dim=1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, targets)
    return config.alpha * t * t * soft + (1 - config.alpha) * hard


class KDLoss(nn.Module):
    """``KDLoss(config)(student_logits, teacher_logits, targets)``: :func:`kd_loss` as a module."""

    def __init__(self, config: KDConfig = KDConfig()) -> None:
        super().__init__()
        if not isinstance(config, KDConfig):
            raise CompressionError(f"config must be a KDConfig, got {type(config).__name__}")
        self.config = config

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        return kd_loss(student_logits, teacher_logits, targets, self.config)
