"""A small generic builder of int8 ``.tflite`` flatbuffers, and seeded random single-operator models
that run on TFLite Micro (the reference a code generator is checked against).

:class:`TFLiteBuilder` writes one subgraph with the schema object API that the ``tflite-micro``
package ships (``ModelT``, ``TensorT``, ``OperatorT``, ...): buffer 0 is the empty one, every
constant's bytes start on a 16-byte boundary (TFLite Micro reads weights in place), and each
operator code carries both ``builtinCode`` and ``deprecatedBuiltinCode``. Operators are named by
the :class:`Op` enum; their builtin options are keyword arguments in the schema's field names
(``strideH``, ``fusedActivationFunction``, ``keepDims``, ...).

>>> import numpy as np
>>> b = TFLiteBuilder()
>>> x = b.tensor("x", (1, 4), quant=Quant.per_tensor(0.5, -3))
>>> s = b.constant("shape", np.array([2, 2], dtype=np.int32))
>>> y = b.tensor("y", (2, 2), quant=Quant.per_tensor(0.5, -3))
>>> _ = b.op(Op.RESHAPE, [x, s], [y], newShape=[2, 2])
>>> blob = b.build(inputs=[x], outputs=[y])
>>> blob[4:8]
b'TFL3'

:func:`random_single_op_model` draws one valid model of an operator (shapes, strides, dilation,
padding, fused activations, zero points, per-channel scales whose requantization multipliers span
many powers of two, exact powers of two and the mantissa that rounds up to 2^31);
:func:`verification_cases` draws a reproducible batch over every operator and
:func:`tflm_reference` runs one on the TFLite Micro interpreter. The cases stay inside what TFLite
Micro's kernels accept and compute deterministically: int8 pools, PAD and RESHAPE keep the input's
scale and zero point (its pools refuse others); SOFTMAX and LOGISTIC write scale 1/256, zero point
-128 (its SOFTMAX refuses others); ADD keeps ``2 max(s1, s2) / (2^20 s_out) < 1`` (beyond it TFLite
Micro aborts the process); weights are symmetric int8 in [-127, 127] with zero point 0, per channel
for CONV_2D (dimension 0) and DEPTHWISE_CONV_2D (dimension 3) and per channel or per tensor for
FULLY_CONNECTED (TensorFlow 2.21's converter writes per channel); biases are int32 with scale
``s_in * s_w`` and ``|b| <= 2^24`` so int32 accumulators never overflow.

>>> case = random_single_op_model(Op.MAX_POOL_2D, np.random.default_rng(0))
>>> case.op, case.input_dtypes
(<Op.MAX_POOL_2D: 17>, ('int8',))
>>> out = tflm_reference(case, case.random_inputs(np.random.default_rng(1)))
>>> out[0].dtype
dtype('int8')
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyqml.classical.errors import ExportError
from tinyqml.classical.optional import TFLITE_INSTALL, require

__all__ = ["Op", "TensorType", "Padding", "FusedActivation", "Quant", "TFLiteBuilder", "SingleOpCase",
           "random_single_op_model", "verification_cases", "tflm_reference", "schema"]

_SCHEMA = "tflite_micro.tensorflow.lite.micro.python.schema_py_generated"
_RUNTIME = "tflite_micro.python.tflite_micro.runtime"
_ALIGN = 16


_import = functools.partial(require, purpose="building TFLite models", install=TFLITE_INSTALL)


def schema() -> Any:
    """The TFLite flatbuffer schema bindings shipped in ``tflite-micro`` (imported on first use)."""
    _import("flatbuffers")
    return _import(_SCHEMA)


class Op(enum.Enum):
    """The builtin operators the builder writes; the value is TFLite's ``BuiltinOperator`` code."""

    ADD = 0
    AVERAGE_POOL_2D = 1
    CONV_2D = 3
    DEPTHWISE_CONV_2D = 4
    DEQUANTIZE = 6
    FULLY_CONNECTED = 9
    LOGISTIC = 14
    MAX_POOL_2D = 17
    MUL = 18
    RESHAPE = 22
    SOFTMAX = 25
    PAD = 34
    MEAN = 40
    QUANTIZE = 114


#: Op -> (version for int8 tensors, as TFLite's op_version assigns; builtin options table or None)
_SPEC: dict[Op, tuple[int, str | None]] = {
    Op.ADD: (2, "AddOptions"), Op.AVERAGE_POOL_2D: (2, "Pool2DOptions"), Op.CONV_2D: (3, "Conv2DOptions"),
    Op.DEPTHWISE_CONV_2D: (3, "DepthwiseConv2DOptions"), Op.DEQUANTIZE: (2, None),
    Op.FULLY_CONNECTED: (4, "FullyConnectedOptions"), Op.LOGISTIC: (2, None), Op.MAX_POOL_2D: (2, "Pool2DOptions"),
    Op.MUL: (2, "MulOptions"), Op.RESHAPE: (1, "ReshapeOptions"), Op.SOFTMAX: (2, "SoftmaxOptions"),
    Op.PAD: (2, "PadOptions"), Op.MEAN: (2, "ReducerOptions"), Op.QUANTIZE: (1, None),
}


