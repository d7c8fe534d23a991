"""The once-for-all search space: configs, architectures, layer lists, analytic costs, encodings."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tinyqml.classical.arch import (
    Arch,
    NASError,
    SupernetConfig,
    arch_space,
    encode,
    encoding_size,
    layers,
    macs,
    params,
    sample_arch,
    to_mobilenet_config,
)
from tinyqml.classical.costs import profile_net
from tinyqml.classical.models import TinyMobileNetV2
from tinyqml.search import SearchSpaceError

CONFIGS = [SupernetConfig(), SupernetConfig(first=0, stem_stride=2, stages=((8, 1), (16, 2)), expands=(1, 3),
                                            kernels=(3, 5), resolutions=(10, 16), depths=(2, 3))]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "custom"])
def test_analytic_costs_match_the_standalone_net(cfg):
    g = torch.Generator().manual_seed(0)
    for arch in [cfg.largest(), cfg.smallest()] + [sample_arch(cfg, g) for _ in range(8)]:
        net = TinyMobileNetV2(to_mobilenet_config(arch, cfg))
        prof = profile_net(net, torch.zeros(1, cfg.in_channels, arch.resolution, arch.resolution))
        assert (prof.macs, prof.params) == (macs(arch, cfg), params(arch, cfg))


def test_layer_list_follows_the_graph():
    cfg = SupernetConfig()
    ls = layers(cfg.smallest(), cfg)
    kinds = [layer.kind for layer in ls]
    # stem, first block (dw + project), three stride-2 blocks (expand, dw, project), mean, fc
    assert kinds == ["conv", "depthwise", "conv"] + ["conv", "depthwise", "conv"] * 3 + ["mean", "fc"]
    assert ls[0].in_shape == (12, 12, 1) and ls[-1].out_shape == (1, 1, 10)
    assert ls[-2].in_shape == (2, 2, 32)  # 12 -> 6 -> 3 -> 2
    big = layers(cfg.largest(), cfg)
    assert sum(layer.kind == "add" for layer in big) == 6  # two stride-1 blocks per stage


def test_space_round_trip_and_sizes():
    cfg = SupernetConfig()
    space = arch_space(cfg)
    assert space.size() == 4 * 3 ** 3 * 9 ** 9
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        arch = sample_arch(cfg, g)
        assert Arch.from_params(arch.params(), cfg) == arch and space.contains(arch.params())


def test_canonical_and_encoding_ignore_inactive_blocks():
    cfg = SupernetConfig()
    a = cfg.smallest()
    b = replace(a, kernels=(3, 7, 7) * 3, expands=(2, 4, 3) * 3)  # differs only at inactive positions
    assert a != b and a.canonical(cfg) == b.canonical(cfg)
    assert encode(a, cfg) == encode(b, cfg)
    c = replace(a, kernels=(5,) + a.kernels[1:])
    assert encode(c, cfg) != encode(a, cfg)
    assert len(encode(c, cfg)) == encoding_size(cfg) == 4 + 3 * 3 + 9 * 6
    assert sum(encode(a, cfg)) == 1 + 3 + 3 * 2  # one-hot: resolution, 3 depths, 3 active blocks x 2


def test_sampling_is_reproducible_and_leaves_the_global_rng():
    cfg = SupernetConfig()
    state = torch.random.get_rng_state()
    a = [sample_arch(cfg, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert a[0] == a[1]
    assert torch.equal(state, torch.random.get_rng_state())
    with pytest.raises(NASError, match="torch.Generator"):
        sample_arch(cfg, 3)


@pytest.mark.parametrize("make, match", [
    (lambda: SupernetConfig(kernels=(3, 4)), "odd"),
    (lambda: SupernetConfig(depths=()), "non-empty"),
    (lambda: SupernetConfig(stages=((8, 3),)), "stride 1 or 2"),
    (lambda: SupernetConfig(expands=(2, 2)), "repeated"),
    (lambda: SupernetConfig(stem_stride=3), "stem_stride"),
    (lambda: SupernetConfig(first=-1), "first"),
    (lambda: Arch(0, (1,), (3,), (2,)), "resolution"),
    (lambda: Arch(12, 3, (3,), (2,)), "depths must be a tuple"),
])
def test_bad_configs_are_named(make, match):
    with pytest.raises(NASError, match=match):
        make()


def test_foreign_architectures_are_refused():
    cfg = SupernetConfig()
    good = cfg.smallest()
    for bad, match in [(replace(good, resolution=13), "resolution 13"), (replace(good, depths=(1, 1)), "3 entries"),
                       (replace(good, kernels=(9,) * 9), "9"), (replace(good, expands=(6,) * 9), "6")]:
        with pytest.raises(NASError, match=match):
            macs(bad, cfg)
    with pytest.raises(NASError, match="unknown"):
        Arch.from_params({**good.params(), "width": 3}, cfg)
    with pytest.raises(NASError):
        Arch.from_params({**good.params(), "kernel[0]": 4}, cfg)
    assert not issubclass(NASError, SearchSpaceError)
