"""Channel pruning with physical removal: coupled channel groups found with ``torch.fx``, ranked on
the search engine, rebuilt as smaller ``Conv2d``/``BatchNorm2d``/``Linear`` modules.

1. :func:`channel_groups` traces the model (``torch.fx.symbolic_trace`` + shape
   propagation on an example input) and joins every channel index that must go
   together into a :class:`ChannelGroup`: a conv's (or hidden linear's) output
   channels (:attr:`Role.OUT`), the BatchNorm after it and any depthwise conv on them
   (``groups == channels``: in and out are one group, :attr:`Role.MEMBER`), the input
   channels of every consumer conv/linear (:attr:`Role.IN`; after a ``Flatten`` channel
   ``c`` is the block of ``H*W`` input columns ``c*H*W ...``), and all operands of an
   ``add`` (a residual stream: every block that reads or writes it is pruned the
   same way). Groups that touch the model's input or output stay whole. Activations,
   pooling, dropout and ``Identity`` pass channels through; anything else (a grouped
   conv that is not depthwise, ``torch.cat``, an unknown module or function) raises
   :class:`UnsupportedLayerError` naming it.
2. :func:`plan_channels` scores each channel by the joint L2 norm (``norm=p``: L_p) of all
   its slices in the group and picks the channels to drop through the engine: a
   :class:`~tinyqml.search.FunctionImportance` carrying those joint scores on the group
   leader's :class:`~tinyqml.search.Target` with ``Channel(0)`` granularity, then
   :meth:`~tinyqml.search.Pruner.prune_to`. The ratio is uniform or per layer; a group
   keeps at least ``min_channels`` (>= 1), rounded up to a multiple of ``round_to``.
3. :func:`apply_plan` rebuilds a copy of the model with the channels removed (a plain
   ``nn.Module`` of the same class, fx-traceable again); :func:`mask_plan` zeroes the
   same channels in a copy of the original, which gives the same outputs.
   :func:`prune_channels` does all three and reports MACs before and after
   (:func:`tinyqml.classical.costs.profile_net`).

>>> import torch
>>> from tinyqml.classical.models import SmallCNN, SmallCNNConfig
>>> net = SmallCNN(SmallCNNConfig(widths=(8, 16, 16)), seed=0).eval()
>>> x = torch.rand(4, 1, 8, 8)
>>> result = prune_channels(net, x, ChannelPruneConfig(ratio=0.5))
>>> [m.out_channels for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
[4, 8, 8]
>>> result.model.head[-1].in_features, round(result.macs_ratio, 2)
(128, 3.77)
>>> bool(torch.allclose(result.model(x), mask_plan(net, result.plan)(x), atol=1e-5))
True
"""

from __future__ import annotations

import enum
import math
import operator
from dataclasses import dataclass, replace
from typing import Mapping

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from tinyqml.classical.costs import NetProfile, profile_net
from tinyqml.classical.errors import CompressionError, LayerNotFoundError, UnsupportedLayerError
from tinyqml.classical.pruning import baked_copy
from tinyqml.search import Channel, FunctionImportance, Pruner, PruningError, Target
from tinyqml.search.schedules import check_sparsity

__all__ = ["Role", "Slice", "ChannelGroup", "channel_groups", "ChannelPruneConfig", "ChannelPlan",
           "plan_channels", "apply_plan", "mask_plan", "ChannelPruneResult", "prune_channels", "ratio_for_macs"]


class Role(enum.Enum):
    """How a module's tensors index a group's channels."""

    OUT = "out"        # weight dim 0 (and bias): a conv's or linear's output channels
    IN = "in"          # weight dim 1: a consumer's input channels (``factor`` columns each)
    MEMBER = "member"  # every per-channel tensor: BatchNorm, depthwise conv


