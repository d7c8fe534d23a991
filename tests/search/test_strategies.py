"""Tests of tinyqml.search.strategies: one strategy object, many studies."""

from __future__ import annotations

import optuna
import pytest

from tinyqml.search import Constraint, CostModel, SearchConfig, SearchError, run_search
from tinyqml.search.evolution import EvolutionConfig, EvolutionSampler
from tinyqml.search.space import Choice, IntRange, SearchSpace
from tinyqml.search.strategies import NSGAII, TPE, Evolution, RandomSearch, violations_of

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = SearchSpace.of(IntRange("a", 0, 9), Choice(("x", "y"), name="b"))


@pytest.mark.parametrize("strategy, kind", [
    (Evolution(EvolutionConfig(population=4, parents=2)), EvolutionSampler),
    (RandomSearch(), EvolutionSampler),
    (TPE(n_startup_trials=3), optuna.samplers.TPESampler),
    (NSGAII(population_size=4), optuna.samplers.NSGAIISampler),
])
def test_every_strategy_runs_a_constrained_study(strategy, kind):
    assert isinstance(strategy.sampler(SPACE, seed=0), kind)
    costs = CostModel({"a": lambda c: c["a"]})
    directions = ("maximize", "minimize") if isinstance(strategy, NSGAII) else ("maximize",)
    cfg = SearchConfig(n_trials=12, directions=directions, storage=":memory:", seed=0, progress=False,
                       strategy=strategy)
    study = run_search(lambda c, t: (c["a"], c["a"] % 3) if len(directions) == 2 else c["a"], SPACE, cfg,
                       costs=costs, constraints=[Constraint("a", max=6)])
    assert len(study.trials) == 12
    if isinstance(strategy, (Evolution, RandomSearch)):  # constraint-aware sampling: never infeasible
        assert all(t.params["a"] <= 6 for t in study.trials)
    feasible = [t for t in study.trials if max(violations_of(t)) <= 0]
    assert feasible


def test_config_rejects_a_non_strategy():
    with pytest.raises(SearchError, match="strategy must be"):
        SearchConfig(n_trials=1, strategy=optuna.samplers.RandomSampler())
