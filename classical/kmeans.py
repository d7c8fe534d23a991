"""K-means weight quantization with a trainable codebook (Deep Compression, Han et al. 2016).

Each Conv/Linear weight is clustered (1-D k-means, ``2**bits`` centroids) and replaced by a
``torch.nn.utils.parametrize`` reparametrization ``weight = codebook[labels]``: the codebook
is an ``nn.Parameter``, the labels a ``uint8`` buffer that stays fixed. Training then updates
the centroids, each by the sum of the gradients of the weights that share it (what autograd
gives for the gather). The original float weight stays behind the parametrization with
``requires_grad=False``; :func:`kmeans_squash` bakes ``codebook[labels]`` into plain
Parameters. :func:`kmeans_storage` reports the bits per weight and the compression ratio,
codebooks included.

>>> import torch
>>> torch.manual_seed(0) and None
>>> net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> books = kmeans_quantize(net, KMeansConfig(bits=2))
>>> list(books), net[0].weight.unique().numel()
(['0', '2'], 4)
>>> codebook_of(net[0]) is books['0'], net[0].parametrizations.weight.original.requires_grad
(True, False)
>>> report = kmeans_storage(net)
>>> round(report.bits_per_weight, 2), round(report.compression_ratio, 2)   # 2-bit labels + 32-bit centroids
(3.78, 8.47)
>>> _ = kmeans_squash(net); type(net[0].weight).__name__, net[0].weight.requires_grad
('Parameter', True)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from tinyqml.classical.errors import AlreadyQuantizedError, CompressionError, LayerNotFoundError, \
    UnsupportedLayerError
from tinyqml.search.masks import own_class

__all__ = ["KMeansInit", "KMeansConfig", "Codebook", "kmeans_1d", "kmeans_quantize", "codebook_of",
           "has_codebook", "kmeans_squash", "LayerStorage", "StorageReport", "kmeans_storage"]

#: the layers whose ``weight`` k-means quantizes
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                 nn.Linear)


class KMeansInit(enum.Enum):
    """Where the centroids start: ``LINEAR`` evenly between the weight's min and max (the best
    of the three in Deep Compression), ``DENSITY`` evenly along its sorted values (quantiles),
    ``RANDOM`` at weights drawn with the config's seed."""

    LINEAR = "linear"
    DENSITY = "density"
    RANDOM = "random"


