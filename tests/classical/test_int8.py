"""Tests of tinyqml.classical.int8: each kernel against a scalar re-statement of TFLite's reference
kernels (Python ints), and the engine against the float graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tinyqml.classical.errors import CompressionError
from tinyqml.classical.fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from tinyqml.classical.graph import Activation, Add, AvgPool2D, Conv2D, DepthwiseConv2D, FullyConnected, Graph
from tinyqml.classical.int8 import ADD_LEFT_SHIFT, activation_range, add_params, run_int8, run_int8_all
from tinyqml.classical.quantize import QuantizedGraph, TensorQuant, quantize_graph, quantize_weights
from tinyqml.classical.trace import trace

rng = np.random.default_rng(0)


def mbqm(x: int, real_scale: float) -> int:
    m, s = quantize_multiplier(real_scale)
    return int(multiply_by_quantized_multiplier(np.array([x]), m, s)[0])


def f64(v: float) -> float:
    return float(np.float32(v))


def scalar_conv(x, qn, t_in, t_out, depthwise=False):
    """ConvPerChannel / DepthwiseConvPerChannel of TFLite's reference_integer_ops, loop by loop."""
    node = qn.node
    n, h, w, _ = x.shape
    o = qn.weight_q.shape[3] if depthwise else qn.weight_q.shape[0]
    kh, kw = qn.weight_q.shape[1:3]
    top, bottom, left, right = node.padding
    sh, sw = node.stride
    oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    lo, hi = activation_range(node.activation, t_out)
    out = np.zeros((n, oh, ow, o), dtype=np.int8)
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for c in range(o):
                    acc = 0
                    for di in range(kh):
                        for dj in range(kw):
                            yi, xj = i * sh - top + di, j * sw - left + dj
                            if not (0 <= yi < h and 0 <= xj < w):
                                continue  # taps outside the image are skipped
                            if depthwise:
                                acc += int(qn.weight_q[0, di, dj, c]) * (int(x[b, yi, xj, c]) - t_in.zero_point)
                            else:
                                for ci in range(x.shape[3]):
                                    acc += int(qn.weight_q[c, di, dj, ci]) * (int(x[b, yi, xj, ci]) - t_in.zero_point)
                    acc += int(qn.bias_q[c])
                    real = f64(t_in.scale) * f64(qn.weight_scale[c]) / f64(t_out.scale)
                    out[b, i, j, c] = min(hi, max(lo, mbqm(acc, real) + t_out.zero_point))
    return out


def _qgraph(node, shapes, t_in, t_out):
    g = Graph(("x",), (node.output,), shapes, (node,))
    return QuantizedGraph(g, (quantize_weights(node, t_in.scale),), {"x": t_in, node.output: t_out})


@pytest.mark.parametrize("act", list(Activation))
def test_conv_matches_scalar_reference(act):
    node = Conv2D("x", "y", rng.normal(size=(3, 3, 3, 2)), rng.normal(size=3), (2, 1), (1, 0, 0, 2), act)
    t_in, t_out = TensorQuant(0.05, -7), TensorQuant(0.08, 11)
    q = _qgraph(node, {"x": (1, 5, 6, 2), "y": (1, 2, 6, 3)}, t_in, t_out)
    x = rng.integers(-128, 128, size=(2, 5, 6, 2)).astype(np.int8)
    np.testing.assert_array_equal(run_int8(q, x), scalar_conv(x, q.nodes[0], t_in, t_out))


def test_depthwise_matches_scalar_reference():
    node = DepthwiseConv2D("x", "y", rng.normal(size=(1, 3, 3, 4)), rng.normal(size=4), (1, 1), (1, 1, 1, 1),
                           Activation.RELU6)
    t_in, t_out = TensorQuant(0.03, 5), TensorQuant(6 / 255, -128)
    q = _qgraph(node, {"x": (1, 4, 4, 4), "y": (1, 4, 4, 4)}, t_in, t_out)
    x = rng.integers(-128, 128, size=(3, 4, 4, 4)).astype(np.int8)
    np.testing.assert_array_equal(run_int8(q, x), scalar_conv(x, q.nodes[0], t_in, t_out, depthwise=True))


def test_padding_is_the_input_zero_point():
    """A padded conv equals a valid conv on an input padded with the zero point."""
    w, b = rng.normal(size=(2, 3, 3, 1)), rng.normal(size=2)
    t_in, t_out = TensorQuant(0.1, 37), TensorQuant(0.2, -3)
    padded = _qgraph(Conv2D("x", "y", w, b, padding=(1, 1, 1, 1)), {"x": (1, 4, 4, 1), "y": (1, 4, 4, 2)},
                     t_in, t_out)
    valid = _qgraph(Conv2D("x", "y", w, b), {"x": (1, 6, 6, 1), "y": (1, 4, 4, 2)}, t_in, t_out)
    x = rng.integers(-128, 128, size=(2, 4, 4, 1)).astype(np.int8)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=37)
    np.testing.assert_array_equal(run_int8(padded, x), run_int8(valid, xp))


