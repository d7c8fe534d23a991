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
import math
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
        return math.prod(self.shape)  # Python ints: no int64 overflow on a huge (corrupt) shape

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
    name = _text(t.name)
    if any(d < 0 for d in shape):
        raise ExportError(f"tensor {index} ({name!r}) has shape {list(shape)}; dimensions must be >= 0")
    q = t.quantization
    scales: tuple[float, ...] = ()
    zeros: tuple[int, ...] = ()
    qdim = 0
    if q is not None and q.scale is not None and len(q.scale):
        scales = tuple(float(np.float32(s)) for s in q.scale)
        zeros = tuple(int(z) for z in (q.zeroPoint if q.zeroPoint is not None else ()))
        qdim = int(q.quantizedDimension)
    if t.buffer and t.buffer >= len(buffers):
        raise ExportError(f"tensor {index} ({name!r}) refers to buffer {t.buffer}; the model has {len(buffers)} "
                          f"buffers (0 to {len(buffers) - 1})")
    data = None
    buf = buffers[t.buffer] if t.buffer else None
    if buf is not None:
        raw = None
        if buf.data is not None and len(buf.data):
            raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
        elif getattr(buf, "offset", 0) and buf.offset > 1:
            raw = blob[buf.offset:buf.offset + buf.size]
        if raw is not None:
            need = math.prod(shape) * dtype.numpy.itemsize
            if len(raw) != need:
                raise ExportError(f"tensor {index} ({name!r}): buffer {t.buffer} holds {len(raw)} bytes, its shape "
                                  f"{list(shape)} of {dtype.name} needs {need}")
            data = np.frombuffer(raw, dtype=dtype.numpy).reshape(shape).copy()
    return Tensor(index, name, shape, dtype, scales, zeros, qdim, data)


def _pair(h: Any, w: Any) -> tuple[int, int]:
    return int(h), int(w)


def _act(code: Any) -> Activation:
    try:
        return Activation(int(code))
    except ValueError:
        raise ExportError(f"fused activation {int(code)} is not one of "
                          f"{', '.join(f'{a.name} ({a.value})' for a in Activation)}") from None


def _padding(code: Any) -> Padding:
    try:
        return Padding(int(code))
    except ValueError:
        raise ExportError(f"padding {int(code)} is not SAME (0) or VALID (1)") from None


#: the builtin options table (object API class) each operator with options takes
_OPTION_TABLES = {"CONV_2D": "Conv2DOptionsT", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptionsT",
                  "FULLY_CONNECTED": "FullyConnectedOptionsT", "AVERAGE_POOL_2D": "Pool2DOptionsT",
                  "MAX_POOL_2D": "Pool2DOptionsT", "ADD": "AddOptionsT", "MUL": "MulOptionsT",
                  "SOFTMAX": "SoftmaxOptionsT", "RESHAPE": "ReshapeOptionsT", "MEAN": "ReducerOptionsT"}


