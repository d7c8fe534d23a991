"""Integer-only int8 inference of a :class:`~tinyqml.classical.quantize.QuantizedGraph`.

Every kernel computes what TFLite Micro's reference int8 kernels compute, bit for bit:
int32 accumulation of ``(x - zero_point_in) * w`` (taps outside the image are skipped,
which is padding with the input zero point), int32 bias, requantization with the
fixed-point multiplier and shift derived from the float32 scales
(:mod:`tinyqml.classical.fixedpoint`: saturating rounding doubling high multiply, then a
rounding right shift), the output zero point, and the fused activation as a clamp. ADD
rescales both inputs after a left shift of 20; average pooling rounds half away from zero.
No float arithmetic touches an activation.

>>> import numpy as np, torch
>>> from tinyqml.classical.trace import trace
>>> from tinyqml.classical.quantize import quantize_graph
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
...                           torch.nn.Linear(2 * 4 * 4, 3))
>>> x = np.random.default_rng(0).uniform(size=(8, 4, 4, 1))
>>> q = quantize_graph(trace(net, torch.zeros(1, 1, 4, 4)), [x])
>>> out = run_int8(q, q.input.quantize(x))
>>> out.dtype, out.shape
(dtype('int8'), (8, 3))
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from tinyqml.classical.errors import CompressionError
from tinyqml.classical.fixedpoint import (
    activation_bounds,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantize_multipliers,
)
from tinyqml.classical.fixedpoint import widen_float32 as _f64
from tinyqml.classical.graph import (
    Activation,
    Add,
    AvgPool2D,
    Conv2D,
    DepthwiseConv2D,
    FullyConnected,
    MaxPool2D,
    Reshape,
)
from tinyqml.classical.quantize import QuantizedGraph, QuantizedNode, TensorQuant

__all__ = ["run_int8", "run_int8_all", "activation_range", "conv_multipliers", "fc_multiplier", "add_params",
           "ADD_LEFT_SHIFT"]

#: TFLite's ADD shifts both (offset) inputs left by 20 bits before rescaling them
ADD_LEFT_SHIFT = 20


#: the real range of each fused activation (``None``: unbounded)
_REAL_RANGE = {Activation.NONE: (None, None), Activation.RELU: (0.0, None), Activation.RELU6: (0.0, 6.0)}


def activation_range(act: Activation, out: TensorQuant) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized``: the int8 clamp of a fused activation."""
    return activation_bounds(*_REAL_RANGE[act], out.scale, out.zero_point)


def conv_multipliers(s_in: float, s_w: np.ndarray, s_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mantissa, shift) of ``s_in * s_w[c] / s_out`` as TFLite computes it (in double
    from the float32 scales)."""
    return _conv_multipliers(float(s_in), np.asarray(s_w, dtype=np.float32).tobytes(), float(s_out))


@functools.lru_cache(maxsize=4096)
def _conv_multipliers(s_in: float, s_w: bytes, s_out: float) -> tuple[np.ndarray, np.ndarray]:
    return quantize_multipliers(_f64(s_in) * _f64(np.frombuffer(s_w, dtype=np.float32)) / _f64(s_out))


def fc_multiplier(s_in: float, s_w: float, s_out: float) -> tuple[int, int]:
    """(mantissa, shift) of a per-tensor fully-connected layer."""
    return quantize_multiplier(float(_f64(s_in) * _f64(s_w) / _f64(s_out)))


def add_params(a: TensorQuant, b: TensorQuant, out: TensorQuant) -> tuple[tuple[int, int], ...]:
    """(mantissa, shift) for the two inputs and the output of ADD, as TFLite's ``PrepareAdd``."""
    twice_max = 2.0 * float(_f64(max(np.float32(a.scale), np.float32(b.scale))))
    return (quantize_multiplier(float(_f64(a.scale)) / twice_max),
            quantize_multiplier(float(_f64(b.scale)) / twice_max),
            quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * float(_f64(out.scale)))))


def _requantize(acc: np.ndarray, mantissa, shift, out: TensorQuant, act: Activation) -> np.ndarray:
    lo, hi = activation_range(act, out)
    y = multiply_by_quantized_multiplier(acc, mantissa, shift) + out.zero_point
    return np.clip(y, lo, hi).astype(np.int8)


def _windows(x: np.ndarray, node: Conv2D | DepthwiseConv2D | AvgPool2D | MaxPool2D, kh: int, kw: int,
             fill: int) -> np.ndarray:
    """[N, OH, OW, KH, KW, C] patches of an int64 NHWC tensor padded with ``fill``."""
    top, bottom, left, right = getattr(node, "padding", (0, 0, 0, 0))
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    sh, sw = node.stride
    return win[:, ::sh, ::sw].transpose(0, 1, 2, 4, 5, 3)


def _int_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w.T`` of integer matrices, exactly: int8 x int8 sums stay far below 2**53, so a float64
    GEMM (torch's, which honours ``torch.set_num_threads``) gives the integer result."""
    out = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)) @ torch.from_numpy(
        np.ascontiguousarray(w, dtype=np.float64)).T
    return out.numpy().astype(np.int64)


@functools.singledispatch
def _kernel(node: object, qn: QuantizedNode, env: dict[str, np.ndarray],
            tensors: dict[str, TensorQuant]) -> np.ndarray:
    raise CompressionError(f"the int8 engine has no kernel for {type(node).__name__}")


