"""Constraints as named cost functions.

A :class:`CostModel` maps cost names to functions of a candidate (a circuit, a net, a
configuration): gate count, depth, estimated success probability; MACs, parameters,
peak SRAM, latency. A :class:`Constraint` bounds one named cost. Naming a cost the
model lacks raises :class:`UnknownConstraintError` with the accepted names, when the
constraint is checked against the model (before any search starts), so a misspelled
constraint is never silently ignored.

Violations follow optuna's convention (``<= 0`` is feasible), so they plug into
``constraints_func`` of optuna's samplers and into :class:`~tinyqml.search.evolution.EvolutionSampler`.

>>> costs = CostModel({"params": lambda c: c["width"] * 10, "depth": lambda c: c["depth"]})
>>> limits = [Constraint("params", max=40), Constraint("depth", min=2)]
>>> costs.violations({"width": 5, "depth": 1}, limits)
(10.0, 1.0)
>>> costs.feasible({"width": 3, "depth": 2}, limits)
True
>>> costs.check([Constraint("parms", max=1)])
Traceback (most recent call last):
...
tinyqml.search.errors.UnknownConstraintError: unknown cost 'parms' in a constraint (did you mean 'params'?); accepted: depth, params
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from tinyqml.search.errors import ConstraintError, UnknownConstraintError

__all__ = ["Constraint", "CostModel"]

CostFn = Callable[[Any], float]


@dataclass(frozen=True)
class Constraint:
    """``min <= cost(candidate) <= max`` (either bound may be omitted, not both)."""

    cost: str
    max: float | None = None
    min: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.cost, str) or not self.cost:
            raise ConstraintError(f"a constraint needs a cost name, got {self.cost!r}")
        if self.max is None and self.min is None:
            raise ConstraintError(f"constraint on {self.cost!r} needs max= or min=")
        for f in ("max", "min"):
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ConstraintError(f"constraint on {self.cost!r}: {f} must be a finite number, got {v!r}")

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the bounds (``<= 0``: satisfied)."""
        out = -math.inf
        if self.max is not None:
            out = max(out, value - self.max)
        if self.min is not None:
            out = max(out, self.min - value)
        return float(out)


class CostModel:
    """Named cost functions of a candidate."""

    def __init__(self, costs: Mapping[str, CostFn]) -> None:
        if not isinstance(costs, Mapping) or not costs:
            raise ConstraintError("a CostModel needs a non-empty mapping of cost names to functions")
        for name, fn in costs.items():
            if not isinstance(name, str) or not callable(fn):
                raise ConstraintError(f"cost {name!r} must map a string name to a callable")
        self._costs = dict(costs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._costs))

    def __repr__(self) -> str:
        return f"CostModel({', '.join(self.names)})"

    def __or__(self, other: "CostModel") -> "CostModel":
        """A model with the costs of both (``other`` wins on a name in both)."""
        return CostModel({**self._costs, **other._costs})

    def check(self, constraints: Sequence[Constraint]) -> tuple[Constraint, ...]:
        """The constraints, after checking that every cost they name exists."""
        out = tuple(constraints)
        for c in out:
            if not isinstance(c, Constraint):
                raise ConstraintError(f"constraints must be Constraint objects, got {type(c).__name__}")
            if c.cost not in self._costs:
                close = difflib.get_close_matches(c.cost, self.names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UnknownConstraintError(f"unknown cost {c.cost!r} in a constraint{hint}; accepted: "
                                             f"{', '.join(self.names)}")
        return out

    def cost(self, name: str, candidate: Any) -> float:
        if name not in self._costs:
            raise UnknownConstraintError(f"unknown cost {name!r}; accepted: {', '.join(self.names)}")
        value = self._costs[name](candidate)
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ConstraintError(f"cost {name!r} returned {value!r}, not a number") from None
        if math.isnan(v):
            raise ConstraintError(f"cost {name!r} returned NaN")
        return v

    def evaluate(self, candidate: Any, names: Sequence[str] | None = None) -> dict[str, float]:
        """The named costs (all of them by default) of ``candidate``."""
        return {n: self.cost(n, candidate) for n in (self.names if names is None else names)}

    def violations(self, candidate: Any, constraints: Sequence[Constraint]) -> tuple[float, ...]:
        """One violation per constraint, optuna's convention (``<= 0`` feasible)."""
        return tuple(c.violation(self.cost(c.cost, candidate)) for c in self.check(constraints))

    def feasible(self, candidate: Any, constraints: Sequence[Constraint]) -> bool:
        return all(v <= 0 for v in self.violations(candidate, constraints))
