"""The int8 TFLite builder and its random single-operator models: every case runs on the TFLite Micro
interpreter; the convolutions, pools, PAD, RESHAPE, QUANTIZE and DEQUANTIZE agree with numpy references
(so the cases mean what their descriptions say); the TensorFlow-converter fixtures run on TFLM too."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinyqml.classical.errors import ExportError
from tinyqml.classical.fixedpoint import multiply_by_quantized_multiplier, quantize_multipliers, round_half_away
from tinyqml.classical.tflite_builder import (
    FusedActivation,
    Op,
    Padding,
    Quant,
    SingleOpCase,
    TensorType,
    TFLiteBuilder,
    random_single_op_model,
    schema,
    tflm_reference,
    verification_cases,
)
from tinyqml.classical.tflite_export import operator_names

FIXTURES = Path(__file__).parent / "fixtures"


# -- reading a blob back -------------------------------------------------------------------------------------

def _model(blob: bytes) -> Any:
    fb = schema()
    return fb.ModelT.InitFromObj(fb.Model.GetRootAs(blob, 0))


def _const(model: Any, index: int) -> np.ndarray:
    t = model.subgraphs[0].tensors[index]
    dtype = TensorType(t.type).numpy
    return np.frombuffer(np.asarray(model.buffers[t.buffer].data, dtype=np.uint8).tobytes(),
                         dtype=dtype).reshape(t.shape)


def _q(model: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    qp = model.subgraphs[0].tensors[index].quantization
    return np.asarray(qp.scale, dtype=np.float32), np.asarray(qp.zeroPoint, dtype=np.int64)


@pytest.fixture(scope="module")
def cases() -> list[SingleOpCase]:
    return verification_cases(1200, seed=0)


@pytest.fixture(scope="module")
def outputs(cases: list[SingleOpCase]) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """(inputs, TFLM outputs) of every case."""
    result = []
    for i, case in enumerate(cases):
        xs = case.random_inputs(np.random.default_rng([7, i]))
        result.append((xs, tflm_reference(case, xs)))
    return result


# -- the builder ---------------------------------------------------------------------------------------------

def _small_conv() -> bytes:
    b = TFLiteBuilder("layout")
    x = b.tensor("x", (1, 3, 3, 1), quant=Quant.per_tensor(0.5, 1))
    w = b.constant("w", np.arange(2 * 2 * 2, dtype=np.int8).reshape(2, 2, 2, 1), Quant.per_channel([0.1, 0.2], 0))
    bias = b.constant("b", np.array([3, -4], dtype=np.int32), Quant.per_channel([0.05, 0.1], 0))
    y = b.tensor("y", (1, 2, 2, 2), quant=Quant.per_tensor(0.25, -2))
    b.op(Op.CONV_2D, [x, w, bias], [y], padding=Padding.VALID, strideH=1, strideW=1,
         fusedActivationFunction=FusedActivation.RELU6)
    return b.build([x], [y])


def test_builder_layout() -> None:
    blob = _small_conv()
    m = _model(blob)
    assert blob[4:8] == b"TFL3" and m.version == 3 and m.description == b"layout"
    assert m.buffers[0].data is None  # buffer 0 is the empty one
    code = m.operatorCodes[0]
    assert (code.builtinCode, code.deprecatedBuiltinCode, code.version) == (3, 3, 3)
    op = m.subgraphs[0].operators[0]
    fb = schema()
    assert op.builtinOptionsType == fb.BuiltinOptions.Conv2DOptions
    assert (op.builtinOptions.padding, op.builtinOptions.fusedActivationFunction) == (1, 3)
    np.testing.assert_array_equal(_const(m, 1)[:, :, :, 0], np.arange(8).reshape(2, 2, 2))
    np.testing.assert_array_equal(_const(m, 2), [3, -4])
    assert _q(m, 1)[0].tolist() == pytest.approx([0.1, 0.2]) and m.subgraphs[0].tensors[1].quantization.quantizedDimension == 0
    for t in m.subgraphs[0].tensors[1:3]:  # constants start on 16-byte boundaries of the file
        data = np.asarray(m.buffers[t.buffer].data, dtype=np.uint8).tobytes()
        assert blob.find(data) % 16 == 0


def test_builder_codes_above_127_and_first() -> None:
    b = TFLiteBuilder()
    f = b.tensor("f", (1, 4), TensorType.FLOAT32)
    q = b.tensor("q", (1, 4), quant=Quant.per_tensor(0.1, 0))
    g = b.tensor("g", (1, 4), TensorType.FLOAT32)
    b.op(Op.DEQUANTIZE, [q], [g])
    assert b.op(Op.QUANTIZE, [f], [q], first=True) == 0
    blob = b.build([f], [g])
    codes = [(c.builtinCode, c.deprecatedBuiltinCode) for c in _model(blob).operatorCodes]
    assert codes == [(6, 6), (114, 114)] and operator_names(blob) == ["QUANTIZE", "DEQUANTIZE"]
    x = np.array([[0.04, 0.05, -0.15, 100.0]], dtype=np.float32)
    np.testing.assert_allclose(tflm_reference(blob, [x])[0], [[0.0, 0.1, -0.2, 12.7]], rtol=1e-6)


def test_builder_rejects_bad_arguments() -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), quant=Quant.per_tensor(0.1, 0))
    with pytest.raises(ExportError, match="no option 'stride'"):
        b.op(Op.ADD, [x, x], [x], stride=2)
    with pytest.raises(ExportError, match="QUANTIZE takes no builtin options"):
        b.op(Op.QUANTIZE, [x], [x], beta=1.0)
    with pytest.raises(ExportError, match="must be an Op"):
        b.op("ADD", [x, x], [x])  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="int16"):
        b.constant("c", np.zeros(3, dtype=np.int16))
    with pytest.raises(ExportError, match="must be an Op"):
        random_single_op_model("CONV_2D", np.random.default_rng(0))  # type: ignore[arg-type]


def test_tflm_reference_names_a_refused_model() -> None:
    b = TFLiteBuilder()  # int8 pools need equal input and output parameters: TFLM's prepare fails
    x = b.tensor("x", (1, 2, 2, 1), quant=Quant.per_tensor(0.1, 0))
    y = b.tensor("y", (1, 1, 1, 1), quant=Quant.per_tensor(0.2, 0))
    b.op(Op.MAX_POOL_2D, [x], [y], padding=Padding.VALID, strideH=1, strideW=1, filterHeight=2, filterWidth=2)
    with pytest.raises(ExportError, match="TFLite Micro refused"):
        tflm_reference(b.build([x], [y]), [np.zeros((1, 2, 2, 1), np.int8)])


# -- the random cases ----------------------------------------------------------------------------------------

def test_every_case_runs_on_tflm(cases: list[SingleOpCase], outputs: list) -> None:
    per_op = collections.Counter(c.op for c in cases)
    assert set(per_op) == set(Op) and min(per_op.values()) >= 1200 // len(Op)
    for case, (xs, ys) in zip(cases, outputs):
        m = _model(case.blob)
        sub = m.subgraphs[0]
        assert operator_names(case.blob) == [case.op.name], case.description
        assert [tuple(x.shape) for x in xs] == list(case.input_shapes)
        out = sub.tensors[sub.outputs[0]]
        assert ys[0].shape == tuple(out.shape) and ys[0].dtype == TensorType(out.type).numpy, case.description
        assert sum(int(np.prod(t.shape)) for t in sub.tensors) < 2000, case.description  # tiny models


def test_cases_are_reproducible_and_independent() -> None:
    a, b = verification_cases(30, seed=5), verification_cases(30, seed=5)
    assert [c.blob for c in a] == [c.blob for c in b]
    assert verification_cases(40, seed=5)[:30] == a  # case i depends on (seed, i) only
    assert [c.blob for c in verification_cases(30, seed=6)] != [c.blob for c in a]


def test_broadcasting_add_and_mul_run_on_tflm() -> None:
    rng = np.random.default_rng(11)
    for i in range(60):
        case = random_single_op_model(Op.ADD if i % 2 else Op.MUL, rng, broadcast=True)
        xs = case.random_inputs(rng)
        y = tflm_reference(case, xs)[0]
        assert y.shape == np.broadcast_shapes(*case.input_shapes), case.description


def _multipliers(case: SingleOpCase) -> np.ndarray:
    m = _model(case.blob)
    out = m.subgraphs[0].outputs[0]
    s_in, s_w, s_out = _q(m, 0)[0][0], _q(m, 1)[0], _q(m, out)[0][0]
    return np.float64(s_in) * s_w.astype(np.float64) / np.float64(s_out)


def test_requantization_edge_cases_are_covered(cases: list[SingleOpCase]) -> None:
    convs = [c for c in cases if c.op in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.FULLY_CONNECTED)]
    kinds = collections.Counter(c.description.split("scales=")[1].split()[0] for c in convs)
    assert all(kinds[k] >= 10 for k in ("pow2", "round-up", "wide", "random")), kinds
    m = np.concatenate([_multipliers(c) for c in convs])
    mant, shift = quantize_multipliers(m)
    assert (m > 1).sum() >= 20 and (m < 2.0 ** -32).sum() >= 20  # left shifts, and multipliers flushed to 0
    assert (mant == 1 << 30).sum() >= 50 and shift.min() <= -20  # exact powers of two (and round-ups), deep shifts
    zps = {int(_q(_model(c.blob), 0)[1][0]) for c in convs}
    assert {-128, 127, 0} <= zps and len(zps) > 100
    descs = " ".join(c.description for c in cases)
    for token in ("SAME", "VALID", "RELU6", "RELU", "d=2x2", "s=3x3", "mult=3", "bias=False", "weights=per-channel",
                  "weights=per-tensor", "keep_dims=True", "keep_dims=False", "new_shape_option=False"):
        assert token in descs


# -- numpy references: the cases mean what they say ----------------------------------------------------------

def _act_range(act: int, scale: float, zp: int) -> tuple[int, int]:
    if act == FusedActivation.RELU:
        return max(-128, zp), 127
    if act == FusedActivation.RELU6:
        return max(-128, zp), min(127, zp + int(round_half_away(6.0 / np.float32(scale))))
    return -128, 127


def _same_pads(n: int, eff: int, stride: int) -> tuple[int, int]:
    out = -(-n // stride)
    total = max((out - 1) * stride + eff - n, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, opt: Any, kh: int, kw: int, fill: int) -> np.ndarray:
    """[oh, ow, kh, kw, c] patches of x [1, h, w, c] (dilated; SAME padding filled with ``fill``)."""
    dh, dw = getattr(opt, "dilationHFactor", 1), getattr(opt, "dilationWFactor", 1)
    _, h, w, _ = x.shape
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if opt.padding == Padding.SAME:
        (t, b), (lf, r) = _same_pads(h, eh, opt.strideH), _same_pads(w, ew, opt.strideW)
    else:
        t = b = lf = r = 0
    xp = np.pad(x[0], ((t, b), (lf, r), (0, 0)), constant_values=fill)
    oh, ow = (xp.shape[0] - eh) // opt.strideH + 1, (xp.shape[1] - ew) // opt.strideW + 1
    rows = (np.arange(oh)[:, None] * opt.strideH + np.arange(kh)[None] * dh)
    cols = (np.arange(ow)[:, None] * opt.strideW + np.arange(kw)[None] * dw)
    return xp[rows[:, None, :, None], cols[None, :, None, :]]  # [oh, ow, kh, kw, c]


def _requant(acc: np.ndarray, m: np.ndarray, zp: int, act: tuple[int, int]) -> np.ndarray:
    mant, shift = quantize_multipliers(m)
    y = multiply_by_quantized_multiplier(acc, mant, shift) + zp
    return np.clip(y, *act).astype(np.int8)


def _conv_reference(case: SingleOpCase, x: np.ndarray) -> np.ndarray:
    m = _model(case.blob)
    op = m.subgraphs[0].operators[0]
    opt, w, bias = op.builtinOptions, _const(m, 1).astype(np.int64), _const(m, 2).astype(np.int64)
    (s_in, zp_in), (s_out, zp_out) = (_q(m, 0)[0][0], _q(m, 0)[1][0]), (_q(m, 3)[0][0], int(_q(m, 3)[1][0]))
    kh, kw = w.shape[1:3]
    patches = _windows(x.astype(np.int64), opt, kh, kw, fill=int(zp_in)) - zp_in
    if case.op == Op.CONV_2D:
        acc = np.einsum("abhwc,ohwc->abo", patches, w)
    else:
        mult = opt.depthMultiplier
        acc = np.einsum("abhwc,hwcm->abcm", patches, w[0].reshape(kh, kw, -1, mult)).reshape(*patches.shape[:2], -1)
    act = _act_range(opt.fusedActivationFunction, s_out, zp_out)
    return _requant(acc + bias, _multipliers(case), zp_out, act)[None]


def test_convolutions_match_a_numpy_reference(cases: list[SingleOpCase], outputs: list) -> None:
    checked = 0
    for case, (xs, ys) in zip(cases, outputs):
        if case.op in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D):
            np.testing.assert_array_equal(ys[0], _conv_reference(case, xs[0]), err_msg=case.description)
            checked += 1
    assert checked >= 170


def _fc_reference(case: SingleOpCase, x: np.ndarray) -> np.ndarray:
    m = _model(case.blob)
    op = m.subgraphs[0].operators[0]
    w = _const(m, 1).astype(np.int64)
    bias = _const(m, op.inputs[2]).astype(np.int64) if op.inputs[2] >= 0 else 0
    zp_in, (s_out, zp_out) = _q(m, 0)[1][0], (_q(m, op.outputs[0])[0][0], int(_q(m, op.outputs[0])[1][0]))
    acc = (x.reshape(-1, w.shape[1]).astype(np.int64) - zp_in) @ w.T + bias
    return _requant(acc, _multipliers(case), zp_out, _act_range(op.builtinOptions.fusedActivationFunction, s_out, zp_out))


def _pool_reference(case: SingleOpCase, x: np.ndarray) -> np.ndarray:
    m = _model(case.blob)
    opt = m.subgraphs[0].operators[0].builtinOptions
    scale, zp = _q(m, 0)[0][0], int(_q(m, 0)[1][0])
    lo, hi = _act_range(opt.fusedActivationFunction, scale, zp)
    if case.op == Op.MAX_POOL_2D:
        y = _windows(x.astype(np.int64), opt, opt.filterHeight, opt.filterWidth, fill=-1000).max(axis=(2, 3))
    else:
        p = _windows(x.astype(np.int64), opt, opt.filterHeight, opt.filterWidth, fill=-1000)
        valid = p > -1000
        total, count = np.where(valid, p, 0).sum(axis=(2, 3)), valid.sum(axis=(2, 3))
        y = np.sign(total) * ((np.abs(total) + count // 2) // count)  # rounds half away from zero
    return np.clip(y, lo, hi).astype(np.int8)[None]


def _float_reference(case: SingleOpCase, x: np.ndarray) -> np.ndarray:
    m = _model(case.blob)
    out = m.subgraphs[0].outputs[0]
    if case.op == Op.DEQUANTIZE:
        s, z = _q(m, 0)
        return (np.float32(s[0]) * (x.astype(np.float32) - np.float32(z[0]))).astype(np.float32)
    s, z = _q(m, out)
    return np.clip(round_half_away(x / np.float32(s[0])) + z[0], -128, 127).astype(np.int8)


def _layout_reference(case: SingleOpCase, x: np.ndarray) -> np.ndarray:
    m = _model(case.blob)
    if case.op == Op.RESHAPE:
        return x.reshape(m.subgraphs[0].tensors[2].shape)
    return np.pad(x, _const(m, 1), constant_values=int(_q(m, 0)[1][0]))


_REFERENCES = {Op.FULLY_CONNECTED: _fc_reference, Op.MAX_POOL_2D: _pool_reference,
               Op.AVERAGE_POOL_2D: _pool_reference, Op.QUANTIZE: _float_reference, Op.DEQUANTIZE: _float_reference,
               Op.RESHAPE: _layout_reference, Op.PAD: _layout_reference}


def test_other_operators_match_numpy_references(cases: list[SingleOpCase], outputs: list) -> None:
    checked = collections.Counter()
    for case, (xs, ys) in zip(cases, outputs):
        ref = _REFERENCES.get(case.op)
        if ref is not None:
            np.testing.assert_array_equal(ys[0], ref(case, xs[0]), err_msg=case.description)
            checked[case.op] += 1
    assert set(checked) == set(_REFERENCES) and min(checked.values()) >= 80


def test_quantize_ties_round_away_from_zero() -> None:
    b = TFLiteBuilder()
    f = b.tensor("f", (1, 6), TensorType.FLOAT32)
    q = b.tensor("q", (1, 6), quant=Quant.per_tensor(0.5, 3))
    b.op(Op.QUANTIZE, [f], [q])
    y = tflm_reference(b.build([f], [q]), [np.array([[0.25, -0.25, 0.75, -0.75, 100.0, -100.0]], np.float32)])
    np.testing.assert_array_equal(y[0], [[4, 2, 5, 1, 127, -128]])


# -- TensorFlow converter fixtures --------------------------------------------------------------------------

#: fixture file -> its operators, in execution order (what TensorFlow 2.21's converter emitted; see
#: fixtures/README.md)
FIXTURE_OPS: dict[str, list[str]] = {
    "digits_cnn.tflite": ["CONV_2D", "MAX_POOL_2D", "CONV_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"],
    "digits_cnn_float_io.tflite": ["QUANTIZE", "CONV_2D", "MAX_POOL_2D", "CONV_2D", "RESHAPE", "FULLY_CONNECTED",
                                   "SOFTMAX", "DEQUANTIZE"],
    "dilated_depthwise.tflite": ["PAD", "DEPTHWISE_CONV_2D", "CONV_2D", "AVERAGE_POOL_2D", "LOGISTIC", "MUL",
                                 "RESHAPE", "FULLY_CONNECTED"],
    "mlp.tflite": ["FULLY_CONNECTED", "FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX"],
    "mobilenetv2_style.tflite": ["CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "CONV_2D",
                                 "DEPTHWISE_CONV_2D", "CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD",
                                 "MEAN", "FULLY_CONNECTED"],
}


def test_fixtures_are_listed() -> None:
    on_disk = sorted(p.name for p in FIXTURES.glob("*.tflite"))
    assert on_disk == sorted(FIXTURE_OPS), "run tests/classical/fixtures/make_tf_models.py (see its docstring)"
    readme = (FIXTURES / "README.md").read_text()
    for name, ops in FIXTURE_OPS.items():
        assert f"`{name}`" in readme and ", ".join(ops) in readme


def _fixture_inputs(blob: bytes, rng: np.random.Generator) -> tuple[list[np.ndarray], Any]:
    m = _model(blob)
    sub = m.subgraphs[0]
    t = sub.tensors[sub.inputs[0]]
    if t.type == TensorType.INT8:
        return [rng.integers(-128, 128, size=t.shape, dtype=np.int8)], sub
    return [rng.normal(0.0, 1.0, size=t.shape).astype(np.float32)], sub


@pytest.mark.parametrize("name", sorted(FIXTURE_OPS))
def test_tf_converter_fixture_runs_on_tflm(name: str) -> None:
    blob = (FIXTURES / name).read_bytes()
    assert operator_names(blob) == FIXTURE_OPS[name]
    assert {op for op in FIXTURE_OPS[name]} <= {op.name for op in Op}  # everything the code generator must handle
    rng = np.random.default_rng(0)
    m = _model(blob)
    sub = m.subgraphs[0]
    for t in sub.tensors:  # fully int8 inside: float only at the edges of the float-io model
        assert t.type in (TensorType.INT8, TensorType.INT32) or sub.tensors.index(t) in (*sub.inputs, *sub.outputs)
    outs = set()
    for _ in range(4):
        xs, _ = _fixture_inputs(blob, rng)
        y = tflm_reference(blob, xs)[0]
        out = sub.tensors[sub.outputs[0]]
        assert y.shape == tuple(out.shape) and y.dtype == TensorType(out.type).numpy
        outs.add(y.tobytes())
        if FIXTURE_OPS[name][-1] == "SOFTMAX":  # int8 probabilities: scale 1/256, zero point -128
            assert abs((y.astype(np.int64) + 128).sum() / 256 - 1) < 0.05
    assert len(outs) > 1  # the output depends on the input


def test_tf_converter_conventions() -> None:
    """What TensorFlow's converter writes, that the single-operator cases mirror."""
    m = _model((FIXTURES / "mobilenetv2_style.tflite").read_bytes())
    sub = m.subgraphs[0]
    names = operator_names((FIXTURES / "mobilenetv2_style.tflite").read_bytes())
    for op, name in zip(sub.operators, names):
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = sub.tensors[op.inputs[1]].quantization
            dim = 0 if name == "CONV_2D" else 3
            assert w.quantizedDimension == dim and len(w.scale) == sub.tensors[op.inputs[1]].shape[dim]
            assert not np.any(w.zeroPoint) and sub.tensors[op.inputs[2]].type == TensorType.INT32
        if name == "MEAN":
            assert _const(m, op.inputs[1]).tolist() == [1, 2]
        if name == "FULLY_CONNECTED":  # per-channel weights (not the per-tensor of TFLite's int8 spec page)
            w = sub.tensors[op.inputs[1]]
            assert w.quantization.quantizedDimension == 0 and len(w.quantization.scale) == w.shape[0]
        if name == "RESHAPE":
            assert op.builtinOptions is None and len(op.inputs) == 2  # the new shape only as an int32 tensor
    assert m.buffers[0].data is None
