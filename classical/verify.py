"""Batch verification of generated C against the TFLite Micro interpreter: many models in one program.

Compiling one program per model is slow (a gcc start, a link, a process per model); this module
generates every model's C with its own ``prefix`` (``m0000``, ``m0001``, ...) into one folder per
program, writes one ``main.c`` that runs every model on its seeded samples (embedded as constant
arrays, so the same program runs on the host and under QEMU), builds it once with
:func:`~tinyqml.classical.mcu.compile_host` or :func:`~tinyqml.classical.mcu.compile_cortex_m4`
(the runtime compiled once per build), runs it, parses what it printed and compares each model's
outputs with TFLite Micro's, byte for byte (float32 outputs bit for bit).

Each model is a :class:`VerifyModel`: a ``.tflite`` blob and its samples (one array per model input,
in the model's exact shapes and dtypes). A model whose graph inputs are float32 (QUANTIZE at the edge)
is driven through ``<prefix>_quantize_inputs`` (``<prefix>_invoke_f32`` when its outputs are float32
as well), one whose outputs are float32 (DEQUANTIZE) through ``<prefix>_dequantize_outputs``; int8
models through ``<prefix>_invoke``. The program fills the output buffer with a pattern before each
call and reports a model that writes outside its output.

The program prints one line per model and sample::

    tq-out <model> <sample>: v0 v1 ...     (int8 values; float32 outputs as 8 hex digits of their bits)
    tq-error <model> <sample> <what>       (a non-zero return or a write outside the output)
    tq-done <number of models>

:func:`verify_models` does all of it and returns a :class:`BatchReport` (per-model outcomes,
per-group counts, the programs and, for the Cortex-M4, their ``arm-none-eabi-size``).
:func:`cases_to_models` turns :func:`~tinyqml.classical.tflite_builder.verification_cases` into
models with samples drawn from ``np.random.default_rng([seed, i])`` (case ``i`` reproducible alone).

>>> import numpy as np
>>> from tinyqml.classical.tflite_builder import verification_cases
>>> models = cases_to_models(verification_cases(2, seed=0), n_samples=2, seed=1)
>>> [m.group for m in models], len(models[0].samples)
(['ADD', 'AVERAGE_POOL_2D'], 2)
>>> parse_batch_output("tq-out 0 0: 1 -2\\ntq-out 0 1: 3 4\\ntq-done 1\\n", [(2, 2, False)])
[array([[ 1, -2],
       [ 3,  4]], dtype=int8)]
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from tinyqml.classical.codegen import RUNTIME_DIR, CodegenOptions, CodegenResult, Target, generate
from tinyqml.classical.errors import CompressionError
from tinyqml.classical.mcu import (
    CortexM4Build,
    ElfSize,
    HostBuild,
    RunError,
    compile_cortex_m4,
    compile_object,
    compile_host,
    elf_size,
    require_tools,
    run_host,
    run_qemu,
)
from tinyqml.classical.tflite_builder import SingleOpCase

__all__ = ["VerifyModel", "ModelOutcome", "BatchReport", "BatchEntry", "cases_to_models", "model_io", "random_samples",
           "tflm_outputs", "batch_main", "parse_batch_output", "verify_models", "HostComparison",
           "compare_host_with_tflm"]

log = logging.getLogger(__name__)

_PER_LINE = 24
_GUARD = 16
_OUT_LINE = re.compile(r"^tq-out (\d+) (\d+):((?: -?[0-9a-f]+)*)$")
_DONE_LINE = re.compile(r"^tq-done (\d+)$")
_ERROR_LINE = re.compile(r"^tq-error (\d+) (\d+) (.*)$")


@dataclass(frozen=True, eq=False)
class VerifyModel:
    """A model to check: its ``.tflite`` ``blob``, ``samples`` (per sample one array per model input, in
    the exact shapes and dtypes TFLite Micro takes), a ``group`` for the counts (e.g. the operator) and a
    ``description`` (what a failure message names). ``reference``: an equivalent model that TFLite Micro
    runs instead of ``blob`` (where the interpreter cannot run ``blob`` itself: its DEPTHWISE_CONV_2D
    crashes on a model without a bias tensor, so an all-zero bias stands in)."""

    blob: bytes
    samples: tuple[tuple[np.ndarray, ...], ...]
    group: str = "model"
    description: str = ""
    reference: bytes | None = None

    def __post_init__(self) -> None:
        if not self.samples:
            raise CompressionError(f"{self.description or self.group}: a model needs at least one sample")


@dataclass(frozen=True, eq=False)
class ModelOutcome:
    """One model's result: its position in the batch, C ``prefix``, generated code, our outputs and
    TFLite Micro's (``[n_samples, output elements]``, int8, or uint32 float32 bits), and an ``error``
    the program reported (a non-zero return, a write outside the output)."""

    index: int
    model: VerifyModel
    prefix: str
    result: CodegenResult
    ours: np.ndarray | None
    theirs: np.ndarray
    error: str | None = None

    @property
    def differing(self) -> int:
        """Output values that differ from TFLite Micro's (all of them when the program reported an error)."""
        if self.ours is None or self.ours.shape != self.theirs.shape:
            return int(self.theirs.size)
        return int((self.ours != self.theirs).sum())

    @property
    def ok(self) -> bool:
        return self.error is None and self.differing == 0

    def describe(self) -> str:
        what = self.error or f"{self.differing} of {self.theirs.size} outputs differ from TFLite Micro"
        return f"model {self.index} ({self.prefix}, {self.model.group}): {self.model.description}: {what}"


