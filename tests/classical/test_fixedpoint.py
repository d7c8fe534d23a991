"""Tests of tinyqml.classical.fixedpoint against scalar re-statements of TFLite's C code (Python ints)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyqml.classical.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantize_multipliers,
    rounding_divide_by_pot,
    round_half_away,
    saturating_rounding_doubling_high_mul,
)

int32 = st.integers(INT32_MIN, INT32_MAX)


def srdhm_scalar(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return int(Fraction(ab + nudge, 1 << 31).__trunc__())


def rdbpot_scalar(x: int, e: int) -> int:
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


@settings(max_examples=300, deadline=None)
@given(int32, int32)
def test_srdhm_matches_scalar(a, b):
    assert int(saturating_rounding_doubling_high_mul(np.array([a]), np.array([b]))[0]) == srdhm_scalar(a, b)


@settings(max_examples=300, deadline=None)
@given(int32, st.integers(0, 31))
def test_rounding_divide_by_pot_is_round_half_away(x, e):
    got = int(rounding_divide_by_pot(np.array([x]), e)[0])
    assert got == rdbpot_scalar(x, e)
    exact = Fraction(x, 1 << e)
    floor = math.floor(exact)
    expect = floor + (1 if exact - floor > Fraction(1, 2) or (exact - floor == Fraction(1, 2) and x > 0) else 0)
    assert got == expect


def test_saturation_case():
    assert int(saturating_rounding_doubling_high_mul(np.array([INT32_MIN]), INT32_MIN)[0]) == INT32_MAX


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-9, 100.0, allow_nan=False))
def test_quantize_multiplier_reconstructs(real):
    m, shift = quantize_multiplier(real)
    assert (1 << 30) <= m < (1 << 31)
    assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -31


def test_quantize_multiplier_edges():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0 ** -40) == (0, 0)  # shift below -31 flushes to zero
    m, s = quantize_multiplier(1 - 2.0 ** -33)  # mantissa rounds to 2**31: halved, shift + 1
    assert (m, s) == (1 << 30, 1)
    with pytest.raises(ValueError, match="finite"):
        quantize_multiplier(float("nan"))
    with pytest.raises(ValueError, match=">= 0"):
        quantize_multiplier(-1.0)
    ms, ss = quantize_multipliers(np.array([0.5, 0.25]))
    assert ms.tolist() == [1 << 30, 1 << 30] and ss.tolist() == [0, -1]


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 24), 1 << 24), st.floats(1e-6, 4.0))
def test_multiply_by_quantized_multiplier_matches_scalar(x, real):
    m, shift = quantize_multiplier(real)
    left, right = max(shift, 0), max(-shift, 0)
    expect = rdbpot_scalar(srdhm_scalar(x * (1 << left), m), right)
    assert int(multiply_by_quantized_multiplier(np.array([x]), m, shift)[0]) == expect


def test_double_rounding_differs_from_a_float_shortcut():
    """The two-rounding integer path is not round(x * real): some accumulators differ by one step."""
    rng = np.random.default_rng(0)
    acc = rng.integers(-20000, 20000, size=20000)
    real = 0.0123456
    exact = multiply_by_quantized_multiplier(acc, *quantize_multiplier(real))
    shortcut = round_half_away(acc * real).astype(np.int64)
    diff = np.abs(exact - shortcut)
    assert diff.max() == 1 and 0 < (diff > 0).mean() < 0.02


def test_round_half_away():
    assert round_half_away(np.array([0.5, -0.5, 1.5, -2.5, 0.49])).tolist() == [1.0, -1.0, 2.0, -3.0, 0.0]


def test_activation_bounds_and_float32_quantize():
    from tinyqml.classical.fixedpoint import activation_bounds, quantize_float32, widen_float32

    assert activation_bounds(None, None, 0.1, 5) == (-128, 127)
    assert activation_bounds(0.0, None, 0.1, 20) == (20, 127)
    assert activation_bounds(0.0, 6.0, 0.1, -50) == (-50, 10)
    assert activation_bounds(-1.0, 1.0, 0.5, 0) == (-2, 2)
    assert quantize_float32(0.25, 0.1, 0) == 3  # 2.5 rounds away from zero
    assert widen_float32(0.1) == float(np.float32(0.1)) and widen_float32(np.array([0.1])).dtype == np.float64
