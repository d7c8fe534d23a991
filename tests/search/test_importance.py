"""Tests of tinyqml.search.importance."""

from __future__ import annotations

import pytest
import torch

from tinyqml.search.errors import PruningError
from tinyqml.search.importance import FunctionImportance, Magnitude, Taylor, group_scores


def test_scores():
    w = torch.tensor([[1.0, -3.0], [0.5, 2.0]])
    g = torch.tensor([[0.1, 0.0], [2.0, 1.0]])
    assert torch.equal(Magnitude()(w, None), w.abs())
    assert torch.equal(Magnitude(p=2)(w, None), w ** 2)
    assert torch.allclose(Taylor()(w, g), (w * g).abs())
    with pytest.raises(PruningError, match="needs gradients"):
        Taylor()(w, None)
    f = FunctionImportance(lambda w, g: -w)
    assert torch.equal(f(w, None), -w)
    with pytest.raises(PruningError, match="returned shape"):
        FunctionImportance(lambda w, g: w.sum())(w, None)


def test_group_scores_are_means_and_skip_unprunable():
    s = torch.tensor([1.0, 3.0, 10.0, 7.0])
    ids, mean = group_scores(s, torch.tensor([4, 4, -1, 2]))
    assert ids.tolist() == [2, 4] and mean.tolist() == [7.0, 2.0]