@dataclass(frozen=True, eq=False)
class BatchReport:
    """Every :class:`ModelOutcome`, the programs built, and their sizes (Cortex-M4 ELFs; ``None`` on the host)."""

    outcomes: tuple[ModelOutcome, ...]
    programs: tuple[Path, ...]
    sizes: tuple[ElfSize | None, ...]
    target: str

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def failures(self) -> tuple[ModelOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)

    def counts(self) -> dict[str, tuple[int, int]]:
        """group -> (bit-exact models, models), groups sorted by name."""
        total = Counter(o.model.group for o in self.outcomes)
        exact = Counter(o.model.group for o in self.outcomes if o.ok)
        return {g: (exact[g], total[g]) for g in sorted(total)}

    @property
    def samples(self) -> int:
        return sum(len(o.model.samples) for o in self.outcomes)

    def summary(self) -> str:
        per = ", ".join(f"{g} {e}/{t}" for g, (e, t) in self.counts().items())
        n_ok = sum(o.ok for o in self.outcomes)
        return (f"{self.target}: {n_ok} of {len(self.outcomes)} models bit-exact with TFLite Micro "
                f"({self.samples} samples, {len(self.programs)} programs); per group: {per}")

    def failure_report(self, limit: int = 20) -> str:
        """The summary and the first ``limit`` failing models."""
        lines = [self.summary()] + [o.describe() for o in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"... and {len(self.failures) - limit} more")
        return "\n".join(lines)


# -- models and samples ----------------------------------------------------------------------------------

def cases_to_models(cases: Sequence[SingleOpCase], n_samples: int = 4, seed: int = 0) -> list[VerifyModel]:
    """:class:`VerifyModel` s of ``tflite_builder`` cases; case ``i``'s samples come from
    ``case.random_inputs(np.random.default_rng([seed, i]))``. The group is the operator's name, with
    ``/broadcast`` when the inputs' shapes differ (ADD / MUL broadcasting)."""
    models = []
    for i, case in enumerate(cases):
        rng = np.random.default_rng([seed, i])
        samples = tuple(tuple(case.random_inputs(rng)) for _ in range(n_samples))
        group = case.op.name + ("/broadcast" if len(set(case.input_shapes)) > 1 else "")
        models.append(VerifyModel(case.blob, samples, group, case.description))
    return models


