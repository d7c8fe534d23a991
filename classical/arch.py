"""The once-for-all search space of MobileNetV2 sub-networks: the supernet's shape and one architecture.

A :class:`SupernetConfig` fixes what every sub-network shares: a stem conv, an optional fixed
first block (expand ratio 1), stages of inverted residual blocks (width and the stride of each
stage's first block) and the elastic choices: depth per stage, expand ratio and depthwise kernel
per block, input resolution. An :class:`Arch` is one choice of all of them (Once-for-All's
"subnet config"): ``resolution``, ``depths`` (one per stage) and ``kernels`` / ``expands`` (one per
block *position*, ``max_depth`` per stage; the positions a stage's depth leaves out are inactive and
ignored). Everything here is pure shape arithmetic, no torch:

- :func:`arch_space` / :meth:`Arch.from_params` / :meth:`Arch.params`: the architecture as a
  :class:`~tinyqml.search.SearchSpace` configuration (``resolution``, ``depth[s]``, ``kernel[i]``,
  ``expand[i]``), for the shared search engine;
- :func:`sample_arch` (explicit ``torch.Generator``), :meth:`SupernetConfig.largest` /
  :meth:`SupernetConfig.smallest` (the sandwich rule's ends);
- :func:`layers`: the sub-network as a list of :class:`Layer` s in the order of its int8 graph
  (BatchNorm folded, ReLU6 fused, as :func:`~tinyqml.classical.trace.trace` produces it), from which
  :func:`macs` and :func:`params` are analytic;
- :func:`encode`: the one-hot encoding of an accuracy predictor (inactive blocks all zero);
- :func:`to_mobilenet_config`: the standalone :class:`~tinyqml.classical.models.TinyMobileNetV2`
  configuration of the sub-network.

>>> cfg = SupernetConfig()
>>> big, small = cfg.largest(), cfg.smallest()
>>> big.depths, small.depths, big.resolution, small.resolution
((3, 3, 3), (1, 1, 1), 24, 12)
>>> macs(small, cfg) < macs(big, cfg)
True
>>> Arch.from_params(big.params(), cfg) == big
True
>>> len(encode(small, cfg)) == encoding_size(cfg)
True
>>> small.describe(cfg)
'r12 d1-1-1 k3e2 / k3e2 / k3e2'

"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from tinyqml.classical.errors import CompressionError

__all__ = ["NASError", "SupernetConfig", "Arch", "Layer", "arch_space", "sample_arch", "layers", "macs", "params",
           "encode", "encoding_size", "to_mobilenet_config", "conv_out"]


class NASError(CompressionError):
    """A bad supernet configuration, architecture or NAS setting (the message says what is accepted)."""


def _ints(name: str, values: Any, odd: bool = False, allowed: tuple[int, ...] | None = None) -> tuple[int, ...]:
    if not isinstance(values, tuple) or not values:
        raise NASError(f"{name} must be a non-empty tuple of ints, got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (odd and v % 2 == 0):
            raise NASError(f"{name} must hold {'odd ' if odd else ''}positive ints, got {values!r}")
        if allowed is not None and v not in allowed:
            raise NASError(f"{name}: {v} is not accepted; accepted: {list(allowed)}")
    if len(set(values)) != len(values):
        raise NASError(f"{name} has repeated values {values!r}")
    return tuple(sorted(values))


def conv_out(size: int, stride: int) -> int:
    """Output extent of a ``k x k`` convolution with padding ``k // 2`` (odd ``k``) and ``stride``."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class SupernetConfig:
    """The shared shape of every sub-network and the elastic choices.

    Attributes:
        stem: channels of the stem conv (3x3, ``stem_stride``).
        first: output channels of a fixed first block with expand ratio 1 and a 3x3 kernel (0: none).
        stages: ``(width, stride)`` of each stage; the stride applies to the stage's first block.
        depths, expands, kernels, resolutions: the elastic choices (sorted on construction).
        in_channels, n_classes: image channels and classes.
    """

    stem: int = 16
    first: int = 8
    stages: tuple[tuple[int, int], ...] = ((16, 2), (24, 2), (32, 2))
    depths: tuple[int, ...] = (1, 2, 3)
    expands: tuple[int, ...] = (2, 3, 4)
    kernels: tuple[int, ...] = (3, 5, 7)
    resolutions: tuple[int, ...] = (12, 16, 20, 24)
    stem_stride: int = 1
    in_channels: int = 1
    n_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("stem", "in_channels", "n_classes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise NASError(f"SupernetConfig.{name} must be a positive int, got {v!r}")
        if isinstance(self.first, bool) or not isinstance(self.first, int) or self.first < 0:
            raise NASError(f"SupernetConfig.first must be an int >= 0 (0: no fixed first block), got {self.first!r}")
        if self.stem_stride not in (1, 2):
            raise NASError(f"SupernetConfig.stem_stride must be 1 or 2, got {self.stem_stride!r}")
        if not isinstance(self.stages, tuple) or not self.stages:
            raise NASError(f"SupernetConfig.stages must be a non-empty tuple of (width, stride), got {self.stages!r}")
        for st in self.stages:
            if (not isinstance(st, tuple) or len(st) != 2 or isinstance(st[0], bool) or not isinstance(st[0], int)
                    or st[0] < 1 or st[1] not in (1, 2)):
                raise NASError(f"each stage must be (width >= 1, stride 1 or 2), got {st!r}")
        object.__setattr__(self, "depths", _ints("depths", self.depths))
        object.__setattr__(self, "expands", _ints("expands", self.expands))
        object.__setattr__(self, "kernels", _ints("kernels", self.kernels, odd=True))
        object.__setattr__(self, "resolutions", _ints("resolutions", self.resolutions))

    @property
    def max_depth(self) -> int:
        return self.depths[-1]

    @property
    def n_stages(self) -> int:
        return len(self.stages)

    @property
    def n_positions(self) -> int:
        """Block positions of the elastic stages (``max_depth`` per stage)."""
        return self.n_stages * self.max_depth

    def largest(self) -> Arch:
        """Every choice at its largest (the sandwich rule's top)."""
        return Arch(self.resolutions[-1], (self.max_depth,) * self.n_stages, (self.kernels[-1],) * self.n_positions,
                    (self.expands[-1],) * self.n_positions)

    def smallest(self) -> Arch:
        """Every choice at its smallest (the sandwich rule's bottom)."""
        return Arch(self.resolutions[0], (self.depths[0],) * self.n_stages, (self.kernels[0],) * self.n_positions,
                    (self.expands[0],) * self.n_positions)

    def check(self, arch: Arch) -> Arch:
        """``arch`` if every choice is one of this supernet's, else :class:`NASError` naming the bad one."""
        if not isinstance(arch, Arch):
            raise NASError(f"expected an Arch, got {type(arch).__name__}")
        if arch.resolution not in self.resolutions:
            raise NASError(f"resolution {arch.resolution} is not accepted; accepted: {list(self.resolutions)}")
        for name, values, n, options in (("depths", arch.depths, self.n_stages, self.depths),
                                         ("kernels", arch.kernels, self.n_positions, self.kernels),
                                         ("expands", arch.expands, self.n_positions, self.expands)):
            if len(values) != n:
                raise NASError(f"arch.{name} needs {n} entries for this supernet, got {len(values)}")
            bad = [v for v in values if v not in options]
            if bad:
                raise NASError(f"arch.{name}: {bad[0]!r} is not accepted; accepted: {list(options)}")
        return arch


@dataclass(frozen=True)
class Arch:
    """One sub-network: input ``resolution``, ``depths`` per stage, ``kernels`` and ``expands`` per block
    position (stage ``s``'s positions are ``s * max_depth ... s * max_depth + max_depth - 1``)."""

    resolution: int
    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[int, ...]

    def __post_init__(self) -> None:
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) or self.resolution < 1:
            raise NASError(f"Arch.resolution must be a positive int, got {self.resolution!r}")
        for name in ("depths", "kernels", "expands"):
            if not isinstance(getattr(self, name), (tuple, list)):
                raise NASError(f"Arch.{name} must be a tuple of positive ints, got {getattr(self, name)!r}")
            values = tuple(getattr(self, name))
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise NASError(f"Arch.{name} must be a non-empty tuple of positive ints, got {values!r}")
            object.__setattr__(self, name, values)

    def active(self, config: SupernetConfig) -> list[tuple[int, int, int]]:
        """``(stage, block index in stage, position)`` of every block this architecture uses."""
        return [(s, j, s * config.max_depth + j) for s, d in enumerate(self.depths) for j in range(d)]

    def canonical(self, config: SupernetConfig) -> Arch:
        """The same network with inactive positions set to the smallest choice (one key per network)."""
        config.check(self)
        on = {p for _, _, p in self.active(config)}
        return replace(self, kernels=tuple(k if p in on else config.kernels[0] for p, k in enumerate(self.kernels)),
                       expands=tuple(e if p in on else config.expands[0] for p, e in enumerate(self.expands)))

    def params(self) -> dict[str, int]:
        """The architecture as a search-space configuration (see :func:`arch_space`)."""
        out = {"resolution": self.resolution}
        out |= {f"depth[{s}]": d for s, d in enumerate(self.depths)}
        out |= {f"kernel[{i}]": k for i, k in enumerate(self.kernels)}
        out |= {f"expand[{i}]": e for i, e in enumerate(self.expands)}
        return out

    @classmethod
    def from_params(cls, params: Mapping[str, Any], config: SupernetConfig) -> Arch:
        """The architecture of a search-space configuration (checked against ``config``)."""
        space = arch_space(config)
        try:
            p = space.check(params)
        except Exception as exc:  # SearchSpaceError: say it in this module's terms
            raise NASError(f"not an architecture of this supernet: {exc}") from exc
        arch = cls(p["resolution"], tuple(p[f"depth[{s}]"] for s in range(config.n_stages)),
                   tuple(p[f"kernel[{i}]"] for i in range(config.n_positions)),
                   tuple(p[f"expand[{i}]"] for i in range(config.n_positions)))
        return config.check(arch)

    def describe(self, config: SupernetConfig) -> str:
        """``r12 d1-2-1 k3e2 / k5e4 k7e3 / k3e2``: resolution, depths, then kernel and expand ratio of
        every active block, stages split by ``/``."""
        stages = [" ".join(f"k{self.kernels[s * config.max_depth + j]}e{self.expands[s * config.max_depth + j]}"
                           for j in range(d)) for s, d in enumerate(self.depths)]
        return f"r{self.resolution} d{'-'.join(map(str, self.depths))} " + " / ".join(stages)