def test_fully_connected_matches_scalar_reference():
    node = FullyConnected("x", "y", rng.normal(size=(4, 6)), rng.normal(size=4), Activation.RELU)
    t_in, t_out = TensorQuant(0.07, 3), TensorQuant(0.04, -20)
    q = _qgraph(node, {"x": (1, 6), "y": (1, 4)}, t_in, t_out)
    x = rng.integers(-128, 128, size=(5, 6)).astype(np.int8)
    qn = q.nodes[0]
    lo, hi = activation_range(Activation.RELU, t_out)
    real = f64(t_in.scale) * f64(qn.weight_scale[0]) / f64(t_out.scale)
    expect = [[min(hi, max(lo, mbqm(sum(int(qn.weight_q[o, i]) * (int(x[b, i]) - 3) for i in range(6))
                                    + int(qn.bias_q[o]), real) - 20)) for o in range(4)] for b in range(5)]
    np.testing.assert_array_equal(run_int8(q, x), np.array(expect, dtype=np.int8))


def test_add_matches_scalar_reference():
    ta, tb, to = TensorQuant(0.05, -10), TensorQuant(0.11, 4), TensorQuant(0.13, 2)
    node = Add("x", "z", "y", Activation.RELU)
    g = Graph(("x", "z"), ("y",), {"x": (1, 8), "z": (1, 8), "y": (1, 8)}, (node,))
    q = QuantizedGraph(g, (quantize_weights(node, ta.scale),), {"x": ta, "z": tb, "y": to})
    a = rng.integers(-128, 128, size=(4, 8)).astype(np.int8)
    b = rng.integers(-128, 128, size=(4, 8)).astype(np.int8)
    (ma, sa), (mb, sb), (mo, so) = add_params(ta, tb, to)
    twice = 2 * max(f64(ta.scale), f64(tb.scale))
    assert (ma, sa) == quantize_multiplier(f64(ta.scale) / twice)
    assert (mo, so) == quantize_multiplier(twice / ((1 << 20) * f64(to.scale)))
    lo, hi = activation_range(Activation.RELU, to)

    def one(u: int, v: int) -> int:
        su = int(multiply_by_quantized_multiplier(np.array([(u + 10) << ADD_LEFT_SHIFT]), ma, sa)[0])
        sv = int(multiply_by_quantized_multiplier(np.array([(v - 4) << ADD_LEFT_SHIFT]), mb, sb)[0])
        return min(hi, max(lo, int(multiply_by_quantized_multiplier(np.array([su + sv]), mo, so)[0]) + 2))

    expect = np.vectorize(one)(a.astype(int), b.astype(int)).astype(np.int8)
    np.testing.assert_array_equal(run_int8(q, a, b), expect)
    # and it is close to the real sum
    real = ta.dequantize(a) + tb.dequantize(b)
    assert np.abs(to.dequantize(run_int8(q, a, b)) - np.clip(real, 0, to.dequantize(127))).max() <= to.scale


def test_average_pool_rounds_half_away_from_zero():
    t = TensorQuant(0.1, 0)
    node = AvgPool2D("x", "y", (2, 2), (2, 2))
    q = QuantizedGraph(Graph(("x",), ("y",), {"x": (1, 2, 2, 1), "y": (1, 1, 1, 1)}, (node,)),
                       (quantize_weights(node, 0.1),), {"x": t, "y": t})
    x = np.array([[1, 1, 0, 0], [-1, -1, 0, 0], [1, 2, 2, 2], [127, 127, 127, 126]], dtype=np.int8)
    out = run_int8(q, x.reshape(4, 2, 2, 1)).reshape(-1).tolist()
    assert out == [1, -1, 2, 127]  # 0.5 -> 1, -0.5 -> -1, 1.75 -> 2, 126.75 -> 127


def test_activation_range():
    t = TensorQuant(6 / 255, -128)
    assert activation_range(Activation.NONE, t) == (-128, 127)
    assert activation_range(Activation.RELU, TensorQuant(0.1, 20)) == (20, 127)
    assert activation_range(Activation.RELU6, t) == (-128, 127)
    assert activation_range(Activation.RELU6, TensorQuant(0.01, -50)) == (-50, 127)
    assert activation_range(Activation.RELU6, TensorQuant(0.1, -50)) == (-50, 10)


def test_engine_tracks_the_float_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 5)).eval()
    x = torch.rand(64, 1, 8, 8)
    q = quantize_graph(trace(net, x[:1]), [x.permute(0, 2, 3, 1).numpy()])
    env = run_int8_all(q, q.input.quantize(x.permute(0, 2, 3, 1).numpy()))
    out = q.output.dequantize(env[q.graph.outputs[0]])
    ref = net(x).detach().numpy()
    assert np.abs(out - ref).max() < 6 * q.output.scale
    assert set(env) == set(q.graph.inputs) | {n.output for n in q.graph.nodes}


def test_bad_inputs():
    node = FullyConnected("x", "y", np.ones((1, 2)), np.zeros(1))
    q = _qgraph(node, {"x": (1, 2), "y": (1, 1)}, TensorQuant(0.1, 0), TensorQuant(0.1, 0))
    with pytest.raises(CompressionError, match="int8"):
        run_int8(q, np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(CompressionError, match="shape"):
        run_int8(q, np.zeros((1, 3), dtype=np.int8))
    with pytest.raises(CompressionError, match="QuantizedGraph"):
        run_int8(q.graph, np.zeros((1, 2), dtype=np.int8))  # type: ignore[arg-type]