def model_io(blob: bytes) -> tuple[list[tuple[tuple[int, ...], np.dtype]], list[tuple[tuple[int, ...], np.dtype]]]:
    """The graph inputs and outputs of a model as (shape, numpy dtype) pairs, from TFLite Micro's view."""
    from tinyqml.classical.tflite_export import TFLMRunner

    runner = TFLMRunner(blob)
    interp = runner.interpreter
    n_in, n_out = runner.n_inputs, runner.n_outputs
    ins = [(tuple(int(d) for d in interp.get_input_details(k)["shape"]), np.dtype(interp.get_input_details(k)["dtype"]))
           for k in range(n_in)]
    outs = [(tuple(int(d) for d in interp.get_output_details(k)["shape"]),
             np.dtype(interp.get_output_details(k)["dtype"])) for k in range(n_out)]
    return ins, outs


def random_samples(blob: bytes, rng: np.random.Generator, n: int,
                   float_range: tuple[float, float] = (-3.0, 3.0)) -> tuple[tuple[np.ndarray, ...], ...]:
    """``n`` random samples of a model's inputs: int8 uniform over [-128, 127], float32 uniform over
    ``float_range``."""
    ins, _ = model_io(blob)
    out = []
    for _ in range(n):
        sample = []
        for shape, dtype in ins:
            if dtype == np.int8:
                sample.append(rng.integers(-128, 128, size=shape, dtype=np.int8))
            elif dtype == np.float32:
                sample.append(rng.uniform(*float_range, size=shape).astype(np.float32))
            else:
                raise CompressionError(f"random_samples: no sampler for input dtype {dtype}")
        out.append(tuple(sample))
    return tuple(out)


def _as_compared(values: np.ndarray) -> np.ndarray:
    """int8 as is; float32 as its uint32 bits (bit-exact comparison, NaN included)."""
    a = np.ascontiguousarray(values)
    if a.dtype == np.int8:
        return a.reshape(-1)
    if a.dtype == np.float32:
        return a.reshape(-1).view(np.uint32)
    raise CompressionError(f"outputs of dtype {a.dtype} cannot be compared (int8 or float32 only)")


def tflm_outputs(model: VerifyModel) -> np.ndarray:
    """TFLite Micro's outputs of every sample, the outputs concatenated in the subgraph's order:
    ``[n_samples, elements]`` int8, or uint32 (the bits) for float32 outputs. One interpreter per model
    (on ``model.reference`` when it has one)."""
    from tinyqml.classical.tflite_export import TFLMRunner

    runner = TFLMRunner(model.blob if model.reference is None else model.reference)
    interp = runner.interpreter
    rows = []
    for sample in model.samples:
        if len(sample) != runner.n_inputs:
            raise CompressionError(f"{model.description}: a sample has {len(sample)} inputs, the model "
                                   f"{runner.n_inputs}")
        for k, x in enumerate(sample):
            interp.set_input(np.ascontiguousarray(x), k)
        interp.invoke()
        outs = [_as_compared(np.array(interp.get_output(k))) for k in range(runner.n_outputs)]
        if len({o.dtype for o in outs}) != 1:
            raise CompressionError(f"{model.description}: outputs of mixed dtypes are not supported")
        rows.append(np.concatenate(outs))
    return np.stack(rows)


# -- the C program ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchEntry:
    """One model in a :func:`batch_main` program: its index in the batch, C ``prefix``, the ``header`` to
    include (relative to ``main.c``), input and output sizes (elements), float edges, and its samples
    ``inputs`` (``[n_samples, in_size]`` int8, or the uint32 bits of float32 inputs)."""

    index: int
    prefix: str
    header: str
    in_size: int
    out_size: int
    float_in: bool
    float_out: bool
    inputs: np.ndarray