def arch_space(config: SupernetConfig) -> Any:
    """The :class:`~tinyqml.search.SearchSpace` of all architectures of ``config``."""
    from tinyqml.search import Choice, SearchSpace, per_block

    return SearchSpace.of(Choice(config.resolutions, name="resolution"),
                          *per_block("depth", config.n_stages, Choice(config.depths)),
                          *per_block("kernel", config.n_positions, Choice(config.kernels)),
                          *per_block("expand", config.n_positions, Choice(config.expands)))


def sample_arch(config: SupernetConfig, generator: Any) -> Arch:
    """A uniformly random architecture, drawn with the ``torch.Generator`` ``generator``."""
    import torch

    if not isinstance(generator, torch.Generator):
        raise NASError("sample_arch needs an explicit torch.Generator (generator=...)")

    def pick(options: tuple[int, ...], n: int) -> tuple[int, ...]:
        idx = torch.randint(len(options), (n,), generator=generator).tolist()
        return tuple(options[i] for i in idx)

    return Arch(pick(config.resolutions, 1)[0], pick(config.depths, config.n_stages),
                pick(config.kernels, config.n_positions), pick(config.expands, config.n_positions))


@dataclass(frozen=True)
class Layer:
    """One operator of the int8 graph: ``kind`` is ``conv`` (full 1x1 or kxk), ``depthwise``, ``add``
    (residual), ``mean`` (global average pool) or ``fc``; shapes are ``(h, w, c)`` (``fc``: ``(1, 1, c)``)."""

    kind: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: int = 1
    stride: int = 1
    relu6: bool = False
    block: int = -1

    @property
    def macs(self) -> int:
        c, (oh, ow, oc) = self.in_shape[2], self.out_shape
        if self.kind == "conv":
            return oh * ow * oc * self.kernel * self.kernel * c
        if self.kind == "depthwise":
            return oh * ow * oc * self.kernel * self.kernel
        if self.kind == "fc":
            return c * oc
        return 0

    @property
    def params(self) -> int:
        """Parameters of the float layer (conv weight + BatchNorm's two per channel; fc weight + bias)."""
        c, oc = self.in_shape[2], self.out_shape[2]
        if self.kind == "conv":
            return oc * c * self.kernel * self.kernel + 2 * oc
        if self.kind == "depthwise":
            return oc * self.kernel * self.kernel + 2 * oc
        if self.kind == "fc":
            return c * oc + oc
        return 0


