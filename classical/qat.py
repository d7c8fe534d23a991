"""Quantization-aware training (QAT) with fake quantization and the straight-through estimator.

:func:`prepare_qat` returns a ``torch.fx`` copy of a model (the input is never changed) that
trains as its int8 TFLite deployment computes:

- BatchNorm is folded into the conv (or linear layer) before it, with its eval statistics;
  the copy trains without BatchNorm (``fold_bn=False`` keeps it);
- every Conv/Linear weight is fake-quantized through a ``torch.nn.utils.parametrize``
  reparametrization (:class:`WeightFakeQuant`): convs symmetric int8 per output channel
  in [-127, 127] (``QATConfig.weight``), linear layers per tensor (``linear_weight``, as
  TFLite Micro's fully-connected kernel and :mod:`tinyqml.classical.quantize` want);
- every activation an int8 graph holds is fake-quantized per tensor, asymmetric, with an
  EMA min/max observer (:class:`ActivationFakeQuant`): the model input, the output of each
  conv/linear/add with its ReLU/ReLU6 fused in, of any other op that computes a new
  tensor; pools, flatten, reshape and dropout keep their input's parameters.

The observers update in train mode (for ``freeze_observers_after`` steps, or always) and
are frozen in eval mode; the example input initializes them. Gradients pass the rounding
unchanged inside the range and are zero where values clamp. :func:`strip_qat` gives the
plain float model (folded weights, fake quantization removed) for post-training
conversion; :func:`qat_ranges` the observed ranges, keyed like the converter's tensors
(by the fx name of the op that produces each tensor: a conv, not the ReLU fused into it).

>>> import torch
>>> torch.manual_seed(0) and None
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
...                           torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
>>> qat = prepare_qat(net, torch.rand(8, 1, 8, 8))
>>> sorted(qat_ranges(qat))                   # input, conv (+BN +ReLU), linear
['_0', '_4', 'input_1']
>>> w = qat.get_submodule("0").weight        # on the int8 grid of its channel
>>> scale = w.abs().amax((1, 2, 3), keepdim=True) / 127
>>> bool(torch.allclose(w / scale, (w / scale).round(), atol=1e-4))
True
>>> plain = strip_qat(qat)
>>> bool(torch.allclose(plain(torch.ones(1, 1, 8, 8)), net.eval()(torch.ones(1, 1, 8, 8)), atol=1e-5))
True
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.nn.utils import parametrize

from tinyqml.classical.errors import AlreadyQuantizedError, CalibrationError, CompressionError, \
    UnsupportedLayerError
from tinyqml.classical.kmeans import Codebook, _remove_parametrization
from tinyqml.classical.linear_quant import INT8_ACTIVATION, INT8_WEIGHT, QuantParams, QuantSpec, fake_quantize, \
    params_for, params_from_range

__all__ = ["LINEAR_WEIGHT", "QATConfig", "WeightFakeQuant", "ActivationFakeQuant", "prepare_qat", "strip_qat",
           "qat_ranges", "is_qat_prepared"]

#: int8 fully-connected weights as TFLite Micro's reference kernel takes them: symmetric, per tensor
LINEAR_WEIGHT = QuantSpec(bits=8, symmetric=True, per_channel=False, narrow=True)

#: the attribute of a prepared GraphModule that holds its activation fake-quant modules
_ACTIVATIONS = "qat_activations"

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ACT_MODULES = (nn.ReLU, nn.ReLU6)
_ACT_FUNCTIONS = (F.relu, torch.relu, F.relu6)
_ACT_METHODS = ("relu", "relu_")
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")
_SHARED_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                   nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                   nn.AdaptiveMaxPool2d, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                   nn.Identity)
_SHARED_FUNCTIONS = (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, F.max_pool1d, F.max_pool2d,
                     F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.dropout,
                     operator.getitem)
_SHARED_METHODS = ("flatten", "view", "reshape", "squeeze", "unsqueeze", "contiguous", "mean")


@dataclass(frozen=True)
class QATConfig:
    """Conv weight spec (``weight``), linear weight spec (``linear_weight``), activation spec,
    observer momentum ``ema`` (``range = ema * range + (1 - ema) * batch range``), the number
    of training steps after which the observers stop (``None``: never), whether to fold
    BatchNorm."""

    weight: QuantSpec = INT8_WEIGHT
    activation: QuantSpec = INT8_ACTIVATION
    ema: float = 0.9
    freeze_observers_after: int | None = None
    fold_bn: bool = True
    linear_weight: QuantSpec = LINEAR_WEIGHT

    def __post_init__(self) -> None:
        for name in ("weight", "linear_weight", "activation"):
            spec = getattr(self, name)
            if not isinstance(spec, QuantSpec):
                raise CompressionError(f"QATConfig.{name} must be a QuantSpec, got {type(spec).__name__}")
            if name != "activation" and spec.per_channel and spec.axis != 0:
                raise CompressionError(f"QATConfig.{name}: per-channel weights go along the output axis 0, "
                                       f"got axis={spec.axis}")
        if self.activation.per_channel:
            raise CompressionError("QATConfig.activation must be per tensor (int8 activations are)")
        if isinstance(self.ema, bool) or not isinstance(self.ema, (int, float)) or not 0 <= self.ema < 1:
            raise CompressionError(f"QATConfig.ema must be in [0, 1), got {self.ema!r}")
        n = self.freeze_observers_after
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise CompressionError(f"QATConfig.freeze_observers_after must be None or an int >= 0, got {n!r}")
        if not isinstance(self.fold_bn, bool):
            raise CompressionError(f"QATConfig.fold_bn must be a bool, got {self.fold_bn!r}")


class WeightFakeQuant(nn.Module):
    """The parametrization ``w -> fake_quantize(w)`` with min-max parameters of the current
    ``w`` (per channel or per tensor, as ``spec`` says)."""

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec

    def params(self, weight: torch.Tensor) -> QuantParams:
        return params_for(weight, self.spec)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize(weight, self.params(weight))

    def extra_repr(self) -> str:
        return f"bits={self.spec.bits}, per_channel={self.spec.per_channel}"


class ActivationFakeQuant(nn.Module):
    """Per-tensor fake quantization of an activation with an EMA min/max observer.

    The observer updates on every training forward for ``freeze_after`` steps (``None``:
    always) and never in eval mode; ``point`` names the tensor."""

    def __init__(self, spec: QuantSpec, ema: float = 0.9, freeze_after: int | None = None, point: str = "") -> None:
        super().__init__()
        self.spec, self.ema, self.freeze_after, self.point = spec, ema, freeze_after, point
        self.calibrating = False
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    @property
    def frozen(self) -> bool:
        return self.freeze_after is not None and int(self.steps) >= self.freeze_after

    @property
    def range(self) -> tuple[float, float]:
        return float(self.lo), float(self.hi)

    def params(self) -> QuantParams:
        return params_from_range(self.lo, self.hi, self.spec)

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Move the range towards the min and max of ``x`` (set it on the first call)."""
        lo, hi = x.detach().min().float(), x.detach().max().float()
        if not bool(self.observed):
            self.lo.copy_(lo)
            self.hi.copy_(hi)
            self.observed.fill_(True)
            return
        self.lo.mul_(self.ema).add_((1 - self.ema) * lo)
        self.hi.mul_(self.ema).add_((1 - self.ema) * hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.observe(x)
        elif self.training:
            if not self.frozen:
                self.observe(x)
            self.steps += 1
        if not bool(self.observed):  # no range seen yet (only before prepare_qat has run its example)
            return x
        return fake_quantize(x, self.params())

    def extra_repr(self) -> str:
        return f"point={self.point!r}, range=({float(self.lo):.4g}, {float(self.hi):.4g}), ema={self.ema}"


# -- checks ----------------------------------------------------------------------------------------------

def is_qat_prepared(model: nn.Module) -> bool:
    """Whether ``model`` came from :func:`prepare_qat` (it has fake-quant modules)."""
    return isinstance(model, nn.Module) and (
        any(isinstance(m, ActivationFakeQuant) for m in model.modules()) or any(
            isinstance(p, WeightFakeQuant) for m in model.modules() if parametrize.is_parametrized(m)
            for ps in m.parametrizations.values() for p in ps))


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise CompressionError(f"prepare_qat takes an nn.Module, got {type(model).__name__}")
    if is_qat_prepared(model):
        raise AlreadyQuantizedError(f"{type(model).__name__} is already prepared for QAT (strip_qat gives the float "
                                    "model back)")
    for name, m in model.named_modules():
        if not parametrize.is_parametrized(m):
            continue
        kinds = [p for ps in m.parametrizations.values() for p in ps]
        if any(isinstance(p, Codebook) for p in kinds):
            raise AlreadyQuantizedError(f"layer {name!r} is k-means quantized; kmeans_squash it first")
        raise UnsupportedLayerError(f"layer {name!r} has parametrized tensors ({[type(p).__name__ for p in kinds]}); "
                                    "bake them in (squash) before QAT")


def _example(example_input: torch.Tensor) -> torch.Tensor:
    if not isinstance(example_input, torch.Tensor):
        raise CalibrationError(f"example_input must be a tensor batch, got {type(example_input).__name__}")
    x = example_input.detach().float()
    if x.numel() == 0 or not torch.isfinite(x).all():
        raise CalibrationError("example_input must be a non-empty batch of finite values")
    return x


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types; its message says which construct failed
        raise UnsupportedLayerError(f"torch.fx cannot trace {type(model).__name__}: {exc}") from exc


def _check_layers(gm: torch.fx.GraphModule) -> None:
    """Refuse weights that QAT would leave in float: unknown weighted layers, loose parameters."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedLayerError(f"prepare_qat handles models with one input, this one takes {len(placeholders)}")
    for node in gm.graph.nodes:
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if not isinstance(m, _WEIGHTED + _BATCHNORM) and any(True for _ in m.parameters()):
                raise UnsupportedLayerError(f"layer {node.target!r} ({type(m).__name__}) has weights that QAT does "
                                            "not quantize; supported: Conv1d/2d/3d, Linear, BatchNorm")
        elif node.op == "get_attr" and isinstance(_attr(gm, node.target), nn.Parameter):
            raise UnsupportedLayerError(f"parameter {node.target!r} is used outside a Conv/Linear layer; QAT cannot "
                                        "quantize it")


def _attr(gm: torch.fx.GraphModule, target: str) -> object:
    obj: object = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


# -- BatchNorm folding -----------------------------------------------------------------------------------

@torch.no_grad()
def _fold_bn(layer: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn`` (eval statistics) into the conv/linear ``layer`` before it, in place."""
    var = bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    k = gamma / torch.sqrt(var + bn.eps)
    w = layer.weight
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(var)
    w.copy_((w.double() * k.reshape(-1, *([1] * (w.dim() - 1)))).to(w.dtype))
    new_bias = ((bias - bn.running_mean.double()) * k + beta).to(w.dtype)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias)
    else:
        layer.bias.copy_(new_bias)


