"""One mask mechanism for any ``nn.Parameter``: a ``torch.nn.utils.parametrize`` reparametrization.

``attach_mask(module, "weight")`` replaces ``module.weight`` by ``original * mask`` (the
mask a buffer of ones and zeros, same shape); gradients still reach the original;
:func:`squash` bakes the mask in and removes the parametrization. NN weights, conv
channels and circuit gate angles (a ``QuantumLayer``'s ``weights``) all use this.

>>> import torch
>>> lin = torch.nn.Linear(3, 2)
>>> m = attach_mask(lin, "weight")
>>> m.mask[0] = 0
>>> bool((lin.weight[0] == 0).all()), get_mask(lin, "weight") is m
(True, True)
>>> _ = squash(lin); type(lin.weight).__name__
'Parameter'
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from tinyqml.search.errors import PruningError

__all__ = ["Mask", "attach_mask", "get_mask", "has_mask", "squash", "own_class"]


class Mask(nn.Module):
    """The parametrization ``x -> x * mask``."""

    def __init__(self, like: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones_like(like, dtype=like.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask

    @property
    def sparsity(self) -> float:
        """Fraction of masked-out entries."""
        return float((self.mask == 0).sum()) / max(1, self.mask.numel())


def _check(module: nn.Module, name: str) -> None:
    if not isinstance(module, nn.Module):
        raise PruningError(f"masks attach to an nn.Module, got {type(module).__name__}")
    if not isinstance(name, str) or not (has_mask(module, name) or isinstance(getattr(module, name, None),
                                                                             nn.Parameter)):
        params = [n for n, _ in module.named_parameters(recurse=False)]
        raise PruningError(f"{type(module).__name__} has no parameter {name!r}; its parameters: {params}")


def has_mask(module: nn.Module, name: str) -> bool:
    return parametrize.is_parametrized(module, name) and any(
        isinstance(p, Mask) for p in module.parametrizations[name])


def get_mask(module: nn.Module, name: str) -> Mask:
    """The :class:`Mask` on ``module.<name>`` (:class:`PruningError` if there is none)."""
    if not has_mask(module, name):
        raise PruningError(f"{type(module).__name__}.{name} has no mask; call attach_mask first")
    return next(p for p in module.parametrizations[name] if isinstance(p, Mask))


def attach_mask(module: nn.Module, name: str = "weight") -> Mask:
    """Put a mask of ones on ``module.<name>`` (or return the one already there)."""
    _check(module, name)
    if has_mask(module, name):
        return get_mask(module, name)
    mask = Mask(getattr(module, name).detach())
    parametrize.register_parametrization(module, name, mask)
    return mask


def original(module: nn.Module, name: str) -> nn.Parameter:
    """The unmasked parameter behind a masked ``module.<name>``."""
    get_mask(module, name)
    return module.parametrizations[name].original


def own_class(module: nn.Module) -> nn.Module:
    """Give a parametrized module a class of its own. ``copy.deepcopy`` of a parametrized module
    shares torch's generated class with the original, and removing a parametrization deletes the
    property from that class, which would break every copy; call this before removing one."""
    cls = type(module)
    body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, body)
    return module


def squash(module: nn.Module) -> nn.Module:
    """Bake every mask of ``module`` (and its children) into its parameter and drop the
    parametrizations; pruned entries stay exactly zero. Deep copies of ``module`` keep theirs."""
    for sub in module.modules():
        if not parametrize.is_parametrized(sub):
            continue
        for name in list(sub.parametrizations.keys()):
            if has_mask(sub, name):
                own_class(sub)
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    return module
