"""Torch model -> :class:`~tinyqml.classical.graph.Graph`, through ``torch.fx``.

The model is traced in eval mode with an example input (its shapes fixed by it).
BatchNorm2d after a convolution is folded into the convolution's weight and bias,
ReLU/ReLU6 after a convolution, a linear layer or an add are fused into it, Dropout and
Identity vanish, and torch's channel-first flatten order is moved into the columns of the
fully-connected layer that reads it (so the graph can stay NHWC, as TFLite wants).

Supported: ``Conv2d`` (groups 1 or depthwise, zero padding, dilation 1), ``BatchNorm2d``,
``ReLU``/``ReLU6`` (modules or functions), ``Linear``, ``Flatten``/``torch.flatten``,
``MaxPool2d``/``AvgPool2d`` without padding, ``AdaptiveAvgPool2d(1)`` and
``x.mean((2, 3))``, ``Dropout``, ``Identity`` and ``+``. Anything else raises
:class:`~tinyqml.classical.errors.UnsupportedLayerError` naming the layer.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
...                           torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10))
>>> g = trace(net, torch.zeros(1, 1, 8, 8))
>>> [type(n).__name__ for n in g.nodes], g.nodes[0].activation.value
(['Conv2D', 'Reshape', 'FullyConnected'], 'relu')
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from tinyqml.classical.errors import UnsupportedLayerError
from tinyqml.classical.graph import (
    Activation,
    Add,
    AvgPool2D,
    Conv2D,
    DepthwiseConv2D,
    FullyConnected,
    Graph,
    MaxPool2D,
    Reshape,
)

__all__ = ["trace", "fold_bn_into"]

_ALIAS_MODULES = (nn.Dropout, nn.Identity)


class _Builder:
    """Walks fx nodes, emitting IR nodes; ``alias`` maps fx node names to IR tensor names."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.nodes: list[Any] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.alias: dict[str, str] = {}
        self.chw: dict[str, tuple[int, int, int]] = {}  # flattened tensors still in torch's C,H,W order
        self.users: dict[str, int] = {}

    # -- helpers -----------------------------------------------------------------------
    def shape(self, node: torch.fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise UnsupportedLayerError(f"{node.name!r} ({node.target}) does not produce a single tensor")
        s = tuple(int(d) for d in meta.shape)
        if len(s) == 4:
            return (1, s[2], s[3], s[1])
        if len(s) == 2:
            return (1, s[1])
        raise UnsupportedLayerError(f"{node.name!r} produces a {len(s)}-d tensor; only [N, C, H, W] and "
                                    f"[N, features] tensors are supported")

    def src(self, arg: Any, at: torch.fx.Node) -> str:
        if not isinstance(arg, torch.fx.Node) or arg.name not in self.alias:
            raise UnsupportedLayerError(f"{at.name!r} ({at.target}) takes a non-tensor or constant operand "
                                        f"{arg!r}; only tensors computed by the model are supported")
        return self.alias[arg.name]

    def emit(self, fx_node: torch.fx.Node, ir_node: Any) -> None:
        self.nodes.append(ir_node)
        self.shapes[ir_node.output] = self.shape(fx_node)
        self.alias[fx_node.name] = ir_node.output

    def alias_to(self, node: torch.fx.Node, tensor: str) -> None:
        """``node`` is ``tensor`` from now on: its readers become the tensor's readers."""
        self.alias[node.name] = tensor
        self.users[tensor] = self.users.get(tensor, 0) - 1 + self.users.get(node.name, 0)

    def last_producer(self, tensor: str) -> int | None:
        for i in range(len(self.nodes) - 1, -1, -1):
            if self.nodes[i].output == tensor:
                return i
        return None

    def fusable(self, tensor: str, kinds: tuple[type, ...]) -> int | None:
        """Index of the node writing ``tensor`` if it is of ``kinds``, unfused, and read only once."""
        i = self.last_producer(tensor)
        if i is None or not isinstance(self.nodes[i], kinds) or self.users.get(tensor, 0) != 1:
            return None
        if getattr(self.nodes[i], "activation", Activation.NONE) is not Activation.NONE:
            return None
        return i

    # -- layers ------------------------------------------------------------------------
    def conv(self, node: torch.fx.Node, m: nn.Conv2d) -> None:
        if m.padding_mode != "zeros" or tuple(m.dilation) != (1, 1) or isinstance(m.padding, str):
            raise UnsupportedLayerError(f"Conv2d {node.target!r}: only zero padding given as numbers and "
                                        f"dilation 1 are supported (padding_mode={m.padding_mode!r}, "
                                        f"padding={m.padding!r}, dilation={m.dilation})")
        w = m.weight.detach().double().numpy()
        b = (m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_channels))
        ph, pw = m.padding
        pad, stride = (ph, ph, pw, pw), tuple(m.stride)
        x = self.src(node.args[0], node)
        if m.groups == 1:
            ir = Conv2D(x, node.name, w.transpose(0, 2, 3, 1).copy(), b, stride, pad)
        elif m.groups == m.in_channels == m.out_channels:
            ir = DepthwiseConv2D(x, node.name, w.transpose(1, 2, 3, 0).copy(), b, stride, pad)
        else:
            raise UnsupportedLayerError(f"Conv2d {node.target!r} has groups={m.groups} with {m.in_channels} in and "
                                        f"{m.out_channels} out channels; only groups=1 and depthwise are supported")
        self.emit(node, ir)

    def batchnorm(self, node: torch.fx.Node, m: nn.BatchNorm2d) -> None:
        x = self.src(node.args[0], node)
        i = self.fusable(x, (Conv2D, DepthwiseConv2D))
        if i is None or m.running_mean is None:
            raise UnsupportedLayerError(f"BatchNorm2d {node.target!r} must directly follow a convolution whose output "
                                        f"only it reads (and track running statistics), so that it can be folded")
        self.nodes[i] = fold_bn_into(self.nodes[i], m)
        self.alias_to(node, x)

    def activation(self, node: torch.fx.Node, act: Activation) -> None:
        x = self.src(node.args[0], node)
        i = self.fusable(x, (Conv2D, DepthwiseConv2D, FullyConnected, Add))
        if i is None:
            raise UnsupportedLayerError(f"{act.value} {node.name!r} must directly follow a convolution, a linear "
                                        f"layer or an add whose output only it reads (it is fused into it)")
        self.nodes[i] = dataclasses.replace(self.nodes[i], activation=act)
        self.alias_to(node, x)

    def linear(self, node: torch.fx.Node, m: nn.Linear) -> None:
        x = self.src(node.args[0], node)
        w = m.weight.detach().double().numpy()
        if x in self.chw:
            c, h, wd = self.chw[x]
            w = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        b = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_features)
        if len(self.shapes[x]) != 2:
            raise UnsupportedLayerError(f"Linear {node.target!r} reads a {len(self.shapes[x])}-d tensor; flatten first")
        self.emit(node, FullyConnected(x, node.name, w.copy(), b))

    def flatten(self, node: torch.fx.Node) -> None:
        x = self.src(node.args[0], node)
        shape = self.shapes[x]
        if len(shape) == 2:
            self.alias_to(node, x)
            return
        _, h, w, c = shape
        self.emit(node, Reshape(x, node.name, (1, h * w * c)))
        if h * w > 1:
            self.chw[node.name] = (c, h, w)

    def pool(self, node: torch.fx.Node, kind: type, kernel: Any, stride: Any) -> None:
        x = self.src(node.args[0], node)
        k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        s = k if stride is None else ((stride, stride) if isinstance(stride, int) else tuple(stride))
        if isinstance(s, tuple) and len(s) == 0:
            s = k
        self.emit(node, kind(x, node.name, k, s))

    def global_pool(self, node: torch.fx.Node, keepdim: bool) -> None:
        x = self.src(node.args[0], node)
        _, h, w, c = self.shapes[x]
        name = node.name if keepdim else f"{node.name}_pool"
        self.nodes.append(AvgPool2D(x, name, (h, w), (h, w)))
        self.shapes[name] = (1, 1, 1, c)
        self.alias[node.name] = name
        self.users[name] = self.users.get(node.name, 0)
        if not keepdim:
            self.emit(node, Reshape(name, node.name, (1, c)))

    def add(self, node: torch.fx.Node) -> None:
        if len(node.args) != 2 or node.kwargs:
            raise UnsupportedLayerError(f"add {node.name!r}: only a plain sum of two tensors is supported")
        a, b = (self.src(v, node) for v in node.args)
        if self.shapes[a] != self.shapes[b]:
            raise UnsupportedLayerError(f"add {node.name!r} of shapes {self.shapes[a]} and {self.shapes[b]}: "
                                        f"broadcasting is not supported")
        self.emit(node, Add(a, b, node.name))


