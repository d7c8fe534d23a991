"""Tests of tinyqml.search.granularity."""

from __future__ import annotations

import pytest
import torch

from tinyqml.search.errors import PruningError
from tinyqml.search.granularity import Block, Channel, Element, Groups


def test_element_ids_are_unique():
    g = Element().groups(torch.zeros(3, 4))
    assert g.shape == (3, 4) and len(g.unique()) == 12


def test_channel_of_a_conv_weight():
    w = torch.zeros(5, 2, 3, 3)
    g = Channel().groups(w)
    assert all(bool((g[o] == o).all()) for o in range(5))
    g1 = Channel(dim=1).groups(w)
    assert bool((g1[:, 1] == 1).all()) and len(g1.unique()) == 2


def test_block_tiles_with_ragged_edges():
    g = Block((2, 2)).groups(torch.zeros(3, 5))
    assert g.tolist() == [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]]
    g4 = Block((2,)).groups(torch.zeros(4, 3, 2))
    assert bool((g4[:2] == 0).all()) and bool((g4[2:] == 1).all())


@pytest.mark.parametrize("gran, shape", [
    (Channel(dim=3), (2, 2)), (Block((2, 2, 2)), (4, 4)), (Block((0,)), (4,)), (Groups(torch.zeros(3)), (4,)),
])
def test_bad_granularity(gran, shape):
    with pytest.raises(PruningError):
        gran.groups(torch.zeros(shape))
