"""C99 for a microcontroller from a fully-int8 ``.tflite`` model, bit-exact with TFLite Micro.

The pipeline is model -> neutral IR -> emitter -> hand-written runtime (m2cgen style; nothing here
knows torch): :func:`~tinyqml.classical.tflite_reader.read_tflite` parses the flatbuffer,
:func:`lower` turns each operator into a :class:`Step` (a :class:`Kernel` and the integer parameters
TFLite Micro's Prepare would compute: multipliers and shifts from the float32 scales in double,
activation clamps, padding, fixed-point SOFTMAX / LOGISTIC constants), the activations are placed in
one static arena by the memory planner (:mod:`tinyqml.classical.arena`, with in-place pairs for
RESHAPE, elementwise ops and depthwise convolutions where the ring-buffer kernel is safe), and
:func:`generate` writes ``model.h``, ``model.c`` and the runtime (``tinyqml_rt.h`` / ``tinyqml_rt.c``,
package data) into a folder.

The C API (``prefix="tinyqml"``)::

    int tinyqml_invoke(const int8_t *input, int8_t *output);          /* 0 on success */
    int tinyqml_invoke_n(const int8_t *const *inputs, int8_t *const *outputs);
    int tinyqml_invoke_f32(const float *input, float *output);       /* float-edge models only */

``TINYQML_INPUT_SIZE`` / ``TINYQML_OUTPUT_SIZE`` are the int8 bytes of all inputs / outputs
(``tinyqml_invoke`` takes them concatenated in the subgraph's order); ``TINYQML_NUM_INPUTS``,
``TINYQML_INPUT_SIZE_<k>``, ``TINYQML_INPUT_SCALE_<k>`` and ``TINYQML_INPUT_ZERO_POINT_<k>`` (and the
``OUTPUT`` ones) describe each int8 tensor, as used by ``tinyqml_invoke_n``. A model whose inputs come
through QUANTIZE from float32 and whose outputs leave through DEQUANTIZE to float32 runs the int8 graph
between the edges in ``tinyqml_invoke`` and also gets ``tinyqml_invoke_f32`` (float in, float out,
the element counts are the same macros), which quantizes and dequantizes as TFLite Micro does.
Models with float32 edges on one side only get ``tinyqml_quantize_inputs(const float *, int8_t *)`` or
``tinyqml_dequantize_outputs(const int8_t *, float *)``. ``TINYQML_ARENA_BYTES`` is the activation arena; ``TINYQML_SCRATCH_BYTES`` the kernels' scratch. The
caller's input and output buffers are used in place (not copied into the arena).

>>> import numpy as np, tempfile, torch
>>> from tinyqml.classical import quantize_model, to_tflite
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
...                           torch.nn.Linear(4 * 6 * 6, 10))
>>> blob = to_tflite(quantize_model(net, torch.rand(8, 1, 6, 6)).qgraph)
>>> result = generate(blob, tempfile.mkdtemp())
>>> sorted(p.name for p in result.files)[:4]
['model.c', 'model.h', 'report.json', 'report.md']
>>> result.input_size, result.output_size, result.arena_bytes
(36, 10, 144)
>>> [s.kernel.name for s in result.program.steps]
['CONV_2D', 'RESHAPE', 'FULLY_CONNECTED']
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tinyqml.classical.errors import ExportError
from tinyqml.classical.fixedpoint import activation_bounds, quantize_multiplier, round_half_away
from tinyqml.classical.fixedpoint import widen_float32 as _f64
from tinyqml.classical.tflite_reader import (
    Activation,
    DType,
    Operator,
    Padding,
    Tensor,
    TFLiteModel,
    UnsupportedOperatorError,
    check_supported,
    read_tflite,
)

__all__ = ["Target", "CodegenOptions", "Kernel", "Step", "Program", "LayerReport", "Placement", "CodegenResult",
           "lower", "plan_arena", "generate", "RUNTIME_DIR", "RUNTIME_FILES", "ARENA_ALIGN", "pad_amount",
           "dw_inplace_safe"]

log = logging.getLogger(__name__)

#: the hand-written C runtime shipped with the package
RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
RUNTIME_FILES = ("tinyqml_rt.h", "tinyqml_rt.c")
#: alignment of every arena offset (TFLite Micro aligns to 16 bytes)
ARENA_ALIGN = 16


class Target(enum.Enum):
    HOST = "host"
    CORTEX_M4 = "cortex-m4"


@dataclass(frozen=True)
class CodegenOptions:
    """``target`` (recorded in the sources; the C is the same portable C99), ``prefix`` of the public
    symbols and macros (a C identifier), ``inplace`` (let the planner share buffers in place)."""

    target: Target = Target.HOST
    prefix: str = "tinyqml"
    inplace: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.target, Target):
            raise ExportError(f"target must be a Target (HOST or CORTEX_M4), got {self.target!r}")
        if not isinstance(self.prefix, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.prefix):
            raise ExportError(f"prefix must be a C identifier, got {self.prefix!r}")


class Kernel(enum.Enum):
    """What a step runs (one runtime function each)."""

    CONV_2D = "tq_conv2d"
    DEPTHWISE_CONV_2D = "tq_depthwise_conv2d"
    FULLY_CONNECTED = "tq_fully_connected"
    AVERAGE_POOL_2D = "tq_avg_pool"
    MAX_POOL_2D = "tq_max_pool"
    ADD = "tq_add"
    MUL = "tq_mul"
    PAD = "tq_pad"
    RESHAPE = "memcpy"
    MEAN = "tq_mean"
    SOFTMAX = "tq_softmax"
    LOGISTIC = "tq_logistic"
    REQUANTIZE = "tq_requantize"


#: the runtime's parameter struct of each kernel
_STRUCT = {Kernel.CONV_2D: "tq_conv_t", Kernel.DEPTHWISE_CONV_2D: "tq_conv_t", Kernel.FULLY_CONNECTED: "tq_fc_t",
           Kernel.AVERAGE_POOL_2D: "tq_pool_t", Kernel.MAX_POOL_2D: "tq_pool_t", Kernel.ADD: "tq_binary_t",
           Kernel.MUL: "tq_binary_t", Kernel.PAD: "tq_pad_t", Kernel.MEAN: "tq_mean_t",
           Kernel.SOFTMAX: "tq_softmax_t", Kernel.LOGISTIC: "tq_logistic_t", Kernel.REQUANTIZE: "tq_requantize_t"}


@dataclass(frozen=True, eq=False)
class Step:
    """One kernel call: the TFLite operator it comes from, int8 activation tensors in and out,
    scalar ``params`` (struct fields; lists for array fields), constant ``arrays`` (field -> int8 or
    int32 numpy array, emitted as ``static const``), MACs, scratch (int32 accumulators, ring bytes),
    and ``inplace_src`` (the input tensor whose memory the output may take)."""

    kernel: Kernel
    op: Operator
    inputs: tuple[int, ...]
    output: int
    params: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    macs: int = 0
    acc_words: int = 0
    ring_bytes: int = 0
    inplace_src: int | None = None


@dataclass(frozen=True, eq=False)
class Program:
    """The neutral IR: the int8 graph between the (float) edges."""

    model: TFLiteModel
    steps: tuple[Step, ...]
    inputs: tuple[int, ...]          # int8 input tensors (QUANTIZE outputs at a float edge)
    outputs: tuple[int, ...]         # int8 output tensors (DEQUANTIZE inputs at a float edge)
    float_inputs: tuple[int, ...]    # the float32 graph inputs, when every input is a float edge
    float_outputs: tuple[int, ...]   # the float32 graph outputs, when every output is a float edge

    @property
    def float_io(self) -> bool:
        return bool(self.float_inputs) and bool(self.float_outputs)


# -- TFLite Micro's Prepare arithmetic ------------------------------------------------------------------

#: the real range of each fused activation (``None``: unbounded)
_REAL_RANGE = {Activation.NONE: (None, None), Activation.RELU: (0.0, None), Activation.RELU6: (0.0, 6.0),
               Activation.RELU_N1_TO_1: (-1.0, 1.0)}


def activation_range(act: Activation, out: Tensor) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized`` for an int8 output tensor."""
    return activation_bounds(*_REAL_RANGE[act], out.scale, out.zero_point)


