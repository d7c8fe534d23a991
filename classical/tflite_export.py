"""A :class:`~tinyqml.classical.quantize.QuantizedGraph` as a fully-int8 ``.tflite`` file, and a runner on
TFLite Micro.

:func:`to_tflite` writes the flatbuffer (schema version 3) with the schema bindings that the
``tflite-micro`` package ships: int8 weights with float32 per-channel scales (dimension 0 for
CONV_2D, 3 for DEPTHWISE_CONV_2D; FULLY_CONNECTED per tensor), int32 biases with scale
``s_in * s_w``, int8 activations with the quantizer's scale and zero point, and an int8 model
input and output (``TFLiteOptions(float_io=True)`` adds QUANTIZE / DEQUANTIZE ops). A
convolution's explicit padding becomes SAME or VALID when it is TF's SAME scheme or zero, and an
int8 PAD (filled with the input zero point) before a VALID convolution otherwise. TFLite Micro
then computes exactly what :func:`~tinyqml.classical.int8.run_int8` computes.

>>> import numpy as np, torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=2, padding=1), torch.nn.ReLU(),
...                           torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 3, 3))
>>> x = torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(0))
>>> from tinyqml.classical.convert import quantize_model, to_nhwc
>>> q = quantize_model(net, x).qgraph
>>> blob = to_tflite(q)
>>> blob[4:8], operator_names(blob)
(b'TFL3', ['PAD', 'CONV_2D', 'RESHAPE', 'FULLY_CONNECTED'])
>>> xq = q.input.quantize(to_nhwc(x))
>>> from tinyqml.classical.int8 import run_int8
>>> bool(np.array_equal(run_tflm(blob, xq), run_int8(q, xq)))
True
"""

from __future__ import annotations

import functools
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyqml.classical.errors import CompressionError, ExportError
from tinyqml.classical.graph import (
    Activation,
    Add,
    AvgPool2D,
    Conv2D,
    DepthwiseConv2D,
    FullyConnected,
    MaxPool2D,
    Reshape,
)
from tinyqml.classical.optional import TFLITE_INSTALL, require
from tinyqml.classical.quantize import QuantizedGraph, QuantizedNode
from tinyqml.classical.tflite_builder import FusedActivation, Op, Padding, Quant, TensorType, TFLiteBuilder
from tinyqml.classical.tflite_builder import schema as _schema

__all__ = ["TFLiteOptions", "to_tflite", "export_tflite", "as_qgraph", "operator_names", "tflite_padding",
           "TFLMRunner", "run_tflm", "output_path", "write_file"]

log = logging.getLogger(__name__)


_SAME, _VALID = int(Padding.SAME), int(Padding.VALID)
_FLOAT32, _INT32, _INT8 = int(TensorType.FLOAT32), int(TensorType.INT32), int(TensorType.INT8)
_ACT = {Activation.NONE: FusedActivation.NONE, Activation.RELU: FusedActivation.RELU,
        Activation.RELU6: FusedActivation.RELU6}


_import = functools.partial(require, purpose="TFLite export and TFLite Micro", install=TFLITE_INSTALL)


@dataclass(frozen=True)
class TFLiteOptions:
    """``float_io``: a float32 model input and output (QUANTIZE / DEQUANTIZE ops around the int8 graph);
    ``description``: the model's description string."""

    float_io: bool = False
    description: str = "tinyqml int8"


