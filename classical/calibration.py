"""Post-training calibration: the real range of an activation tensor from sample values.

A calibrator is a frozen config with ``range(values) -> (lo, hi)`` over the values a
tensor took on the calibration set: :class:`MinMax` (the whole range), :class:`Percentile`
(clip the tails, e.g. 99.99 %), :class:`MSE` (the clipping that minimizes the mean squared
quantization error, searched on a grid). :class:`RangeCollector` gathers the values batch
by batch (a seeded subsample past ``max_values``, exact min and max always).

>>> import torch
>>> x = torch.cat([torch.linspace(0, 1, 1000), torch.tensor([50.0])])
>>> MinMax().range(x)
(0.0, 50.0)
>>> lo, hi = Percentile(99.0).range(x); round(hi, 2)
0.99
>>> many = torch.cat([torch.linspace(0, 1, 1_000_000), torch.tensor([50.0])])
>>> lo, hi = MSE(steps=50).range(many); hi < 25       # one outlier in a million: clipped
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tinyqml.classical.errors import CalibrationError
from tinyqml.classical.linear_quant import INT8_ACTIVATION, QuantSpec, fake_quantize, params_from_range

__all__ = ["Calibrator", "MinMax", "Percentile", "MSE", "RangeCollector"]


class Calibrator:
    """``range(values) -> (lo, hi)`` from a 1-D float tensor of observed values."""

    def range(self, values: torch.Tensor) -> tuple[float, float]:  # pragma: no cover - subclasses override
        raise TypeError(f"{type(self).__name__} does not define a range")


def _check(values: torch.Tensor) -> torch.Tensor:
    values = torch.as_tensor(values).detach().reshape(-1).to(torch.float64)
    if values.numel() == 0:
        raise CalibrationError("the calibration set is empty: pass at least one input")
    if not torch.isfinite(values).all():
        raise CalibrationError("calibration values must be finite (got inf or nan)")
    return values


@dataclass(frozen=True)
class MinMax(Calibrator):
    """The observed minimum and maximum."""

    def range(self, values: torch.Tensor) -> tuple[float, float]:
        v = _check(values)
        return float(v.min()), float(v.max())


@dataclass(frozen=True)
class Percentile(Calibrator):
    """The ``100 - percentile`` and ``percentile`` quantiles (``percentile`` in (50, 100])."""

    percentile: float = 99.99

    def __post_init__(self) -> None:
        if not isinstance(self.percentile, (int, float)) or not 50 < self.percentile <= 100:
            raise CalibrationError(f"percentile must be in (50, 100], got {self.percentile!r}")

    def range(self, values: torch.Tensor) -> tuple[float, float]:
        v = _check(values)
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100], dtype=torch.float64)
        lo, hi = torch.quantile(v, q)
        return float(lo), float(hi)


@dataclass(frozen=True)
class MSE(Calibrator):
    """The clipped range ``[a*lo, a*hi]`` (``a`` on a grid of ``steps`` in (0, 1]) with the
    least mean squared quantize-dequantize error under ``spec``."""

    steps: int = 100
    spec: QuantSpec = field(default_factory=lambda: INT8_ACTIVATION)

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise CalibrationError(f"steps must be a positive integer, got {self.steps!r}")

    def range(self, values: torch.Tensor) -> tuple[float, float]:
        v = _check(values)
        lo, hi = float(min(v.min(), 0.0)), float(max(v.max(), 0.0))
        best, best_err = (lo, hi), float("inf")
        for k in range(1, self.steps + 1):
            a = k / self.steps
            qp = params_from_range(torch.tensor(a * lo), torch.tensor(a * hi), self.spec)
            err = float(((fake_quantize(v, qp) - v) ** 2).mean())
            if err < best_err:
                best, best_err = (a * lo, a * hi), err
        return best


class RangeCollector:
    """Values of one tensor over calibration batches: exact min/max, a seeded subsample of at
    most ``max_values`` entries for the calibrators that need the distribution."""

    def __init__(self, max_values: int = 200_000, seed: int = 0) -> None:
        self.max_values = max_values
        self.generator = torch.Generator().manual_seed(seed)
        self.parts: list[torch.Tensor] = []
        self.count = 0
        self.lo = float("inf")
        self.hi = float("-inf")

    def update(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).to(torch.float64)
        if flat.numel() == 0:
            return
        if not torch.isfinite(flat).all():
            raise CalibrationError("calibration produced inf or nan activations")
        self.lo, self.hi = min(self.lo, float(flat.min())), max(self.hi, float(flat.max()))
        self.parts.append(flat)
        self.count += flat.numel()
        if self.count > 2 * self.max_values:
            self._shrink()

    def _shrink(self) -> None:
        allv = torch.cat(self.parts)
        idx = torch.randperm(allv.numel(), generator=self.generator)[: self.max_values]
        self.parts, self.count = [allv[idx]], self.max_values

    def values(self) -> torch.Tensor:
        if not self.parts:
            raise CalibrationError("the calibration set is empty: pass at least one input")
        allv = torch.cat(self.parts)
        return torch.cat([allv, torch.tensor([self.lo, self.hi], dtype=torch.float64)])

    def range(self, calibrator: Calibrator) -> tuple[float, float]:
        return calibrator.range(self.values())
