"""Tests of tinyqml.search.space."""

from __future__ import annotations

import random

import optuna
import pytest

from tinyqml.search.errors import SearchSpaceError
from tinyqml.search.space import Choice, IntRange, SearchSpace, per_block

SPACE = SearchSpace.of(IntRange("depth", 1, 7, step=2), *per_block("gate", 3, Choice(("u3", "cu3", "rzz"))),
                       Choice((3, 5, 7), name="kernel"))


def test_names_size_and_lookup():
    assert SPACE.names == ("depth", "gate[0]", "gate[1]", "gate[2]", "kernel")
    assert SPACE.size() == 4 * 27 * 3
    assert SPACE["depth"].values == (1, 3, 5, 7)
    with pytest.raises(SearchSpaceError, match="no dimension 'width'"):
        SPACE["width"]


def test_sample_mutate_crossover_stay_in_space():
    rng = random.Random(1)
    seen = set()
    for _ in range(200):
        a, b = SPACE.sample(rng), SPACE.sample(rng)
        for cfg in (a, SPACE.mutate(a, 0.5, rng), SPACE.crossover(a, b, rng)):
            assert SPACE.contains(cfg)
            seen.add(SPACE.encode(cfg))
    assert len(seen) > 100


def test_mutation_probability_one_changes_every_entry_and_zero_none():
    rng = random.Random(0)
    a = SPACE.sample(rng)
    m = SPACE.mutate(a, 1.0, rng)
    assert all(m[n] != a[n] for n in SPACE.names)
    assert SPACE.mutate(a, 0.0, rng) == a


def test_crossover_takes_entries_from_parents():
    rng = random.Random(3)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    c = SPACE.crossover(a, b, rng)
    assert all(c[n] in (a[n], b[n]) for n in SPACE.names)


def test_suggest_on_an_optuna_trial():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    trial = study.ask()
    cfg = SPACE.suggest(trial)
    assert SPACE.contains(cfg) and trial.params == cfg


def test_check_names_the_bad_entry():
    rng = random.Random(0)
    cfg = SPACE.sample(rng)
    assert SPACE.check(cfg) == cfg
    with pytest.raises(SearchSpaceError, match="depth=2 is not in the space"):
        SPACE.check({**cfg, "depth": 2})
    with pytest.raises(SearchSpaceError, match="missing \\['kernel'\\]"):
        SPACE.check({k: v for k, v in cfg.items() if k != "kernel"})


@pytest.mark.parametrize("make, fragment", [
    (lambda: IntRange("a", 3, 1), "low <= high"),
    (lambda: IntRange("a", 0, 3, step=0), "step >= 1"),
    (lambda: IntRange("a", 0.5, 3), "must be an integer"),
    (lambda: Choice(()), "at least one option"),
    (lambda: Choice((1, 1), name="c"), "repeated options"),
    (lambda: Choice(([1],), name="c"), "options must be"),
    (lambda: SearchSpace.of(IntRange("a", 0, 1), IntRange("a", 0, 2)), "repeated dimension names"),
    (lambda: SearchSpace.of(), "at least one dimension"),
    (lambda: per_block("g", 0, Choice((1, 2))), "positive integer"),
    (lambda: SearchSpace.of(Choice((1, 2))), "non-empty string name"),
])
def test_bad_spaces(make, fragment):
    with pytest.raises(SearchSpaceError, match=fragment):
        make()