def tflite_padding(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int, int, int]) -> int | None:
    """TFLite's padding code (0 = SAME, 1 = VALID) equal to the explicit ``(top, bottom, left, right)``,
    or ``None`` when neither is (an explicit PAD is needed).

    >>> tflite_padding((8, 8), (3, 3), (1, 1), (1, 1, 1, 1)), tflite_padding((8, 8), (3, 3), (2, 2), (1, 1, 1, 1))
    (0, None)
    >>> tflite_padding((8, 8), (3, 3), (2, 2), (0, 1, 0, 1)), tflite_padding((8, 8), (1, 1), (2, 2), (0, 0, 0, 0))
    (0, 1)
    """
    if not any(padding):
        return _VALID
    same = []
    for n, k, s in zip(in_hw, kernel, stride):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        same += [total // 2, total - total // 2]
    return _SAME if tuple(same) == tuple(padding) else None


class _Writer:
    """The IR side of one export: the :class:`~tinyqml.classical.tflite_builder.TFLiteBuilder` being
    filled, and the tensor index of each IR activation."""

    def __init__(self, qgraph: QuantizedGraph, description: str) -> None:
        self.b = TFLiteBuilder(description)
        self.q = qgraph
        self.index: dict[str, int] = {}

    def activation(self, name: str) -> int:
        """The int8 tensor of an IR activation (created on first use)."""
        if name not in self.index:
            tq = self.q.tensors[name]
            self.index[name] = self.b.tensor(name, self.q.graph.shapes[name], TensorType.INT8,
                                             Quant.per_tensor(tq.scale, tq.zero_point))
        return self.index[name]

    def derived(self, name: str, like: str, shape: tuple[int, ...]) -> int:
        """A new int8 tensor with the parameters of the IR tensor ``like`` (a PAD output)."""
        tq = self.q.tensors[like]
        return self.b.tensor(name, shape, TensorType.INT8, Quant.per_tensor(tq.scale, tq.zero_point))


# -- node writers ------------------------------------------------------------------------------------------

@functools.singledispatch
def _emit(node: object, qn: QuantizedNode, w: _Writer) -> None:
    raise ExportError(f"the TFLite exporter cannot write node type {type(node).__name__} (output "
                      f"{getattr(node, 'output', '?')!r}); it writes Conv2D, DepthwiseConv2D, FullyConnected, Add, "
                      f"AvgPool2D, MaxPool2D and Reshape")


def _padded_input(node: Conv2D | DepthwiseConv2D, kernel: tuple[int, int], w: _Writer) -> tuple[int, int]:
    """(input tensor index, padding code) of a convolution: an explicit PAD op when SAME/VALID do not fit."""
    _, h, wd, c = w.q.graph.shapes[node.input]
    code = tflite_padding((h, wd), kernel, node.stride, node.padding)
    x = w.activation(node.input)
    if code is not None:
        return x, code
    top, bottom, left, right = node.padding
    pads = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], dtype=np.int32)
    p = w.b.constant(f"{node.output}/paddings", pads)
    y = w.derived(f"{node.output}/pad", node.input, (1, h + top + bottom, wd + left + right, c))
    w.b.op(Op.PAD, [x, p], [y])
    return y, _VALID


def _weights(node: Conv2D | DepthwiseConv2D | FullyConnected, qn: QuantizedNode, w: _Writer,
             dim: int) -> tuple[int, int]:
    s_in = np.float32(w.q.tensors[node.input].scale)
    s_w = np.asarray(qn.weight_scale, dtype=np.float32)
    wt = w.b.constant(f"{node.output}/weight", qn.weight_q.astype(np.int8), Quant.per_channel(s_w, dim))
    bias_scale = (np.float64(s_in) * s_w.astype(np.float64)).astype(np.float32)  # one per weight scale
    b = w.b.constant(f"{node.output}/bias", qn.bias_q.astype(np.int32), Quant.per_channel(bias_scale, 0))
    return wt, b


@_emit.register
def _(node: Conv2D, qn: QuantizedNode, w: _Writer) -> None:
    x, pad = _padded_input(node, qn.weight_q.shape[1:3], w)
    wt, b = _weights(node, qn, w, dim=0)
    w.b.op(Op.CONV_2D, [x, wt, b], [w.activation(node.output)], padding=pad, strideH=node.stride[0],
           strideW=node.stride[1], fusedActivationFunction=_ACT[node.activation], dilationHFactor=1,
           dilationWFactor=1)


