"""The neutral model IR: a small dataflow graph of TFLite-shaped float operations.

Knows nothing of torch modules: nodes hold numpy weights in TFLite's layouts and tensors
are NHWC (batch first). :func:`tinyqml.classical.trace.trace` builds a :class:`Graph`
from a torch model (BatchNorm folded, ReLU/ReLU6 fused, torch's channel-first flatten
order moved into the next fully-connected weight); the int8 quantizer, the integer
engine and the exporters (TFLite, ONNX, C) read it. :func:`run_float` is its reference
semantics (the padding of a convolution is explicit: ``(top, bottom, left, right)``).

>>> import numpy as np
>>> g = Graph(inputs=("x",), outputs=("y",), shapes={"x": (1, 2), "y": (1, 1)},
...           nodes=(FullyConnected("x", "y", weight=np.array([[1.0, -1.0]], np.float32),
...                                 bias=np.zeros(1, np.float32), activation=Activation.RELU),))
>>> run_float(g, np.array([[3.0, 1.0], [1.0, 3.0]], np.float32))["y"].tolist()
[[2.0], [0.0]]
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from tinyqml.classical.errors import CompressionError

__all__ = ["Activation", "Conv2D", "DepthwiseConv2D", "FullyConnected", "Add", "AvgPool2D", "MaxPool2D",
           "Reshape", "Node", "Graph", "run_float"]


class Activation(enum.Enum):
    """A fused activation (TFLite's ``fused_activation_function``)."""

    NONE = "none"
    RELU = "relu"
    RELU6 = "relu6"


class _OneInput:
    """Nodes reading one tensor, ``input``."""

    input: str

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.input,)


@dataclass(frozen=True, eq=False)
class _Convolution(_OneInput):
    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    activation: Activation = Activation.NONE


@dataclass(frozen=True, eq=False)
class Conv2D(_Convolution):
    """``weight`` [out, kh, kw, in], ``bias`` [out]; explicit zero padding ``(top, bottom, left, right)``."""


@dataclass(frozen=True, eq=False)
class DepthwiseConv2D(_Convolution):
    """``weight`` [1, kh, kw, channels] (TFLite's layout, depth multiplier 1), ``bias`` [channels]."""


@dataclass(frozen=True, eq=False)
class FullyConnected(_OneInput):
    """``weight`` [out, in], ``bias`` [out] on a [batch, in] input."""

    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray
    activation: Activation = Activation.NONE


@dataclass(frozen=True, eq=False)
class Add:
    """Elementwise sum of two tensors of one shape."""

    left: str
    right: str
    output: str
    activation: Activation = Activation.NONE

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.left, self.right)


@dataclass(frozen=True, eq=False)
class AvgPool2D(_OneInput):
    """Average over ``filter`` windows (no padding); a global average pool is ``filter == (H, W)``."""

    input: str
    output: str
    filter: tuple[int, int]
    stride: tuple[int, int]


@dataclass(frozen=True, eq=False)
class MaxPool2D(_OneInput):
    """Maximum over ``filter`` windows (no padding)."""

    input: str
    output: str
    filter: tuple[int, int]
    stride: tuple[int, int]


@dataclass(frozen=True, eq=False)
class Reshape(_OneInput):
    """Row-major reshape of an NHWC tensor to ``shape`` (batch first)."""

    input: str
    output: str
    shape: tuple[int, ...]


Node = Union[Conv2D, DepthwiseConv2D, FullyConnected, Add, AvgPool2D, MaxPool2D, Reshape]


@dataclass(frozen=True, eq=False)
class Graph:
    """Nodes in execution order; ``shapes`` has every tensor's shape with batch 1 first."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]
    nodes: tuple[Node, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        known = set(self.inputs)
        for node in self.nodes:
            missing = [t for t in node.inputs if t not in known]
            if missing:
                raise CompressionError(f"{type(node).__name__} -> {node.output!r} reads {missing} before they are "
                                       f"computed")
            known.add(node.output)
        for name in (*known, *self.outputs):
            if name not in self.shapes:
                raise CompressionError(f"the graph has no shape for tensor {name!r}")
        if not set(self.outputs) <= known:
            raise CompressionError(f"graph outputs {sorted(set(self.outputs) - known)} are never computed")

    def producer(self, tensor: str) -> Node | None:
        """The node writing ``tensor`` (``None`` for a graph input)."""
        return next((n for n in self.nodes if n.output == tensor), None)

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]


def _act(x: torch.Tensor, act: Activation) -> torch.Tensor:
    if act is Activation.RELU:
        return torch.relu(x)
    if act is Activation.RELU6:
        return torch.clamp(x, 0.0, 6.0)
    return x


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def _pad(x: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    top, bottom, left, right = padding
    return F.pad(x, (left, right, top, bottom))


@functools.singledispatch
def _run_node(node: object, env: dict[str, torch.Tensor]) -> torch.Tensor:
    raise CompressionError(f"run_float does not know node type {type(node).__name__}")


def _conv(node: Conv2D | DepthwiseConv2D, env: dict[str, torch.Tensor], groups: bool) -> torch.Tensor:
    w = torch.from_numpy(node.weight).double()
    w = w.permute(3, 0, 1, 2) if groups else w.permute(0, 3, 1, 2)
    y = F.conv2d(_pad(_nchw(env[node.input]), node.padding), w, torch.from_numpy(node.bias).double(),
                 stride=node.stride, groups=w.shape[0] if groups else 1)
    return _act(_nhwc(y), node.activation)


@_run_node.register
def _(node: Conv2D, env: dict[str, torch.Tensor]) -> torch.Tensor:
    return _conv(node, env, groups=False)


@_run_node.register
def _(node: DepthwiseConv2D, env: dict[str, torch.Tensor]) -> torch.Tensor:
    return _conv(node, env, groups=True)


@_run_node.register
def _(node: FullyConnected, env: dict[str, torch.Tensor]) -> torch.Tensor:
    y = env[node.input] @ torch.from_numpy(node.weight).double().T + torch.from_numpy(node.bias).double()
    return _act(y, node.activation)


@_run_node.register
def _(node: Add, env: dict[str, torch.Tensor]) -> torch.Tensor:
    return _act(env[node.left] + env[node.right], node.activation)


@_run_node.register
def _(node: AvgPool2D, env: dict[str, torch.Tensor]) -> torch.Tensor:
    return _nhwc(F.avg_pool2d(_nchw(env[node.input]), node.filter, node.stride))


@_run_node.register
def _(node: MaxPool2D, env: dict[str, torch.Tensor]) -> torch.Tensor:
    return _nhwc(F.max_pool2d(_nchw(env[node.input]), node.filter, node.stride))


@_run_node.register
def _(node: Reshape, env: dict[str, torch.Tensor]) -> torch.Tensor:
    x = env[node.input]
    return x.reshape((x.shape[0], *node.shape[1:]))


def run_float(graph: Graph, *inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of ``graph`` (float64) for float NHWC ``inputs`` with any batch size."""
    if len(inputs) != len(graph.inputs):
        raise CompressionError(f"the graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env: dict[str, torch.Tensor] = {}
    for name, x in zip(graph.inputs, inputs):
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        if tuple(x.shape[1:]) != tuple(graph.shapes[name][1:]):
            raise CompressionError(f"input {name!r} must have shape [batch, {', '.join(map(str, graph.shapes[name][1:]))}]"
                                   f", got {list(x.shape)}")
        env[name] = x
    with torch.no_grad():
        for node in graph.nodes:
            env[node.output] = _run_node(node, env)
    return {k: v.numpy() for k, v in env.items()}
