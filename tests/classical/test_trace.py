"""Tests of tinyqml.classical.trace: torch models -> IR, equal outputs, named errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinyqml.classical.errors import UnsupportedLayerError
from tinyqml.classical.graph import Activation, Add, AvgPool2D, Conv2D, DepthwiseConv2D, Reshape, run_float
from tinyqml.classical.trace import trace


def _randomize_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return net.eval()


class InvertedResidual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU6(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU6(),
            nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.body(x)


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = F.relu(self.conv(x))
        y = F.max_pool2d(y, 2)
        return self.fc(torch.flatten(y.mean((2, 3)), 1))


def _check(net: nn.Module, shape=(4, 1, 8, 8), atol=1e-5):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    g = trace(net, x[:1])
    xin = x.permute(0, 2, 3, 1).numpy() if x.dim() == 4 else x.numpy()
    got = run_float(g, xin)[g.outputs[0]]
    np.testing.assert_allclose(got, net(x).detach().numpy(), atol=atol)
    return g


def test_cnn_with_bn_relu_pool_flatten():
    torch.manual_seed(1)
    net = _randomize_bn(nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                                      nn.Dropout(0.3), nn.Flatten(), nn.Linear(5 * 2 * 2, 10)))
    g = _check(net)
    kinds = [type(n).__name__ for n in g.nodes]
    assert kinds == ["Conv2D", "MaxPool2D", "Conv2D", "Reshape", "FullyConnected"]
    assert g.nodes[0].activation is Activation.RELU and g.shapes[g.outputs[0]] == (1, 10)


def test_mobilenet_style_residuals_and_global_pool():
    torch.manual_seed(2)
    net = _randomize_bn(nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                                      InvertedResidual(8), InvertedResidual(8), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten(), nn.Linear(8, 10)))
    g = _check(net)
    assert sum(isinstance(n, Add) for n in g.nodes) == 2
    assert sum(isinstance(n, DepthwiseConv2D) for n in g.nodes) == 2
    assert any(isinstance(n, AvgPool2D) and n.filter == (4, 4) for n in g.nodes)
    assert all(n.activation is Activation.NONE for n in g.nodes if isinstance(n, Add))


def test_functional_relu_pool_and_mean():
    g = _check(Functional().eval())
    assert isinstance(g.nodes[0], Conv2D) and g.nodes[0].activation is Activation.RELU
    assert isinstance(g.nodes[-2], Reshape)


def test_relu_not_fused_when_the_pre_activation_is_reused():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            y = self.conv(x)
            return F.relu(y) + y

    with pytest.raises(UnsupportedLayerError, match="only it reads"):
        trace(Branch(), torch.zeros(1, 2, 4, 4))


@pytest.mark.parametrize("layer,match", [
    (nn.Conv2d(4, 4, 3, groups=2), "groups=2"),
    (nn.Conv2d(4, 4, 3, dilation=2), "dilation"),
    (nn.Conv2d(4, 4, 3, padding="same"), "padding"),
    (nn.Tanh(), "Tanh"),
    (nn.MaxPool2d(2, padding=1), "without padding"),
])
def test_unsupported_layers_are_named(layer, match):
    net = nn.Sequential(nn.Conv2d(1, 4, 1), layer)
    with pytest.raises(UnsupportedLayerError, match=match):
        trace(net, torch.zeros(1, 1, 8, 8))


def test_batchnorm_without_conv_and_non_module():
    with pytest.raises(UnsupportedLayerError, match="BatchNorm2d"):
        trace(nn.Sequential(nn.BatchNorm2d(1)), torch.zeros(1, 1, 4, 4))
    with pytest.raises(UnsupportedLayerError, match="nn.Module"):
        trace(lambda x: x, torch.zeros(1))  # type: ignore[arg-type]


def test_trace_keeps_training_flag():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
    trace(net, torch.zeros(1, 1, 5, 5))
    assert net.training