def _block(out: list[Layer], shape: tuple[int, int, int], expand: int, width: int, kernel: int, stride: int,
           block: int) -> tuple[int, int, int]:
    h, w, c = shape
    hidden = c * expand
    x = shape
    if expand != 1:
        out.append(Layer("conv", x, (h, w, hidden), 1, 1, True, block))
        x = (h, w, hidden)
    y = (conv_out(h, stride), conv_out(w, stride), hidden)
    out.append(Layer("depthwise", x, y, kernel, stride, True, block))
    z = (y[0], y[1], width)
    out.append(Layer("conv", y, z, 1, 1, False, block))
    if stride == 1 and c == width:
        out.append(Layer("add", z, z, block=block))
    return z


def layers(arch: Arch, config: SupernetConfig) -> tuple[Layer, ...]:
    """The sub-network's operators in graph order (stem, blocks, global average pool, fc)."""
    config.check(arch)
    r = arch.resolution
    out: list[Layer] = []
    x = (conv_out(r, config.stem_stride),) * 2 + (config.stem,)
    out.append(Layer("conv", (r, r, config.in_channels), x, 3, config.stem_stride, True))
    block = 0
    if config.first:
        x = _block(out, x, 1, config.first, 3, 1, block)
        block += 1
    for s, j, p in arch.active(config):
        width, stride = config.stages[s]
        x = _block(out, x, arch.expands[p], width, arch.kernels[p], stride if j == 0 else 1, block)
        block += 1
    out.append(Layer("mean", x, (1, 1, x[2])))
    out.append(Layer("fc", (1, 1, x[2]), (1, 1, config.n_classes)))
    return tuple(out)