#: ops whose options table TensorFlow's converter writes even when empty (RESHAPE it leaves out)
_EMPTY_TABLE = frozenset({Op.PAD})


class TensorType(enum.IntEnum):
    """TFLite tensor element types the builder writes (schema ``TensorType`` codes)."""

    FLOAT32 = 0
    INT32 = 2
    INT8 = 9

    @classmethod
    def of(cls, dtype: Any) -> TensorType:
        """The type of a numpy dtype: ``TensorType.of(np.int8) is TensorType.INT8``."""
        name = np.dtype(dtype).name
        if name not in _NUMPY:
            raise ExportError(f"no TFLite tensor type for numpy {name}; the builder writes float32, int32, int8")
        return _NUMPY[name]

    @property
    def numpy(self) -> np.dtype:
        return np.dtype({TensorType.FLOAT32: np.float32, TensorType.INT32: np.int32, TensorType.INT8: np.int8}[self])


_NUMPY = {"float32": TensorType.FLOAT32, "int32": TensorType.INT32, "int8": TensorType.INT8}


class Padding(enum.IntEnum):
    """Schema ``Padding``."""

    SAME = 0
    VALID = 1


class FusedActivation(enum.IntEnum):
    """Schema ``ActivationFunctionType`` values that int8 kernels fuse."""

    NONE = 0
    RELU = 1
    RELU6 = 3


@dataclass(frozen=True)
class Quant:
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``; several scales for per-channel
    weights along ``dim``."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    dim: int = 0

    @classmethod
    def per_tensor(cls, scale: float, zero_point: int = 0) -> Quant:
        return cls((float(np.float32(scale)),), (int(zero_point),))

    @classmethod
    def per_channel(cls, scales: Sequence[float], dim: int) -> Quant:
        """Symmetric per-channel (weights, biases): zero points 0."""
        s = tuple(float(v) for v in np.asarray(scales, dtype=np.float32).reshape(-1))
        return cls(s, (0,) * len(s), dim)

    def to_schema(self, fb: Any) -> Any:
        qp = fb.QuantizationParametersT()
        qp.scale, qp.zeroPoint, qp.quantizedDimension = list(self.scale), list(self.zero_point), self.dim
        return qp


@functools.lru_cache(maxsize=1)
def _aligned_buffer_class() -> type:
    """``BufferT`` whose bytes start on a 16-byte boundary of the file (made after the lazy schema import)."""
    fb = schema()

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


class TFLiteBuilder:
    """Tensors, constant buffers, operator codes and operators of a one-subgraph ``.tflite`` model.

    >>> import numpy as np
    >>> b = TFLiteBuilder("demo")
    >>> q = Quant.per_tensor(0.1, 0)
    >>> x, y, z = (b.tensor(n, (1, 3), quant=q) for n in "xyz")
    >>> _ = b.op(Op.ADD, [x, y], [z], fusedActivationFunction=FusedActivation.RELU)
    >>> from tinyqml.classical.tflite_export import operator_names
    >>> operator_names(b.build([x, y], [z]))
    ['ADD']
    """

    def __init__(self, description: str = "tinyqml") -> None:
        self.fb = schema()
        self.description = description
        self.tensors: list[Any] = []
        self.buffers: list[Any] = [self.fb.BufferT()]  # buffer 0: the empty one, by convention
        self.codes: dict[Op, int] = {}
        self.operators: list[Any] = []

    def tensor(self, name: str, shape: Sequence[int], dtype: TensorType = TensorType.INT8,
               quant: Quant | None = None) -> int:
        """A new activation tensor (no data); returns its index."""
        t = self.fb.TensorT()
        t.name, t.shape, t.type = name, [int(d) for d in shape], int(TensorType(dtype))
        t.quantization = quant.to_schema(self.fb) if quant is not None else None
        t.buffer = 0
        self.tensors.append(t)
        return len(self.tensors) - 1

    def constant(self, name: str, array: np.ndarray, quant: Quant | None = None,
                 dtype: TensorType | None = None) -> int:
        """A new constant tensor holding ``array`` (little-endian, 16-byte aligned; type from its dtype
        unless ``dtype``); returns its index."""
        kind = TensorType.of(array.dtype) if dtype is None else TensorType(dtype)
        data = np.ascontiguousarray(array, dtype=kind.numpy.newbyteorder("<"))
        index = self.tensor(name, data.shape, kind, quant)
        buf = _aligned_buffer_class()()
        buf.data = data.view(np.uint8).reshape(-1)
        self.buffers.append(buf)
        self.tensors[index].buffer = len(self.buffers) - 1
        return index

    def _options(self, op: Op, fields: dict[str, Any]) -> tuple[int, Any]:
        table = _SPEC[op][1]
        if table is None and fields:
            raise ExportError(f"{op.name} takes no builtin options, got {sorted(fields)}")
        if table is None or (not fields and op not in _EMPTY_TABLE):
            return 0, None
        opt = getattr(self.fb, f"{table}T")()
        known = vars(opt)
        for key, value in fields.items():
            if key not in known:
                raise ExportError(f"{op.name} ({table}) has no option {key!r}; it has {sorted(known)}")
            setattr(opt, key, int(value) if isinstance(value, enum.IntEnum) else value)
        return getattr(self.fb.BuiltinOptions, table), opt

    def op(self, op: Op, inputs: Sequence[int], outputs: Sequence[int], first: bool = False,
           **options: Any) -> int:
        """Append operator ``op`` (``first``: put it before every other one; ``-1`` marks an omitted
        optional input); ``options`` are its builtin options by schema field name (none given: no options
        table, so the kernel's defaults, except PAD's empty table, as TensorFlow's converter writes them). Returns its position."""
        if not isinstance(op, Op):
            raise ExportError(f"op must be an Op, got {op!r}")
        o = self.fb.OperatorT()
        o.opcodeIndex = self.codes.setdefault(op, len(self.codes))
        o.inputs, o.outputs = [int(i) for i in inputs], [int(i) for i in outputs]
        o.builtinOptionsType, o.builtinOptions = self._options(op, options)
        position = 0 if first else len(self.operators)
        self.operators.insert(position, o)
        return position

    def _operator_codes(self) -> list[Any]:
        codes = []
        for op in self.codes:  # dicts keep insertion order = opcode index
            oc = self.fb.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = op.value, min(op.value, 127), _SPEC[op][0]
            codes.append(oc)
        return codes

    def build(self, inputs: Sequence[int], outputs: Sequence[int]) -> bytes:
        """The finished flatbuffer (schema version 3, identifier ``TFL3``)."""
        flatbuffers = _import("flatbuffers")
        sub = self.fb.SubGraphT()
        sub.tensors, sub.operators, sub.name = self.tensors, self.operators, "main"
        sub.inputs, sub.outputs = [int(i) for i in inputs], [int(i) for i in outputs]
        model = self.fb.ModelT()
        model.version, model.description = 3, self.description
        model.operatorCodes, model.subgraphs, model.buffers = self._operator_codes(), [sub], self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


