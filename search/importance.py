"""Importance of parameter entries: magnitude, ``|grad * weight|`` (Taylor) or any function.

An importance maps ``(weight, grad)`` (the masked weight, the gradient of its original
or ``None``) to a non-negative score per entry; groups are ranked by the mean score of
their entries.

>>> import torch
>>> w = torch.tensor([0.5, -2.0, 0.1])
>>> Magnitude()(w, None).tolist(), Taylor()(w, torch.tensor([1.0, 0.1, 4.0])).tolist()
([0.5, 2.0, 0.10000000149011612], [0.5, 0.20000000298023224, 0.4000000059604645])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tinyqml.search.errors import PruningError

__all__ = ["Importance", "Magnitude", "Taylor", "FunctionImportance", "group_scores"]


class Importance:
    """``importance(weight, grad) -> scores`` of the weight's shape."""

    needs_grad: bool = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise TypeError(f"{type(self).__name__} does not define scores")


@dataclass(frozen=True)
class Magnitude(Importance):
    """``|w|**p`` (``p=1``: L1 magnitude)."""

    p: float = 1.0

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return weight.detach().abs() ** self.p


@dataclass(frozen=True)
class Taylor(Importance):
    """``|grad * w|``, the first-order estimate of the loss change when ``w`` is removed."""

    needs_grad = True

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        if grad is None:
            raise PruningError("Taylor importance needs gradients: run a backward pass before pruning")
        return (grad.detach() * weight.detach()).abs()


@dataclass(frozen=True, eq=False)
class FunctionImportance(Importance):
    """A user function ``fn(weight, grad) -> scores`` (e.g. distance of an angle to the identity)."""

    fn: Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
    needs_grad: bool = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        out = torch.as_tensor(self.fn(weight.detach(), None if grad is None else grad.detach()))
        if tuple(out.shape) != tuple(weight.shape):
            raise PruningError(f"the importance function returned shape {tuple(out.shape)} for a weight of "
                               f"shape {tuple(weight.shape)}")
        return out


def group_scores(scores: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(group ids, mean score per group) over the prunable entries (id >= 0)."""
    flat_s, flat_g = scores.reshape(-1).to(torch.float64), groups.reshape(-1)
    keep = flat_g >= 0
    ids, inverse = torch.unique(flat_g[keep], return_inverse=True)
    total = torch.zeros(len(ids), dtype=torch.float64, device=scores.device).index_add_(0, inverse, flat_s[keep])
    count = torch.bincount(inverse, minlength=len(ids)).to(torch.float64)
    return ids, total / count