def _options(opcode: str, o: Any) -> Options:
    table = _OPTION_TABLES.get(opcode)
    if o is not None and table is not None and type(o).__name__ != table:
        raise ExportError(f"its builtin options are {type(o).__name__[:-1]}; {opcode} takes {table[:-1]}")
    if o is None:
        return {"CONV_2D": ConvOptions(), "DEPTHWISE_CONV_2D": DepthwiseOptions(),
                "FULLY_CONNECTED": FullyConnectedOptions(), "ADD": ElementwiseOptions(),
                "MUL": ElementwiseOptions(), "SOFTMAX": SoftmaxOptions(), "MEAN": ReducerOptions()}.get(
                    opcode, NoOptions())
    if opcode == "CONV_2D":
        return ConvOptions(_padding(o.padding), _pair(o.strideH, o.strideW),
                           _pair(o.dilationHFactor, o.dilationWFactor), _act(o.fusedActivationFunction))
    if opcode == "DEPTHWISE_CONV_2D":
        return DepthwiseOptions(_padding(o.padding), _pair(o.strideH, o.strideW),
                                _pair(o.dilationHFactor, o.dilationWFactor), _act(o.fusedActivationFunction),
                                int(o.depthMultiplier))
    if opcode == "FULLY_CONNECTED":
        return FullyConnectedOptions(_act(o.fusedActivationFunction), bool(o.keepNumDims))
    if opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return PoolOptions(_padding(o.padding), _pair(o.strideH, o.strideW), _pair(o.filterHeight, o.filterWidth),
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
        raise ExportError(f"not a readable TFLite flatbuffer (truncated or corrupt, {len(blob)} bytes): "
                          f"{type(exc).__name__}: {exc}") from exc
    if not m.subgraphs:
        raise ExportError("the TFLite model has no subgraph")
    try:
        return _model(fb, m, blob)
    except ExportError as exc:  # what _model checks: dangling indices, bad enums, data that does not fit
        raise ExportError(f"malformed TFLite model: {exc}") from None
    except (IndexError, TypeError, AttributeError, KeyError, ValueError) as exc:  # anything it does not name
        raise ExportError(f"malformed TFLite model: {type(exc).__name__}: {exc}") from exc


def _indices(values: Any, what: str, n: int, optional: bool = False) -> tuple[int, ...]:
    """Tensor indices (``-1``: an omitted optional input), each checked against the ``n`` tensors."""
    out = tuple(int(x) for x in (values if values is not None else ()))
    for k, i in enumerate(out):
        if not (-1 if optional else 0) <= i < n:
            allowed = f"-1 (omitted) or 0 to {n - 1}" if optional else f"0 to {n - 1}"
            raise ExportError(f"{what} {k} is tensor {i}; the subgraph has {n} tensors ({allowed})")
    return out


def _model(fb: Any, m: Any, blob: bytes) -> TFLiteModel:
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(int(c.builtinCode), int(c.deprecatedBuiltinCode)) for c in (m.operatorCodes or [])]
    sub = m.subgraphs[0]
    buffers = list(m.buffers or [])
    tensors = tuple(_tensor(i, t, buffers, blob) for i, t in enumerate(sub.tensors or []))
    n = len(tensors)
    ops = []
    for i, o in enumerate(sub.operators or []):
        if not 0 <= o.opcodeIndex < len(codes):
            raise ExportError(f"operator {i} has opcode index {o.opcodeIndex}; the model has {len(codes)} "
                              f"operator codes")
        code = codes[o.opcodeIndex]
        name = names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            name = f"CUSTOM:{_text(m.operatorCodes[o.opcodeIndex].customCode)}"
        where = f"operator {i} ({name})"
        try:
            options = _options(name, o.builtinOptions)
        except ExportError as exc:
            raise ExportError(f"{where}: {exc}") from None
        ops.append(Operator(i, name, _indices(o.inputs, f"{where}: input", n, optional=True),
                            _indices(o.outputs, f"{where}: output", n), options))
    return TFLiteModel(tensors, tuple(ops), _indices(sub.inputs, "graph input", n),
                       _indices(sub.outputs, "graph output", n), _text(m.description), int(m.version))


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
#: (fewest, most) inputs of each operator; the first ``fewest`` may not be omitted (-1); one output each
_ARITY = {"CONV_2D": (2, 3), "DEPTHWISE_CONV_2D": (2, 3), "FULLY_CONNECTED": (2, 3), "AVERAGE_POOL_2D": (1, 1),
          "MAX_POOL_2D": (1, 1), "MEAN": (2, 2), "ADD": (2, 2), "MUL": (2, 2), "PAD": (2, 2), "PADV2": (2, 3),
          "RESHAPE": (1, 2), "SOFTMAX": (1, 1), "LOGISTIC": (1, 1), "QUANTIZE": (1, 1), "DEQUANTIZE": (1, 1)}
#: the largest tensor (elements) the generated C indexes: its sizes and offsets are int32
MAX_ELEMENTS = 2 ** 31 - 1


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


def _check_arity(op: Operator) -> None:
    fewest, most = _ARITY[op.opcode]
    if not fewest <= len(op.inputs) <= most or len(op.outputs) != 1:
        ins = f"{fewest}" if fewest == most else f"{fewest} to {most}"
        raise _fail(op, f"has {len(op.inputs)} inputs and {len(op.outputs)} outputs; {op.opcode} takes {ins} "
                        f"inputs and 1 output")
    for pos in range(fewest):
        if op.inputs[pos] < 0:
            raise _fail(op, f"input {pos} is omitted (-1); only optional inputs (a bias, PADV2's value, "
                            f"RESHAPE's shape) may be")


