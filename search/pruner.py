"""The pruner: masks on targets, ranked by importance, driven by a schedule.

A :class:`Pruner` holds targets ``(module, parameter name, granularity)``; ``step(t)``
brings every target to the sparsity the schedule gives for step ``t`` by masking its
least important groups (``scope="local"``: each target separately; ``"global"``: one
ranking across targets). Sparsity is the fraction of prunable *entries* masked.
:func:`sensitivity_scan` prunes one target at a time at several sparsities and reports
an evaluation function. The same pruner serves NN weights, channels and circuit gates.

>>> import torch
>>> from tinyqml.search.schedules import OneShot
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> pruner = Pruner([Target(net[0], "weight"), Target(net[2], "weight")], schedule=OneShot(0.5))
>>> round(pruner.step(0), 2), round(float((net[0].weight == 0).float().mean()), 2)
(0.5, 0.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from tinyqml.search.errors import PruningError
from tinyqml.search.granularity import Element, Granularity
from tinyqml.search.importance import Importance, Magnitude, group_scores
from tinyqml.search.masks import Mask, attach_mask, get_mask, original
from tinyqml.search.schedules import Schedule, check_sparsity

__all__ = ["Target", "Pruner", "sensitivity_scan"]


@dataclass(frozen=True, eq=False)
class Target:
    """A parameter to prune: ``module.<name>`` grouped by ``granularity``."""

    module: nn.Module
    name: str = "weight"
    granularity: Granularity = field(default_factory=Element)
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.granularity, Granularity):
            raise PruningError(f"granularity must be a Granularity (Element, Channel, Block, Groups), "
                               f"got {type(self.granularity).__name__}")
        attach_mask(self.module, self.name)
        if not self.label:
            object.__setattr__(self, "label", f"{type(self.module).__name__}.{self.name}")

    @property
    def mask(self) -> Mask:
        return get_mask(self.module, self.name)

    def weight(self) -> torch.Tensor:
        return getattr(self.module, self.name)

    def grad(self) -> torch.Tensor | None:
        return original(self.module, self.name).grad

    def groups(self) -> torch.Tensor:
        return self.granularity.groups(self.weight())


def _scored(t: Target, importance: Importance) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    groups = t.groups()
    scores = importance(t.weight(), t.grad())
    ids, mean = group_scores(scores, groups)
    flat = groups.reshape(-1)
    flat = flat[flat >= 0]
    sizes = torch.bincount(torch.searchsorted(ids, flat), minlength=len(ids))
    return groups, ids, mean, sizes


def _set_mask(t: Target, groups: torch.Tensor, pruned_ids: torch.Tensor) -> None:
    with torch.no_grad():
        keep = ~torch.isin(groups, pruned_ids.to(groups.device))
        t.mask.mask.copy_(keep.to(t.mask.mask.dtype))


def _choose(mean: torch.Tensor, sizes: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Indices of the lowest-scoring groups covering ``sparsity`` of the entries (to the nearest entry)."""
    total = int(sizes.sum())
    budget = math.floor(sparsity * total + 0.5)
    order = torch.argsort(mean, stable=True)
    cum = torch.cumsum(sizes[order], 0)
    return order[: int((cum <= budget).sum())]


class Pruner:
    """Masks ``targets`` to the schedule's sparsity, least important groups first."""

    def __init__(self, targets: Sequence[Target], importance: Importance | None = None,
                 schedule: Schedule | None = None, scope: str = "local") -> None:
        self.targets = list(targets)
        if not self.targets or any(not isinstance(t, Target) for t in self.targets):
            raise PruningError("a Pruner needs one or more Target objects")
        if scope not in ("local", "global"):
            raise PruningError(f"scope must be 'local' or 'global', got {scope!r}")
        self.importance = importance or Magnitude()
        self.schedule = schedule
        self.scope = scope
        self.current = 0.0

    def step(self, step: int) -> float:
        """Apply the schedule's sparsity for ``step``; returns it."""
        if self.schedule is None:
            raise PruningError("this Pruner has no schedule; call prune_to(sparsity) instead")
        s = self.schedule(step)
        if s != self.current:
            self.prune_to(s)
        return s

    def prune_to(self, sparsity: float) -> None:
        """Mask the least important groups so ``sparsity`` of the prunable entries are zero."""
        s = check_sparsity(sparsity)
        if self.scope == "local":
            for t in self.targets:
                groups, ids, mean, sizes = _scored(t, self.importance)
                _set_mask(t, groups, ids[_choose(mean, sizes, s)])
        else:
            scored = [_scored(t, self.importance) for t in self.targets]
            mean = torch.cat([m for _, _, m, _ in scored])
            sizes = torch.cat([z for _, _, _, z in scored])
            owner = torch.cat([torch.full((len(i),), k) for k, (_, i, _, _) in enumerate(scored)])
            chosen = _choose(mean, sizes, s)
            offsets = [0]
            for _, ids, _, _ in scored:
                offsets.append(offsets[-1] + len(ids))
            for k, (t, (groups, ids, _, _)) in enumerate(zip(self.targets, scored)):
                mine = chosen[owner[chosen] == k] - offsets[k]
                _set_mask(t, groups, ids[mine])
        self.current = s

    def sparsity(self) -> float:
        """The fraction of prunable entries that are masked now."""
        masked = total = 0
        for t in self.targets:
            prunable = t.groups() >= 0
            masked += int(((t.mask.mask == 0) & prunable).sum())
            total += int(prunable.sum())
        return masked / max(1, total)

    def reapply(self) -> None:
        """Zero the original parameters where masked (keeps optimizers from reviving them)."""
        with torch.no_grad():
            for t in self.targets:
                original(t.module, t.name).mul_(t.mask.mask)


def sensitivity_scan(targets: Sequence[Target], evaluate: Callable[[], float], sparsities: Sequence[float],
                     importance: Importance | None = None) -> dict[str, list[tuple[float, float]]]:
    """For each target alone, the score of ``evaluate()`` at every sparsity; masks are restored."""
    out: dict[str, list[tuple[float, float]]] = {}
    for t in targets:
        saved = t.mask.mask.clone()
        rows = []
        for s in sparsities:
            Pruner([t], importance).prune_to(s)
            rows.append((float(s), float(evaluate())))
        with torch.no_grad():
            t.mask.mask.copy_(saved)
        out[t.label] = rows
    return out
