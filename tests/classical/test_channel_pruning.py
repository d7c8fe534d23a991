"""Tests of tinyqml.classical.channel_pruning: coupled groups, ranking, physical removal equal to
masking (flatten heads, residual adds, depthwise convs), costs, and the unsupported patterns."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn
from torch.nn.utils import parametrize

from tinyqml.classical.channel_pruning import (
    ChannelPlan,
    ChannelPruneConfig,
    Role,
    Slice,
    apply_plan,
    channel_groups,
    mask_plan,
    plan_channels,
    prune_channels,
    ratio_for_macs,
)
from tinyqml.classical.costs import profile_net
from tinyqml.classical.errors import CompressionError, LayerNotFoundError, UnsupportedLayerError
from tinyqml.classical.models import MobileNetV2Config, SmallCNN, SmallCNNConfig, TinyMobileNetV2
from tinyqml.classical.pruning import FineGrainedConfig, FineGrainedPruner
from tinyqml.search import PruningError

X = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _randomize_norms(net: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine terms far from the defaults (so BN matters in the comparison)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) - 0.5)
    return net


def _cnn(flatten=True, seed=0):
    return _randomize_norms(SmallCNN(SmallCNNConfig(widths=(8, 16, 16), flatten=flatten), seed=seed), seed).eval()


def _mobilenet(seed=0, last=0):
    return _randomize_norms(TinyMobileNetV2(MobileNetV2Config(last=last), seed=seed), seed).eval()


def test_groups_of_a_cnn_with_a_flatten_head():
    groups = channel_groups(_cnn(), X)
    by = {g.name: g for g in groups}
    assert list(by) == ["input", "features.0", "features.3", "features.7", "head.1"]
    assert by["input"].fixed == "model input" and by["head.1"].fixed == "model output"
    g = by["features.7"]
    assert g.channels == 16 and not g.fixed and not g.residual
    assert set(g.slices) == {Slice("features.7", Role.OUT), Slice("features.8", Role.MEMBER),
                             Slice("head.1", Role.IN, 16)}  # after the 4x4 pool + flatten: 16 columns each
    assert Slice("features.3", Role.IN) in by["features.0"].slices


def test_mobilenet_residual_streams_are_single_groups():
    groups = {g.name: g for g in channel_groups(_mobilenet(), X)}
    stream = groups["stem.0"]  # stem output = block 0's input and output (x + block(x))
    assert stream.residual and set(stream.producers) == {"stem.0", "blocks.0.block.3"}
    members = {s.module for s in stream.slices if s.role is Role.MEMBER}
    assert {"stem.1", "blocks.0.block.0", "blocks.0.block.1", "blocks.0.block.4"} <= members  # dw conv inside
    stream2 = groups["blocks.1.block.6"]
    assert set(stream2.producers) == {"blocks.1.block.6", "blocks.2.block.6"}
    assert {s.module for s in stream2.slices if s.role is Role.IN} == {"blocks.2.block.0", "blocks.3.block.0"}
    expand = groups["blocks.1.block.0"]  # expand conv, its BN, the depthwise conv and its BN, project's input
    assert not expand.residual and expand.channels == 64
    assert {(s.module, s.role) for s in expand.slices} == {
        ("blocks.1.block.0", Role.OUT), ("blocks.1.block.1", Role.MEMBER), ("blocks.1.block.3", Role.MEMBER),
        ("blocks.1.block.4", Role.MEMBER), ("blocks.1.block.6", Role.IN)}


@pytest.mark.parametrize("make", [lambda: _cnn(True), lambda: _cnn(False), lambda: _mobilenet(),
                                  lambda: _mobilenet(seed=1, last=40)])
@pytest.mark.parametrize("ratio", [0.3, 0.6])
def test_pruned_model_equals_the_masked_original(make, ratio):
    net = make()
    result = prune_channels(net, X, ChannelPruneConfig(ratio=ratio))
    small, plan = result.model, result.plan
    assert type(small) is type(net) and not any(parametrize.is_parametrized(m) for m in small.modules())
    assert result.after.macs < result.before.macs and result.after.params < result.before.params
    masked = mask_plan(net, plan)
    assert torch.allclose(small(X), masked(X), atol=1e-5)
    assert not torch.allclose(small(X), net(X), atol=1e-3)  # channels really went
    gm = torch.fx.symbolic_trace(small)
    assert torch.allclose(gm(X), small(X))
    # the original is untouched
    assert profile_net(net, X[:1]).macs == result.before.macs


def test_train_mode_agrees_too():
    net = _cnn().train()
    plan = plan_channels(net, X, ChannelPruneConfig(ratio=0.5))
    small, masked = apply_plan(net, plan), mask_plan(net, plan)
    assert small.training and torch.allclose(small(X), masked(X), atol=1e-5)


def test_widths_follow_the_ratio_with_rounding_and_a_floor():
    net = _cnn()
    widths = plan_channels(net, X, ChannelPruneConfig(ratio=0.3)).widths()
    assert widths == {"features.0": (8, 6), "features.3": (16, 11), "features.7": (16, 11)}
    rounded = plan_channels(net, X, ChannelPruneConfig(ratio=0.3, round_to=4)).widths()
    assert rounded == {"features.0": (8, 8), "features.3": (16, 12), "features.7": (16, 12)}
    floor = plan_channels(net, X, ChannelPruneConfig(ratio=0.99)).widths()
    assert all(after == 1 for _, after in floor.values())
    floor3 = plan_channels(net, X, ChannelPruneConfig(ratio=0.99, min_channels=3)).widths()
    assert all(after == 3 for _, after in floor3.values())
    small = apply_plan(net, plan_channels(net, X, ChannelPruneConfig(ratio=0.99)))
    assert tuple(small(X).shape) == (6, 10)


def test_the_weakest_channels_go_first():
    net = _cnn()
    with torch.no_grad():  # channel 5 of features.3: nothing in, nothing out, BN scale 0
        net.features[3].weight[5] = 0
        net.features[4].weight[5] = 0
        net.features[7].weight[:, 5] = 0
        net.features[3].weight[2] *= 0.01
        net.features[4].weight[2] *= 0.01
        net.features[7].weight[:, 2] *= 0.01
    plan = plan_channels(net, X, ChannelPruneConfig(ratio={"features.3": 2 / 16}))
    group = next(g for g in plan.groups if g.name == "features.3")
    assert plan.removed(group) == (2, 5)
    assert plan.widths()["features.0"] == (8, 8)  # groups not in the dict stay whole


def test_per_layer_ratios_on_a_residual_stream():
    net = _mobilenet()
    plan = plan_channels(net, X, ChannelPruneConfig(ratio={"blocks.0.block.3": 0.5, "blocks.1.block.0": 0.25}))
    assert plan.widths()["stem.0"] == (16, 8) and plan.widths()["blocks.1.block.0"] == (64, 48)
    with pytest.raises(PruningError, match="share one channel group"):
        plan_channels(net, X, ChannelPruneConfig(ratio={"stem.0": 0.5, "blocks.0.block.3": 0.25}))
    with pytest.raises(PruningError, match="model output"):
        plan_channels(net, X, ChannelPruneConfig(ratio={"head.2": 0.5}))
    with pytest.raises(LayerNotFoundError, match=r"'blocks\.9'.*stem\.0"):
        plan_channels(net, X, ChannelPruneConfig(ratio={"blocks.9": 0.5}))


def test_residual_streams_can_be_kept_whole():
    net = _mobilenet()
    plan = plan_channels(net, X, ChannelPruneConfig(ratio=0.5, prune_residual=False))
    residual = [g for g in plan.groups if g.residual]
    assert len(residual) == 3 and all(not plan.removed(g) for g in residual)
    assert plan.widths()["blocks.1.block.0"] == (64, 32)
    assert torch.allclose(apply_plan(net, plan)(X), mask_plan(net, plan)(X), atol=1e-5)
    with pytest.raises(PruningError, match="prune_residual"):
        plan_channels(net, X, ChannelPruneConfig(ratio={"stem.0": 0.5}, prune_residual=False))


def test_hidden_linear_units_and_batchnorm1d():
    torch.manual_seed(0)
    mlp = _randomize_norms(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                         nn.Dropout(0.1), nn.Linear(32, 10))).eval()
    result = prune_channels(mlp, X, ChannelPruneConfig(ratio=0.5))
    assert result.model[1].out_features == 16 and result.model[2].num_features == 16
    assert result.model[5].in_features == 16 and result.model[1].in_features == 64
    assert torch.allclose(result.model(X), mask_plan(mlp, result.plan)(X), atol=1e-5)


def test_functional_forward_with_methods():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 3)

        def forward(self, x):
            h = torch.relu(self.a(x))
            h = h.add(torch.nn.functional.relu(self.b(h)))  # a residual through a tensor method
            h = torch.nn.functional.adaptive_avg_pool2d(h, 1)
            return self.fc(torch.flatten(h, 1))

    torch.manual_seed(0)
    net = Net()
    result = prune_channels(net, X, ChannelPruneConfig(ratio=0.5))
    assert result.model.a.out_channels == 4 and result.model.b.in_channels == result.model.b.out_channels == 4
    assert torch.allclose(result.model(X), mask_plan(net, result.plan)(X), atol=1e-5)


def test_a_fine_grained_masked_model_is_baked_first():
    net = _cnn()
    FineGrainedPruner(net, FineGrainedConfig(sparsity=0.5)).apply()
    result = prune_channels(net, X, ChannelPruneConfig(ratio=0.25))
    assert torch.allclose(result.model(X), mask_plan(net, result.plan)(X), atol=1e-5)
    assert parametrize.is_parametrized(net.features[0])  # the input model keeps its masks


def test_macs_before_after_and_ratio_for_macs():
    net = _cnn()
    r = ratio_for_macs(net, X, 0.5, ChannelPruneConfig(round_to=2))
    result = prune_channels(net, X, ChannelPruneConfig(ratio=r, round_to=2))
    assert result.after.macs <= 0.5 * result.before.macs and result.macs_ratio >= 2
    smaller = prune_channels(net, X, ChannelPruneConfig(ratio=max(0.0, r - 0.05), round_to=2))
    assert smaller.after.macs >= result.after.macs
    assert result.before == profile_net(net, X[:1]) and result.after == profile_net(result.model, X[:1])
    with pytest.raises(PruningError, match="macs_fraction"):
        ratio_for_macs(net, X, 1.0)


def test_pruned_model_fine_tunes():
    net = _cnn().train()
    small = prune_channels(net, X, ChannelPruneConfig(ratio=0.5)).model.train()
    opt = torch.optim.SGD(small.parameters(), lr=0.1)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(small(X), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


class _Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.g, self.fc = nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Linear(8 * 16, 2)

    def forward(self, x):
        return self.fc(self.g(self.a(x)).flatten(1))


class _Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.b(self.b(self.a(x)))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else -self.a(x)


class _Raw(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.scale = nn.Conv2d(1, 4, 3), nn.Parameter(torch.ones(1, 4, 1, 1))

    def forward(self, x):
        return self.a(x) * self.scale


class _Broadcast(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return self.a(x) + self.b(x)


@pytest.mark.parametrize("net,match", [
    (_Grouped(), r"grouped conv 'g' \(groups=2"),
    (_Cat(), "concatenation"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.LayerNorm([4, 6, 6]), nn.Flatten(), nn.Linear(144, 2)),
     r"layer '1' \(LayerNorm\)"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Upsample(scale_factor=2)), r"layer '1' \(Upsample\)"),
    (_Twice(), "'b' is called more than once"),
    (_Branchy(), "cannot be traced"),
    (_Raw(), "directly"),
    (_Broadcast(), "broadcasting"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(6, 2)), "linear '1' reads a 4-d tensor"),
])
def test_unsupported_patterns_name_the_layer(net, match):
    with pytest.raises(UnsupportedLayerError, match=match):
        prune_channels(net, X, ChannelPruneConfig(ratio=0.5))


def test_bad_input():
    with pytest.raises(CompressionError, match="nn.Module"):
        channel_groups("net", X)
    with pytest.raises(CompressionError, match="example"):
        channel_groups(_cnn(), [1, 2])
    with pytest.raises(CompressionError, match="does not run through"):
        channel_groups(_cnn(), torch.rand(2, 3, 8, 8))
    with pytest.raises(PruningError, match="ChannelPruneConfig"):
        plan_channels(_cnn(), X, {"ratio": 0.5})
    for kwargs in ({"ratio": 1.0}, {"ratio": {"features.0": -1}}, {"round_to": 0}, {"min_channels": 1.5},
                   {"norm": 0}):
        with pytest.raises(PruningError):
            ChannelPruneConfig(**kwargs)
    plan = plan_channels(_cnn(), X, ChannelPruneConfig(ratio=0.5))
    other = SmallCNN(SmallCNNConfig(widths=(8, 32, 16)), seed=0).eval()
    with pytest.raises(CompressionError, match="another model"):
        apply_plan(other, plan)
    with pytest.raises(CompressionError, match="ChannelPlan"):
        apply_plan(_cnn(), {"features.0": (0, 1)})
    assert isinstance(plan, ChannelPlan)
