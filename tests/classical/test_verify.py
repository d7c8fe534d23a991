"""The batch verifier (tinyqml.classical.verify): its program reports wrong returns and writes outside the
output, its parser refuses malformed output, mismatches land in the report with per-group counts, and
programs split as asked. The big runs (>= 1,000 cases, fixtures, sanitizers, QEMU) are in test_codegen.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import tinyqml.classical.verify as verify
from tinyqml.classical.errors import CompressionError
from tinyqml.classical.mcu import CortexM4Build, RunError, compile_host, run_host
from tinyqml.classical.tflite_builder import Op, verification_cases
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
