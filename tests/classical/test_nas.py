"""Tests of tinyqml.classical.nas: constrained architecture search on the shared engine."""

from __future__ import annotations

import math
from dataclasses import replace

import optuna
import pytest
import torch

from tinyqml.classical.acc_predictor import AccuracyPredictor, AccuracyPredictorConfig
from tinyqml.classical.arch import NASError, SupernetConfig, encode, encoding_size, macs, params, sample_arch
from tinyqml.classical.nas import (
    DEFAULT_STRATEGY,
    ConstraintSyntaxError,
    NASResult,
    NASSearchConfig,
    NASTrial,
    NoFeasibleArchError,
    analytic_costs,
    compare_strategies,
    parse_constraint,
    parse_constraints,
    pareto_front,
    plot_pareto_nas,
    search_architecture,
)
from tinyqml.search import TPE, Constraint, CostModel, RandomSearch, SearchError, UnknownConstraintError

optuna.logging.set_verbosity(optuna.logging.WARNING)
CFG = SupernetConfig()
COSTS = analytic_costs(CFG)
MEDIAN_MACS = 767_328  # median MACs of uniformly drawn archs of CFG


def _synthetic_accuracy(seed: int = 123):
    """An accuracy-like score: a fixed random linear function of the encoding, 40 random pairwise
    interactions, and a capacity term (more MACs help), so a MACs bound binds."""
    g = torch.Generator().manual_seed(seed)
    n = encoding_size(CFG)
    w = torch.randn(n, generator=g).tolist()
    pairs = torch.randint(n, (40, 2), generator=g).tolist()
    pw = torch.randn(40, generator=g).tolist()

    def score(arch):
        x = encode(arch, CFG)
        z = sum(a * b for a, b in zip(x, w)) + sum(x[i] * x[j] * v for (i, j), v in zip(pairs, pw))
        return 0.6 + 0.01 * z + 0.05 * math.log(macs(arch, CFG) / MEDIAN_MACS)

    return score


SCORE = _synthetic_accuracy()


def _search(constraints, n_trials=30, strategy=DEFAULT_STRATEGY, seed=0, score=SCORE, costs=COSTS, **kw):
    return search_architecture(score, CFG, costs, constraints,
                               NASSearchConfig(n_trials=n_trials, strategy=strategy, seed=seed, **kw))


@pytest.mark.parametrize("strategy", [DEFAULT_STRATEGY, RandomSearch()], ids=["evolution", "random"])
def test_search_respects_the_constraints(strategy):
    result = _search(["macs<=400k", "params<=20k"], n_trials=40, strategy=strategy)
    assert [t.number for t in result.trials] == list(range(40))
    for t in result.trials:  # the reported costs and feasibility are the arch's own
        assert t.costs == {"macs": macs(t.arch, CFG), "params": params(t.arch, CFG)}
        assert t.feasible == (macs(t.arch, CFG) <= 400_000 and params(t.arch, CFG) <= 20_000)
        assert t.arch == t.arch.canonical(CFG)
    assert all(t.feasible for t in result.trials)  # both strategies redraw infeasible candidates
    assert result.best.feasible and result.best_costs["macs"] <= 400_000 and result.best_costs["params"] <= 20_000
    assert result.best_score == max(t.score for t in result.trials) == SCORE(result.best_arch)
    curve = result.best_so_far()
    assert len(curve) == 40 and curve == sorted(curve) and curve[-1] == result.best_score


def test_an_infeasible_trial_is_never_the_best():
    # TPE is not constraint-aware when it samples: infeasible trials happen and score higher (more MACs)
    result = _search(["macs<=500k"], n_trials=25, strategy=TPE(n_startup_trials=10))
    infeasible = [t for t in result.trials if not t.feasible]
    assert infeasible and max(t.score for t in infeasible) > result.best_score
    assert result.best.feasible and result.best_score == max(t.score for t in result.feasible_trials())
    first = next(i for i, t in enumerate(result.trials) if t.feasible)
    assert all(math.isnan(v) for v in result.best_so_far()[:first])


def test_no_feasible_arch_is_a_named_error():
    below_smallest = f"macs<={macs(CFG.smallest(), CFG) - 1}"
    with pytest.raises(NoFeasibleArchError, match="no feasible configuration"):  # the sampler gives up
        _search([below_smallest], n_trials=5)
    with pytest.raises(NoFeasibleArchError, match="none of the 6 evaluated"):  # TPE runs, nothing is feasible
        _search([below_smallest], n_trials=6, strategy=TPE(n_startup_trials=3))


