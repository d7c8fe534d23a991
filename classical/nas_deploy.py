"""From a chosen sub-network to MCU code: extract, fine-tune, quantize, export TFLite, generate C, verify.

:func:`deploy_arch` takes the supernet and the architecture a search picked and runs the whole
compression back end on it: :meth:`~tinyqml.classical.supernet.OFAMobileNetV2.extract` (a standalone
``TinyMobileNetV2``), BatchNorm re-estimation, fine-tuning on images at the architecture's resolution
(distilled from the largest sub-network at that resolution when ``distill``), int8 quantization
(:func:`~tinyqml.classical.convert.quantize_model`), the fully-int8 ``.tflite`` file, C from
:func:`~tinyqml.classical.codegen.generate`, and (``verify_images > 0``) a host build of that C run on
test images and compared byte for byte with the TFLite Micro interpreter.

>>> import tempfile
>>> from tinyqml.classical.arch import SupernetConfig
>>> from tinyqml.classical.data import load_digits_data
>>> from tinyqml.classical.supernet import OFAMobileNetV2
>>> from tinyqml.classical.train import TrainConfig
>>> cfg = SupernetConfig(stages=((8, 2), (16, 2)), depths=(1, 2), resolutions=(8, 12))
>>> net = OFAMobileNetV2(cfg, seed=0)
>>> result = deploy_arch(net, cfg.smallest(), load_digits_data(), tempfile.mkdtemp(),
...                      DeployConfig(finetune=TrainConfig(epochs=1), verify_images=0))
>>> result.tflite_path.name, result.codegen.input_size
('model.tflite', 64)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from tinyqml.classical.arch import Arch, NASError, macs, params
from tinyqml.classical.codegen import CodegenOptions, CodegenResult, Target, generate
from tinyqml.classical.convert import quantize_model, to_nhwc
from tinyqml.classical.data import DigitsData
from tinyqml.classical.supernet import OFAMobileNetV2, recalibrate_batchnorm, resize
from tinyqml.classical.tflite_export import export_tflite
from tinyqml.classical.train import TrainConfig, evaluate, train
from tinyqml.classical.verify import compare_host_with_tflm

__all__ = ["DeployConfig", "DeployResult", "resized_data", "deploy_arch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployConfig:
    """Fine-tuning (``finetune``; distilled from the largest sub-network when ``distill``), training images
    that re-estimate the BatchNorm statistics (``bn_images``), calibration images for int8, test images checked against TFLite Micro on the host (0: no check), the C target
    (the C is the same; the report records it)."""

    finetune: TrainConfig = TrainConfig(epochs=10, lr=1e-3)
    distill: bool = True
    bn_images: int = 512
    calibration_images: int = 256
    verify_images: int = 64
    target: Target = Target.HOST

    def __post_init__(self) -> None:
        if not isinstance(self.finetune, TrainConfig):
            raise NASError(f"DeployConfig.finetune must be a TrainConfig, got {type(self.finetune).__name__}")
        for name, low in (("bn_images", 1), ("calibration_images", 1), ("verify_images", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise NASError(f"DeployConfig.{name} must be an int >= {low}, got {v!r}")
        if not isinstance(self.target, Target):
            raise NASError(f"DeployConfig.target must be a codegen Target ({', '.join(t.name for t in Target)}), "
                           f"got {self.target!r}")


@dataclass(frozen=True, eq=False)
class DeployResult:
    """The deployed sub-network: its float model, accuracies (%) on the test split before fine-tuning
    (shared weights, BatchNorm re-estimated), after it, and in int8; the files; the codegen result; how
    many host-C outputs equal TFLite Micro's (``None``: not checked)."""

    arch: Arch
    model: nn.Module
    macs: int
    params: int
    shared_accuracy: float
    finetuned_accuracy: float
    int8_accuracy: float
    tflite_path: Path
    c_dir: Path
    codegen: CodegenResult
    verified_equal: int | None
    verified_total: int

    @property
    def bit_exact(self) -> bool | None:
        return None if self.verified_equal is None else self.verified_equal == self.verified_total

    def summary(self) -> str:
        check = ("not checked against TFLite Micro" if self.verified_equal is None else
                 f"host C vs TFLite Micro {self.verified_equal}/{self.verified_total} int8 outputs equal")
        return (f"{self.macs:,} MACs, {self.params:,} params; test accuracy shared weights "
                f"{self.shared_accuracy:.2f}% -> fine-tuned {self.finetuned_accuracy:.2f}% -> int8 "
                f"{self.int8_accuracy:.2f}%; peak SRAM {self.codegen.peak_sram_bytes:,} B, flash "
                f"{self.codegen.flash_bytes:,} B; {check}")


def resized_data(data: DigitsData, resolution: int) -> DigitsData:
    """Every split of ``data`` bilinearly resized to ``resolution x resolution``."""
    return DigitsData(*(resize(t, resolution) if i % 2 == 0 else t for i, t in enumerate(
        (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test))))


def _finetune(net: OFAMobileNetV2, arch: Arch, sub: nn.Module, data: DigitsData, config: DeployConfig) -> None:
    teacher = None
    if config.distill:
        teacher = recalibrate_batchnorm(net.extract(replace(net.config.largest(), resolution=arch.resolution)),
                                        data.x_train[:config.bn_images])
    train(sub, data, config.finetune, teacher=teacher)


def deploy_arch(net: OFAMobileNetV2, arch: Arch, data: DigitsData, out_dir: str | os.PathLike,
                config: DeployConfig = DeployConfig()) -> DeployResult:
    """Extract ``arch`` from ``net``, fine-tune, quantize, write ``model.tflite`` and the C (``c/``) into
    ``out_dir``, and check the host build against TFLite Micro; ``data`` holds 8x8 (any) images that are
    resized to the architecture's resolution."""
    if not isinstance(net, OFAMobileNetV2):
        raise NASError(f"deploy_arch takes the OFAMobileNetV2 supernet, got {type(net).__name__}")
    if not isinstance(config, DeployConfig):
        raise NASError(f"config must be a DeployConfig, got {type(config).__name__}")
    if not isinstance(data, DigitsData):
        raise NASError(f"data must be a DigitsData (tinyqml.classical.load_digits_data()), got {type(data).__name__}")
    net.config.check(arch)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = resized_data(data, arch.resolution)
    was_training = net.training
    sub = recalibrate_batchnorm(net.extract(arch), d.x_train[:config.bn_images])
    shared = evaluate(sub, d.x_test, d.y_test)
    _finetune(net, arch, sub, d, config)
    net.train(was_training)
    sub.eval()
    tuned = evaluate(sub, d.x_test, d.y_test)
    calib = d.x_train[:config.calibration_images]
    int8_model = quantize_model(sub, calib)
    int8_acc = 100 * float((int8_model.predict(d.x_test) == d.y_test).float().mean())
    tflite_path = export_tflite(int8_model, calib, out / "model.tflite")
    blob = tflite_path.read_bytes()
    gen = generate(blob, out / "c", CodegenOptions(config.target))
    equal, total = None, 0
    if config.verify_images:
        xq = int8_model.qgraph.input.quantize(to_nhwc(d.x_test[:config.verify_images]))
        total = int(xq.shape[0]) * gen.output_size
        equal = compare_host_with_tflm(blob, gen, xq, out / "build").equal
    torch.save(sub.state_dict(), out / "model.pt")
    result = DeployResult(arch, sub, macs(arch, net.config), params(arch, net.config), shared, tuned, int8_acc,
                          tflite_path, gen.out_dir, gen, equal, total)
    log.info("deployed %s: %s", arch.describe(net.config), result.summary())
    return result
