"""Read a ``.tflite`` flatbuffer into frozen dataclasses, and check that it is a fully-int8 model the C
code generator (:mod:`tinyqml.classical.codegen`) compiles.

:func:`read_tflite` parses the first subgraph with the schema bindings that the ``tflite-micro`` package
ships (``ModelT.InitFromPackedBuf``, no hand parser): every tensor (:class:`Tensor`: shape, dtype,
per-tensor or per-channel scales and zero points, constant data as numpy), every operator
(:class:`Operator`: opcode name from ``max(deprecated_builtin_code, builtin_code)``, input and output
tensor indices, builtin options as small frozen dataclasses) and the subgraph's inputs and outputs.
:func:`check_supported` raises :class:`UnsupportedOperatorError` (naming the operator and its index)
for an operator outside :data:`SUPPORTED_OPS`, a float tensor between int8 operators, per-channel
parameters where the kernel takes one scale, and similar.

>>> import numpy as np, torch
>>> from tinyqml.classical import quantize_model, to_tflite
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
...                           torch.nn.Linear(2 * 4 * 4, 3))
>>> model = read_tflite(to_tflite(quantize_model(net, torch.rand(8, 1, 4, 4)).qgraph))
>>> [op.opcode for op in model.operators]
['CONV_2D', 'RESHAPE', 'FULLY_CONNECTED']
>>> conv = model.operators[0]
>>> conv.options.padding, conv.options.activation, model.tensors[conv.inputs[1]].shape
(<Padding.SAME: 0>, <Activation.RELU: 1>, (2, 3, 3, 1))
>>> check_supported(model) is model
True
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from tinyqml.classical.errors import ExportError
from tinyqml.classical.tflite_builder import schema as _schema

__all__ = ["UnsupportedOperatorError", "DType", "Padding", "Activation", "Tensor", "ConvOptions",
           "DepthwiseOptions", "FullyConnectedOptions", "PoolOptions", "ElementwiseOptions", "SoftmaxOptions",
           "ReshapeOptions", "ReducerOptions", "NoOptions", "Options", "Operator", "TFLiteModel", "read_tflite",
           "check_supported", "SUPPORTED_OPS"]


class UnsupportedOperatorError(ExportError):
    """An operator (or a use of one) that the C code generator does not compile; the message names the
    operator and its index in the graph."""


class DType(enum.Enum):
    """TFLite tensor types (the schema's ``TensorType`` codes)."""

    FLOAT32 = 0
    FLOAT16 = 1
    INT32 = 2
    UINT8 = 3
    INT64 = 4
    STRING = 5
    BOOL = 6
    INT16 = 7
    COMPLEX64 = 8
    INT8 = 9
    FLOAT64 = 10
    OTHER = -1

    @property
    def numpy(self) -> np.dtype:
        """The little-endian numpy dtype (``OTHER`` / ``STRING``: bytes)."""
        names = {"FLOAT32": "<f4", "FLOAT16": "<f2", "INT32": "<i4", "UINT8": "u1", "INT64": "<i8", "BOOL": "?",
                 "INT16": "<i2", "COMPLEX64": "<c8", "INT8": "i1", "FLOAT64": "<f8"}
        return np.dtype(names.get(self.name, "u1"))


class Padding(enum.Enum):
    SAME = 0
    VALID = 1


class Activation(enum.Enum):
    """Fused activations (the schema's ``ActivationFunctionType`` codes)."""

    NONE = 0
    RELU = 1
    RELU_N1_TO_1 = 2
    RELU6 = 3
    TANH = 4
    SIGN_BIT = 5


@dataclass(frozen=True, eq=False)
class Tensor:
    """One tensor of the subgraph. ``scales`` are the float32 scales (one, or one per channel along
    ``quantized_dimension``), empty when the tensor is not quantized; ``data`` is the constant value
    (numpy, in ``shape``) or ``None`` for an activation."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: DType
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0
    data: np.ndarray | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.numpy.itemsize

    @property
    def scale(self) -> float:
        """The (first) scale; :class:`ExportError` when the tensor has none."""
        if not self.scales:
            raise ExportError(f"tensor {self.index} ({self.name!r}) is not quantized (no scale)")
        return self.scales[0]

    @property
    def zero_point(self) -> int:
        return self.zero_points[0] if self.zero_points else 0

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1


@dataclass(frozen=True)
class ConvOptions:
    padding: Padding = Padding.VALID
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class DepthwiseOptions:
    padding: Padding = Padding.VALID
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    activation: Activation = Activation.NONE
    depth_multiplier: int = 1


@dataclass(frozen=True)
class FullyConnectedOptions:
    activation: Activation = Activation.NONE
    keep_num_dims: bool = False


@dataclass(frozen=True)
class PoolOptions:
    padding: Padding = Padding.VALID
    stride: tuple[int, int] = (1, 1)
    filter: tuple[int, int] = (1, 1)
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class ElementwiseOptions:
    """ADD and MUL: the fused activation."""

    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class SoftmaxOptions:
    beta: float = 1.0


@dataclass(frozen=True)
class ReshapeOptions:
    new_shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class ReducerOptions:
    """MEAN: ``keep_dims`` (the axes come from the operator's second, constant input)."""

    keep_dims: bool = False


@dataclass(frozen=True)
class NoOptions:
    """An operator without builtin options (PAD, LOGISTIC, QUANTIZE, ...)."""


Options = Union[ConvOptions, DepthwiseOptions, FullyConnectedOptions, PoolOptions, ElementwiseOptions,
                SoftmaxOptions, ReshapeOptions, ReducerOptions, NoOptions]


@dataclass(frozen=True)
class Operator:
    """One operator: ``index`` in execution order, ``opcode`` (the builtin name), tensor indices
    (``-1`` for an omitted optional input) and parsed ``options``."""

    index: int
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Options = field(default_factory=NoOptions)

    def describe(self) -> str:
        return f"operator {self.index} ({self.opcode})"


@dataclass(frozen=True, eq=False)
class TFLiteModel:
    """The first subgraph of a ``.tflite`` model."""

    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    description: str = ""
    version: int = 3

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    def consumers(self, index: int) -> list[Operator]:
        """The operators that read tensor ``index``."""
        return [op for op in self.operators if index in op.inputs]

    def producer(self, index: int) -> Operator | None:
        return next((op for op in self.operators if index in op.outputs), None)


# -- parsing -----------------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _blob(model: bytes | bytearray | memoryview | str | os.PathLike) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    path = Path(model)
    if not path.is_file():
        raise ExportError(f"{str(path)!r} is not a file (give a .tflite model's path or its bytes)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ExportError(f"cannot read {str(path)!r}: {exc}") from exc


def _tensor(index: int, t: Any, buffers: list[Any], blob: bytes) -> Tensor:
    try:
        dtype = DType(int(t.type))
    except ValueError:
        dtype = DType.OTHER
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
    q = t.quantization
    scales: tuple[float, ...] = ()
    zeros: tuple[int, ...] = ()
    qdim = 0
    if q is not None and q.scale is not None and len(q.scale):
        scales = tuple(float(np.float32(s)) for s in q.scale)
        zeros = tuple(int(z) for z in (q.zeroPoint if q.zeroPoint is not None else [0] * len(scales)))
        qdim = int(q.quantizedDimension)
    data = None
    buf = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
    if buf is not None:
        raw = None
        if buf.data is not None and len(buf.data):
            raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
        elif getattr(buf, "offset", 0) and buf.offset > 1:
            raw = blob[buf.offset:buf.offset + buf.size]
        if raw is not None:
            data = np.frombuffer(raw, dtype=dtype.numpy).reshape(shape).copy()
    return Tensor(index, _text(t.name), shape, dtype, scales, zeros, qdim, data)


def _pair(h: Any, w: Any) -> tuple[int, int]:
    return int(h), int(w)


def _act(code: Any) -> Activation:
    return Activation(int(code))


def _options(opcode: str, o: Any) -> Options:
    if o is None:
        return {"CONV_2D": ConvOptions(), "DEPTHWISE_CONV_2D": DepthwiseOptions(),
                "FULLY_CONNECTED": FullyConnectedOptions(), "ADD": ElementwiseOptions(),
                "MUL": ElementwiseOptions(), "SOFTMAX": SoftmaxOptions(), "MEAN": ReducerOptions()}.get(
                    opcode, NoOptions())
    if opcode == "CONV_2D":
        return ConvOptions(Padding(int(o.padding)), _pair(o.strideH, o.strideW),
                           _pair(o.dilationHFactor, o.dilationWFactor), _act(o.fusedActivationFunction))
    if opcode == "DEPTHWISE_CONV_2D":
        return DepthwiseOptions(Padding(int(o.padding)), _pair(o.strideH, o.strideW),
                                _pair(o.dilationHFactor, o.dilationWFactor), _act(o.fusedActivationFunction),
                                int(o.depthMultiplier))
    if opcode == "FULLY_CONNECTED":
        return FullyConnectedOptions(_act(o.fusedActivationFunction), bool(o.keepNumDims))
    if opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return PoolOptions(Padding(int(o.padding)), _pair(o.strideH, o.strideW), _pair(o.filterHeight, o.filterWidth),
                           _act(o.fusedActivationFunction))
    if opcode in ("ADD", "MUL"):
        return ElementwiseOptions(_act(o.fusedActivationFunction))
    if opcode == "SOFTMAX":
        return SoftmaxOptions(float(np.float32(o.beta)))
    if opcode == "RESHAPE":
        return ReshapeOptions(tuple(int(d) for d in (o.newShape if o.newShape is not None else ())))
    if opcode == "MEAN":
        return ReducerOptions(bool(o.keepDims))
    return NoOptions()


def read_tflite(model: bytes | str | os.PathLike) -> TFLiteModel:
    """The first subgraph of a ``.tflite`` model (its bytes or its path); :class:`ExportError` for a file
    that is not a TFLite flatbuffer."""
    fb = _schema()
    blob = _blob(model)
    if len(blob) < 8 or blob[4:8] != b"TFL3":
        raise ExportError(f"not a TFLite flatbuffer (no 'TFL3' identifier in the first 8 bytes: {blob[:8]!r})")
    try:
        m = fb.ModelT.InitFromPackedBuf(blob, 0)
    except Exception as exc:  # a corrupt flatbuffer raises struct / index errors
        raise ExportError(f"not a readable TFLite flatbuffer: {type(exc).__name__}: {exc}") from exc
    if not m.subgraphs:
        raise ExportError("the TFLite model has no subgraph")
    try:
        return _model(fb, m, blob)
    except (IndexError, TypeError, AttributeError, KeyError, ValueError) as exc:  # dangling indices, bad enums
        raise ExportError(f"malformed TFLite model: {type(exc).__name__}: {exc}") from exc


def _model(fb: Any, m: Any, blob: bytes) -> TFLiteModel:
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(int(c.builtinCode), int(c.deprecatedBuiltinCode)) for c in (m.operatorCodes or [])]
    sub = m.subgraphs[0]
    buffers = list(m.buffers or [])
    tensors = tuple(_tensor(i, t, buffers, blob) for i, t in enumerate(sub.tensors or []))
    ops = []
    for i, o in enumerate(sub.operators or []):
        code = codes[o.opcodeIndex]
        name = names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            name = f"CUSTOM:{_text(m.operatorCodes[o.opcodeIndex].customCode)}"
        ops.append(Operator(i, name, tuple(int(x) for x in (o.inputs if o.inputs is not None else ())),
                            tuple(int(x) for x in (o.outputs if o.outputs is not None else ())),
                            _options(name, o.builtinOptions)))
    return TFLiteModel(tensors, tuple(ops), tuple(int(x) for x in sub.inputs), tuple(int(x) for x in sub.outputs),
                       _text(m.description), int(m.version))


# -- what the code generator supports ---------------------------------------------------------------------

#: the builtin operators the C code generator compiles
SUPPORTED_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D",
                           "MEAN", "ADD", "MUL", "PAD", "PADV2", "RESHAPE", "SOFTMAX", "LOGISTIC", "QUANTIZE",
                           "DEQUANTIZE"})
