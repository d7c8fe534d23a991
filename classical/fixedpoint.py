"""TFLite's integer requantization arithmetic, exactly (vectorized over numpy int64 arrays).

A real multiplier ``m`` (e.g. ``s_in * s_w / s_out``) is stored as an int32 mantissa and
a power-of-two shift (:func:`quantize_multiplier`: ``frexp``, the mantissa rounded half
away from zero, a mantissa of exactly 2**31 halved, shifts below -31 flushed to zero). An
int32 accumulator is scaled by it with two roundings: the saturating rounding doubling
high multiply, then a rounding right shift (:func:`multiply_by_quantized_multiplier`).
A float shortcut (``round(acc * m)``) differs from this by one step on some outputs.

>>> quantize_multiplier(0.5)
(1073741824, 0)
>>> quantize_multiplier(0.3)
(1288490189, -1)
>>> int(multiply_by_quantized_multiplier(np.array([1000]), *quantize_multiplier(0.3))[0])
300
>>> int(rounding_divide_by_pot(np.array([-5]), 1)[0]), int(rounding_divide_by_pot(np.array([5]), 1)[0])
(-3, 3)
>>> activation_bounds(0.0, 6.0, 0.1, -50)       # a fused ReLU6 on an int8 output
(-50, 10)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX", "round_half_away", "widen_float32", "quantize_float32", "activation_bounds", "quantize_multiplier", "quantize_multipliers",
    "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot", "multiply_by_quantized_multiplier",
]

INT32_MIN = -(2 ** 31)
INT32_MAX = 2 ** 31 - 1


def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """``std::round``: halves go away from zero (``np.round`` goes to even)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def widen_float32(x: float | np.ndarray) -> float | np.ndarray:
    """A value as a flatbuffer stores it (float32), widened to double: ``static_cast<double>(float)``."""
    a = np.asarray(x, dtype=np.float32).astype(np.float64)
    return float(a) if a.ndim == 0 else a


def quantize_float32(value: float, scale: float, zero_point: int) -> int:
    """TFLite's ``Quantize`` of one real value: the division in float32, then ``std::round``."""
    return zero_point + int(round_half_away(np.float32(value) / np.float32(scale)))


def activation_bounds(lo: float | None, hi: float | None, scale: float, zero_point: int) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized`` for int8: the clamp of a fused activation whose real
    range is ``[lo, hi]`` (``None``: unbounded on that side)."""
    q_lo = -128 if lo is None else max(-128, quantize_float32(lo, scale, zero_point))
    q_hi = 127 if hi is None else min(127, quantize_float32(hi, scale, zero_point))
    return q_lo, q_hi


def quantize_multiplier(real: float) -> tuple[int, int]:
    """``(mantissa, shift)`` with ``real ~= mantissa * 2**(shift - 31)``, as TFLite's ``QuantizeMultiplier``."""
    real = float(real)
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"a requantization multiplier must be a finite number >= 0, got {real!r}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    fixed = int(round_half_away(q * (1 << 31)))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_multiplier` of every entry: (int64 mantissas, int64 shifts)."""
    pairs = [quantize_multiplier(r) for r in np.asarray(reals, dtype=np.float64).reshape(-1)]
    return (np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64))


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul`` on int32 values held in int64."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    negative = ab >> 63  # -1 where ab < 0, else 0
    total = ab + ((1 << 30) + negative * ((1 << 31) - 1))  # nudge: 2**30, or 1 - 2**30 when negative
    high = (total + ((total >> 63) & ((1 << 31) - 1))) >> 31  # C division by 2**31 truncates toward zero
    if np.any(b == INT32_MIN):
        high = np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)
    return high


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp's ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, mantissa: np.ndarray | int,
                                     shift: np.ndarray | int) -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier`` (double rounding): int32 ``x`` scaled by ``mantissa, shift``."""
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = (x * (np.int64(1) << left)).astype(np.int32).astype(np.int64)  # int32 wrap, as in C
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, mantissa), right)
