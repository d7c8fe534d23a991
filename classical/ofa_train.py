"""Training a once-for-all supernet: the sandwich rule with in-place distillation (BigNAS / OFA).

Every step of :func:`train_supernet` trains, on the same batch at one input resolution drawn for the
step, the **largest** sub-network on the labels, the **smallest** and ``n_random`` random
sub-networks (drawn from an explicit ``torch.Generator``) on the largest's soft predictions (in-place
distillation, :func:`~tinyqml.classical.distill.kd_loss`; the teacher's logits are detached);
the gradients of all of them are summed into one optimizer step, so every shared weight is pulled
towards working in every sub-network. :func:`evaluate_arch` measures one sub-network: extract it,
re-estimate its BatchNorm statistics on training images, score it on a split.

>>> import torch
>>> from tinyqml.classical.arch import SupernetConfig
>>> from tinyqml.classical.data import load_digits_data
>>> from tinyqml.classical.supernet import OFAMobileNetV2
>>> cfg = SupernetConfig(stages=((8, 2), (16, 2)), depths=(1, 2), resolutions=(8, 12))
>>> net = OFAMobileNetV2(cfg, seed=0)
>>> data = load_digits_data()
>>> history = train_supernet(net, data, OFATrainConfig(epochs=1, seed=0))
>>> len(history.loss), history.steps
(1, 19)
>>> 0 <= evaluate_arch(net, cfg.largest(), data) <= 100
True
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from tinyqml.classical.arch import Arch, NASError, sample_arch
from tinyqml.classical.data import make_loader
from tinyqml.classical.distill import KDConfig, kd_loss
from tinyqml.classical.supernet import OFAMobileNetV2, recalibrate_batchnorm, resize
from tinyqml.classical.train import evaluate

__all__ = ["OFATrainConfig", "OFAHistory", "train_supernet", "sandwich_archs", "evaluate_arch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OFATrainConfig:
    """Epochs, Adam's learning rate (cosine-decayed), batch size, weight decay, the number of random
    sub-networks per step besides the largest and the smallest, the in-place distillation loss (``kd``;
    ``None``: every sub-network on the labels), the seed of batches and sampled sub-networks."""

    epochs: int = 40
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    n_random: int = 2
    kd: KDConfig | None = KDConfig(temperature=1.0, alpha=1.0)
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 1), ("n_random", 0), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise NASError(f"OFATrainConfig.{name} must be an int >= {low}, got {v!r}")
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise NASError(f"OFATrainConfig.{name} must be a finite number >= 0, got {v!r}")
        if not self.lr > 0:
            raise NASError(f"OFATrainConfig.lr must be > 0, got {self.lr!r}")
        if self.kd is not None and not isinstance(self.kd, KDConfig):
            raise NASError(f"OFATrainConfig.kd must be a KDConfig or None, got {type(self.kd).__name__}")


@dataclass(frozen=True)
class OFAHistory:
    """Mean loss of the largest sub-network per epoch, the validation accuracy (%) of the largest and of
    the smallest after each epoch (``nan`` without validation data), optimizer steps."""

    loss: tuple[float, ...]
    largest_accuracy: tuple[float, ...]
    smallest_accuracy: tuple[float, ...]
    steps: int


def sandwich_archs(net: OFAMobileNetV2, n_random: int, generator: torch.Generator) -> list[Arch]:
    """The sub-networks of one step: largest, smallest, then ``n_random`` random ones, all at one input
    resolution drawn for the step (as Once-for-All draws the image size per batch)."""
    cfg = net.config
    archs = [cfg.largest(), cfg.smallest()] + [sample_arch(cfg, generator) for _ in range(n_random)]
    r = cfg.resolutions[int(torch.randint(len(cfg.resolutions), (1,), generator=generator))]
    return [replace(a, resolution=r) for a in archs]


def _step(net: OFAMobileNetV2, x: torch.Tensor, y: torch.Tensor, config: OFATrainConfig,
          generator: torch.Generator) -> float:
    archs = sandwich_archs(net, config.n_random, generator)
    teacher = None
    first_loss = 0.0
    for i, arch in enumerate(archs):
        logits = net(resize(x, arch.resolution), arch)
        if i == 0 or config.kd is None:
            loss = F.cross_entropy(logits, y)
        else:
            loss = kd_loss(logits, teacher, y, config.kd)
        if i == 0:
            teacher, first_loss = logits.detach(), float(loss.detach())
        loss.backward()
    return first_loss


def _check(net: object, data: object, config: object) -> None:
    if not isinstance(net, OFAMobileNetV2):
        raise NASError(f"train_supernet trains an OFAMobileNetV2, got {type(net).__name__}")
    if not isinstance(config, OFATrainConfig):
        raise NASError(f"config must be an OFATrainConfig, got {type(config).__name__}")
    x, y = getattr(data, "x_train", None), getattr(data, "y_train", None)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or len(x) == 0 or len(x) != len(y):
        raise NASError("data needs non-empty x_train [N, C, H, W] and y_train [N] tensors of equal length")
    cfg = net.config
    if x.dim() != 4 or x.shape[1] != cfg.in_channels:
        raise NASError(f"x_train must be images [N, {cfg.in_channels}, H, W] for this supernet, got {tuple(x.shape)}")
    if y.dtype != torch.int64 or int(y.min()) < 0 or int(y.max()) >= cfg.n_classes:
        raise NASError(f"y_train must be int64 class labels in 0..{cfg.n_classes - 1} (SupernetConfig.n_classes), "
                       f"got {y.dtype} in {int(y.min())}..{int(y.max())}")


def train_supernet(net: OFAMobileNetV2, data: object, config: OFATrainConfig = OFATrainConfig()) -> OFAHistory:
    """Train ``net`` in place with the sandwich rule on ``data.x_train, data.y_train`` (``data.x_val``:
    optional, for the history); returns the history, the net in eval mode."""
    _check(net, data, config)
    g_batches = torch.Generator().manual_seed(config.seed)
    g_archs = torch.Generator().manual_seed(config.seed + 1)
    loader = make_loader(data.x_train, data.y_train, config.batch_size, g_batches)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs * len(loader))
    x_val = getattr(data, "x_val", None)
    has_val = isinstance(x_val, torch.Tensor) and len(x_val) > 0
    losses, big, small, steps = [], [], [], 0
    for epoch in range(config.epochs):
        net.train()
        running = 0.0
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            running += _step(net, x, y, config, g_archs) * len(y)
            opt.step()
            sched.step()
            steps += 1
        losses.append(running / len(data.y_train))
        cfg = net.config
        big.append(evaluate_arch(net, cfg.largest(), data) if has_val else math.nan)
        small.append(evaluate_arch(net, cfg.smallest(), data) if has_val else math.nan)
        log.info("epoch %d/%d loss %.4f val largest %.1f%% smallest %.1f%%", epoch + 1, config.epochs,
                 losses[-1], big[-1], small[-1])
    net.eval()
    return OFAHistory(tuple(losses), tuple(big), tuple(small), steps)


def evaluate_arch(net: OFAMobileNetV2, arch: Arch, data: object, split: str = "val",
                  calibration_images: int = 512) -> float:
    """Accuracy (%) of the sub-network ``arch`` on ``data``'s ``split`` (``val`` or ``test``) after
    re-estimating its BatchNorm statistics on the first ``calibration_images`` training images."""
    if split not in ("val", "test"):
        raise NASError(f"split must be 'val' or 'test', got {split!r}")
    x, y = getattr(data, f"x_{split}", None), getattr(data, f"y_{split}", None)
    if not isinstance(x, torch.Tensor) or len(x) == 0:
        raise NASError(f"data has no {split} images to evaluate on")
    if isinstance(calibration_images, bool) or not isinstance(calibration_images, int) or calibration_images < 1:
        raise NASError(f"calibration_images must be a positive int, got {calibration_images!r}")
    was_training = net.training
    sub = net.extract(arch)
    recalibrate_batchnorm(sub, resize(data.x_train[:calibration_images], arch.resolution))
    acc = evaluate(sub, resize(x, arch.resolution), y)
    net.train(was_training)
    return acc
