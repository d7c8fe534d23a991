"""MCU code generation (issue 7): generated C vs the TFLite Micro interpreter on the same int8 models.

Setup:

- models: the digits CNN (tinyqml ``SmallCNN`` 32/64/64 trained briefly on ``load_digits_data()`` and
  exported with ``export_tflite``; and TensorFlow's converter output ``digits_cnn.tflite``), a
  MobileNetV2-style net (tinyqml ``TinyMobileNetV2`` exported; and ``mobilenetv2_style.tflite``), a
  fully-connected net (``mlp.tflite``; and a tinyqml 64-64-32-10 MLP). The ``.tflite`` fixtures are in
  ``tests/classical/fixtures/`` (TensorFlow 2.21, full-integer quantization);
- C: ``tinyqml.classical.codegen.generate`` (host target), compiled with gcc ``-std=c99 -Wall -Wextra
  -Werror`` at ``-O2`` and ``-O3`` (no ``-march``: generic x86-64) with a timing ``main.c``: warm-up
  calls, then batches of ``tinyqml_invoke`` calls timed with ``clock_gettime(CLOCK_MONOTONIC)`` (and
  ``CLOCK_PROCESS_CPUTIME_ID``). The same file is also built as a shared library and its timing loop is
  called from this process through ctypes: on a shared machine a freshly started process is scheduled
  differently from a long-running one, so the headline numbers come from the library, in the same
  process as TFLite Micro; the executable in its own process is a cross-check;
- TFLite Micro: the pip ``tflite-micro`` interpreter from Python, ``invoke()`` only (the input set
  once), timed the same way in batches. The Python call overhead (a Python method that calls a
  pybind11 no-op, as ``Interpreter.invoke`` calls ``InterpreterWrapper.Invoke``) is measured in the same
  rounds and subtracted; TFLM's own fixed cost per ``invoke()`` (a one-op RESHAPE model) is shown too;
- rounds: every round times each engine for a few batches, in a rotating order (the machine is
  shared: medians over all batches; the paired ratio is the median of per-round ratios);
- arena: the generated ``TINYQML_ARENA_BYTES`` plus ``TINYQML_SCRATCH_BYTES``; the caller's input and
  output buffers are outside it, whereas TFLite Micro's arena *head* (its planned, non-persistent
  section) holds the activations including the input and output tensors and the kernels' scratch,
  and its *tail* holds the interpreter's persistent data. Like with like: ours arena + scratch + I/O
  vs TFLM's head; ours (same) vs TFLM's whole arena is the SRAM each runtime needs;
- planner: no reuse, TFLM-style greedy by size, first use, with and without the in-place pairs the
  code generator offers, vs the liveness bound (``arena.lower_bound``: most bytes alive at one op);
- bit-exactness: the host builds (``-O2`` and ``-O3``) and TFLM on 200 seeded random int8 inputs
  (plus the quantized test images for the digits-trained models), every int8 output compared;
- Cortex-M4: ``compile_cortex_m4`` (mps2-an386, ``-O2``), run under ``qemu-system-arm`` with
  semihosting on a few inputs, compared with the host build; flash and static SRAM of the whole ELF
  (``elf_size``: harness, newlib, start-up code included) and of the model alone (``object_size`` of
  ``model.c`` + ``tinyqml_rt.c``).

Targets (issue 7): >= 3x faster than TFLM, arena <= 0.7x TFLM's, <= 1.05x the lower bound, 100% bit-exact.
Prints markdown tables and writes ``benchmarks/results/mcu.md`` and ``.json`` (``mcu_quick.*`` with ``--quick``).

    .venv/bin/python benchmarks/mcu.py [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, load_average  # noqa: E402

from tinyqml.classical import arena  # noqa: E402
from tinyqml.classical import mcu  # noqa: E402
from tinyqml.classical.codegen import CodegenOptions, CodegenResult, Target, generate  # noqa: E402
from tinyqml.classical.data import DigitsConfig, load_digits_data  # noqa: E402
from tinyqml.classical.models import MobileNetV2Config, SmallCNN, TinyMobileNetV2  # noqa: E402
from tinyqml.classical.tflite_builder import Quant, TFLiteBuilder  # noqa: E402
from tinyqml.classical.tflite_builder import Op as TOp  # noqa: E402
from tinyqml.classical.tflite_export import TFLMRunner, export_tflite, operator_names  # noqa: E402
from tinyqml.classical.train import TrainConfig, evaluate, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIXTURES = ROOT / "tests" / "classical" / "fixtures"
TARGETS = {"speedup": 3.0, "arena": 0.7, "bound": 1.05, "bit_exact": 1.0}
C_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror")
OPT_LEVELS = ("-O2", "-O3")


# --------------------------------------------------------------------------------------------- models

@dataclass
class Model:
    name: str
    family: str           # digits CNN / MobileNetV2-style / fully connected
    source: str           # tinyqml export / TF converter
    blob: bytes
    test_x: np.ndarray | None = None      # int8 NHWC test images (digits-trained models)
    test_y: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def tinyqml_models(epochs: dict[str, int], workdir: Path) -> list[Model]:
    """SmallCNN, TinyMobileNetV2 and an MLP trained on the digits (seed 0), exported to int8 .tflite."""
    data = load_digits_data(DigitsConfig(seed=0))
    calib = data.x_train[:256]
    out = []
    makers: dict[str, tuple[str, Callable[[], nn.Module]]] = {
        "SmallCNN": ("digits CNN", lambda: SmallCNN(seed=0)),
        "TinyMobileNetV2": ("MobileNetV2-style", lambda: TinyMobileNetV2(MobileNetV2Config(), seed=0)),
        "MLP 64-64-32-10": ("fully connected", _mlp),
    }
    for name, (family, make) in makers.items():
        torch.manual_seed(0)
        model = make()
        t0 = time.perf_counter()
        train(model, data, TrainConfig(epochs=epochs[family], seed=0))
        model.eval()
        fp32 = evaluate(model, data.x_test, data.y_test)
        path = export_tflite(model, calib, workdir / f"{name.split()[0]}.tflite")
        blob = path.read_bytes()
        runner = TFLMRunner(blob)
        inp = runner.model.subgraphs[0].tensors[runner.model.subgraphs[0].inputs[0]].quantization
        scale, zp = float(inp.scale[0]), int(inp.zeroPoint[0])
        xf = data.x_test.permute(0, 2, 3, 1).numpy()  # NHWC
        xq = np.clip(np.round(xf / np.float32(scale)) + zp, -128, 127).astype(np.int8)
        int8_acc = 100.0 * float((runner.run_all(xq)[0].reshape(len(xq), -1).argmax(1) == data.y_test.numpy()).mean())
        out.append(Model(f"{name} (tinyqml)", family, "tinyqml export_tflite", blob, xq, data.y_test.numpy(),
                         {"epochs": epochs[family], "fp32_test_acc": fp32, "int8_tflm_test_acc": int8_acc,
                          "train_s": time.perf_counter() - t0}))
    return out


def fixture_models() -> list[Model]:
    return [Model(f"{stem} (TF)", family, "TensorFlow converter", (FIXTURES / f"{stem}.tflite").read_bytes())
            for stem, family in (("digits_cnn", "digits CNN"), ("mobilenetv2_style", "MobileNetV2-style"),
                                 ("mlp", "fully connected"))]


def trivial_model() -> bytes:
    """A one-op RESHAPE model: what one TFLM ``invoke()`` costs with (almost) nothing to compute."""
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), quant=Quant.per_tensor(0.5, 0))
    s = b.constant("shape", np.array([2, 2], dtype=np.int32))
    y = b.tensor("y", (2, 2), quant=Quant.per_tensor(0.5, 0))
    b.op(TOp.RESHAPE, [x, s], [y], newShape=[2, 2])
    return b.build(inputs=[x], outputs=[y])


# ----------------------------------------------------------------------------------------------- C side

TIMING_MAIN = r"""#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "model.h"

