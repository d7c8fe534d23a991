"""Search spaces of choices shared by circuits and nets.

A :class:`SearchSpace` is an ordered tuple of named dimensions: :class:`IntRange`
(depth, width, channels, ...) and :class:`Choice` (gate kind, kernel size, a qubit of a
mapping, ...). :func:`per_block` repeats one dimension for every block (``"gate[0]"``,
``"gate[1]"``, ...). The same space feeds optuna define-by-run (:meth:`SearchSpace.suggest`
on a trial) and the evolutionary sampler (random draws, mutation, crossover with an
explicit :class:`random.Random`).

>>> import random
>>> space = SearchSpace.of(IntRange("depth", 1, 4), *per_block("gate", 2, Choice(("u3", "cu3"))))
>>> space.names
('depth', 'gate[0]', 'gate[1]')
>>> cfg = space.sample(random.Random(0)); sorted(cfg) == sorted(space.names) and space.contains(cfg)
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Mapping

from tinyqml.search.errors import SearchSpaceError

__all__ = ["IntRange", "Choice", "Dimension", "SearchSpace", "per_block"]


@dataclass(frozen=True)
class IntRange:
    """Integers ``low, low + step, ..., <= high``."""

    name: str
    low: int
    high: int
    step: int = 1

    def __post_init__(self) -> None:
        _check_name(self.name)
        for f in ("low", "high", "step"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool):
                raise SearchSpaceError(f"IntRange {self.name!r}: {f} must be an integer, got {v!r}")
        if self.step < 1 or self.high < self.low:
            raise SearchSpaceError(f"IntRange {self.name!r} needs low <= high and step >= 1, got "
                                   f"low={self.low}, high={self.high}, step={self.step}")

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1, self.step))

    def suggest(self, trial: Any) -> int:
        return trial.suggest_int(self.name, self.low, self.high, step=self.step)

    def contains(self, v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v in self.values


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (strings, numbers, booleans or None, as optuna's categoricals)."""

    options: tuple[Any, ...]
    name: str = ""

    def __post_init__(self) -> None:
        opts = tuple(self.options)
        if not opts:
            raise SearchSpaceError(f"Choice {self.name!r} needs at least one option")
        if any(not isinstance(o, (str, int, float, bool, type(None))) for o in opts):
            raise SearchSpaceError(f"Choice {self.name!r}: options must be str, int, float, bool or None, "
                                   f"got {opts!r}")
        if len(set(opts)) != len(opts):
            raise SearchSpaceError(f"Choice {self.name!r} has repeated options {opts!r}")
        object.__setattr__(self, "options", opts)
        if self.name:
            _check_name(self.name)

    @property
    def values(self) -> tuple[Any, ...]:
        return self.options

    def suggest(self, trial: Any) -> Any:
        return trial.suggest_categorical(self.name, list(self.options))

    def contains(self, v: Any) -> bool:
        return v in self.options


Dimension = IntRange | Choice


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise SearchSpaceError(f"a dimension needs a non-empty string name, got {name!r}")


def per_block(name: str, n_blocks: int, dim: Dimension) -> tuple[Dimension, ...]:
    """``dim`` repeated for ``n_blocks`` blocks, named ``name[0]``, ``name[1]``, ...

    >>> [d.name for d in per_block("k", 3, Choice((3, 5, 7)))]
    ['k[0]', 'k[1]', 'k[2]']
    """
    if not isinstance(n_blocks, int) or n_blocks < 1:
        raise SearchSpaceError(f"per_block {name!r}: n_blocks must be a positive integer, got {n_blocks!r}")
    return tuple(replace(dim, name=f"{name}[{i}]") for i in range(n_blocks))


@dataclass(frozen=True)
class SearchSpace:
    """Named dimensions in a fixed order."""

    dims: tuple[Dimension, ...]

    def __post_init__(self) -> None:
        dims = tuple(self.dims)
        if not dims:
            raise SearchSpaceError("a search space needs at least one dimension")
        for d in dims:
            if not isinstance(d, (IntRange, Choice)):
                raise SearchSpaceError(f"dimensions must be IntRange or Choice, got {type(d).__name__}")
            _check_name(d.name)
        names = [d.name for d in dims]
        if len(set(names)) != len(names):
            raise SearchSpaceError(f"repeated dimension names in {names}")
        object.__setattr__(self, "dims", dims)

    @classmethod
    def of(cls, *dims: Dimension) -> "SearchSpace":
        return cls(tuple(dims))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dims)

    def __getitem__(self, name: str) -> Dimension:
        for d in self.dims:
            if d.name == name:
                return d
        raise SearchSpaceError(f"no dimension {name!r}; the space has {list(self.names)}")

    def size(self) -> int:
        """The number of distinct configurations."""
        out = 1
        for d in self.dims:
            out *= len(d.values)
        return out

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask an optuna trial for every dimension (define-by-run)."""
        return {d.name: d.suggest(trial) for d in self.dims}

    def contains(self, config: Mapping[str, Any]) -> bool:
        return set(config) == set(self.names) and all(d.contains(config[d.name]) for d in self.dims)

    def check(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` as a dict, or :class:`SearchSpaceError` naming the bad entry."""
        missing = [n for n in self.names if n not in config]
        extra = [n for n in config if n not in self.names]
        if missing or extra:
            raise SearchSpaceError(f"configuration keys differ from the space: missing {missing}, unknown {extra}")
        for d in self.dims:
            if not d.contains(config[d.name]):
                raise SearchSpaceError(f"{d.name}={config[d.name]!r} is not in the space; accepted: "
                                       f"{list(d.values)}")
        return dict(config)

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """A uniformly random configuration."""
        return {d.name: rng.choice(d.values) for d in self.dims}

    def mutate(self, config: Mapping[str, Any], prob: float, rng: random.Random) -> dict[str, Any]:
        """Each entry redrawn (to a different value where possible) with probability ``prob``."""
        out = dict(config)
        for d in self.dims:
            if rng.random() < prob and len(d.values) > 1:
                out[d.name] = rng.choice([v for v in d.values if v != config[d.name]])
        return out

    def crossover(self, a: Mapping[str, Any], b: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
        """Uniform crossover: each entry from ``a`` or ``b`` with equal probability."""
        return {n: (a[n] if rng.random() < 0.5 else b[n]) for n in self.names}

    def encode(self, config: Mapping[str, Any]) -> tuple[int, ...]:
        """Index of each value in its dimension (a hashable key for de-duplication)."""
        return tuple(d.values.index(config[d.name]) for d in self.dims)

