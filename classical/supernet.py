"""The once-for-all MobileNetV2 supernet: one set of weights shared by every sub-network of the space.

:class:`OFAMobileNetV2` holds the largest network of a :class:`~tinyqml.classical.arch.SupernetConfig`;
``net(x, arch)`` runs the sub-network ``arch`` (an :class:`~tinyqml.classical.arch.Arch`) with the
shared weights, as Once-for-All does:

- **elastic depth**: a stage of depth ``d`` runs its first ``d`` blocks;
- **elastic expand ratio**: a block with ratio ``e`` uses the first ``c_in * e`` hidden channels of its
  1x1 expansion, depthwise conv and projection (and the first entries of their BatchNorms);
- **elastic kernel**: the depthwise weights are stored at the largest kernel; a smaller kernel is the
  centre of the next larger one times a learned ``k² x k²`` *kernel transformation matrix* (one per
  layer and kernel size, initialised to the identity);
- **elastic resolution**: the input comes at ``arch.resolution`` (:func:`resize` upsamples images).

:meth:`OFAMobileNetV2.extract` copies the active weights into a standalone
:class:`~tinyqml.classical.models.TinyMobileNetV2` (plain torch modules, traceable, quantizable,
exportable to TFLite and C) that computes exactly what ``net(x, arch)`` computes.
:func:`recalibrate_batchnorm` re-estimates a sub-network's BatchNorm statistics on training
images (shared statistics fit no single sub-network).

>>> import torch
>>> from tinyqml.classical.arch import SupernetConfig
>>> cfg = SupernetConfig(stages=((8, 2), (16, 2)), resolutions=(8, 12))
>>> net = OFAMobileNetV2(cfg, seed=0).eval()
>>> arch = cfg.smallest()
>>> x = torch.rand(2, 1, 8, 8)
>>> sub = net.extract(arch).eval()
>>> torch.allclose(net(x, arch), sub(x), atol=1e-5)
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinyqml.classical.arch import Arch, NASError, SupernetConfig, conv_out, to_mobilenet_config
from tinyqml.classical.models import TinyMobileNetV2

__all__ = ["ElasticBatchNorm", "OFAMobileNetV2", "resize", "recalibrate_batchnorm"]


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images ``[N, C, H, W]`` bilinearly resized to ``resolution x resolution`` (unchanged when equal)."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise NASError(f"resolution must be a positive int, got {resolution!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise NASError(f"resize takes images [N, C, H, W], got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[-2:] == (resolution, resolution):
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


class ElasticBatchNorm(nn.BatchNorm2d):
    """A BatchNorm2d whose first ``c`` channels normalise a ``c``-channel input (Once-for-All's dynamic BN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        train = self.training
        factor = 0.0 if self.momentum is None else self.momentum
        if train and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative average, as BatchNorm2d does
                factor = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            train, factor, self.eps)

    def copy_into(self, bn: nn.BatchNorm2d, c: int) -> None:
        """Copy the first ``c`` channels' affine weights and statistics into ``bn``."""
        with torch.no_grad():
            bn.weight.copy_(self.weight[:c])
            bn.bias.copy_(self.bias[:c])
            bn.running_mean.copy_(self.running_mean[:c])
            bn.running_var.copy_(self.running_var[:c])
        bn.eps = self.eps


