"""C code generation: the generated C99 compiles cleanly (gcc -Werror, ASan/UBSan, arm-none-eabi) and
its outputs are bit-identical to the TFLite Micro interpreter's, on whole exported models and on
single-operator models written here with the schema's object API (MUL, SOFTMAX, LOGISTIC, MEAN,
depth multipliers, dilation, SAME pooling, broadcasting, PADV2, requantizing QUANTIZE, per-channel FC).

The batched section (tinyqml.classical.verify: many models per program) checks >= 1,000 seeded
tflite_builder cases over every operator, the TensorFlow-converter fixtures (tests/classical/fixtures),
ASan/UBSan builds, and Cortex-M4 builds run under qemu-system-arm (outputs equal to the host build's)."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tinyqml.classical.codegen import (
    RUNTIME_DIR,
    CodegenOptions,
    Kernel,
    Target,
    _Buffer,
    _first_fit,
    generate,
    lower,
)
from tinyqml.classical.convert import quantize_model, to_nhwc
from tinyqml.classical.errors import ExportError
from tinyqml.classical.models import MobileNetV2Config, SmallCNN, SmallCNNConfig, TinyMobileNetV2
from tinyqml.classical.mcu import HostBuild, object_size, tools_available
from tinyqml.classical.tflite_builder import Op, Quant, TensorType, TFLiteBuilder, verification_cases
from tinyqml.classical.tflite_export import TFLiteOptions, TFLMRunner, to_tflite
from tinyqml.classical.tflite_reader import UnsupportedOperatorError
from tinyqml.classical.verify import VerifyModel, cases_to_models, random_samples, verify_models
from testkit import load_test_module

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]
SANITIZE = ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]

MAIN = r"""
#include <stdio.h>
#include "model.h"
/* int8 rows on stdin -> int8 rows on stdout (float rows with TQ_F32) */
int main(void)
{
#ifdef TQ_F32
    static float in[TINYQML_INPUT_SIZE], out[TINYQML_OUTPUT_SIZE];
#else
    static int8_t in[TINYQML_INPUT_SIZE], out[TINYQML_OUTPUT_SIZE];
#endif
    while (fread(in, sizeof in[0], TINYQML_INPUT_SIZE, stdin) == TINYQML_INPUT_SIZE) {
#ifdef TQ_F32
        if (tinyqml_invoke_f32(in, out) != 0) return 3;
#else
        if (tinyqml_invoke(in, out) != 0) return 3;
#endif
        fwrite(out, sizeof out[0], TINYQML_OUTPUT_SIZE, stdout);
    }
    return 0;
}
"""


_RT_OBJECTS: dict[tuple[str, ...], Path] = {}


def _runtime_object(flags: tuple[str, ...], where: Path) -> Path:
    """The runtime compiled once per flag set (the generated copies are identical to the package's)."""
    if flags not in _RT_OBJECTS:
        obj = where.parent / f"tinyqml_rt_{len(_RT_OBJECTS)}.o"
        proc = subprocess.run(["gcc", *FLAGS, *flags, "-c", str(RUNTIME_DIR / "tinyqml_rt.c"), "-o", str(obj)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        _RT_OBJECTS[flags] = obj
    return _RT_OBJECTS[flags]


def _compile(where: Path, flags=(), defines=()) -> Path:
    assert (where / "tinyqml_rt.c").read_bytes() == (RUNTIME_DIR / "tinyqml_rt.c").read_bytes()
    exe = where / "a.out"
    cmd = ["gcc", *FLAGS, *flags, *defines, "-I", str(where), str(where / "main.c"), str(where / "model.c"),
           str(_runtime_object(tuple(flags), where)), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def _build(blob: bytes, where: Path, flags=(), float_io: bool = False, options=CodegenOptions()):
    result = generate(blob, where, options)
    (where / "main.c").write_text(MAIN)
    return result, _compile(where, flags, ["-DTQ_F32"] if float_io else [])


def _run(exe: Path, x: np.ndarray, out_dtype=np.int8) -> np.ndarray:
    proc = subprocess.run([str(exe)], input=np.ascontiguousarray(x).tobytes(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return np.frombuffer(proc.stdout, out_dtype).reshape(len(x), -1)


def _tflm(blob: bytes, *xs: np.ndarray) -> list[np.ndarray]:
    return [o.reshape(len(xs[0]), -1) for o in TFLMRunner(blob).run_all(*xs)]


# -- whole models from tinyqml's exporter ------------------------------------------------------------------

def _randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.3)
    return model.eval()


def _strided() -> nn.Module:
    # 10x10 stride 2 padding 1 needs a PAD op; 5x5 stride 2 padding 1 is SAME
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU6(), nn.Flatten(),
                         nn.Linear(16 * 3 * 3, 10))


MODELS = {
    "cnn": (lambda: SmallCNN(SmallCNNConfig(widths=(8, 16, 16), in_channels=3)), 3, 8),
    "strided": (_strided, 3, 10),
    "mobilenet": (lambda: TinyMobileNetV2(MobileNetV2Config(stem=8, in_channels=3)), 3, 12),
}


def _exported(name: str, float_io: bool = False, n: int = 300) -> tuple[bytes, np.ndarray, np.ndarray]:
    make, c, size = MODELS[name]
    torch.manual_seed(0)
    model = _randomize_bn(make(), 0)
    g = torch.Generator().manual_seed(1)
    calib = torch.randn(64, c, size, size, generator=g)
    q = quantize_model(model, calib).qgraph
    test = torch.randn(n, c, size, size, generator=g) * torch.linspace(0.3, 1.6, n).reshape(-1, 1, 1, 1)
    xf = to_nhwc(test).astype(np.float32)
    return to_tflite(q, TFLiteOptions(float_io=float_io)), q.input.quantize(xf), xf


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(request: pytest.FixtureRequest) -> tuple[str, bytes, np.ndarray]:
    blob, x, _ = _exported(request.param)
    return request.param, blob, x


def test_whole_models_are_bit_exact_with_tflm(exported, tmp_path: Path) -> None:
    name, blob, x = exported
    result, exe = _build(blob, tmp_path)
    ours = _run(exe, x)
    (theirs,) = _tflm(blob, x)
    assert ours.shape == theirs.shape == (len(x), 10)
    assert np.array_equal(ours, theirs), f"{name}: {(ours != theirs).sum()} of {ours.size} outputs differ"
    assert len(np.unique(ours)) > 20  # not saturated
    ops = {s.kernel for s in result.program.steps}
    assert {"cnn": {Kernel.CONV_2D, Kernel.MAX_POOL_2D, Kernel.RESHAPE, Kernel.FULLY_CONNECTED},
            "strided": {Kernel.PAD, Kernel.CONV_2D, Kernel.RESHAPE, Kernel.FULLY_CONNECTED},
            "mobilenet": {Kernel.CONV_2D, Kernel.DEPTHWISE_CONV_2D, Kernel.ADD, Kernel.AVERAGE_POOL_2D}}[name] <= ops


def test_arena_is_planned_smaller_than_tflm_and_reaches_the_bound(exported, tmp_path: Path) -> None:
    name, blob, _ = exported
    result = generate(blob, tmp_path)
    assert result.arena_bytes <= 1.05 * result.placement.lower_bound
    assert result.peak_sram_bytes < TFLMRunner(blob).arena_bytes()
    if name == "mobilenet":  # in-place depthwise only where it saves memory (its ring buffer is scratch)
        plain = generate(blob, tmp_path / "plain", CodegenOptions(inplace=False))
        assert result.arena_bytes + result.scratch_bytes <= plain.arena_bytes + plain.scratch_bytes
    offsets = result.placement.offsets
    lives = result.placement.lifetimes
    m = result.program.model
    for a in offsets:  # no two tensors alive at once overlap, except a granted in-place pair
        for b in offsets:
            if a < b and lives[a][0] <= lives[b][1] and lives[b][0] <= lives[a][1] \
                    and (a, b) not in result.placement.inplace and (b, a) not in result.placement.inplace:
                assert offsets[a] + m.tensors[a].size <= offsets[b] or offsets[b] + m.tensors[b].size <= offsets[a]


def test_header_api_and_report(tmp_path: Path) -> None:
    blob, _, _ = _exported("cnn", n=1)
    result = generate(blob, tmp_path)
    header = (tmp_path / "model.h").read_text()
    assert "int tinyqml_invoke(const int8_t *input, int8_t *output);" in header
    for macro in ("TINYQML_INPUT_SIZE 192", "TINYQML_OUTPUT_SIZE 10", f"TINYQML_ARENA_BYTES {result.arena_bytes}"):
        assert f"#define {macro}" in header
    assert "tinyqml_invoke_f32" not in header
    source = (tmp_path / "model.c").read_text()
    assert "static const int8_t op0_weights[" in source and "malloc" not in source
    report = result.report()
    assert "| 0 | CONV_2D |" in report and "## Arena" in report
    data = result.to_dict()
    assert data["macs"] == sum(layer["macs"] for layer in data["layers"]) > 0
    assert data["flash_bytes"] >= sum(len(np.asarray(s.arrays["weights"])) for s in result.program.steps
                                      if "weights" in s.arrays)
    assert (tmp_path / "report.json").read_text() == result.to_json()
    assert {e["tensor"] for e in data["arena"]} == set(result.placement.offsets)


def test_prefix_and_float_edges_are_bit_exact(tmp_path: Path) -> None:
    blob, _, xf = _exported("cnn", float_io=True, n=200)
    xf = xf * np.float32(1.37)  # off the quantization grid: QUANTIZE rounds
    _, exe = _build(blob, tmp_path / "f", float_io=True)
    ours = _run(exe, xf, np.float32)
    (theirs,) = _tflm(blob, xf)
    assert theirs.dtype == np.float32 and np.array_equal(ours.view(np.int32), theirs.view(np.int32))
    result = generate(blob, tmp_path / "p", CodegenOptions(Target.CORTEX_M4, prefix="digits"))
    header = (tmp_path / "p" / "model.h").read_text()
    assert "int digits_invoke(const int8_t *input, int8_t *output);" in header
    assert "int digits_invoke_f32(const float *input, float *output);" in header
    assert result.float_buffer_bytes == 192 + 10 and "cortex-m4" in (tmp_path / "p" / "model.c").read_text()


@pytest.mark.slow
def test_sanitizers_are_clean(tmp_path: Path) -> None:
    blob, x, _ = _exported("mobilenet", n=40)
    _, exe = _build(blob, tmp_path / "m", SANITIZE)
    assert np.array_equal(_run(exe, x), _tflm(blob, x)[0])
    rng = np.random.default_rng(5)
    for k, blob in enumerate(_single_op_models(rng, 1)[1:]):  # depthwise, FC, pools, ADD/MUL, SOFTMAX, ...
        _check_single_op(blob, rng, tmp_path / f"s{k}", 40, SANITIZE)


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
def test_cortex_m4_cross_compile_is_warning_free(tmp_path: Path) -> None:
    blob, _, _ = _exported("mobilenet", float_io=True, n=1)
    generate(blob, tmp_path, CodegenOptions(Target.CORTEX_M4))
    for src in ("model.c", "tinyqml_rt.c"):
        proc = subprocess.run(["arm-none-eabi-gcc", *FLAGS, "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                               "-mfpu=fpv4-sp-d16", "-I", str(tmp_path), "-c", str(tmp_path / src), "-o",
                               str(tmp_path / (src + ".o"))], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


# -- single-operator models written with the schema's object API ------------------------------------------

class _Builder(TFLiteBuilder):
    """:class:`TFLiteBuilder` with operators named by their schema name (TANH and PADV2 too) and
    tensors named by position."""

    def __init__(self) -> None:
        super().__init__("tinyqml codegen test")
        self.names: dict[str, int] = {}

    def tensor(self, shape, scale=None, zp=0, dtype=9, data=None, qdim=0) -> int:  # type: ignore[override]
        if isinstance(shape, str):  # TFLiteBuilder.constant's own call: (name, shape, dtype, quant)
            return super().tensor(shape, scale, zp, dtype)
        quant = None
        if scale is not None:
            scales = tuple(float(v) for v in np.atleast_1d(np.float32(scale)))
            quant = Quant(scales, tuple(int(z) for z in np.broadcast_to(zp, (len(scales),))), qdim)
        name = f"t{len(self.tensors)}"
        if data is None:
            return super().tensor(name, shape, TensorType(dtype), quant)
        return self.constant(name, np.asarray(data).reshape(shape), quant)

    def op(self, name: str, inputs, outputs, options: str | None = None, **fields) -> int:  # type: ignore[override]
        o = self.fb.OperatorT()
        o.opcodeIndex = self.names.setdefault(name, len(self.names))
        o.inputs, o.outputs = [int(i) for i in inputs], [int(i) for i in outputs]
        if options is not None:
            opt = getattr(self.fb, options + "T")()
            for k, v in fields.items():
                setattr(opt, k, v)
            o.builtinOptionsType, o.builtinOptions = getattr(self.fb.BuiltinOptions, options), opt
        self.operators.append(o)
        return len(self.operators) - 1

    def _operator_codes(self) -> list:
        codes = []
        for name in self.names:
            c = self.fb.OperatorCodeT()
            c.builtinCode = getattr(self.fb.BuiltinOperator, name)
            c.deprecatedBuiltinCode, c.version = min(c.builtinCode, 127), 1
            codes.append(c)
        return codes

    def blob(self, inputs, outputs) -> bytes:
        return self.build(inputs, outputs)


def _scale(rng: np.random.Generator, lo: float = 0.005, hi: float = 0.2) -> float:
    return float(np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def _zp(rng: np.random.Generator) -> int:
    return int(rng.integers(-128, 128)) if rng.random() < 0.7 else int(rng.choice([-128, 0, 127]))


def _act(rng: np.random.Generator) -> int:
    return int(rng.choice([0, 1, 2, 3]))  # NONE, RELU, RELU_N1_TO_1, RELU6


def _conv_like(rng: np.random.Generator, depthwise: bool, bias_mode: str | None = None) -> bytes:
    """A random CONV_2D / DEPTHWISE_CONV_2D; ``bias_mode``: None (a bias 85% of the time, always for depthwise:
    TFLite Micro's DEPTHWISE_CONV_2D crashes without one), "none" (no bias tensor), "zero" (an all-zero
    one); the rng draws are the same whatever ``bias_mode`` says, so "none" and "zero" give twin models."""
    b = _Builder()
    n_in = int(rng.integers(1, 5))
    h, w = int(rng.integers(3, 10)), int(rng.integers(3, 10))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    dh, dw = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if rng.random() < 0.4 else (1, 1)
    padding = int(rng.integers(0, 2))
    if (h - (kh - 1) * dh) < 1 or (w - (kw - 1) * dw) < 1:
        padding = 0  # SAME always has an output
    eff = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    oh, ow = ((-(-s // st)) if padding == 0 else (s - e + st) // st for s, e, st in zip((h, w), eff, (sh, sw)))
    mult = int(rng.integers(1, 4)) if depthwise else 1
    n_out = n_in * mult if depthwise else int(rng.integers(1, 9))
    s_in, s_out = _scale(rng, 0.01, 0.1), _scale(rng, 0.01, 0.2)
    s_w = np.float32(rng.uniform(0.002, 0.02, n_out if rng.random() < 0.8 else 1))
    wshape = (1, kh, kw, n_out) if depthwise else (n_out, kh, kw, n_in)
    wq = rng.integers(-127, 128, wshape).astype(np.int8)
    bias_scale = np.float32(np.float64(s_in) * s_w.astype(np.float64))
    bias = rng.integers(-3000, 3000, n_out).astype(np.int32)
    x = b.tensor((1, h, w, n_in), s_in, _zp(rng))
    wt = b.tensor(wshape, s_w, 0, data=wq, qdim=3 if depthwise else 0)
    with_bias = bool(rng.random() < 0.85) or depthwise
    if bias_mode is not None:
        with_bias = bias_mode == "zero"
        bias = np.zeros_like(bias)
    bt = b.tensor((n_out,), bias_scale, 0, dtype=2, data=bias) if with_bias else -1
    y = b.tensor((1, oh, ow, n_out), s_out, _zp(rng))
    common = dict(padding=padding, strideH=sh, strideW=sw, dilationHFactor=dh, dilationWFactor=dw,
                  fusedActivationFunction=_act(rng))
    if depthwise:
        b.op("DEPTHWISE_CONV_2D", [x, wt, bt], [y], "DepthwiseConv2DOptions", depthMultiplier=mult, **common)
    else:
        b.op("CONV_2D", [x, wt, bt], [y], "Conv2DOptions", **common)
    return b.blob([x], [y])


def _fc(rng: np.random.Generator) -> bytes:
    b = _Builder()
    batch, d, o = int(rng.integers(1, 3)), int(rng.integers(1, 40)), int(rng.integers(1, 12))
    s_in, s_out = _scale(rng, 0.01, 0.1), _scale(rng, 0.02, 0.3)
    s_w = np.float32(rng.uniform(0.002, 0.02, o if rng.random() < 0.5 else 1))  # per-channel or per-tensor
    x = b.tensor((batch, d), s_in, _zp(rng))
    wt = b.tensor((o, d), s_w, 0, data=rng.integers(-127, 128, (o, d)).astype(np.int8))
    bt = b.tensor((o,), np.float32(np.float64(s_in) * s_w.astype(np.float64)), 0, dtype=2,
                  data=rng.integers(-2000, 2000, o).astype(np.int32))
    y = b.tensor((batch, o), s_out, _zp(rng))
    b.op("FULLY_CONNECTED", [x, wt, bt], [y], "FullyConnectedOptions", fusedActivationFunction=_act(rng))
    return b.blob([x], [y])


def _pool(rng: np.random.Generator) -> bytes:
    b = _Builder()
    h, w, c = int(rng.integers(2, 9)), int(rng.integers(2, 9)), int(rng.integers(1, 6))
    fh, fw = int(rng.integers(1, min(h, 4) + 1)), int(rng.integers(1, min(w, 4) + 1))
    sh, sw, padding = int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(0, 2))
    oh, ow = ((-(-s // st)) if padding == 0 else (s - f + st) // st for s, f, st in zip((h, w), (fh, fw), (sh, sw)))
    s, z = _scale(rng), _zp(rng)
    x = b.tensor((1, h, w, c), s, z)
    y = b.tensor((1, oh, ow, c), s, z)
    name = "AVERAGE_POOL_2D" if rng.random() < 0.5 else "MAX_POOL_2D"
    b.op(name, [x], [y], "Pool2DOptions", padding=padding, strideH=sh, strideW=sw, filterHeight=fh, filterWidth=fw,
         fusedActivationFunction=_act(rng))
    return b.blob([x], [y])


def _binary(rng: np.random.Generator) -> bytes:
    b = _Builder()
    shape = [1, int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 6))]
    other = [d if rng.random() < 0.6 else 1 for d in shape] if rng.random() < 0.4 else shape
    name = "ADD" if rng.random() < 0.5 else "MUL"
    s1, s2 = _scale(rng, 0.01, 0.1), _scale(rng, 0.01, 0.1)
    s_out = _scale(rng, 0.02, 0.3) if name == "ADD" else _scale(rng, 0.0005, 0.02)
    x1, x2 = b.tensor(shape, s1, _zp(rng)), b.tensor(other, s2, _zp(rng))
    y = b.tensor(shape, s_out, _zp(rng))
    options = "AddOptions" if name == "ADD" else "MulOptions"
    ins = [x1, x2] if rng.random() < 0.5 else [x2, x1]
    b.op(name, ins, [y], options, fusedActivationFunction=_act(rng))
    return b.blob([x1, x2], [y])


def _softmax(rng: np.random.Generator) -> bytes:
    b = _Builder()
    shape = [int(rng.integers(1, 4)), int(rng.integers(1, 30))]
    x = b.tensor(shape, _scale(rng, 0.01, 0.5), _zp(rng))
    y = b.tensor(shape, 1.0 / 256, -128)
    b.op("SOFTMAX", [x], [y], "SoftmaxOptions", beta=float(rng.choice([1.0, 0.5, 2.0, float(rng.uniform(0.1, 3))])))
    return b.blob([x], [y])


def _logistic(rng: np.random.Generator) -> bytes:
    b = _Builder()
    shape = [1, int(rng.integers(1, 50))]
    x = b.tensor(shape, _scale(rng, 0.005, 0.3), _zp(rng))
    y = b.tensor(shape, 1.0 / 256, -128)
    b.op("LOGISTIC", [x], [y])
    return b.blob([x], [y])


def _mean(rng: np.random.Generator) -> bytes:
    b = _Builder()
    h, w, c = int(rng.integers(1, 9)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    keep = bool(rng.random() < 0.5)
    s_in = _scale(rng)
    s_out = s_in if rng.random() < 0.4 else _scale(rng)
    x = b.tensor((1, h, w, c), s_in, _zp(rng))
    axes = b.tensor((2,), dtype=2, data=np.array([1, 2], np.int32))
    y = b.tensor((1, 1, 1, c) if keep else (1, c), s_out, _zp(rng))
    b.op("MEAN", [x, axes], [y], "ReducerOptions", keepDims=keep)
    return b.blob([x], [y])


def _pad_or_requantize(rng: np.random.Generator) -> bytes:
    b = _Builder()
    shape = (1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 4)))
    s, z = _scale(rng), _zp(rng)
    x = b.tensor(shape, s, z)
    if rng.random() < 0.5:
        pads = rng.integers(0, 3, (4, 2)).astype(np.int32)
        pads[0] = 0
        out = tuple(int(d + p0 + p1) for d, (p0, p1) in zip(shape, pads))
        y = b.tensor(out, s, z)
        p = b.tensor((4, 2), dtype=2, data=pads)
        if rng.random() < 0.5:
            b.op("PAD", [x, p], [y], "PadOptions")
        else:
            v = b.tensor((1,), s, z, data=np.array([rng.integers(-128, 128)], np.int8))
            b.op("PADV2", [x, p, v], [y], "PadV2Options")
    else:
        y = b.tensor(shape, _scale(rng), _zp(rng))
        b.op("QUANTIZE", [x], [y])
    return b.blob([x], [y])


_FAMILIES = (lambda r: _conv_like(r, False), lambda r: _conv_like(r, True), _fc, _pool, _binary, _softmax,
             _logistic, _mean, _pad_or_requantize)


def _single_op_models(rng: np.random.Generator, per_family: int) -> list[bytes]:
    return [make(rng) for _ in range(per_family) for make in _FAMILIES]


def _inputs(blob: bytes, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """``n`` random int8 samples of each model input, shaped ``[n, *input shape]``."""
    runner = TFLMRunner(blob)
    return [rng.integers(-128, 128, (n, *runner.interpreter.get_input_details(k)["shape"])).astype(np.int8)
            for k in range(runner.n_inputs)]


def _check_single_op(blob: bytes, rng: np.random.Generator, where: Path, n: int = 64, flags=()) -> None:
    xs = _inputs(blob, rng, n)
    theirs = _tflm_batched(blob, xs)
    result, exe = _build(blob, where, flags)
    ours = _run(exe, np.concatenate([x.reshape(n, -1) for x in xs], axis=1))
    op = result.program.steps[0].op.opcode
    assert np.array_equal(ours, theirs), f"{op}: {(ours != theirs).sum()} of {ours.size} outputs differ"


def _tflm_batched(blob: bytes, xs: list[np.ndarray]) -> np.ndarray:
    """TFLM's output rows; inputs whose model batch is > 1 run one row each."""
    runner = TFLMRunner(blob)
    rows = []
    for i in range(len(xs[0])):
        for k, x in enumerate(xs):
            shape = tuple(runner.interpreter.get_input_details(k)["shape"])
            runner.interpreter.set_input(x[i].reshape(shape), k)
        runner.interpreter.invoke()
        rows.append(np.array(runner.interpreter.get_output(0)).reshape(-1))
    return np.stack(rows)


def test_single_operator_models_are_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(2024)
    models = _single_op_models(rng, 2)
    for k, blob in enumerate(models):
        _check_single_op(blob, rng, tmp_path / str(k))
    kinds = {lower(blob).steps[0].kernel for blob in models}
    assert len(kinds) >= 11, kinds


@pytest.mark.slow
def test_many_single_operator_models_are_bit_exact(tmp_path: Path) -> None:
    """The object-API families (PADV2, requantizing QUANTIZE, two-input ADD / MUL, ...), 20 each, batched."""
    rng = np.random.default_rng(7)
    models = [VerifyModel(blob, random_samples(blob, rng, 16), lower(blob).steps[0].op.opcode, f"family model {k}")
              for k, blob in enumerate(_single_op_models(rng, 20))]
    report = verify_models(models, tmp_path, per_program=90)
    assert report.ok, report.failure_report()
    assert len(report.outcomes) == 180 and {"PADV2", "QUANTIZE", "MUL", "MEAN"} <= set(report.counts())


MAIN_CASE = r"""
#include <stdio.h>
#include "model.h"
/* one sample: the (float or int8) inputs on stdin, the (float or int8) outputs on stdout */
int main(void)
{
#ifdef TQ_FLOAT_IN
    static float f_in[TINYQML_INPUT_SIZE];
#endif
#ifdef TQ_FLOAT_OUT
    static float f_out[TINYQML_OUTPUT_SIZE];
#endif
    static int8_t in[TINYQML_INPUT_SIZE], out[TINYQML_OUTPUT_SIZE];
#ifdef TQ_FLOAT_IN
    if (fread(f_in, sizeof(float), TINYQML_INPUT_SIZE, stdin) != TINYQML_INPUT_SIZE) return 2;
    tinyqml_quantize_inputs(f_in, in);
#else
    if (fread(in, 1, TINYQML_INPUT_SIZE, stdin) != TINYQML_INPUT_SIZE) return 2;
#endif
    if (tinyqml_invoke(in, out) != 0) return 3;
#ifdef TQ_FLOAT_OUT
    tinyqml_dequantize_outputs(out, f_out);
    fwrite(f_out, sizeof(float), TINYQML_OUTPUT_SIZE, stdout);
#else
    fwrite(out, 1, TINYQML_OUTPUT_SIZE, stdout);
#endif
    return 0;
}
"""


def _check_case(case, rng: np.random.Generator, where: Path) -> None:
    """A tflite_builder case: one random sample, the C output bytes == TFLM's."""
    from tinyqml.classical.tflite_builder import tflm_reference

    result = generate(case.blob, where)
    (where / "main.c").write_text(MAIN_CASE)
    defs = (["-DTQ_FLOAT_IN"] if result.program.float_inputs else []) + \
        (["-DTQ_FLOAT_OUT"] if result.program.float_outputs else [])
    exe = _compile(where, (), defs)
    for _ in range(3):
        xs = case.random_inputs(rng)
        theirs = b"".join(np.ascontiguousarray(o).tobytes() for o in tflm_reference(case, xs))
        run = subprocess.run([str(exe)], input=b"".join(x.tobytes() for x in xs), capture_output=True, timeout=30)
        assert run.returncode == 0 and run.stdout == theirs, f"{case.description}: output differs from TFLM"


def test_tflite_builder_cases_are_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    cases = verification_cases(28, seed=3)
    for k, case in enumerate(cases):
        _check_case(case, rng, tmp_path / str(k))


@pytest.mark.slow
def test_more_tflite_builder_cases_are_bit_exact(tmp_path: Path) -> None:
    """The same 140 broadcasting cases as before, three samples each, in one batched program."""
    report = verify_models(cases_to_models(verification_cases(140, seed=4, broadcast=True), 3, seed=12), tmp_path,
                           per_program=70)
    assert report.ok, report.failure_report()


def test_softmax_and_logistic_cover_the_input_range(tmp_path: Path) -> None:
    """Every int8 input value (and saturating rows) through SOFTMAX and LOGISTIC."""
    b = _Builder()
    x = b.tensor((1, 256), 0.0625, -3)
    y1, y2 = b.tensor((1, 256), 1.0 / 256, -128), b.tensor((1, 256), 1.0 / 256, -128)
    b.op("LOGISTIC", [x], [y1])
    b.op("SOFTMAX", [y1], [y2], "SoftmaxOptions", beta=1.0)
    blob = b.blob([x], [y1, y2])
    rng = np.random.default_rng(0)
    xs = np.stack([np.arange(-128, 128, dtype=np.int8), rng.permutation(np.arange(-128, 128)).astype(np.int8),
                   np.full(256, 127, np.int8), np.where(np.arange(256) == 7, 127, -128).astype(np.int8)])
    result, exe = _build(blob, tmp_path)
    ours = _run(exe, xs)
    theirs = np.concatenate(_tflm(blob, xs), axis=1)
    assert np.array_equal(ours, theirs)
    assert result.output_size == 512 and len(np.unique(ours[0, :256])) > 100


def test_multi_input_model_and_invoke_n(tmp_path: Path) -> None:
    b = _Builder()
    a, c = b.tensor((1, 4, 4, 3), 0.05, 3), b.tensor((1, 4, 4, 3), 0.02, -7)
    y = b.tensor((1, 4, 4, 3), 0.06, 1)
    r = b.tensor((1, 48), 0.06, 1)
    b.op("ADD", [a, c], [y], "AddOptions", fusedActivationFunction=1)
    shape = b.tensor((2,), dtype=2, data=np.array([1, 48], np.int32))
    b.op("RESHAPE", [y, shape], [r], "ReshapeOptions", newShape=[1, 48])
    blob = b.blob([a, c], [y, r])
    rng = np.random.default_rng(1)
    xa, xc = (rng.integers(-128, 128, (50, 4, 4, 3)).astype(np.int8) for _ in range(2))
    _, exe = _build(blob, tmp_path)
    ours = _run(exe, np.concatenate([xa.reshape(50, -1), xc.reshape(50, -1)], axis=1))
    theirs = np.concatenate(_tflm(blob, xa, xc), axis=1)
    assert np.array_equal(ours, theirs)
    header = (tmp_path / "model.h").read_text()
    for macro in ("TINYQML_NUM_INPUTS 2", "TINYQML_INPUT_SIZE 96", "TINYQML_INPUT_SIZE_1 48",
                  "TINYQML_OUTPUT_SIZE 96", "TINYQML_INPUT_ZERO_POINT_1 (-7)"):
        assert f"#define {macro}" in header
    assert "int tinyqml_invoke_n(const int8_t *const *inputs, int8_t *const *outputs);" in header


# -- errors and the planner fallback -----------------------------------------------------------------------

def test_unsupported_operator_names_it_and_its_index(tmp_path: Path) -> None:
    b = _Builder()
    x, y, z = b.tensor((1, 8), 0.1, 0), b.tensor((1, 8), 1.0 / 256, -128), b.tensor((1, 8), 1.0 / 128, 0)
    b.op("LOGISTIC", [x], [y])
    b.op("TANH", [y], [z])
    with pytest.raises(UnsupportedOperatorError, match=r"operator 1 \(TANH\)"):
        generate(b.blob([x], [z]), tmp_path)
    b = _Builder()
    x, y = b.tensor((1, 8), 0.1, 0), b.tensor((1, 8), 0.1, 0)
    b.op("SOFTMAX", [x], [y], "SoftmaxOptions", beta=1.0)  # output not 1/256, -128: TFLM refuses it too
    with pytest.raises(UnsupportedOperatorError, match=r"operator 0 \(SOFTMAX\).*1/256"):
        generate(b.blob([x], [y]), tmp_path)
    with pytest.raises(ExportError, match="not a TFLite flatbuffer"):
        generate(b"\x00" * 64, tmp_path)
    with pytest.raises(ExportError, match="CodegenOptions"):
        generate(b.blob([x], [y]), tmp_path, {"target": "host"})
    with pytest.raises(ExportError, match="C identifier"):
        CodegenOptions(prefix="no-dash")


def test_first_fit_fallback_places_buffers_without_overlap() -> None:
    bufs = [_Buffer("a", 100, 0, 1), _Buffer("b", 50, 1, 2), _Buffer("c", 100, 2, 3), _Buffer("d", 10, 0, 3)]
    offsets, size = _first_fit(bufs, 16)
    assert set(offsets) == {"a", "b", "c", "d"} and all(o % 16 == 0 for o in offsets.values())
    for i, p in enumerate(bufs):
        for q in bufs[i + 1:]:
            if p.first <= q.last and q.first <= p.last:
                assert offsets[p.name] + p.size <= offsets[q.name] or offsets[q.name] + q.size <= offsets[p.name]
    assert size == 192 and offsets["a"] == offsets["c"] == 0  # a, c: disjoint lifetimes share memory; b, d above


# -- batched verification: many models per program (tinyqml.classical.verify) ----------------------------

FIXTURES = Path(__file__).parent / "fixtures"

#: every operator the tflite_builder cases draw, and the broadcasting ADD / MUL groups
ALL_GROUPS = {op.name for op in Op} | {"ADD/broadcast", "MUL/broadcast"}


def _cases(n: int, seed: int, n_broadcast: int) -> list:
    """``n`` cases cycling over every operator, then ``n_broadcast`` broadcasting ADD / MUL cases."""
    pool = verification_cases(7 * n_broadcast, seed=seed + 1, broadcast=True)
    return verification_cases(n, seed=seed) + [c for c in pool if c.op in (Op.ADD, Op.MUL)][:n_broadcast]


def _check_batch(report, n_models: int, groups=ALL_GROUPS) -> None:
    """Every model bit-exact, every group present; the per-group counts in the message."""
    assert report.ok, report.failure_report()
    assert len(report.outcomes) == n_models, report.summary()
    assert groups <= set(report.counts()), report.summary()


def test_batched_single_operator_cases_are_bit_exact(tmp_path: Path) -> None:
    """126 cases (7 per operator and 14 broadcasting ADD / MUL), 4 samples each, in two host programs."""
    cases = _cases(112, seed=1000, n_broadcast=14)
    report = verify_models(cases_to_models(cases, n_samples=4, seed=1001), tmp_path, per_program=63)
    _check_batch(report, 126)
    assert len(report.programs) == 2
    print(report.summary())


@pytest.mark.slow
def test_thousand_single_operator_cases_are_bit_exact(tmp_path: Path) -> None:
    """>= 1,000 seeded single-operator models (100 per operator, 40 broadcasting ADD and MUL each) on
    4 samples each, 120 models per host program; case i of seed 2000 is ``verification_cases(.., seed=2000)[i]``
    with samples from ``default_rng([2002, i])`` (see ``cases_to_models``)."""
    cases = _cases(1400, seed=2000, n_broadcast=80)
    report = verify_models(cases_to_models(cases, n_samples=4, seed=2002), tmp_path, per_program=120)
    _check_batch(report, 1480)
    per_op = Counter(o.model.group.split("/")[0] for o in report.outcomes)
    assert per_op == {op.name: 140 if op in (Op.ADD, Op.MUL) else 100 for op in Op}, report.summary()
    print(report.summary())


#: fixture -> (samples, the kernels its program must run)
FIXTURE_KERNELS = {
    "digits_cnn.tflite": {Kernel.CONV_2D, Kernel.MAX_POOL_2D, Kernel.RESHAPE, Kernel.FULLY_CONNECTED,
                          Kernel.SOFTMAX},
    "digits_cnn_float_io.tflite": {Kernel.CONV_2D, Kernel.MAX_POOL_2D, Kernel.FULLY_CONNECTED, Kernel.SOFTMAX},
    "dilated_depthwise.tflite": {Kernel.PAD, Kernel.DEPTHWISE_CONV_2D, Kernel.CONV_2D, Kernel.AVERAGE_POOL_2D,
                                 Kernel.LOGISTIC, Kernel.MUL, Kernel.FULLY_CONNECTED},
    "mlp.tflite": {Kernel.FULLY_CONNECTED, Kernel.SOFTMAX},
    "mobilenetv2_style.tflite": {Kernel.CONV_2D, Kernel.DEPTHWISE_CONV_2D, Kernel.ADD, Kernel.MEAN,
                                 Kernel.FULLY_CONNECTED},
}


def _fixture_samples(blob: bytes, rng: np.random.Generator, n: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """``n`` inputs of a TF-converter fixture: int8 models get uniform int8 (half) and N(0, 1) quantized
    with the input's scale and zero point (half, the representative data's distribution, some scaled);
    float models get N(0, 1) at growing magnitudes, a quarter of the values on QUANTIZE's rounding ties."""
    program = lower(blob)
    graph_in = program.float_inputs or program.inputs
    t = program.model.tensors[graph_in[0]]
    q = program.model.tensors[program.inputs[0]]  # the int8 input (after QUANTIZE at a float edge)
    shape = tuple(t.shape)
    out = []
    for i in range(n):
        z = rng.normal(0.0, 1.0, size=shape) * (0.25 + 2.5 * i / n)
        if program.float_inputs:
            ties = (rng.integers(-120, 120, size=shape) + 0.5) * np.float64(np.float32(q.scale))
            x = np.where(rng.random(shape) < 0.25, ties, z).astype(np.float32)
        elif i % 2 == 0:
            x = rng.integers(-128, 128, size=shape, dtype=np.int8)
        else:
            x = np.clip(np.round(z / q.scale) + q.zero_point, -128, 127).astype(np.int8)
        out.append((x,))
    return tuple(out)


def _fixture_models(n: int, seed: int) -> list[VerifyModel]:
    return [VerifyModel((FIXTURES / name).read_bytes(), _fixture_samples((FIXTURES / name).read_bytes(),
                                                                          np.random.default_rng([seed, k]), n),
                        name.removesuffix(".tflite"), f"TF 2.21 converter fixture {name}")
            for k, name in enumerate(sorted(FIXTURE_KERNELS))]


def test_tf_converter_fixtures_are_bit_exact(tmp_path: Path) -> None:
    """Every fixture (TensorFlow 2.21's converter) on 100 seeded inputs; the float-io one through
    ``<prefix>_invoke_f32`` (float32 in, float32 out, compared bit for bit with TFLite Micro's)."""
    models = _fixture_models(100, seed=3000)
    report = verify_models(models, tmp_path, per_program=len(models))
    assert report.ok, report.failure_report()
    assert sorted(report.counts()) == sorted(n.removesuffix(".tflite") for n in FIXTURE_KERNELS)
    for o in report.outcomes:
        name = o.model.group + ".tflite"
        assert FIXTURE_KERNELS[name] <= {s.kernel for s in o.result.program.steps}, name
        assert len(np.unique(o.ours, axis=0)) > 90, f"{name}: outputs barely depend on the input"
        float_io = name == "digits_cnn_float_io.tflite"
        assert o.result.program.float_io is float_io
        assert o.ours.dtype == (np.uint32 if float_io else np.int8)
        if float_io:  # softmax probabilities dequantized: float32 in [0, 1], rows summing to about 1
            p = o.ours.view(np.float32)
            assert p.min() >= 0 and p.max() <= 1 and np.allclose(p.sum(axis=1), 1, atol=0.05)
    main = (report.programs[0].parent / "main.c").read_text()
    assert "m0001_invoke_f32(tq_inf, tq_outf)" in main  # digits_cnn_float_io is the second (sorted) fixture


def _exported_models(n: int, names=("cnn", "mobilenet", "cnn_float_io")) -> list[VerifyModel]:
    """tinyqml's own exporter (seeded): the SmallCNN and the MobileNetV2 with int8 edges, the CNN with float
    edges (its inputs off the quantization grid); ``n`` samples each."""
    out = []
    for name in names:
        float_io = name.endswith("_float_io")
        blob, x, xf = _exported(name.removesuffix("_float_io"), float_io=float_io, n=n)
        rows = xf * np.float32(1.37) if float_io else x
        out.append(VerifyModel(blob, tuple((row[None],) for row in rows), f"exported/{name}", f"exported {name}"))
    return out


@pytest.mark.slow
def test_batched_programs_are_sanitizer_clean(tmp_path: Path) -> None:
    """ASan + UBSan (-fno-sanitize-recover=all: the first report aborts the program): 154 single-operator
    cases, the TF fixtures and the exported models, batched; the same outputs as TFLite Micro."""
    cases = _cases(140, seed=4000, n_broadcast=14)
    models = cases_to_models(cases, n_samples=3, seed=4001) + _fixture_models(8, seed=4002) + _exported_models(8)
    report = verify_models(models, tmp_path, build=HostBuild(sanitize=True), per_program=81)
    _check_batch(report, len(models))
    assert "-fsanitize=address,undefined" in HostBuild(sanitize=True).command_flags()


QEMU_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")


@pytest.mark.skipif(not all(tools_available()[t] for t in (*QEMU_TOOLS, "rdimon.specs")),
                    reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm")
def test_cortex_m4_under_qemu_matches_host_and_tflm(tmp_path: Path, record_property) -> None:
    """Whole models (the TF digits CNN, its float-io twin, the TF MobileNetV2-style net, tinyqml's exported
    SmallCNN) and 98 single-operator cases, cross-compiled for the Cortex-M4 (mps2-an386) and run under
    QEMU with semihosting: outputs equal to the host build's and to TFLite Micro's; flash / SRAM from
    arm-none-eabi-size."""
    fixtures = [m for m in _fixture_models(12, seed=5000) if m.group in ("digits_cnn", "digits_cnn_float_io",
                                                                        "mobilenetv2_style")]
    whole = fixtures + _exported_models(12, names=("cnn",))
    singles = cases_to_models(_cases(84, seed=5002, n_broadcast=14), n_samples=3, seed=5003)
    m4_whole = verify_models(whole, tmp_path / "m4w", target="cortex-m4")
    m4_single = verify_models(singles, tmp_path / "m4s", target="cortex-m4", per_program=49)
    host_whole = verify_models(whole, tmp_path / "hw")
    host_single = verify_models(singles, tmp_path / "hs", per_program=49)
    for m4, host in ((m4_whole, host_whole), (m4_single, host_single)):
        assert m4.ok and host.ok, m4.failure_report() + "\n" + host.failure_report()
        for a, b in zip(m4.outcomes, host.outcomes):
            assert np.array_equal(a.ours, b.ours), f"{a.describe()}: the Cortex-M4 and host builds differ"
    _check_batch(m4_single, 98)
    assert m4_whole.outcomes[0].result.target is Target.CORTEX_M4

    # sizes: the whole-model program (4 models + harness + newlib) and the digits CNN alone
    (elf,) = m4_whole.sizes
    arenas = sum(o.result.arena_bytes + o.result.scratch_bytes for o in m4_whole.outcomes)
    consts = sum(o.result.flash_bytes for o in m4_whole.outcomes)
    assert elf.bss >= arenas and elf.text >= consts and elf.sram < 4 << 20 and elf.flash < 4 << 20
    digits = tmp_path / "digits"
    result = generate((FIXTURES / "digits_cnn.tflite").read_bytes(), digits, CodegenOptions(Target.CORTEX_M4))
    alone = object_size([digits / "model.c", digits / "tinyqml_rt.c"], [digits], tmp_path / "obj")
    model_only = object_size([digits / "model.c"], [digits], tmp_path / "obj1")
    assert model_only.bss >= result.arena_bytes + result.scratch_bytes
    assert model_only.text >= result.flash_bytes and alone.text > model_only.text
    line = (f"cortex-m4 sizes: whole-model program (4 models) text {elf.text} data {elf.data} bss {elf.bss} "
            f"(flash {elf.flash} B, static SRAM {elf.sram} B); digits_cnn model.c + runtime flash {alone.flash} B "
            f"SRAM {alone.sram} B (model.c alone flash {model_only.flash} B, SRAM {model_only.sram} B; arena "
            f"{result.arena_bytes} B, scratch {result.scratch_bytes} B, constants {result.flash_bytes} B); "
            f"single-op programs {[(s.flash, s.sram) for s in m4_single.sizes]}")
    print(line)
    record_property("cortex_m4_sizes", line)


def test_depthwise_without_bias_matches_tflm_with_a_zero_bias(tmp_path: Path) -> None:
    """TFLite Micro's DEPTHWISE_CONV_2D crashes (SIGSEGV in AllocateTensors) on a model whose bias input is
    omitted (-1), so the bias-less models are checked against their twins with an all-zero bias tensor."""
    models = []
    for k in range(40):
        no_bias = _conv_like(np.random.default_rng([6000, k]), True, "none")
        zero_bias = _conv_like(np.random.default_rng([6000, k]), True, "zero")
        step = lower(no_bias).steps[0]
        assert step.kernel is Kernel.DEPTHWISE_CONV_2D and "bias" not in step.arrays and step.op.inputs[2] == -1
        models.append(VerifyModel(no_bias, random_samples(zero_bias, np.random.default_rng([6001, k]), 4),
                                  "DEPTHWISE_CONV_2D/no-bias", f"bias-less depthwise {k}", reference=zero_bias))
    report = verify_models(models, tmp_path, per_program=40)
    assert report.ok, report.failure_report()


# -- fuzzing: mutated flatbuffers through the code generator and the CLI ------------------------------------
#
# The mutants of tests/classical/test_tflite_reader.py (the same seeds, 19 mutation classes, seeded), through
# generate() and `tinyqml codegen` in-process under a SIGALRM deadline and tracemalloc, through the console
# script in subprocesses (exit status 1, one `tinyqml: error:` line, no traceback), and, for the mutants that
# are accepted, the generated C built with ASan / UBSan and run; TFLite Micro runs the same mutants in a child
# process (it may crash on garbage) and its outputs are compared where it accepts them.

@pytest.fixture(scope="module")
def fuzz():
    """tests/classical/test_tflite_reader.py as a module: one set of mutators for the loader and here."""
    return load_test_module(Path(__file__).with_name("test_tflite_reader.py"), "tinyqml_tests_tflite_reader_fuzz")


@pytest.fixture(scope="module")
def fuzz_seeds(fuzz):
    q = quantize_model(_strided(), torch.randn(32, 3, 10, 10, generator=torch.Generator().manual_seed(3))).qgraph
    return fuzz.fuzz_seeds({"strided": to_tflite(q), "strided_float_io": to_tflite(q, TFLiteOptions(float_io=True))})


def test_fuzz_codegen_raises_only_named_errors(fuzz, fuzz_seeds, tmp_path: Path, record_property) -> None:
    """40 mutants of each class (760) through generate(); only CompressionError subclasses come out."""
    failures: list[str] = []
    counts: Counter = Counter()
    with fuzz.traced_memory():
        for cls in fuzz.MUTATION_CLASSES:
            for k, (label, blob) in enumerate(fuzz.mutants(fuzz_seeds, cls, 40, seed=2)):
                counts[cls, fuzz.probe(label, lambda: generate(blob, tmp_path / "c"), failures)] += 1
    record_property("codegen_fuzz_counts", dict(sorted(counts.items())))
    assert sum(counts.values()) == 40 * len(fuzz.MUTATION_CLASSES)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])
    assert sum(k for (_, outcome), k in counts.items() if outcome == "accepted") >= 50  # some run on


def _cli_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_fuzz_cli_in_process_exits_1_with_one_line(fuzz, fuzz_seeds, tmp_path: Path, capsys, record_property) -> None:
    """8 mutants of each class (152) through ``tinyqml.cli.main(["codegen", ...])``: status 0 and the summary,
    or status 1 and one ``tinyqml: error: ...`` line on stderr."""
    from tinyqml.cli import main

    failures: list[str] = []
    counts: Counter = Counter()
    for cls in fuzz.MUTATION_CLASSES:
        for k, (label, blob) in enumerate(fuzz.mutants(fuzz_seeds, cls, 8, seed=3)):
            path = tmp_path / f"m{k}.tflite"
            path.write_bytes(blob)
            status: list[int] = []
            outcome = fuzz.probe(label, lambda: status.append(main(["codegen", str(path), "-o", str(tmp_path / "c")])),
                                 failures)
            out, err = capsys.readouterr()
            if outcome != "accepted":  # a leak (already in failures): main() let the exception through
                continue
            counts[cls, status[0]] += 1
            if status[0] == 0:
                ok = not err and _cli_lines(out)[0].startswith("wrote model.h")
            else:
                ok = status[0] == 1 and len(_cli_lines(err)) == 1 and err.startswith("tinyqml: error: ") and not out
            if not ok:
                failures.append(f"{label}: status {status[0]}, stdout {out[:200]!r}, stderr {err[:300]!r}")
    record_property("cli_fuzz_counts", dict(sorted(counts.items())))
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])
    assert sum(counts.values()) == 8 * len(fuzz.MUTATION_CLASSES)


@pytest.mark.slow
def test_fuzz_cli_console_script_exits_1_with_one_line(fuzz, fuzz_seeds, tmp_path: Path) -> None:
    """24 refused mutants (at least one per class) and two accepted ones through the ``tinyqml`` console script,
    each in its own process: status 1, one ``tinyqml: error:`` line, no traceback (status 0 for the accepted)."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from tinyqml.classical.errors import CompressionError

    script = Path(sys.executable).with_name("tinyqml")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (pip install -e .)")
    refused: dict[str, tuple[str, bytes]] = {}  # the first refused mutant of each class
    extra: list[tuple[str, bytes]] = []  # and five more
    accepted: list[tuple[str, bytes]] = []
    for round_ in range(40):
        for cls in fuzz.MUTATION_CLASSES:
            ((label, blob),) = fuzz.mutants(fuzz_seeds, cls, 1, seed=100 + round_)
            try:
                generate(blob, tmp_path / "probe")
                accepted.append((label, blob))
            except CompressionError:
                if cls in refused:
                    extra.append((label, blob))
                else:
                    refused[cls] = (label, blob)
        if len(refused) == len(fuzz.MUTATION_CLASSES) and len(extra) >= 5 and len(accepted) >= 2:
            break
    chosen = [(*c, False) for c in [*refused.values(), *extra[:5]]] + [(*c, True) for c in accepted[:2]]
    assert len(chosen) == 26 and set(refused) == set(fuzz.MUTATION_CLASSES)

    def run(k: int) -> tuple[str, bool, subprocess.CompletedProcess]:
        label, blob, ok = chosen[k]
        path = tmp_path / f"cli{k}.tflite"
        path.write_bytes(blob)
        return label, ok, subprocess.run([str(script), "codegen", str(path), "-o", str(tmp_path / f"out{k}")],
                                         capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for label, ok, proc in pool.map(run, range(len(chosen))):
            if ok:
                assert proc.returncode == 0 and proc.stdout.startswith("wrote model.h"), (label, proc.stderr)
                continue
            lines = _cli_lines(proc.stderr)
            assert proc.returncode == 1, (label, proc.returncode, proc.stderr[-2000:])
            assert len(lines) == 1 and lines[0].startswith("tinyqml: error: "), (label, proc.stderr[-2000:])
            assert "Traceback" not in proc.stderr and not proc.stdout, label


#: run in a child process: TFLite Micro on each job (blob, samples, number of outputs, arena bytes) of a pickle,
#: one result file per job; the parent starts it again after the job it died on (it may crash on a mutant)
TFLM_WORKER = r"""
import pickle, sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime

jobs = pickle.load(open(sys.argv[1], "rb"))
for i in range(int(sys.argv[2]), len(jobs)):
    blob, samples, n_out, arena = jobs[i]
    print("start", i, flush=True)
    try:
        interp = runtime.Interpreter.from_bytes(blob, arena_size=arena)
        rows = []
        for sample in samples:
            for k, x in enumerate(sample):
                interp.set_input(np.ascontiguousarray(x), k)
            interp.invoke()
            outs = [np.ascontiguousarray(interp.get_output(k)).reshape(-1) for k in range(n_out)]
            rows.append(np.concatenate([o.view(np.uint32) if o.dtype == np.float32 else o for o in outs]))
        result = ("ran", np.stack(rows))
    except Exception as exc:
        result = ("refused", f"{type(exc).__name__}: {exc}"[:300])
    with open(f"{sys.argv[1]}.{i}", "wb") as f:
        pickle.dump(result, f)
    print("done", i, flush=True)
"""


def _tflm_in_child(jobs: list, where: Path) -> list[tuple[str, object]]:
    """TFLite Micro's outcome of each job: ("ran", outputs), ("refused", message) or ("crashed", how)."""
    import pickle
    import sys

    path = where / "tflm_jobs.pkl"
    path.write_bytes(pickle.dumps(jobs))
    results: dict[int, tuple[str, object]] = {}
    start = 0
    while start < len(jobs):
        proc = subprocess.run([sys.executable, "-c", TFLM_WORKER, str(path), str(start)], capture_output=True,
                              text=True, timeout=300)
        for line in proc.stdout.splitlines():
            if line.startswith("done "):
                i = int(line.split()[1])
                results[i] = pickle.loads(Path(f"{path}.{i}").read_bytes())
        if proc.returncode == 0:
            break
        started = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("start ")]
        assert started, proc.stderr[-2000:]  # died before its first job: the worker itself is broken
        results[started[-1]] = ("crashed", f"exit status {proc.returncode}")
        start = started[-1] + 1
    return [results[i] for i in range(len(jobs))]


def _fuzz_samples(result, rng: np.random.Generator, n: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """``n`` random samples of a generated model's graph inputs (int8, or float32 at a float edge)."""
    prog, m = result.program, result.program.model
    if prog.float_inputs:
        return tuple(tuple(rng.uniform(-3, 3, m.tensors[t].shape).astype(np.float32) for t in prog.float_inputs)
                     for _ in range(n))
    return tuple(tuple(rng.integers(-128, 128, m.tensors[t].shape).astype(np.int8) for t in m.inputs)
                 for _ in range(n))


@pytest.mark.slow
def test_fuzz_accepted_mutants_compile_run_and_match_tflm(fuzz, fuzz_seeds, tmp_path: Path, record_property) -> None:
    """50 accepted mutants (drawn round-robin over the classes): their C built with ASan / UBSan into one program
    runs 3 random samples each without a sanitizer report or a write outside the output; TFLite Micro (in a child
    process) runs the same models where it accepts them, and its outputs equal ours."""
    from tinyqml.classical.errors import CompressionError
    from tinyqml.classical.mcu import HostBuild, compile_host, compile_object, run_host
    from tinyqml.classical.verify import _entry, batch_main, parse_batch_output

    chosen, results, entries = [], [], []
    rng = np.random.default_rng(7)
    for round_ in range(60):
        for cls in fuzz.MUTATION_CLASSES:
            ((label, blob),) = fuzz.mutants(fuzz_seeds, cls, 1, seed=1000 + round_)
            prefix = f"m{len(chosen):04d}"
            try:
                with fuzz.deadline():
                    result = generate(blob, tmp_path / prefix, CodegenOptions(prefix=prefix))
            except CompressionError:
                continue
            model = VerifyModel(blob, _fuzz_samples(result, rng, 3), cls, label)
            chosen.append(model)
            results.append(result)
            entries.append(_entry(len(entries), prefix, result, model))
            if len(chosen) == 50:
                break
        if len(chosen) == 50:
            break
    assert len(chosen) == 50
    (tmp_path / "main.c").write_text(batch_main(entries))
    build = HostBuild(sanitize=True)
    runtime = compile_object(RUNTIME_DIR / "tinyqml_rt.c", tmp_path / "rt.o", build)
    exe = compile_host([tmp_path / "main.c", *(tmp_path / e.prefix / "model.c" for e in entries), runtime], [],
                       tmp_path / "fuzz_batch", build)
    ours = parse_batch_output(run_host(exe, timeout=300), [(3, e.out_size, e.float_out) for e in entries])
    errors = [f"{m.description}: {got}" for m, got in zip(chosen, ours) if isinstance(got, str)]
    assert not errors, "\n".join(errors)
    jobs = [(m.blob, m.samples, len(r.program.model.outputs), 2 ** 20 + 8 * r.arena_bytes)
            for m, r in zip(chosen, results)]
    tflm = _tflm_in_child(jobs, tmp_path)
    counts = Counter(kind for kind, _ in tflm)
    differ = [m.description for m, got, (kind, ref) in zip(chosen, ours, tflm)
              if kind == "ran" and not (got.shape == ref.shape and np.array_equal(got.view(ref.dtype), ref))]
    record_property("fuzz_tflm", f"{len(chosen)} accepted mutants ran clean; TFLite Micro {dict(counts)}; "
                                 f"{counts['ran'] - len(differ)} of {counts['ran']} it ran agree; by class "
                                 f"{dict(Counter(m.group for m in chosen))}")
    assert not differ, f"{len(differ)} of {counts['ran']} differ from TFLite Micro:\n" + "\n".join(differ)
    assert counts["ran"] >= 25
