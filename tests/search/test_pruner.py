"""Tests of tinyqml.search.pruner: local/global scope, granularities, schedules, sensitivity."""

from __future__ import annotations

import pytest
import torch

from tinyqml.search.errors import PruningError
from tinyqml.search.granularity import Channel, Groups
from tinyqml.search.importance import Taylor
from tinyqml.search.masks import original
from tinyqml.search.pruner import Pruner, Target, sensitivity_scan
from tinyqml.search.schedules import AGP, OneShot


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 3))


def test_local_magnitude_pruning_removes_the_smallest():
    net = _net()
    w = net[0].weight.detach().clone()
    Pruner([Target(net[0])]).prune_to(0.25)
    zero = net[0].weight == 0
    assert int(zero.sum()) == 15
    assert float(w.abs()[zero].max()) <= float(w.abs()[~zero].min())


def test_global_scope_ranks_across_targets():
    net = _net()
    with torch.no_grad():
        net[2].weight.mul_(100)  # the second layer is far more important
    p = Pruner([Target(net[0]), Target(net[2])], scope="global")
    p.prune_to(0.5)
    assert p.sparsity() == pytest.approx(45 / 90)
    assert int((net[2].weight == 0).sum()) == 0 and int((net[0].weight == 0).sum()) == 45


def test_channel_granularity_masks_whole_rows():
    net = _net()
    Pruner([Target(net[0], granularity=Channel())]).prune_to(0.3)
    rows = (net[0].weight == 0).all(1)
    assert int(rows.sum()) == 3 and int((net[0].weight == 0).sum()) == 18


def test_groups_granularity_with_unprunable_entries():
    layer = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 0.2, 5.0, 0.01]]))
    ids = torch.tensor([[0, 0, 1, -1]])
    p = Pruner([Target(layer, granularity=Groups(ids))])
    p.prune_to(0.67)
    assert layer.weight.tolist()[0][:3] == [0.0, 0.0, 5.0] and layer.weight[0, 3] != 0  # -1 kept
    assert p.sparsity() == pytest.approx(2 / 3)


def test_schedule_drives_sparsity_and_masks_stay_monotone():
    net = _net()
    p = Pruner([Target(net[0]), Target(net[2])], schedule=AGP(final=0.8, start=0, end=10))
    masks_before = None
    for t in range(12):
        s = p.step(t)
        assert p.sparsity() == pytest.approx(s, abs=0.02)
        now = [tg.mask.mask.clone() for tg in p.targets]
        if masks_before is not None:
            assert all(bool((b >= a).all()) for a, b in zip(now, masks_before))
        masks_before = now


def test_taylor_importance_uses_gradients_and_reapply_zeroes_originals():
    net = _net()
    p = Pruner([Target(net[0])], importance=Taylor(), schedule=OneShot(0.5))
    with pytest.raises(PruningError, match="needs gradients"):
        p.step(0)
    net(torch.randn(8, 6)).pow(2).sum().backward()
    p.step(0)
    p.reapply()
    assert bool((original(net[0], "weight")[net[0].weight == 0] == 0).all())


def test_sensitivity_scan_restores_masks():
    net = _net()
    x = torch.randn(16, 6)
    ref = net(x).detach()
    targets = [Target(net[0], label="fc1"), Target(net[2], label="fc2")]

    def err():
        return float((net(x) - ref).abs().mean().detach())

    table = sensitivity_scan(targets, err, [0.0, 0.5, 0.9])
    assert set(table) == {"fc1", "fc2"}
    for rows in table.values():
        assert rows[0][1] == 0 and rows[2][1] > rows[1][1] > 0
    assert err() == 0


def test_bad_pruner_input():
    net = _net()
    with pytest.raises(PruningError, match="one or more Target"):
        Pruner([])
    with pytest.raises(PruningError, match="scope"):
        Pruner([Target(net[0])], scope="everywhere")
    with pytest.raises(PruningError, match=r"\[0, 1\)"):
        Pruner([Target(net[0])]).prune_to(1.2)
    with pytest.raises(PruningError, match="no schedule"):
        Pruner([Target(net[0])]).step(0)
    with pytest.raises(PruningError, match="granularity must be"):
        Target(net[0], granularity="channel")
