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
import importlib
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
from tinyqml.classical.quantize import QuantizedGraph, QuantizedNode, TensorQuant

__all__ = ["TFLiteOptions", "to_tflite", "export_tflite", "as_qgraph", "operator_names", "tflite_padding",
           "TFLMRunner", "run_tflm", "output_path", "write_file"]

log = logging.getLogger(__name__)

_SCHEMA = "tflite_micro.tensorflow.lite.micro.python.schema_py_generated"
_INSTALL = "pip install tflite-micro flatbuffers  (or: pip install 'tinyqml[classical]')"

#: op name -> (builtin code, version for int8 inputs, as TFLite's op_version assigns)
_OPS = {"ADD": (0, 2), "AVERAGE_POOL_2D": (1, 2), "CONV_2D": (3, 3), "DEPTHWISE_CONV_2D": (4, 3),
        "DEQUANTIZE": (6, 2), "FULLY_CONNECTED": (9, 4), "MAX_POOL_2D": (17, 2), "RESHAPE": (22, 1),
        "PAD": (34, 2), "QUANTIZE": (114, 2)}
_SAME, _VALID = 0, 1
_FLOAT32, _INT32, _INT8 = 0, 2, 9
_ACT = {Activation.NONE: 0, Activation.RELU: 1, Activation.RELU6: 3}
_ALIGN = 16  # TFLite Micro reads weights and biases in place: keep every buffer 16-byte aligned


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ExportError(f"TFLite export and TFLite Micro need the tflite-micro package: {_INSTALL}") from exc


def _schema() -> Any:
    _import("flatbuffers")
    return _import(_SCHEMA)


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
    """Accumulates the tensors, buffers, operator codes and operators of one subgraph."""

    def __init__(self, qgraph: QuantizedGraph) -> None:
        self.fb = _schema()
        self.q = qgraph
        self.tensors: list[Any] = []
        self.buffers: list[Any] = [self.fb.BufferT()]  # buffer 0: the empty one, by convention
        self.opcodes: dict[str, int] = {}
        self.operators: list[Any] = []
        self.index: dict[str, int] = {}

    def _quant(self, scale: Any, zero_point: Any, dim: int = 0) -> Any:
        qp = self.fb.QuantizationParametersT()
        qp.scale = [float(s) for s in np.atleast_1d(np.asarray(scale, dtype=np.float32))]
        qp.zeroPoint = [int(z) for z in np.atleast_1d(zero_point)]
        qp.quantizedDimension = dim
        return qp

    def tensor(self, name: str, shape: tuple[int, ...], dtype: int, quant: Any = None,
               data: np.ndarray | None = None) -> int:
        t = self.fb.TensorT()
        t.name, t.shape, t.type, t.quantization = name, [int(d) for d in shape], dtype, quant
        t.buffer = 0
        if data is not None:
            b = _aligned_buffer_class()()
            b.data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).view(np.uint8).reshape(-1)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def activation(self, name: str) -> int:
        """The int8 tensor of an IR activation (created on first use)."""
        if name not in self.index:
            tq = self.q.tensors[name]
            self.index[name] = self.tensor(name, self.q.graph.shapes[name], _INT8,
                                           self._quant(tq.scale, tq.zero_point))
        return self.index[name]

    def derived(self, name: str, like: str, shape: tuple[int, ...]) -> int:
        """A new int8 tensor with the parameters of the IR tensor ``like`` (a PAD output)."""
        tq = self.q.tensors[like]
        return self.tensor(name, shape, _INT8, self._quant(tq.scale, tq.zero_point))

    def const(self, name: str, array: np.ndarray, dtype: int, quant: Any = None) -> int:
        return self.tensor(name, array.shape, dtype, quant, array)

    def op(self, name: str, inputs: list[int], outputs: list[int], options_type: int = 0,
           options: Any = None, first: bool = False) -> None:
        """Append an operator (``first``: put it before every other one)."""
        if name not in self.opcodes:
            self.opcodes[name] = len(self.opcodes)
        o = self.fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.opcodes[name], inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.insert(0 if first else len(self.operators), o)

    def operator_codes(self) -> list[Any]:
        codes = []
        for name in self.opcodes:  # dicts keep insertion order = opcode index
            code, version = _OPS[name]
            oc = self.fb.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
            codes.append(oc)
        return codes


