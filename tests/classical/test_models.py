"""Tests of tinyqml.classical.models: shapes, seeding, residual structure, fx traceability."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

from tinyqml.classical.errors import CompressionError
from tinyqml.classical.models import BlockSpec, MobileNetV2Config, SmallCNN, SmallCNNConfig, TinyMobileNetV2


@pytest.mark.parametrize("config", [SmallCNNConfig(), SmallCNNConfig(widths=(4, 8, 8), pool_after=0, flatten=False),
                                    SmallCNNConfig(widths=(4, 8, 8), pool_after=2, dropout=0.1)])
def test_small_cnn_shapes_and_layers(config):
    net = SmallCNN(config, seed=0)
    assert tuple(net(torch.zeros(3, 1, 8, 8)).shape) == (3, 10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == list(config.widths)
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 3
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 1
    fc = net.head[-1]
    assert fc.in_features == config.widths[-1] * (16 if config.flatten else 1)


def test_seeded_construction_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b, c = SmallCNN(seed=0), SmallCNN(seed=0), SmallCNN(seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a.features[0].weight, b.features[0].weight)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    m1, m2 = TinyMobileNetV2(seed=3), TinyMobileNetV2(seed=3)
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))


def test_mobilenet_blocks():
    net = TinyMobileNetV2(MobileNetV2Config(last=48), seed=0)
    x = torch.rand(2, 1, 8, 8)
    assert tuple(net(x).shape) == (2, 10)
    assert [b.residual for b in net.blocks] == [True, False, True, False, True]
    dw = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(dw) == 5 and all(m.groups == m.in_channels == m.out_channels for m in dw)
    assert [m.stride for m in dw] == [(1, 1), (2, 2), (1, 1), (2, 2), (1, 1)]
    assert sum(isinstance(m, nn.ReLU6) for m in net.modules()) == 1 + 1 + 4 * 2 + 1  # stem, dw-only, 4 full, last
    # the residual block adds its input: zeroing the block's last BN leaves x
    block = net.blocks[0].eval()
    nn.init.zeros_(block.block[-1].weight)
    nn.init.zeros_(block.block[-1].bias)
    h = torch.rand(2, 16, 8, 8)
    assert torch.equal(block(h), h)


@pytest.mark.parametrize("make", [lambda: SmallCNN(seed=0), lambda: TinyMobileNetV2(seed=0),
                                  lambda: SmallCNN(SmallCNNConfig(flatten=False, dropout=0.2), seed=0)])
def test_fx_traces_without_data_dependent_branches(make):
    net = make().eval()
    gm = torch.fx.symbolic_trace(net)
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(gm(x), net(x))
    adds = [n for n in gm.graph.nodes if n.op == "call_function" and "add" in str(n.target)]
    assert len(adds) == (3 if isinstance(net, TinyMobileNetV2) else 0)


@pytest.mark.parametrize("bad", [lambda: SmallCNNConfig(widths=(8, 8)), lambda: SmallCNNConfig(widths=(8, 0, 8)),
                                 lambda: SmallCNNConfig(pool_after=3), lambda: SmallCNNConfig(dropout=1.0),
                                 lambda: SmallCNNConfig(image_size=7), lambda: BlockSpec(4, 8, stride=3),
                                 lambda: MobileNetV2Config(blocks=()), lambda: MobileNetV2Config(last=-1),
                                 lambda: SmallCNN({"widths": (1, 2, 3)}), lambda: TinyMobileNetV2(SmallCNNConfig())])
def test_bad_configs(bad):
    with pytest.raises(CompressionError):
        bad()
