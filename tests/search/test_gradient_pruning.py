"""Tests of tinyqml.search.gradient_pruning: QOC's accumulation / pruning windows on the engine."""

from __future__ import annotations

import pytest
import torch

from tinyqml.search.errors import PruningError
from tinyqml.search.gradient_pruning import GradientPruner, GradientPruningConfig
from tinyqml.search.granularity import Groups
from tinyqml.search.importance import Taylor


def _cfg(**kw):
    base = dict(ratio=0.5, accumulation_window=1, pruning_window=2, probabilistic=False, seed=0)
    base.update(kw)
    return GradientPruningConfig(**base)


def test_windows_alternate_and_the_accumulator_restarts_each_stage():
    gp = GradientPruner(torch.zeros(6), _cfg(accumulation_window=2, pruning_window=3))
    phases = [gp.in_accumulation(t) for t in range(10)]
    assert phases == [True, True, False, False, False, True, True, False, False, False]
    gp.observe(0, torch.tensor([1.0, 0, 0, 0, 0, 0]))
    gp.observe(1, torch.tensor([0, -2.0, 0, 0, 0, 3.0]))
    assert gp.scores.tolist() == [1.0, 2.0, 0, 0, 0, 3.0]
    m = gp.mask(2)
    assert m.tolist() == [True, True, False, False, False, True]
    gp.observe(2, torch.full((6,), 100.0))  # pruning step: not accumulated
    assert gp.scores.tolist() == [1.0, 2.0, 0, 0, 0, 3.0]
    assert gp.mask(5).all()  # the next stage starts with an accumulation step ...
    assert gp.scores.sum() == 0  # ... and a fresh accumulator


def test_top_k_keeps_the_largest_accumulated_magnitudes():
    gp = GradientPruner(torch.zeros(5), _cfg(ratio=0.6))
    assert gp.n_keep == 2
    gp.observe(0, torch.tensor([0.5, -4.0, 0.1, 3.0, -0.2]))
    for t in (1, 2):
        assert gp.mask(t).tolist() == [False, True, False, True, False]


def test_probabilistic_draws_follow_the_scores_and_are_seeded():
    def draws(seed):
        gp = GradientPruner(torch.zeros(4), _cfg(ratio=0.75, probabilistic=True, seed=seed,
                                                 accumulation_window=1, pruning_window=1))
        out = []
        for stage in range(300):
            gp.observe(2 * stage, torch.tensor([1.0, 0.0, 3.0, 6.0]))
            out.append(int(torch.nonzero(gp.mask(2 * stage + 1)).item()))
        return out

    a, b, c = draws(0), draws(0), draws(1)
    assert a == b and a != c
    freq = torch.bincount(torch.tensor(a), minlength=4).double() / len(a)
    assert freq[1] == 0  # a zero score is never drawn while enough groups have a score
    assert freq.tolist() == pytest.approx([0.1, 0.0, 0.3, 0.6], abs=0.08)


def test_each_pruning_step_draws_anew_but_a_step_is_drawn_once():
    gp = GradientPruner(torch.zeros(8), _cfg(probabilistic=True, pruning_window=20))
    gp.observe(0, torch.ones(8))
    masks = [gp.mask(t) for t in range(1, 21)]
    assert all(int(m.sum()) == 4 for m in masks)
    assert len({tuple(m.tolist()) for m in masks}) > 1
    assert torch.equal(gp.mask(20), masks[-1])


def test_too_few_scored_groups_are_filled_uniformly():
    gp = GradientPruner(torch.zeros(6), _cfg(ratio=0.5, probabilistic=True))
    gp.observe(0, torch.tensor([0.0, 2.0, 0.0, 0.0, 0.0, 0.0]))
    m = gp.mask(1)
    assert m[1] and int(m.sum()) == 3
    gp2 = GradientPruner(torch.zeros(4), _cfg(probabilistic=True))
    gp2.observe(0, torch.zeros(4))  # no information at all: uniform
    assert int(gp2.mask(1).sum()) == 2


def test_groups_are_kept_or_skipped_whole_and_minus_one_is_always_evaluated():
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, -1])
    gp = GradientPruner(torch.zeros(10), _cfg(ratio=0.5), granularity=Groups(ids))
    assert gp.n_groups == 3 and gp.n_keep == 1
    gp.observe(0, torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 2.0, 0.5, 0.5, 0.5, 0.0]))
    assert gp.mask(1).tolist() == [False] * 3 + [True] * 3 + [False] * 3 + [True]


def test_two_dimensional_parameters_and_apply():
    gp = GradientPruner(torch.zeros(2, 3), _cfg(ratio=0.5))
    g = torch.tensor([[1.0, -5.0, 0.1], [0.2, 4.0, 3.0]])
    gp.observe(0, g)
    out = gp.apply(1, g.clone())
    assert out.tolist() == [[0.0, -5.0, 0.0], [0.0, 4.0, 3.0]]


def test_taylor_importance_needs_the_weight():
    gp = GradientPruner(torch.zeros(3), _cfg(ratio=0.5), importance=Taylor())
    with pytest.raises(PruningError, match="needs the weight"):
        gp.observe(0, torch.ones(3))
    gp.observe(0, torch.tensor([1.0, 1.0, 1.0]), weight=torch.tensor([0.1, 3.0, 0.2]))
    assert gp.scores.tolist() == pytest.approx([0.1, 3.0, 0.2])


def test_fractions_and_degenerate_settings():
    cfg = _cfg(ratio=0.5, accumulation_window=1, pruning_window=2)
    assert cfg.stage_length == 3 and cfg.expected_fraction() == pytest.approx(2 / 3)
    gp = GradientPruner(torch.zeros(4), cfg)
    assert gp.evaluated_fraction(6) == pytest.approx(2 / 3)
    never = GradientPruner(torch.zeros(4), _cfg(ratio=0.0))
    never.observe(0, torch.ones(4))
    assert never.mask(1).all()
    always_full = GradientPruner(torch.zeros(4), _cfg(pruning_window=0))
    assert all(always_full.in_accumulation(t) for t in range(5))
    tiny = GradientPruner(torch.zeros(3), _cfg(ratio=0.99))
    assert tiny.n_keep == 1  # one group is always evaluated


@pytest.mark.parametrize("kw", [dict(ratio=1.0), dict(ratio=-0.1), dict(accumulation_window=-1),
                                dict(pruning_window=1.5), dict(accumulation_window=0), dict(seed="a")])
def test_bad_configs_raise(kw):
    with pytest.raises(PruningError):
        _cfg(**kw)


def test_bad_inputs_raise():
    gp = GradientPruner(torch.zeros(3), _cfg())
    with pytest.raises(PruningError, match="shape"):
        gp.observe(0, torch.zeros(4))
    with pytest.raises(PruningError, match="step"):
        gp.mask(-1)
    with pytest.raises(PruningError):
        GradientPruner([0.0, 1.0], _cfg())  # type: ignore[arg-type]
    with pytest.raises(PruningError):
        GradientPruner(torch.zeros(3), "x")  # type: ignore[arg-type]