@functools.lru_cache(maxsize=1)
def _aligned_buffer_class() -> type:
    """``BufferT`` whose bytes start on a 16-byte boundary of the file (made after the lazy schema import)."""
    fb = _schema()

    class AlignedBuffer(fb.BufferT):
        def Pack(self, builder: Any) -> int:  # noqa: N802 (the object API's name)
            data = None
            if self.data is not None and len(self.data):
                payload = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(payload), _ALIGN)
                builder.head -= len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                builder.vectorNumElems = len(payload)
                data = builder.EndVector()
            fb.BufferStart(builder)
            if data is not None:
                fb.BufferAddData(builder, data)
            return fb.BufferEnd(builder)

    return AlignedBuffer


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
    p = w.const(f"{node.output}/paddings", pads, _INT32)
    y = w.derived(f"{node.output}/pad", node.input, (1, h + top + bottom, wd + left + right, c))
    w.op("PAD", [x, p], [y], w.fb.BuiltinOptions.PadOptions, w.fb.PadOptionsT())
    return y, _VALID


def _weights(node: Conv2D | DepthwiseConv2D | FullyConnected, qn: QuantizedNode, w: _Writer,
             dim: int) -> tuple[int, int]:
    s_in = np.float32(w.q.tensors[node.input].scale)
    s_w = np.asarray(qn.weight_scale, dtype=np.float32)
    zeros = np.zeros(s_w.size, dtype=np.int64)
    wt = w.const(f"{node.output}/weight", qn.weight_q.astype(np.int8), _INT8, w._quant(s_w, zeros, dim))
    bias_scale = (np.float64(s_in) * s_w.astype(np.float64)).astype(np.float32)  # one per weight scale
    b = w.const(f"{node.output}/bias", qn.bias_q.astype(np.int32), _INT32, w._quant(bias_scale, zeros))
    return wt, b


@_emit.register
def _(node: Conv2D, qn: QuantizedNode, w: _Writer) -> None:
    x, pad = _padded_input(node, qn.weight_q.shape[1:3], w)
    wt, b = _weights(node, qn, w, dim=0)
    opt = w.fb.Conv2DOptionsT()
    opt.padding, (opt.strideH, opt.strideW) = pad, node.stride
    opt.fusedActivationFunction, opt.dilationHFactor, opt.dilationWFactor = _ACT[node.activation], 1, 1
    w.op("CONV_2D", [x, wt, b], [w.activation(node.output)], w.fb.BuiltinOptions.Conv2DOptions, opt)


@_emit.register
def _(node: DepthwiseConv2D, qn: QuantizedNode, w: _Writer) -> None:
    x, pad = _padded_input(node, qn.weight_q.shape[1:3], w)
    wt, b = _weights(node, qn, w, dim=3)
    opt = w.fb.DepthwiseConv2DOptionsT()
    opt.padding, (opt.strideH, opt.strideW), opt.depthMultiplier = pad, node.stride, 1
    opt.fusedActivationFunction, opt.dilationHFactor, opt.dilationWFactor = _ACT[node.activation], 1, 1
    w.op("DEPTHWISE_CONV_2D", [x, wt, b], [w.activation(node.output)],
         w.fb.BuiltinOptions.DepthwiseConv2DOptions, opt)


@_emit.register
def _(node: FullyConnected, qn: QuantizedNode, w: _Writer) -> None:
    if np.asarray(qn.weight_scale).size != 1:
        raise ExportError(f"FullyConnected {node.output!r} has {np.asarray(qn.weight_scale).size} weight scales; "
                          f"TFLite Micro's int8 fully-connected kernel takes one (per-tensor) scale")
    x = w.activation(node.input)
    wt, b = _weights(node, qn, w, dim=0)
    opt = w.fb.FullyConnectedOptionsT()
    opt.fusedActivationFunction, opt.keepNumDims = _ACT[node.activation], False
    w.op("FULLY_CONNECTED", [x, wt, b], [w.activation(node.output)],
         w.fb.BuiltinOptions.FullyConnectedOptions, opt)


