"""Small image classifiers for the compression tools: a 3-conv CNN and a tiny MobileNetV2.

Both use standard torch modules only (``Conv2d``, ``BatchNorm2d``, ``ReLU``/``ReLU6``,
pooling, ``Flatten``, ``Linear``, ``Dropout``) and ``+`` for residual adds, with no
data-dependent control flow in ``forward``, so ``torch.fx.symbolic_trace`` traces
them. Weights are drawn from a seeded generator (the global RNG is left as it was).

- :class:`SmallCNN`: conv-BN-ReLU ×3 (3×3, padding 1), one 2×2 max pool after the conv
  ``pool_after`` (0-based), then global average pooling or a flatten, then ``Linear``.
- :class:`TinyMobileNetV2`: a stem conv-BN-ReLU6, inverted residual blocks (1×1 expand,
  k×k depthwise (3×3 by default), 1×1 linear projection; ``x + block(x)`` when the stride is 1 and the
  widths match), ``AdaptiveAvgPool2d(1)`` + ``Flatten`` + ``Linear``.

>>> import torch
>>> net = SmallCNN(SmallCNNConfig(widths=(8, 16, 16)), seed=0)
>>> tuple(net(torch.zeros(2, 1, 8, 8)).shape)
(2, 10)
>>> mb = TinyMobileNetV2(seed=0)
>>> tuple(mb(torch.zeros(2, 1, 8, 8)).shape), sum(b.residual for b in mb.blocks)
((2, 10), 3)
>>> import torch.fx
>>> _ = torch.fx.symbolic_trace(mb)   # traceable
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tinyqml.classical.errors import CompressionError

__all__ = ["SmallCNNConfig", "SmallCNN", "BlockSpec", "MobileNetV2Config", "InvertedResidual",
           "TinyMobileNetV2"]


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CompressionError(f"{name} must be a positive int, got {value!r}")


def _dropout(p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise CompressionError(f"dropout must be in [0, 1), got {p!r}")


@dataclass(frozen=True)
class SmallCNNConfig:
    """Widths of the three convs, where the max pool goes, the head (``flatten`` or global average pool)."""

    widths: tuple[int, int, int] = (32, 64, 64)
    in_channels: int = 1
    n_classes: int = 10
    pool_after: int = 1
    flatten: bool = True
    image_size: int = 8
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.widths, tuple) or len(self.widths) != 3:
            raise CompressionError(f"SmallCNNConfig.widths must be a tuple of 3 ints, got {self.widths!r}")
        for i, w in enumerate(self.widths):
            _positive(f"widths[{i}]", w)
        for name in ("in_channels", "n_classes", "image_size"):
            _positive(name, getattr(self, name))
        if self.pool_after not in (0, 1, 2):
            raise CompressionError(f"pool_after must be 0, 1 or 2, got {self.pool_after!r}")
        if self.image_size % 2:
            raise CompressionError(f"image_size must be even (one 2x2 pool), got {self.image_size}")
        _dropout(self.dropout)


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SmallCNN(nn.Module):
    """``features`` (conv-BN-ReLU ×3 with one max pool) then ``head`` (pool or flatten, Linear)."""

    def __init__(self, config: SmallCNNConfig = SmallCNNConfig(), seed: int = 0) -> None:
        super().__init__()
        if not isinstance(config, SmallCNNConfig):
            raise CompressionError(f"config must be a SmallCNNConfig, got {type(config).__name__}")
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers: list[nn.Module] = []
            c_in = config.in_channels
            for i, c_out in enumerate(config.widths):
                layers += _conv_bn_relu(c_in, c_out)
                if i == config.pool_after:
                    layers.append(nn.MaxPool2d(2))
                c_in = c_out
            self.features = nn.Sequential(*layers)
            side = config.image_size // 2
            head: list[nn.Module] = [nn.Flatten()] if config.flatten else [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            if config.dropout:
                head.append(nn.Dropout(config.dropout))
            head.append(nn.Linear(c_in * (side * side if config.flatten else 1), config.n_classes))
            self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class BlockSpec:
    """One inverted residual block: expansion ratio, output channels, stride and kernel size (odd) of the
    depthwise conv."""

    expand: int
    out: int
    stride: int = 1
    kernel: int = 3

    def __post_init__(self) -> None:
        _positive("expand", self.expand)
        _positive("out", self.out)
        if self.stride not in (1, 2):
            raise CompressionError(f"stride must be 1 or 2, got {self.stride!r}")
        if isinstance(self.kernel, bool) or not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            raise CompressionError(f"kernel must be an odd positive int, got {self.kernel!r}")


#: a MobileNetV2 shrunk for 8×8 images: 16 → 16 (residual) → 24 /2 → 24 (residual) → 32 /2 → 32 (residual)
DEFAULT_BLOCKS = (BlockSpec(1, 16), BlockSpec(4, 24, 2), BlockSpec(4, 24), BlockSpec(4, 32, 2), BlockSpec(4, 32))


@dataclass(frozen=True)
class MobileNetV2Config:
    """Stem width (and stride), the inverted residual blocks, an optional last 1×1 conv width (0: none)."""

    stem: int = 16
    blocks: tuple[BlockSpec, ...] = DEFAULT_BLOCKS
    last: int = 0
    in_channels: int = 1
    n_classes: int = 10
    dropout: float = 0.0
    stem_stride: int = 1

    def __post_init__(self) -> None:
        for name in ("stem", "in_channels", "n_classes"):
            _positive(name, getattr(self, name))
        if self.stem_stride not in (1, 2):
            raise CompressionError(f"stem_stride must be 1 or 2, got {self.stem_stride!r}")
        if not self.blocks or not all(isinstance(b, BlockSpec) for b in self.blocks):
            raise CompressionError("MobileNetV2Config.blocks must be a non-empty tuple of BlockSpec")
        if isinstance(self.last, bool) or not isinstance(self.last, int) or self.last < 0:
            raise CompressionError(f"last must be an int >= 0, got {self.last!r}")
        _dropout(self.dropout)


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, relu6: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(c_out)]
    return layers + [nn.ReLU6()] if relu6 else layers


class InvertedResidual(nn.Module):
    """1×1 expand (skipped for ratio 1) → k×k depthwise → 1×1 linear projection; ``x + block(x)``
    when ``residual`` (stride 1 and equal widths), fixed at construction."""

    def __init__(self, c_in: int, spec: BlockSpec) -> None:
        super().__init__()
        hidden = c_in * spec.expand
        layers = _conv_bn(c_in, hidden, 1) if spec.expand != 1 else []
        layers += _conv_bn(hidden, hidden, spec.kernel, spec.stride, groups=hidden)
        layers += _conv_bn(hidden, spec.out, 1, relu6=False)
        self.block = nn.Sequential(*layers)
        self.residual = spec.stride == 1 and c_in == spec.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:  # a constant of the module, not of the data: fx traces one branch
            return x + self.block(x)
        return self.block(x)


class TinyMobileNetV2(nn.Module):
    """MobileNetV2 for small images: ``stem``, ``blocks``, optional ``last`` conv, then ``head``."""

    def __init__(self, config: MobileNetV2Config = MobileNetV2Config(), seed: int = 0) -> None:
        super().__init__()
        if not isinstance(config, MobileNetV2Config):
            raise CompressionError(f"config must be a MobileNetV2Config, got {type(config).__name__}")
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.stem = nn.Sequential(*_conv_bn(config.in_channels, config.stem, 3, config.stem_stride))
            blocks, c = [], config.stem
            for spec in config.blocks:
                blocks.append(InvertedResidual(c, spec))
                c = spec.out
            self.blocks = nn.Sequential(*blocks)
            self.last = nn.Sequential(*_conv_bn(c, config.last, 1)) if config.last else nn.Identity()
            c = config.last or c
            head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            if config.dropout:
                head.append(nn.Dropout(config.dropout))
            self.head = nn.Sequential(*head, nn.Linear(c, config.n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.blocks(self.stem(x))))