/* one seeded input vector (the same one TFLite Micro is timed on) */
static const int8_t input[TINYQML_INPUT_SIZE] = {
@VALUES@
};
static int8_t output[TINYQML_OUTPUT_SIZE];
static volatile int sink;

static double now_ns(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* WARM untimed calls, then BATCHES batches of ITERS calls: the mean ns per call of each batch by
   the wall clock (CLOCK_MONOTONIC) and by CPU time (CLOCK_PROCESS_CPUTIME_ID, which does not count
   time the process spends descheduled); 0 on success */
int tinyqml_bench(long iters, long batches, long warm, double *wall_ns, double *cpu_ns);
int tinyqml_bench(long iters, long batches, long warm, double *wall_ns, double *cpu_ns)
{
    long i, b;
    for (i = 0; i < warm; ++i) {
        if (tinyqml_invoke(input, output) != 0) {
            return 3;
        }
        sink += output[0];
    }
    for (b = 0; b < batches; ++b) {
        double c0 = now_ns(CLOCK_PROCESS_CPUTIME_ID), t0 = now_ns(CLOCK_MONOTONIC), t1, c1;
        for (i = 0; i < iters; ++i) {
            if (tinyqml_invoke(input, output) != 0) {
                return 3;
            }
            sink += output[0];
        }
        t1 = now_ns(CLOCK_MONOTONIC);
        c1 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
        wall_ns[b] = (t1 - t0) / (double)iters;
        cpu_ns[b] = (c1 - c0) / (double)iters;
    }
    return 0;
}

#ifndef TINYQML_BENCH_LIBRARY
/* usage: timing ITERS BATCHES WARMUP; one line per batch: wall ns and CPU ns per call */
int main(int argc, char **argv)
{
    long batches, b;
    double *wall, *cpu;
    int rc;
    if (argc != 4) {
        return 2;
    }
    batches = atol(argv[2]);
    wall = malloc(sizeof(double) * (size_t)(batches > 0 ? batches : 1));
    cpu = malloc(sizeof(double) * (size_t)(batches > 0 ? batches : 1));
    if (wall == NULL || cpu == NULL) {
        return 4;
    }
    rc = tinyqml_bench(atol(argv[1]), batches, atol(argv[3]), wall, cpu);
    for (b = 0; rc == 0 && b < batches; ++b) {
        printf("tinyqml-ns %.1f %.1f\n", wall[b], cpu[b]);
    }
    free(wall);
    free(cpu);
    return rc;
}
#endif
"""


def timing_main(x: np.ndarray) -> str:
    vals = [str(int(v)) for v in x.reshape(-1)]
    rows = [", ".join(vals[i:i + 24]) for i in range(0, len(vals), 24)]
    return TIMING_MAIN.replace("@VALUES@", "    " + ",\n    ".join(rows))


def c_sources(gen: CodegenResult) -> list[Path]:
    return [gen.out_dir / "model.c", gen.out_dir / "tinyqml_rt.c"]


def build_timing(gen: CodegenResult, x: np.ndarray, workdir: Path) -> dict[str, tuple[Path, Path]]:
    """Per optimization level: the timing executable and the same file as a shared library (no ``main``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    main_c = workdir / "timing_main.c"
    main_c.write_text(timing_main(x))
    out = {}
    for opt in OPT_LEVELS:
        exe = mcu.compile_host([main_c, *c_sources(gen)], [gen.out_dir], workdir / f"timing{opt}",
                               mcu.HostBuild(flags=(*C_FLAGS, opt)))
        lib = mcu.compile_host([main_c, *c_sources(gen)], [gen.out_dir], workdir / f"libtiming{opt}.so",
                               mcu.HostBuild(flags=(*C_FLAGS, opt, "-fPIC", "-shared", "-Wl,-Bsymbolic",
                                                    "-DTINYQML_BENCH_LIBRARY")))
        out[opt] = (exe, lib)
    return out


class CBench:
    """``tinyqml_bench`` of a timing library loaded into this process (timed inside C, like the executable)."""

    def __init__(self, lib: Path) -> None:
        self.lib = ctypes.CDLL(str(lib))
        self.fn = self.lib.tinyqml_bench
        self.fn.restype = ctypes.c_int
        self.fn.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.POINTER(ctypes.c_double),
                            ctypes.POINTER(ctypes.c_double)]

    def __call__(self, iters: int, batches: int, warm: int) -> list[tuple[float, float]]:
        wall, cpu = (ctypes.c_double * batches)(), (ctypes.c_double * batches)()
        if self.fn(iters, batches, warm, wall, cpu) != 0:
            raise RuntimeError("tinyqml_invoke returned non-zero")
        return list(zip(wall, cpu))


def c_batches(exe: Path, iters: int, batches: int, warm: int) -> list[tuple[float, float]]:
    """(wall, CPU) ns per call of each batch."""
    done = subprocess.run([str(exe), str(iters), str(batches), str(warm)], capture_output=True, text=True,
                          timeout=600, check=True)
    return [(float(line.split()[1]), float(line.split()[2])) for line in done.stdout.splitlines()
            if line.startswith("tinyqml-ns ")]


def py_batches(fn: Callable[[], Any], iters: int, batches: int) -> list[tuple[float, float]]:
    """(wall, CPU) ns per call of each batch: ``perf_counter_ns`` and ``thread_time_ns``."""
    out = []
    for _ in range(batches):
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        for _ in range(iters):
            fn()
        t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        out.append(((t1 - t0) / iters, (c1 - c0) / iters))
    return out


class _PyCall:
    """``Interpreter.invoke``'s shape (a Python method calling a pybind11 method) around a no-op."""

    def __init__(self) -> None:
        self._f = torch._C._get_tracing_state  # a pybind11 function that returns None

    def invoke(self) -> Any:
        return self._f()


def iters_for(one_call_ns: float, batch_s: float) -> int:
    return max(5, int(batch_s * 1e9 / max(one_call_ns, 1.0)))


def latency(gen: CodegenResult, blob: bytes, x: np.ndarray, workdir: Path, rounds: int, per_round: int,
            batch_s: float, trivial: bytes) -> dict[str, Any]:
    builds = build_timing(gen, x, workdir)
    runner = TFLMRunner(blob)
    runner.interpreter.set_input(x.reshape(runner.model.subgraphs[0].tensors[
        runner.model.subgraphs[0].inputs[0]].shape), 0)
    tiny = TFLMRunner(trivial)
    tiny.interpreter.set_input(np.zeros((1, 4), np.int8), 0)
    engines: dict[str, Callable[[], list[tuple[float, float]]]] = {}
    for opt, (exe, lib) in builds.items():
        bench = CBench(lib)
        it = iters_for(statistics.median(w for w, _ in bench(20, 3, 5)), batch_s)
        engines[f"C {opt}"] = (lambda bench=bench, it=it, k=per_round: bench(it, k, max(3, it // 10)))
        if opt == "-O2":  # cross-check: the executable in its own process
            engines[f"C {opt} process"] = (lambda exe=exe, it=it, k=per_round: c_batches(exe, it, k, max(3, it // 10)))
    py = {"TFLM invoke": runner.interpreter.invoke, "Python call": _PyCall().invoke,
          "TFLM trivial invoke": tiny.interpreter.invoke}
    for name, fn in py.items():
        for _ in range(20):
            fn()
        it = iters_for(statistics.median(w for w, _ in py_batches(fn, 10, 3)), batch_s)
        engines[name] = (lambda fn=fn, it=it, k=per_round: (py_batches(fn, max(3, it // 10), 1),
                                                           py_batches(fn, it, k))[1])
    names = list(engines)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    round_medians: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            got = engines[n]()
            wall[n] += [w for w, _ in got]
            cpu[n] += [c for _, c in got]
            round_medians[n].append(statistics.median(w for w, _ in got))
    med = {n: statistics.median(v) for n, v in wall.items()}
    cmed = {n: statistics.median(v) for n, v in cpu.items()}
    out: dict[str, Any] = {"ns": {n: {"median": med[n], "min": min(v), "p90": float(np.percentile(v, 90)),
                                      "cpu_median": cmed[n], "batches": len(v)} for n, v in wall.items()}}
    out["tflm_ns"] = med["TFLM invoke"] - med["Python call"]
    out["tflm_cpu_ns"] = cmed["TFLM invoke"] - cmed["Python call"]
    for opt in OPT_LEVELS:
        out[f"ratio {opt}"] = out["tflm_ns"] / med[f"C {opt}"]
        out[f"cpu ratio {opt}"] = out["tflm_cpu_ns"] / cmed[f"C {opt}"]
        paired = [(t - o) / c for t, o, c in zip(round_medians["TFLM invoke"], round_medians["Python call"],
                                                 round_medians[f"C {opt}"])]
        out[f"paired ratio {opt}"] = statistics.median(paired)
    return out


# --------------------------------------------------------------------------------------------- memory

def tflm_allocations(runner: TFLMRunner) -> dict[str, int]:
    """Head (planned activations, I/O and scratch), tail (persistent) and total of TFLM's arena."""
    got = runner.allocations()
    if set(got) != {"total", "head", "tail"}:
        raise RuntimeError(f"unexpected TFLite Micro allocation report: {got}")
    return got


def planner_rows(gen: CodegenResult) -> dict[str, Any]:
    """Every strategy on the code generator's own buffers and in-place offers (as ``plan_arena`` builds them)."""
    p, m, lives = gen.program, gen.program.model, gen.placement.lifetimes
    buffers = [arena.Buffer(f"t{t}", m.tensors[t].size, *lives[t]) for t in sorted(lives)]
    pairs = [arena.InPlace(f"t{s.inplace_src}", f"t{s.output}") for i, s in enumerate(p.steps)
             if s.inplace_src is not None and s.inplace_src in lives and s.output in lives
             and lives[s.inplace_src][1] == i and lives[s.output][0] == i]
    row: dict[str, Any] = {"buffers": len(buffers), "inplace_offers": len(pairs),
                           "used_inplace": len(gen.placement.inplace)}
    if not buffers:
        return row | {"no-reuse": 0, "bound": 0, "bound_no_inplace": 0, "chosen": 0}
    row["no-reuse"] = arena.NoReuse().plan(buffers).size
    for s in (arena.GreedyBySize(), arena.FirstUse()):
        row[s.name] = s.plan(buffers).check().size
        row[f"{s.name} + in-place"] = s.plan(buffers, pairs).check().size
    row["bound_inplace"] = arena.lower_bound(buffers, pairs)
    row["bound_no_inplace"] = arena.lower_bound(buffers)
    row["bound"] = min(row["bound_inplace"], row["bound_no_inplace"])
    row["codegen_bound"] = gen.placement.lower_bound
    row["chosen"] = gen.arena_bytes
    row["strategy"] = gen.placement.strategy
    return row


# ----------------------------------------------------------------------------------------- correctness

def random_inputs(gen: CodegenResult, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, size=(n, gen.input_size)).astype(np.int8)


def bit_exact(gen: CodegenResult, blob: bytes, xs: np.ndarray, workdir: Path) -> dict[str, Any]:
    runner = TFLMRunner(blob)
    shape = runner.model.subgraphs[0].tensors[runner.model.subgraphs[0].inputs[0]].shape
    ref = runner.run_all(xs.reshape(len(xs), *shape[1:]))[0].reshape(len(xs), -1)
    row: dict[str, Any] = {"inputs": len(xs), "outputs": int(ref.size), "distinct_values": int(len(np.unique(ref)))}
    for opt in OPT_LEVELS:
        run = mcu.run_harness(c_sources(gen), [gen.out_dir], xs, gen.output_size, workdir / f"exact{opt}", "host",
                              mcu.HostBuild(flags=(*C_FLAGS, opt)), timeout=300)
        row[f"equal {opt}"] = int((run.outputs == ref).sum())
        row[f"rows equal {opt}"] = int((run.outputs == ref).all(axis=1).sum())
    row["fraction"] = min(row[f"equal {o}"] for o in OPT_LEVELS) / ref.size
    row["_tflm_allocations"] = tflm_allocations(runner)
    return row


def cortex_m4(blob: bytes, xs: np.ndarray, workdir: Path) -> dict[str, Any]:
    gen = generate(blob, workdir / "src", CodegenOptions(Target.CORTEX_M4))
    host = mcu.run_harness(c_sources(gen), [gen.out_dir], xs, gen.output_size, workdir / "host", "host")
    t0 = time.perf_counter()
    m4 = mcu.run_harness(c_sources(gen), [gen.out_dir], xs, gen.output_size, workdir / "m4", "cortex-m4",
                         timeout=300)
    qemu_s = time.perf_counter() - t0
    obj = mcu.object_size(c_sources(gen), [gen.out_dir], workdir / "obj")
    return {"inputs": len(xs), "equal_to_host": bool(np.array_equal(m4.outputs, host.outputs)),
            "elf_flash": m4.size.flash, "elf_sram": m4.size.sram, "model_flash": obj.flash, "model_sram": obj.sram,
            "model_text": obj.text, "model_bss": obj.bss, "codegen_const_bytes": gen.flash_bytes,
            "build_and_qemu_s": qemu_s}


# ------------------------------------------------------------------------------------------------ tables

def speedup(lat: dict[str, Any]) -> float:
    """The speed-up judged against the target: the best optimization level, the lower of the two clocks."""
    return min(max(lat["ratio -O2"], lat["ratio -O3"]), max(lat["cpu ratio -O2"], lat["cpu ratio -O3"]))


def _ok(met: bool) -> str:
    return "met" if met else "**missed**"


def tables(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    L = ["## MCU code generation vs TFLite Micro (issue 7)", "",
         f"CPU: {meta['cpu']}; {meta['cc']}; tflite-micro {meta['tflm']}; {meta['rounds']} rounds x "
         f"{meta['per_round']} batches of ~{meta['batch_ms']:g} ms per engine, interleaved (shared machine, load "
         f"average at the end {meta['load']}); {meta['n_random']} seeded random inputs per model (seed "
         f"{meta['seed']}); {'quick run' if meta['quick'] else 'full run'}; commit {meta['provenance']['commit']}"
         + (f" with uncommitted {', '.join(meta['provenance']['uncommitted'])} (sha256 "
            + ", ".join(f"{Path(k).name} {v}" for k, v in meta['provenance']['sha256'].items()) + ")"
            if meta['provenance']['uncommitted'] else ""), "",
         "### Models", "", "| model | source | operators | MACs | weights+consts (B) | test acc fp32 / int8 TFLM |",
         "|---|---|---|---:|---:|---|"]
    for r in rows:
        acc = (f"{r['meta']['fp32_test_acc']:.1f}% / {r['meta']['int8_tflm_test_acc']:.1f}% "
               f"({r['meta']['epochs']} epochs)" if "fp32_test_acc" in r["meta"] else "")
        L.append(f"| {r['name']} | {r['source']} | {len(r['ops'])}: {' '.join(r['ops'])} | {r['macs']:,} | "
                 f"{r['const_bytes']:,} | {acc} |")
    L += ["", "### Host latency per inference (µs, median over batches) and speed-up over TFLite Micro", "",
          "C: `timing_main.c` built as a shared library and called in the benchmark's process (timed inside C with "
          "`clock_gettime(CLOCK_MONOTONIC)`), so both engines run under the same scheduling on this shared machine. "
          f"TFLM column: `invoke()` median minus the Python call overhead of a trivial call (its own column); "
          f"ratio = TFLM / C by the wall clock; paired = median over rounds of the per-round wall ratio; CPU-time "
          f"ratio = the same from CPU-time clocks (`CLOCK_PROCESS_CPUTIME_ID` / `thread_time_ns`: time descheduled "
          f"by other jobs not counted). Target >= {TARGETS['speedup']:g}x, judged on the lower of the best wall and "
          f"the best CPU-time ratio (met only when both clocks agree).",
          "", "| model | C -O2 | C -O3 | TFLM invoke | Python call | TFLM (net) | TFLM 1-op model | ratio -O2 | "
          "ratio -O3 | paired -O2 / -O3 | CPU-time ratio -O2 / -O3 | target |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lat, ns = r["latency"], r["latency"]["ns"]
        best = speedup(lat)
        L.append(f"| {r['name']} | {ns['C -O2']['median'] / 1e3:.2f} | {ns['C -O3']['median'] / 1e3:.2f} | "
                 f"{ns['TFLM invoke']['median'] / 1e3:.2f} | {ns['Python call']['median'] / 1e3:.3f} | "
                 f"{lat['tflm_ns'] / 1e3:.2f} | {ns['TFLM trivial invoke']['median'] / 1e3:.2f} | "
                 f"{lat['ratio -O2']:.2f}x | {lat['ratio -O3']:.2f}x | {lat['paired ratio -O2']:.2f}x / "
                 f"{lat['paired ratio -O3']:.2f}x | {lat['cpu ratio -O2']:.2f}x / {lat['cpu ratio -O3']:.2f}x | "
                 f"{_ok(best >= TARGETS['speedup'])} |")
    L += ["", "Cross-checks (µs): the -O2 timing executable in its own process (median wall / CPU), and the fastest "
          "batch of each engine (the least disturbed by other jobs): " + "; ".join(
        f"{r['name']}: own process {r['latency']['ns']['C -O2 process']['median'] / 1e3:.2f} / "
        f"{r['latency']['ns']['C -O2 process']['cpu_median'] / 1e3:.2f}, fastest C -O2 "
        f"{r['latency']['ns']['C -O2']['min'] / 1e3:.2f}, -O3 {r['latency']['ns']['C -O3']['min'] / 1e3:.2f}, TFLM "
        f"{r['latency']['ns']['TFLM invoke']['min'] / 1e3:.2f}" for r in rows), "",
          "### Arena (bytes): generated C vs TFLite Micro", "",
          "ours = `TINYQML_ARENA_BYTES` + `TINYQML_SCRATCH_BYTES` + the caller's input and output buffers (TFLM keeps "
          "those tensors in its arena); TFLM head = planned activations + I/O + kernel scratch, tail = persistent "
          f"interpreter data. Target: ours / TFLM <= {TARGETS['arena']:g} (like with like: vs the head).", "",
          "| model | arena | scratch | I/O | ours | TFLM head | TFLM tail | TFLM total | ours / head | "
          "(arena+scratch) / head | ours / total | target (vs head) |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        a = r["arena"]
        L.append(f"| {r['name']} | {a['arena']:,} | {a['scratch']:,} | {a['io']:,} | {a['ours']:,} | "
                 f"{a['tflm_head']:,} | {a['tflm_tail']:,} | {a['tflm_total']:,} | {a['ratio_head']:.2f}x | "
                 f"{a['ratio_head_no_io']:.2f}x | {a['ratio_total']:.2f}x | "
                 f"{_ok(a['ratio_head'] <= TARGETS['arena'])} |")
    L += ["", "### Memory planner vs the liveness lower bound (arena bytes, 16-byte aligned)", "",
          "bound = most bytes alive at one op (the smaller of: in-place groups merged, or none merged). "
          f"Target: chosen / bound <= {TARGETS['bound']:g}.", "",
          "| model | buffers | in-place offers / used | no reuse | greedy by size | first use | greedy + in-place | "
          "first use + in-place | chosen (strategy) | bound | chosen / bound | target |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        p = r["planner"]
        ratio = p["chosen"] / p["bound"] if p["bound"] else 1.0
        L.append(f"| {r['name']} | {p['buffers']} | {p['inplace_offers']} / {p['used_inplace']} | {p['no-reuse']:,} | "
                 f"{p['greedy-by-size']:,} | {p['first-use']:,} | {p['greedy-by-size + in-place']:,} | "
                 f"{p['first-use + in-place']:,} | {p['chosen']:,} ({p['strategy']}) | {p['bound']:,} | "
                 f"{ratio:.3f}x | {_ok(ratio <= TARGETS['bound'])} |")
    L += ["", "### Bit-exactness: generated C (host) vs TFLite Micro", "",
          "| model | inputs | int8 outputs | equal -O2 | equal -O3 | rows equal -O2 / -O3 | distinct TFLM values | "
          "bit-exact | target |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        e = r["exact"]
        L.append(f"| {r['name']} | {e['inputs']} | {e['outputs']:,} | {e['equal -O2']:,} | {e['equal -O3']:,} | "
                 f"{e['rows equal -O2']} / {e['rows equal -O3']} | {e['distinct_values']} | "
                 f"{100 * e['fraction']:.2f}% | "
                 f"{_ok(e['fraction'] >= TARGETS['bit_exact'])} |")
    L += ["", "### Cortex-M4 (QEMU mps2-an386, arm-none-eabi-gcc -O2, semihosting)", ""]
    if any("m4" in r for r in rows):
        L += ["flash = text + data, SRAM = data + bss (static; stack on top). Whole ELF: harness (its inputs as "
              "const data), newlib, start-up code; model: `model.c` + `tinyqml_rt.c` objects (before "
              "`--gc-sections`).", "",
              "| model | inputs | QEMU == host | ELF flash | ELF SRAM | model flash | model SRAM | model .bss | "
              "codegen consts |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            m = r.get("m4")
            if m is None:
                continue
            L.append(f"| {r['name']} | {m['inputs']} | {'yes' if m['equal_to_host'] else '**no**'} | "
                     f"{m['elf_flash']:,} | {m['elf_sram']:,} | {m['model_flash']:,} | {m['model_sram']:,} | "
                     f"{m['model_bss']:,} | {m['codegen_const_bytes']:,} |")
    else:
        L.append(f"skipped: {meta.get('m4_skipped', 'no Cortex-M4 tools')}")
    L += ["", "### Targets", "", "| model | speed-up (best of -O2/-O3, the lower of wall and CPU time) | "
          "arena / TFLM head | arena / TFLM total | "
          "planner / bound | bit-exact | QEMU == host |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lat, a, p, e = r["latency"], r["arena"], r["planner"], r["exact"]
        best = speedup(lat)
        ratio = p["chosen"] / p["bound"] if p["bound"] else 1.0
        m4 = "" if "m4" not in r else ("yes" if r["m4"]["equal_to_host"] else "**no**")
        L.append(f"| {r['name']} | {best:.2f}x ({_ok(best >= TARGETS['speedup'])}; wall "
                 f"{max(lat['ratio -O2'], lat['ratio -O3']):.2f}x, CPU "
                 f"{max(lat['cpu ratio -O2'], lat['cpu ratio -O3']):.2f}x) | "
                 f"{a['ratio_head']:.2f}x "
                 f"({_ok(a['ratio_head'] <= TARGETS['arena'])}) | {a['ratio_total']:.2f}x "
                 f"({_ok(a['ratio_total'] <= TARGETS['arena'])}) | {ratio:.3f}x ({_ok(ratio <= TARGETS['bound'])}) | "
                 f"{100 * e['fraction']:.2f}% ({_ok(e['fraction'] >= TARGETS['bit_exact'])}) | {m4} |")
    return "\n".join(L) + "\n"


# -------------------------------------------------------------------------------------------------- main

def _tool_versions() -> tuple[str, str]:
    cc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    try:
        from importlib.metadata import version

        tflm = version("tflite-micro")
    except Exception:  # noqa: BLE001 (a version string is informative only)
        tflm = "unknown"
    return cc, tflm


def provenance() -> dict[str, Any]:
    """The commit, and the state of the files the numbers depend on (the runtime and the code generator)."""
    import hashlib

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "unknown"

    files = ["classical/runtime/tinyqml_rt.c", "classical/runtime/tinyqml_rt.h", "classical/codegen.py",
             "classical/arena.py"]
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": [line.split(maxsplit=1)[-1] for line in git("status", "--porcelain", "--", *files).splitlines()],
            "sha256": {f: hashlib.sha256((ROOT / f).read_bytes()).hexdigest()[:12] for f in files}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few epochs, rounds and inputs (a smoke run)")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--per-round", type=int, default=5, help="batches per engine per round")
    p.add_argument("--batch-ms", type=float, default=5.0)
    p.add_argument("--inputs", type=int, default=200, help="seeded random inputs for the bit-exactness check")
    p.add_argument("--m4-inputs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    args = p.parse_args()
    epochs = {"digits CNN": 8, "MobileNetV2-style": 15, "fully connected": 30}
    if args.quick:
        args.rounds, args.per_round, args.batch_ms, args.inputs, args.m4_inputs = 3, 2, 2.0, 40, 2
        epochs = {"digits CNN": 1, "MobileNetV2-style": 2, "fully connected": 5}
    mcu.require_tools("gcc")
    torch.set_num_threads(1)
    have = mcu.tools_available()
    m4_ok = all(have[t] for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "rdimon.specs", "qemu-system-arm"))
    cc, tflm_version = _tool_versions()
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="tinyqml_mcu_bench_") as tmp:
        work = Path(tmp)
        models = tinyqml_models(epochs, work) + fixture_models()
        print(f"models ready ({time.time() - t0:.0f} s)", flush=True)
        trivial = trivial_model()
        for k, model in enumerate(models):
            wd = work / f"m{k}"
            gen = generate(model.blob, wd / "src")
            xs = random_inputs(gen, args.inputs, args.seed + k)
            if model.test_x is not None:
                test = model.test_x.reshape(len(model.test_x), -1)
                xs = np.concatenate([xs, test[:args.inputs] if args.quick else test])
            exact = bit_exact(gen, model.blob, xs, wd)
            alloc = exact.pop("_tflm_allocations")
            io = gen.input_size + gen.output_size
            ours = gen.arena_bytes + gen.scratch_bytes + io
            mem = {"arena": gen.arena_bytes, "scratch": gen.scratch_bytes, "io": io, "ours": ours,
                   "tflm_head": alloc["head"], "tflm_tail": alloc["tail"], "tflm_total": alloc["total"],
                   "ratio_head": ours / alloc["head"],
                   "ratio_head_no_io": (gen.arena_bytes + gen.scratch_bytes) / alloc["head"],
                   "ratio_total": ours / alloc["total"]}
            lat = latency(gen, model.blob, xs[0], wd / "timing", args.rounds, args.per_round, args.batch_ms / 1e3,
                          trivial)
            row = {"name": model.name, "family": model.family, "source": model.source, "meta": model.meta,
                   "ops": operator_names(model.blob), "macs": gen.macs, "const_bytes": gen.flash_bytes,
                   "latency": lat, "arena": mem, "planner": planner_rows(gen), "exact": exact}
            if m4_ok:
                row["m4"] = cortex_m4(model.blob, xs[: args.m4_inputs], wd / "m4")
            rows.append(row)
            print(f"{model.name}: C -O2 {lat['ns']['C -O2']['median'] / 1e3:.2f} µs, TFLM "
                  f"{lat['tflm_ns'] / 1e3:.2f} µs ({lat['ratio -O2']:.2f}x); arena {ours} vs TFLM head "
                  f"{alloc['head']}; bit-exact {100 * exact['fraction']:.2f}% ({time.time() - t0:.0f} s)", flush=True)
    meta = {"cpu": cpu_model(), "cc": cc, "tflm": tflm_version, "rounds": args.rounds, "per_round": args.per_round,
            "batch_ms": args.batch_ms, "n_random": args.inputs, "seed": args.seed, "quick": args.quick,
            "load": tuple(round(v, 2) for v in (load_average() or ())), "epochs": epochs, "targets": TARGETS,
            "wall_s": round(time.time() - t0, 1), "provenance": provenance()}
    if not m4_ok:
        missing = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "rdimon.specs", "qemu-system-arm")
                   if not have[t]]
        meta["m4_skipped"] = f"missing {', '.join(missing)} (run `make mcu-tools`)"
    report = tables(rows, meta)
    print(report)
    stem = "mcu_quick" if args.quick else "mcu"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{stem}.md").write_text(report)
    (args.results_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "models": rows}, indent=2,
                                                              default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