def fold_bn_into(conv: Conv2D | DepthwiseConv2D, bn: nn.BatchNorm2d) -> Conv2D | DepthwiseConv2D:
    """``conv`` followed by ``bn`` (eval statistics) as one convolution."""
    gamma = bn.weight.detach().double().numpy() if bn.weight is not None else np.ones(bn.num_features)
    beta = bn.bias.detach().double().numpy() if bn.bias is not None else np.zeros(bn.num_features)
    mean, var = bn.running_mean.double().numpy(), bn.running_var.double().numpy()
    k = gamma / np.sqrt(var + bn.eps)
    w = conv.weight * (k.reshape(-1, 1, 1, 1) if isinstance(conv, Conv2D) else k.reshape(1, 1, 1, -1))
    return dataclasses.replace(conv, weight=w, bias=(conv.bias - mean) * k + beta)


def _module(b: _Builder, node: torch.fx.Node) -> None:
    m = b.modules[node.target]
    if isinstance(m, nn.Conv2d):
        b.conv(node, m)
    elif isinstance(m, nn.BatchNorm2d):
        b.batchnorm(node, m)
    elif isinstance(m, nn.ReLU6):
        b.activation(node, Activation.RELU6)
    elif isinstance(m, nn.ReLU):
        b.activation(node, Activation.RELU)
    elif isinstance(m, nn.Linear):
        b.linear(node, m)
    elif isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise UnsupportedLayerError(f"Flatten {node.target!r}: only start_dim=1, end_dim=-1 is supported")
        b.flatten(node)
    elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        _check_pool(node, m)
        b.pool(node, MaxPool2D if isinstance(m, nn.MaxPool2d) else AvgPool2D, m.kernel_size, m.stride)
    elif isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
        b.global_pool(node, keepdim=True)
    elif isinstance(m, _ALIAS_MODULES):
        b.alias_to(node, b.src(node.args[0], node))
    else:
        raise UnsupportedLayerError(f"layer {node.target!r} of type {type(m).__name__} is not supported; supported: "
                                    f"Conv2d, BatchNorm2d, ReLU, ReLU6, Linear, Flatten, MaxPool2d, AvgPool2d, "
                                    f"AdaptiveAvgPool2d(1), Dropout, Identity and +")


