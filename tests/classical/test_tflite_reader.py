"""The .tflite reader: tensors, quantization, constants, operators and their options from exported models;
unsupported operators and float or per-channel activations named with the operator's index."""

from __future__ import annotations

import contextlib
import copy
import random
import re
import struct
import sys
import traceback
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tinyqml.classical.convert import quantize_model
from tinyqml.classical.errors import CompressionError, ExportError
from tinyqml.classical.tflite_export import TFLiteOptions, to_tflite
from tinyqml.classical.tflite_reader import (
    Activation,
    DType,
    Padding,
    UnsupportedOperatorError,
    check_supported,
    read_tflite,
)
from testkit import TimeLimitExceeded, time_limit


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, 2, 1, groups=8), nn.ReLU(),
                         nn.Conv2d(8, 4, 1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 5)).eval()


@pytest.fixture(scope="module")
def exported():
    q = quantize_model(_net(), torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(1))).qgraph
    return q, to_tflite(q)


def _mutated(blob: bytes, change) -> bytes:
    """``blob`` re-packed after ``change(model, fb)`` edits its object API tree."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(blob, 0)
    change(model, fb)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_operators_options_and_io(exported) -> None:
    q, blob = exported
    m = read_tflite(blob)
    assert [op.opcode for op in m.operators] == ["CONV_2D", "PAD", "DEPTHWISE_CONV_2D", "CONV_2D", "MAX_POOL_2D",
                                                 "RESHAPE", "FULLY_CONNECTED"]
    conv, pad, dw, pw, pool, reshape, fc = m.operators
    assert conv.options.padding is Padding.SAME and conv.options.activation is Activation.RELU6
    assert conv.options.stride == (1, 1) and conv.options.dilation == (1, 1)
    assert dw.options.stride == (2, 2) and dw.options.padding is Padding.VALID and dw.options.depth_multiplier == 1
    assert dw.options.activation is Activation.RELU and pw.options.activation is Activation.NONE
    assert pool.options.filter == (2, 2) and pool.options.stride == (2, 2)
    assert reshape.options.new_shape == (1, 16) and fc.options.keep_num_dims is False
    assert [op.index for op in m.operators] == list(range(7))
    assert m.tensors[m.inputs[0]].shape == (1, 8, 8, 3) and m.tensors[m.outputs[0]].shape == (1, 5)
    assert m.producer(fc.outputs[0]) is fc and m.consumers(conv.outputs[0]) == [pad]
    assert check_supported(m) is m


def test_tensors_quantization_and_constants(exported) -> None:
    q, blob = exported
    m = read_tflite(blob)
    conv, _, dw, *_ = m.operators
    w, b = m.tensors[conv.inputs[1]], m.tensors[conv.inputs[2]]
    qn = q.nodes[0]
    assert w.dtype is DType.INT8 and w.quantized_dimension == 0 and w.per_channel and len(w.scales) == 8
    assert np.array_equal(w.data, qn.weight_q) and w.data.dtype == np.int8
    assert np.array_equal(np.float32(w.scales), np.float32(qn.weight_scale))
    assert b.dtype is DType.INT32 and np.array_equal(b.data, qn.bias_q) and set(b.zero_points) == {0}
    dw_w = m.tensors[dw.inputs[1]]
    assert dw_w.shape == (1, 3, 3, 8) and dw_w.quantized_dimension == 3
    x = m.tensors[m.inputs[0]]
    assert x.data is None and not x.is_constant and x.nbytes == 192
    assert np.float32(x.scale) == np.float32(q.input.scale) and x.zero_point == q.input.zero_point
    pads = m.tensors[m.operators[1].inputs[1]]
    assert pads.dtype is DType.INT32 and pads.data.tolist() == [[0, 0], [1, 1], [1, 1], [0, 0]]


def test_path_and_bytes_agree(exported, tmp_path) -> None:
    _, blob = exported
    path = tmp_path / "m.tflite"
    path.write_bytes(blob)
    a, b = read_tflite(path), read_tflite(str(path))
    assert [op.opcode for op in a.operators] == [op.opcode for op in b.operators]
    assert [t.shape for t in a.tensors] == [t.shape for t in read_tflite(blob).tensors]


def test_float_edges_are_supported(exported) -> None:
    q, _ = exported
    m = read_tflite(to_tflite(q, TFLiteOptions(float_io=True)))
    assert m.operators[0].opcode == "QUANTIZE" and m.operators[-1].opcode == "DEQUANTIZE"
    assert m.tensors[m.inputs[0]].dtype is DType.FLOAT32 and m.tensors[m.outputs[0]].dtype is DType.FLOAT32
    assert check_supported(m) is m


def test_unsupported_operator_names_it_and_its_index(exported) -> None:
    _, blob = exported

    def to_tanh(model, fb):
        code = fb.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.TANH
        model.operatorCodes.append(code)
        model.subgraphs[0].operators[3].opcodeIndex = len(model.operatorCodes) - 1

    m = read_tflite(_mutated(blob, to_tanh))
    assert m.operators[3].opcode == "TANH"
    with pytest.raises(UnsupportedOperatorError, match=r"operator 3 \(TANH\): is not supported"):
        check_supported(m)


def test_float_and_per_channel_activations_are_named(exported) -> None:
    _, blob = exported
    m = read_tflite(blob)
    middle = m.operators[2].outputs[0]  # the depthwise output, read by operator 3

    def to_float(model, fb):
        model.subgraphs[0].tensors[middle].type = fb.TensorType.FLOAT32

    with pytest.raises(UnsupportedOperatorError, match=r"operator 2 \(DEPTHWISE_CONV_2D\).*FLOAT32"):
        check_supported(read_tflite(_mutated(blob, to_float)))

    def per_channel(model, fb):
        qp = model.subgraphs[0].tensors[middle].quantization
        qp.scale, qp.zeroPoint, qp.quantizedDimension = [0.1] * 8, [0] * 8, 3

    with pytest.raises(UnsupportedOperatorError, match=r"operator 2 \(DEPTHWISE_CONV_2D\).*per-tensor"):
        check_supported(read_tflite(_mutated(blob, per_channel)))

    def fused_tanh(model, fb):
        model.subgraphs[0].operators[0].builtinOptions.fusedActivationFunction = 4

    with pytest.raises(UnsupportedOperatorError, match=r"operator 0 \(CONV_2D\).*TANH"):
        check_supported(read_tflite(_mutated(blob, fused_tanh)))


def test_bad_files_are_export_errors(exported, tmp_path) -> None:
    _, blob = exported
    with pytest.raises(ExportError, match="TFL3"):
        read_tflite(b"not a model at all")
    with pytest.raises(ExportError, match="TFLite"):
        read_tflite(blob[:40])
    with pytest.raises(ExportError, match="not a file"):
        read_tflite(tmp_path / "missing.tflite")


def test_missing_tflite_micro_says_what_to_install(monkeypatch, exported) -> None:
    _, blob = exported
    monkeypatch.setitem(sys.modules, "tflite_micro.tensorflow.lite.micro.python.schema_py_generated", None)
    with pytest.raises(ExportError, match="pip install tflite-micro"):
        read_tflite(blob)


# -- fuzzing: mutated flatbuffers through the loader -------------------------------------------------------
#
# Valid seeds (the TensorFlow-converter fixtures, tflite_builder models of every operator, this file's exported
# CNN with int8 and float32 edges) are mutated with a seeded random.Random: bytes (bit flips, overwrites, edge
# values in aligned words -- offsets, lengths, indices --, truncation, insertion, zeroed ranges) and structured
# edits that stay valid flatbuffers but carry bad semantics (shapes, buffer / opcode / tensor indices, graph
# inputs and outputs, scales, zero points, dtypes, options, cycles, subgraphs). Each mutant is read under a
# wall-clock deadline with tracemalloc watching the peak: only tinyqml's named errors may come out.
# tests/classical/test_codegen.py runs the same mutants through the code generator and the CLI.

FIXTURES = Path(__file__).parent / "fixtures"
INT32_MAX = 2 ** 31 - 1
#: edge values written into aligned 32-bit words
WORDS = (0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
BAD_FLOATS = (0.0, -0.0, -0.5, float("nan"), float("inf"), float("-inf"), 1e-45, 1e-30, 2.0 ** -24, 1e10, 3e38)
BAD_INTS = (0, -1, -2, 2, 3, 5, 7, 100, 65536, 2 ** 30, INT32_MAX, -INT32_MAX - 1)
#: a mutant's read (or code generation) must end within this many seconds, and allocate at most this much
DEADLINE_S = 10.0
PEAK_BYTES = 64 * 2 ** 20


def fuzz_seeds(extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Valid models to mutate: the fixtures, two tflite_builder models of each operator, two broadcasting
    ADD / MUL models, and ``extra``."""
    from tinyqml.classical.tflite_builder import verification_cases

    seeds = {p.stem: p.read_bytes() for p in sorted(FIXTURES.glob("*.tflite"))}
    for i, case in enumerate(verification_cases(28, seed=11)):
        seeds[f"{case.op.name.lower()}_{i}"] = case.blob
    for i, case in enumerate(verification_cases(4, seed=12, broadcast=True)[:2]):
        seeds[f"{case.op.name.lower()}_broadcast_{i}"] = case.blob
    seeds.update(extra or {})
    return seeds


