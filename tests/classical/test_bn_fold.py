"""Tests of tinyqml.classical.bn_fold: folded models equal unfolded ones in eval mode."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

from tinyqml.classical.bn_fold import fold_batchnorm, fold_conv_bn, foldable_pairs
from tinyqml.classical.errors import CompressionError, UnsupportedLayerError
from tinyqml.classical.models import MobileNetV2Config, SmallCNN, SmallCNNConfig, TinyMobileNetV2
from tinyqml.classical.pruning import FineGrainedConfig, FineGrainedPruner

X = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _trained_stats(net: nn.Module) -> nn.Module:
    """Running statistics from a few training-mode batches, and non-trivial affine terms."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
        net.train()
        for _ in range(3):
            net(torch.rand(16, 1, 8, 8, generator=g) * 2)
    return net.eval()


@pytest.mark.parametrize("make", [lambda: SmallCNN(seed=0), lambda: TinyMobileNetV2(seed=0),
                                  lambda: TinyMobileNetV2(MobileNetV2Config(last=32), seed=1),
                                  lambda: SmallCNN(SmallCNNConfig(flatten=False), seed=2)])
def test_folded_equals_unfolded_in_eval_mode(make):
    net = _trained_stats(make())
    folded = fold_batchnorm(net)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == 0
    assert len(foldable_pairs(net)) == n_bn and not folded.training
    assert torch.allclose(folded(X), net(X), atol=1e-5)
    assert torch.allclose(torch.fx.symbolic_trace(folded)(X), net(X), atol=1e-5)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == n_bn  # the original keeps its norms


def test_conv_with_bias_and_non_affine_norm():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(1, 3, 3, bias=True), nn.BatchNorm2d(3, affine=False)
    bn.train()(conv(X))
    bn.eval()
    fused = fold_conv_bn(conv, bn)
    assert torch.allclose(fused(X), bn(conv(X)), atol=1e-5)


def test_unfoldable_norms_stay():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.bn2 = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4)

        def forward(self, x):
            h = self.conv(x)
            return self.bn(h) + h, self.bn2(torch.relu(h))  # conv output used twice; norm after a relu

    net = _trained_stats(Net())
    assert foldable_pairs(net) == []
    folded = fold_batchnorm(net)
    assert isinstance(folded.bn, nn.BatchNorm2d) and isinstance(folded.bn2, nn.BatchNorm2d)


def test_a_masked_model_folds_and_stays_masked():
    net = _trained_stats(SmallCNN(SmallCNNConfig(widths=(4, 8, 8)), seed=0))
    FineGrainedPruner(net, FineGrainedConfig(sparsity=0.5)).apply()
    folded = fold_batchnorm(net)
    assert torch.allclose(folded(X), net(X), atol=1e-5)
    conv = folded.features[0]
    assert type(conv) is nn.Conv2d and int((conv.weight == 0).sum()) == int((net.features[0].weight == 0).sum())


def test_bad_input():
    with pytest.raises(UnsupportedLayerError, match="Conv1d/2d"):
        fold_conv_bn(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with pytest.raises(UnsupportedLayerError, match="running statistics"):
        fold_conv_bn(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(CompressionError, match="output channels"):
        fold_conv_bn(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(3))
    with pytest.raises(CompressionError, match="nn.Module"):
        fold_batchnorm("net")

    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(UnsupportedLayerError, match="traced"):
        fold_batchnorm(Branchy())