def _check_pool(node: torch.fx.Node, m: nn.Module) -> None:
    pad = m.padding if isinstance(m.padding, tuple) else (m.padding,)
    if any(pad) or getattr(m, "ceil_mode", False) or getattr(m, "dilation", 1) not in (1, (1, 1)):
        raise UnsupportedLayerError(f"{type(m).__name__} {node.target!r}: only pooling without padding, dilation "
                                    f"or ceil_mode is supported")


_RELU_FUNCS = {F.relu: Activation.RELU, torch.relu: Activation.RELU, F.relu6: Activation.RELU6}


def _function(b: _Builder, node: torch.fx.Node) -> None:
    t = node.target
    if t in (operator.add, operator.iadd, torch.add):
        b.add(node)
    elif t in _RELU_FUNCS:
        b.activation(node, _RELU_FUNCS[t])
    elif t is torch.flatten and tuple(node.args[1:]) in ((1,),) and not node.kwargs:
        b.flatten(node)
    elif t is F.adaptive_avg_pool2d and node.args[1] in (1, (1, 1)):
        b.global_pool(node, keepdim=True)
    elif t in (F.max_pool2d, F.avg_pool2d):
        _function_pool(b, node, MaxPool2D if t is F.max_pool2d else AvgPool2D)
    elif t is F.dropout:
        b.alias_to(node, b.src(node.args[0], node))
    else:
        raise UnsupportedLayerError(f"function {getattr(t, '__name__', t)!r} at {node.name!r} is not supported")


