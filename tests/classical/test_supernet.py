"""The once-for-all supernet: elastic depth, width, kernel and resolution; extraction is exact."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tinyqml.classical.arch import NASError, SupernetConfig, sample_arch
from tinyqml.classical.supernet import (
    ElasticBatchNorm,
    ElasticDepthwise,
    OFAMobileNetV2,
    recalibrate_batchnorm,
    resize,
)
from tinyqml.classical.trace import trace

SMALL = SupernetConfig(stem=8, first=4, stages=((8, 2), (12, 2)), depths=(1, 2), resolutions=(8, 12))


def _warm(net: OFAMobileNetV2, n: int = 3) -> None:
    """A few train-mode passes so the BatchNorm statistics are not the initial ones."""
    g = torch.Generator().manual_seed(9)
    net.train()
    with torch.no_grad():
        for _ in range(n):
            a = sample_arch(net.config, g)
            net(torch.rand(6, 1, a.resolution, a.resolution, generator=g), a)
    net.eval()


@pytest.mark.parametrize("cfg", [SupernetConfig(), SMALL,
                                 replace(SMALL, first=0, stem_stride=2, expands=(1, 2), kernels=(3, 5, 7))],
                         ids=["default", "small", "stride2-expand1"])
def test_extracted_subnet_computes_the_supernet(cfg):
    net = OFAMobileNetV2(cfg, seed=1)
    _warm(net)
    g = torch.Generator().manual_seed(0)
    for arch in [cfg.largest(), cfg.smallest()] + [sample_arch(cfg, g) for _ in range(6)]:
        x = torch.rand(3, 1, arch.resolution, arch.resolution, generator=g)
        sub = net.extract(arch).eval()
        torch.testing.assert_close(net(x, arch), sub(x), atol=1e-5, rtol=1e-5)
        torch.fx.symbolic_trace(sub)  # a plain traceable module
        trace(sub, x[:1])  # and one the int8 tools accept


def test_weights_are_shared_and_elastic():
    net = OFAMobileNetV2(SMALL, seed=0)
    small = net.extract(SMALL.smallest())
    big = net.extract(SMALL.largest())
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in big.parameters())
    # the smallest's first stage block uses the first c_in * 2 hidden channels of the shared expansion
    shared = net.stages[0][0].expand.weight
    torch.testing.assert_close(small.blocks[1].block[0].weight, shared[:4 * 2])
    # a gradient through the smallest reaches the shared weights
    x = torch.rand(2, 1, 8, 8)
    net(x, SMALL.smallest()).sum().backward()
    assert shared.grad is not None and shared.grad[:8].abs().sum() > 0 and shared.grad[8:].abs().sum() == 0


def test_kernel_transformation_starts_as_centre_crop_and_learns():
    dw = ElasticDepthwise(4, (3, 5, 7), stride=1)
    w7 = dw.kernel_weight(7, 4)
    torch.testing.assert_close(dw.kernel_weight(3, 4), w7[:, :, 2:5, 2:5])
    torch.testing.assert_close(dw.kernel_weight(5, 2), w7[:2, :, 1:6, 1:6])
    dw(torch.rand(1, 4, 6, 6), 3).sum().backward()
    assert dw.transforms["3"].grad is not None and dw.transforms["5"].grad is not None
    with pytest.raises(NASError, match="accepted"):
        dw.kernel_weight(9, 4)


def test_elastic_batchnorm_uses_and_updates_the_first_channels():
    bn = ElasticBatchNorm(6)
    bn.train()
    bn(torch.randn(8, 4, 3, 3) + 5)
    assert (bn.running_mean[:4] > 0.3).all() and (bn.running_mean[4:] == 0).all()


def test_recalibration_restores_statistics():
    net = OFAMobileNetV2(SMALL, seed=0)
    _warm(net)
    arch = SMALL.smallest()
    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    sub = recalibrate_batchnorm(net.extract(arch), images)
    assert not sub.training
    stem_bn = sub.stem[1]
    with torch.no_grad():
        pre = sub.stem[0](images)
    torch.testing.assert_close(stem_bn.running_mean, pre.mean((0, 2, 3)), atol=1e-4, rtol=1e-4)
    with pytest.raises(NASError, match="non-empty"):
        recalibrate_batchnorm(sub, torch.zeros(0, 1, 8, 8))


def test_input_checks():
    net = OFAMobileNetV2(SMALL)
    with pytest.raises(NASError, match="resize"):
        net(torch.rand(1, 1, 8, 8), SMALL.largest())  # the largest takes 12x12
    assert resize(torch.rand(2, 1, 8, 8), 12).shape == (2, 1, 12, 12)
    with pytest.raises(NASError, match="N, C, H, W"):
        resize(torch.rand(8, 8), 12)
    with pytest.raises(NASError, match="SupernetConfig"):
        OFAMobileNetV2("big")
    assert net.out_resolution(SMALL.largest()) == 3  # 12 -> 6 -> 3


def test_seeded_construction_leaves_the_global_rng():
    state = torch.random.get_rng_state()
    a, b = OFAMobileNetV2(SMALL, seed=4), OFAMobileNetV2(SMALL, seed=4)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_elastic_batchnorm_cumulative_average_on_the_sliced_path():
    bn = ElasticBatchNorm(6, momentum=None)
    bn.train()
    x = [torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(i)) + 5 for i in range(2)]
    for xi in x:
        bn(xi)
    torch.testing.assert_close(bn.running_mean[:4], torch.stack([xi.mean((0, 2, 3)) for xi in x]).mean(0))
    assert (bn.running_mean[4:] == 0).all()


def test_recalibration_batches():
    net = OFAMobileNetV2(SMALL, seed=0)
    images = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    one = recalibrate_batchnorm(net.extract(SMALL.smallest()), images)
    stem = one.stem[0](images)
    torch.testing.assert_close(one.stem[1].running_var, stem.var((0, 2, 3)), atol=1e-4, rtol=1e-4)  # exact
    for bad in (0, -1, 2.5):
        with pytest.raises(NASError, match="batch_size"):
            recalibrate_batchnorm(net.extract(SMALL.smallest()), images, batch_size=bad)
    with pytest.raises(NASError, match="resolution"):
        resize(images, 0)
