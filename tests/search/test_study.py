"""Tests of tinyqml.search.study: run_search with constraints, storage, resuming."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from tinyqml.search.constraints import Constraint, CostModel
from tinyqml.search.errors import SearchError, UnknownConstraintError
from tinyqml.search.evolution import VIOLATIONS_ATTR
from tinyqml.search.space import Choice, IntRange, SearchSpace
from tinyqml.search.study import SearchConfig, run_search, storage_url

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = SearchSpace.of(IntRange("layers", 1, 8), IntRange("width", 1, 6), Choice(("ring", "line"), name="ent"))
COSTS = CostModel({"params": lambda c: c["layers"] * c["width"], "depth": lambda c: c["layers"] * 2})


def score(cfg, trial):
    return cfg["layers"] * cfg["width"] + (cfg["ent"] == "ring")


def test_constraints_bound_every_trial_and_are_recorded(tmp_path):
    cfg = SearchConfig(n_trials=25, storage=str(tmp_path / "s.db"), seed=0, progress=False)
    study = run_search(score, SPACE, cfg, costs=COSTS, constraints=[Constraint("params", max=12)])
    assert len(study.trials) == 25
    for t in study.trials:
        assert t.params["layers"] * t.params["width"] <= 12
        assert t.user_attrs[VIOLATIONS_ATTR][0] <= 0
        assert t.user_attrs["costs"]["depth"] == 2 * t.params["layers"]
    assert study.best_value == 13


def test_resume_continues_the_same_study(tmp_path):
    path = tmp_path / "resume.db"
    run_search(score, SPACE, SearchConfig(n_trials=6, storage=str(path), seed=1, progress=False))
    study = run_search(score, SPACE, SearchConfig(n_trials=10, storage=f"sqlite:///{path}", seed=1, progress=False))
    assert len(study.trials) == 10
    again = run_search(score, SPACE, SearchConfig(n_trials=10, storage=str(path), progress=False))
    assert len(again.trials) == 10  # nothing left to do


def test_multi_objective_and_in_memory():
    cfg = SearchConfig(n_trials=15, directions=("maximize", "minimize"), storage=":memory:", seed=0, progress=False)
    study = run_search(lambda c, t: (score(c, t), c["layers"]), SPACE, cfg)
    assert len(study.best_trials) >= 1 and len(study.directions) == 2


def test_misspelled_constraint_stops_before_any_trial(tmp_path):
    cfg = SearchConfig(n_trials=3, storage=str(tmp_path / "x.db"), progress=False)
    with pytest.raises(UnknownConstraintError, match="did you mean 'params'"):
        run_search(score, SPACE, cfg, costs=COSTS, constraints=[Constraint("param", max=3)])
    assert not (tmp_path / "x.db").exists()


def test_constraints_without_costs_and_bad_results():
    with pytest.raises(SearchError, match="need a CostModel"):
        run_search(score, SPACE, SearchConfig(n_trials=1, storage=":memory:"), constraints=[Constraint("a", max=1)])
    with pytest.raises(SearchError, match="returned 2 value"):
        run_search(lambda c, t: (1, 2), SPACE, SearchConfig(n_trials=1, storage=":memory:", progress=False))
    with pytest.raises(SearchError, match="not a number"):
        run_search(lambda c, t: "good", SPACE, SearchConfig(n_trials=1, storage=":memory:", progress=False))


@pytest.mark.parametrize("kw, fragment", [
    ({"n_trials": 0}, "n_trials"), ({"n_trials": 2, "directions": ("up",)}, "directions"),
])
def test_bad_config(kw, fragment):
    with pytest.raises(SearchError, match=fragment):
        SearchConfig(**kw)


def test_storage_urls(tmp_path):
    assert storage_url(":memory:") is None
    assert storage_url(str(tmp_path / "a" / "b.db")) == f"sqlite:///{tmp_path / 'a' / 'b.db'}"
    assert (tmp_path / "a").is_dir()
    assert storage_url("postgresql://u@localhost/db") == "postgresql://u@localhost/db"
    with pytest.raises(SearchError, match="storage must be"):
        storage_url("")


def test_a_stored_study_refuses_other_settings(tmp_path):
    from tinyqml.search.examples import quadratic_score, quadratic_space

    storage = str(tmp_path / "fp.db")
    base = SearchConfig(n_trials=3, storage=storage, study_name="fp", seed=0, progress=False, fingerprint="aaa")
    run_search(lambda c, t: quadratic_score(c), quadratic_space(), base)
    more = run_search(lambda c, t: quadratic_score(c), quadratic_space(), dataclasses.replace(base, n_trials=5))
    assert len(more.trials) == 5 and more.user_attrs["tinyqml_fingerprint"] == "aaa"
    with pytest.raises(SearchError, match="other settings"):
        run_search(lambda c, t: quadratic_score(c), quadratic_space(),
                   dataclasses.replace(base, n_trials=8, fingerprint="bbb"))