# byte mutations: blob, rng -> blob

def _flip(blob: bytes, r: random.Random) -> bytes:
    b = bytearray(blob)
    for _ in range(r.randint(1, 8)):
        b[r.randrange(8, len(b))] ^= 1 << r.randrange(8)
    return bytes(b)


def _overwrite(blob: bytes, r: random.Random) -> bytes:
    b = bytearray(blob)
    for _ in range(r.randint(1, 6)):
        i = r.randrange(8, len(b))
        b[i:i + 8] = bytes(r.randrange(256) for _ in range(min(r.randint(1, 8), len(b) - i)))
    return bytes(b)


def _word(blob: bytes, r: random.Random) -> bytes:
    b = bytearray(blob)
    for _ in range(r.randint(1, 3)):
        i = 4 * r.randrange(2, len(b) // 4)
        old = struct.unpack_from("<I", b, i)[0]
        new = r.choice(WORDS) if r.random() < 0.7 else (old + r.choice((-4, -1, 1, 4, 8))) % 2 ** 32
        struct.pack_into("<I", b, i, new)
    return bytes(b)


def _truncate(blob: bytes, r: random.Random) -> bytes:
    return blob[:r.randrange(0, len(blob))]


def _insert(blob: bytes, r: random.Random) -> bytes:
    i = r.randrange(0, len(blob) + 1)
    return blob[:i] + bytes(r.randrange(256) for _ in range(r.choice((1, 2, 3, 4, 8, 16, 64)))) + blob[i:]


def _zero(blob: bytes, r: random.Random) -> bytes:
    i = r.randrange(0, len(blob))
    n = r.choice((1, 4, 8, 16, 64, 256, len(blob)))
    return blob[:i] + bytes(len(blob[i:i + n])) + blob[i + n:]


BYTE_MUTATORS = {"flip": _flip, "overwrite": _overwrite, "word": _word, "truncate": _truncate, "insert": _insert,
                 "zero": _zero}


# structured mutations: edit the object API tree (model, schema module, rng) -> what was done, None: not applicable

def _sub(m):
    return m.subgraphs[0]


def _quantized(m, r):
    ts = [t for t in _sub(m).tensors if t.quantization is not None and t.quantization.scale]
    return r.choice(ts) if ts else None


def _consts(m) -> list[int]:
    return [i for i, t in enumerate(_sub(m).tensors) if t.buffer]


def _m_shape(m, fb, r):
    t = r.choice(_sub(m).tensors)
    shape = list(t.shape or [])
    kind = r.choice(("negative", "huge", "zero", "mismatched", "rank+1", "rank-1", "none", "overflow", "2^31"))
    if kind in ("negative", "huge", "zero", "mismatched", "rank-1") and not shape:
        return None
    i = r.randrange(len(shape)) if shape else 0
    if kind == "negative":
        shape[i] = r.choice((-1, -2, -INT32_MAX - 1))
    elif kind == "huge":
        shape[i] = r.choice((INT32_MAX, 2 ** 30, 65536))
    elif kind == "zero":
        shape[i] = 0
    elif kind == "mismatched":
        shape[i] = 2 * shape[i] + r.choice((0, 1))
    elif kind == "rank+1":
        shape.insert(r.randrange(len(shape) + 1), r.choice((1, 2)))
    elif kind == "rank-1":
        shape.pop(i)
    elif kind == "overflow":  # the product overflows int64
        shape = [INT32_MAX] * r.randint(3, 4)
    elif kind == "2^31":
        shape = r.choice(([1, 2 ** 16, 2 ** 15, 1], [2 ** 31 - 1], [2 ** 16, 2 ** 16]))
    t.shape = None if kind == "none" else shape
    return kind


def _m_buffer(m, fb, r):
    t = r.choice(_sub(m).tensors)
    kind = r.choice(("past the end", "2^32 - 1", "another", "none", "data for an activation"))
    if kind == "past the end":
        t.buffer = len(m.buffers) + r.randint(0, 3)
    elif kind == "2^32 - 1":
        t.buffer = 2 ** 32 - 1
    elif kind == "another":
        t.buffer = r.randrange(len(m.buffers))
    elif kind == "none":
        t.buffer = 0
    else:
        b = fb.BufferT()
        b.data = np.array([r.randrange(256) for _ in range(r.choice((1, 4, 16, 64)))], np.uint8)
        m.buffers.append(b)
        t.buffer = len(m.buffers) - 1
    return kind


def _m_buffer_data(m, fb, r):
    full = [b for b in m.buffers if b.data is not None and len(b.data)]
    if not full:
        return None
    b = r.choice(full)
    kind = r.choice(("shorter", "longer", "empty", "offset and size"))
    if kind == "shorter":
        b.data = b.data[:r.randrange(len(b.data))]
    elif kind == "longer":
        b.data = np.concatenate([b.data, np.zeros(r.choice((1, 3, 4, 64)), np.uint8)])
    elif kind == "empty":
        b.data = None
    else:  # the >2 GB layout: data outside the flatbuffer
        b.data, b.offset, b.size = None, r.choice((1, 2, 16, 2 ** 40, 2 ** 64 - 1)), r.choice((0, 1, 16, 2 ** 40))
    return kind


def _m_opcode(m, fb, r):
    o = r.choice(_sub(m).operators)
    kind = r.choice(("index past the end", "index 2^32 - 1", "builtin code", "custom", "deprecated code"))
    if kind == "index past the end":
        o.opcodeIndex = len(m.operatorCodes) + r.randint(0, 3)
    elif kind == "index 2^32 - 1":
        o.opcodeIndex = 2 ** 32 - 1
    else:
        c = m.operatorCodes[o.opcodeIndex]
        if kind == "builtin code":
            c.builtinCode = r.choice((r.randrange(0, 210), 9999, -1, INT32_MAX))
            c.deprecatedBuiltinCode = max(-128, min(127, c.builtinCode)) if r.random() < 0.5 else c.deprecatedBuiltinCode
        elif kind == "custom":
            c.builtinCode = c.deprecatedBuiltinCode = fb.BuiltinOperator.CUSTOM
            c.customCode = r.choice(("MyOp", None, ""))
        else:
            c.deprecatedBuiltinCode = r.choice((-128, -1, 0, 127, r.randrange(128)))
    return kind


def _m_tensor_index(m, fb, r):
    o = r.choice(_sub(m).operators)
    n = len(_sub(m).tensors)
    bad = r.choice((n, n + 1, INT32_MAX, -2, -INT32_MAX - 1))
    kind = r.choice(("input out of range", "output out of range", "no inputs", "no outputs", "extra input",
                     "extra output", "required input omitted", "negative input"))
    if kind == "input out of range":
        o.inputs[r.randrange(len(o.inputs))] = bad
    elif kind == "output out of range":
        o.outputs[r.randrange(len(o.outputs))] = r.choice((bad, -1))
    elif kind == "no inputs":
        o.inputs = r.choice((None, []))
    elif kind == "no outputs":
        o.outputs = r.choice((None, []))
    elif kind == "extra input":
        o.inputs.append(r.randrange(n))
    elif kind == "extra output":
        o.outputs.append(r.randrange(n))
    elif kind == "required input omitted":
        o.inputs[0 if len(o.inputs) < 2 else r.randrange(2)] = -1
    else:
        o.inputs[r.randrange(len(o.inputs))] = r.randrange(-n, 0) if n > 1 else -2
    return kind


def _m_io(m, fb, r):
    sub = _sub(m)
    n = len(sub.tensors)
    which = r.choice(("inputs", "outputs"))
    lst = list(getattr(sub, which) or [])
    kind = r.choice(("empty", "out of range", "negative", "twice", "a constant", "another tensor"))
    if kind == "empty":
        lst = []
    elif kind == "out of range":
        lst[0] = r.choice((n, n + 7, INT32_MAX))
    elif kind == "negative":
        lst[0] = r.choice((-1, -2))
    elif kind == "twice":
        lst.append(lst[0])
    elif kind == "a constant":
        if not _consts(m):
            return None
        lst[0] = r.choice(_consts(m))
    else:
        lst[0] = r.randrange(n)
    setattr(sub, which, lst)
    return f"graph {which}: {kind}"


def _m_scale(m, fb, r):
    t = _quantized(m, r)
    if t is None:
        return None
    q = t.quantization
    kind = r.choice(("value", "value", "one more", "one fewer", "none"))
    if kind == "value":
        q.scale[r.randrange(len(q.scale))] = r.choice(BAD_FLOATS)
    elif kind == "one more":
        q.scale.append(q.scale[0])
    elif kind == "one fewer":
        q.scale.pop()
    else:
        q.scale = []
    return kind


def _m_zero_point(m, fb, r):
    t = _quantized(m, r)
    if t is None:
        return None
    q = t.quantization
    kind = r.choice(("out of int8", "out of int8", "two more", "none"))
    if kind == "out of int8":
        zps = list(q.zeroPoint or [0] * len(q.scale))
        zps[r.randrange(len(zps))] = r.choice((128, -129, 255, 300, -1000, 2 ** 31, 2 ** 40, -2 ** 63))
        q.zeroPoint = zps
    elif kind == "two more":
        q.zeroPoint = list(q.zeroPoint or []) + [0, 0]
    else:
        q.zeroPoint = None
    return kind


def _m_quantized_dimension(m, fb, r):
    t = _quantized(m, r)
    if t is None:
        return None
    t.quantization.quantizedDimension = r.choice((-1, 1, 2, 3, 4, 100, -INT32_MAX))
    return "quantized dimension"


def _m_dtype(m, fb, r):
    t = r.choice(_sub(m).tensors)
    t.type = r.choice((0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 17, 21, 30, 100, 127, -1, -128))
    return f"type {t.type}"


_OPTION_FIELDS = {"strideW", "strideH", "dilationWFactor", "dilationHFactor", "depthMultiplier", "filterWidth",
                  "filterHeight"}


def _m_options(m, fb, r):
    with_options = [o for o in _sub(m).operators if o.builtinOptions is not None]
    kind = r.choice(("field", "field", "field", "dropped", "another op's table")) if with_options else "another op's table"
    if kind == "another op's table":
        o = r.choice(_sub(m).operators)
        table = r.choice(("Conv2DOptions", "Pool2DOptions", "AddOptions", "ReshapeOptions", "SoftmaxOptions",
                          "FullyConnectedOptions", "ConcatenationOptions"))
        o.builtinOptionsType, o.builtinOptions = getattr(fb.BuiltinOptions, table), getattr(fb, f"{table}T")()
        return f"{table} table"
    o = r.choice(with_options)
    if kind == "dropped":
        o.builtinOptionsType, o.builtinOptions = 0, None
        return kind
    opt = o.builtinOptions
    names = sorted(set(vars(opt)) & (_OPTION_FIELDS | {"padding", "fusedActivationFunction", "beta", "newShape",
                                                         "keepNumDims", "keepDims"}))
    if not names:
        return None
    f = r.choice(names)
    if f in _OPTION_FIELDS:
        value = r.choice(BAD_INTS)
    elif f in ("padding", "fusedActivationFunction"):
        value = r.choice((2, 3, 4, 5, 6, 7, 100, 127, -1))
    elif f == "beta":
        value = r.choice(BAD_FLOATS)
    elif f == "newShape":
        value = r.choice(([], [-1], [-1, -1], [0], [INT32_MAX], [1, 2, 3, 4, 5, 6]))
    else:
        value = not getattr(opt, f)
    setattr(opt, f, value)
    return f"{f} = {value}"


def _m_cycle(m, fb, r):
    sub = _sub(m)
    ops = sub.operators
    o = r.choice(ops)
    kind = r.choice(("reads its own output", "reads a later output", "reversed order", "written twice",
                     "writes a graph input", "writes a constant"))
    if kind == "reads its own output":
        o.inputs[0] = o.outputs[0]
    elif kind == "reads a later output":
        if len(ops) < 2:
            return None
        i = r.randrange(len(ops) - 1)
        ops[i].inputs[0] = ops[r.randrange(i + 1, len(ops))].outputs[0]
    elif kind == "reversed order":
        if len(ops) < 2:
            return None
        ops.reverse()
    elif kind == "written twice":
        ops.insert(r.randrange(len(ops) + 1), copy.deepcopy(o))
    elif kind == "writes a graph input":
        o.outputs[0] = sub.inputs[0]
    else:
        if not _consts(m):
            return None
        o.outputs[0] = r.choice(_consts(m))
    return kind


def _m_subgraphs(m, fb, r):
    kind = r.choice(("none", "one empty", "an empty one first", "two", "no operators", "no tensors",
                     "no operator codes"))
    sub = _sub(m)
    if kind == "none":
        m.subgraphs = r.choice((None, []))
    elif kind == "one empty":
        m.subgraphs = [fb.SubGraphT()]
    elif kind == "an empty one first":
        m.subgraphs = [fb.SubGraphT(), sub]
    elif kind == "two":
        m.subgraphs = [sub, copy.deepcopy(sub)]
    elif kind == "no operators":
        sub.operators = r.choice((None, []))
    elif kind == "no tensors":
        sub.tensors = None
    else:
        m.operatorCodes = r.choice((None, []))
    return kind


STRUCTURED_MUTATORS = {"shape": _m_shape, "buffer index": _m_buffer, "buffer data": _m_buffer_data,
                       "opcode": _m_opcode, "tensor index": _m_tensor_index, "graph io": _m_io, "scale": _m_scale,
                       "zero point": _m_zero_point, "quantized dimension": _m_quantized_dimension,
                       "dtype": _m_dtype, "options": _m_options, "cycle": _m_cycle, "subgraphs": _m_subgraphs}
MUTATION_CLASSES = (*BYTE_MUTATORS, *STRUCTURED_MUTATORS)


def _editable(m):
    """The object API tree with its read-only numpy vectors as lists (mutators edit them in place)."""
    def as_list(v):
        return None if v is None else [x.item() if hasattr(x, "item") else x for x in v]

    for sub in m.subgraphs or []:
        sub.inputs, sub.outputs = as_list(sub.inputs), as_list(sub.outputs)
        for o in sub.operators or []:
            o.inputs, o.outputs = as_list(o.inputs), as_list(o.outputs)
        for t in sub.tensors or []:
            t.shape = as_list(t.shape)
            if t.quantization is not None:
                t.quantization.scale, t.quantization.zeroPoint = (as_list(t.quantization.scale),
                                                                  as_list(t.quantization.zeroPoint))
    for b in m.buffers or []:
        b.data = None if b.data is None else np.array(b.data, np.uint8)
    return m


def _structured(blob: bytes, mutate, r: random.Random) -> tuple[bytes | None, str | None]:
    import flatbuffers
    from tinyqml.classical.tflite_builder import schema

    fb = schema()
    m = _editable(fb.ModelT.InitFromPackedBuf(blob, 0))
    what = mutate(m, fb, r)
    if what is None:
        return None, None
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), what


