"""The batch verifier (tinyqml.classical.verify): its program reports wrong returns and writes outside the
output, its parser refuses malformed output, mismatches land in the report with per-group counts, and
programs split as asked; the sanitizer sweep: every operator's C under ASan + UBSan on the int8 and float
extremes, equal to the plain build and to TFLite Micro (skipped without gcc unless TINYQML_REQUIRE_MCU_TOOLS
is set). The big runs (>= 1,000 cases, fixtures, QEMU) are in test_codegen.py."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import tinyqml.classical.verify as verify
from tinyqml.classical.codegen import Kernel, dw_inplace_safe, generate, lower
from tinyqml.classical.errors import CompressionError
from tinyqml.classical.mcu import (
    SANITIZE_FLAGS,
    CortexM4Build,
    HostBuild,
    McuError,
    RunError,
    compile_host,
    run_harness,
    run_host,
    sanitizer_report,
    tools_available,
)
from tinyqml.classical.tflite_builder import (
    FusedActivation,
    Op,
    Padding,
    Quant,
    SingleOpCase,
    TFLiteBuilder,
    verification_cases,
)
from tinyqml.classical.verify import (
    BatchEntry,
    VerifyModel,
    batch_main,
    cases_to_models,
    model_io,
    parse_batch_output,
    random_samples,
    tflm_outputs,
    verify_models,
)

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

#: hand-written "models" following the generated API: one writes past its output, one before it, one
#: returns an error, one copies its input (int8), one scales floats (float in, float out)
_FAKES = {
    "past": ("out[3] = 1; out[0] = in[0]; out[1] = in[1]; out[2] = in[2];", 4, 3, False),
    "before": ("out[-1] = 5; out[0] = in[0]; out[1] = in[1]; out[2] = in[2];", 4, 3, False),
    "fails": ("(void)in; (void)out; return 7;", 4, 3, False),
    "good": ("out[0] = in[3]; out[1] = in[2]; out[2] = (int8_t)(in[1] + in[0]);", 4, 3, False),
}


def _fake_model(where: Path, prefix: str, body: str, n_in: int, n_out: int) -> None:
    P = prefix.upper()
    (where / prefix).mkdir(parents=True)
    (where / prefix / "model.h").write_text(
        f"#ifndef {P}_MODEL_H\n#define {P}_MODEL_H\n#include <stdint.h>\n#define {P}_INPUT_SIZE {n_in}\n"
        f"#define {P}_OUTPUT_SIZE {n_out}\nint {prefix}_invoke(const int8_t *input, int8_t *output);\n#endif\n")
    (where / prefix / "model.c").write_text(
        f'#include "model.h"\nint {prefix}_invoke(const int8_t *in, int8_t *out)\n{{\n    {body}\n    return 0;\n}}\n')


def _float_model(where: Path, prefix: str) -> None:
    P = prefix.upper()
    (where / prefix).mkdir(parents=True)
    (where / prefix / "model.h").write_text(
        f"#include <stdint.h>\n#define {P}_INPUT_SIZE 2\n#define {P}_OUTPUT_SIZE 2\n"
        f"int {prefix}_invoke_f32(const float *input, float *output);\n")
    (where / prefix / "model.c").write_text(
        f'#include "model.h"\nint {prefix}_invoke_f32(const float *in, float *out)\n'
        "{\n    out[0] = in[0] * 2.0f;\n    out[1] = -in[1];\n    return 0;\n}\n")


@needs_gcc
def test_program_reports_bad_returns_and_writes_outside_the_output(tmp_path: Path) -> None:
    entries, sources = [], []
    inputs = np.array([[1, 2, 3, 4], [-128, 127, 0, -1]], dtype=np.int8)
    for k, (name, (body, n_in, n_out, _)) in enumerate(_FAKES.items()):
        _fake_model(tmp_path, name, body, n_in, n_out)
        entries.append(BatchEntry(k, name, f"{name}/model.h", n_in, n_out, False, False, inputs))
        sources.append(tmp_path / name / "model.c")
    _float_model(tmp_path, "flt")
    xf = np.array([[1.5, -0.0], [3.0e-39, 2.0]], dtype=np.float32)  # a subnormal and a negative zero
    entries.append(BatchEntry(4, "flt", "flt/model.h", 2, 2, True, True, xf.view(np.uint32)))
    sources.append(tmp_path / "flt" / "model.c")
    (tmp_path / "main.c").write_text(batch_main(entries))
    exe = compile_host([tmp_path / "main.c", *sources], [], tmp_path / "a.out")
    got = parse_batch_output(run_host(exe), [(2, 3, False)] * 4 + [(2, 2, True)])
    assert got[0] == "sample 0: wrote outside its output"
    assert got[1] == "sample 0: wrote outside its output"
    assert got[2] == "sample 0: returned 7"
    np.testing.assert_array_equal(got[3], [[4, 3, 3], [-1, 0, -1]])
    expected = (xf * np.float32([2.0, -1.0])).astype(np.float32)
    np.testing.assert_array_equal(got[4], expected.view(np.uint32))  # bit for bit: the subnormal, +0.0
    assert got[4].dtype == np.uint32 and not np.signbit(got[4].view(np.float32)[0, 1])
    main = (tmp_path / "main.c").read_text()
    assert "#error" in main and "flt_invoke_f32(tq_inf, tq_outf)" in main and "good_invoke(good_in[i], tq_out8)" in main


def test_parser_refuses_malformed_output() -> None:
    ok = "tq-out 0 0: 1 2\ntq-out 0 1: -3 4\ntq-done 1\n"
    np.testing.assert_array_equal(parse_batch_output(ok, [(2, 2, False)])[0], [[1, 2], [-3, 4]])
    assert parse_batch_output("tq-out 7 0: 3f800000\ntq-done 1\n", [(1, 1, True)], first=7)[0].tolist() == \
        [[0x3F800000]]
    assert parse_batch_output("tq-error 0 1 returned 2\ntq-done 1\n", [(2, 2, False)]) == ["sample 1: returned 2"]
    bad = {
        "tq-out 0 0: 1 2\ntq-out 0 1: 3 4\n": "without 'tq-done 1'",
        "tq-out 0 0: 1 2\ntq-out 0 0: 1 2\ntq-out 0 1: 3 4\ntq-done 1\n": "printed twice",
        "tq-out 0 0: 1 2\ntq-done 1\n": "no output of model 0 sample 1",
        "tq-out 0 0: 1 2 3\ntq-out 0 1: 3 4\ntq-done 1\n": "3 values, expected 2",
        "tq-out 0 0: 1 200\ntq-out 0 1: 3 4\ntq-done 1\n": "outside int8",
        "tq-out 0 0: 1 2\ntq-out 0 1: 3 4\ntq-out 5 0: 1 1\ntq-done 1\n": "unknown models",
    }
    for text, match in bad.items():
        with pytest.raises(RunError, match=match):
            parse_batch_output(text, [(2, 2, False)])


def test_models_samples_and_references() -> None:
    cases = verification_cases(14, seed=9)
    models = cases_to_models(cases, n_samples=3, seed=10)
    again = cases_to_models(cases, n_samples=3, seed=10)
    assert [m.group for m in models] == [op.name for op in Op]
    for a, b, case in zip(models, again, cases):  # seeded: the same samples twice, in the models' shapes
        assert len(a.samples) == 3 and a.description == case.description
        for sa, sb in zip(a.samples, b.samples):
            assert all(np.array_equal(x, y) for x, y in zip(sa, sb))
            assert [x.shape for x in sa] == [tuple(s) for s in case.input_shapes]
    quantize = models[[op.name for op in Op].index("QUANTIZE")]
    assert quantize.samples[0][0].dtype == np.float32 and tflm_outputs(quantize).dtype == np.int8
    dequantize = models[[op.name for op in Op].index("DEQUANTIZE")]
    assert tflm_outputs(dequantize).dtype == np.uint32  # float32 outputs compared as bits
    ins, outs = model_io(dequantize.blob)
    assert ins[0][1] == np.int8 and outs[0][1] == np.float32
    samples = random_samples(quantize.blob, np.random.default_rng(0), 5, float_range=(-2.0, 2.0))
    assert len(samples) == 5 and samples[0][0].dtype == np.float32 and np.abs(samples[0][0]).max() <= 2
    with pytest.raises(CompressionError, match="at least one sample"):
        VerifyModel(quantize.blob, ())


@needs_gcc
def test_mismatches_are_reported_with_per_group_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = cases_to_models(verification_cases(14, seed=21), n_samples=2, seed=22)
    real = verify.tflm_outputs

    def tampered(model: VerifyModel) -> np.ndarray:
        out = real(model).copy()
        if model.group == "CONV_2D":
            out[1, 0] ^= 1  # one value of the second sample
        return out

    monkeypatch.setattr(verify, "tflm_outputs", tampered)
    report = verify_models(models, tmp_path, per_program=5)
    assert len(report.programs) == 3 and [o.index for o in report.outcomes] == list(range(14))
    assert [o.prefix for o in report.outcomes[:2]] == ["m0000", "m0001"]
    assert not report.ok and [o.model.group for o in report.failures] == ["CONV_2D"]
    assert report.failures[0].differing == 1
    counts = report.counts()
    assert counts["CONV_2D"] == (0, 1) and counts["MAX_POOL_2D"] == (1, 1) and len(counts) == 14
    text = report.failure_report()
    assert "13 of 14 models bit-exact" in text and "CONV_2D 0/1" in text
    assert "1 of" in text and report.failures[0].model.description in text
    assert report.sizes == (None, None, None) and report.samples == 28


def test_argument_errors(tmp_path: Path) -> None:
    models = cases_to_models(verification_cases(1, seed=0), n_samples=1)
    with pytest.raises(CompressionError, match="unknown target"):
        verify_models(models, tmp_path, target="riscv")  # type: ignore[arg-type]
    with pytest.raises(CompressionError, match="takes a HostBuild"):
        verify_models(models, tmp_path, build=CortexM4Build())
    with pytest.raises(CompressionError, match="at least one model"):
        verify_models([], tmp_path)
    with pytest.raises(CompressionError, match="per_program"):
        verify_models(models, tmp_path, per_program=0)


# -- the sanitizer sweep: every operator's C under ASan + UBSan, on the input extremes -----------------------

_REQUIRE_TOOLS = bool(os.environ.get("TINYQML_REQUIRE_MCU_TOOLS"))
_SANITIZER_PACKAGES = "libasan8 and libubsan1 (dependencies of gcc-12 through libgcc-12-dev)"


def _skip_or_fail(reason: str) -> None:
    """Skip, or fail when TINYQML_REQUIRE_MCU_TOOLS is set (CI must not skip silently)."""
    if _REQUIRE_TOOLS:
        pytest.fail(f"{reason} (TINYQML_REQUIRE_MCU_TOOLS is set)")
    pytest.skip(f"{reason} (`make mcu-tools`; set TINYQML_REQUIRE_MCU_TOOLS to fail instead)")


@pytest.fixture(scope="module")
def sanitized_gcc(tmp_path_factory: pytest.TempPathFactory) -> HostBuild:
    """A HostBuild with ASan + UBSan once gcc links a sanitized program here; else skip (or fail)."""
    if not tools_available()["gcc"]:
        _skip_or_fail("needs gcc for the sanitized host builds")
    where = tmp_path_factory.mktemp("probe")
    (where / "probe.c").write_text("int main(void) { return 0; }\n")
    build = HostBuild(sanitize=True)
    try:
        run_host(compile_host([where / "probe.c"], [], where / "probe", build))
    except McuError as exc:
        _skip_or_fail(f"gcc cannot build with {' '.join(SANITIZE_FLAGS)}: install {_SANITIZER_PACKAGES}: {exc}")
    return build


_WINDOW = re.compile(r"^(k|s|d|f)=(\d+)x(\d+)$")


def _features(case: SingleOpCase) -> set[tuple[str, str]]:
    """(operator, variant) pairs a case's description names: window sizes, strides and dilations per axis,
    padding, fused activation, depth multiplier, bias / weight kinds, scale kinds, input rank, the input
    zero point's class (-128, 127, 0 or other), MEAN's keep_dims and scales, RESHAPE's option, SOFTMAX's beta."""
    out = set()
    for tok in case.description.split()[1:]:
        key, eq, val = tok.partition("=")
        if (m := _WINDOW.match(tok)) is not None:
            out |= {f"{m[1]}_h={m[2]}", f"{m[1]}_w={m[3]}"}
        elif not eq:
            if re.fullmatch(r"[A-Z][A-Z0-9_]*", tok) or tok in ("same", "different"):
                out.add(tok)
        elif key in ("mult", "bias", "weights", "keep_dims", "new_shape_option"):
            out.add(tok)
        elif key == "scales" and val.replace("-", "").isalpha():
            out.add(tok)
        elif key == "zp":
            z = int(val.split("/")[0])
            out.add(f"zp_in={z if z in (-128, 127, 0) else 'other'}")
        elif key in ("in", "a"):
            out.add(f"rank={len(val.split('x'))}")
        elif key == "beta":
            out.add("beta=1" if float(val) == 1.0 else "beta!=1")
    return {(case.op.name, f) for f in out}


def _covering_cases(pool: list[SingleOpCase], min_per_op: int = 2) -> list[SingleOpCase]:
    """A subset of ``pool`` naming every variant any case of the pool names (greedy set cover, ties to the
    first case), and at least ``min_per_op`` cases of each operator."""
    feats = [_features(c) for c in pool]
    left, chosen = set().union(*feats), []
    while left:
        best = max(range(len(pool)), key=lambda j: (len(feats[j] & left), -j))
        chosen.append(best)
        left -= feats[best]
    per_op = Counter(pool[i].op for i in chosen)
    for j, case in enumerate(pool):
        if j not in chosen and per_op[case.op] < min_per_op:
            chosen.append(j)
            per_op[case.op] += 1
    return [pool[i] for i in sorted(chosen)]


#: variants the sweep must reach (the pool is seeded, so a change of tflite_builder that stops drawing one fails)
_REQUIRED = {(op, f) for op in ("CONV_2D", "DEPTHWISE_CONV_2D") for f in (
    "SAME", "VALID", "NONE", "RELU", "RELU6", "s_h=2", "s_w=3", "d_h=2", "d_w=2", "k_h=1", "k_w=5",
    "zp_in=-128", "zp_in=127", "scales=wide", "scales=round-up")} | {
    ("DEPTHWISE_CONV_2D", "mult=1"), ("DEPTHWISE_CONV_2D", "mult=2"), ("DEPTHWISE_CONV_2D", "mult=3"),
    ("FULLY_CONNECTED", "bias=False"), ("FULLY_CONNECTED", "weights=per-tensor"),
    ("FULLY_CONNECTED", "weights=per-channel"), ("FULLY_CONNECTED", "rank=4"),
    ("AVERAGE_POOL_2D", "SAME"), ("AVERAGE_POOL_2D", "s_h=3"), ("MAX_POOL_2D", "SAME"), ("MAX_POOL_2D", "RELU6"),
    ("MEAN", "keep_dims=True"), ("MEAN", "keep_dims=False"), ("MEAN", "same"), ("MEAN", "different"),
    ("RESHAPE", "new_shape_option=True"), ("RESHAPE", "new_shape_option=False"), ("SOFTMAX", "beta!=1"),
    ("ADD", "rank=1"), ("MUL", "rank=4"), ("PAD", "rank=3"), ("LOGISTIC", "zp_in=127"), ("QUANTIZE", "zp_in=-128")}


def _int8_extremes(shape: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    """All-zero, all -128, all 127, -128 / 127 alternating (both phases), a random mix of -128 / 0 / 127,
    and two uniform draws over [-128, 127]."""
    n = int(np.prod(shape))
    alt = np.where(np.arange(n) % 2 == 0, -128, 127).astype(np.int8)
    rows = [np.zeros(n, np.int8), np.full(n, -128, np.int8), np.full(n, 127, np.int8), alt, (-1 - alt).astype(np.int8),
            rng.choice(np.array([-128, 0, 127], np.int8), size=n), rng.integers(-128, 128, n, dtype=np.int8),
            rng.integers(-128, 128, n, dtype=np.int8)]
    return [r.reshape(shape) for r in rows]


def _float_extremes(shape: tuple[int, ...], scale: float, zp: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Float32 inputs of a QUANTIZE edge: +0.0, -0.0, a subnormal, the reals of -128 and 127, 1000 steps beyond
    each (saturating), -128 / 127 alternating, rounding ties, and uniform draws over 1.25 times the range."""
    n = int(np.prod(shape))
    s = float(np.float32(scale))
    lo, hi = (-128 - zp) * s, (127 - zp) * s
    rows = [np.zeros(n), np.full(n, -0.0), np.full(n, 1e-40), np.full(n, lo), np.full(n, hi),
            np.full(n, lo - 1000 * s), np.full(n, hi + 1000 * s), np.where(np.arange(n) % 2 == 0, lo, hi),
            (rng.integers(-129 - zp, 128 - zp, n) + 0.5) * s, rng.uniform(1.25 * lo, 1.25 * hi, n)]
    return [r.astype(np.float32).reshape(shape) for r in rows]