def _multiplier(op: Operator, real: float, what: str, below_one: bool = False) -> tuple[int, int]:
    if not math.isfinite(real) or real < 0:
        raise UnsupportedOperatorError(f"{op.describe()}: the {what} multiplier {real!r} is not a finite number >= 0")
    if below_one and real >= 1.0:
        raise UnsupportedOperatorError(f"{op.describe()}: the {what} multiplier {real:.6g} is >= 1, which TFLite "
                                       f"Micro's kernel rejects (QuantizeMultiplierSmallerThanOneExp)")
    if real >= 2.0 ** 31:  # a left shift of 32 or more: undefined for int32 in C
        raise UnsupportedOperatorError(f"{op.describe()}: the {what} multiplier {real:.6g} is too large (int8 "
                                       f"kernels take multipliers below 2^31; check the tensors' scales)")
    return quantize_multiplier(real)


def _out_size(padding: Padding, size: int, k: int, stride: int, dilation: int) -> int:
    eff = (k - 1) * dilation + 1
    return (size + stride - 1) // stride if padding is Padding.SAME else (size - eff + stride) // stride


def pad_amount(size: int, k: int, stride: int, dilation: int, out: int) -> int:
    """Padding before the first row (column) of a window ``k`` with ``stride`` and ``dilation`` giving ``out``
    outputs from ``size`` inputs (TFLite's SAME rule: the smaller half first)."""
    total = (out - 1) * stride + (k - 1) * dilation + 1 - size
    return max(total, 0) // 2


def _nhwc(op: Operator, x: Tensor, y: Tensor) -> None:
    if len(x.shape) != 4 or len(y.shape) != 4:
        raise UnsupportedOperatorError(f"{op.describe()}: needs 4-D NHWC input and output, got {list(x.shape)} -> "
                                       f"{list(y.shape)}")


def _spatial(op: Operator, x: Tensor, y: Tensor, k: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int], padding: Padding) -> dict[str, int]:
    _nhwc(op, x, y)
    if min(*stride, *dilation, *k) < 1:
        raise UnsupportedOperatorError(f"{op.describe()}: stride, dilation and filter sizes must be >= 1")
    n, h, w, _ = x.shape
    oh, ow = (_out_size(padding, s, kk, st, d) for s, kk, st, d in zip((h, w), k, stride, dilation))
    if (y.shape[0], y.shape[1], y.shape[2]) != (n, oh, ow):
        raise UnsupportedOperatorError(f"{op.describe()}: output shape {list(y.shape)} does not follow from the "
                                       f"input {list(x.shape)} with {padding.name} padding (expected [{n}, {oh}, {ow}, .])")
    pads = (pad_amount(h, k[0], stride[0], dilation[0], oh), pad_amount(w, k[1], stride[1], dilation[1], ow))
    for o, st, kk, d, pd in zip((oh, ow), stride, k, dilation, pads):
        if (o - 1) * st + (kk - 1) * d + pd > 2 ** 31 - 1:  # the kernels' int32 window positions
            raise UnsupportedOperatorError(f"{op.describe()}: stride {list(stride)}, filter {list(k)} and dilation "
                                           f"{list(dilation)} put window positions beyond int32")
    return {"batches": n, "in_h": h, "in_w": w, "out_h": oh, "out_w": ow, "k_h": k[0], "k_w": k[1],
            "stride_h": stride[0], "stride_w": stride[1], "pad_h": pads[0], "pad_w": pads[1]}


def _int32(values: np.ndarray) -> np.ndarray:
    """Wrap int64 values to int32 (as C's int32 accumulators do)."""
    return ((np.asarray(values, dtype=np.int64) + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)


def _channel_multipliers(op: Operator, x: Tensor, wt: Tensor, y: Tensor, channels: int) -> tuple[np.ndarray, ...]:
    scales = wt.scales if wt.per_channel else wt.scales * channels
    pairs = [_multiplier(op, _f64(x.scale) * _f64(s) / _f64(y.scale), "output") for s in scales]
    return np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32)


def _bias(model: TFLiteModel, op: Operator, channels: int) -> np.ndarray | None:
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return None
    b = model.tensors[op.inputs[2]].data.reshape(-1).astype(np.int64)
    if b.size != channels:
        raise UnsupportedOperatorError(f"{op.describe()}: bias has {b.size} values for {channels} output channels")
    return b


# -- lowering: one function per operator ------------------------------------------------------------------

def _t(model: TFLiteModel, op: Operator) -> tuple[Tensor, Tensor]:
    return model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]


