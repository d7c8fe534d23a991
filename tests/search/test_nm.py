"""Tests of tinyqml.search.nm: N:M keep-masks, the pattern check, the gradual N:M pruner."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tinyqml.search import AGP, Groups, NMPattern, NMPruner, PruningError, Target, nm_mask, satisfies_nm
from tinyqml.search.masks import original


def _groups_of_4(w: torch.Tensor) -> torch.Tensor:
    """Every group of 4 input entries, one row each (conv: along in for each out, kh, kw)."""
    moved = w.movedim(1, -1)
    return moved.reshape(-1, 4)


def test_mask_keeps_the_n_largest_in_every_group():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 12, generator=g)
    keep = nm_mask(scores, NMPattern(2, 4))
    assert keep.dtype == torch.bool and keep.shape == scores.shape
    for row_s, row_k in zip(scores.reshape(-1, 4), keep.reshape(-1, 4)):
        assert int(row_k.sum()) == 2
        assert float(row_s[row_k].min()) >= float(row_s[~row_k].max())
    ties = nm_mask(torch.ones(1, 8), NMPattern(1, 4))
    assert ties.int().tolist() == [[1, 0, 0, 0, 1, 0, 0, 0]]  # ties: the first of each group


def test_conv_weights_are_grouped_along_input_channels():
    conv = nn.Conv2d(8, 3, 3)
    keep = nm_mask(conv.weight.abs(), NMPattern(2, 4))
    assert bool((_groups_of_4(keep).sum(1) == 2).all())
    assert satisfies_nm(conv.weight * keep)
    assert not satisfies_nm(conv.weight)


def test_pruner_reaches_2_to_4_in_every_group_and_keeps_the_largest():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Conv2d(4, 4, 1))  # conv only to hold a 4-d weight
    w = net[0].weight.detach().clone()
    p = NMPruner([Target(net[0]), Target(net[2])], NMPattern(2, 4))
    p.prune_to(0.5)
    for t in (net[0].weight, net[2].weight):
        assert satisfies_nm(t) and bool((_groups_of_4(t).ne(0).sum(1) == 2).all())
    assert p.sparsity() == 0.5
    kept = net[0].weight != 0
    assert torch.equal(kept, nm_mask(w.abs(), NMPattern(2, 4)))


def test_gradual_nm_is_monotone_and_ends_on_the_pattern():
    torch.manual_seed(1)
    lin = nn.Linear(16, 8)
    sched = AGP(final=0.5, start=0, end=10, frequency=2)
    p = NMPruner([Target(lin)], NMPattern(2, 4), schedule=sched)
    before = torch.ones_like(lin.weight, dtype=torch.bool)
    for step in range(12):
        s = p.step(step)
        alive = lin.weight != 0
        assert not bool((alive & ~before).any())  # nothing revived
        assert int((~alive).sum()) == round(s * lin.weight.numel())
        before = alive
    assert satisfies_nm(lin.weight) and p.sparsity() == 0.5


def test_masks_survive_an_optimizer():
    lin = nn.Linear(8, 4)
    p = NMPruner([Target(lin)], NMPattern(1, 4))
    p.prune_to(0.75)
    opt = torch.optim.Adam(lin.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        lin(torch.rand(3, 8)).pow(2).sum().backward()
        opt.step()
        p.reapply()
    assert satisfies_nm(lin.weight, NMPattern(1, 4))
    assert bool((original(lin, "weight")[lin.weight == 0] == 0).all())


def test_fixed_entries_are_never_pruned():
    lin = nn.Linear(4, 2)
    ids = torch.tensor([[-1, 0, 1, 2], [3, 4, 5, 6]])
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]]))
    p = NMPruner([Target(lin, granularity=Groups(ids))], NMPattern(2, 4))
    p.prune_to(0.5)
    # row 0: the fixed entry stays (though it is the smallest), the largest other one too
    assert p.targets[0].mask.mask.tolist() == [[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]]


def test_bad_input():
    with pytest.raises(PruningError, match="1 <= n < m"):
        NMPattern(4, 4)
    with pytest.raises(PruningError, match="1 <= n < m"):
        NMPattern(2.0, 4)
    with pytest.raises(PruningError, match="not a multiple of 4"):
        NMPruner([Target(nn.Conv2d(3, 4, 3))], NMPattern(2, 4))
    with pytest.raises(PruningError, match="not a multiple"):
        nm_mask(torch.rand(2, 6))
    with pytest.raises(PruningError, match="at most 0.5"):
        NMPruner([Target(nn.Linear(8, 2))]).prune_to(0.6)
    with pytest.raises(PruningError, match="NMPattern"):
        NMPruner([Target(nn.Linear(8, 2))], (2, 4))
    with pytest.raises(PruningError, match="dim"):
        nm_mask(torch.rand(4), NMPattern(2, 4, dim=1))
    with pytest.raises(PruningError, match="sparsity"):
        NMPruner([Target(nn.Linear(8, 2))]).prune_to(-0.1)
