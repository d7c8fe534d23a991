"""From a searched sub-network to verified C: extract, fine-tune, int8, TFLite, codegen, host check."""

from __future__ import annotations

import os

import pytest
import torch

from tinyqml.classical import mcu
from tinyqml.classical.arch import NASError, SupernetConfig, macs
from tinyqml.classical.codegen import Target
from tinyqml.classical.data import load_digits_data
from tinyqml.classical.nas_deploy import DeployConfig, deploy_arch, resized_data
from tinyqml.classical.ofa_train import OFATrainConfig, train_supernet
from tinyqml.classical.supernet import OFAMobileNetV2
from tinyqml.classical.tflite_export import operator_names
from tinyqml.classical.train import TrainConfig

CFG = SupernetConfig(stem=8, first=4, stages=((8, 2), (16, 2)), depths=(1, 2), resolutions=(8, 12))
HOST = pytest.mark.skipif(not mcu.tools_available()["gcc"] and not os.environ.get("TINYQML_REQUIRE_MCU_TOOLS"),
                          reason="needs gcc (`make mcu-tools`)")


@pytest.fixture(scope="module")
def data():
    return load_digits_data()


@pytest.fixture(scope="module")
def supernet(data):
    net = OFAMobileNetV2(CFG, seed=0)
    train_supernet(net, data, OFATrainConfig(epochs=3, seed=0))
    return net


@HOST
def test_deploy_reaches_bit_exact_c(supernet, data, tmp_path):
    arch = CFG.largest()
    before = [p.detach().clone() for p in supernet.parameters()]
    result = deploy_arch(supernet, arch, data, tmp_path, DeployConfig(finetune=TrainConfig(epochs=2, lr=1e-3),
                                                                     verify_images=16, target=Target.CORTEX_M4))
    assert result.bit_exact is True and result.verified_total == 16 * 10
    assert result.macs == macs(arch, CFG) == result.codegen.macs
    assert result.int8_accuracy > 50 and result.finetuned_accuracy > 50
    assert abs(result.int8_accuracy - result.finetuned_accuracy) < 10
    assert {"model.c", "model.h", "tinyqml_rt.c"} <= {p.name for p in result.c_dir.iterdir()}
    assert (tmp_path / "model.pt").is_file() and result.codegen.target is Target.CORTEX_M4
    ops = operator_names(result.tflite_path.read_bytes())
    assert "DEPTHWISE_CONV_2D" in ops and "ADD" in ops
    assert "160/160 int8 outputs equal" in result.summary()
    # the supernet's shared weights are untouched by fine-tuning the extracted copy
    assert all(torch.equal(p, q) for p, q in zip(before, supernet.parameters()))


def test_deploy_without_check(supernet, data, tmp_path):
    result = deploy_arch(supernet, CFG.smallest(), data, tmp_path,
                         DeployConfig(finetune=TrainConfig(epochs=1), distill=False, verify_images=0))
    assert result.verified_equal is None and result.bit_exact is None
    assert "not checked" in result.summary()
    assert result.codegen.input_size == 8 * 8


def test_resized_data(data):
    d = resized_data(data, 12)
    assert d.x_train.shape[1:] == (1, 12, 12) and torch.equal(d.y_test, data.y_test)


def test_bad_inputs(supernet, data, tmp_path):
    with pytest.raises(NASError, match="OFAMobileNetV2"):
        deploy_arch(torch.nn.Linear(1, 1), CFG.smallest(), data, tmp_path)
    with pytest.raises(NASError, match="resolution"):
        deploy_arch(supernet, SupernetConfig().largest(), data, tmp_path)
    with pytest.raises(NASError, match="TrainConfig"):
        DeployConfig(finetune=3)
    with pytest.raises(NASError, match="verify_images"):
        DeployConfig(verify_images=-1)
    with pytest.raises(NASError, match="Target"):
        DeployConfig(target="host")