def _fold_batchnorms(gm: torch.fx.GraphModule) -> None:
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), _BATCHNORM):
            continue
        bn, src = gm.get_submodule(node.target), node.args[0]
        layer = gm.get_submodule(src.target) if isinstance(src, torch.fx.Node) and src.op == "call_module" else None
        if (not isinstance(layer, _WEIGHTED) or len(src.users) != 1 or calls[src.target] != 1
                or calls[node.target] != 1 or bn.running_var is None or layer.weight.shape[0] != bn.num_features):
            raise UnsupportedLayerError(f"BatchNorm {node.target!r} must directly follow a Conv/Linear layer (used "
                                        "once, read only by it) and track running statistics to be folded; "
                                        "use QATConfig(fold_bn=False) to keep it")
        _fold_bn(layer, bn)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        gm.delete_submodule(node.target)


# -- where activations are quantized ---------------------------------------------------------------------

def _kind(gm: torch.fx.GraphModule, node: torch.fx.Node) -> str:
    """``weighted``, ``bn``, ``act``, ``add``, ``shared`` (keeps the input's parameters), ``input``,
    ``other`` (a new tensor) or ``none``."""
    if node.op == "placeholder":
        return "input"
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        for kind, types in (("weighted", _WEIGHTED), ("bn", _BATCHNORM), ("act", _ACT_MODULES),
                            ("shared", _SHARED_MODULES)):
            if isinstance(m, types):
                return kind
        return "other"
    if node.op == "call_function":
        for kind, funcs in (("act", _ACT_FUNCTIONS), ("add", _ADD_FUNCTIONS), ("shared", _SHARED_FUNCTIONS)):
            if any(node.target is f for f in funcs):
                return kind
        return "other"
    if node.op == "call_method":
        for kind, names in (("act", _ACT_METHODS), ("add", _ADD_METHODS), ("shared", _SHARED_METHODS)):
            if node.target in names:
                return kind
        return "other"
    return "none"


