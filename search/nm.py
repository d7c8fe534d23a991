"""N:M structured sparsity (2:4 for sparse tensor cores): at most ``n`` nonzeros in every group of ``m``
consecutive entries along one dimension (the input dimension of a weight, ``dim=1``).

:func:`nm_mask` keeps the ``n`` highest-scoring entries of each group (ties: the first);
:func:`satisfies_nm` checks a tensor against a pattern. :class:`NMPruner` is a
:class:`~tinyqml.search.pruner.Pruner` whose masks (the same :class:`Mask`
parametrization) follow the pattern: ``prune_to(s)`` masks the fraction ``s`` of the
entries, least important first, among those the full pattern drops, so a schedule can
reach the pattern gradually; ``s = 1 - n/m`` (:attr:`NMPattern.sparsity`) is the
pattern itself. A conv weight ``[out, in, kh, kw]`` is grouped along ``in`` for each
``(out, kh, kw)``; ``in`` must be a multiple of ``m``.

>>> import torch
>>> scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.1, 0.4, 0.3, 0.2]])
>>> nm_mask(scores, NMPattern(2, 4)).int().tolist()
[[1, 0, 1, 0, 0, 1, 1, 0]]
>>> lin = torch.nn.Linear(8, 3)
>>> pruner = NMPruner([Target(lin)], NMPattern(2, 4))
>>> pruner.prune_to(pruner.pattern.sparsity); satisfies_nm(lin.weight, NMPattern(2, 4)), pruner.sparsity()
(True, 0.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from tinyqml.search.errors import PruningError
from tinyqml.search.importance import Importance
from tinyqml.search.pruner import Pruner, Target
from tinyqml.search.schedules import Schedule, check_sparsity

__all__ = ["NMPattern", "nm_mask", "satisfies_nm", "NMPruner"]


@dataclass(frozen=True)
class NMPattern:
    """Keep ``n`` of every ``m`` consecutive entries along ``dim``."""

    n: int = 2
    m: int = 4
    dim: int = 1

    def __post_init__(self) -> None:
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.n, self.m, self.dim))
        if not ok or not 1 <= self.n < self.m:
            raise PruningError(f"an N:M pattern needs integers 1 <= n < m, got n={self.n!r}, m={self.m!r}")

    @property
    def sparsity(self) -> float:
        """The fraction of entries the pattern removes, ``1 - n/m``."""
        return 1 - self.n / self.m

    def check(self, shape: Sequence[int], name: str = "tensor") -> int:
        """The grouped dimension (normalised), after checking that ``shape`` can hold the pattern."""
        ndim = len(shape)
        if ndim == 0 or not -ndim <= self.dim < ndim:
            raise PruningError(f"{self.n}:{self.m} along dim {self.dim} on {name} of shape {tuple(shape)}")
        d = self.dim % ndim
        if shape[d] % self.m:
            raise PruningError(f"{self.n}:{self.m} sparsity groups dim {d} of {name} in blocks of {self.m}, but "
                               f"its size {shape[d]} (shape {tuple(shape)}) is not a multiple of {self.m}")
        return d


def _grouped(x: torch.Tensor, pattern: NMPattern, d: int) -> torch.Tensor:
    moved = x.movedim(d, -1)
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // pattern.m, pattern.m)


def _ungrouped(g: torch.Tensor, like: torch.Tensor, d: int) -> torch.Tensor:
    return g.reshape(like.movedim(d, -1).shape).movedim(-1, d)


def nm_mask(scores: torch.Tensor, pattern: NMPattern = NMPattern()) -> torch.Tensor:
    """Boolean keep-mask of ``scores``' shape: the ``n`` largest scores of each group of ``m``."""
    d = pattern.check(scores.shape, "the scores")
    g = _grouped(scores.detach(), pattern, d)
    order = torch.argsort(g, dim=-1, descending=True, stable=True)[..., : pattern.n]
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, order, True)
    return _ungrouped(keep, scores, d)


def satisfies_nm(tensor: torch.Tensor, pattern: NMPattern = NMPattern()) -> bool:
    """Whether every group of ``m`` entries of ``tensor`` along ``dim`` has at most ``n`` nonzeros."""
    d = pattern.check(tensor.shape)
    return bool(((_grouped(tensor.detach(), pattern, d) != 0).sum(-1) <= pattern.n).all())


class NMPruner(Pruner):
    """A pruner whose every target's mask satisfies ``pattern`` once fully pruned (``scope`` is local)."""

    def __init__(self, targets: Sequence[Target], pattern: NMPattern = NMPattern(),
                 importance: Importance | None = None, schedule: Schedule | None = None) -> None:
        super().__init__(targets, importance, schedule, scope="local")
        if not isinstance(pattern, NMPattern):
            raise PruningError(f"pattern must be an NMPattern, got {type(pattern).__name__}")
        for t in self.targets:
            pattern.check(t.weight().shape, t.label)
        self.pattern = pattern

    def prune_to(self, sparsity: float) -> None:
        """Mask ``sparsity`` of each target's entries, least important first, within the N:M pattern."""
        s = check_sparsity(sparsity)
        if s > self.pattern.sparsity + 1e-12:
            raise PruningError(f"{self.pattern.n}:{self.pattern.m} sparsity removes at most "
                               f"{self.pattern.sparsity:g} of the entries, asked for {s:g}")
        for t in self.targets:
            self._prune_target(t, s)
        self.current = s

    def _prune_target(self, t: Target, s: float) -> None:
        scores = self.importance(t.weight(), t.grad()).to(torch.float64)
        fixed = t.groups() < 0  # never pruned
        keep = nm_mask(scores.masked_fill(fixed, math.inf), self.pattern) | fixed
        budget = math.floor(s * int((~fixed).sum()) + 0.5)
        candidates = torch.nonzero(~keep.reshape(-1)).squeeze(1)
        order = torch.argsort(scores.reshape(-1)[candidates], stable=True)
        drop = torch.zeros(keep.numel(), dtype=torch.bool, device=keep.device)
        drop[candidates[order[:budget]]] = True
        with torch.no_grad():
            t.mask.mask.copy_((~drop).reshape(keep.shape).to(t.mask.mask.dtype))