# -- random single-operator models -------------------------------------------------------------------------

@dataclass(frozen=True)
class SingleOpCase:
    """One model with a single operator: its flatbuffer, input shapes and a description of its parameters;
    ``input_dtypes`` are numpy dtype names; float inputs are drawn from ``float_input_range``, and
    ``float_ties`` (scale, zero point of a QUANTIZE output) places some on the quantizer's half steps."""

    blob: bytes
    input_shapes: tuple[tuple[int, ...], ...]
    description: str
    op: Op
    input_dtypes: tuple[str, ...]
    float_input_range: tuple[float, float] = (-1.0, 1.0)
    float_ties: tuple[float, int] | None = None

    def random_inputs(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Random inputs: int8 uniform over [-128, 127]; float32 uniform over ``float_input_range`` with a
        quarter of the values on the quantizer's half steps (rounding ties) when ``float_ties`` is set."""
        out = []
        for shape, dtype in zip(self.input_shapes, self.input_dtypes):
            if dtype == "int8":
                out.append(rng.integers(-128, 128, size=shape, dtype=np.int8))
            else:
                lo, hi = self.float_input_range
                x = rng.uniform(lo, hi, size=shape).astype(np.float32)
                if self.float_ties is not None:
                    scale, zp = self.float_ties
                    k = rng.integers(-129 - zp, 128 - zp, size=shape) + 0.5
                    x = np.where(rng.random(shape) < 0.25, _f32(k * scale), x).astype(np.float32)
                out.append(x)
        return out


@dataclass(frozen=True)
class _Scales:
    """Per-case requantization set-up: input and output scales and per-channel weight scales giving the
    real multipliers ``s_in * s_w / s_out`` (kind: how they were drawn)."""

    s_in: float
    s_out: float
    s_w: np.ndarray
    kind: str

    def multipliers(self) -> np.ndarray:
        return np.float64(self.s_in) * self.s_w.astype(np.float64) / np.float64(self.s_out)


def _zp(rng: np.random.Generator) -> int:
    """An int8 zero point, the extremes and 0 more often."""
    if rng.random() < 0.3:
        return int(rng.choice([-128, 127, 0, -1]))
    return int(rng.integers(-128, 128))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: Any = None) -> Any:
    return 10.0 ** rng.uniform(np.log10(lo), np.log10(hi), size=size)


def _f32(x: Any) -> Any:
    return np.asarray(x, dtype=np.float32)


