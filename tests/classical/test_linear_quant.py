"""Tests of tinyqml.classical.linear_quant: affine quantization, per-channel, STE."""

from __future__ import annotations

import pytest
import torch

from tinyqml.classical.errors import CalibrationError, CompressionError
from tinyqml.classical.linear_quant import (
    INT8_ACTIVATION,
    INT8_WEIGHT,
    QuantSpec,
    dequantize,
    fake_quantize,
    params_for,
    params_from_range,
    quantize,
    round_half_away,
)


def test_spec_ranges_and_validation():
    assert (INT8_WEIGHT.qmin, INT8_WEIGHT.qmax) == (-127, 127)
    assert (INT8_ACTIVATION.qmin, INT8_ACTIVATION.qmax) == (-128, 127)
    assert (QuantSpec(bits=4).qmin, QuantSpec(bits=4).qmax) == (-8, 7)
    for bad in (1, 17, 8.0, True):
        with pytest.raises(CompressionError, match="bits"):
            QuantSpec(bits=bad)


def test_asymmetric_range_includes_zero_and_endpoints():
    qp = params_from_range(torch.tensor(0.5), torch.tensor(2.0), INT8_ACTIVATION)  # widened to [0, 2]
    assert int(qp.zero_point) == -128
    assert int(quantize(torch.tensor(0.0), qp)) == -128
    assert int(quantize(torch.tensor(2.0), qp)) == 127
    assert qp.scale.dtype == torch.float32


def test_symmetric_per_channel_weights():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, 3, 3, generator=g)
    qp = params_for(w, INT8_WEIGHT)
    assert qp.scale.shape == (6,) and (qp.zero_point == 0).all()
    q = quantize(w, qp)
    assert q.min() >= -127 and q.max() <= 127
    # every channel reaches its extreme code
    assert (q.abs().reshape(6, -1).max(1).values == 127).all()
    err = (dequantize(q, qp) - w).abs().reshape(6, -1).max(1).values
    assert (err <= qp.scale / 2 + 1e-6).all()


def test_per_channel_axis_and_mismatch():
    w = torch.randn(2, 5, generator=torch.Generator().manual_seed(1))
    qp = params_for(w, QuantSpec(symmetric=True, per_channel=True, axis=1, narrow=True))
    assert qp.scale.shape == (5,)
    with pytest.raises(CompressionError, match="channels"):
        quantize(torch.zeros(3, 4), qp)


def test_zero_tensor_and_bad_ranges():
    qp = params_for(torch.zeros(4), INT8_ACTIVATION)
    assert float(qp.scale) > 0
    with pytest.raises(CalibrationError, match="finite"):
        params_from_range(torch.tensor(float("nan")), torch.tensor(1.0), INT8_ACTIVATION)
    with pytest.raises(CalibrationError, match="empty"):
        params_for(torch.zeros(0), INT8_ACTIVATION)


def test_rounding_is_half_away_from_zero():
    qp = params_from_range(torch.tensor(-1.27), torch.tensor(1.27), QuantSpec(symmetric=True, narrow=True))
    x = torch.tensor([0.5, -0.5, 1.5, -1.5]) * qp.scale.double()
    assert quantize(x, qp).tolist() == [1, -1, 2, -2]
    assert round_half_away(torch.tensor([2.5, -2.5])).tolist() == [3.0, -3.0]


def test_fake_quantize_matches_quantize_dequantize_and_ste():
    x = torch.linspace(-3, 3, 101, dtype=torch.float64, requires_grad=True)
    qp = params_from_range(torch.tensor(-1.0), torch.tensor(2.0), INT8_ACTIVATION)
    y = fake_quantize(x, qp)
    assert torch.allclose(y.detach(), dequantize(quantize(x, qp), qp).double(), atol=1e-6)
    y.sum().backward()
    inside = (x.detach() >= -1.0 - 1e-6) & (x.detach() <= 2.0 + 1e-6)
    assert torch.equal(x.grad, inside.double())