class ElasticDepthwise(nn.Module):
    """Depthwise ``k x k`` conv (stride fixed, padding ``k // 2``) for every ``k`` of ``kernels``, over the
    first ``c`` of ``channels`` channels, with Once-for-All's kernel transformation matrices (a building
    block of :class:`OFAMobileNetV2`, which seeds its initial weights)."""

    def __init__(self, channels: int, kernels: tuple[int, ...], stride: int) -> None:
        super().__init__()
        self.kernels, self.stride = tuple(sorted(kernels)), stride
        k = self.kernels[-1]
        self.weight = nn.Parameter(torch.empty(channels, 1, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict({str(s): nn.Parameter(torch.eye(s * s)) for s in self.kernels[:-1]})

    def kernel_weight(self, k: int, c: int) -> torch.Tensor:
        """The ``[c, 1, k, k]`` weight of kernel ``k``: centre crops transformed from the largest down."""
        if k not in self.kernels:
            raise NASError(f"kernel {k} is not accepted; accepted: {list(self.kernels)}")
        w = self.weight[:c]
        for s in reversed(self.kernels[:-1]):
            if s < k:
                break
            lo = (w.shape[-1] - s) // 2
            crop = w[:, :, lo:lo + s, lo:lo + s].reshape(c, s * s)
            w = (crop @ self.transforms[str(s)]).reshape(c, 1, s, s)
        return w

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.kernel_weight(k, c), None, self.stride, k // 2, 1, c)


class ElasticBlock(nn.Module):
    """An inverted residual block with elastic expand ratio and depthwise kernel; the residual add is on
    when the stride is 1 and the widths match (fixed per block)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expands: tuple[int, ...], kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        self.expands = tuple(sorted(expands))
        hidden = c_in * self.expands[-1]
        self.has_expand = self.expands != (1,)
        if self.has_expand:
            self.expand = nn.Conv2d(c_in, hidden, 1, bias=False)
            self.expand_bn = ElasticBatchNorm(hidden)
        self.depthwise = ElasticDepthwise(hidden, kernels, stride)
        self.depthwise_bn = ElasticBatchNorm(hidden)
        self.project = nn.Conv2d(hidden, c_out, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor, expand: int, kernel: int) -> torch.Tensor:
        hidden = self.c_in * expand
        h = x
        if self.has_expand and expand != 1:  # ratio 1 has no expansion, as in TinyMobileNetV2
            h = F.relu6(self.expand_bn(F.conv2d(x, self.expand.weight[:hidden])))
        h = F.relu6(self.depthwise_bn(self.depthwise(h, kernel)))
        h = self.project_bn(F.conv2d(h, self.project.weight[:, :hidden]))
        return x + h if self.residual else h

    def copy_into(self, block: nn.Module, expand: int, kernel: int) -> None:
        """Copy the active weights into a :class:`~tinyqml.classical.models.InvertedResidual`."""
        hidden = self.c_in * expand
        layers = list(block.block)
        with torch.no_grad():
            if self.has_expand and expand != 1:
                layers[0].weight.copy_(self.expand.weight[:hidden])
                self.expand_bn.copy_into(layers[1], hidden)
                layers = layers[3:]
            layers[0].weight.copy_(self.depthwise.kernel_weight(kernel, hidden))
            self.depthwise_bn.copy_into(layers[1], hidden)
            layers[3].weight.copy_(self.project.weight[:, :hidden])
            layers[4].load_state_dict(self.project_bn.state_dict())


class OFAMobileNetV2(nn.Module):
    """The supernet of a :class:`~tinyqml.classical.arch.SupernetConfig` (weights from a seeded generator;
    the global RNG is left as it was)."""

    def __init__(self, config: SupernetConfig = SupernetConfig(), seed: int = 0) -> None:
        super().__init__()
        if not isinstance(config, SupernetConfig):
            raise NASError(f"config must be a SupernetConfig, got {type(config).__name__}")
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.stem = nn.Sequential(nn.Conv2d(config.in_channels, config.stem, 3, config.stem_stride, 1, bias=False),
                                      nn.BatchNorm2d(config.stem), nn.ReLU6())
            c = config.stem
            self.first = ElasticBlock(c, config.first, 1, (1,), (3,)) if config.first else None
            c = config.first or c
            stages = []
            for width, stride in config.stages:
                blocks = []
                for j in range(config.max_depth):
                    blocks.append(ElasticBlock(c, width, stride if j == 0 else 1, config.expands, config.kernels))
                    c = width
                stages.append(nn.ModuleList(blocks))
            self.stages = nn.ModuleList(stages)
            self.classifier = nn.Linear(c, config.n_classes)

    def _check_input(self, x: torch.Tensor, arch: Arch) -> None:
        self.config.check(arch)
        want = (self.config.in_channels, arch.resolution, arch.resolution)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise NASError(f"arch {arch.describe(self.config)} takes images [N, {want[0]}, {want[1]}, {want[2]}], got "
                           f"{tuple(getattr(x, 'shape', ()))}; resize them with tinyqml.classical.supernet.resize")

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        self._check_input(x, arch)
        h = self.stem(x)
        if self.first is not None:
            h = self.first(h, 1, 3)
        for s, j, p in arch.active(self.config):
            h = self.stages[s][j](h, arch.expands[p], arch.kernels[p])
        return self.classifier(h.mean((2, 3)))

    def extract(self, arch: Arch) -> TinyMobileNetV2:
        """The sub-network ``arch`` as a standalone :class:`~tinyqml.classical.models.TinyMobileNetV2`
        (its own copy of the weights, in the supernet's mode)."""
        self.config.check(arch)
        net = TinyMobileNetV2(to_mobilenet_config(arch, self.config))
        with torch.no_grad():
            net.stem.load_state_dict(self.stem.state_dict())
            blocks = list(net.blocks)
            if self.first is not None:
                self.first.copy_into(blocks.pop(0), 1, 3)
            for (s, j, p), block in zip(arch.active(self.config), blocks):
                self.stages[s][j].copy_into(block, arch.expands[p], arch.kernels[p])
            net.head[-1].load_state_dict(self.classifier.state_dict())
        return net.train(self.training)

    def out_resolution(self, arch: Arch) -> int:
        """Spatial extent of the last stage's output for ``arch``."""
        r = conv_out(arch.resolution, self.config.stem_stride)
        for s, j, _ in arch.active(self.config):
            r = conv_out(r, self.config.stages[s][1] if j == 0 else 1)
        return r


def recalibrate_batchnorm(net: nn.Module, images: torch.Tensor, batch_size: int | None = None) -> nn.Module:
    """Reset every BatchNorm's statistics of ``net`` (a standalone sub-network) and re-estimate them on
    ``images`` (already at the network's resolution): the exact mean and variance over all images in one
    pass (``batch_size=None``), or the average of per-batch statistics; returns ``net`` in eval mode.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    >>> x = torch.rand(16, 1, 4, 4)
    >>> bn = recalibrate_batchnorm(net, x)[1]
    >>> torch.allclose(bn.running_mean, net[0](x).mean((0, 2, 3)))
    True
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
        raise NASError(f"recalibrate_batchnorm needs a non-empty image batch [N, C, H, W], got "
                       f"{tuple(getattr(images, 'shape', ()))}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise NASError(f"batch_size must be a positive int or None (one pass over all images), got {batch_size!r}")
    step = len(images) if batch_size is None else batch_size
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    net.train()
    try:
        with torch.no_grad():
            for i in range(0, len(images), step):
                net(images[i:i + step])
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
    return net.eval()