def macs(arch: Arch, config: SupernetConfig) -> int:
    """Multiply-accumulates of one inference (convolutions and the classifier)."""
    return sum(layer.macs for layer in layers(arch, config))


def params(arch: Arch, config: SupernetConfig) -> int:
    """Parameters of the standalone float sub-network (as ``sum(p.numel() for p in net.parameters())``)."""
    return sum(layer.params for layer in layers(arch, config))


def encoding_size(config: SupernetConfig) -> int:
    return len(config.resolutions) + config.n_stages * len(config.depths) + config.n_positions * (
        len(config.kernels) + len(config.expands))


def encode(arch: Arch, config: SupernetConfig) -> list[float]:
    """One-hot resolution, depth per stage, kernel and expand per position (all zero where inactive)."""
    config.check(arch)

    def one_hot(v: int, options: tuple[int, ...]) -> list[float]:
        return [1.0 if o == v else 0.0 for o in options]

    vec = one_hot(arch.resolution, config.resolutions)
    for d in arch.depths:
        vec += one_hot(d, config.depths)
    on = {p for _, _, p in arch.active(config)}
    for p in range(config.n_positions):
        if p in on:
            vec += one_hot(arch.kernels[p], config.kernels) + one_hot(arch.expands[p], config.expands)
        else:
            vec += [0.0] * (len(config.kernels) + len(config.expands))
    return vec


def to_mobilenet_config(arch: Arch, config: SupernetConfig) -> Any:
    """The :class:`~tinyqml.classical.models.MobileNetV2Config` of the standalone sub-network."""
    from tinyqml.classical.models import BlockSpec, MobileNetV2Config

    config.check(arch)
    blocks = [BlockSpec(1, config.first, 1, 3)] if config.first else []
    for s, j, p in arch.active(config):
        width, stride = config.stages[s]
        blocks.append(BlockSpec(arch.expands[p], width, stride if j == 0 else 1, arch.kernels[p]))
    return MobileNetV2Config(stem=config.stem, blocks=tuple(blocks), last=0, in_channels=config.in_channels,
                             n_classes=config.n_classes, stem_stride=config.stem_stride)