def mutants(seeds: dict[str, bytes], cls: str, n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` mutants of class ``cls``: (label, blob); mutant ``k`` comes from ``random.Random(f"{seed}/{cls}/{k}")``
    alone (a mutation that does not apply to the seed drawn, or changes nothing, is drawn again)."""
    names = sorted(seeds)
    out = []
    for k in range(n):
        r = random.Random(f"{seed}/{cls}/{k}")
        for _ in range(50):
            name = r.choice(names)
            if cls in BYTE_MUTATORS:
                blob, what = BYTE_MUTATORS[cls](seeds[name], r), cls
            else:
                blob, what = _structured(seeds[name], STRUCTURED_MUTATORS[cls], r)
            if blob is not None and blob != seeds[name]:
                out.append((f"{cls} ({what}) of {name}, case {k}", blob))
                break
        else:
            raise AssertionError(f"no {cls} mutant of any seed after 50 draws (case {k})")
    return out


def deadline(seconds: float = DEADLINE_S):
    """:func:`testkit.time_limit` with this file's limit per mutant."""
    return time_limit(seconds)


_GENERIC = re.compile(r"malformed TFLite model: [A-Za-z]*Error:")


def probe(label: str, run, failures: list[str]) -> str:
    """``run()`` under the deadline and tracemalloc: its outcome (``accepted`` or ``refused: <error class>``);
    anything else (another exception, the deadline, a peak above PEAK_BYTES) is appended to ``failures``."""
    tracemalloc.reset_peak()
    try:
        with deadline():
            run()
        outcome = "accepted"
    except CompressionError as exc:
        outcome = f"refused: {type(exc).__name__}"
        message = str(exc)
        if not message.strip():
            failures.append(f"{label}: {type(exc).__name__} without a message")
        if _GENERIC.search(message) and not label.startswith(tuple(BYTE_MUTATORS)):
            failures.append(f"{label}: only the reader's generic fallback named it: {message[:200]}")
    except TimeLimitExceeded as exc:
        failures.append(f"{label}: {exc}")
        outcome = "deadline"
    except Exception as exc:  # what the fuzzing looks for: an error that is not tinyqml's
        failures.append(f"{label}: {type(exc).__name__} leaked: {exc!s:.200} "
                        f"({traceback.extract_tb(exc.__traceback__)[-1].filename.rsplit('/', 1)[-1]}:"
                        f"{traceback.extract_tb(exc.__traceback__)[-1].lineno})")
        outcome = "leaked"
    peak = tracemalloc.get_traced_memory()[1]
    if peak > PEAK_BYTES:
        failures.append(f"{label}: allocated {peak / 2 ** 20:.0f} MiB at the peak")
    return outcome


@contextlib.contextmanager
def traced_memory():
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


def _loader(blob: bytes) -> None:
    check_supported(read_tflite(blob))


@pytest.fixture(scope="module")
def seeds(exported):
    q, blob = exported
    return fuzz_seeds({"exported_cnn": blob, "exported_cnn_float_io": to_tflite(q, TFLiteOptions(float_io=True))})


def test_fuzz_seeds_are_valid(seeds) -> None:
    for name, blob in seeds.items():
        assert check_supported(read_tflite(blob)).operators, name


def test_fuzz_loader_raises_only_named_errors(seeds, record_property) -> None:
    """60 mutants of each of the 19 classes (1,140) through read_tflite and check_supported."""
    failures: list[str] = []
    counts: Counter = Counter()
    with traced_memory():
        for cls in MUTATION_CLASSES:
            for label, blob in mutants(seeds, cls, 60, seed=1):
                counts[cls, probe(label, lambda: _loader(blob), failures)] += 1
    record_property("loader_fuzz_counts", dict(sorted(counts.items())))
    assert sum(counts.values()) == 60 * len(MUTATION_CLASSES) >= 1000
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])
    for cls in MUTATION_CLASSES:  # every class gets refused somewhere: the mutations do bite
        assert any(outcome.startswith("refused") for (c, outcome), k in counts.items() if c == cls), cls
