"""Sandwich-rule training with in-place distillation."""

from __future__ import annotations

import math

import pytest
import torch

from tinyqml.classical.arch import NASError, SupernetConfig
from tinyqml.classical.data import load_digits_data
from tinyqml.classical.distill import KDConfig
from tinyqml.classical.ofa_train import OFATrainConfig, evaluate_arch, sandwich_archs, train_supernet
from tinyqml.classical.supernet import OFAMobileNetV2

CFG = SupernetConfig(stem=8, first=4, stages=((8, 2), (16, 2)), depths=(1, 2), resolutions=(8, 12))


@pytest.fixture(scope="module")
def data():
    return load_digits_data()


def test_sandwich_has_both_ends_at_one_resolution():
    net = OFAMobileNetV2(CFG)
    archs = sandwich_archs(net, 3, torch.Generator().manual_seed(0))
    assert len(archs) == 5 and len({a.resolution for a in archs}) == 1
    assert archs[0].depths == (2, 2) and archs[1].depths == (1, 1)
    assert archs[0].kernels == CFG.largest().kernels and archs[1].expands == CFG.smallest().expands


def test_training_lifts_every_subnet_above_chance(data):
    net = OFAMobileNetV2(CFG, seed=0)
    before = [evaluate_arch(net, a, data) for a in (CFG.largest(), CFG.smallest())]
    hist = train_supernet(net, data, OFATrainConfig(epochs=5, seed=0))
    assert len(hist.loss) == 5 and hist.loss[-1] < hist.loss[0] and hist.steps == 5 * math.ceil(len(data.y_train) / 64)
    after = [evaluate_arch(net, a, data) for a in (CFG.largest(), CFG.smallest())]
    assert after[0] > 70 and after[1] > 40 and all(a > b for a, b in zip(after, before))
    assert not net.training


def test_training_is_reproducible(data):
    small = type(data)(data.x_train[:128], data.y_train[:128], data.x_val[:0], data.y_val[:0], data.x_test,
                       data.y_test)
    nets = [OFAMobileNetV2(CFG, seed=0) for _ in range(2)]
    hists = [train_supernet(n, small, OFATrainConfig(epochs=1, seed=3, kd=None)) for n in nets]
    assert hists[0].loss == hists[1].loss and math.isnan(hists[0].largest_accuracy[0])
    assert all(torch.equal(p, q) for p, q in zip(nets[0].parameters(), nets[1].parameters()))


@pytest.mark.parametrize("make, match", [
    (lambda: OFATrainConfig(epochs=0), "epochs"),
    (lambda: OFATrainConfig(lr=0), "lr"),
    (lambda: OFATrainConfig(n_random=-1), "n_random"),
    (lambda: OFATrainConfig(kd="yes"), "KDConfig"),
    (lambda: OFATrainConfig(weight_decay=float("nan")), "weight_decay"),
])
def test_bad_training_configs(make, match):
    with pytest.raises(NASError, match=match):
        make()


def test_bad_inputs(data):
    net = OFAMobileNetV2(CFG)
    with pytest.raises(NASError, match="OFAMobileNetV2"):
        train_supernet(torch.nn.Linear(2, 2), data)
    with pytest.raises(NASError, match="x_train"):
        train_supernet(net, object())
    with pytest.raises(NASError, match="split"):
        evaluate_arch(net, CFG.largest(), data, split="train")
    with pytest.raises(NASError, match="calibration_images"):
        evaluate_arch(net, CFG.largest(), data, calibration_images=0)
    assert KDConfig(1.0, 1.0) == OFATrainConfig().kd


def test_labels_must_fit_the_supernet(data):
    net = OFAMobileNetV2(SupernetConfig(stages=((8, 2),), depths=(1,), resolutions=(8,), n_classes=5))
    with pytest.raises(NASError, match="0..4"):
        train_supernet(net, data, OFATrainConfig(epochs=1))