_ACTIVATIONS = {Activation.NONE, Activation.RELU, Activation.RELU6, Activation.RELU_N1_TO_1}
#: operand positions that must be constant (weights, biases, paddings, axes, shapes)
_CONST_INPUTS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2), "PAD": (1,),
                 "PADV2": (1, 2), "MEAN": (1,)}
#: activation (int8) operand positions
_DATA_INPUTS = {"ADD": (0, 1), "MUL": (0, 1)}


def _fail(op: Operator, why: str) -> UnsupportedOperatorError:
    return UnsupportedOperatorError(f"{op.describe()}: {why}")


def _edge_float(model: TFLiteModel, op: Operator) -> bool:
    """A QUANTIZE from a float graph input or a DEQUANTIZE to a float graph output."""
    if op.opcode == "QUANTIZE":
        t = model.tensors[op.inputs[0]]
        return t.dtype is DType.FLOAT32 and op.inputs[0] in model.inputs and len(model.consumers(t.index)) == 1
    if op.opcode == "DEQUANTIZE":
        return op.outputs[0] in model.outputs and model.tensors[op.outputs[0]].dtype is DType.FLOAT32
    return False


def _check_operator(model: TFLiteModel, op: Operator) -> None:
    if op.opcode not in SUPPORTED_OPS:
        raise _fail(op, f"is not supported by the C code generator (it compiles {', '.join(sorted(SUPPORTED_OPS))})")
    act = getattr(op.options, "activation", Activation.NONE)
    if act not in _ACTIVATIONS:
        raise _fail(op, f"fused activation {act.name} is not supported (NONE, RELU, RELU6, RELU_N1_TO_1 are)")
    for pos in _CONST_INPUTS.get(op.opcode, ()):
        if pos < len(op.inputs) and op.inputs[pos] >= 0 and not model.tensors[op.inputs[pos]].is_constant:
            raise _fail(op, f"input {pos} (tensor {op.inputs[pos]}) must be a constant")
    consts = set(_CONST_INPUTS.get(op.opcode, ()))
    if op.opcode == "RESHAPE":
        consts.add(1)
    float_edge = _edge_float(model, op)
    if op.opcode in ("QUANTIZE", "DEQUANTIZE") and not float_edge:
        src, dst = (model.tensors[i] for i in (op.inputs[0], op.outputs[0]))
        if not (src.dtype is DType.INT8 and dst.dtype is DType.INT8):
            raise _fail(op, f"{op.opcode} from {src.dtype.name} to {dst.dtype.name} is supported only at the graph "
                            f"edges (a float32 graph input into QUANTIZE, a DEQUANTIZE into a float32 graph output)")
    for pos, idx in enumerate(op.inputs):
        if idx < 0 or pos in consts:
            continue
        t = model.tensors[idx]
        if t.dtype is not DType.INT8 and not (float_edge and op.opcode == "QUANTIZE"):
            raise _fail(op, f"input {pos} is tensor {idx} ({t.name!r}) of type {t.dtype.name}; the generated C "
                            f"computes int8 activations only (a float tensor is allowed only at the graph edges)")
        if t.dtype is DType.INT8 and (not t.scales or t.per_channel):
            raise _fail(op, f"activation tensor {idx} ({t.name!r}) needs one (per-tensor) scale, "
                            f"it has {len(t.scales)}")
    for idx in op.outputs:
        t = model.tensors[idx]
        if t.dtype is not DType.INT8 and not (float_edge and op.opcode == "DEQUANTIZE"):
            raise _fail(op, f"output tensor {idx} ({t.name!r}) is {t.dtype.name}; only int8 activations are supported")
        if t.dtype is DType.INT8 and (not t.scales or t.per_channel):
            raise _fail(op, f"output tensor {idx} ({t.name!r}) needs one (per-tensor) scale, it has {len(t.scales)}")
    _check_weights(model, op)


