"""One call from a float torch model to an integer-only int8 model: trace, calibrate, quantize.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
...                           torch.nn.Linear(4 * 8 * 8, 10)).eval()
>>> x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
>>> q = quantize_model(net, x)
>>> agree = (q(x).argmax(1) == net(x).argmax(1)).float().mean().item()
>>> agree > 0.9, q.int8(x).dtype
(True, dtype('int8'))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from tinyqml.classical.errors import AlreadyQuantizedError, CalibrationError, CompressionError
from tinyqml.classical.int8 import run_int8
from tinyqml.classical.quantize import QuantizeConfig, QuantizedGraph, quantize_graph
from tinyqml.classical.trace import trace

__all__ = ["Int8Model", "quantize_model", "to_nhwc", "is_quantized"]


def to_nhwc(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Torch's channel-first images [N, C, H, W] as TFLite's [N, H, W, C] (2-d inputs unchanged)."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


@dataclass(frozen=True, eq=False)
class Int8Model:
    """An integer-only model: float inputs in torch's layout are quantized at the input,
    run in int8, and the output is dequantized (``int8`` gives the raw int8 output)."""

    qgraph: QuantizedGraph

    def int8(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        return run_int8(self.qgraph, self.qgraph.input.quantize(to_nhwc(x)))

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.qgraph.output.dequantize(self.int8(x))).to(torch.float32)

    def predict(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Class indices (the argmax of the int8 logits)."""
        return torch.from_numpy(self.int8(x).astype(np.int64).argmax(axis=1))


def is_quantized(model: object) -> bool:
    """True for an :class:`Int8Model`, a torch.ao quantized model, a QAT-prepared model (fake-quant
    modules) or one with k-means codebooks (squash them first: ``kmeans_squash``)."""
    if isinstance(model, Int8Model):
        return True
    if not isinstance(model, nn.Module):
        return False
    from tinyqml.classical.kmeans import has_codebook
    from tinyqml.classical.qat import is_qat_prepared

    if is_qat_prepared(model):
        return True
    for m in model.modules():
        if type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")):
            return True
        if parametrize.is_parametrized(m) and any(has_codebook(m, name) for name in m.parametrizations):
            return True
    return False


def _calibration_batches(inputs: torch.Tensor | np.ndarray | Iterable) -> list[np.ndarray]:
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        inputs = [inputs]
    batches = [to_nhwc(b) for b in inputs]
    if not batches or all(b.size == 0 for b in batches):
        raise CalibrationError("the calibration set is empty: pass at least one input")
    return batches


def quantize_model(model: nn.Module, calibration_inputs: torch.Tensor | np.ndarray | Iterable,
                   config: QuantizeConfig = QuantizeConfig()) -> Int8Model:
    """Trace ``model`` (BatchNorm folded, activations fused), calibrate the activation ranges on
    ``calibration_inputs`` (a tensor [N, C, H, W] / [N, features] or an iterable of batches) and
    quantize it to TFLite's int8 scheme."""
    if is_quantized(model):
        raise AlreadyQuantizedError(f"{type(model).__name__} is already quantized; quantize the float model "
                                    f"(strip fake-quant modules first)")
    if not isinstance(model, nn.Module):
        raise CompressionError(f"quantize_model takes an nn.Module, got {type(model).__name__}")
    batches = _calibration_batches(calibration_inputs)
    example = batches[0][:1]
    example = torch.from_numpy(example.transpose(0, 3, 1, 2) if example.ndim == 4 else example).float()
    graph = trace(model, example)
    return Int8Model(quantize_graph(graph, batches, config))
