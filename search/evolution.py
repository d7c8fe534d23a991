"""An evolutionary search strategy (Once-for-All / QuantumNAS style) as an optuna sampler.

The first ``population`` trials are random; after that every trial is a child of the
best ``parents`` of the population so far (elitist): uniform crossover of two parents
with probability ``crossover_prob``, then each entry mutated with probability
``mutation_prob``. Sampling is *constraint-aware*: when a ``feasible`` predicate is
given (cheap, on the configuration), candidates are redrawn until it holds; trials
whose recorded constraint violations (:data:`VIOLATIONS_ATTR`) are positive rank after
every feasible one. Multi-objective studies rank parents by Pareto front, then by
crowding distance. ``EvolutionSampler.random(space)`` is the random-search baseline
with the same constraint handling.

>>> import optuna
>>> from tinyqml.search.space import IntRange, SearchSpace
>>> space = SearchSpace.of(IntRange("x", 0, 20), IntRange("y", 0, 20))
>>> sampler = EvolutionSampler(space, EvolutionConfig(population=8, parents=3), seed=0)
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> study = optuna.create_study(sampler=sampler)
>>> study.optimize(lambda t: (t.suggest_int("x", 0, 20) - 7) ** 2 + (t.suggest_int("y", 0, 20) - 3) ** 2, 60)
>>> study.best_value <= 2
True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tinyqml.search.errors import InfeasibleError, SearchError
from tinyqml.search.space import Choice, IntRange, SearchSpace

__all__ = ["EvolutionConfig", "EvolutionSampler", "VIOLATIONS_ATTR", "distributions", "rank_trials"]

#: user attribute where :func:`tinyqml.search.study.run_search` records constraint violations
VIOLATIONS_ATTR = "constraint_violations"


@dataclass(frozen=True)
class EvolutionConfig:
    """Population size, number of parents, crossover and mutation probabilities."""

    population: int = 20
    parents: int = 5
    mutation_prob: float = 0.3
    crossover_prob: float = 0.5
    max_redraws: int = 200

    def __post_init__(self) -> None:
        if not isinstance(self.population, int) or self.population < 1:
            raise SearchError(f"population must be a positive integer, got {self.population!r}")
        if not isinstance(self.parents, int) or not 1 <= self.parents <= self.population:
            raise SearchError(f"parents must be an integer in 1..population ({self.population}), got {self.parents!r}")
        for f in ("mutation_prob", "crossover_prob"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise SearchError(f"{f} must be in [0, 1], got {v!r}")
        if not isinstance(self.max_redraws, int) or self.max_redraws < 1:
            raise SearchError(f"max_redraws must be a positive integer, got {self.max_redraws!r}")


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """optuna distributions of a search space."""
    out: dict[str, BaseDistribution] = {}
    for d in space.dims:
        if isinstance(d, IntRange):
            out[d.name] = IntDistribution(d.low, d.high, step=d.step)
        elif isinstance(d, Choice):
            out[d.name] = CategoricalDistribution(list(d.options))
    return out


def _violation(t: FrozenTrial) -> float:
    v = t.user_attrs.get(VIOLATIONS_ATTR)
    return max([0.0] + [float(x) for x in v]) if v else 0.0


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def _fronts(points: list[list[float]]) -> list[list[int]]:
    remaining = list(range(len(points)))
    fronts = []
    while remaining:
        front = [i for i in remaining if not any(_dominates(points[j], points[i]) for j in remaining if j != i)]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


def _crowding(points: list[list[float]], front: list[int]) -> dict[int, float]:
    dist = {i: 0.0 for i in front}
    for m in range(len(points[front[0]])):
        order = sorted(front, key=lambda i: points[i][m])
        lo, hi = points[order[0]][m], points[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        for a, i, b in zip(order, order[1:], order[2:]):
            if hi > lo:
                dist[i] += (points[b][m] - points[a][m]) / (hi - lo)
    return dist


def rank_trials(trials: Sequence[FrozenTrial], directions: Sequence[optuna.study.StudyDirection]) -> list[FrozenTrial]:
    """Completed trials best first: feasible before infeasible (less violation first), then
    by objective (single) or Pareto front and crowding distance (multiple)."""
    signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in directions]
    feasible = [t for t in trials if _violation(t) <= 0]
    infeasible = sorted((t for t in trials if _violation(t) > 0), key=_violation)
    points = [[s * v for s, v in zip(signs, t.values)] for t in feasible]
    ordered: list[FrozenTrial] = []
    if len(signs) == 1:
        ordered = [feasible[i] for i in sorted(range(len(feasible)), key=lambda i: points[i][0])]
    else:
        for front in _fronts(points):
            crowd = _crowding(points, front)
            ordered += [feasible[i] for i in sorted(front, key=lambda i: -crowd[i])]
    return ordered + infeasible


class EvolutionSampler(optuna.samplers.BaseSampler):
    """Constraint-aware evolutionary sampler over a :class:`SearchSpace`."""

    def __init__(self, space: SearchSpace, config: EvolutionConfig = EvolutionConfig(), seed: int | None = None,
                 feasible: Callable[[Mapping[str, Any]], bool] | None = None) -> None:
        if not isinstance(space, SearchSpace):
            raise SearchError(f"EvolutionSampler needs a SearchSpace, got {type(space).__name__}")
        if not isinstance(config, EvolutionConfig):
            raise SearchError(f"config must be an EvolutionConfig, got {type(config).__name__}")
        self.space, self.config, self.feasible = space, config, feasible
        self._rng = random.Random(seed)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    @classmethod
    def random(cls, space: SearchSpace, seed: int | None = None,
               feasible: Callable[[Mapping[str, Any]], bool] | None = None,
               max_redraws: int = 200) -> "EvolutionSampler":
        """Random search (the baseline) with the same constraint-aware sampling."""
        return cls(space, EvolutionConfig(population=10 ** 9, parents=1, max_redraws=max_redraws), seed, feasible)

    def reseed_rng(self) -> None:
        self._rng = random.Random()
        self._fallback.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return distributions(self.space)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        seen = {self.space.encode(t.params) for t in done if self.space.contains(t.params)}
        if len(done) < self.config.population:
            return self._draw(lambda: self.space.sample(self._rng), seen)
        ranked = [t for t in rank_trials(done, study.directions) if self.space.contains(t.params)]
        parents = [t.params for t in ranked[: self.config.parents]] or [self.space.sample(self._rng)]
        return self._draw(lambda: self._child(parents), seen)

    def _child(self, parents: list[dict[str, Any]]) -> dict[str, Any]:
        a = self._rng.choice(parents)
        if len(parents) > 1 and self._rng.random() < self.config.crossover_prob:
            a = self.space.crossover(a, self._rng.choice([p for p in parents if p is not a] or parents), self._rng)
        return self.space.mutate(a, self.config.mutation_prob, self._rng)

    def _draw(self, make: Callable[[], dict[str, Any]], seen: set) -> dict[str, Any]:
        fallback = None
        for _ in range(self.config.max_redraws):
            cand = make()
            if self.feasible is not None and not self.feasible(cand):
                continue
            if self.space.encode(cand) not in seen:
                return cand
            fallback = fallback or cand
        if fallback is not None:
            return fallback
        raise InfeasibleError(f"no feasible configuration found in {self.config.max_redraws} draws; "
                              "loosen the constraints or enlarge the space")

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)
