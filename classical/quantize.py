"""Post-training int8 quantization of a :class:`~tinyqml.classical.graph.Graph` (TFLite's scheme).

Weights: int8 symmetric per output channel in [-127, 127] (fully-connected: per tensor,
as TFLite Micro's reference kernel wants); bias: int32 with scale ``s_in * s_w`` and zero
point 0; activations: int8 asymmetric per tensor, ranges from a calibrator over the
calibration inputs (pooling and reshape outputs keep their input's parameters, as TFLite
requires). Scales are float32, as a ``.tflite`` file stores them.

>>> import numpy as np, torch
>>> from tinyqml.classical.trace import trace
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
>>> q = quantize_graph(trace(net, torch.zeros(1, 4)), [np.random.default_rng(0).normal(size=(32, 4))])
>>> q.nodes[0].weight_q.dtype, q.nodes[0].bias_q.dtype, sorted(q.tensors)
(dtype('int8'), dtype('int32'), ['_0', 'input_1'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from tinyqml.classical.calibration import Calibrator, MinMax, RangeCollector
from tinyqml.classical.errors import CalibrationError, CompressionError
from tinyqml.classical.graph import (
    AvgPool2D,
    Conv2D,
    DepthwiseConv2D,
    FullyConnected,
    Graph,
    MaxPool2D,
    Node,
    Reshape,
    run_float,
)
from tinyqml.classical.linear_quant import INT8_ACTIVATION, params_from_range

__all__ = ["TensorQuant", "QuantizedNode", "QuantizedGraph", "QuantizeConfig", "quantize_graph",
           "quantize_weights"]

_SHARED = (AvgPool2D, MaxPool2D, Reshape)  # output parameters = input parameters


@dataclass(frozen=True)
class TensorQuant:
    """Per-tensor int8 parameters of an activation: a float32 ``scale`` and an int ``zero_point``."""

    scale: float
    zero_point: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float -> int8 (halves away from zero, saturating), as TFLite's QUANTIZE does."""
        v = np.asarray(x, dtype=np.float64) / np.float64(np.float32(self.scale))
        q = np.sign(v) * np.floor(np.abs(v) + 0.5) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, dtype=np.float64) - self.zero_point) * np.float64(np.float32(self.scale))


@dataclass(frozen=True, eq=False)
class QuantizedNode:
    """A graph node with its int8 weight, float32 per-channel weight scales and int32 bias."""

    node: Node
    weight_q: np.ndarray | None = None
    weight_scale: np.ndarray | None = None
    bias_q: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class QuantizedGraph:
    """The float graph, its quantized nodes (same order) and every tensor's parameters."""

    graph: Graph
    nodes: tuple[QuantizedNode, ...]
    tensors: dict[str, TensorQuant]

    @property
    def input(self) -> TensorQuant:
        return self.tensors[self.graph.inputs[0]]

    @property
    def output(self) -> TensorQuant:
        return self.tensors[self.graph.outputs[0]]


@dataclass(frozen=True)
class QuantizeConfig:
    """Calibration: the ``calibrator`` (MinMax, Percentile, MSE), a cap on the values kept
    per tensor for the distribution-based calibrators, and the seed of that subsample."""

    calibrator: Calibrator = field(default_factory=MinMax)
    max_values: int = 200_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.calibrator, Calibrator):
            raise CompressionError(f"calibrator must be a Calibrator (MinMax, Percentile, MSE), got "
                                   f"{type(self.calibrator).__name__}")


def quantize_weights(node: Node, s_in: float) -> QuantizedNode:
    """Int8 weights (symmetric, narrow) and int32 bias of one node given its input scale."""
    if not isinstance(node, (Conv2D, DepthwiseConv2D, FullyConnected)):
        return QuantizedNode(node)
    w = np.asarray(node.weight, dtype=np.float64)
    axis = 3 if isinstance(node, DepthwiseConv2D) else 0
    if isinstance(node, FullyConnected):
        absmax = np.array([np.abs(w).max(initial=0.0)])
    else:
        absmax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(1)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0 / 127.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    s = scale.astype(np.float64).reshape(shape) if scale.size > 1 else np.float64(scale[0])
    q = np.clip(np.sign(w / s) * np.floor(np.abs(w / s) + 0.5), -127, 127).astype(np.int8)
    bias_scale = np.float64(np.float32(s_in)) * scale.astype(np.float64)
    b = np.asarray(node.bias, dtype=np.float64) / bias_scale
    bias_q = np.clip(np.sign(b) * np.floor(np.abs(b) + 0.5), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
    return QuantizedNode(node, q, scale, bias_q)


def _tensor_quant(lo: float, hi: float) -> TensorQuant:
    qp = params_from_range(torch.tensor(lo), torch.tensor(hi), INT8_ACTIVATION)
    return TensorQuant(float(qp.scale), int(qp.zero_point))


def _batches(calibration: Iterable[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    if isinstance(calibration, (np.ndarray, torch.Tensor)):
        calibration = [calibration]
    batches = [np.asarray(b.detach().numpy() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
               for b in calibration]
    batches = [b for b in batches if b.size]
    if not batches:
        raise CalibrationError("the calibration set is empty: pass at least one input batch (NHWC / [N, features])")
    return batches


def _collect(graph: Graph, batches: Sequence[np.ndarray], config: QuantizeConfig) -> dict[str, RangeCollector]:
    names = list(graph.inputs) + [n.output for n in graph.nodes if not isinstance(n, _SHARED)]
    collectors = {n: RangeCollector(config.max_values, config.seed + k) for k, n in enumerate(names)}
    for batch in batches:
        env = run_float(graph, batch)
        for name, c in collectors.items():
            c.update(torch.from_numpy(env[name]))
    return collectors


def quantize_graph(graph: Graph, calibration: Iterable[np.ndarray] | np.ndarray,
                   config: QuantizeConfig = QuantizeConfig()) -> QuantizedGraph:
    """Int8 parameters for every tensor and weight of ``graph`` from float NHWC calibration batches."""
    if not isinstance(graph, Graph):
        raise CompressionError(f"quantize_graph takes a Graph (see tinyqml.classical.trace), got "
                               f"{type(graph).__name__}")
    collectors = _collect(graph, _batches(calibration), config)
    tensors = {name: _tensor_quant(*c.range(config.calibrator)) for name, c in collectors.items()}
    nodes = []
    for node in graph.nodes:
        if isinstance(node, _SHARED):
            tensors[node.output] = tensors[node.input]
        nodes.append(quantize_weights(node, tensors[node.inputs[0]].scale))
    return QuantizedGraph(graph, tuple(nodes), tensors)
