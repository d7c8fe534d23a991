"""Linear (affine) quantization: ``q = clamp(round(x / scale) + zero_point)``, and back.

A frozen :class:`QuantSpec` says how: bit width, symmetric or asymmetric, per-tensor or
per-channel (``axis``), narrow range (``[-127, 127]`` for int8 weights, TFLite's rule).
:func:`params_from_range` turns a real range into :class:`QuantParams` (float32 scales,
as a TFLite file stores them; the range always includes 0 so that 0 is exact);
:func:`fake_quantize` rounds in the forward pass and lets gradients through inside the
range (the straight-through estimator) for quantization-aware training.

>>> import torch
>>> qp = params_from_range(torch.tensor(-1.0), torch.tensor(3.0), INT8_ACTIVATION)
>>> round(float(qp.scale), 6), int(qp.zero_point)
(0.015686, -64)
>>> quantize(torch.tensor([0.0, 1.0, 9.0]), qp).tolist()
[-64, 0, 127]
>>> w = torch.tensor([[0.5, -1.0], [0.02, -0.005]])
>>> qw = params_for(w, INT8_WEIGHT)
>>> quantize(w, qw).tolist()
[[64, -127], [127, -32]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tinyqml.classical.errors import CalibrationError, CompressionError

__all__ = ["QuantSpec", "QuantParams", "INT8_WEIGHT", "INT8_ACTIVATION", "params_from_range", "params_for",
           "quantize", "dequantize", "fake_quantize", "round_half_away"]


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize: ``bits`` (2..16), signed integers, symmetric (zero point 0) or not,
    ``per_channel`` along ``axis``, ``narrow`` (drop the lowest code: int8 in [-127, 127])."""

    bits: int = 8
    symmetric: bool = False
    per_channel: bool = False
    axis: int = 0
    narrow: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 16:
            raise CompressionError(f"bits must be an integer in [2, 16], got {self.bits!r}")
        if not isinstance(self.axis, int):
            raise CompressionError(f"axis must be an int, got {self.axis!r}")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1


#: TFLite int8 weights: symmetric, per output channel, in [-127, 127]
INT8_WEIGHT = QuantSpec(bits=8, symmetric=True, per_channel=True, axis=0, narrow=True)
#: TFLite int8 activations: asymmetric, per tensor, in [-128, 127]
INT8_ACTIVATION = QuantSpec(bits=8, symmetric=False)


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Float32 ``scale`` and int64 ``zero_point`` (scalars, or one per channel along ``spec.axis``)."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    spec: QuantSpec

    def _view(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale.dim() == 0:
            return self.scale, self.zero_point
        shape = [1] * x.dim()
        axis = self.spec.axis % x.dim()
        if x.shape[axis] != self.scale.numel():
            raise CompressionError(f"per-channel params have {self.scale.numel()} channels, the tensor "
                                   f"{x.shape[axis]} along axis {axis}")
        shape[axis] = -1
        return self.scale.reshape(shape), self.zero_point.reshape(shape)


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round halves away from zero (TFLite's ``std::round``; ``torch.round`` goes to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _normal32(scale: torch.Tensor) -> torch.Tensor:
    """``scale`` raised to float32's smallest normal number: a range so small that its float32 scale would be
    subnormal or 0 (codes of NaN, a zero point of INT64_MIN) gets the smallest scale that float32 keeps exactly."""
    return torch.clamp(scale, min=torch.finfo(torch.float32).tiny)


def params_from_range(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> QuantParams:
    """Quantization parameters covering ``[lo, hi]`` (widened to include 0)."""
    lo = torch.as_tensor(lo, dtype=torch.float64)
    hi = torch.as_tensor(hi, dtype=torch.float64)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise CalibrationError("a quantization range must be finite (the calibration data has inf or nan)")
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    if spec.symmetric:
        scale = torch.maximum(lo.abs(), hi) / spec.qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale) / spec.qmax)
        scale = _normal32(scale)
        zero = torch.zeros_like(scale, dtype=torch.int64)
    else:
        scale = (hi - lo) / (spec.qmax - spec.qmin)
        scale = _normal32(torch.where(scale > 0, scale, torch.ones_like(scale)))
        scale32 = scale.to(torch.float32).to(torch.float64)
        zero = (spec.qmin - round_half_away(lo / scale32)).clamp(spec.qmin, spec.qmax).to(torch.int64)
    return QuantParams(scale.to(torch.float32), zero, spec)


def params_for(x: torch.Tensor, spec: QuantSpec) -> QuantParams:
    """Min-max parameters of a tensor (per channel along ``spec.axis`` when ``spec.per_channel``)."""
    x = x.detach()
    if x.numel() == 0:
        raise CalibrationError("cannot choose quantization parameters for an empty tensor")
    if spec.per_channel:
        if x.dim() == 0:
            raise CompressionError("per-channel quantization needs a tensor with a channel axis")
        flat = x.movedim(spec.axis % x.dim(), 0).reshape(x.shape[spec.axis % x.dim()], -1)
        return params_from_range(flat.min(1).values, flat.max(1).values, spec)
    return params_from_range(x.min(), x.max(), spec)


def quantize(x: torch.Tensor, qp: QuantParams) -> torch.Tensor:
    """Integer codes (int64) of ``x``; halves round away from zero, then clamp."""
    scale, zero = qp._view(x)
    q = round_half_away(x.detach().to(torch.float64) / scale.to(torch.float64)) + zero
    return q.clamp(qp.spec.qmin, qp.spec.qmax).to(torch.int64)


def dequantize(q: torch.Tensor, qp: QuantParams) -> torch.Tensor:
    """Real values ``scale * (q - zero_point)`` (float32; a code whose value lies beyond float32's range, as
    the end codes of a range near +-3.4e38 can, saturates at its largest finite value rather than turning inf)."""
    scale, zero = qp._view(q)
    big = torch.finfo(torch.float32).max
    return ((q.to(torch.float64) - zero) * scale.to(torch.float64)).clamp(-big, big).to(torch.float32)


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero, qmin, qmax):  # type: ignore[override]
        q = round_half_away(x / scale) + zero
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (q.clamp(qmin, qmax) - zero) * scale

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x: torch.Tensor, qp: QuantParams) -> torch.Tensor:
    """Quantize-dequantize in ``x``'s dtype; the gradient is the straight-through estimator
    (1 inside the representable range, 0 where clamped)."""
    scale, zero = qp._view(x)
    return _FakeQuant.apply(x, scale.to(x.dtype), zero.to(x.dtype), qp.spec.qmin, qp.spec.qmax)