def test_an_unknown_constraint_fails_before_any_trial():
    calls = []
    costs = CostModel({"macs": lambda a: calls.append("cost") or macs(a, CFG)})
    score = lambda a: calls.append("score") or 0.5  # noqa: E731
    with pytest.raises(UnknownConstraintError, match="did you mean 'macs'"):
        _search(["mac<=400k"], score=score, costs=costs)
    with pytest.raises(UnknownConstraintError, match="peak_sram"):
        compare_strategies(score, CFG, costs, [Constraint("peak_sram", max=1e4)], n_trials=5)
    assert calls == []


def test_scores_and_costs_are_computed_once_per_network():
    seen = {"macs": [], "score": []}

    def counted_macs(arch):
        seen["macs"].append(arch)
        return macs(arch, CFG)

    def counted_score(arch):
        seen["score"].append(arch)
        return SCORE(arch)

    result = _search(["macs<=400k"], n_trials=40, score=counted_score, costs=CostModel({"macs": counted_macs}))
    for calls in seen.values():
        assert len(calls) == len(set(calls)) and all(a == a.canonical(CFG) for a in calls)
    assert set(seen["score"]) == {t.arch for t in result.trials}


def test_a_predictor_is_a_score():
    g = torch.Generator().manual_seed(0)
    archs = [sample_arch(CFG, g) for _ in range(60)]
    pred = AccuracyPredictor(CFG, AccuracyPredictorConfig(hidden=(32,), epochs=30))
    pred.fit(archs, [SCORE(a) for a in archs])
    result = _search(["macs<=600k"], n_trials=15, score=pred)
    assert result.best_score == pytest.approx(pred(result.best_arch))


def test_a_stored_study_resumes(tmp_path):
    db = str(tmp_path / "nas.db")
    first = _search(["macs<=400k"], n_trials=8, storage=db, study_name="resume")
    again = _search(["macs<=400k"], n_trials=12, storage=db, study_name="resume")
    assert len(again.trials) == 12 and [t.arch for t in again.trials[:8]] == [t.arch for t in first.trials]


@pytest.mark.parametrize("score_seed", [123, 11])
def test_evolution_beats_random_search_at_equal_budget(score_seed, tmp_path):
    cmp = compare_strategies(_synthetic_accuracy(score_seed), CFG, COSTS, ["macs<=400k"], n_trials=80,
                             seeds=(0, 1, 2))
    for name in ("evolution", "random"):
        assert len(cmp.best_scores(name)) == 3
        assert all(len(c) == 80 for c in cmp.curves(name))
        assert all(r.best_costs["macs"] <= 400_000 for r in cmp.runs[name])
    evo, rnd = cmp.mean("evolution"), cmp.mean("random")
    assert evo > rnd and cmp.wins("evolution", "random") >= 2, cmp.table()
    table = cmp.table()
    assert f"| evolution | {evo:.4g} |" in table and f"{evo / rnd:.3f}" in table and "macs<=400000" in table
    assert cmp.plot(tmp_path / "curves.png").stat().st_size > 0


def test_compare_checks_its_arguments():
    with pytest.raises(NASError, match="seeds"):
        compare_strategies(SCORE, CFG, COSTS, [], n_trials=5, seeds=(0, 0))
    with pytest.raises(NASError, match="Strategy"):
        compare_strategies(SCORE, CFG, COSTS, [], n_trials=5, strategies={"bad": "random"})


@pytest.mark.parametrize("text, expected", [
    ("macs<=200000", Constraint("macs", max=200_000)),
    (" macs <= 200k ", Constraint("macs", max=200_000)),
    ("params>=1.5K", Constraint("params", min=1500)),
    ("peak_sram<=2e4", Constraint("peak_sram", max=20_000)),
    ("latency<=2.5", Constraint("latency", max=2.5)),
    ("macs<=1.5M", Constraint("macs", max=1_500_000)),
])
def test_parse_constraint(text, expected):
    assert parse_constraint(text) == expected


@pytest.mark.parametrize("text", ["macs<200k", "macs==5", "peak_sram<=20KB", "<=5", "macs<=", "macs<=inf",
                                  "2macs<=5", "macs<=5 k k", 5])
def test_parse_constraint_says_what_is_accepted(text):
    with pytest.raises(ConstraintSyntaxError, match="accepted: NAME<=NUMBER or NAME>=NUMBER"):
        parse_constraint(text)


