"""Tests of tinyqml.classical.quantize: TFLite's int8 parameter rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tinyqml.classical.calibration import MSE, MinMax, Percentile
from tinyqml.classical.errors import CalibrationError, CompressionError
from tinyqml.classical.graph import Conv2D, DepthwiseConv2D, FullyConnected
from tinyqml.classical.quantize import QuantizeConfig, TensorQuant, quantize_graph, quantize_weights
from tinyqml.classical.trace import trace


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4, padding=1),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()


def _calib(n=32, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 8, 8, 1))


def test_weight_rules():
    q = quantize_graph(trace(_net(), torch.zeros(1, 1, 8, 8)), [_calib()])
    conv, dw, fc = (qn for qn in q.nodes if qn.weight_q is not None)
    for qn, axis in ((conv, 0), (dw, 3)):
        assert qn.weight_q.dtype == np.int8 and qn.weight_q.min() >= -127
        per = np.abs(np.moveaxis(qn.weight_q, axis, 0)).reshape(qn.weight_q.shape[axis], -1).max(1)
        assert (per == 127).all()  # symmetric per channel: each channel uses its full range
        assert qn.weight_scale.dtype == np.float32 and qn.weight_scale.shape == (qn.weight_q.shape[axis],)
    assert fc.weight_scale.shape == (1,) and np.abs(fc.weight_q).max() == 127
    # bias: int32 at scale s_in * s_w, zero point 0
    s_in = q.tensors[conv.node.input].scale
    expect = np.round(conv.node.bias / (np.float64(np.float32(s_in)) * conv.weight_scale.astype(np.float64)))
    np.testing.assert_array_equal(conv.bias_q, expect.astype(np.int32))


def test_activation_rules_and_shared_parameters():
    q = quantize_graph(trace(_net(), torch.zeros(1, 1, 8, 8)), [_calib()])
    for name, t in q.tensors.items():
        assert isinstance(t, TensorQuant) and -128 <= t.zero_point <= 127 and t.scale > 0
        assert np.float32(t.scale) == t.scale
    pool = next(n for n in q.graph.nodes if type(n).__name__ == "MaxPool2D")
    reshape = next(n for n in q.graph.nodes if type(n).__name__ == "Reshape")
    assert q.tensors[pool.output] == q.tensors[pool.input] == q.tensors[reshape.output]
    # inputs in [0, 1]: zero point at the bottom of the range
    assert q.input.zero_point == -128
    # 0 is exactly representable everywhere
    for t in q.tensors.values():
        assert t.dequantize(np.array([t.zero_point]))[0] == 0.0


def test_zero_weight_channel_stays_zero():
    w = np.zeros((2, 1, 1, 1))
    w[1] = 0.5
    qn = quantize_weights(Conv2D("x", "y", w, np.array([0.25, 0.0])), 0.1)
    assert qn.weight_q[0].item() == 0 and qn.weight_q[1].item() == 127
    assert np.isfinite(qn.weight_scale).all() and qn.weight_scale[0] > 0
    assert quantize_weights(DepthwiseConv2D("x", "y", np.ones((1, 3, 3, 2)), np.zeros(2)), 0.1).weight_scale.shape == (2,)
    assert quantize_weights(FullyConnected("x", "y", np.ones((3, 2)), np.zeros(3)), 0.1).weight_scale.shape == (1,)


def test_calibrators_change_ranges():
    g = trace(_net(), torch.zeros(1, 1, 8, 8))
    x = _calib()
    x[0, 0, 0, 0] = 40.0  # one outlier pixel
    full = quantize_graph(g, [x], QuantizeConfig(MinMax()))
    clipped = quantize_graph(g, [x], QuantizeConfig(Percentile(99.0)))
    mse = quantize_graph(g, [x], QuantizeConfig(MSE(steps=20)))
    assert clipped.input.scale < full.input.scale and mse.input.scale <= full.input.scale


def test_bad_inputs():
    g = trace(_net(), torch.zeros(1, 1, 8, 8))
    with pytest.raises(CalibrationError, match="empty"):
        quantize_graph(g, [])
    with pytest.raises(CalibrationError, match="empty"):
        quantize_graph(g, np.zeros((0, 8, 8, 1)))
    with pytest.raises(CompressionError, match="Graph"):
        quantize_graph(_net(), [_calib()])  # type: ignore[arg-type]
    with pytest.raises(CompressionError, match="calibrator"):
        QuantizeConfig(calibrator="minmax")  # type: ignore[arg-type]
    bad = _calib()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(CalibrationError):
        quantize_graph(g, [bad])