def _check_weights(model: TFLiteModel, op: Operator) -> None:
    if op.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        return
    w = model.tensors[op.inputs[1]]
    if w.dtype is not DType.INT8:
        raise _fail(op, f"weights (tensor {w.index}) are {w.dtype.name}; only int8 weights are supported")
    if any(z != 0 for z in w.zero_points):
        raise _fail(op, f"weights (tensor {w.index}) have a non-zero zero point; int8 weights must be symmetric")
    channels = w.shape[3] if op.opcode == "DEPTHWISE_CONV_2D" else w.shape[0]
    dim = 3 if op.opcode == "DEPTHWISE_CONV_2D" else 0
    if w.per_channel and (len(w.scales) != channels or w.quantized_dimension != dim):
        raise _fail(op, f"per-channel weights (tensor {w.index}) have {len(w.scales)} scales along dimension "
                        f"{w.quantized_dimension}; expected {channels} along dimension {dim}")
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = model.tensors[op.inputs[2]]
        if b.dtype is not DType.INT32:
            raise _fail(op, f"bias (tensor {b.index}) is {b.dtype.name}; int8 kernels take an int32 bias")


def check_supported(model: TFLiteModel) -> TFLiteModel:
    """``model`` when the code generator compiles it, else :class:`UnsupportedOperatorError` naming the
    first offending operator and its index (or the graph input / output)."""
    if not model.operators:
        raise UnsupportedOperatorError("the model has no operators")
    for op in model.operators:
        _check_operator(model, op)
    for kind, indices in (("input", model.inputs), ("output", model.outputs)):
        for k, idx in enumerate(indices):
            t = model.tensors[idx]
            if t.dtype not in (DType.INT8, DType.FLOAT32):
                raise UnsupportedOperatorError(f"graph {kind} {k} (tensor {idx}, {t.name!r}) is {t.dtype.name}; "
                                               f"int8 or float32 (with QUANTIZE / DEQUANTIZE) are supported")
    return model