def _scales(rng: np.random.Generator, channels: int, acc_std: float) -> _Scales:
    """Scales whose multipliers keep most outputs in range (``acc_std``: typical integer accumulator)
    and whose per-channel spread and edge cases exercise the (mantissa, shift) conversion."""
    r = rng.random()
    if r < 0.12:  # exact powers of two: mantissa exactly 2^30
        a, b = int(rng.integers(-10, 0)), int(rng.integers(-10, 0))
        k = np.round(np.log2(40.0 / acc_std)) + rng.integers(-3, 2, size=channels)
        return _Scales(2.0 ** a, 2.0 ** b, _f32(2.0 ** (k + b - a)), "pow2")
    if r < 0.22:  # s_in = (1 + 2^-23) 2^a, s_w = (1 - 2^-23) 2^c: the mantissa rounds up to 2^31
        a, b = int(rng.integers(-10, 0)), int(rng.integers(-10, 0))
        k = np.round(np.log2(40.0 / acc_std)) + rng.integers(-3, 2, size=channels)
        s_w = _f32((1 - 2.0 ** -23) * 2.0 ** (k + b - a))
        return _Scales(float(_f32((1 + 2.0 ** -23) * 2.0 ** a)), 2.0 ** b, s_w, "round-up")
    s_in, s_out = float(_f32(_log_uniform(rng, 1e-3, 0.5))), float(_f32(_log_uniform(rng, 1e-3, 0.5)))
    base = 40.0 / acc_std * _log_uniform(rng, 0.3, 3.0)
    if r < 0.40:  # wide: channels over many orders of magnitude, a multiplier > 1, one below 2^-32
        m = base * _log_uniform(rng, 1e-4, 3.0, size=channels)
        if channels > 1 or rng.random() < 0.3:
            m[rng.integers(channels)] = rng.uniform(1.0, 4.0)
        if channels > 1 or rng.random() < 0.3:
            m[rng.integers(channels)] = 2.0 ** -rng.uniform(32.5, 40.0)
        kind = "wide"
    else:
        m, kind = base * _log_uniform(rng, 0.1, 3.0, size=channels), "random"
    return _Scales(s_in, s_out, _f32(m * s_out / s_in), kind)


def _weights(rng: np.random.Generator, shape: tuple[int, ...], channel_axis: int) -> np.ndarray:
    """int8 weights in [-127, 127]; sometimes only the extremes, sometimes one all-zero channel."""
    r = rng.random()
    w = rng.choice(np.array([-127, 127], dtype=np.int8), size=shape) if r < 0.1 else \
        rng.integers(-127, 128, size=shape).astype(np.int8)
    if rng.random() < 0.25 and shape[channel_axis] > 1:
        idx = [slice(None)] * len(shape)
        idx[channel_axis] = int(rng.integers(shape[channel_axis]))
        w[tuple(idx)] = 0
    return w


def _bias(rng: np.random.Generator, channels: int, acc_std: float) -> np.ndarray:
    b = rng.normal(0.0, acc_std, size=channels)
    if rng.random() < 0.1:
        b[rng.integers(channels)] = rng.choice([-1, 1]) * 2 ** 24
    return np.clip(np.round(b), -(2 ** 24), 2 ** 24).astype(np.int32)


def _acc_std(k: int, zp_in: int) -> float:
    """Typical magnitude of an int32 accumulator over ``k`` taps of uniform int8 inputs and weights."""
    return float(np.sqrt(k * (74.0 ** 2 + zp_in ** 2) * 73.0 ** 2)) + 1.0


def _act(rng: np.random.Generator) -> FusedActivation:
    return FusedActivation(rng.choice([0, 0, 1, 3]))


def _spatial(rng: np.random.Generator, eff: int, padding: Padding, stride: int) -> int:
    """An input extent for an effective window ``eff`` (VALID needs at least ``eff``)."""
    lo = eff if padding == Padding.VALID else 1
    return int(rng.integers(lo, max(lo, eff) + 2 * stride + 2))


