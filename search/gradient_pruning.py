"""Gradient pruning (QOC): which gradients to evaluate at each training step.

On hardware every gradient entry costs circuit runs (two shifted circuits per
parameter-shift term), so QOC (Wang et al., DAC 2022) evaluates only part of them.
Training is split into stages of ``accumulation_window + pruning_window`` steps:

- in the **accumulation window** every gradient is evaluated and its importance (by
  default ``|g|``, :class:`~tinyqml.search.importance.Magnitude` of the gradient) is
  summed per entry;
- in the **pruning window** only ``1 - ratio`` of the prunable groups are evaluated:
  drawn without replacement with probability proportional to their accumulated score
  (``probabilistic=True``, QOC's choice) or the top-scoring ones; the others are
  skipped. A new draw is made for every pruning step; the accumulator restarts with
  the next stage.

Entries are grouped by the engine's :class:`~tinyqml.search.granularity.Granularity`
(``Element``: every parameter on its own; ``Groups(gate_groups(circuit))``: the angles
of one gate together; ``-1`` ids are always evaluated) and ranked by the engine's
:func:`~tinyqml.search.importance.group_scores` (mean score per group). The selector
returns a boolean mask of the parameter's shape (``True``: evaluate); whoever computes
gradients uses it to skip work, and :meth:`GradientPruner.apply` zeroes the skipped
entries of an already computed gradient. Every draw uses the selector's own
``torch.Generator`` seeded from ``config.seed``: the same config gives the same masks.

>>> import torch
>>> gp = GradientPruner(torch.zeros(4), GradientPruningConfig(ratio=0.5, accumulation_window=1,
...                                                          pruning_window=2, probabilistic=False))
>>> gp.mask(0).tolist()                      # accumulation step: everything
[True, True, True, True]
>>> gp.observe(0, torch.tensor([0.1, -3.0, 0.2, 2.0]))
>>> gp.mask(1).tolist(), gp.mask(2).tolist()  # pruning window: the two largest |g|
([False, True, False, True], [False, True, False, True])
>>> gp.mask(3).all().item(), round(gp.evaluated_fraction(3), 3)   # next stage accumulates again
(True, 0.667)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from tinyqml.search.errors import PruningError
from tinyqml.search.granularity import Element, Granularity
from tinyqml.search.importance import Importance, Magnitude, group_scores
from tinyqml.search.schedules import check_sparsity

__all__ = ["GradientPruningConfig", "GradientPruner"]


@dataclass(frozen=True)
class GradientPruningConfig:
    """Settings of :class:`GradientPruner` (QOC's defaults: ``ratio=0.5``, windows 1 and 2).

    Attributes:
        ratio: fraction of the prunable groups whose gradient is skipped in a pruning step,
            in ``[0, 1)`` (at least one group is always evaluated).
        accumulation_window: steps per stage with every gradient evaluated and accumulated (``w_a``).
        pruning_window: steps per stage with only the selected gradients evaluated (``w_p``).
        probabilistic: draw the evaluated groups with probability proportional to their
            accumulated score (QOC); ``False``: the top-scoring groups (ties: lower id first).
        seed: seed of the selector's generator.
    """

    ratio: float = 0.5
    accumulation_window: int = 1
    pruning_window: int = 2
    probabilistic: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_sparsity(self.ratio, "ratio")
        for name in ("accumulation_window", "pruning_window"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise PruningError(f"GradientPruningConfig.{name} must be an integer >= 0, got {v!r}")
        if self.accumulation_window < 1:
            raise PruningError("gradient pruning needs accumulation_window >= 1 (the pruning window draws "
                               "from the magnitudes accumulated there)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise PruningError(f"GradientPruningConfig.seed must be an integer, got {self.seed!r}")

    @property
    def stage_length(self) -> int:
        return self.accumulation_window + self.pruning_window

    def expected_fraction(self) -> float:
        """Fraction of groups evaluated per step, averaged over a stage (``ratio`` applied to groups)."""
        return (self.accumulation_window + self.pruning_window * (1 - self.ratio)) / self.stage_length


class GradientPruner:
    """Per-step gradient masks for one parameter (or any tensor of its shape).

    Args:
        like: the parameter (only its shape and device are used).
        config: the windows, ratio and seed.
        granularity: how entries are grouped (default :class:`Element`).
        importance: score of one observed gradient (default ``Magnitude()``: ``|g|``); an
            importance with ``needs_grad`` (e.g. ``Taylor``) is called as ``importance(weight, grad)``,
            otherwise as ``importance(grad, None)``.
    """

    def __init__(self, like: torch.Tensor, config: GradientPruningConfig = GradientPruningConfig(),
                 granularity: Granularity | None = None, importance: Importance | None = None) -> None:
        if not isinstance(like, torch.Tensor):
            raise PruningError(f"GradientPruner needs a tensor of the parameter's shape, got {type(like).__name__}")
        if not isinstance(config, GradientPruningConfig):
            raise PruningError(f"config must be a GradientPruningConfig, got {type(config).__name__}")
        self.config = config
        self.granularity = granularity if granularity is not None else Element()
        if not isinstance(self.granularity, Granularity):
            raise PruningError(f"granularity must be a Granularity, got {type(self.granularity).__name__}")
        self.importance = importance if importance is not None else Magnitude()
        if not isinstance(self.importance, Importance):
            raise PruningError(f"importance must be an Importance, got {type(self.importance).__name__}")
        self.shape = tuple(like.shape)
        self.groups = self.granularity.groups(like.detach()).cpu()
        self.group_ids = torch.unique(self.groups[self.groups >= 0])
        self.n_groups = len(self.group_ids)
        self.generator = torch.Generator().manual_seed(config.seed)
        self._score = torch.zeros(self.shape, dtype=torch.float64)
        self._stage = -1
        self._cached: tuple[int, torch.Tensor] | None = None
        self.history: list[float] = []  # fraction of prunable entries evaluated, per mask() step

    # ------------------------------------------------------------------ windows
    def in_accumulation(self, step: int) -> bool:
        """Whether ``step`` lies in an accumulation window (every gradient evaluated)."""
        c = self.config
        return c.pruning_window == 0 or self._pos(step) < c.accumulation_window

    def _pos(self, step: int) -> int:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise PruningError(f"step must be an integer >= 0, got {step!r}")
        return step % self.config.stage_length

    def _enter(self, step: int) -> None:
        stage = step // self.config.stage_length
        if stage != self._stage:
            self._stage = stage
            self._score.zero_()

    @property
    def n_keep(self) -> int:
        """Groups evaluated in a pruning step."""
        if self.n_groups == 0:
            return 0
        return max(1, self.n_groups - math.floor(self.config.ratio * self.n_groups + 0.5))

    # ------------------------------------------------------------------ masks
    def mask(self, step: int) -> torch.Tensor:
        """Boolean mask of the parameter's shape: ``True`` where the gradient is evaluated at ``step``.

        Repeated calls for the same step return the same mask (one draw per step).
        """
        if self._cached is not None and self._cached[0] == step:
            return self._cached[1].clone()
        self._pos(step)
        self._enter(step)
        if self.in_accumulation(step) or self.n_keep >= self.n_groups:
            out = torch.ones(self.shape, dtype=torch.bool)
        else:
            chosen = self._select()
            out = torch.isin(self.groups, chosen) | (self.groups < 0)
        self._cached = (step, out)
        prunable = self.groups >= 0
        self.history.append(float((out & prunable).sum()) / max(1, int(prunable.sum())))
        return out.clone()

    def _select(self) -> torch.Tensor:
        ids, mean = group_scores(self._score, self.groups)
        k = self.n_keep
        if not self.config.probabilistic:
            order = torch.argsort(-mean, stable=True)
            return ids[order[:k]]
        w = mean.clamp_min(0)
        positive = int((w > 0).sum())
        if positive >= k:
            idx = torch.multinomial(w, k, replacement=False, generator=self.generator)
        else:  # too few groups with a score: take them all, the rest uniformly among the others
            first = torch.nonzero(w > 0).flatten()
            rest = torch.multinomial((w <= 0).to(torch.float64), k - positive, replacement=False,
                                     generator=self.generator)
            idx = torch.cat([first, rest])
        return ids[idx]

    def observe(self, step: int, grad: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Add the importance of ``grad`` (computed at ``step``) to the stage's accumulator.

        Only accumulation steps count; in a pruning step this does nothing.
        """
        if not isinstance(grad, torch.Tensor) or tuple(grad.shape) != self.shape:
            got = tuple(grad.shape) if isinstance(grad, torch.Tensor) else type(grad).__name__
            raise PruningError(f"the gradient has shape {got}, the pruner's parameter {self.shape}")
        self._pos(step)
        self._enter(step)
        if not self.in_accumulation(step):
            return
        if self.importance.needs_grad:
            if weight is None:
                raise PruningError(f"{type(self.importance).__name__} needs the weight: observe(step, grad, weight)")
            s = self.importance(weight, grad)
        else:
            s = self.importance(grad, None)
        self._score += s.detach().to("cpu", torch.float64)

    def apply(self, step: int, grad: torch.Tensor) -> torch.Tensor:
        """``grad`` with the entries skipped at ``step`` set to zero (in place; returned)."""
        m = self.mask(step).to(grad.device)
        with torch.no_grad():
            grad.mul_(m.to(grad.dtype))
        return grad

    @property
    def scores(self) -> torch.Tensor:
        """The scores accumulated in the current stage (a copy)."""
        return self._score.clone()

    def evaluated_fraction(self, steps: int | Sequence[int]) -> float:
        """Mean fraction of prunable *groups* evaluated over ``range(steps)`` (or the given
        steps), from the windows alone (no draw is made)."""
        seq = range(steps) if isinstance(steps, int) else steps
        part = self.n_keep / self.n_groups if self.n_groups else 1.0
        vals = [1.0 if self.in_accumulation(t) else part for t in seq]
        return sum(vals) / max(1, len(vals))