def _c_rows(a: np.ndarray, hexa: bool) -> str:
    rows = []
    for vec in a:
        vals = [f"0x{int(v):08x}u" if hexa else str(int(v)) for v in vec]
        chunks = [", ".join(vals[i:i + _PER_LINE]) for i in range(0, len(vals), _PER_LINE)]
        rows.append("    {\n        " + ",\n        ".join(chunks) + "\n    }")
    return ",\n".join(rows)


def _entry_source(e: BatchEntry) -> str:
    p, P = e.prefix, e.prefix.upper()
    n = len(e.inputs)
    ctype = "uint32_t" if e.float_in else "int8_t"
    out = [f"/* model {e.index} */",
           f"#if {P}_INPUT_SIZE != {e.in_size} || {P}_OUTPUT_SIZE != {e.out_size}",
           f'#error "{p}: model.h sizes differ from the batch ({e.in_size} in, {e.out_size} out)"', "#endif",
           f"static const {ctype} {p}_in[{n}][{e.in_size}] = {{", _c_rows(e.inputs, e.float_in), "};", "",
           f"static void tq_run_{p}(void)", "{", "    int i, rc;", f"    for (i = 0; i < {n}; ++i) {{",
           "        tq_fill();"]
    if e.float_in:
        out.append(f"        memcpy(tq_inf, {p}_in[i], sizeof {p}_in[i]);")
    src = "tq_inf" if e.float_in else f"{p}_in[i]"
    if e.float_in and e.float_out:
        out.append(f"        rc = {p}_invoke_f32({src}, tq_outf);")
    else:
        if e.float_in:
            out += [f"        {p}_quantize_inputs(tq_inf, tq_in8);"]
            src = "tq_in8"
        dst = "tq_tmp8" if e.float_out else "tq_out8"
        out.append(f"        rc = {p}_invoke({src}, {dst});")
        if e.float_out:
            out.append(f"        {p}_dequantize_outputs(tq_tmp8, tq_outf);")
    kind = "f" if e.float_out else "8"
    out += ["        if (rc != 0) {", f'            printf("tq-error {e.index} %d returned %d\\n", i, rc);',
            "            continue;", "        }",
            f"        if (!tq_intact{kind}({e.out_size})) {{",
            f'            printf("tq-error {e.index} %d wrote outside its output\\n", i);', "            continue;",
            "        }", f"        tq_print{kind}({e.index}, i, {e.out_size});", "    }", "}", ""]
    return "\n".join(out)