def test_parse_constraints_takes_strings_lists_and_constraints():
    limit = Constraint("params", max=10)
    assert parse_constraints("macs<=1k, params>=2") == (Constraint("macs", max=1000), Constraint("params", min=2))
    assert parse_constraints(["macs<=1k", limit]) == (Constraint("macs", max=1000), limit)
    assert parse_constraints(limit) == (limit,) and parse_constraints([]) == ()
    with pytest.raises(ConstraintSyntaxError, match="sequence"):
        parse_constraints(3)


def _trial(number, score, macs_):
    return NASTrial(number, CFG.smallest(), score, {"macs": macs_}, True)


def test_pareto_front_of_a_hand_made_list():
    trials = [_trial(0, 0.90, 300), _trial(1, 0.80, 100), _trial(2, 0.85, 300),  # 2: same cost, lower score
              _trial(3, 0.95, 500), _trial(4, 0.70, 120),  # 4: dominated by 1
              _trial(5, 0.95, 600),  # same score as 3, more MACs
              _trial(6, 0.90, 300), _trial(7, 0.99, 900)]  # 6: same point as 0, kept
    assert [t.number for t in pareto_front(trials, "score", "macs")] == [1, 0, 6, 3, 7]
    assert pareto_front([], "score", "macs") == []
    pts = [(1, 5), (2, 5), (2, 9), (0, 1)]
    assert pareto_front(pts, objective=lambda p: p[0], cost=lambda p: p[1]) == [(0, 1), (2, 5)]
    with pytest.raises(NASError, match="no cost 'sram'; accepted: score, macs"):
        pareto_front(trials, "score", "sram")


def test_plot_pareto_nas_draws_every_trial_and_returns_the_front(tmp_path):
    a = _search(["macs<=600k"], n_trials=15, strategy=TPE(n_startup_trials=10))
    b = _search(["macs<=600k"], n_trials=15, seed=1)
    front = plot_pareto_nas(a, tmp_path / "one.png")
    assert front == a.pareto("macs") and all(t.feasible for t in front)
    both = plot_pareto_nas({"tpe": a, "evolution": b}, tmp_path / "both.png", cost="params")
    assert both == pareto_front(a.feasible_trials() + b.feasible_trials(), "score", "params")
    assert (tmp_path / "one.png").stat().st_size > 0 and (tmp_path / "both.png").stat().st_size > 0
    with pytest.raises(NASError, match="accepted: macs, params"):
        plot_pareto_nas([a], tmp_path / "x.png", cost="sram")
    with pytest.raises(NASError, match="NASResult"):
        plot_pareto_nas([], tmp_path / "x.png")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"n_trials": 0}, "n_trials"), ({"strategy": "evolution"}, "Strategy"), ({"seed": None}, "seed"),
    ({"storage": ""}, "storage"),
])
def test_search_config_is_checked(kwargs, fragment):
    with pytest.raises(NASError, match=fragment):
        NASSearchConfig(**kwargs)


def test_search_checks_score_config_and_costs():
    with pytest.raises(NASError, match="score must be a callable"):
        search_architecture(0.5, CFG, COSTS)  # type: ignore[arg-type]
    with pytest.raises(NASError, match="SupernetConfig"):
        search_architecture(SCORE, "cfg", COSTS)  # type: ignore[arg-type]
    with pytest.raises(NASError, match="CostModel"):
        search_architecture(SCORE, CFG, {"macs": len})  # type: ignore[arg-type]
    with pytest.raises(NASError, match="returned nan; accepted: a finite number"):
        _search([], n_trials=3, score=lambda a: math.nan)


def test_result_without_constraints_keeps_every_cost():
    result = _search([], n_trials=5)
    assert isinstance(result, NASResult) and result.constraints == ()
    assert all(t.feasible and set(t.costs) == {"macs", "params"} for t in result.trials)


def test_a_stored_nas_study_refuses_other_constraints(tmp_path):
    cfg = SupernetConfig()
    search = NASSearchConfig(n_trials=6, storage=str(tmp_path / "nas.db"), study_name="fp")
    score = lambda arch: float(sum(arch.depths))  # noqa: E731
    search_architecture(score, cfg, analytic_costs(cfg), ["macs<=600k"], search)
    again = search_architecture(score, cfg, analytic_costs(cfg), ["macs<=600k"], replace(search, n_trials=8))
    assert len(again.trials) == 8
    with pytest.raises(SearchError, match="other settings"):
        search_architecture(score, cfg, analytic_costs(cfg), ["macs<=300k"], replace(search, n_trials=10))
