"""Tests of tinyqml.classical.calibration: MinMax, Percentile, MSE, RangeCollector."""

from __future__ import annotations

import pytest
import torch

from tinyqml.classical.calibration import MSE, MinMax, Percentile, RangeCollector
from tinyqml.classical.errors import CalibrationError
from tinyqml.classical.linear_quant import INT8_ACTIVATION, fake_quantize, params_from_range


def _err(v, lo, hi):
    qp = params_from_range(torch.tensor(lo), torch.tensor(hi), INT8_ACTIVATION)
    return float(((fake_quantize(v, qp) - v) ** 2).mean())


def test_minmax_and_percentile():
    v = torch.arange(1001, dtype=torch.float64)
    assert MinMax().range(v) == (0.0, 1000.0)
    lo, hi = Percentile(99.0).range(v)
    assert lo == pytest.approx(10.0) and hi == pytest.approx(990.0)


def test_mse_is_no_worse_than_minmax():
    g = torch.Generator().manual_seed(0)
    v = torch.cat([torch.randn(200_000, generator=g, dtype=torch.float64), torch.tensor([40.0])])
    lo, hi = MSE().range(v)
    assert hi < 40.0
    assert _err(v, lo, hi) <= _err(v, *MinMax().range(v))


def test_bad_inputs():
    for cal in (MinMax(), Percentile(), MSE(steps=5)):
        with pytest.raises(CalibrationError, match="empty"):
            cal.range(torch.zeros(0))
        with pytest.raises(CalibrationError, match="finite"):
            cal.range(torch.tensor([1.0, float("inf")]))
    with pytest.raises(CalibrationError, match="percentile"):
        Percentile(40.0)
    with pytest.raises(CalibrationError, match="steps"):
        MSE(steps=0)


def test_collector_keeps_exact_extremes_and_subsamples():
    c = RangeCollector(max_values=1000, seed=3)
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        c.update(torch.rand(500, generator=g))
    c.update(torch.tensor([-5.0, 7.0]))
    assert c.range(MinMax()) == (-5.0, 7.0)
    assert c.values().numel() <= 2 * 1000 + 2
    with pytest.raises(CalibrationError, match="empty"):
        RangeCollector().values()
    with pytest.raises(CalibrationError, match="inf or nan"):
        RangeCollector().update(torch.tensor([float("nan")]))