def batch_main(entries: Sequence[BatchEntry]) -> str:
    """C99 source of the ``main`` that runs every model of a program on its samples."""
    max_out = max(e.out_size for e in entries)
    max_in = max(e.in_size for e in entries)
    lines = ["/* Generated by tinyqml.classical.verify: every model on its samples; do not edit. */",
             "#include <stdint.h>", "#include <stdio.h>", "#include <string.h>", ""]
    lines += [f'#include "{e.header}"' for e in entries]
    lines += ["", f"#define TQ_GUARD {_GUARD}", f"#define TQ_MAX_OUT {max_out}", f"#define TQ_MAX_IN {max_in}",
              "#define TQ_PATTERN(k) ((uint8_t)(((k) * 37u + 11u) & 0xffu))", "",
              "/* outputs with guard bytes either side, filled with a pattern before each call */",
              "static int8_t tq_out8_buf[TQ_GUARD + TQ_MAX_OUT + TQ_GUARD];",
              "static float tq_outf_buf[TQ_GUARD + TQ_MAX_OUT + TQ_GUARD];",
              "static int8_t *const tq_out8 = tq_out8_buf + TQ_GUARD;",
              "static float *const tq_outf = tq_outf_buf + TQ_GUARD;",
              "static int8_t tq_tmp8[TQ_MAX_OUT];", "static int8_t tq_in8[TQ_MAX_IN];", "static float tq_inf[TQ_MAX_IN];",
              "", "static void tq_fill(void)", "{", "    size_t k;", "    uint8_t *f = (uint8_t *)tq_outf_buf;",
              "    for (k = 0; k < sizeof tq_out8_buf; ++k) {", "        tq_out8_buf[k] = (int8_t)TQ_PATTERN(k);",
              "    }", "    for (k = 0; k < sizeof tq_outf_buf; ++k) {", "        f[k] = TQ_PATTERN(k);", "    }", "}",
              "", "/* every byte outside the first `size` outputs still holds the pattern */",
              "static int tq_intact8(int size)", "{", "    size_t k;",
              "    for (k = 0; k < sizeof tq_out8_buf; ++k) {",
              "        if ((k < TQ_GUARD || k >= (size_t)(TQ_GUARD + size))",
              "            && (uint8_t)tq_out8_buf[k] != TQ_PATTERN(k)) {", "            return 0;", "        }", "    }",
              "    return 1;", "}", "",
              "static int tq_intactf(int size)", "{", "    size_t k;", "    const uint8_t *f = (const uint8_t *)tq_outf_buf;",
              "    for (k = 0; k < sizeof tq_outf_buf; ++k) {",
              "        if ((k < TQ_GUARD * sizeof(float) || k >= (TQ_GUARD + (size_t)size) * sizeof(float))",
              "            && f[k] != TQ_PATTERN(k)) {", "            return 0;", "        }", "    }", "    return 1;",
              "}", "",
              "static void tq_print8(int model, int sample, int size)", "{", "    int j;",
              '    printf("tq-out %d %d:", model, sample);', "    for (j = 0; j < size; ++j) {",
              '        printf(" %d", (int)tq_out8[j]);', "    }", '    printf("\\n");', "}", "",
              "static void tq_printf(int model, int sample, int size)", "{", "    int j;", "    uint32_t bits;",
              '    printf("tq-out %d %d:", model, sample);', "    for (j = 0; j < size; ++j) {",
              "        memcpy(&bits, &tq_outf[j], sizeof bits);", '        printf(" %08lx", (unsigned long)bits);',
              "    }", '    printf("\\n");', "}", "",
              "/* unused helpers of a program without float edges are fine: keep -Wunused quiet */",
              "static void tq_touch(void)", "{", "    (void)tq_tmp8;", "    (void)tq_in8;", "    (void)tq_inf;",
              "    (void)tq_intactf;", "    (void)tq_intact8;", "    (void)tq_printf;", "    (void)tq_print8;", "}", ""]
    lines += [_entry_source(e) for e in entries]
    lines += ["int main(void)", "{", "    tq_touch();"]
    lines += [f"    tq_run_{e.prefix}();" for e in entries]
    lines += [f'    printf("tq-done {len(entries)}\\n");', "    return 0;", "}", ""]
    return "\n".join(lines)