@_emit.register
def _(node: DepthwiseConv2D, qn: QuantizedNode, w: _Writer) -> None:
    x, pad = _padded_input(node, qn.weight_q.shape[1:3], w)
    wt, b = _weights(node, qn, w, dim=3)
    w.b.op(Op.DEPTHWISE_CONV_2D, [x, wt, b], [w.activation(node.output)], padding=pad, strideH=node.stride[0],
           strideW=node.stride[1], depthMultiplier=1, fusedActivationFunction=_ACT[node.activation],
           dilationHFactor=1, dilationWFactor=1)


@_emit.register
def _(node: FullyConnected, qn: QuantizedNode, w: _Writer) -> None:
    if np.asarray(qn.weight_scale).size != 1:
        raise ExportError(f"FullyConnected {node.output!r} has {np.asarray(qn.weight_scale).size} weight scales; "
                          f"TFLite Micro's int8 fully-connected kernel takes one (per-tensor) scale")
    x = w.activation(node.input)
    wt, b = _weights(node, qn, w, dim=0)
    w.b.op(Op.FULLY_CONNECTED, [x, wt, b], [w.activation(node.output)],
           fusedActivationFunction=_ACT[node.activation], keepNumDims=False)


@_emit.register
def _(node: Add, qn: QuantizedNode, w: _Writer) -> None:
    w.b.op(Op.ADD, [w.activation(node.left), w.activation(node.right)], [w.activation(node.output)],
           fusedActivationFunction=_ACT[node.activation])


def _pool(op: Op, node: AvgPool2D | MaxPool2D, w: _Writer) -> None:
    w.b.op(op, [w.activation(node.input)], [w.activation(node.output)], padding=Padding.VALID,
           strideH=node.stride[0], strideW=node.stride[1], filterHeight=node.filter[0], filterWidth=node.filter[1],
           fusedActivationFunction=FusedActivation.NONE)


@_emit.register
def _(node: AvgPool2D, qn: QuantizedNode, w: _Writer) -> None:
    _pool(Op.AVERAGE_POOL_2D, node, w)


@_emit.register
def _(node: MaxPool2D, qn: QuantizedNode, w: _Writer) -> None:
    _pool(Op.MAX_POOL_2D, node, w)


@_emit.register
def _(node: Reshape, qn: QuantizedNode, w: _Writer) -> None:
    shape = np.array(node.shape, dtype=np.int32)
    s = w.b.constant(f"{node.output}/shape", shape)
    w.b.op(Op.RESHAPE, [w.activation(node.input), s], [w.activation(node.output)],
           newShape=[int(d) for d in shape])


def _float_io(w: _Writer, inputs: list[int], outputs: list[int]) -> tuple[list[int], list[int]]:
    """QUANTIZE each int8 input from a float32 one, DEQUANTIZE each output to float32."""
    g = w.q.graph
    new_in = []
    for name, idx in zip(g.inputs, inputs):
        f = w.b.tensor(f"{name}/float", g.shapes[name], TensorType.FLOAT32)
        w.b.op(Op.QUANTIZE, [f], [idx], first=True)
        new_in.append(f)
    new_out = []
    for name, idx in zip(g.outputs, outputs):
        f = w.b.tensor(f"{name}/float", g.shapes[name], TensorType.FLOAT32)
        w.b.op(Op.DEQUANTIZE, [idx], [f])
        new_out.append(f)
    return new_in, new_out


def to_tflite(qgraph: QuantizedGraph, options: TFLiteOptions = TFLiteOptions()) -> bytes:
    """The ``.tflite`` flatbuffer of ``qgraph`` (int8 in and out unless ``options.float_io``)."""
    if not isinstance(qgraph, QuantizedGraph):
        raise ExportError(f"to_tflite takes a QuantizedGraph (see tinyqml.classical.quantize), got "
                          f"{type(qgraph).__name__}")
    if not isinstance(options, TFLiteOptions):
        raise ExportError(f"options must be TFLiteOptions, got {type(options).__name__}")
    w = _Writer(qgraph, options.description)
    g = qgraph.graph
    inputs = [w.activation(name) for name in g.inputs]
    for qn in qgraph.nodes:
        _emit(qn.node, qn, w)
    outputs = [w.activation(name) for name in g.outputs]
    if options.float_io:
        inputs, outputs = _float_io(w, inputs, outputs)
    return w.b.build(inputs, outputs)