def _extreme_samples(blob: bytes, rng: np.random.Generator) -> tuple[tuple[np.ndarray, ...], ...]:
    ins, _ = model_io(blob)
    program = lower(blob)
    per_input = []
    for k, (shape, dtype) in enumerate(ins):
        if dtype == np.int8:
            per_input.append(_int8_extremes(shape, rng))
        else:  # the int8 tensor after the QUANTIZE edge gives the scale and zero point
            q = program.model.tensors[program.inputs[k]]
            per_input.append(_float_extremes(shape, q.scale, q.zero_point, rng))
    n = max(len(p) for p in per_input)
    return tuple(tuple(p[i % len(p)] for p in per_input) for i in range(n))


def _models(cases: list[SingleOpCase], group: str | None, seed: int) -> list[VerifyModel]:
    return [VerifyModel(c.blob, _extreme_samples(c.blob, np.random.default_rng([seed, i])),
                        group or c.op.name + ("/broadcast" if len(set(c.input_shapes)) > 1 else ""), c.description)
            for i, c in enumerate(cases)]


def _out_extent(n: int, eff: int, stride: int, padding: Padding) -> int:
    return -(-n // stride) if padding == Padding.SAME else (n - eff) // stride + 1


def _dw_chain(rng: np.random.Generator, tail: str) -> SingleOpCase:
    """QUANTIZE (int8 -> int8) -> DEPTHWISE_CONV_2D -> LOGISTIC | SOFTMAX | ADD (of the depthwise output with
    itself) -> QUANTIZE: the depthwise input and output and the tail's are arena tensors, so the planner may
    run the depthwise (when ``dw_inplace_safe``) and the tail in place."""
    square = rng.random() < 0.7
    kh = int(rng.integers(1, 5))
    kw = kh if square else int(rng.integers(1, 5))
    stride, dil = int(rng.integers(1, 3)), 2 if rng.random() < 0.15 else 1
    pad = Padding(int(rng.integers(2)))
    h = int(rng.integers((kh - 1) * dil + 2, 12))
    w = int(rng.integers((kw - 1) * dil + 1, 10))
    c, mult = int(rng.integers(1, 9)), 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    o = c * mult
    oh, ow = _out_extent(h, (kh - 1) * dil + 1, stride, pad), _out_extent(w, (kw - 1) * dil + 1, stride, pad)
    zx, z1, z2, z3, zy = (int(rng.choice([-128, 127, 0, int(rng.integers(-128, 128))])) for _ in range(5))
    s1 = float(np.float32(10 ** rng.uniform(-2.5, -0.5)))
    s_w = np.float32(10 ** rng.uniform(-3, -1.5, size=o))
    s2 = float(np.float32(s1 * float(s_w.mean()) * 80 * kh * kw * 10 ** rng.uniform(-0.5, 0.5)))
    b = TFLiteBuilder("depthwise chain")
    x = b.tensor("x", (1, h, w, c), quant=Quant.per_tensor(float(np.float32(10 ** rng.uniform(-2.5, -0.5))), zx))
    t1 = b.tensor("t1", (1, h, w, c), quant=Quant.per_tensor(s1, z1))
    wt = b.constant("w", rng.integers(-127, 128, size=(1, kh, kw, o)).astype(np.int8), Quant.per_channel(s_w, 3))
    bias = np.round(rng.normal(0, 2000, size=o)).astype(np.int32)
    bi = b.constant("b", bias, Quant.per_channel(np.float32(s1 * s_w.astype(np.float64)), 0))
    t2 = b.tensor("t2", (1, oh, ow, o), quant=Quant.per_tensor(s2, z2))
    act = FusedActivation(int(rng.choice([0, 1, 3])))
    b.op(Op.QUANTIZE, [x], [t1])
    b.op(Op.DEPTHWISE_CONV_2D, [t1, wt, bi], [t2], padding=pad, strideH=stride, strideW=stride, dilationHFactor=dil,
         dilationWFactor=dil, depthMultiplier=mult, fusedActivationFunction=act)
    if tail == "ADD":
        t3 = b.tensor("t3", (1, oh, ow, o), quant=Quant.per_tensor(s2 * 1.5, z3))
        b.op(Op.ADD, [t2, t2], [t3], fusedActivationFunction=FusedActivation.NONE)
    else:
        t3 = b.tensor("t3", (1, oh, ow, o), quant=Quant.per_tensor(1.0 / 256.0, -128))
        if tail == "SOFTMAX":
            b.op(Op.SOFTMAX, [t2], [t3], beta=1.0)
        else:
            b.op(Op.LOGISTIC, [t2], [t3])
    y = b.tensor("y", (1, oh, ow, o), quant=Quant.per_tensor(float(np.float32(10 ** rng.uniform(-3, -1))), zy))
    b.op(Op.QUANTIZE, [t3], [y])
    desc = (f"QUANTIZE-DEPTHWISE_CONV_2D-{tail}-QUANTIZE in={h}x{w}x{c} k={kh}x{kw} s={stride} d={dil} "
            f"{pad.name} {act.name} mult={mult} zp={zx}/{z1}/{z2}/{z3}/{zy}")
    return SingleOpCase(b.build([x], [y]), ((1, h, w, c),), desc, Op.DEPTHWISE_CONV_2D, ("int8",))


def _big_bias(rng: np.random.Generator, op: Op) -> SingleOpCase:
    """CONV_2D / DEPTHWISE_CONV_2D (3x3 SAME) / FULLY_CONNECTED with int32 biases within 1000 of INT32_MAX or
    INT32_MIN and +-127 weights: the accumulators wrap around (two's complement, as TFLite Micro's do)."""
    s_in, zp = 0.05, int(rng.choice([-128, 127, 0]))
    b = TFLiteBuilder("big bias")
    if op == Op.FULLY_CONNECTED:
        n, o = int(rng.integers(1, 20)), int(rng.integers(1, 9))
        shape_in, shape_out, w_shape, axis = (1, n), (1, o), (o, n), 0
    else:
        h, w, c = (int(v) for v in rng.integers(3, 7, size=3))
        o = c if op == Op.DEPTHWISE_CONV_2D else int(rng.integers(1, 6))
        shape_in, shape_out = (1, h, w, c), (1, h, w, o)
        w_shape, axis = ((1, 3, 3, o), 3) if op == Op.DEPTHWISE_CONV_2D else ((o, 3, 3, c), 0)
    x = b.tensor("x", shape_in, quant=Quant.per_tensor(s_in, zp))
    s_w = np.full(o, 0.01, np.float32)
    wt = b.constant("w", rng.choice(np.array([-127, 127], np.int8), size=w_shape), Quant.per_channel(s_w, axis))
    near = rng.integers(0, 1000, size=o)
    bias = np.where(rng.random(o) < 0.5, 2 ** 31 - 1 - near, -(2 ** 31) + near).astype(np.int32)
    bi = b.constant("b", bias, Quant.per_channel(np.float32(s_in * s_w.astype(np.float64)), 0))
    y = b.tensor("y", shape_out, quant=Quant.per_tensor(float(np.float32(s_in * 0.01 * 2 ** 24)), 0))
    if op == Op.FULLY_CONNECTED:
        b.op(op, [x, wt, bi], [y], fusedActivationFunction=FusedActivation.NONE, keepNumDims=False)
    else:
        extra = {"depthMultiplier": 1} if op == Op.DEPTHWISE_CONV_2D else {}
        b.op(op, [x, wt, bi], [y], padding=Padding.SAME, strideH=1, strideW=1, dilationHFactor=1, dilationWFactor=1,
             fusedActivationFunction=FusedActivation.NONE, **extra)
    desc = f"{op.name} in={'x'.join(map(str, shape_in))} bias={bias.tolist()} zp={zp}"
    return SingleOpCase(b.build([x], [y]), (shape_in,), desc, op, ("int8",))


def _exported_models(seed: int) -> list[VerifyModel]:
    """tinyqml's own exporter: SmallCNN (int8 and float32 edges) and TinyMobileNetV2 (int8), seeded."""
    import torch

    from tinyqml.classical.convert import quantize_model
    from tinyqml.classical.models import MobileNetV2Config, SmallCNN, SmallCNNConfig, TinyMobileNetV2
    from tinyqml.classical.tflite_export import TFLiteOptions, to_tflite

    out = []
    nets = {"SmallCNN": (lambda: SmallCNN(SmallCNNConfig(widths=(8, 16, 16), in_channels=3)), 8, (False, True)),
            "TinyMobileNetV2": (lambda: TinyMobileNetV2(MobileNetV2Config(stem=8, in_channels=3)), 12, (False,))}
    for k, (name, (make, size, edges)) in enumerate(nets.items()):
        torch.manual_seed(seed + k)
        net = make().eval()
        calib = torch.randn(32, 3, size, size, generator=torch.Generator().manual_seed(seed + k))
        qgraph = quantize_model(net, calib).qgraph
        for float_io in edges:
            blob = to_tflite(qgraph, TFLiteOptions(float_io=float_io))
            tag = f"{name}{'/float-io' if float_io else ''}"
            out.append(VerifyModel(blob, _extreme_samples(blob, np.random.default_rng([seed, k, float_io])),
                                   f"exported/{tag}", f"tinyqml export of {tag}"))
    return out


_FIXTURES = Path(__file__).resolve().parent / "fixtures"


_SWEEP_SEED = 7100


@functools.lru_cache(maxsize=1)
def _sweep_singles() -> tuple[SingleOpCase, ...]:
    """The single-operator cases of the sweep: a covering subset of 420 seeded tflite_builder cases."""
    return tuple(_covering_cases(verification_cases(14 * 30, seed=_SWEEP_SEED)))


def _sweep_models(seed: int = _SWEEP_SEED) -> list[VerifyModel]:
    singles = list(_sweep_singles())
    broadcast = [c for c in verification_cases(14 * 5, seed=seed + 1, broadcast=True) if c.op in (Op.ADD, Op.MUL)]
    chains = [_dw_chain(np.random.default_rng([seed + 2, i]), ("LOGISTIC", "SOFTMAX", "ADD")[i % 3]) for i in range(18)]
    big = [_big_bias(np.random.default_rng([seed + 3, i]), op) for i, op in
           enumerate([Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.FULLY_CONNECTED] * 2)]
    fixtures = [VerifyModel(p.read_bytes(), _extreme_samples(p.read_bytes(), np.random.default_rng([seed + 4, k])),
                            f"fixture/{p.stem}", f"TF converter fixture {p.name}")
                for k, p in enumerate(sorted(_FIXTURES.glob("*.tflite")))]
    return (_models(singles, None, seed + 5) + _models(broadcast, None, seed + 6) + _models(chains, "chain", seed + 7)
            + _models(big, "big-bias", seed + 8) + fixtures + _exported_models(seed + 9))


@pytest.mark.slow
def test_every_operator_is_sanitizer_clean_on_input_extremes(sanitized_gcc: HostBuild, tmp_path: Path) -> None:
    """Every supported operator's generated C built with ASan + UBSan (-fno-sanitize-recover=all) and run on
    the int8 extremes (all 0, all -128, all 127, alternating, mixed) and uniform draws, float edges on
    +-0, a subnormal, saturating and tie values: single-operator cases covering every variant the seeded
    pool draws, broadcasting ADD / MUL, depthwise chains planned in place, int32 biases at the limits, the TF
    fixtures and tinyqml's SmallCNN / TinyMobileNetV2 exports. Exit 0, nothing on stderr, and the same
    outputs as the plain build and as TFLite Micro."""
    models = _sweep_models()
    sanitized = verify_models(models, tmp_path / "asan", build=sanitized_gcc, per_program=60)
    plain = verify_models(models, tmp_path / "plain", build=HostBuild(), per_program=60)
    assert sanitized.ok, sanitized.failure_report()
    assert plain.ok, plain.failure_report()
    for a, b in zip(sanitized.outcomes, plain.outcomes):
        assert np.array_equal(a.ours, b.ours), f"{a.describe()}: the sanitized and plain builds differ"
    for exe in sanitized.programs:  # rerun each sanitized program: exit 0 and an empty stderr
        proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stderr == "", sanitizer_report(proc.stderr) or proc.stderr[-2000:]
        assert "tq-done" in proc.stdout

    # what the sweep reached: every kernel, every variant required, the in-place paths, the float edges
    reached = set().union(*(_features(c) for c in _sweep_singles()))
    assert _REQUIRED <= reached, sorted(_REQUIRED - reached)
    steps = [s for o in sanitized.outcomes for s in o.result.program.steps]
    assert {s.kernel for s in steps} == set(Kernel)
    in_place = Counter(layer.op for o in sanitized.outcomes for layer in o.result.layers if layer.in_place)
    assert in_place["DEPTHWISE_CONV_2D"] >= 5 and in_place["ADD"] and in_place["LOGISTIC"] and in_place["SOFTMAX"]
    chains = [o for o in sanitized.outcomes if o.model.group == "chain"]
    safe = [dw_inplace_safe(s.params) for o in chains for s in o.result.program.steps
            if s.kernel is Kernel.DEPTHWISE_CONV_2D]
    assert any(safe) and not all(safe)  # both the ring-buffer kernel in place and the out-of-place one
    mains = "".join((p.parent / "main.c").read_text() for p in sanitized.programs)
    assert "_invoke_f32(tq_inf, tq_outf)" in mains and "_quantize_inputs(" in mains and "_dequantize_outputs(" in mains
    assert sanitized.samples == sum(len(m.samples) for m in models) >= 8 * len(models)
    print(f"{sanitized.summary()}; {len(models)} models, {sanitized.samples} inputs")


def _softmax_rows(x: np.ndarray, scale: float, depth: int) -> np.ndarray:
    """Float softmax of the dequantized rows, quantized to the int8 output (scale 1/256, zero point -128)."""
    z = x.reshape(-1, depth).astype(np.float64) * scale
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.clip(np.round(e / e.sum(axis=1, keepdims=True) * 256.0) - 128, -128, 127).reshape(len(x), -1)


@pytest.mark.slow
def test_wide_softmax_rows_are_sanitizer_clean(sanitized_gcc: HostBuild, tmp_path: Path) -> None:
    """SOFTMAX rows with 512 or more values at their maximum (an all-zero input of a 1000-class head): the
    sum of exponentials reaches 2^28, the final shift passes 31 (undefined in C; TFLite Micro's interpreter
    aborts the process with SIGABRT on such rows, so it is no reference here) and, from 4096 such values, the int32 sum
    overflows. Rows of 1024 and of 8192 values, against the float softmax (within 1, the ties)."""
    scale = 0.05
    b = TFLiteBuilder("wide softmax")
    x = b.tensor("x", (1, 8192), quant=Quant.per_tensor(scale, 0))
    rows = b.tensor("rows", (8, 1024), quant=Quant.per_tensor(scale, 0))
    shape = b.constant("shape", np.array([8, 1024], dtype=np.int32))
    y1 = b.tensor("y1", (8, 1024), quant=Quant.per_tensor(1.0 / 256.0, -128))
    y2 = b.tensor("y2", (1, 8192), quant=Quant.per_tensor(1.0 / 256.0, -128))
    b.op(Op.RESHAPE, [x, shape], [rows], newShape=[8, 1024])
    b.op(Op.SOFTMAX, [rows], [y1], beta=1.0)
    b.op(Op.SOFTMAX, [x], [y2], beta=1.0)
    gen = generate(b.build([x], [y1, y2]), tmp_path / "gen")
    rng = np.random.default_rng(7200)
    mostly_max = np.where(rng.random(8192) < 0.6, 127, rng.integers(-128, 128, 8192)).astype(np.int8)
    inputs = np.stack(_int8_extremes((8192,), rng)[:4] + [mostly_max, rng.integers(-128, 128, 8192, dtype=np.int8)])
    sources = [gen.out_dir / "model.c", gen.out_dir / "tinyqml_rt.c"]
    ours = run_harness(sources, [gen.out_dir], inputs, 2 * 8192, tmp_path / "asan", build=sanitized_gcc).outputs
    plain = run_harness(sources, [gen.out_dir], inputs, 2 * 8192, tmp_path / "plain").outputs
    np.testing.assert_array_equal(ours, plain)
    want = np.concatenate([_softmax_rows(inputs, scale, 1024), _softmax_rows(inputs, scale, 8192)], axis=1)
    assert np.abs(ours.astype(int) - want).max() <= 1
    assert (ours[0] == -128).all()  # 1/1024 and 1/8192 of 256 round to 0


def test_run_host_reports_a_recovered_sanitizer_error(sanitized_gcc: HostBuild, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A UBSan report from a program that recovers and exits 0 (built without -fno-sanitize-recover, run
    with the caller's UBSAN_OPTIONS=halt_on_error=0) still raises RunError."""
    (tmp_path / "over.c").write_text("#include <limits.h>\nint main(void)\n{\n    volatile int big = INT_MAX;\n"
                                     "    int sum = big + 1;\n    return sum == 0;\n}\n")
    recovering = HostBuild(flags=("-std=c99", "-O0", "-fsanitize=undefined"), libs=())  # no -fno-sanitize-recover
    exe = compile_host([tmp_path / "over.c"], [], tmp_path / "over", recovering)
    monkeypatch.setenv("UBSAN_OPTIONS", "halt_on_error=0")
    with pytest.raises(RunError, match="exit status 0 but a sanitizer report on stderr: .*runtime error: signed "
                                      "integer overflow"):
        run_host(exe)
    monkeypatch.setenv("UBSAN_OPTIONS", "halt_on_error=1")
    with pytest.raises(RunError, match="exit status 1"):
        run_host(exe)
    assert sanitizer_report("all good\n") is None
