"""Search strategies behind one small interface: ``strategy.sampler(space, feasible, seed)``.

A strategy is a frozen description of *how* to search, independent of *what* is
searched: the same object drives a circuit space and a net space (each study gets its
own optuna sampler from it). Random search, TPE and NSGA-II are optuna's samplers;
:class:`Evolution` is :class:`~tinyqml.search.evolution.EvolutionSampler`.

>>> from tinyqml.search.space import IntRange, SearchSpace
>>> strategy = Evolution(EvolutionConfig(population=4, parents=2))
>>> a = strategy.sampler(SearchSpace.of(IntRange("depth", 1, 4)), seed=0)
>>> b = strategy.sampler(SearchSpace.of(IntRange("channels", 8, 64, step=8)), seed=0)
>>> type(a).__name__, a is b
('EvolutionSampler', False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import optuna
from optuna.trial import FrozenTrial

from tinyqml.search.evolution import VIOLATIONS_ATTR, EvolutionConfig, EvolutionSampler
from tinyqml.search.space import SearchSpace

__all__ = ["Strategy", "Evolution", "RandomSearch", "TPE", "NSGAII", "violations_of"]

Feasible = Callable[[Mapping[str, Any]], bool]


#: optuna >= 5 reads constraints set on the trial; older versions take a constraints_func
_NAMED_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")


def _constraints_kw() -> dict[str, Any]:
    return {} if _NAMED_CONSTRAINTS else {"constraints_func": violations_of}


def violations_of(trial: FrozenTrial) -> list[float]:
    """The constraint violations :func:`~tinyqml.search.study.run_search` recorded (optuna's
    ``constraints_func`` convention)."""
    return [float(v) for v in trial.user_attrs.get(VIOLATIONS_ATTR, [0.0])]


class Strategy:
    """Makes the optuna sampler of one study."""

    def sampler(self, space: SearchSpace, feasible: Feasible | None = None,
                seed: int | None = None) -> optuna.samplers.BaseSampler:  # pragma: no cover - overridden
        raise TypeError(f"{type(self).__name__} does not make a sampler")


@dataclass(frozen=True)
class Evolution(Strategy):
    """Constraint-aware evolution (Once-for-All / QuantumNAS)."""

    config: EvolutionConfig = EvolutionConfig(population=8, parents=3)

    def sampler(self, space: SearchSpace, feasible: Feasible | None = None,
                seed: int | None = None) -> optuna.samplers.BaseSampler:
        return EvolutionSampler(space, self.config, seed=seed, feasible=feasible)


@dataclass(frozen=True)
class RandomSearch(Strategy):
    """Uniform random search, redrawing infeasible configurations (the baseline), at most ``max_redraws``
    draws per trial."""

    max_redraws: int = 200

    def sampler(self, space: SearchSpace, feasible: Feasible | None = None,
                seed: int | None = None) -> optuna.samplers.BaseSampler:
        return EvolutionSampler.random(space, seed=seed, feasible=feasible, max_redraws=self.max_redraws)


@dataclass(frozen=True)
class TPE(Strategy):
    """optuna's tree-structured Parzen estimator (constraints through recorded violations)."""

    n_startup_trials: int = 10

    def sampler(self, space: SearchSpace, feasible: Feasible | None = None,
                seed: int | None = None) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(n_startup_trials=self.n_startup_trials, seed=seed, **_constraints_kw())


@dataclass(frozen=True)
class NSGAII(Strategy):
    """optuna's NSGA-II (multi-objective; constraints through recorded violations)."""

    population_size: int = 20

    def sampler(self, space: SearchSpace, feasible: Feasible | None = None,
                seed: int | None = None) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(population_size=self.population_size, seed=seed,
                                             **_constraints_kw())