def parse_batch_output(stdout: str, shapes: Sequence[tuple[int, int, bool]],
                       first: int = 0) -> list[np.ndarray | str]:
    """Each model's outputs ``[n_samples, out_size]`` from a :func:`batch_main` program's stdout, or the
    error it reported. ``shapes``: (n_samples, out_size, float output) of models ``first``,
    ``first + 1``, ...; a missing ``tq-done``, a missing, repeated or malformed row raises :class:`RunError`."""
    rows: dict[tuple[int, int], str] = {}
    errors: dict[int, str] = {}
    done = None
    for line in stdout.splitlines():
        line = line.strip()
        if (m := _OUT_LINE.match(line)) is not None:
            key = (int(m.group(1)), int(m.group(2)))
            if key in rows:
                raise RunError(f"output of model {key[0]} sample {key[1]} printed twice")
            rows[key] = m.group(3)
        elif (e := _ERROR_LINE.match(line)) is not None:
            errors.setdefault(int(e.group(1)), f"sample {e.group(2)}: {e.group(3)}")
        elif (d := _DONE_LINE.match(line)) is not None:
            done = int(d.group(1))
    if done != len(shapes):
        raise RunError(f"the program ended without 'tq-done {len(shapes)}' (got {done}); "
                       f"{len(rows)} rows read\n{stdout[-2000:]}")
    out: list[np.ndarray | str] = []
    for j, (n, size, is_float) in enumerate(shapes):
        index = first + j
        if index in errors:
            out.append(errors[index])
            continue
        vals = []
        for s in range(n):
            if (index, s) not in rows:
                raise RunError(f"no output of model {index} sample {s}")
            text = rows[(index, s)].split()
            if len(text) != size:
                raise RunError(f"model {index} sample {s}: {len(text)} values, expected {size}")
            vals.append([int(v, 16) for v in text] if is_float else [int(v) for v in text])
        arr = np.array(vals, dtype=np.int64).reshape(n, size)
        if not is_float and (arr.min(initial=0) < -128 or arr.max(initial=0) > 127):
            raise RunError(f"model {index}: values outside int8")
        out.append(arr.astype(np.uint32 if is_float else np.int8))
    extra = {k[0] for k in rows} - set(range(first, first + len(shapes)))
    if extra:
        raise RunError(f"rows of unknown models {sorted(extra)[:5]}")
    return out


# -- building and running ---------------------------------------------------------------------------------

def _compile_runtime(build: HostBuild | CortexM4Build, workdir: Path, timeout: float) -> Path:
    return compile_object(RUNTIME_DIR / "tinyqml_rt.c", workdir / "tinyqml_rt.o", build, timeout)


def _entry(index: int, prefix: str, result: CodegenResult, model: VerifyModel) -> BatchEntry:
    prog = result.program
    float_in, float_out = bool(prog.float_inputs), bool(prog.float_outputs)
    rows = []
    for sample in model.samples:
        parts = [np.ascontiguousarray(x, dtype=np.float32 if float_in else np.int8).reshape(-1) for x in sample]
        flat = np.concatenate(parts)
        rows.append(flat.view(np.uint32) if float_in else flat)
    inputs = np.stack(rows)
    if inputs.shape[1] != result.input_size:
        raise CompressionError(f"{model.description}: samples have {inputs.shape[1]} input values, the "
                               f"generated model takes {result.input_size}")
    return BatchEntry(index, prefix, f"{prefix}/model.h", result.input_size, result.output_size, float_in, float_out,
                  inputs)