@_emit.register
def _(node: Add, qn: QuantizedNode, w: _Writer) -> None:
    opt = w.fb.AddOptionsT()
    opt.fusedActivationFunction = _ACT[node.activation]
    w.op("ADD", [w.activation(node.left), w.activation(node.right)], [w.activation(node.output)],
         w.fb.BuiltinOptions.AddOptions, opt)


def _pool(name: str, node: AvgPool2D | MaxPool2D, w: _Writer) -> None:
    opt = w.fb.Pool2DOptionsT()
    opt.padding, (opt.strideH, opt.strideW), (opt.filterHeight, opt.filterWidth) = _VALID, node.stride, node.filter
    opt.fusedActivationFunction = 0
    w.op(name, [w.activation(node.input)], [w.activation(node.output)], w.fb.BuiltinOptions.Pool2DOptions, opt)


@_emit.register
def _(node: AvgPool2D, qn: QuantizedNode, w: _Writer) -> None:
    _pool("AVERAGE_POOL_2D", node, w)


@_emit.register
def _(node: MaxPool2D, qn: QuantizedNode, w: _Writer) -> None:
    _pool("MAX_POOL_2D", node, w)


@_emit.register
def _(node: Reshape, qn: QuantizedNode, w: _Writer) -> None:
    shape = np.array(node.shape, dtype=np.int32)
    s = w.const(f"{node.output}/shape", shape, _INT32)
    opt = w.fb.ReshapeOptionsT()
    opt.newShape = [int(d) for d in shape]
    w.op("RESHAPE", [w.activation(node.input), s], [w.activation(node.output)],
         w.fb.BuiltinOptions.ReshapeOptions, opt)


def _float_io(w: _Writer, inputs: list[int], outputs: list[int]) -> tuple[list[int], list[int]]:
    """QUANTIZE each int8 input from a float32 one, DEQUANTIZE each output to float32."""
    g = w.q.graph
    new_in = []
    for name, idx in zip(g.inputs, inputs):
        f = w.tensor(f"{name}/float", g.shapes[name], _FLOAT32)
        w.op("QUANTIZE", [f], [idx], first=True)
        new_in.append(f)
    new_out = []
    for name, idx in zip(g.outputs, outputs):
        f = w.tensor(f"{name}/float", g.shapes[name], _FLOAT32)
        w.op("DEQUANTIZE", [idx], [f])
        new_out.append(f)
    return new_in, new_out


def to_tflite(qgraph: QuantizedGraph, options: TFLiteOptions = TFLiteOptions()) -> bytes:
    """The ``.tflite`` flatbuffer of ``qgraph`` (int8 in and out unless ``options.float_io``)."""
    if not isinstance(qgraph, QuantizedGraph):
        raise ExportError(f"to_tflite takes a QuantizedGraph (see tinyqml.classical.quantize), got "
                          f"{type(qgraph).__name__}")
    if not isinstance(options, TFLiteOptions):
        raise ExportError(f"options must be TFLiteOptions, got {type(options).__name__}")
    flatbuffers = _import("flatbuffers")
    w = _Writer(qgraph)
    g = qgraph.graph
    inputs = [w.activation(name) for name in g.inputs]
    for qn in qgraph.nodes:
        _emit(qn.node, qn, w)
    outputs = [w.activation(name) for name in g.outputs]
    if options.float_io:
        inputs, outputs = _float_io(w, inputs, outputs)
    sub = w.fb.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = w.tensors, inputs, outputs, w.operators, "main"
    model = w.fb.ModelT()
    model.version, model.description = 3, options.description
    model.operatorCodes, model.subgraphs, model.buffers = w.operator_codes(), [sub], w.buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


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

_ARENA = re.compile(r"\[RecordingMicroAllocator\] Arena allocation total (\d+) bytes")


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

    def arena_bytes(self) -> int:
        """The arena TFLite Micro allocated (planned activations + persistent runtime data), parsed from
        ``print_allocations`` (which writes to the process's stderr)."""
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
        m = _ARENA.search(text)
        if m is None:
            raise ExportError(f"TFLite Micro's allocation report has no arena total: {text[:200]!r}")
        return int(m.group(1))


def _name(t: Any) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def run_tflm(blob: bytes, *inputs: np.ndarray) -> np.ndarray:
    """The first output of the ``.tflite`` model ``blob`` on TFLite Micro for batched int8 inputs."""
    return TFLMRunner(blob)(*inputs)
