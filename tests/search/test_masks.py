"""Tests of tinyqml.search.masks: one parametrization for any parameter."""

from __future__ import annotations

import pytest
import torch

from tinyqml.search.errors import PruningError
from tinyqml.search.masks import attach_mask, get_mask, has_mask, original, squash


def test_mask_zeroes_forward_and_gradient_of_masked_entries():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    m = attach_mask(lin, "weight")
    m.mask[1, 2] = 0
    assert lin.weight[1, 2] == 0
    lin(torch.randn(5, 4)).sum().backward()
    g = original(lin, "weight").grad
    assert g[1, 2] == 0 and g[0, 0] != 0
    assert attach_mask(lin, "weight") is m and has_mask(lin, "weight") and not has_mask(lin, "bias")
    assert m.sparsity == pytest.approx(1 / 12)


def test_squash_bakes_masks_into_plain_parameters():
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(12, 2))
    x = torch.randn(1, 2, 4, 4)
    attach_mask(net[0], "weight").mask[0] = 0
    attach_mask(net[2], "bias").mask[1] = 0
    before = net(x)
    squash(net)
    assert not has_mask(net[0], "weight") and isinstance(net[0].weight, torch.nn.Parameter)
    assert bool((net[0].weight[0] == 0).all()) and net[2].bias[1] == 0
    assert torch.allclose(net(x), before)


def test_missing_parameter_and_mask_are_named():
    lin = torch.nn.Linear(2, 2)
    with pytest.raises(PruningError, match="no parameter 'weights'.*'weight', 'bias'"):
        attach_mask(lin, "weights")
    with pytest.raises(PruningError, match="has no mask"):
        get_mask(lin, "weight")
    with pytest.raises(PruningError, match="nn.Module"):
        attach_mask(torch.zeros(3), "weight")


def test_squash_of_a_deep_copy_keeps_the_original_masked():
    import copy

    lin = torch.nn.Linear(3, 2)
    attach_mask(lin, "weight").mask[0] = 0
    twin = copy.deepcopy(lin)
    squash(twin)
    assert type(twin.weight).__name__ == "Parameter"
    assert has_mask(lin, "weight") and bool((lin.weight[0] == 0).all())
    squash(lin)
    assert bool((lin.weight[0] == 0).all())