def _shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def _same_out(n: int, stride: int) -> int:
    return -(-n // stride)


def _out_extent(n: int, eff: int, stride: int, padding: Padding) -> int:
    return _same_out(n, stride) if padding == Padding.SAME else (n - eff) // stride + 1


def _window(rng: np.random.Generator, kmax: int, dilate: bool) -> tuple[tuple[int, int], tuple[int, int],
                                                                          tuple[int, int], Padding]:
    """(kernel, stride, dilation, padding): square 60% of the time."""
    square = rng.random() < 0.6
    k = rng.integers(1, kmax + 1, size=2)
    s = rng.integers(1, 4, size=2)
    d = rng.integers(1, 3, size=2) if dilate and rng.random() < 0.4 else np.ones(2, dtype=int)
    if square:
        k, s, d = np.repeat(k[:1], 2), np.repeat(s[:1], 2), np.repeat(d[:1], 2)
    pad = Padding(int(rng.integers(2)))
    return (int(k[0]), int(k[1])), (int(s[0]), int(s[1])), (int(d[0]), int(d[1])), pad


def _conv_like(rng: np.random.Generator, depthwise: bool) -> SingleOpCase:
    (kh, kw), (sh, sw), (dh, dw), pad = _window(rng, 5, dilate=True)
    h = _spatial(rng, (kh - 1) * dh + 1, pad, sh)
    w = _spatial(rng, (kw - 1) * dw + 1, pad, sw)
    cin = int(rng.integers(1, 7))
    mult = int(rng.integers(1, 4)) if depthwise else 1
    cout = cin * mult if depthwise else int(rng.integers(1, 9))
    zp_in, zp_out = _zp(rng), _zp(rng)
    acc = _acc_std(kh * kw * (1 if depthwise else cin), zp_in)
    sc = _scales(rng, cout, acc)
    oh, ow = _out_extent(h, (kh - 1) * dh + 1, sh, pad), _out_extent(w, (kw - 1) * dw + 1, sw, pad)
    act = _act(rng)
    b = TFLiteBuilder("random " + ("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"))
    x = b.tensor("x", (1, h, w, cin), quant=Quant.per_tensor(sc.s_in, zp_in))
    if depthwise:
        wt = b.constant("w", _weights(rng, (1, kh, kw, cout), 3), Quant.per_channel(sc.s_w, 3))
    else:
        wt = b.constant("w", _weights(rng, (cout, kh, kw, cin), 0), Quant.per_channel(sc.s_w, 0))
    bias_scale = _f32(np.float64(sc.s_in) * sc.s_w.astype(np.float64))
    bi = b.constant("b", _bias(rng, cout, acc), Quant.per_channel(bias_scale, 0))
    y = b.tensor("y", (1, oh, ow, cout), quant=Quant.per_tensor(sc.s_out, zp_out))
    common = dict(padding=pad, strideH=sh, strideW=sw, dilationHFactor=dh, dilationWFactor=dw,
                  fusedActivationFunction=act)
    op = Op.DEPTHWISE_CONV_2D if depthwise else Op.CONV_2D
    if depthwise:
        b.op(op, [x, wt, bi], [y], depthMultiplier=mult, **common)
    else:
        b.op(op, [x, wt, bi], [y], **common)
    m = sc.multipliers()
    desc = (f"{op.name} in={_shape_str((1, h, w, cin))} out={_shape_str((1, oh, ow, cout))} k={kh}x{kw} "
            f"s={sh}x{sw} d={dh}x{dw} {pad.name} {act.name}" + (f" mult={mult}" if depthwise else "") +
            f" zp={zp_in}/{zp_out} scales={sc.kind} m=[{m.min():.3g},{m.max():.3g}]")
    return SingleOpCase(b.build([x], [y]), ((1, h, w, cin),), desc, op, ("int8",))


def _conv(rng: np.random.Generator) -> SingleOpCase:
    return _conv_like(rng, depthwise=False)


def _depthwise(rng: np.random.Generator) -> SingleOpCase:
    return _conv_like(rng, depthwise=True)


def _fully_connected(rng: np.random.Generator) -> SingleOpCase:
    units, zp_in, zp_out = int(rng.integers(1, 33)), _zp(rng), _zp(rng)
    if rng.random() < 0.2:  # a 4-D input that the kernel flattens (keep_num_dims False)
        in_shape = (1, int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        batch, n = 1, int(np.prod(in_shape))
    else:
        batch, n = int(rng.integers(1, 4)), int(rng.integers(1, 65))
        in_shape = (batch, n)
    acc = _acc_std(n, zp_in)
    per_channel = bool(rng.random() < 0.5)  # TensorFlow 2.21's converter writes per-channel weights
    sc = _scales(rng, units if per_channel else 1, acc)
    act, with_bias = _act(rng), rng.random() > 0.1
    b = TFLiteBuilder("random FULLY_CONNECTED")
    x = b.tensor("x", in_shape, quant=Quant.per_tensor(sc.s_in, zp_in))
    wt = b.constant("w", _weights(rng, (units, n), 0), Quant.per_channel(sc.s_w, 0))
    bias_scale = _f32(np.float64(sc.s_in) * sc.s_w.astype(np.float64))
    bi = b.constant("b", _bias(rng, units, acc), Quant.per_channel(bias_scale, 0)) if with_bias else -1
    y = b.tensor("y", (batch, units), quant=Quant.per_tensor(sc.s_out, zp_out))
    b.op(Op.FULLY_CONNECTED, [x, wt, bi], [y], fusedActivationFunction=act, keepNumDims=False)
    m = sc.multipliers()
    desc = (f"FULLY_CONNECTED in={_shape_str(in_shape)} units={units} {act.name} bias={with_bias} "
            f"weights={'per-channel' if per_channel else 'per-tensor'} zp={zp_in}/{zp_out} scales={sc.kind} "
            f"m=[{m.min():.3g},{m.max():.3g}]")
    return SingleOpCase(b.build([x], [y]), (in_shape,), desc, Op.FULLY_CONNECTED, ("int8",))


def _pool(rng: np.random.Generator, op: Op) -> SingleOpCase:
    (fh, fw), (sh, sw), _, pad = _window(rng, 4, dilate=False)
    h, w, c = _spatial(rng, fh, pad, sh), _spatial(rng, fw, pad, sw), int(rng.integers(1, 9))
    oh, ow = _out_extent(h, fh, sh, pad), _out_extent(w, fw, sw, pad)
    q = Quant.per_tensor(_log_uniform(rng, 1e-3, 1.0), _zp(rng))  # int8 pools keep the input's parameters
    act = _act(rng)
    b = TFLiteBuilder(f"random {op.name}")
    x = b.tensor("x", (1, h, w, c), quant=q)
    y = b.tensor("y", (1, oh, ow, c), quant=q)
    b.op(op, [x], [y], padding=pad, strideH=sh, strideW=sw, filterHeight=fh, filterWidth=fw,
         fusedActivationFunction=act)
    desc = (f"{op.name} in={_shape_str((1, h, w, c))} out={_shape_str((1, oh, ow, c))} f={fh}x{fw} "
            f"s={sh}x{sw} {pad.name} {act.name} zp={q.zero_point[0]}")
    return SingleOpCase(b.build([x], [y]), ((1, h, w, c),), desc, op, ("int8",))


def _avg_pool(rng: np.random.Generator) -> SingleOpCase:
    return _pool(rng, Op.AVERAGE_POOL_2D)


def _max_pool(rng: np.random.Generator) -> SingleOpCase:
    return _pool(rng, Op.MAX_POOL_2D)


def _mean(rng: np.random.Generator) -> SingleOpCase:
    h, w, c = int(rng.integers(1, 9)), int(rng.integers(1, 9)), int(rng.integers(1, 17))
    keep = bool(rng.random() < 0.5)
    q_in = Quant.per_tensor(_log_uniform(rng, 1e-3, 1.0), _zp(rng))
    same = rng.random() < 0.3
    ratio = _log_uniform(rng, 0.25, 4.0)  # s_in / s_out; the output zero point centred half the time
    centred = int(np.clip(round((0.5 + q_in.zero_point[0]) * ratio), -128, 127))
    zp_out = centred if rng.random() < 0.5 else _zp(rng)
    q_out = q_in if same else Quant.per_tensor(q_in.scale[0] / ratio, zp_out)
    out_shape = (1, 1, 1, c) if keep else (1, c)
    b = TFLiteBuilder("random MEAN")
    x = b.tensor("x", (1, h, w, c), quant=q_in)
    axes = b.constant("axes", np.array([1, 2], dtype=np.int32))
    y = b.tensor("y", out_shape, quant=q_out)
    b.op(Op.MEAN, [x, axes], [y], keepDims=keep)
    desc = (f"MEAN in={_shape_str((1, h, w, c))} axes=[1,2] keep_dims={keep} "
            f"{'same' if same else 'different'} scales zp={q_in.zero_point[0]}/{q_out.zero_point[0]}")
    return SingleOpCase(b.build([x], [y]), ((1, h, w, c),), desc, Op.MEAN, ("int8",))


def _any_shape(rng: np.random.Generator) -> tuple[int, ...]:
    """A small activation shape of rank 1 to 4 (batch 1 from rank 2 on)."""
    rank = int(rng.choice([1, 2, 4, 4], p=[0.1, 0.3, 0.3, 0.3]))
    if rank == 1:
        return (int(rng.integers(1, 65)),)
    if rank == 2:
        return (1, int(rng.integers(1, 65)))
    return (1, int(rng.integers(1, 7)), int(rng.integers(1, 7)), int(rng.integers(1, 9)))


def _broadcast_shape(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with some dimensions set to 1 (a numpy-broadcastable second operand)."""
    return tuple(1 if rng.random() < 0.5 else d for d in shape)


def _binary(rng: np.random.Generator, op: Op, broadcast: bool) -> SingleOpCase:
    shape = _any_shape(rng)
    other = _broadcast_shape(rng, shape) if broadcast else shape
    s1, s2 = _log_uniform(rng, 1e-3, 0.5), _log_uniform(rng, 1e-3, 0.5)
    if op == Op.ADD:  # TFLM's int8 ADD needs 2 max(s1, s2) / (2^20 s_out) < 1
        s_out = max(s1, s2) * _log_uniform(rng, 0.7, 4.0)
    else:
        s_out = s1 * s2 * 74.0 ** 2 / 40.0 * _log_uniform(rng, 0.3, 3.0)
    q1, q2, qo = (Quant.per_tensor(s, _zp(rng)) for s in (s1, s2, s_out))
    act = _act(rng)
    b = TFLiteBuilder(f"random {op.name}")
    x1, x2 = b.tensor("x1", shape, quant=q1), b.tensor("x2", other, quant=q2)
    y = b.tensor("y", shape, quant=qo)
    b.op(op, [x1, x2], [y], fusedActivationFunction=act)
    desc = (f"{op.name} a={_shape_str(shape)} b={_shape_str(other)} {act.name} "
            f"zp={q1.zero_point[0]}/{q2.zero_point[0]}/{qo.zero_point[0]} "
            f"scales={q1.scale[0]:.3g}/{q2.scale[0]:.3g}/{qo.scale[0]:.3g}")
    return SingleOpCase(b.build([x1, x2], [y]), (shape, other), desc, op, ("int8", "int8"))


def _pad(rng: np.random.Generator) -> SingleOpCase:
    rank = int(rng.choice([2, 3, 4], p=[0.2, 0.2, 0.6]))
    shape = (1,) + tuple(int(v) for v in rng.integers(1, 7, size=rank - 1))
    pads = np.zeros((rank, 2), dtype=np.int32)
    pads[1:] = rng.integers(0, 4, size=(rank - 1, 2))
    out = tuple(int(d + p.sum()) for d, p in zip(shape, pads))
    q = Quant.per_tensor(_log_uniform(rng, 1e-3, 1.0), _zp(rng))
    b = TFLiteBuilder("random PAD")
    x = b.tensor("x", shape, quant=q)
    p = b.constant("paddings", pads)
    y = b.tensor("y", out, quant=q)
    b.op(Op.PAD, [x, p], [y])
    desc = f"PAD in={_shape_str(shape)} paddings={pads.tolist()} zp={q.zero_point[0]}"
    return SingleOpCase(b.build([x], [y]), (shape,), desc, Op.PAD, ("int8",))


def _reshape(rng: np.random.Generator) -> SingleOpCase:
    shape = (1,) + tuple(int(v) for v in rng.integers(1, 7, size=int(rng.integers(1, 4))))
    n = int(np.prod(shape))
    rank = int(rng.integers(1, 5))
    dims = [1] * rank
    rest = n
    for i in range(rank - 1, 0, -1):  # split n into factors, the last dims first
        divisors = [d for d in range(1, rest + 1) if rest % d == 0]
        dims[i] = int(rng.choice(divisors))
        rest //= dims[i]
    dims[0] = rest
    q = Quant.per_tensor(_log_uniform(rng, 1e-3, 1.0), _zp(rng))
    with_option = bool(rng.random() < 0.5)
    b = TFLiteBuilder("random RESHAPE")
    x = b.tensor("x", shape, quant=q)
    s = b.constant("shape", np.array(dims, dtype=np.int32))
    y = b.tensor("y", dims, quant=q)
    if with_option:
        b.op(Op.RESHAPE, [x, s], [y], newShape=list(dims))
    else:
        b.op(Op.RESHAPE, [x, s], [y])
    desc = f"RESHAPE {_shape_str(shape)} -> {_shape_str(dims)} new_shape_option={with_option}"
    return SingleOpCase(b.build([x], [y]), (shape,), desc, Op.RESHAPE, ("int8",))


_OUT_256 = Quant.per_tensor(1.0 / 256.0, -128)  # TFLite's fixed int8 softmax / logistic output


def _softmax(rng: np.random.Generator) -> SingleOpCase:
    shape = _any_shape(rng)
    beta = float(rng.choice([1.0, 1.0, 0.5, 2.0, float(np.float32(rng.uniform(0.1, 3.0)))]))
    q = Quant.per_tensor(_log_uniform(rng, 1e-3, 0.5), _zp(rng))
    b = TFLiteBuilder("random SOFTMAX")
    x = b.tensor("x", shape, quant=q)
    y = b.tensor("y", shape, quant=_OUT_256)
    b.op(Op.SOFTMAX, [x], [y], beta=beta)
    desc = f"SOFTMAX in={_shape_str(shape)} beta={beta:.4g} s_in={q.scale[0]:.3g} zp={q.zero_point[0]}"
    return SingleOpCase(b.build([x], [y]), (shape,), desc, Op.SOFTMAX, ("int8",))


def _logistic(rng: np.random.Generator) -> SingleOpCase:
    shape = _any_shape(rng)
    q = Quant.per_tensor(_log_uniform(rng, 1e-3, 0.5), _zp(rng))
    b = TFLiteBuilder("random LOGISTIC")
    x = b.tensor("x", shape, quant=q)
    y = b.tensor("y", shape, quant=_OUT_256)
    b.op(Op.LOGISTIC, [x], [y])
    desc = f"LOGISTIC in={_shape_str(shape)} s_in={q.scale[0]:.3g} zp={q.zero_point[0]}"
    return SingleOpCase(b.build([x], [y]), (shape,), desc, Op.LOGISTIC, ("int8",))


def _quantize(rng: np.random.Generator) -> SingleOpCase:
    shape = _any_shape(rng)
    q = Quant.per_tensor(_log_uniform(rng, 1e-3, 1.0), _zp(rng))
    s, z = q.scale[0], q.zero_point[0]
    b = TFLiteBuilder("random QUANTIZE")
    x = b.tensor("x", shape, TensorType.FLOAT32)
    y = b.tensor("y", shape, quant=q)
    b.op(Op.QUANTIZE, [x], [y])
    desc = f"QUANTIZE float32 {_shape_str(shape)} -> int8 s={s:.3g} zp={z}"
    span = (float((-128 - z) * s * 1.25), float((127 - z) * s * 1.25))
    return SingleOpCase(b.build([x], [y]), (shape,), desc, Op.QUANTIZE, ("float32",), span, (s, z))


def _dequantize(rng: np.random.Generator) -> SingleOpCase:
    shape = _any_shape(rng)
    q = Quant.per_tensor(_log_uniform(rng, 1e-4, 10.0), _zp(rng))
    b = TFLiteBuilder("random DEQUANTIZE")
    x = b.tensor("x", shape, quant=q)
    y = b.tensor("y", shape, TensorType.FLOAT32)
    b.op(Op.DEQUANTIZE, [x], [y])
    desc = f"DEQUANTIZE int8 {_shape_str(shape)} s={q.scale[0]:.3g} zp={q.zero_point[0]} -> float32"
    return SingleOpCase(b.build([x], [y]), (shape,), desc, Op.DEQUANTIZE, ("int8",))


_GENERATORS: dict[Op, Callable[[np.random.Generator], SingleOpCase]] = {
    Op.CONV_2D: _conv, Op.DEPTHWISE_CONV_2D: _depthwise, Op.FULLY_CONNECTED: _fully_connected,
    Op.AVERAGE_POOL_2D: _avg_pool, Op.MAX_POOL_2D: _max_pool, Op.MEAN: _mean,
    Op.ADD: functools.partial(_binary, op=Op.ADD, broadcast=False),
    Op.MUL: functools.partial(_binary, op=Op.MUL, broadcast=False),
    Op.PAD: _pad, Op.RESHAPE: _reshape, Op.SOFTMAX: _softmax, Op.LOGISTIC: _logistic,
    Op.QUANTIZE: _quantize, Op.DEQUANTIZE: _dequantize,
}


def random_single_op_model(op: Op, rng: np.random.Generator, broadcast: bool = False) -> SingleOpCase:
    """A random valid single-operator model of ``op`` drawn from ``rng`` (``broadcast``: ADD / MUL with a
    second operand that broadcasts).

    >>> import numpy as np
    >>> case = random_single_op_model(Op.CONV_2D, np.random.default_rng(3))
    >>> case.description.startswith("CONV_2D"), case.input_dtypes
    (True, ('int8',))
    """
    if not isinstance(op, Op):
        raise ExportError(f"op must be an Op, got {op!r}")
    if broadcast and op in (Op.ADD, Op.MUL):
        return _binary(rng, op=op, broadcast=True)
    return _GENERATORS[op](rng)


def verification_cases(n: int = 1000, seed: int = 0, broadcast: bool = False) -> list[SingleOpCase]:
    """``n`` random single-operator models cycling over every :class:`Op` (so each gets ``n / 14`` or one
    more); case ``i`` is drawn from ``np.random.default_rng([seed, i])`` alone, so it is reproducible on
    its own. ``broadcast``: ADD / MUL cases broadcast their second operand.

    >>> cases = verification_cases(28, seed=1)
    >>> len(cases), sorted({c.op.name for c in cases}) == sorted(o.name for o in Op)
    (28, True)
    """
    ops = list(Op)
    return [random_single_op_model(ops[i % len(ops)], np.random.default_rng([seed, i]), broadcast)
            for i in range(n)]


def _arena_size(case_blob: bytes) -> int:
    fb = schema()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(case_blob, 0))
    total = sum(int(np.prod(t.shape)) * 4 for t in model.subgraphs[0].tensors if t.buffer == 0)
    return 4 * total + 32 * 1024


def tflm_reference(case: SingleOpCase | bytes, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Every output of ``case`` (a :class:`SingleOpCase` or a ``.tflite`` blob) on the TFLite Micro
    interpreter for ``inputs`` (one array per model input, in the model's exact shapes and dtypes).

    >>> import numpy as np
    >>> case = random_single_op_model(Op.RESHAPE, np.random.default_rng(0))
    >>> x = case.random_inputs(np.random.default_rng(0))
    >>> bool(np.array_equal(tflm_reference(case, x)[0].reshape(-1), x[0].reshape(-1)))
    True
    """
    runtime = _import(_RUNTIME)
    blob = case.blob if isinstance(case, SingleOpCase) else bytes(case)
    try:
        interp = runtime.Interpreter.from_bytes(blob, arena_size=_arena_size(blob))
    except RuntimeError as exc:
        raise ExportError(f"TFLite Micro refused the model: {exc}") from exc
    for i, x in enumerate(inputs):
        interp.set_input(np.ascontiguousarray(x), i)
    interp.invoke()
    n_out = len(schema().Model.GetRootAs(blob, 0).Subgraphs(0).OutputsAsNumpy())
    return [np.array(interp.get_output(k)) for k in range(n_out)]