def _conv(model: TFLiteModel, op: Operator) -> Step:
    x, y = _t(model, op)
    _nhwc(op, x, y)
    wt = model.tensors[op.inputs[1]]
    o, kh, kw, fc = wt.shape
    c = x.shape[3]
    if c % fc or o % (c // fc) or y.shape[3] != o:
        raise UnsupportedOperatorError(f"{op.describe()}: filter {list(wt.shape)} does not fit input channels {c} "
                                       f"and output {list(y.shape)}")
    opt = op.options
    p = _spatial(op, x, y, (kh, kw), opt.stride, opt.dilation, opt.padding)
    lo, hi = activation_range(opt.activation, y)
    bias = _bias(model, op, o)
    w = wt.data.astype(np.int64)
    in_offset = -x.zero_point
    full = (bias if bias is not None else 0) + in_offset * w.reshape(o, -1).sum(axis=1)
    mult, shift = _channel_multipliers(op, x, wt, y, o)
    p.update(in_c=c, out_c=o, filter_c=fc, dil_h=opt.dilation[0], dil_w=opt.dilation[1], depth_mult=1,
             in_offset=in_offset, out_offset=y.zero_point, act_min=lo, act_max=hi)
    arrays = {"weights": wt.data.astype(np.int8).reshape(-1), "bias_full": _int32(full), "mult": mult, "shift": shift}
    if bias is not None:
        arrays["bias"] = _int32(bias)
    macs = p["batches"] * p["out_h"] * p["out_w"] * o * kh * kw * fc
    return Step(Kernel.CONV_2D, op, (x.index,), y.index, p, arrays, macs)


def dw_inplace_safe(p: dict[str, int]) -> bool:
    """The ring-buffer depthwise kernel may write over its input: every input row is copied into the
    ring before an output row lands on it (checked row by row, as the kernel runs)."""
    if p["batches"] != 1 or p["dil_h"] != 1 or p["dil_w"] != 1 or p["out_h"] > 1 << 16:  # (bounded walk)
        return False
    row_in, row_out, loaded = p["in_w"] * p["in_c"], p["out_w"] * p["out_c"], -1
    for oy in range(p["out_h"]):
        iy0 = oy * p["stride_h"] - p["pad_h"]
        for r in range(max(iy0, loaded + 1), min(iy0 + p["k_h"], p["in_h"])):
            if oy * row_out > r * row_in:
                return False
            loaded = r
    return True


def _depthwise(model: TFLiteModel, op: Operator) -> Step:
    x, y = _t(model, op)
    _nhwc(op, x, y)
    wt = model.tensors[op.inputs[1]]
    one, kh, kw, o = wt.shape
    c = x.shape[3]
    opt = op.options
    if one != 1 or o % c or y.shape[3] != o:
        raise UnsupportedOperatorError(f"{op.describe()}: filter {list(wt.shape)} does not fit input channels {c} "
                                       f"and output {list(y.shape)}")
    m = o // c
    if opt.depth_multiplier not in (0, m) and not (opt.depth_multiplier == 1 and m == 1):
        raise UnsupportedOperatorError(f"{op.describe()}: depth_multiplier option {opt.depth_multiplier} differs "
                                       f"from the shapes' {m}")
    p = _spatial(op, x, y, (kh, kw), opt.stride, opt.dilation, opt.padding)
    lo, hi = activation_range(opt.activation, y)
    bias = _bias(model, op, o)
    w = wt.data.astype(np.int64)
    in_offset = -x.zero_point
    full = (bias if bias is not None else 0) + in_offset * w.reshape(-1, o).sum(axis=0)
    mult, shift = _channel_multipliers(op, x, wt, y, o)
    p.update(in_c=c, out_c=o, filter_c=1, dil_h=opt.dilation[0], dil_w=opt.dilation[1], depth_mult=m,
             in_offset=in_offset, out_offset=y.zero_point, act_min=lo, act_max=hi)
    arrays = {"weights": wt.data.astype(np.int8).reshape(-1), "bias_full": _int32(full), "mult": mult, "shift": shift}
    if bias is not None:
        arrays["bias"] = _int32(bias)
    macs = p["batches"] * p["out_h"] * p["out_w"] * o * kh * kw
    safe = dw_inplace_safe(p)
    return Step(Kernel.DEPTHWISE_CONV_2D, op, (x.index,), y.index, p, arrays, macs, acc_words=o,
                ring_bytes=kh * p["in_w"] * c if safe else 0, inplace_src=x.index if safe else None)


def _fully_connected(model: TFLiteModel, op: Operator) -> Step:
    x, y = _t(model, op)
    wt = model.tensors[op.inputs[1]]
    if len(wt.shape) != 2:
        raise UnsupportedOperatorError(f"{op.describe()}: weights must be 2-D, got {list(wt.shape)}")
    o, d = wt.shape
    if x.size % d or y.size != (x.size // d) * o:
        raise UnsupportedOperatorError(f"{op.describe()}: input {list(x.shape)} / output {list(y.shape)} do not fit "
                                       f"weights {list(wt.shape)}")
    lo, hi = activation_range(op.options.activation, y)
    bias = _bias(model, op, o)
    full = (bias if bias is not None else 0) - x.zero_point * wt.data.astype(np.int64).sum(axis=1)
    mult, shift = _channel_multipliers(op, x, wt, y, o)
    batches = x.size // d
    p = {"batches": batches, "in_depth": d, "out_depth": o, "out_offset": y.zero_point, "act_min": lo, "act_max": hi}
    arrays = {"weights": wt.data.astype(np.int8).reshape(-1), "bias_full": _int32(full), "mult": mult, "shift": shift}
    return Step(Kernel.FULLY_CONNECTED, op, (x.index,), y.index, p, arrays, batches * o * d)


def _pool(model: TFLiteModel, op: Operator) -> Step:
    x, y = _t(model, op)
    opt = op.options
    p = _spatial(op, x, y, opt.filter, opt.stride, (1, 1), opt.padding)
    if y.shape[3] != x.shape[3]:
        raise UnsupportedOperatorError(f"{op.describe()}: channels change from {x.shape[3]} to {y.shape[3]}")
    if (np.float32(x.scale), x.zero_point) != (np.float32(y.scale), y.zero_point):
        raise UnsupportedOperatorError(f"{op.describe()}: int8 pooling keeps the input's scale and zero point "
                                       f"(TFLite Micro checks it); input {x.scale!r}, {x.zero_point}, output "
                                       f"{y.scale!r}, {y.zero_point}")
    lo, hi = activation_range(opt.activation, y)
    p.update(channels=x.shape[3], act_min=lo, act_max=hi)
    for k in ("in_c", "out_c"):
        p.pop(k, None)
    kernel = Kernel.AVERAGE_POOL_2D if op.opcode == "AVERAGE_POOL_2D" else Kernel.MAX_POOL_2D
    return Step(kernel, op, (x.index,), y.index, p, {}, 0, acc_words=x.shape[3] if kernel is Kernel.AVERAGE_POOL_2D else 0)


def _broadcast(op: Operator, a: Tensor, b: Tensor, y: Tensor) -> dict[str, Any]:
    if max(len(a.shape), len(b.shape), len(y.shape)) > 4:
        raise UnsupportedOperatorError(f"{op.describe()}: broadcasting is supported up to 4-D")
    dims = [1] * (4 - len(y.shape)) + list(y.shape)

    def strides(t: Tensor) -> list[int]:
        shape = [1] * (4 - len(t.shape)) + list(t.shape)
        out, step = [0] * 4, 1
        for i in range(3, -1, -1):
            if shape[i] not in (1, dims[i]):
                raise UnsupportedOperatorError(f"{op.describe()}: shapes {list(a.shape)} and {list(b.shape)} do not "
                                               f"broadcast to {list(y.shape)}")
            out[i] = step if shape[i] == dims[i] and dims[i] > 1 else 0
            step *= shape[i]
        return out

    sa, sb = strides(a), strides(b)
    broadcast = int(a.size != y.size or b.size != y.size)
    return {"dims": dims, "a_stride": sa, "b_stride": sb, "broadcast": broadcast}


def _binary(model: TFLiteModel, op: Operator) -> Step:
    a, b, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    for t in (a, b):
        if t.is_constant:
            raise UnsupportedOperatorError(f"{op.describe()}: a constant operand (tensor {t.index}) is not supported")
    p = _broadcast(op, a, b, y)
    lo, hi = activation_range(op.options.activation, y)
    p.update(a_offset=-a.zero_point, b_offset=-b.zero_point, out_offset=y.zero_point, act_min=lo, act_max=hi,
             a_mult=0, a_shift=0, b_mult=0, b_shift=0, left_shift=0)
    if op.opcode == "ADD":
        twice_max = 2.0 * _f64(max(np.float32(a.scale), np.float32(b.scale)))
        p["a_mult"], p["a_shift"] = _multiplier(op, _f64(a.scale) / twice_max, "input 0", below_one=True)
        p["b_mult"], p["b_shift"] = _multiplier(op, _f64(b.scale) / twice_max, "input 1", below_one=True)
        p["out_mult"], p["out_shift"] = _multiplier(op, twice_max / ((1 << 20) * _f64(y.scale)), "output",
                                                    below_one=True)
        p["left_shift"] = 20
        kernel = Kernel.ADD
    else:
        p["out_mult"], p["out_shift"] = _multiplier(op, _f64(a.scale) * _f64(b.scale) / _f64(y.scale), "output")
        kernel = Kernel.MUL
    src = a.index if a.size == y.size else (b.index if b.size == y.size else None)
    return Step(kernel, op, (a.index, b.index), y.index, p, {}, 0, inplace_src=None if p["broadcast"] else src)


def _pad(model: TFLiteModel, op: Operator) -> Step:
    x, y = _t(model, op)
    paddings = model.tensors[op.inputs[1]]
    rank = len(x.shape)
    if paddings.dtype not in (DType.INT32, DType.INT64) or paddings.size != 2 * rank:
        raise UnsupportedOperatorError(f"{op.describe()}: paddings (tensor {paddings.index}) are {paddings.dtype.name} "
                                       f"{list(paddings.shape)}; a {rank}-D input takes int32 paddings [{rank}, 2]")
    pads = paddings.data.astype(np.int64).reshape(-1, 2)
    if rank > 4 or pads.shape[0] != rank or (pads < 0).any():
        raise UnsupportedOperatorError(f"{op.describe()}: paddings {pads.tolist()} for a {rank}-D input are not "
                                       f"supported (up to 4-D, non-negative)")
    lead = 4 - rank
    in_dims = [1] * lead + list(x.shape)
    out_dims = [1] * lead + [int(s + a + b) for s, (a, b) in zip(x.shape, pads)]
    if out_dims[lead:] != list(y.shape):
        raise UnsupportedOperatorError(f"{op.describe()}: output {list(y.shape)} does not match the paddings")
    value = y.zero_point
    if op.opcode == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        v = model.tensors[op.inputs[2]]
        if v.dtype is not DType.INT8 or v.size != 1:
            raise UnsupportedOperatorError(f"{op.describe()}: the pad value (tensor {v.index}) is {v.dtype.name} "
                                           f"{list(v.shape)}; PADV2 on int8 takes one int8 value")
        value = int(v.data.reshape(-1)[0])
    p = {"in_dims": in_dims, "out_dims": out_dims, "before": [0] * lead + [int(a) for a in pads[:, 0]], "value": value}
    return Step(Kernel.PAD, op, (x.index,), y.index, p)


def _reshape(model: TFLiteModel, op: Operator) -> Step:
    x, y = _t(model, op)
    if x.size != y.size:
        raise UnsupportedOperatorError(f"{op.describe()}: {list(x.shape)} and {list(y.shape)} differ in size")
    return Step(Kernel.RESHAPE, op, (x.index,), y.index, {"bytes": x.size}, inplace_src=x.index)


def _mean(model: TFLiteModel, op: Operator) -> Step:
    x, y = _t(model, op)
    rank = len(x.shape)
    given = model.tensors[op.inputs[1]]
    if given.dtype is not DType.INT32 or not all(-rank <= int(a) < rank for a in given.data.reshape(-1)):
        raise UnsupportedOperatorError(f"{op.describe()}: axes (tensor {given.index}) are {given.dtype.name} "
                                       f"{given.data.reshape(-1).tolist()[:8]}; a {rank}-D input takes int32 axes "
                                       f"in [{-rank}, {rank})")
    axes = sorted({int(a) % rank for a in given.data.reshape(-1)})
    if not axes or axes != list(range(axes[0], axes[-1] + 1)):
        raise UnsupportedOperatorError(f"{op.describe()}: axes {axes} are not one contiguous run (e.g. [1, 2] for "
                                       f"global average pooling)")
    outer = int(np.prod(x.shape[:axes[0]], dtype=np.int64))
    reduced = int(np.prod(x.shape[axes[0]:axes[-1] + 1], dtype=np.int64))
    inner = int(np.prod(x.shape[axes[-1] + 1:], dtype=np.int64))
    if y.size != outer * inner or reduced < 1:
        raise UnsupportedOperatorError(f"{op.describe()}: output {list(y.shape)} does not match axes {axes}")
    m, s = _multiplier(op, _f64(x.scale) / _f64(y.scale), "output")
    shift = min(reduced.bit_length() - 1, 32, 31 + s)
    if shift < 0:
        raise UnsupportedOperatorError(f"{op.describe()}: output shift {s} is too small for TFLite's MEAN")
    p = {"outer": outer, "reduced": reduced, "inner": inner, "in_zp": x.zero_point, "out_zp": y.zero_point,
         "mult": (m << shift) // reduced, "shift": s - shift}
    return Step(Kernel.MEAN, op, (x.index,), y.index, p, {}, outer * reduced * inner, acc_words=inner)


def _same_shape(op: Operator, x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        raise UnsupportedOperatorError(f"{op.describe()}: input shape {list(x.shape)} and output shape "
                                       f"{list(y.shape)} differ; {op.opcode} keeps the shape")


def _softmax(model: TFLiteModel, op: Operator) -> Step:
    x, y = _t(model, op)
    _same_shape(op, x, y)
    if y.zero_point != -128 or np.float32(y.scale) != np.float32(1.0 / 256):
        raise UnsupportedOperatorError(f"{op.describe()}: int8 SOFTMAX needs an output scale of 1/256 and zero point "
                                       f"-128 (TFLite Micro checks it), got {y.scale} and {y.zero_point}")
    real = min(_f64(op.options.beta) * _f64(x.scale) * float(1 << 26), float((1 << 31) - 1))
    if not real > 1.0:
        raise UnsupportedOperatorError(f"{op.describe()}: beta * input scale * 2^26 = {real:.6g} must exceed 1")
    mult, left = quantize_multiplier(real)
    radius = math.floor(1.0 * ((1 << 5) - 1) * (1 << 26) / (1 << left))
    depth = x.shape[-1] if x.shape else 1
    p = {"rows": x.size // depth, "depth": depth, "input_multiplier": mult, "input_left_shift": left,
         "diff_min": -radius}
    return Step(Kernel.SOFTMAX, op, (x.index,), y.index, p, inplace_src=x.index)


def _logistic(model: TFLiteModel, op: Operator) -> Step:
    x, y = _t(model, op)
    _same_shape(op, x, y)
    if y.zero_point != -128:
        raise UnsupportedOperatorError(f"{op.describe()}: int8 LOGISTIC needs an output zero point of -128 (TFLite "
                                       f"Micro checks it), got {y.zero_point}")
    q, shift = math.frexp(_f64(x.scale) * float(1 << 27))
    if shift < 0:
        raise UnsupportedOperatorError(f"{op.describe()}: input scale {x.scale} is too small")
    mult = int(round_half_away(q * (1 << 31)))
    mult = mult - (1 << 32) if mult >= 1 << 31 else mult  # static_cast<int32_t> of 2^31 wraps
    radius = math.floor(1.0 * 15 * (1 << 27) / (1 << shift))
    p = {"size": x.size, "in_zp": x.zero_point, "range_radius": radius, "input_multiplier": mult,
         "input_left_shift": shift}
    return Step(Kernel.LOGISTIC, op, (x.index,), y.index, p, inplace_src=x.index)


def _requantize(model: TFLiteModel, op: Operator) -> Step:
    x, y = _t(model, op)
    m, s = _multiplier(op, _f64(x.scale) / _f64(y.scale), "output")
    p = {"size": x.size, "in_zp": x.zero_point, "out_zp": y.zero_point, "mult": m, "shift": s}
    return Step(Kernel.REQUANTIZE, op, (x.index,), y.index, p, inplace_src=x.index)


_LOWER = {"CONV_2D": _conv, "DEPTHWISE_CONV_2D": _depthwise, "FULLY_CONNECTED": _fully_connected,
          "AVERAGE_POOL_2D": _pool, "MAX_POOL_2D": _pool, "ADD": _binary, "MUL": _binary, "PAD": _pad,
          "PADV2": _pad, "RESHAPE": _reshape, "MEAN": _mean, "SOFTMAX": _softmax, "LOGISTIC": _logistic,
          "QUANTIZE": _requantize}


def _edges(model: TFLiteModel) -> tuple[dict[int, Operator], dict[int, Operator]]:
    """QUANTIZE ops from float graph inputs (by graph input) and DEQUANTIZE ops into float outputs."""
    q_in, dq_out = {}, {}
    for op in model.operators:
        src, dst = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
        if op.opcode == "QUANTIZE" and src.dtype is DType.FLOAT32:
            q_in[src.index] = op
        elif op.opcode == "DEQUANTIZE" and dst.dtype is DType.FLOAT32:
            dq_out[dst.index] = op
    return q_in, dq_out


def lower(model: TFLiteModel | bytes | str | os.PathLike) -> Program:
    """The :class:`Program` of a (checked) model: one :class:`Step` per int8 operator; the QUANTIZE /
    DEQUANTIZE edges become the float interface."""
    model = model if isinstance(model, TFLiteModel) else read_tflite(model)
    check_supported(model)
    q_in, dq_out = _edges(model)
    edge_ops = {op.index for op in (*q_in.values(), *dq_out.values())}
    steps = []
    for op in model.operators:
        if op.index in edge_ops:
            continue
        if op.opcode == "DEQUANTIZE":
            raise UnsupportedOperatorError(f"{op.describe()}: DEQUANTIZE is supported only into a float32 graph output")
        steps.append(_LOWER[op.opcode](model, op))
        for key, value in steps[-1].params.items():
            if not all(-2 ** 31 <= int(v) < 2 ** 31 for v in np.ravel(value)):
                raise UnsupportedOperatorError(f"{op.describe()}: {key} = {value} does not fit the runtime's int32 "
                                               f"field")
    inputs = tuple(q_in[i].outputs[0] if i in q_in else i for i in model.inputs)
    outputs = tuple(dq_out[i].inputs[0] if i in dq_out else i for i in model.outputs)
    float_in = all(i in q_in for i in model.inputs)
    float_out = all(i in dq_out for i in model.outputs)
    return Program(model, tuple(steps), inputs, outputs, tuple(model.inputs) if float_in else (),
                   tuple(model.outputs) if float_out else ())


# -- the arena -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    """Arena offsets of the int8 activations (by tensor index), the arena size, the strategy, the
    in-place pairs ``(src, dst)`` the plan uses, the liveness lower bound, and each tensor's lifetime."""

    offsets: dict[int, int]
    size: int
    strategy: str
    inplace: frozenset[tuple[int, int]]
    lower_bound: int
    lifetimes: dict[int, tuple[int, int]]


def _lifetimes(program: Program) -> dict[int, tuple[int, int]]:
    io = set(program.inputs) | set(program.outputs)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for s, step in enumerate(program.steps):
        if step.output not in io:
            first.setdefault(step.output, s)
            last[step.output] = max(last.get(step.output, s), s)
        for t in step.inputs:
            if t not in io:
                last[t] = s
    return {t: (first[t], last[t]) for t in first}


def _first_fit(buffers: Sequence[Any], alignment: int) -> tuple[dict[str, int], int]:
    """Greedy by size, each buffer at the lowest offset clear of every placed buffer alive with it."""
    placed: list[tuple[int, Any]] = []
    offsets = {}
    for b in sorted(buffers, key=lambda b: (-b.size, b.first)):
        size = -(-b.size // alignment) * alignment
        candidate = 0
        for off, other in sorted(placed, key=lambda p: p[0]):
            if b.first <= other.last and other.first <= b.last and candidate < off + other.size and off < candidate + size:
                candidate = -(-(off + other.size) // alignment) * alignment
        offsets[b.name] = candidate
        placed.append((candidate, type(b)(b.name, size, b.first, b.last)))
    return offsets, max((o + b.size for o, b in placed), default=0)


@dataclass(frozen=True)
class _Buffer:
    """A buffer for :func:`_first_fit` (the planner module's ``Buffer`` has the same fields)."""

    name: str
    size: int
    first: int
    last: int


def plan_arena(program: Program, inplace: bool = True) -> Placement:
    """Place the int8 intermediates (the caller's buffers hold the graph inputs and outputs) with
    :func:`tinyqml.classical.arena.plan_with_scratch` (greedy by size vs first use, with and without the
    in-place pairs, the smallest arena + scratch); without that module, :func:`_first_fit` (no in-place)."""
    lives = _lifetimes(program)
    if not lives:
        return Placement({}, 0, "empty", frozenset(), 0, {})
    try:
        from tinyqml.classical import arena
    except ImportError:  # the planner is another module of the package; keep code generation working
        buffers = [_Buffer(f"t{t}", program.model.tensors[t].size, *lives[t]) for t in sorted(lives)]
        offsets, size = _first_fit(buffers, ARENA_ALIGN)
        return Placement({int(k[1:]): v for k, v in offsets.items()}, size, "first-fit (no planner)", frozenset(),
                         0, lives)
    buffers = [arena.Buffer(f"t{t}", program.model.tensors[t].size, *lives[t]) for t in sorted(lives)]
    pairs = []
    for s, step in enumerate(program.steps):
        src = step.inplace_src
        if inplace and src is not None and src in lives and step.output in lives and lives[src][1] == s \
                and lives[step.output][0] == s:
            pairs.append(arena.InPlace(f"t{src}", f"t{step.output}"))

    def used(chosen: Sequence[Any]) -> frozenset:
        return frozenset((int(p.src[1:]), int(p.dst[1:])) for p in chosen)

    # an in-place depthwise needs a ring buffer outside the arena: the plan minimizes arena + scratch
    plan = arena.plan_with_scratch(buffers, pairs, lambda ps: scratch_bytes(program, used(ps)), ARENA_ALIGN)
    bound = min(arena.lower_bound(buffers, pairs, ARENA_ALIGN), arena.lower_bound(buffers, [], ARENA_ALIGN))
    return Placement({int(k[1:]): v for k, v in plan.offsets.items()}, plan.size, plan.strategy, used(plan.inplace),
                     bound, lives)


def scratch_bytes(program: Program, inplace: frozenset) -> int:
    """The kernels' scratch: int32 accumulators, plus the ring buffer of each depthwise step computed in
    place (``(input, output)`` in ``inplace``)."""
    words = [s.acc_words + (-(-s.ring_bytes // 4) if (s.inplace_src, s.output) in inplace else 0)
             for s in program.steps]
    return 4 * max(words + [0])


# -- C emission ------------------------------------------------------------------------------------------

def _c_array(name: str, a: np.ndarray) -> str:
    ctype = "int8_t" if a.dtype == np.int8 else "int32_t"
    vals = [str(int(v)) if ctype == "int8_t" or int(v) != -2 ** 31 else "(-2147483647 - 1)" for v in a.reshape(-1)]
    per = 24 if ctype == "int8_t" else 8
    rows = [", ".join(vals[i:i + per]) for i in range(0, len(vals), per)]
    return f"static const {ctype} {name}[{max(len(vals), 1)}] = {{\n    " + ",\n    ".join(rows or ["0"]) + "\n};\n"


def _c_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(_c_value(x) for x in v) + "}"
    v = int(v)
    return "(-2147483647 - 1)" if v == -2 ** 31 else str(v)


class _Emitter:
    def __init__(self, program: Program, placement: Placement, options: CodegenOptions) -> None:
        self.p, self.plan, self.o = program, placement, options
        self.P, self.pre = options.prefix.upper(), options.prefix
        self.scratch_words = scratch_bytes(program, placement.inplace) // 4

    def ptr(self, t: int, const: bool) -> str:
        if t in self.plan.offsets:
            return f"({self.pre}_arena + {self.plan.offsets[t]})"
        if t in self.p.outputs:
            return f"outputs[{self.p.outputs.index(t)}]"
        if t in self.p.inputs:
            return f"inputs[{self.p.inputs.index(t)}]"
        raise ExportError(f"tensor {t} has no storage")  # lower() and plan_arena() give every tensor one

    def in_place(self, step: Step) -> bool:
        return step.inplace_src is not None and (step.inplace_src, step.output) in self.plan.inplace

    def step_decl(self, i: int, step: Step) -> str:
        name = f"op{step.op.index}"
        out = [f"/* operator {step.op.index}: {step.op.opcode} */\n"]
        fields = dict(step.params)
        for key, arr in step.arrays.items():
            out.append(_c_array(f"{name}_{key}", arr))
            fields[key] = f"{name}_{key}"
        if step.kernel in _STRUCT:
            body = ",\n".join(f"    .{k} = {v if isinstance(v, str) else _c_value(v)}" for k, v in fields.items())
            out.append(f"static const {_STRUCT[step.kernel]} {name} = {{\n{body}\n}};\n")
        return "".join(out)

    def step_call(self, step: Step) -> str:
        k, name = step.kernel, f"&op{step.op.index}"
        x = self.ptr(step.inputs[0], True)
        y = self.ptr(step.output, False)
        acc = f"{self.pre}_scratch"
        if k is Kernel.RESHAPE:
            return "" if self.in_place(step) or x == y else f"    memcpy({y}, {x}, {step.params['bytes']});\n"
        if k is Kernel.DEPTHWISE_CONV_2D:
            if self.in_place(step):
                ring = f"(int8_t *)({acc} + {step.acc_words})"
                return f"    tq_depthwise_conv2d({name}, {y}, {y}, {acc}, {ring}, 1);\n"
            return f"    tq_depthwise_conv2d({name}, {x}, {y}, {acc}, 0, 0);\n"
        if k in (Kernel.ADD, Kernel.MUL):
            return f"    {k.value}({name}, {x}, {self.ptr(step.inputs[1], True)}, {y});\n"
        if k in (Kernel.AVERAGE_POOL_2D, Kernel.MEAN):
            return f"    {k.value}({name}, {x}, {y}, {acc});\n"
        return f"    {k.value}({name}, {x}, {y});\n"

    def header(self) -> str:
        P, pre, m = self.P, self.pre, self.p.model
        lines = [f"/* Generated by tinyqml.classical.codegen ({self.o.target.value}); do not edit. */",
                 f"#ifndef {P}_MODEL_H", f"#define {P}_MODEL_H", "", "#include <stdint.h>", "",
                 f"#define {P}_NUM_INPUTS {len(self.p.inputs)}", f"#define {P}_NUM_OUTPUTS {len(self.p.outputs)}",
                 f"#define {P}_INPUT_SIZE {sum(m.tensors[t].size for t in self.p.inputs)}",
                 f"#define {P}_OUTPUT_SIZE {sum(m.tensors[t].size for t in self.p.outputs)}",
                 f"#define {P}_ARENA_BYTES {self.plan.size}", f"#define {P}_SCRATCH_BYTES {4 * self.scratch_words}"]
        for kind, tensors in (("INPUT", self.p.inputs), ("OUTPUT", self.p.outputs)):
            for k, t in enumerate(tensors):
                tt = m.tensors[t]
                lines += [f"#define {P}_{kind}_SIZE_{k} {tt.size}", f"#define {P}_{kind}_SCALE_{k} {tt.scale!r}f",
                          f"#define {P}_{kind}_ZERO_POINT_{k} ({tt.zero_point})"]
        lines += ["", "#ifdef __cplusplus", 'extern "C" {', "#endif",
                  "/* int8 inputs / outputs concatenated in the model's order; returns 0 on success */",
                  f"int {pre}_invoke(const int8_t *input, int8_t *output);",
                  f"/* one pointer per input ({P}_INPUT_SIZE_<k> bytes) and per output */",
                  f"int {pre}_invoke_n(const int8_t *const *inputs, int8_t *const *outputs);"]
        if self.p.float_inputs:
            lines += ["/* the float32 inputs (QUANTIZE at the edge, as TFLite Micro) -> int8 */",
                      f"void {pre}_quantize_inputs(const float *input, int8_t *input_q);"]
        if self.p.float_outputs:
            lines += ["/* the int8 outputs -> float32 (DEQUANTIZE at the edge, as TFLite Micro) */",
                      f"void {pre}_dequantize_outputs(const int8_t *output_q, float *output);"]
        if self.p.float_io:
            lines += [f"#define {P}_FLOAT_IO 1", "/* float32 in and out: quantize, invoke, dequantize */",
                      f"int {pre}_invoke_f32(const float *input, float *output);"]
        lines += ["#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {P}_MODEL_H */", ""]
        return "\n".join(lines)

    def source(self) -> str:
        pre, P = self.pre, self.P
        out = [f"/* Generated by tinyqml.classical.codegen for {self.o.target.value}; do not edit. */\n",
               "#include <stddef.h>\n#include <string.h>\n\n#include \"model.h\"\n#include \"tinyqml_rt.h\"\n\n",
               f"/* activations: {self.plan.size} bytes, planned ({self.plan.strategy}) */\n",
               f"static int32_t {pre}_arena_words[({P}_ARENA_BYTES + 3) / 4 + 1];\n",
               f"#define {pre}_arena ((int8_t *){pre}_arena_words)\n",
               f"static int32_t {pre}_scratch[{P}_SCRATCH_BYTES / 4 + 1];\n\n"]
        out += [self.step_decl(i, s) + "\n" for i, s in enumerate(self.p.steps)]
        body = ["    if (inputs == NULL || outputs == NULL) {\n        return -1;\n    }\n",
                f"    (void){pre}_arena_words;\n    (void){pre}_scratch;\n"]
        body += [self.step_call(s) for s in self.p.steps]
        produced = {s.output for s in self.p.steps}
        for k, t in enumerate(self.p.outputs):
            if t not in produced and t in self.p.inputs:
                body.append(f"    memcpy(outputs[{k}], inputs[{self.p.inputs.index(t)}], {self.p.model.tensors[t].size});\n")
        out.append(f"int {pre}_invoke_n(const int8_t *const *inputs, int8_t *const *outputs)\n{{\n"
                   + "".join(body) + "    return 0;\n}\n\n")
        out.append(self.invoke())
        out.append(self.edges())
        return "".join(out)

    def _offsets(self, tensors: Sequence[int]) -> list[int]:
        sizes = [self.p.model.tensors[t].size for t in tensors]
        return [int(v) for v in np.cumsum([0] + sizes[:-1])]

    def invoke(self) -> str:
        pre = self.pre
        ins = ", ".join(f"input + {o}" for o in self._offsets(self.p.inputs))
        outs = ", ".join(f"output + {o}" for o in self._offsets(self.p.outputs))
        return (f"int {pre}_invoke(const int8_t *input, int8_t *output)\n{{\n"
                f"    const int8_t *ins[{len(self.p.inputs)}];\n    int8_t *outs[{len(self.p.outputs)}];\n"
                f"    if (input == NULL || output == NULL) {{\n        return -1;\n    }}\n"
                + "".join(f"    ins[{k}] = {s};\n" for k, s in enumerate(ins.split(", ")))
                + "".join(f"    outs[{k}] = {s};\n" for k, s in enumerate(outs.split(", ")))
                + f"    return {pre}_invoke_n(ins, outs);\n}}\n\n")

    def edges(self) -> str:
        pre, P, m = self.pre, self.P, self.p.model
        lines = []
        if self.p.float_inputs:
            lines += [f"void {pre}_quantize_inputs(const float *input, int8_t *input_q)", "{"]
            for t, o in zip(self.p.inputs, self._offsets(self.p.inputs)):
                tt = m.tensors[t]
                lines.append(f"    tq_quantize_f32(input + {o}, input_q + {o}, {tt.size}, {tt.scale!r}f, "
                             f"{tt.zero_point});")
            lines += ["}", ""]
        if self.p.float_outputs:
            lines += [f"void {pre}_dequantize_outputs(const int8_t *output_q, float *output)", "{"]
            for t, o in zip(self.p.outputs, self._offsets(self.p.outputs)):
                tt = m.tensors[t]
                lines.append(f"    tq_dequantize_f32(output_q + {o}, output + {o}, {tt.size}, {_f64(tt.scale)!r}, "
                             f"{tt.zero_point});")
            lines += ["}", ""]
        if self.p.float_io:
            lines += [f"static int8_t {pre}_in8[{P}_INPUT_SIZE];", f"static int8_t {pre}_out8[{P}_OUTPUT_SIZE];",
                      f"int {pre}_invoke_f32(const float *input, float *output)", "{", "    int rc;",
                      "    if (input == NULL || output == NULL) {", "        return -1;", "    }",
                      f"    {pre}_quantize_inputs(input, {pre}_in8);", f"    rc = {pre}_invoke({pre}_in8, {pre}_out8);",
                      f"    {pre}_dequantize_outputs({pre}_out8, output);", "    return rc;", "}", ""]
        return "\n".join(lines)


# -- the report ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerReport:
    index: int
    op: str
    inputs: tuple[tuple[int, ...], ...]
    output: tuple[int, ...]
    macs: int
    output_bytes: int
    const_bytes: int
    in_place: bool
    storage: str


@dataclass(frozen=True, eq=False)
class CodegenResult:
    """What :func:`generate` wrote and measured: ``files``, the IR ``program``, the arena ``placement``,
    per-layer reports, and memory totals (bytes)."""

    out_dir: Path
    files: tuple[Path, ...]
    program: Program
    placement: Placement
    layers: tuple[LayerReport, ...]
    target: Target
    input_size: int
    output_size: int
    scratch_bytes: int
    float_buffer_bytes: int
    flash_bytes: int

    @property
    def arena_bytes(self) -> int:
        return self.placement.size

    @property
    def peak_sram_bytes(self) -> int:
        """Arena + kernel scratch + the float-edge int8 staging buffers (not the caller's I/O)."""
        return self.arena_bytes + self.scratch_bytes + self.float_buffer_bytes

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def summary(self) -> str:
        return (f"{len(self.layers)} layers, {self.macs:,} MACs; arena {self.arena_bytes:,} B "
                f"(lower bound {self.placement.lower_bound:,} B, {self.placement.strategy}), scratch "
                f"{self.scratch_bytes:,} B, peak SRAM {self.peak_sram_bytes:,} B, flash (constants) "
                f"{self.flash_bytes:,} B; input {self.input_size} B, output {self.output_size} B")

    def to_dict(self) -> dict[str, Any]:
        m = self.program.model
        return {"target": self.target.value, "input_bytes": self.input_size, "output_bytes": self.output_size,
                "macs": self.macs, "arena_bytes": self.arena_bytes, "lower_bound_bytes": self.placement.lower_bound,
                "strategy": self.placement.strategy, "scratch_bytes": self.scratch_bytes,
                "float_buffer_bytes": self.float_buffer_bytes, "peak_sram_bytes": self.peak_sram_bytes,
                "flash_bytes": self.flash_bytes, "files": [p.name for p in self.files],
                "layers": [vars(layer) | {"inputs": [list(s) for s in layer.inputs], "output": list(layer.output)}
                           for layer in self.layers],
                "arena": [{"tensor": t, "name": m.tensors[t].name, "offset": off, "bytes": m.tensors[t].size,
                           "first": self.placement.lifetimes[t][0], "last": self.placement.lifetimes[t][1]}
                          for t, off in sorted(self.placement.offsets.items(), key=lambda kv: (kv[1], kv[0]))]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def report(self) -> str:
        """Markdown: the summary, one row per layer, the arena layout."""
        lines = ["# tinyqml codegen report", "", self.summary(), "",
                 "| # | op | inputs | output | MACs | out bytes | const bytes | storage |",
                 "|---|----|--------|--------|------|-----------|-------------|---------|"]
        for r in self.layers:
            ins = " ".join("x".join(map(str, s)) for s in r.inputs)
            lines.append(f"| {r.index} | {r.op} | {ins} | {'x'.join(map(str, r.output))} | {r.macs:,} | "
                         f"{r.output_bytes:,} | {r.const_bytes:,} | {r.storage}{' (in place)' if r.in_place else ''} |")
        lines += ["", "## Arena", "", "| tensor | offset | bytes | steps |", "|---|---|---|---|"]
        for a in self.to_dict()["arena"]:
            lines.append(f"| {a['tensor']} {a['name']} | {a['offset']} | {a['bytes']} | {a['first']}..{a['last']} |")
        return "\n".join(lines) + "\n"


def _layers(program: Program, placement: Placement, emitter: _Emitter) -> tuple[LayerReport, ...]:
    m = program.model
    return tuple(LayerReport(step.op.index, step.op.opcode, tuple(m.tensors[t].shape for t in step.inputs),
                             m.tensors[step.output].shape, step.macs, m.tensors[step.output].size,
                             sum(a.nbytes for a in step.arrays.values()), emitter.in_place(step),
                             emitter.ptr(step.output, False).strip("()"))
                 for step in program.steps)


def generate(model: bytes | str | os.PathLike | TFLiteModel, out_dir: str | os.PathLike,
             options: CodegenOptions = CodegenOptions()) -> CodegenResult:
    """Write ``model.h``, ``model.c``, the runtime, ``report.md`` and ``report.json`` into ``out_dir``
    (created if missing) for a fully-int8 TFLite model; :class:`UnsupportedOperatorError` names an
    operator it cannot compile."""
    if not isinstance(options, CodegenOptions):
        raise ExportError(f"options must be CodegenOptions, got {type(options).__name__}")
    program = lower(model)
    placement = plan_arena(program, options.inplace)
    if placement.size > 2 ** 31 - 1:
        raise UnsupportedOperatorError(f"the activations need an arena of {placement.size:,} bytes; the generated C "
                                       f"takes at most 2^31 - 1")
    emitter = _Emitter(program, placement, options)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{str(out)!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        files = [out / "model.h", out / "model.c"]
        files[0].write_text(emitter.header())
        files[1].write_text(emitter.source())
        for name in RUNTIME_FILES:
            shutil.copyfile(RUNTIME_DIR / name, out / name)
            files.append(out / name)
    except OSError as exc:
        raise ExportError(f"cannot write the C sources into {str(out)!r}: {exc}") from exc
    m = program.model
    layers = _layers(program, placement, emitter)
    files += [out / "report.md", out / "report.json"]
    result = CodegenResult(out, tuple(files), program, placement, layers, options.target,
                           sum(m.tensors[t].size for t in program.inputs),
                           sum(m.tensors[t].size for t in program.outputs), 4 * emitter.scratch_words,
                           (sum(m.tensors[t].size for t in program.inputs + program.outputs)
                            if program.float_io else 0),
                           sum(layer.const_bytes for layer in layers))
    try:
        files[-2].write_text(result.report())
        files[-1].write_text(result.to_json())
    except OSError as exc:
        raise ExportError(f"cannot write the report into {str(out)!r}: {exc}") from exc
    log.info("wrote %s: %s", out, result.summary())
    return result
