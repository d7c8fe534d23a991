"""Tests of tinyqml.classical.costs: MACs, parameters, activation peak, latency estimate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tinyqml.classical.costs import LatencyModel, net_costs, profile_net
from tinyqml.search import Constraint, SearchError, UnknownConstraintError


def _net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 5))


def test_profile_counts_by_hand():
    prof = profile_net(_net(), torch.zeros(1, 3, 8, 8))
    conv1 = 8 * 8 * 8 * (3 * 9)
    dw = 8 * 6 * 6 * 9
    fc = 5 * 288
    assert prof.macs == conv1 + dw + fc
    assert prof.params == (8 * 27 + 8) + (8 * 9 + 8) + (288 * 5 + 5)
    # the largest input + output: conv1 (3*64 in, 8*64 out) or relu (512 + 512)
    assert prof.peak_sram == 1024
    assert profile_net(_net(), torch.zeros(1, 3, 8, 8), bytes_per_element=4).peak_sram == 4096


def test_cost_model_and_constraints():
    costs = net_costs(torch.zeros(1, 3, 8, 8), latency=LatencyModel(macs_per_second=1e6))
    vals = costs.evaluate(_net())
    assert vals["latency"] == pytest.approx(vals["macs"] / 1e3)
    assert costs.feasible(_net(), [Constraint("peak_sram", max=1024), Constraint("params", max=2000)])
    with pytest.raises(UnknownConstraintError, match="did you mean 'peak_sram'"):
        costs.check([Constraint("peak_ram", max=1)])


def test_bad_input():
    with pytest.raises(SearchError, match="nn.Module"):
        profile_net("net", torch.zeros(1))
    with pytest.raises(SearchError, match="macs_per_second"):
        LatencyModel(0)