def operator_names(blob: bytes) -> list[str]:
    """The builtin operator names of a ``.tflite`` model's first subgraph, in execution order."""
    fb = _schema()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(blob, 0))
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [names[codes[op.opcodeIndex]] for op in model.subgraphs[0].operators]


# -- the file API ------------------------------------------------------------------------------------------

def as_qgraph(model: Any, calibration_inputs: Any = None) -> QuantizedGraph:
    """A :class:`QuantizedGraph` from a QuantizedGraph, an ``Int8Model`` or a float torch module (traced
    and quantized on ``calibration_inputs`` by :func:`~tinyqml.classical.convert.quantize_model`)."""
    if isinstance(model, QuantizedGraph):
        return model
    qgraph = getattr(model, "qgraph", None)
    if isinstance(qgraph, QuantizedGraph):
        return qgraph
    import torch

    if isinstance(model, torch.nn.Module):
        if calibration_inputs is None:
            raise ExportError(f"exporting the float model {type(model).__name__} needs calibration_inputs to "
                              f"quantize it (a tensor [N, C, H, W] or [N, features], or a list of batches)")
        from tinyqml.classical.convert import quantize_model

        return quantize_model(model, calibration_inputs).qgraph
    raise ExportError(f"cannot export {type(model).__name__}: pass a float torch nn.Module, an Int8Model or a "
                      f"QuantizedGraph")


def output_path(path: str | os.PathLike) -> Path:
    """``path`` as a file path to write: :class:`ExportError` for a directory or a missing folder."""
    p = Path(path)
    if p.is_dir():
        raise ExportError(f"{str(p)!r} is a directory; give the path of the file to write")
    if not p.parent.is_dir():
        raise ExportError(f"the folder {str(p.parent)!r} of {str(p)!r} does not exist")
    return p


def write_file(path: str | os.PathLike, blob: bytes) -> Path:
    """Write ``blob`` at ``path`` (checked by :func:`output_path`); OS errors become :class:`ExportError`."""
    p = output_path(path)
    try:
        p.write_bytes(blob)
    except OSError as exc:
        raise ExportError(f"cannot write {str(p)!r}: {exc}") from exc
    log.info("wrote %s (%d bytes)", p, len(blob))
    return p


def export_tflite(model: Any, calibration_inputs: Any, path: str | os.PathLike,
                  options: TFLiteOptions = TFLiteOptions()) -> Path:
    """Write ``model`` (a float ``nn.Module``, quantized here on ``calibration_inputs``; or an
    ``Int8Model`` / ``QuantizedGraph``, then ``calibration_inputs`` is unused) as an int8 ``.tflite``
    file at ``path``; returns the path."""
    return write_file(path, to_tflite(as_qgraph(model, calibration_inputs), options))


# -- TFLite Micro ------------------------------------------------------------------------------------------

_ARENA_PARTS = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