def _is_float_tensor(node: torch.fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return isinstance(meta, TensorMetadata) and meta.dtype.is_floating_point


def _sole_user(node: torch.fx.Node) -> torch.fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _chain(gm: torch.fx.GraphModule, head: torch.fx.Node, kind: str) -> list[torch.fx.Node]:
    """``head`` and the nodes fused into it: an unfolded BatchNorm after a conv/linear layer,
    then a ReLU/ReLU6 after a conv/linear layer or an add."""
    chain = [head]
    nxt = _sole_user(head)
    if kind == "weighted" and nxt is not None and _kind(gm, nxt) == "bn":
        chain.append(nxt)
        nxt = _sole_user(nxt)
    if kind in ("weighted", "add") and nxt is not None and _kind(gm, nxt) == "act" and nxt.args[0] is chain[-1]:
        chain.append(nxt)
    return chain


def _quant_points(gm: torch.fx.GraphModule) -> list[tuple[torch.fx.Node, torch.fx.Node]]:
    """``(head, end)`` of every tensor that gets its own int8 parameters: fake-quant goes after ``end``."""
    points, fused = [], set()
    for node in gm.graph.nodes:
        kind = _kind(gm, node)
        if node in fused or kind in ("shared", "none") or not _is_float_tensor(node):
            continue
        chain = [node] if kind == "input" else _chain(gm, node, kind)
        fused.update(chain)
        points.append((node, chain[-1]))
    return points


def _insert_activation_quant(gm: torch.fx.GraphModule, config: QATConfig, device: torch.device) -> None:
    points = _quant_points(gm)
    store = nn.ModuleDict()
    gm.add_module(_ACTIVATIONS, store)
    for head, end in points:
        fq = ActivationFakeQuant(config.activation, config.ema, config.freeze_observers_after, head.name)
        key = f"fq_{head.name}"  # a node may be named like a ModuleDict method ("to", "float")
        store[key] = fq.to(device)
        with gm.graph.inserting_after(end):
            node = gm.graph.call_module(f"{_ACTIVATIONS}.{key}", (end,))
        end.replace_all_uses_with(node, delete_user_cb=lambda user, node=node: user is not node)


def _attach_weight_quant(gm: torch.fx.GraphModule, config: QATConfig) -> None:
    done: set[int] = set()
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = gm.get_submodule(node.target)
        if isinstance(m, _WEIGHTED) and id(m) not in done:
            spec = config.linear_weight if isinstance(m, nn.Linear) else config.weight
            parametrize.register_parametrization(m, "weight", WeightFakeQuant(spec))
            done.add(id(m))


def _calibrate(gm: torch.fx.GraphModule, x: torch.Tensor) -> None:
    observers = [m for m in gm.modules() if isinstance(m, ActivationFakeQuant)]
    for m in observers:
        m.calibrating = True
    try:
        with torch.no_grad():
            gm(x)
    finally:
        for m in observers:
            m.calibrating = False


def _propagate_shapes(gm: torch.fx.GraphModule, x: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(x)
    except RuntimeError as exc:
        raise CalibrationError(f"example_input of shape {tuple(x.shape)} does not run through the model: {exc}") \
            from exc


# -- public API ------------------------------------------------------------------------------------------

def prepare_qat(model: nn.Module, example_input: torch.Tensor, config: QATConfig = QATConfig()) -> torch.fx.GraphModule:
    """A fake-quantized copy of ``model`` for quantization-aware training (same train/eval
    mode as ``model``); ``example_input`` (a batch) fixes shapes and initializes the observers."""
    _check_model(model)
    if not isinstance(config, QATConfig):
        raise CompressionError(f"config must be a QATConfig, got {type(config).__name__}")
    x = _example(example_input)
    gm = _trace(copy.deepcopy(model).eval())
    _check_layers(gm)
    if config.fold_bn:
        _fold_batchnorms(gm)
    gm.recompile()
    _propagate_shapes(gm, x)
    _attach_weight_quant(gm, config)
    _insert_activation_quant(gm, config, x.device)
    gm.graph.lint()
    gm.recompile()
    _calibrate(gm, x)
    return gm.train(model.training)


def _activation_modules(model: nn.Module) -> nn.ModuleDict:
    if not is_qat_prepared(model) or not isinstance(getattr(model, _ACTIVATIONS, None), nn.ModuleDict):
        raise CompressionError(f"{type(model).__name__} was not prepared by prepare_qat")
    return getattr(model, _ACTIVATIONS)


def qat_ranges(model: torch.fx.GraphModule) -> dict[str, tuple[float, float]]:
    """Observed ``(lo, hi)`` of every activation fake-quant point, by the fx name of the op
    that produces the tensor (the model input by its placeholder name)."""
    return {fq.point: fq.range for fq in _activation_modules(model).values()}


def strip_qat(model: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A plain float copy of a prepared model: the folded float weights, no fake quantization."""
    _activation_modules(model)
    out = copy.deepcopy(model)
    for node in list(out.graph.nodes):
        if node.op == "call_module" and isinstance(out.get_submodule(node.target), ActivationFakeQuant):
            node.replace_all_uses_with(node.args[0])
            out.graph.erase_node(node)
    out.delete_submodule(_ACTIVATIONS)
    for name, m in list(out.named_modules()):
        if parametrize.is_parametrized(m, "weight"):
            kinds = list(m.parametrizations["weight"])
            if len(kinds) != 1 or not isinstance(kinds[0], WeightFakeQuant):
                raise UnsupportedLayerError(f"layer {name!r} has other weight parametrizations "
                                            f"({[type(p).__name__ for p in kinds]}); squash them before strip_qat")
            _remove_parametrization(m, "weight", leave_parametrized=False)
    out.graph.lint()
    out.recompile()
    return out