def _activation_problem(t: Tensor) -> str | None:
    """Why tensor ``t`` cannot be an activation of the generated C (``None``: it can)."""
    if any(d < 1 for d in t.shape):
        return f"has shape {list(t.shape)}; activations need every dimension >= 1"
    if t.size > MAX_ELEMENTS:
        return f"has {t.size} elements (shape {list(t.shape)}); the generated C indexes at most 2^31 - 1"
    if t.dtype is not DType.INT8:
        return None
    if len(t.scales) != 1:
        return f"needs one (per-tensor) scale, it has {len(t.scales)}"
    if not (math.isfinite(t.scale) and t.scale > 0):
        return f"has scale {t.scale!r}; an int8 scale must be a finite number > 0"
    if len(t.zero_points) != 1 or not -128 <= t.zero_point <= 127:
        return f"has zero points {list(t.zero_points)}; an int8 activation takes one in [-128, 127]"
    return None


def _check_operator(model: TFLiteModel, op: Operator) -> None:
    if op.opcode not in SUPPORTED_OPS:
        raise _fail(op, f"is not supported by the C code generator (it compiles {', '.join(sorted(SUPPORTED_OPS))})")
    _check_arity(op)
    if op.opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D") and not isinstance(op.options, PoolOptions):
        raise _fail(op, "has no Pool2DOptions (its filter size and strides)")
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
    if op.opcode in ("QUANTIZE", "DEQUANTIZE"):
        src, dst = (model.tensors[i] for i in (op.inputs[0], op.outputs[0]))
        if not float_edge and not (src.dtype is DType.INT8 and dst.dtype is DType.INT8):
            raise _fail(op, f"{op.opcode} from {src.dtype.name} to {dst.dtype.name} is supported only at the graph "
                            f"edges (a float32 graph input into QUANTIZE, a DEQUANTIZE into a float32 graph output)")
        if src.shape != dst.shape:
            raise _fail(op, f"input shape {list(src.shape)} and output shape {list(dst.shape)} differ")
    for pos, idx in enumerate(op.inputs):
        if idx < 0 or pos in consts:
            continue
        t = model.tensors[idx]
        if t.dtype is not DType.INT8 and not (float_edge and op.opcode == "QUANTIZE"):
            raise _fail(op, f"input {pos} is tensor {idx} ({t.name!r}) of type {t.dtype.name}; the generated C "
                            f"computes int8 activations only (a float tensor is allowed only at the graph edges)")
        if t.is_constant and op.opcode not in ("ADD", "MUL"):  # a constant ADD / MUL operand is named in lowering
            raise _fail(op, f"input {pos} (tensor {idx}, {t.name!r}) is a constant; it must be an activation")
        why = _activation_problem(t)
        if why is not None:
            raise _fail(op, f"activation tensor {idx} ({t.name!r}) {why}")
    for idx in op.outputs:
        t = model.tensors[idx]
        if t.dtype is not DType.INT8 and not (float_edge and op.opcode == "DEQUANTIZE"):
            raise _fail(op, f"output tensor {idx} ({t.name!r}) is {t.dtype.name}; only int8 activations are supported")
        why = _activation_problem(t)
        if why is not None:
            raise _fail(op, f"output tensor {idx} ({t.name!r}) {why}")
    _check_weights(model, op)