class TFLMRunner:
    """One TFLite Micro interpreter on a ``.tflite`` model, run sample by sample on a batch.

    ``arena_size`` defaults to a generous bound from the model's tensors; ``preserve_all_tensors``
    lets :meth:`tensors` read every intermediate tensor after a run (TFLM's kPreserveAllTensors).
    """

    def __init__(self, blob: bytes, arena_size: int | None = None, preserve_all_tensors: bool = False) -> None:
        runtime = _import("tflite_micro.python.tflite_micro.runtime")
        fb = _schema()
        self.blob = bytes(blob)
        try:
            self.model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(self.blob, 0))
        except Exception as exc:  # a corrupt flatbuffer raises struct/index errors
            raise ExportError(f"not a TFLite flatbuffer: {exc}") from exc
        sub = self.model.subgraphs[0]
        self.n_inputs, self.n_outputs = len(sub.inputs), len(sub.outputs)
        config = (runtime.InterpreterConfig.kPreserveAllTensors if preserve_all_tensors
                  else runtime.InterpreterConfig.kAllocationRecording)
        size = arena_size if arena_size is not None else self._default_arena(sub)
        try:
            self.interpreter = runtime.Interpreter.from_bytes(self.blob, arena_size=size, intrepreter_config=config)
        except RuntimeError as exc:
            raise ExportError(f"TFLite Micro refused the model: {exc}") from exc
        self.preserve_all_tensors = preserve_all_tensors

    @staticmethod
    def _default_arena(sub: Any) -> int:
        bytes_per = {_INT8: 1, _INT32: 4, _FLOAT32: 4}
        total = sum(int(np.prod(t.shape)) * bytes_per.get(t.type, 8) for t in sub.tensors if t.buffer == 0)
        return 2 * total + 64 * 1024 + 256 * len(sub.tensors)

    def _sample(self, xs: tuple[np.ndarray, ...], i: int) -> list[np.ndarray]:
        for k, x in enumerate(xs):
            self.interpreter.set_input(np.ascontiguousarray(x[i:i + 1]), k)
        self.interpreter.invoke()
        return [np.array(self.interpreter.get_output(k)) for k in range(self.n_outputs)]

    def run_all(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Every output of the model for batched inputs (each sample a separate invoke)."""
        if len(inputs) != self.n_inputs:
            raise CompressionError(f"the model takes {self.n_inputs} inputs, got {len(inputs)}")
        xs = tuple(np.asarray(x) for x in inputs)
        n = xs[0].shape[0]
        if any(x.shape[0] != n for x in xs):
            raise CompressionError(f"inputs have different batch sizes {[x.shape[0] for x in xs]}")
        per = [self._sample(xs, i) for i in range(n)]
        return [np.concatenate([p[k] for p in per]) for k in range(self.n_outputs)]

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        """The first output for batched inputs."""
        return self.run_all(*inputs)[0]

    def tensors(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every non-constant tensor (by name) after running one sample ``x`` [1, ...]; needs
        ``preserve_all_tensors=True``."""
        if not self.preserve_all_tensors:
            raise CompressionError("TFLMRunner.tensors needs TFLMRunner(blob, preserve_all_tensors=True)")
        self._sample((np.asarray(x),), 0)
        sub = self.model.subgraphs[0]
        return {_name(t): np.array(self.interpreter.GetTensor(i, 0)["tensor_data"])
                for i, t in enumerate(sub.tensors) if self.model.buffers[t.buffer].data is None}

    def allocations(self) -> dict[str, int]:
        """TFLite Micro's arena: ``head`` (planned activations, I/O tensors, kernel scratch), ``tail``
        (persistent runtime data) and ``total``, parsed from ``print_allocations`` (it writes to stderr)."""
        with tempfile.TemporaryFile(mode="w+b") as tmp:
            saved = os.dup(2)
            try:
                os.dup2(tmp.fileno(), 2)
                self.interpreter.print_allocations()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
        got = {k: int(v) for k, v in _ARENA_PARTS.findall(text)}
        if "total" not in got:
            raise ExportError(f"TFLite Micro's allocation report has no arena total: {text[:200]!r}")
        return got

    def arena_bytes(self) -> int:
        """The arena TFLite Micro allocated (planned activations + persistent runtime data)."""
        return self.allocations()["total"]


def _name(t: Any) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def run_tflm(blob: bytes, *inputs: np.ndarray) -> np.ndarray:
    """The first output of the ``.tflite`` model ``blob`` on TFLite Micro for batched int8 inputs."""
    return TFLMRunner(blob)(*inputs)