@dataclass(frozen=True)
class Slice:
    module: str
    role: Role
    factor: int = 1


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are kept or removed together; ``name`` is its first producer (or ``"input"``);
    ``fixed`` says why the group cannot be pruned (empty: it can); ``residual``: joined by an add."""

    name: str
    channels: int
    slices: tuple[Slice, ...]
    fixed: str = ""
    residual: bool = False

    @property
    def producers(self) -> tuple[str, ...]:
        return tuple(s.module for s in self.slices if s.role is Role.OUT)


_CONV = (nn.Conv1d, nn.Conv2d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardtanh, nn.ELU, nn.Tanh,
                 nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d, nn.Identity)
_PASS_FUNCTIONS = {F.relu, F.relu6, torch.relu, F.leaky_relu, F.silu, F.gelu, F.hardswish, F.hardtanh, F.elu,
                   torch.tanh, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
                   F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout}
_PASS_METHODS = {"relu", "relu_", "tanh", "contiguous", "clone"}
_ADD_FUNCTIONS = {operator.add, torch.add, operator.iadd}
_ADD_METHODS = {"add", "add_"}
_CAT = {torch.cat, torch.concat, torch.stack}


@dataclass(frozen=True)
class _Value:
    """The channel space of one traced tensor: union-find id, columns per channel, flattened or not."""

    uid: int
    factor: int = 1
    flat: bool = False


class _Analysis:
    """Union-find over channel spaces, filled node by node."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.parent: list[int] = []
        self.slices: dict[int, list[Slice]] = {}
        self.channels: dict[int, int] = {}
        self.fixed: dict[int, str] = {}
        self.residual: set[int] = set()
        self.values: dict[torch.fx.Node, _Value] = {}
        self.calls: dict[str, int] = {}

    def new(self, channels: int) -> int:
        self.parent.append(len(self.parent))
        uid = len(self.parent) - 1
        self.slices[uid], self.channels[uid] = [], channels
        return uid

    def find(self, u: int) -> int:
        while self.parent[u] != u:
            self.parent[u] = self.parent[self.parent[u]]
            u = self.parent[u]
        return u

    def union(self, a: int, b: int, where: str) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.channels[ra] != self.channels[rb]:
            raise UnsupportedLayerError(f"{where} joins {self.channels[ra]} and {self.channels[rb]} channels")
        lo, hi = min(ra, rb), max(ra, rb)
        self.parent[hi] = lo
        self.slices[lo] += self.slices.pop(hi)
        if hi in self.fixed:
            self.fixed.setdefault(lo, self.fixed.pop(hi))
        if hi in self.residual:
            self.residual.add(lo)
        return lo

    def add_slice(self, uid: int, s: Slice) -> None:
        self.slices[self.find(uid)].append(s)