def _function_pool(b: _Builder, node: torch.fx.Node, kind: type) -> None:
    names = ("input", "kernel_size", "stride", "padding")
    args = {**dict(zip(names, node.args)), **node.kwargs}
    plain = {"padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False, "count_include_pad": True,
             "divisor_override": None}
    if len(node.args) > 4 or any(args.get(k, v) not in (v, (v, v)) for k, v in plain.items()):
        raise UnsupportedLayerError(f"{node.name!r}: only pooling without padding, dilation or ceil_mode is supported")
    b.pool(node, kind, args["kernel_size"], args.get("stride"))


def _method(b: _Builder, node: torch.fx.Node) -> None:
    t = node.target
    if t == "flatten" and tuple(node.args[1:]) == (1,) and not node.kwargs:
        b.flatten(node)
    elif t == "mean" and _mean_hw(node):
        b.global_pool(node, keepdim=bool(node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)))
    elif t == "add" and len(node.args) == 2:
        b.add(node)
    elif t in ("relu", "relu_"):
        b.activation(node, Activation.RELU)
    else:
        raise UnsupportedLayerError(f"tensor method {t!r} at {node.name!r} is not supported")


def _mean_hw(node: torch.fx.Node) -> bool:
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    return isinstance(dims, (tuple, list)) and sorted(d % 4 for d in dims) == [2, 3]


def _count_users(b: _Builder, gm: torch.fx.GraphModule) -> None:
    """How many fx nodes read each IR tensor (aliases resolved as the walk goes)."""
    for node in gm.graph.nodes:
        for arg in node.all_input_nodes:
            b.users[arg.name] = b.users.get(arg.name, 0) + 1


def trace(model: nn.Module, example: torch.Tensor) -> Graph:
    """The IR of ``model`` for inputs shaped like ``example`` ([N, C, H, W] or [N, features])."""
    if not isinstance(model, nn.Module):
        raise UnsupportedLayerError(f"trace takes an nn.Module, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        try:
            gm = torch.fx.symbolic_trace(model)
        except Exception as exc:  # fx raises many types; the message says which construct failed
            raise UnsupportedLayerError(f"torch.fx cannot trace {type(model).__name__}: {exc}") from exc
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.as_tensor(example, dtype=torch.float32))
        return _walk(gm)
    finally:
        model.train(was_training)


def _walk(gm: torch.fx.GraphModule) -> Graph:
    b = _Builder(gm)
    _count_users(b, gm)
    inputs, outputs = [], []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            b.alias[node.name] = node.name
            b.shapes[node.name] = b.shape(node)
            inputs.append(node.name)
        elif node.op == "call_module":
            _module(b, node)
        elif node.op == "call_function":
            _function(b, node)
        elif node.op == "call_method":
            _method(b, node)
        elif node.op == "output":
            outputs = _outputs(b, node)
        else:
            raise UnsupportedLayerError(f"fx node {node.name!r} ({node.op} {node.target}) is not supported")
    return Graph(tuple(inputs), tuple(outputs), b.shapes, tuple(b.nodes))


def _outputs(b: _Builder, node: torch.fx.Node) -> list[str]:
    args = node.args[0]
    args = list(args) if isinstance(args, (tuple, list)) else [args]
    names = [b.src(a, node) for a in args]
    for n in names:
        if n in b.chw:
            raise UnsupportedLayerError(f"the model returns the flattened map {n!r}; return it through a layer")
    return names
