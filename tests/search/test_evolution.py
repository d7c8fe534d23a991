"""Tests of tinyqml.search.evolution: the evolutionary sampler on optuna."""

from __future__ import annotations

import optuna
import pytest

from tinyqml.search.errors import InfeasibleError, SearchError
from tinyqml.search.evolution import VIOLATIONS_ATTR, EvolutionConfig, EvolutionSampler, rank_trials
from tinyqml.search.space import Choice, IntRange, SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = SearchSpace.of(*(IntRange(f"x{i}", 0, 9) for i in range(6)))


def _objective(trial):
    return sum((trial.suggest_int(f"x{i}", 0, 9) - i) ** 2 for i in range(6))


def _best(sampler, n=150):
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n)
    return study.best_value


def test_evolution_beats_random_search_on_a_separable_problem():
    evo = [_best(EvolutionSampler(SPACE, EvolutionConfig(population=20, parents=5), seed=s)) for s in range(3)]
    rnd = [_best(EvolutionSampler.random(SPACE, seed=s)) for s in range(3)]
    assert sum(evo) < sum(rnd)
    assert min(evo) <= 3


def test_first_population_is_random_then_children_of_parents():
    sampler = EvolutionSampler(SPACE, EvolutionConfig(population=5, parents=2, mutation_prob=0.0,
                                                      crossover_prob=1.0), seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, 5)
    parents = [t.params for t in rank_trials(study.trials, study.directions)[:2]]
    study.optimize(_objective, 5)
    for t in study.trials[5:]:
        # no mutation: every entry comes from one of the two parents
        assert all(t.params[k] in (parents[0][k], parents[1][k]) for k in SPACE.names) or t.params in [
            p.params for p in study.trials[:t.number]]


def test_seeded_sampler_repeats():
    a = optuna.create_study(sampler=EvolutionSampler(SPACE, seed=4))
    b = optuna.create_study(sampler=EvolutionSampler(SPACE, seed=4))
    a.optimize(_objective, 40)
    b.optimize(_objective, 40)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


def test_constraint_aware_sampling_only_proposes_feasible_configurations():
    feasible = lambda cfg: sum(cfg.values()) <= 20  # noqa: E731
    study = optuna.create_study(sampler=EvolutionSampler(SPACE, EvolutionConfig(population=10, parents=3),
                                                         seed=1, feasible=feasible))
    study.optimize(_objective, 60)
    assert all(feasible(t.params) for t in study.trials)


def test_impossible_constraints_are_reported():
    sampler = EvolutionSampler(SPACE, EvolutionConfig(max_redraws=20), seed=0, feasible=lambda cfg: False)
    study = optuna.create_study(sampler=sampler)
    with pytest.raises(InfeasibleError, match="no feasible configuration"):
        study.optimize(_objective, 1)


def test_rank_trials_puts_feasible_first_and_pareto_fronts_in_order():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for acc, gates, viol in [(0.9, 10, 0), (0.8, 5, 0), (0.7, 8, 0), (0.95, 2, 1.0), (0.85, 12, 0)]:
        t = study.ask()
        t.set_user_attr(VIOLATIONS_ATTR, [viol])
        study.tell(t, [acc, gates])
    ranked = [tuple(t.values) for t in rank_trials(study.trials, study.directions)]
    assert set(ranked[:2]) == {(0.9, 10), (0.8, 5)}       # the feasible Pareto front
    assert ranked[-1] == (0.95, 2)                          # infeasible last despite dominating
    assert ranked.index((0.7, 8)) > 1 and ranked.index((0.85, 12)) > 1


def test_multi_objective_evolution_runs():
    space = SearchSpace.of(IntRange("w", 1, 8), Choice(("a", "b"), name="k"))
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=EvolutionSampler(space, EvolutionConfig(population=6, parents=3), seed=0))
    study.optimize(lambda t: (t.suggest_int("w", 1, 8) + (t.suggest_categorical("k", ["a", "b"]) == "a"),
                              t.params["w"] ** 2), 20)
    assert len(study.best_trials) >= 2


@pytest.mark.parametrize("kw, fragment", [
    ({"population": 0}, "population"), ({"parents": 30}, "parents"), ({"mutation_prob": 1.5}, "mutation_prob"),
    ({"crossover_prob": -0.1}, "crossover_prob"), ({"max_redraws": 0}, "max_redraws"),
])
def test_bad_config(kw, fragment):
    with pytest.raises(SearchError, match=fragment):
        EvolutionConfig(**kw)


def test_bad_sampler_arguments():
    with pytest.raises(SearchError, match="needs a SearchSpace"):
        EvolutionSampler({"x": [1, 2]})