def _shape(node: torch.fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _tensor_args(node: torch.fx.Node) -> list[torch.fx.Node]:
    args = [*node.args, *node.kwargs.values()]
    return [a for a in args if isinstance(a, torch.fx.Node) and _shape(a) is not None]


def _input_value(an: _Analysis, node: torch.fx.Node, what: str) -> _Value:
    ins = _tensor_args(node)
    if len(ins) != 1 or ins[0] not in an.values:
        raise UnsupportedLayerError(f"{what} at node {node.name!r} must take exactly one tensor from the model")
    return an.values[ins[0]]


def _conv(an: _Analysis, node: torch.fx.Node, name: str, m: nn.Module) -> _Value:
    v = _input_value(an, node, f"conv {name!r}")
    if v.flat:
        raise UnsupportedLayerError(f"conv {name!r} reads a flattened tensor")
    if m.groups == 1:
        an.add_slice(v.uid, Slice(name, Role.IN))
        out = an.new(m.out_channels)
        an.add_slice(out, Slice(name, Role.OUT))
        return _Value(out)
    if m.groups == m.in_channels == m.out_channels:
        an.add_slice(v.uid, Slice(name, Role.MEMBER))
        return v
    raise UnsupportedLayerError(f"grouped conv {name!r} (groups={m.groups}, in {m.in_channels}, out "
                                f"{m.out_channels}) is not depthwise: channel pruning handles groups=1 or "
                                f"groups == in == out channels")


def _linear(an: _Analysis, node: torch.fx.Node, name: str, m: nn.Linear) -> _Value:
    v = _input_value(an, node, f"linear {name!r}")
    shape = _shape(_tensor_args(node)[0])
    if len(shape) != 2:
        raise UnsupportedLayerError(f"linear {name!r} reads a {len(shape)}-d tensor; channel pruning needs "
                                    f"[batch, features] (flatten first)")
    an.add_slice(v.uid, Slice(name, Role.IN, v.factor))
    out = an.new(m.out_features)
    an.add_slice(out, Slice(name, Role.OUT))
    return _Value(out, 1, True)


def _flatten(an: _Analysis, node: torch.fx.Node, start: int, end: int) -> _Value:
    v = _input_value(an, node, "flatten")
    shape = _shape(_tensor_args(node)[0])
    if start != 1 or end not in (-1, len(shape) - 1) or v.flat:
        raise UnsupportedLayerError(f"flatten at node {node.name!r} must flatten dims 1.. of an unflattened "
                                    f"tensor (start_dim=1), got start_dim={start}, end_dim={end}")
    return _Value(v.uid, math.prod(shape[2:]), True)


def _module(an: _Analysis, node: torch.fx.Node) -> _Value:
    name, m = node.target, an.modules[node.target]
    if isinstance(m, (*_CONV, *_NORM, nn.Linear)):
        an.calls[name] = an.calls.get(name, 0) + 1
        if an.calls[name] > 1:
            raise UnsupportedLayerError(f"layer {name!r} is called more than once; channel pruning needs one "
                                        f"call per layer with weights")
    if isinstance(m, _CONV):
        return _conv(an, node, name, m)
    if isinstance(m, nn.Linear):
        return _linear(an, node, name, m)
    if isinstance(m, _NORM):
        v = _input_value(an, node, f"norm {name!r}")
        if v.factor != 1:
            raise UnsupportedLayerError(f"norm {name!r} normalises flattened features of several per channel")
        an.add_slice(v.uid, Slice(name, Role.MEMBER))
        return v
    if isinstance(m, nn.Flatten):
        return _flatten(an, node, m.start_dim, m.end_dim)
    if isinstance(m, _PASS_MODULES):
        return _input_value(an, node, f"layer {name!r}")
    raise UnsupportedLayerError(f"layer {name!r} ({type(m).__name__}) is not supported by channel pruning; it "
                                f"handles Conv1d/2d, BatchNorm1d/2d, Linear, Flatten, activations, pooling, "
                                f"dropout and adds")


def _add(an: _Analysis, node: torch.fx.Node) -> _Value:
    ins = [a for a in _tensor_args(node) if a in an.values]
    if not ins:
        raise UnsupportedLayerError(f"add at node {node.name!r} has no tensor operand from the model")
    shapes = {_shape(a) for a in ins}
    vals = [an.values[a] for a in ins]
    if len(shapes) != 1 or len({(v.factor, v.flat) for v in vals}) != 1:
        raise UnsupportedLayerError(f"add at node {node.name!r} of tensors shaped {sorted(shapes)} (broadcasting "
                                    f"adds are not supported)")
    uid = vals[0].uid
    for v in vals[1:]:
        uid = an.union(uid, v.uid, f"add at node {node.name!r}")
    if len(vals) > 1:
        an.residual.add(an.find(uid))
    return replace(vals[0], uid=uid)


def _function(an: _Analysis, node: torch.fx.Node) -> _Value:
    fn = node.target
    if fn in _CAT:
        raise UnsupportedLayerError(f"concatenation ({getattr(fn, '__name__', fn)} at node {node.name!r}) is not "
                                    f"supported by channel pruning")
    if fn in _ADD_FUNCTIONS:
        return _add(an, node)
    if fn is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return _flatten(an, node, start, end)
    if fn in _PASS_FUNCTIONS:
        return _input_value(an, node, getattr(fn, "__name__", str(fn)))
    raise UnsupportedLayerError(f"function {getattr(fn, '__name__', fn)!r} at node {node.name!r} is not "
                                f"supported by channel pruning")


def _method(an: _Analysis, node: torch.fx.Node) -> _Value:
    if node.target in _ADD_METHODS:
        return _add(an, node)
    if node.target == "flatten":
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return _flatten(an, node, start, end)
    if node.target in _PASS_METHODS:
        return _input_value(an, node, f"method {node.target!r}")
    raise UnsupportedLayerError(f"tensor method {node.target!r} at node {node.name!r} is not supported by "
                                f"channel pruning")


def _trace(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    if not isinstance(model, nn.Module):
        raise CompressionError(f"channel pruning needs an nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor) or example.dim() < 2:
        raise CompressionError("channel pruning needs an example input batch tensor [N, C, ...]")
    scratch = baked_copy(model).eval()
    try:
        gm = torch.fx.symbolic_trace(scratch)
    except Exception as exc:  # fx raises TraceError, TypeError, ... for untraceable forwards
        raise UnsupportedLayerError(f"{type(model).__name__} cannot be traced by torch.fx: {exc}") from exc
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except RuntimeError as exc:  # a shape or dtype mismatch inside the forward
        raise CompressionError(f"the example input {tuple(example.shape)} does not run through "
                               f"{type(model).__name__}: {exc}") from exc
    return gm


def channel_groups(model: nn.Module, example: torch.Tensor) -> tuple[ChannelGroup, ...]:
    """The coupled channel groups of ``model`` (traced on ``example``), in graph order."""
    gm = _trace(model, example)
    an = _Analysis(gm)
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            shape = _shape(node)
            if shape is not None:
                uid = an.new(shape[1] if len(shape) > 1 else 1)
                an.fixed[uid] = "model input"
                an.values[node] = _Value(uid)
        elif node.op == "call_module":
            an.values[node] = _module(an, node)
        elif node.op == "call_function":
            an.values[node] = _function(an, node)
        elif node.op == "call_method":
            an.values[node] = _method(an, node)
        elif node.op == "get_attr":
            raise UnsupportedLayerError(f"forward reads the tensor {node.target!r} directly (node {node.name!r}); "
                                        f"channel pruning needs every weight inside a module")
        elif node.op == "output":
            for a in _tensor_args(node):
                if a in an.values:
                    root = an.find(an.values[a].uid)
                    an.fixed.setdefault(root, "model output")
    return _groups(an)


def _groups(an: _Analysis) -> tuple[ChannelGroup, ...]:
    out = []
    for uid in sorted({an.find(u) for u in range(len(an.parent))}):
        slices = tuple(an.slices[uid])
        producers = [s.module for s in slices if s.role is Role.OUT]
        name = producers[0] if producers else ("input" if an.fixed.get(uid) == "model input" else f"group{uid}")
        fixed = an.fixed.get(uid, "" if producers else "no layer produces these channels")
        out.append(ChannelGroup(name, an.channels[uid], slices, fixed, uid in an.residual))
    return tuple(out)


@dataclass(frozen=True)
class ChannelPruneConfig:
    """``ratio``: the fraction of each group's channels removed (a number, or ``{producer layer name:
    ratio}``, other groups untouched); a group keeps at least ``min_channels``, rounded up to a
    multiple of ``round_to``; channels are ranked by their joint L_``norm`` norm;
    ``prune_residual=False`` keeps residual streams (groups joined by an add) whole."""

    ratio: float | Mapping[str, float] = 0.5
    round_to: int = 1
    min_channels: int = 1
    norm: float = 2.0
    prune_residual: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.ratio, Mapping):
            for name, r in self.ratio.items():
                check_sparsity(r, f"ratio of {name!r}")
        else:
            check_sparsity(self.ratio, "ratio")
        for name in ("round_to", "min_channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PruningError(f"{name} must be an int >= 1, got {v!r}")
        if isinstance(self.norm, bool) or not isinstance(self.norm, (int, float)) or not self.norm > 0:
            raise PruningError(f"norm must be a number > 0, got {self.norm!r}")


@dataclass(frozen=True)
class ChannelPlan:
    """The groups of a model and the channels each keeps (``keep[group name]``, sorted)."""

    groups: tuple[ChannelGroup, ...]
    keep: Mapping[str, tuple[int, ...]]

    def kept(self, group: ChannelGroup) -> tuple[int, ...]:
        return self.keep.get(group.name, tuple(range(group.channels)))

    def removed(self, group: ChannelGroup) -> tuple[int, ...]:
        keep = set(self.kept(group))
        return tuple(c for c in range(group.channels) if c not in keep)

    def widths(self) -> dict[str, tuple[int, int]]:
        """``{group name: (channels before, after)}`` of the prunable groups."""
        return {g.name: (g.channels, len(self.kept(g))) for g in self.groups if not g.fixed}


def _n_keep(channels: int, ratio: float, config: ChannelPruneConfig) -> int:
    keep = channels - math.floor(ratio * channels + 0.5)
    keep = max(keep, config.min_channels, 1)
    keep = -(-keep // config.round_to) * config.round_to
    return min(channels, keep)


def _ratios(groups: tuple[ChannelGroup, ...], config: ChannelPruneConfig) -> dict[str, float]:
    open_ = [g for g in groups if not g.fixed and not (g.residual and not config.prune_residual)]
    if not isinstance(config.ratio, Mapping):
        return {g.name: float(config.ratio) for g in open_}
    owner = {p: g for g in open_ for p in g.producers}
    fixed = {p: g for g in groups if g not in open_ for p in g.producers}
    out: dict[str, float] = {}
    for name, r in config.ratio.items():
        if name in fixed:
            why = fixed[name].fixed or "residual stream (prune_residual=False)"
            raise PruningError(f"the output channels of {name!r} cannot be pruned: {why}")
        if name not in owner:
            raise LayerNotFoundError(f"no prunable layer {name!r}; layers whose output channels can be pruned: "
                                     f"{list(owner)}")
        g = owner[name]
        if g.name in out and out[g.name] != float(r):
            raise PruningError(f"layers {[p for p in g.producers if p in config.ratio]} share one channel group "
                               f"(a residual stream) but were given different ratios")
        out[g.name] = float(r)
    return out


def _as_channels(w: torch.Tensor, s: Slice, channels: int) -> torch.Tensor:
    """``w`` with one row per channel of the group (all entries of that channel's slice)."""
    if s.role is Role.IN:
        cols = w.transpose(0, 1)  # [in, out, ...]
        return cols.reshape(channels, s.factor, *cols.shape[1:]).reshape(channels, -1)
    return w.reshape(channels, -1)


def _joint_scores(modules: dict[str, nn.Module], g: ChannelGroup, p: float) -> torch.Tensor:
    score = torch.zeros(g.channels, dtype=torch.float64)
    for s in g.slices:
        w = getattr(modules[s.module], "weight", None)
        if isinstance(w, torch.Tensor):
            score += _as_channels(w.detach().to(torch.float64), s, g.channels).abs().pow(p).sum(1)
    return score


def _rank(leader: nn.Module, scores: torch.Tensor, n_remove: int) -> tuple[int, ...]:
    """The kept channels: the engine's pruner on the leader's weight, ``Channel(0)``, joint scores."""
    def joint(weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return scores.to(weight.dtype).reshape(-1, *([1] * (weight.dim() - 1))).expand_as(weight)

    target = Target(leader, "weight", Channel(0))
    Pruner([target], FunctionImportance(joint)).prune_to(n_remove / len(scores))
    alive = target.mask.mask.reshape(len(scores), -1)[:, 0] != 0
    return tuple(int(c) for c in torch.nonzero(alive).squeeze(1))


def plan_channels(model: nn.Module, example: torch.Tensor, config: ChannelPruneConfig = ChannelPruneConfig(),
                  groups: tuple[ChannelGroup, ...] | None = None) -> ChannelPlan:
    """Which channels of each group to keep (``groups``: a :func:`channel_groups` result to reuse)."""
    if not isinstance(config, ChannelPruneConfig):
        raise PruningError(f"config must be a ChannelPruneConfig, got {type(config).__name__}")
    groups = channel_groups(model, example) if groups is None else groups
    ratios = _ratios(groups, config)
    scratch = baked_copy(model)  # the engine's masks go on a copy
    modules = dict(scratch.named_modules())
    todo = {g.name: g.channels - _n_keep(g.channels, ratios[g.name], config) for g in groups if g.name in ratios}
    scores = {g.name: _joint_scores(modules, g, config.norm) for g in groups if todo.get(g.name)}  # before masking
    keep = {name: _rank(modules[name], s, todo[name]) for name, s in scores.items()}
    return ChannelPlan(groups, keep)


def _index(plan: ChannelPlan) -> dict[str, dict[Role, tuple[torch.Tensor, Slice, int]]]:
    per: dict[str, dict[Role, tuple[torch.Tensor, Slice, int]]] = {}
    for g in plan.groups:
        idx = torch.tensor(plan.kept(g), dtype=torch.int64)
        for s in g.slices:
            per.setdefault(s.module, {})[s.role] = (idx, s, g.channels)
    return per


def _columns(idx: torch.Tensor, factor: int) -> torch.Tensor:
    return (idx[:, None] * factor + torch.arange(factor)).reshape(-1)


def _check_width(name: str, have: int, want: int) -> None:
    if have != want:
        raise CompressionError(f"layer {name!r} has {have} channels where the plan expects {want}: the plan was "
                               f"made for another model")


def _new_conv(m: nn.Module, name: str, roles: dict) -> nn.Module:
    w, b = m.weight.detach(), None if m.bias is None else m.bias.detach()
    if Role.MEMBER in roles:  # depthwise
        idx, _, c = roles[Role.MEMBER]
        _check_width(name, m.out_channels, c)
        w, b, c_in, c_out, groups = w[idx], None if b is None else b[idx], len(idx), len(idx), len(idx)
    else:
        out_idx = roles[Role.OUT][0] if Role.OUT in roles else torch.arange(m.out_channels)
        in_idx = roles[Role.IN][0] if Role.IN in roles else torch.arange(m.in_channels)
        w, b = w[out_idx][:, in_idx], None if b is None else b[out_idx]
        c_in, c_out, groups = len(in_idx), len(out_idx), 1
    new = type(m)(c_in, c_out, m.kernel_size, m.stride, m.padding, m.dilation, groups, b is not None,
                  m.padding_mode, device=w.device, dtype=w.dtype)
    return _load(new, w, b)


def _new_linear(m: nn.Linear, name: str, roles: dict) -> nn.Module:
    w, b = m.weight.detach(), None if m.bias is None else m.bias.detach()
    rows = roles[Role.OUT][0] if Role.OUT in roles else torch.arange(m.out_features)
    if Role.IN in roles:
        idx, s, c = roles[Role.IN]
        _check_width(name, m.in_features, c * s.factor)
        cols = _columns(idx, s.factor)
    else:
        cols = torch.arange(m.in_features)
    w, b = w[rows][:, cols], None if b is None else b[rows]
    return _load(nn.Linear(len(cols), len(rows), b is not None, device=w.device, dtype=w.dtype), w, b)


def _new_norm(m: nn.Module, name: str, roles: dict) -> nn.Module:
    idx, _, c = roles[Role.MEMBER]
    _check_width(name, m.num_features, c)
    new = type(m)(len(idx), m.eps, m.momentum, m.affine, m.track_running_stats,
                  device=idx.device if m.weight is None else m.weight.device)
    with torch.no_grad():
        if m.affine:
            new.weight.copy_(m.weight.detach()[idx])
            new.bias.copy_(m.bias.detach()[idx])
        if m.track_running_stats:
            new.running_mean.copy_(m.running_mean[idx])
            new.running_var.copy_(m.running_var[idx])
            new.num_batches_tracked.copy_(m.num_batches_tracked)
    return new


def _load(new: nn.Module, w: torch.Tensor, b: torch.Tensor | None) -> nn.Module:
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def apply_plan(model: nn.Module, plan: ChannelPlan) -> nn.Module:
    """A copy of ``model`` with the plan's channels physically removed (masks baked in first)."""
    if not isinstance(plan, ChannelPlan):
        raise CompressionError(f"plan must be a ChannelPlan, got {type(plan).__name__}")
    new = baked_copy(model)
    for name, roles in _index(plan).items():
        if all(len(idx) == c for idx, _, c in roles.values()):
            continue
        m = new.get_submodule(name)
        if isinstance(m, _CONV):
            built = _new_conv(m, name, roles)
        elif isinstance(m, nn.Linear):
            built = _new_linear(m, name, roles)
        else:
            built = _new_norm(m, name, roles)
        built.train(m.training)
        _set_module(new, name, built)
    return new


def mask_plan(model: nn.Module, plan: ChannelPlan) -> nn.Module:
    """A copy of ``model`` whose removed channels output exactly zero (producer rows, biases, norms
    and depthwise filters zeroed); equal to :func:`apply_plan` where activations keep 0 at 0."""
    new = baked_copy(model)
    with torch.no_grad():
        for g in plan.groups:
            gone = torch.tensor(plan.removed(g), dtype=torch.int64)
            if not len(gone):
                continue
            for s in g.slices:
                if s.role is Role.IN:
                    continue
                m = new.get_submodule(s.module)
                for t in (getattr(m, "weight", None), getattr(m, "bias", None), getattr(m, "running_mean", None)):
                    if isinstance(t, torch.Tensor):
                        t[gone] = 0
    return new


@dataclass(frozen=True, eq=False)
class ChannelPruneResult:
    """The rebuilt model, its plan, and the costs (MACs, params) before and after."""

    model: nn.Module
    plan: ChannelPlan
    before: NetProfile
    after: NetProfile

    @property
    def macs_ratio(self) -> float:
        """Dense MACs over pruned MACs (2.0: half the MACs)."""
        return self.before.macs / max(1, self.after.macs)


def prune_channels(model: nn.Module, example: torch.Tensor,
                   config: ChannelPruneConfig = ChannelPruneConfig()) -> ChannelPruneResult:
    """Plan and apply channel pruning; ``model`` itself is left unchanged."""
    plan = plan_channels(model, example, config)
    pruned = apply_plan(model, plan)
    one = example[:1]
    return ChannelPruneResult(pruned, plan, profile_net(model, one), profile_net(pruned, one))


def ratio_for_macs(model: nn.Module, example: torch.Tensor, macs_fraction: float,
                   config: ChannelPruneConfig = ChannelPruneConfig(), steps: int = 14) -> float:
    """The smallest uniform ratio (bisection to ``2**-steps``) whose pruned model has at most
    ``macs_fraction`` of the dense MACs (:class:`PruningError` if none below 0.99 does)."""
    if isinstance(macs_fraction, bool) or not isinstance(macs_fraction, (int, float)) or not 0 < macs_fraction < 1:
        raise PruningError(f"macs_fraction must be in (0, 1), got {macs_fraction!r}")
    groups = channel_groups(model, example)
    one = example[:1]
    dense = profile_net(model, one).macs

    def macs(r: float) -> int:
        plan = plan_channels(model, example, replace(config, ratio=r), groups)
        return profile_net(apply_plan(model, plan), one).macs

    lo, hi = 0.0, 0.99
    if macs(hi) > macs_fraction * dense:
        raise PruningError(f"no uniform ratio below {hi} brings the MACs to {macs_fraction:g} of {dense}")
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if macs(mid) <= macs_fraction * dense else (mid, hi)
    return hi