@dataclass(frozen=True)
class KMeansConfig:
    """``bits`` (1..8: ``2**bits`` centroids per layer), at most ``iterations`` Lloyd steps (they
    stop earlier once no label changes), ``seed`` (for ``KMeansInit.RANDOM``), ``init``
    (a :class:`KMeansInit`, or its value: ``"linear"``, ``"density"``, ``"random"``)."""

    bits: int = 4
    iterations: int = 100
    seed: int = 0
    init: KMeansInit = KMeansInit.LINEAR

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise CompressionError(f"bits must be an integer in [1, 8], got {self.bits!r}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise CompressionError(f"iterations must be a positive integer, got {self.iterations!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise CompressionError(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.init, KMeansInit):
            valid = [m.value for m in KMeansInit]
            if self.init not in valid:
                raise CompressionError(f"init must be a KMeansInit or one of {valid}, got {self.init!r}")
            object.__setattr__(self, "init", KMeansInit(self.init))


def _initial_centroids(v: torch.Tensor, k: int, init: KMeansInit, generator: torch.Generator) -> torch.Tensor:
    if init is KMeansInit.LINEAR:
        return torch.linspace(float(v.min()), float(v.max()), k, dtype=v.dtype, device=v.device)
    if init is KMeansInit.DENSITY:
        ordered = v.sort().values
        idx = torch.linspace(0, v.numel() - 1, k, dtype=torch.float64).round().long().to(v.device)
        return ordered[idx]
    picks = torch.randint(0, v.numel(), (k,), generator=generator).to(v.device)
    return v[picks].sort().values


def _assign(v: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The nearest centroid of each value (``centroids`` sorted; a tie goes to the lower one)."""
    bounds = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(v, bounds)


def _update(v: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Cluster means; an empty cluster keeps its centroid."""
    k = centroids.numel()
    counts = torch.bincount(labels, minlength=k).to(v.dtype)
    sums = torch.zeros_like(centroids).scatter_add_(0, labels, v)
    return torch.where(counts > 0, sums / counts.clamp(min=1), centroids).sort().values


def kmeans_1d(values: torch.Tensor, k: int, iterations: int = 100, init: KMeansInit = KMeansInit.LINEAR,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's 1-D k-means of ``values`` (any shape): sorted float64 centroids ``[k]`` and the
    int64 label of every value (flattened). Deterministic; ``generator`` only feeds
    ``KMeansInit.RANDOM``.

    >>> c, labels = kmeans_1d(torch.tensor([0.0, 0.1, 0.9, 1.0, 1.1]), 2)
    >>> [round(x, 3) for x in c.tolist()], labels.tolist()
    ([0.05, 1.0], [0, 0, 1, 1, 1])
    """
    v = torch.as_tensor(values).detach().reshape(-1).to(torch.float64)
    if v.numel() == 0:
        raise CompressionError("k-means needs at least one value")
    if not torch.isfinite(v).all():
        raise CompressionError("k-means values must be finite (got inf or nan)")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise CompressionError(f"k must be a positive integer, got {k!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    centroids = _initial_centroids(v, k, KMeansInit(init), generator)
    labels = None
    for _ in range(iterations):
        new = _assign(v, centroids)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        centroids = _update(v, labels, centroids)
    return centroids, _assign(v, centroids)


class Codebook(nn.Module):
    """The parametrization ``weight = codebook[labels]`` (its input, the frozen original weight,
    is not used). ``codebook`` is trainable; ``labels`` (uint8, the weight's shape) is fixed."""

    def __init__(self, centroids: torch.Tensor, labels: torch.Tensor, bits: int,
                 original_requires_grad: bool = True) -> None:
        super().__init__()
        self.bits = bits
        self.original_requires_grad = original_requires_grad
        self.codebook = nn.Parameter(centroids.detach().clone())
        self.register_buffer("labels", labels.to(torch.uint8))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return self.codebook[self.labels.long()]

    def extra_repr(self) -> str:
        return f"bits={self.bits}, centroids={self.codebook.numel()}, weights={self.labels.numel()}"


def has_codebook(module: nn.Module, name: str = "weight") -> bool:
    """Whether ``module.<name>`` is k-means quantized."""
    return parametrize.is_parametrized(module, name) and any(
        isinstance(p, Codebook) for p in module.parametrizations[name])


def codebook_of(module: nn.Module, name: str = "weight") -> Codebook:
    """The :class:`Codebook` parametrization of a k-means quantized layer."""
    if not isinstance(module, nn.Module) or not has_codebook(module, name):
        raise CompressionError(f"{type(module).__name__}.{name} is not k-means quantized; "
                               "call kmeans_quantize first")
    return next(p for p in module.parametrizations[name] if isinstance(p, Codebook))


def _select(model: nn.Module, layers: Iterable[str] | str | None) -> dict[str, nn.Module]:
    """The named layers to quantize, checked before any is changed."""
    if not isinstance(model, nn.Module):
        raise CompressionError(f"k-means quantizes an nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    valid = {n: m for n, m in modules.items() if isinstance(m, WEIGHT_LAYERS)}
    if layers is None:
        chosen = list(valid)
        if not chosen:
            raise UnsupportedLayerError(f"{type(model).__name__} has no Conv or Linear layer to quantize")
    else:
        chosen = list(dict.fromkeys([layers] if isinstance(layers, str) else layers))
        if not chosen:
            raise CompressionError("layers is empty: name at least one layer (or pass None for all)")
    for name in chosen:
        if name not in modules:
            raise LayerNotFoundError(f"the model has no layer {name!r}; its Conv/Linear layers: {list(valid)}")
        if name not in valid:
            raise UnsupportedLayerError(f"layer {name!r} ({type(modules[name]).__name__}) has no Conv/Linear "
                                        f"weight to quantize; its Conv/Linear layers: {list(valid)}")
        _check_free(name, valid[name])
    return {name: valid[name] for name in chosen}


def _check_free(name: str, module: nn.Module) -> None:
    if has_codebook(module):
        raise AlreadyQuantizedError(f"layer {name!r} is already k-means quantized")
    if parametrize.is_parametrized(module, "weight"):
        kinds = [type(p).__name__ for p in module.parametrizations["weight"]]
        raise UnsupportedLayerError(f"layer {name!r} has a weight parametrized by {kinds}; "
                                    "bake it in (squash) before k-means quantization")


def _quantize_layer(module: nn.Module, config: KMeansConfig, generator: torch.Generator) -> Codebook:
    weight = module.weight
    centroids, labels = kmeans_1d(weight, 2 ** config.bits, config.iterations, config.init, generator)
    book = Codebook(centroids.to(weight.dtype), labels.reshape(weight.shape), config.bits,
                    original_requires_grad=weight.requires_grad)
    parametrize.register_parametrization(module, "weight", book.to(weight.device))
    module.parametrizations["weight"].original.requires_grad_(False)
    return book


def kmeans_quantize(model: nn.Module, config: KMeansConfig = KMeansConfig(),
                    layers: Iterable[str] | str | None = None) -> dict[str, Codebook]:
    """K-means quantize (in place) the weight of every Conv/Linear layer of ``model``, or of the
    named ``layers``; returns the :class:`Codebook` of each, by layer name."""
    if not isinstance(config, KMeansConfig):
        raise CompressionError(f"config must be a KMeansConfig, got {type(config).__name__}")
    chosen = _select(model, layers)
    generator = torch.Generator().manual_seed(config.seed)
    return {name: _quantize_layer(module, config, generator) for name, module in chosen.items()}


def _remove_parametrization(module: nn.Module, name: str, leave_parametrized: bool) -> None:
    """``parametrize.remove_parametrizations`` on a module whose parametrized class may be shared:
    ``copy.deepcopy`` of a parametrized module keeps its class, and removing deletes the
    property from the class, which would break the other copies; the module gets its own class first."""
    own_class(module)
    parametrize.remove_parametrizations(module, name, leave_parametrized=leave_parametrized)


def kmeans_squash(model: nn.Module) -> nn.Module:
    """Bake every codebook of ``model`` into a plain Parameter (``codebook[labels]``, trainable
    again if the original was) and drop the k-means parametrizations; returns ``model``."""
    for sub in model.modules():
        if not parametrize.is_parametrized(sub):
            continue
        for name in list(sub.parametrizations.keys()):
            if has_codebook(sub, name):
                trainable = codebook_of(sub, name).original_requires_grad
                _remove_parametrization(sub, name, leave_parametrized=True)
                getattr(sub, name).requires_grad_(trainable)
    return model


@dataclass(frozen=True)
class LayerStorage:
    """Storage of one k-means layer: ``weights`` labels of ``bits`` bits, a codebook of
    ``centroids`` entries of ``value_bits`` bits (the float width, also that of the original)."""

    name: str
    weights: int
    bits: int
    centroids: int
    value_bits: int = 32

    @property
    def quantized_bits(self) -> int:
        return self.weights * self.bits + self.centroids * self.value_bits

    @property
    def float_bits(self) -> int:
        return self.weights * self.value_bits

    @property
    def bits_per_weight(self) -> float:
        return self.quantized_bits / self.weights

    @property
    def compression_ratio(self) -> float:
        return self.float_bits / self.quantized_bits


@dataclass(frozen=True)
class StorageReport:
    """Per-layer storage, and ``other_bits``: every other parameter (biases, BatchNorm, float
    layers) at its float width, for the whole-model ratio."""

    layers: tuple[LayerStorage, ...]
    other_bits: int

    @property
    def bits_per_weight(self) -> float:
        """Bits per quantized weight, codebooks included."""
        return sum(s.quantized_bits for s in self.layers) / max(1, sum(s.weights for s in self.layers))

    @property
    def compression_ratio(self) -> float:
        """Float size over k-means size of the quantized weights, codebooks included."""
        return sum(s.float_bits for s in self.layers) / max(1, sum(s.quantized_bits for s in self.layers))

    @property
    def model_compression_ratio(self) -> float:
        """The same over all parameters (the other ones stay float)."""
        before = sum(s.float_bits for s in self.layers) + self.other_bits
        return before / max(1, sum(s.quantized_bits for s in self.layers) + self.other_bits)


def kmeans_storage(model: nn.Module) -> StorageReport:
    """The :class:`StorageReport` of a (partly) k-means quantized ``model``."""
    layers, skip = [], set()
    for name, module in model.named_modules():
        if has_codebook(module):
            book = codebook_of(module)
            skip |= {id(book.codebook), id(module.parametrizations["weight"].original)}
            bits = book.codebook.element_size() * 8
            layers.append(LayerStorage(name, book.labels.numel(), book.bits, book.codebook.numel(), bits))
    other = sum(p.numel() * p.element_size() * 8 for p in model.parameters() if id(p) not in skip)
    return StorageReport(tuple(layers), other)
