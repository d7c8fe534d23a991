"""Tests of tinyqml.classical.convert: float model -> Int8Model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tinyqml.classical.convert import Int8Model, is_quantized, quantize_model, to_nhwc
from tinyqml.classical.errors import AlreadyQuantizedError, CalibrationError, CompressionError, UnsupportedLayerError


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).eval()


def test_int8_model_agrees_with_float():
    net = _net()
    x = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    q = quantize_model(net, [x[:100], x[100:]])
    assert isinstance(q, Int8Model)
    ref = net(x).detach()
    assert (q.predict(x) == ref.argmax(1)).float().mean() >= 0.97
    assert (q(x) - ref).abs().max() < 6 * q.qgraph.output.scale
    assert q.int8(x).dtype == np.int8 and q(x).dtype == torch.float32


def test_layout_helpers():
    x = torch.arange(24.0).reshape(1, 2, 3, 4)
    assert to_nhwc(x).shape == (1, 3, 4, 2) and to_nhwc(np.zeros((3, 5))).shape == (3, 5)


def test_already_quantized_and_bad_inputs():
    net = _net()
    x = torch.rand(16, 1, 8, 8)
    q = quantize_model(net, x)
    assert is_quantized(q) and not is_quantized(net)
    with pytest.raises(AlreadyQuantizedError):
        quantize_model(q, x)  # type: ignore[arg-type]
    with pytest.raises(CalibrationError, match="empty"):
        quantize_model(net, [])
    with pytest.raises(CalibrationError, match="empty"):
        quantize_model(net, torch.zeros(0, 1, 8, 8))
    with pytest.raises(CompressionError, match="nn.Module"):
        quantize_model("model", x)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedLayerError, match="Sigmoid"):
        quantize_model(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid()), x)


def test_torch_ao_quantized_model_is_refused():
    from torch.ao.quantization import quantize_dynamic

    dyn = quantize_dynamic(nn.Sequential(nn.Linear(4, 2)), {nn.Linear}, dtype=torch.qint8)
    with pytest.raises(AlreadyQuantizedError):
        quantize_model(dyn, torch.zeros(2, 4))


def test_qat_and_kmeans_models_are_refused():
    from tinyqml.classical.kmeans import KMeansConfig, kmeans_quantize, kmeans_squash
    from tinyqml.classical.qat import prepare_qat, strip_qat

    net = _net()
    x = torch.rand(16, 1, 8, 8)
    prepared = prepare_qat(net, x)
    with pytest.raises(AlreadyQuantizedError):
        quantize_model(prepared, x)
    assert not is_quantized(strip_qat(prepared))
    kmeans_quantize(net, KMeansConfig(bits=4))
    with pytest.raises(AlreadyQuantizedError):
        quantize_model(net, x)
    assert isinstance(quantize_model(kmeans_squash(net), x), Int8Model)