def verify_models(models: Sequence[VerifyModel], workdir: str | os.PathLike,
                  target: Literal["host", "cortex-m4"] = "host", build: HostBuild | CortexM4Build | None = None,
                  per_program: int = 100, jobs: int | None = None, timeout: float = 300.0) -> BatchReport:
    """Generate, build (``per_program`` models per program, ``jobs`` programs built and run at once),
    run and check every model against TFLite Micro; raises :class:`~tinyqml.classical.mcu.CompileError`
    or :class:`~tinyqml.classical.mcu.RunError` when a program does not build, crashes (a sanitizer
    report, a fault) or prints something unreadable. Mismatches are in the report, not raised."""
    if target not in ("host", "cortex-m4"):
        raise CompressionError(f"unknown target {target!r}; use 'host' or 'cortex-m4'")
    wanted = HostBuild if target == "host" else CortexM4Build
    build = wanted() if build is None else build
    if not isinstance(build, wanted):
        raise CompressionError(f"target {target!r} takes a {wanted.__name__}, got {type(build).__name__}")
    if not models:
        raise CompressionError("verify_models needs at least one model")
    if per_program < 1:
        raise CompressionError(f"per_program must be >= 1, got {per_program}")
    if target == "cortex-m4":
        require_tools("arm-none-eabi-gcc", "rdimon.specs", "qemu-system-arm", "arm-none-eabi-size")
    jobs = max(1, min(jobs or min(2, os.cpu_count() or 1), 16))
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    codegen_target = Target.HOST if target == "host" else Target.CORTEX_M4

    # 1. the C of every model, one folder per program
    chunks: list[tuple[Path, list[BatchEntry], list[CodegenResult]]] = []
    for start in range(0, len(models), per_program):
        pdir = workdir / f"program{start // per_program:03d}"
        entries, results = [], []
        for i in range(start, min(start + per_program, len(models))):
            prefix = f"m{i:04d}"
            result = generate(models[i].blob, pdir / prefix, CodegenOptions(codegen_target, prefix=prefix))
            results.append(result)
            entries.append(_entry(i, prefix, result, models[i]))
        (pdir / "main.c").write_text(batch_main(entries))
        chunks.append((pdir, entries, results))
    runtime = _compile_runtime(build, workdir, timeout)

    def build_and_run(chunk: tuple[Path, list[BatchEntry], list[CodegenResult]]) -> tuple[Path, str, ElfSize | None]:
        pdir, entries, _ = chunk
        sources = [pdir / "main.c", *(pdir / e.prefix / "model.c" for e in entries), runtime]
        if isinstance(build, HostBuild):
            exe = compile_host(sources, [], pdir / "batch_host", build, timeout)
            return exe, run_host(exe, timeout), None
        elf = compile_cortex_m4(sources, [], pdir / "batch_m4.elf", build, timeout)
        return elf, run_qemu(elf, timeout), elf_size(elf, build.size_tool)

    # 2. build and run the programs in the background while TFLite Micro computes the references
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(build_and_run, c) for c in chunks]
        references = [tflm_outputs(m) for m in models]
        runs = [f.result() for f in futures]

    # 3. compare
    outcomes, programs, sizes = [], [], []
    for (pdir, entries, results), (binary, stdout, size) in zip(chunks, runs):
        programs.append(binary)
        sizes.append(size)
        shapes = [(len(e.inputs), e.out_size, e.float_out) for e in entries]
        parsed = parse_batch_output(stdout, shapes, entries[0].index)
        for e, result, got in zip(entries, results, parsed):
            theirs = references[e.index]
            error = got if isinstance(got, str) else None
            ours = None if isinstance(got, str) else got
            if ours is not None and theirs.dtype != ours.dtype:
                error = f"output dtype {ours.dtype} but TFLite Micro's is {theirs.dtype}"
            outcomes.append(ModelOutcome(e.index, models[e.index], e.prefix, result, ours, theirs, error))
    report = BatchReport(tuple(outcomes), tuple(programs), tuple(sizes), target)
    log.info("%s", report.summary())
    return report


@dataclass(frozen=True)
class HostComparison:
    """The int8 outputs [n, outputs] of the generated C built for the host and of TFLite Micro on the same
    ``.tflite`` and inputs; ``equal`` counts the identical values."""

    host: np.ndarray
    tflm: np.ndarray

    @property
    def equal(self) -> int:
        return int((self.host == self.tflm).sum())

    @property
    def bit_exact(self) -> bool:
        return self.equal == self.tflm.size


def compare_host_with_tflm(blob: bytes, gen: CodegenResult, int8_input: np.ndarray, workdir: Path) -> HostComparison:
    """Build ``gen``'s C with the harness for the host, run it and TFLite Micro on ``int8_input``
    [n, ...] (the model's input quantization already applied), and return both outputs."""
    from tinyqml.classical.mcu import run_harness
    from tinyqml.classical.tflite_export import TFLMRunner

    rows = np.ascontiguousarray(int8_input.reshape(len(int8_input), -1))
    sources = [gen.out_dir / "model.c", gen.out_dir / "tinyqml_rt.c"]
    host = run_harness(sources, [gen.out_dir], rows, gen.output_size, Path(workdir), "host")
    tflm = TFLMRunner(blob).run_all(int8_input)[0].reshape(len(int8_input), -1)
    return HostComparison(host.outputs, tflm)