def _check_weights(model: TFLiteModel, op: Operator) -> None:
    if op.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        return
    w = model.tensors[op.inputs[1]]
    if w.dtype is not DType.INT8:
        raise _fail(op, f"weights (tensor {w.index}) are {w.dtype.name}; only int8 weights are supported")
    rank = 2 if op.opcode == "FULLY_CONNECTED" else 4
    if len(w.shape) != rank or any(d < 1 for d in w.shape):
        raise _fail(op, f"weights (tensor {w.index}) have shape {list(w.shape)}; {op.opcode} takes {rank}-D "
                        f"weights with every dimension >= 1")
    if any(z != 0 for z in w.zero_points):
        raise _fail(op, f"weights (tensor {w.index}) have a non-zero zero point; int8 weights must be symmetric")
    channels = w.shape[3] if op.opcode == "DEPTHWISE_CONV_2D" else w.shape[0]
    dim = 3 if op.opcode == "DEPTHWISE_CONV_2D" else 0
    if not w.scales or len(w.zero_points) != len(w.scales):
        raise _fail(op, f"weights (tensor {w.index}) have {len(w.scales)} scales and {len(w.zero_points)} zero "
                        f"points; int8 weights take one scale (or one per output channel) and as many zero points")
    if not all(math.isfinite(v) and v >= 0 for v in w.scales):
        raise _fail(op, f"weights (tensor {w.index}) have scales {list(w.scales)[:8]}; each must be a finite "
                        f"number >= 0")
    if w.per_channel and (len(w.scales) != channels or w.quantized_dimension != dim):
        raise _fail(op, f"per-channel weights (tensor {w.index}) have {len(w.scales)} scales along dimension "
                        f"{w.quantized_dimension}; expected {channels} along dimension {dim}")
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = model.tensors[op.inputs[2]]
        if b.dtype is not DType.INT32:
            raise _fail(op, f"bias (tensor {b.index}) is {b.dtype.name}; int8 kernels take an int32 bias")


def _check_graph_io(model: TFLiteModel) -> None:
    for kind, indices in (("input", model.inputs), ("output", model.outputs)):
        if not indices:
            raise UnsupportedOperatorError(f"the model has no graph {kind}s; the generated C needs at least one")
        if len(set(indices)) != len(indices):
            raise UnsupportedOperatorError(f"the graph {kind}s {list(indices)} name a tensor twice")
        for k, idx in enumerate(indices):
            t = model.tensors[idx]
            where = f"graph {kind} {k} (tensor {idx}, {t.name!r})"
            if t.dtype not in (DType.INT8, DType.FLOAT32):
                raise UnsupportedOperatorError(f"{where} is {t.dtype.name}; int8 or float32 (with QUANTIZE / "
                                               f"DEQUANTIZE) are supported")
            if t.is_constant:
                raise UnsupportedOperatorError(f"{where} is a constant; graph inputs and outputs are activations")
            why = _activation_problem(t)
            if why is not None:
                raise UnsupportedOperatorError(f"{where} {why}")
            edge, verb = ("QUANTIZE", "reads") if kind == "input" else ("DEQUANTIZE", "writes")
            ops = model.consumers(idx) if kind == "input" else [model.producer(idx)]
            if t.dtype is DType.FLOAT32 and not any(op is not None and op.opcode == edge and _edge_float(model, op)
                                                    for op in ops):
                raise UnsupportedOperatorError(f"{where} is float32 but no {edge} at the graph edge {verb} it")


def _check_dataflow(model: TFLiteModel) -> None:
    """Operators in execution order: each reads activations written before it (a graph input or an earlier
    operator's output), and each tensor has one writer (no cycles, nothing writes a constant or an input)."""
    writer: dict[int, str] = {i: "the graph input" for i in model.inputs}
    for op in model.operators:
        for pos, idx in enumerate(op.inputs):
            if idx >= 0 and not model.tensors[idx].is_constant and idx not in writer:
                later = model.producer(idx)
                after = f"; {later.describe()} writes it later" if later is not None else ", and no operator writes it"
                raise _fail(op, f"input {pos} reads tensor {idx} ({model.tensors[idx].name!r}) before it is written"
                                f"{after} (operators must come in execution order, without cycles)")
        for idx in op.outputs:
            t = model.tensors[idx]
            if t.is_constant:
                raise _fail(op, f"writes the constant tensor {idx} ({t.name!r})")
            if idx in writer:
                raise _fail(op, f"writes tensor {idx} ({t.name!r}), which {writer[idx]} already gives; each "
                                f"tensor has one writer")
            writer[idx] = op.describe()
    for k, idx in enumerate(model.outputs):
        if idx not in writer:
            raise UnsupportedOperatorError(f"graph output {k} (tensor {idx}, {model.tensors[idx].name!r}) is "
                                           f"written by no operator")


def check_supported(model: TFLiteModel) -> TFLiteModel:
    """``model`` when the code generator compiles it, else :class:`UnsupportedOperatorError` naming the
    first offending operator and its index (or the graph input / output)."""
    if not model.operators:
        raise UnsupportedOperatorError("the model has no operators")
    for op in model.operators:
        _check_operator(model, op)
    _check_dataflow(model)
    _check_graph_io(model)
    return model
