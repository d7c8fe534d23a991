"""Granularity: which entries of a parameter are pruned together (one group id per entry).

>>> import torch
>>> w = torch.zeros(4, 6)
>>> Channel().groups(w)[:, 0].tolist()
[0, 1, 2, 3]
>>> Block((2, 3)).groups(w)[0].tolist(), Block((2, 3)).groups(w)[3].tolist()
([0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3])
>>> Groups(torch.tensor([0, 0, 1, -1])).groups(torch.zeros(4)).tolist()     # -1: never pruned
[0, 0, 1, -1]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tinyqml.search.errors import PruningError

__all__ = ["Granularity", "Element", "Channel", "Block", "Groups"]


class Granularity:
    """Base: ``groups(param)`` is an int64 tensor of the parameter's shape (``-1``: keep always)."""

    def groups(self, param: torch.Tensor) -> torch.Tensor:  # pragma: no cover - subclasses override
        raise TypeError(f"{type(self).__name__} does not define groups")


@dataclass(frozen=True)
class Element(Granularity):
    """Every entry on its own (unstructured pruning)."""

    def groups(self, param: torch.Tensor) -> torch.Tensor:
        return torch.arange(param.numel(), device=param.device).reshape(param.shape)


@dataclass(frozen=True)
class Channel(Granularity):
    """Whole slices along ``dim``: rows of a Linear weight / output channels of a conv (``dim=0``)."""

    dim: int = 0

    def groups(self, param: torch.Tensor) -> torch.Tensor:
        if param.dim() == 0 or not -param.dim() <= self.dim < param.dim():
            raise PruningError(f"Channel(dim={self.dim}) on a parameter of shape {tuple(param.shape)}")
        d = self.dim % param.dim()
        shape = [1] * param.dim()
        shape[d] = param.shape[d]
        return torch.arange(param.shape[d], device=param.device).reshape(shape).expand(param.shape).clone()


@dataclass(frozen=True)
class Block(Granularity):
    """Tiles of ``shape`` over the leading dimensions (trailing dimensions go with the tile)."""

    shape: tuple[int, ...]

    def groups(self, param: torch.Tensor) -> torch.Tensor:
        k = len(self.shape)
        if k == 0 or k > param.dim() or any(not isinstance(b, int) or b < 1 for b in self.shape):
            raise PruningError(f"Block{tuple(self.shape)} on a parameter of shape {tuple(param.shape)}")
        ids = torch.zeros(param.shape[:k], dtype=torch.int64, device=param.device)
        for d, b in enumerate(self.shape):
            n_tiles = -(-param.shape[d] // b)
            idx = torch.arange(param.shape[d], device=param.device) // b
            view = [1] * k
            view[d] = param.shape[d]
            ids = ids * n_tiles + idx.reshape(view)
        return ids.reshape(ids.shape + (1,) * (param.dim() - k)).expand(param.shape).clone()


@dataclass(frozen=True, eq=False)
class Groups(Granularity):
    """Explicit group ids (e.g. the parameters of one circuit operation); ``-1`` is never pruned."""

    ids: torch.Tensor

    def groups(self, param: torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(self.ids, dtype=torch.int64)
        if tuple(ids.shape) != tuple(param.shape):
            raise PruningError(f"Groups ids have shape {tuple(ids.shape)}, the parameter {tuple(param.shape)}")
        return ids.to(param.device)
