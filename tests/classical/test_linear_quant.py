"""Tests of tinyqml.classical.linear_quant: affine quantization, per-channel, STE."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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


# ------------------------------------------------------------- properties (hypothesis)

F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
#: range ends: ordinary, tiny (down to float32 subnormals) and huge float32 magnitudes
ENDS = st.one_of(st.floats(-10.0, 10.0, width=32), F32, st.sampled_from([0.0, 1e-45, -1e-44, 1e-40, 3e38, -3.4e38]))
EPS32 = 2.0 ** -23


@st.composite
def specs(draw) -> QuantSpec:
    return QuantSpec(bits=draw(st.integers(2, 8)), symmetric=draw(st.booleans()), per_channel=draw(st.booleans()),
                     axis=draw(st.sampled_from([0, 1, -1])), narrow=draw(st.booleans()))


@st.composite
def quant_cases(draw):
    """A spec, a float32 tensor ``[3, 4]`` and parameters from ``params_for`` or from a random range."""
    spec = draw(specs())
    channels = 3 if spec.axis == 0 else 4
    if draw(st.booleans()):
        lo = [draw(ENDS) for _ in range(channels if spec.per_channel else 1)]
        hi = [draw(ENDS) for _ in lo]
        lo, hi = [min(a, b) for a, b in zip(lo, hi)], [max(a, b) for a, b in zip(lo, hi)]
        shape = () if not spec.per_channel else (channels,)
        qp = params_from_range(torch.tensor(lo).reshape(shape), torch.tensor(hi).reshape(shape), spec)
    else:
        lo = hi = None
    x = torch.tensor(draw(st.lists(st.lists(st.one_of(ENDS, F32), min_size=4, max_size=4), min_size=3, max_size=3)),
                     dtype=torch.float32)
    if lo is None:
        qp = params_for(x, spec)
    return spec, qp, x


def _bounds(qp, x):
    scale, zero = qp._view(x)
    s = scale.to(torch.float64).expand_as(x)
    z = zero.to(torch.float64).expand_as(x)
    return s, (qp.spec.qmin - z) * s, (qp.spec.qmax - z) * s  # step, lowest and highest representable value


@settings(derandomize=True, deadline=None, max_examples=400)
@given(quant_cases())
def test_quantize_dequantize_error_is_at_most_half_a_step(case) -> None:
    """Inside the representable range |dequantize(quantize(x)) - x| <= scale / 2 (+ float32 rounding);
    outside it the codes saturate at qmin / qmax; 0 is exact; scales are positive normal float32."""
    spec, qp, x = case
    s, low, high = _bounds(qp, x)
    assert qp.scale.dtype == torch.float32 and torch.isfinite(qp.scale).all()
    assert (qp.scale.double() >= float(torch.finfo(torch.float32).tiny)).all(), f"scale {qp.scale} not normal"
    assert ((qp.zero_point >= spec.qmin) & (qp.zero_point <= spec.qmax)).all()
    if spec.symmetric:
        assert (qp.zero_point == 0).all()
    q = quantize(x, qp)
    assert q.dtype == torch.int64 and (q >= spec.qmin).all() and (q <= spec.qmax).all()
    back = dequantize(q, qp)
    assert torch.isfinite(back).all()
    xd = x.double()
    err = (back.double() - xd).abs()
    inside = (xd >= low) & (xd <= high)
    bound = s / 2 + EPS32 * (xd.abs() + s)
    assert (err[inside] <= bound[inside]).all(), f"error {err[inside].max()} > half a step"
    assert (q[xd > high + s / 2] == spec.qmax).all() and (q[xd < low - s / 2] == spec.qmin).all()
    assert (q[xd >= high] == spec.qmax).all() and (q[xd <= low] == spec.qmin).all()
    zero = torch.zeros_like(x)
    assert torch.equal(dequantize(quantize(zero, qp), qp), zero)


@settings(derandomize=True, deadline=None, max_examples=300)
@given(specs(), ENDS, ENDS, st.lists(st.floats(0.0, 1.0), min_size=1, max_size=16))
def test_params_from_range_cover_the_range(spec, a, b, where) -> None:
    """Every x in [lo, hi] (widened to include 0) dequantizes within half a step (+ float32 rounding)."""
    lo, hi = min(a, b, 0.0), max(a, b, 0.0)
    qp = params_from_range(torch.tensor(lo), torch.tensor(hi), spec)
    s = float(qp.scale)
    x = torch.tensor([lo + t * (hi - lo) for t in where] + [lo, hi], dtype=torch.float64).clamp(lo, hi)
    x = x.to(torch.float32).double().clamp(lo, hi)
    err = (dequantize(quantize(x, qp), qp).double() - x).abs()
    assert (err <= s / 2 + EPS32 * (x.abs() + s)).all(), f"range [{lo}, {hi}]: error {err.max()} > {s / 2}"


def test_tiny_ranges_keep_a_usable_scale() -> None:
    """Counterexamples of the properties: a range so small that its float32 scale underflowed to 0
    gave a zero point of INT64_MIN and NaN codes; subnormal scales lost the range's top."""
    for hi in (1e-44, 1e-40, 1e-38):
        for spec in (INT8_ACTIVATION, QuantSpec(symmetric=True, narrow=True), QuantSpec(bits=2)):
            qp = params_from_range(torch.tensor(0.0), torch.tensor(hi), spec)
            assert float(qp.scale) >= float(torch.finfo(torch.float32).tiny)
            assert spec.qmin <= int(qp.zero_point) <= spec.qmax
            x = torch.tensor([0.0, hi])
            assert (dequantize(quantize(x, qp), qp) - x).abs().max() <= float(qp.scale) / 2
