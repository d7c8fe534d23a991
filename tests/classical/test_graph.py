"""Tests of tinyqml.classical.graph: IR validation and the float reference semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinyqml.classical.errors import CompressionError
from tinyqml.classical.graph import (
    Activation,
    Add,
    AvgPool2D,
    Conv2D,
    DepthwiseConv2D,
    FullyConnected,
    Graph,
    MaxPool2D,
    Reshape,
    run_float,
)

rng = np.random.default_rng(0)


def test_conv_padding_is_explicit_and_asymmetric():
    w = rng.normal(size=(3, 3, 3, 2))
    b = rng.normal(size=3)
    node = Conv2D("x", "y", w, b, stride=(2, 2), padding=(0, 1, 1, 0), activation=Activation.RELU)
    g = Graph(("x",), ("y",), {"x": (1, 6, 6, 2), "y": (1, 3, 3, 3)}, (node,))
    x = rng.normal(size=(2, 6, 6, 2))
    got = run_float(g, x)["y"]
    xt = F.pad(torch.from_numpy(x).permute(0, 3, 1, 2), (1, 0, 0, 1))
    ref = F.conv2d(xt, torch.from_numpy(w).permute(0, 3, 1, 2), torch.from_numpy(b), stride=2).relu()
    np.testing.assert_allclose(got, ref.permute(0, 2, 3, 1).numpy(), atol=1e-12)


def test_depthwise_pools_add_reshape():
    wd = rng.normal(size=(1, 3, 3, 4))
    nodes = (DepthwiseConv2D("x", "d", wd, np.zeros(4), padding=(1, 1, 1, 1), activation=Activation.RELU6),
             Add("d", "x", "s"), MaxPool2D("s", "m", (2, 2), (2, 2)), AvgPool2D("m", "a", (2, 2), (2, 2)),
             Reshape("a", "r", (1, 4)), FullyConnected("r", "y", rng.normal(size=(2, 4)), np.zeros(2)))
    shapes = {"x": (1, 4, 4, 4), "d": (1, 4, 4, 4), "s": (1, 4, 4, 4), "m": (1, 2, 2, 4), "a": (1, 1, 1, 4),
              "r": (1, 4), "y": (1, 2)}
    g = Graph(("x",), ("y",), shapes, nodes)
    x = rng.normal(size=(3, 4, 4, 4)) * 5
    env = run_float(g, x)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    d = F.conv2d(xt, torch.from_numpy(wd).permute(3, 0, 1, 2), padding=1, groups=4).clamp(0, 6)
    a = F.avg_pool2d(F.max_pool2d(d + xt, 2), 2).flatten(1)
    np.testing.assert_allclose(env["y"], (a @ torch.from_numpy(nodes[-1].weight).T).numpy(), atol=1e-12)
    assert env["d"].max() <= 6 and env["d"].min() >= 0
    assert g.producer("s") is nodes[1] and g.consumers("x") == [nodes[0], nodes[1]] and g.producer("x") is None


def test_validation_errors():
    fc = FullyConnected("x", "y", np.ones((1, 2)), np.zeros(1))
    with pytest.raises(CompressionError, match="before they are computed"):
        Graph(("z",), ("y",), {"z": (1, 2), "y": (1, 1)}, (fc,))
    with pytest.raises(CompressionError, match="no shape"):
        Graph(("x",), ("y",), {"x": (1, 2)}, (fc,))
    with pytest.raises(CompressionError, match="never computed"):
        Graph(("x",), ("q",), {"x": (1, 2), "y": (1, 1), "q": (1, 1)}, (fc,))
    g = Graph(("x",), ("y",), {"x": (1, 2), "y": (1, 1)}, (fc,))
    with pytest.raises(CompressionError, match="shape"):
        run_float(g, np.zeros((1, 3)))
    with pytest.raises(CompressionError, match="takes 1 inputs"):
        run_float(g)