@_kernel.register
def _(node: Conv2D, qn: QuantizedNode, env: dict[str, np.ndarray], tensors: dict[str, TensorQuant]) -> np.ndarray:
    t_in, t_out = tensors[node.input], tensors[node.output]
    o, kh, kw, c = qn.weight_q.shape
    x = env[node.input].astype(np.int64) - t_in.zero_point
    cols = _windows(x, node, kh, kw, 0)
    n, oh, ow = cols.shape[:3]
    acc = _int_matmul(cols.reshape(n * oh * ow, kh * kw * c), qn.weight_q.reshape(o, -1)).reshape(n, oh, ow, o)
    acc = acc + qn.bias_q.astype(np.int64)
    m, s = conv_multipliers(t_in.scale, qn.weight_scale, t_out.scale)
    return _requantize(acc, m, s, t_out, node.activation)


@_kernel.register
def _(node: DepthwiseConv2D, qn: QuantizedNode, env: dict[str, np.ndarray],
      tensors: dict[str, TensorQuant]) -> np.ndarray:
    t_in, t_out = tensors[node.input], tensors[node.output]
    _, kh, kw, c = qn.weight_q.shape
    x = env[node.input].astype(np.int64) - t_in.zero_point
    cols = _windows(x, node, kh, kw, 0)
    acc = np.einsum("nhwijc,ijc->nhwc", cols, qn.weight_q[0].astype(np.int64)) + qn.bias_q.astype(np.int64)
    m, s = conv_multipliers(t_in.scale, qn.weight_scale, t_out.scale)
    return _requantize(acc, m, s, t_out, node.activation)


@_kernel.register
def _(node: FullyConnected, qn: QuantizedNode, env: dict[str, np.ndarray],
      tensors: dict[str, TensorQuant]) -> np.ndarray:
    t_in, t_out = tensors[node.input], tensors[node.output]
    x = env[node.input].astype(np.int64) - t_in.zero_point
    acc = _int_matmul(x, qn.weight_q) + qn.bias_q.astype(np.int64)
    m, s = fc_multiplier(t_in.scale, float(qn.weight_scale[0]), t_out.scale)
    return _requantize(acc, m, s, t_out, node.activation)


@_kernel.register
def _(node: Add, qn: QuantizedNode, env: dict[str, np.ndarray], tensors: dict[str, TensorQuant]) -> np.ndarray:
    ta, tb, t_out = tensors[node.left], tensors[node.right], tensors[node.output]
    (ma, sa), (mb, sb), (mo, so) = add_params(ta, tb, t_out)
    a = (env[node.left].astype(np.int64) - ta.zero_point) << ADD_LEFT_SHIFT
    b = (env[node.right].astype(np.int64) - tb.zero_point) << ADD_LEFT_SHIFT
    total = multiply_by_quantized_multiplier(a, ma, sa) + multiply_by_quantized_multiplier(b, mb, sb)
    return _requantize(total, mo, so, t_out, node.activation)


@_kernel.register
def _(node: AvgPool2D, qn: QuantizedNode, env: dict[str, np.ndarray], tensors: dict[str, TensorQuant]) -> np.ndarray:
    kh, kw = node.filter
    acc = _windows(env[node.input].astype(np.int64), node, kh, kw, 0).sum(axis=(3, 4))
    count = kh * kw
    half = count // 2
    # C integer division truncates toward zero: round half away from zero
    rounded = np.where(acc > 0, (acc + half) // count, -((-acc + half) // count))
    return np.clip(rounded, -128, 127).astype(np.int8)


@_kernel.register
def _(node: MaxPool2D, qn: QuantizedNode, env: dict[str, np.ndarray], tensors: dict[str, TensorQuant]) -> np.ndarray:
    kh, kw = node.filter
    return _windows(env[node.input].astype(np.int64), node, kh, kw, -128).max(axis=(3, 4)).astype(np.int8)


@_kernel.register
def _(node: Reshape, qn: QuantizedNode, env: dict[str, np.ndarray], tensors: dict[str, TensorQuant]) -> np.ndarray:
    x = env[node.input]
    return x.reshape((x.shape[0], *node.shape[1:]))


def run_int8_all(qgraph: QuantizedGraph, *inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Every int8 tensor of the graph for int8 inputs (NHWC / [N, features], any batch)."""
    if not isinstance(qgraph, QuantizedGraph):
        raise CompressionError(f"run_int8 takes a QuantizedGraph, got {type(qgraph).__name__}")
    g = qgraph.graph
    if len(inputs) != len(g.inputs):
        raise CompressionError(f"the graph takes {len(g.inputs)} inputs, got {len(inputs)}")
    env: dict[str, np.ndarray] = {}
    for name, x in zip(g.inputs, inputs):
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise CompressionError(f"input {name!r} must be int8 (quantize it with qgraph.input.quantize), "
                                   f"got {x.dtype}")
        if tuple(x.shape[1:]) != tuple(g.shapes[name][1:]):
            raise CompressionError(f"input {name!r} must have shape [batch, {', '.join(map(str, g.shapes[name][1:]))}]"
                                   f", got {list(x.shape)}")
        env[name] = x
    for qn in qgraph.nodes:
        env[qn.node.output] = _kernel(qn.node, qn, env, qgraph.tensors)
    return env


def run_int8(qgraph: QuantizedGraph, *inputs: np.ndarray) -> np.ndarray:
    """The int8 output of the graph (its first output)."""
    return run_int8_all(qgraph, *inputs)[qgraph.graph.outputs[0]]
