"""A measured latency lookup table of the generated C (Once-for-All's latency LUT), per layer of the space.

Every distinct :class:`~tinyqml.classical.arch.Layer` of a supernet (kind, shapes, kernel, stride,
ReLU6; the block it sits in does not matter) gets one entry: the host latency, in microseconds, of
the code generator's C for a model of that layer alone, as the exporter writes it (an int8 PAD
before a convolution whose padding is neither SAME nor VALID; global average pooling as
AVERAGE_POOL_2D + RESHAPE), with seeded random int8 weights, per-channel scales and int32 biases
(:func:`layer_model`). :func:`measure_latency_table` generates the C of all of them with their own
prefixes (``m0000``, ``m0001``, ... as :mod:`~tinyqml.classical.verify` does), compiles them with the
runtime once into one timing program per ``per_program`` models, and runs it: after a warm-up, each
model's batch is grown until it lasts ``min_time_s`` (``clock_gettime(CLOCK_MONOTONIC)``), then
``repeats`` rounds time one batch of every model in turn (a slow spell of a shared machine spreads
over all models instead of spoiling a few), and the median per call is kept.

:meth:`LatencyTable.predict` sums a sub-network's entries (milliseconds); a layer without an entry
raises :class:`MissingLatencyError` naming it. Tables are JSON files (:meth:`LatencyTable.save` /
:meth:`LatencyTable.load`). :func:`validate_latency` times whole sub-networks from the real pipeline
(``TinyMobileNetV2`` -> ``quantize_model`` -> ``to_tflite`` -> codegen) the same way, against the
table's predictions (relative error, rank correlation).

>>> from tinyqml.classical.arch import SupernetConfig
>>> cfg = SupernetConfig()
>>> len(space_layers(cfg))
303
>>> describe_layer(space_layers(cfg)[0])
'conv 12x12x1 -> 12x12x16 k3 s1 relu6'
>>> table = LatencyTable({layer_key(l): 1.0 for l in space_layers(cfg)})
>>> table.predict(cfg.smallest(), cfg) == len(layers(cfg.smallest(), cfg)) / 1000
True
>>> LatencyTable.from_json(table.to_json()) == table
True
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from tinyqml.classical.arch import Arch, Layer, NASError, SupernetConfig, layers, to_mobilenet_config
from tinyqml.classical.codegen import CodegenOptions, generate
from tinyqml.classical.convert import quantize_model
from tinyqml.classical.mcu import (
    HostBuild,
    RunError,
    ToolchainError,
    compile_host,
    compile_object,
    require_tools,
    run_host,
)
from tinyqml.classical.models import TinyMobileNetV2
from tinyqml.classical.tflite_builder import FusedActivation, Op, Padding, Quant, TFLiteBuilder
from tinyqml.classical.tflite_export import tflite_padding, to_tflite

__all__ = ["LatencyOptions", "LatencyTable", "MissingLatencyError", "Timing", "LatencyCheck", "LatencyValidation",
           "layer_key", "describe_layer", "space_layers", "layer_model", "time_models", "measure_latency_table",
           "subnet_tflite", "validate_latency", "FORMAT"]

log = logging.getLogger(__name__)

#: the ``format`` field of a table's JSON file
FORMAT = "tinyqml-latency-lut"
_VERSION = 1
_KINDS = ("conv", "depthwise", "add", "mean", "fc")


class MissingLatencyError(NASError):
    """A layer the latency table has no entry for (the message names it and how to measure it)."""


@dataclass(frozen=True)
class LatencyOptions:
    """How layers are timed: ``repeats`` rounds of one timed batch per model (the median is kept), a
    batch lasting at least ``min_time_s`` seconds, after ``warmup_s`` seconds of calls to each
    program's first model; the host ``build`` (compiler and flags); ``per_program`` models per timing
    program; ``jobs`` compilers at once (``None``: up to 2); ``seed`` of the weights, scales and
    inputs; ``timeout`` seconds per compile or run."""

    repeats: int = 5
    min_time_s: float = 1e-3
    warmup_s: float = 0.05
    build: HostBuild = field(default_factory=HostBuild)
    per_program: int = 512
    jobs: int | None = None
    seed: int = 0
    timeout: float = 600.0

    def __post_init__(self) -> None:
        for name in ("repeats", "per_program", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "seed" else 1):
                raise NASError(f"LatencyOptions.{name} must be an int >= {0 if name == 'seed' else 1}, got {v!r}")
        for name, zero_ok in (("min_time_s", False), ("warmup_s", True), ("timeout", False)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 if zero_ok else v > 0) \
                    or v == float("inf"):
                raise NASError(f"LatencyOptions.{name} must be a finite number of seconds "
                               f"{'>= 0' if zero_ok else '> 0'}, got {v!r}")
        if not isinstance(self.build, HostBuild):
            raise NASError(f"LatencyOptions.build must be a HostBuild, got {type(self.build).__name__}")
        if self.jobs is not None and (isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1):
            raise NASError(f"LatencyOptions.jobs must be None or an int >= 1, got {self.jobs!r}")


# -- layers ------------------------------------------------------------------------------------------------

def layer_key(layer: Layer) -> Layer:
    """The table's key of a layer: the layer without its block index."""
    if not isinstance(layer, Layer):
        raise NASError(f"expected a Layer, got {type(layer).__name__}")
    return replace(layer, block=-1) if layer.block != -1 else layer


def describe_layer(layer: Layer) -> str:
    """``conv 12x12x1 -> 12x12x16 k3 s1 relu6`` (kind, shapes, kernel, stride, activation)."""
    shape = "x".join
    return (f"{layer.kind} {shape(map(str, layer.in_shape))} -> {shape(map(str, layer.out_shape))} "
            f"k{layer.kernel} s{layer.stride}" + (" relu6" if layer.relu6 else ""))


def space_layers(config: SupernetConfig, archs: Iterable[Arch] | None = None) -> tuple[Layer, ...]:
    """The distinct layer keys of ``archs``, or of the whole space (in order of first appearance).

    A block's layers depend only on the resolution, its stage, whether it is the stage's first block,
    its kernel and expand ratio (never on the depths or on the other blocks' choices), so the uniform
    architectures at full depth (every resolution x kernel x expand) hold every layer of the space.
    """
    if not isinstance(config, SupernetConfig):
        raise NASError(f"expected a SupernetConfig, got {type(config).__name__}")
    if archs is None:
        depths, n = (config.max_depth,) * config.n_stages, config.n_positions
        archs = [Arch(r, depths, (k,) * n, (e,) * n) for r in config.resolutions for k in config.kernels
                 for e in config.expands]
    return tuple(dict.fromkeys(layer_key(layer) for arch in archs for layer in layers(arch, config)))


# -- one model per layer -------------------------------------------------------------------------------------

def _act_quant(rng: np.random.Generator) -> Quant:
    return Quant.per_tensor(float(rng.uniform(0.02, 0.1)), int(rng.integers(-20, 21)))


def _padded(b: TFLiteBuilder, layer: Layer, x: int, q: Quant) -> tuple[int, Padding]:
    """The convolution's input and padding code; an int8 PAD first where the exporter writes one."""
    h, w, c = layer.in_shape
    k, s, p = layer.kernel, layer.stride, layer.kernel // 2
    code = tflite_padding((h, w), (k, k), (s, s), (p, p, p, p))
    if code is not None:
        return x, Padding(code)
    pads = b.constant("paddings", np.array([[0, 0], [p, p], [p, p], [0, 0]], dtype=np.int32))
    y = b.tensor("x/pad", (1, h + 2 * p, w + 2 * p, c), quant=q)
    b.op(Op.PAD, [x, pads], [y])
    return y, Padding.VALID


def _weights(b: TFLiteBuilder, rng: np.random.Generator, shape: tuple[int, ...], dim: int, taps: int,
             s_in: float, s_out: float) -> tuple[int, int]:
    """int8 weights with per-channel scales giving requantization multipliers around ``40 / accumulator``
    and int32 biases of the accumulator's size."""
    channels = shape[dim]
    acc = float(np.sqrt(taps) * 74.0 * 73.0) + 1.0
    s_w = (rng.uniform(0.5, 2.0, size=channels) * 40.0 / acc * s_out / s_in).astype(np.float32)
    wt = b.constant("w", rng.integers(-127, 128, size=shape).astype(np.int8), Quant.per_channel(s_w, dim))
    bias = np.round(rng.normal(0.0, acc, size=channels)).astype(np.int32)
    bi = b.constant("b", bias, Quant.per_channel((np.float64(s_in) * s_w.astype(np.float64)).astype(np.float32), 0))
    return wt, bi


def _conv(b: TFLiteBuilder, layer: Layer, rng: np.random.Generator) -> tuple[list[int], int]:
    h, w, c = layer.in_shape
    oh, ow, oc = layer.out_shape
    q_in, q_out = _act_quant(rng), _act_quant(rng)
    x = b.tensor("x", (1, h, w, c), quant=q_in)
    src, padding = _padded(b, layer, x, q_in)
    dw = layer.kind == "depthwise"
    k = layer.kernel
    shape = (1, k, k, oc) if dw else (oc, k, k, c)
    wt, bi = _weights(b, rng, shape, 3 if dw else 0, k * k * (1 if dw else c), q_in.scale[0], q_out.scale[0])
    y = b.tensor("y", (1, oh, ow, oc), quant=q_out)
    extra = {"depthMultiplier": 1} if dw else {}
    b.op(Op.DEPTHWISE_CONV_2D if dw else Op.CONV_2D, [src, wt, bi], [y], padding=padding, strideH=layer.stride,
         strideW=layer.stride, dilationHFactor=1, dilationWFactor=1,
         fusedActivationFunction=FusedActivation.RELU6 if layer.relu6 else FusedActivation.NONE, **extra)
    return [x], y


def _add(b: TFLiteBuilder, layer: Layer, rng: np.random.Generator) -> tuple[list[int], int]:
    q1, q2 = _act_quant(rng), _act_quant(rng)
    q_out = Quant.per_tensor(max(q1.scale[0], q2.scale[0]) * float(rng.uniform(1.0, 2.0)), int(rng.integers(-20, 21)))
    x1, x2 = (b.tensor(n, (1, *layer.in_shape), quant=q) for n, q in (("x1", q1), ("x2", q2)))
    y = b.tensor("y", (1, *layer.out_shape), quant=q_out)
    b.op(Op.ADD, [x1, x2], [y], fusedActivationFunction=FusedActivation.NONE)
    return [x1, x2], y


def _mean(b: TFLiteBuilder, layer: Layer, rng: np.random.Generator) -> tuple[list[int], int]:
    h, w, c = layer.in_shape
    q = _act_quant(rng)  # an int8 pool keeps its input's scale and zero point
    x = b.tensor("x", (1, h, w, c), quant=q)
    pooled = b.tensor("pooled", (1, 1, 1, c), quant=q)
    b.op(Op.AVERAGE_POOL_2D, [x], [pooled], padding=Padding.VALID, strideH=h, strideW=w, filterHeight=h,
         filterWidth=w, fusedActivationFunction=FusedActivation.NONE)
    y = b.tensor("y", (1, c), quant=q)
    b.op(Op.RESHAPE, [pooled, b.constant("shape", np.array([1, c], dtype=np.int32))], [y], newShape=[1, c])
    return [x], y


def _fc(b: TFLiteBuilder, layer: Layer, rng: np.random.Generator) -> tuple[list[int], int]:
    c, n = layer.in_shape[2], layer.out_shape[2]
    q_in, q_out = _act_quant(rng), _act_quant(rng)
    x = b.tensor("x", (1, c), quant=q_in)
    acc = float(np.sqrt(c) * 74.0 * 73.0) + 1.0
    s_w = np.float32(40.0 / acc * q_out.scale[0] / q_in.scale[0])
    wt = b.constant("w", rng.integers(-127, 128, size=(n, c)).astype(np.int8), Quant.per_channel([s_w], 0))
    bias = np.round(rng.normal(0.0, acc, size=n)).astype(np.int32)
    bi = b.constant("b", bias, Quant.per_channel([np.float32(np.float64(q_in.scale[0]) * np.float64(s_w))], 0))
    y = b.tensor("y", (1, n), quant=q_out)
    b.op(Op.FULLY_CONNECTED, [x, wt, bi], [y], fusedActivationFunction=FusedActivation.NONE, keepNumDims=False)
    return [x], y


_BUILDERS = {"conv": _conv, "depthwise": _conv, "add": _add, "mean": _mean, "fc": _fc}


def layer_model(layer: Layer, seed: int = 0) -> bytes:
    """The int8 ``.tflite`` model of ``layer`` alone, as the exporter writes that layer, with weights,
    scales and biases drawn from ``np.random.default_rng(seed)``.

    >>> from tinyqml.classical.tflite_export import operator_names
    >>> operator_names(layer_model(Layer("depthwise", (8, 8, 4), (4, 4, 4), 3, 2, True)))
    ['PAD', 'DEPTHWISE_CONV_2D']
    >>> operator_names(layer_model(Layer("mean", (2, 2, 8), (1, 1, 8))))
    ['AVERAGE_POOL_2D', 'RESHAPE']
    """
    if not isinstance(layer, Layer) or layer.kind not in _BUILDERS:
        raise NASError(f"layer_model takes a Layer of kind {list(_KINDS)}, got {layer!r}")
    b = TFLiteBuilder(f"tinyqml latency: {describe_layer(layer)}")
    inputs, y = _BUILDERS[layer.kind](b, layer, np.random.default_rng(seed))
    return b.build(inputs, [y])


# -- the timing program --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """One model's timing: ``iters`` calls per batch and the mean microseconds per call of each batch;
    ``us`` is their median."""

    iters: int
    repeats_us: tuple[float, ...]

    @property
    def us(self) -> float:
        return float(np.median(self.repeats_us))


_MAIN_HEAD = r"""/* Generated by tinyqml.classical.latency_table: time every model; do not edit. */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <time.h>
@INCLUDES@

#define TQ_MODELS @MODELS@
#define TQ_FIRST @FIRST@
#define TQ_MAX_IN @MAX_IN@
#define TQ_MAX_OUT @MAX_OUT@
#define TQ_REPEATS @REPEATS@
#define TQ_MIN_NS @MIN_NS@
#define TQ_WARM_NS @WARM_NS@

typedef int (*tq_invoke_fn)(const int8_t *, int8_t *);
static int8_t tq_in[TQ_MAX_IN];
static int8_t tq_out[TQ_MAX_OUT];
static long tq_iters[TQ_MODELS];
static double tq_ns[TQ_MODELS][TQ_REPEATS];
static const tq_invoke_fn tq_models[TQ_MODELS] = {
@TABLE@
};

static double tq_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* ns of `iters` calls; negative when a call returns non-zero */
static double tq_batch(tq_invoke_fn fn, long iters)
{
    long i;
    int rc = 0;
    double t0 = tq_now();
    for (i = 0; i < iters; ++i) {
        rc |= fn(tq_in, tq_out);
    }
    return rc != 0 ? -1.0 : tq_now() - t0;
}

/* calls per batch for a batch of at least `min_ns` (growing batches: the model's warm-up); 0 on an error */
static long tq_calibrate(tq_invoke_fn fn, double min_ns)
{
    long iters = 1;
    for (;;) {
        const double dt = tq_batch(fn, iters);
        if (dt < 0.0) {
            return 0;
        }
        if (dt >= min_ns) {
            return iters;
        }
        iters = dt * 8.0 < min_ns ? iters * 8 : (long)((double)iters * 1.25 * min_ns / dt) + 1;
    }
}

/* the first model warms the processor up; each model's batch size is calibrated; then TQ_REPEATS
   rounds time one batch of every model in turn (a slow spell of the machine spreads over all models) */
int main(void)
{
    size_t k;
    int i, r;
    uint32_t s = @SEED@u;
    for (k = 0; k < TQ_MAX_IN; ++k) {
        s = s * 1664525u + 1013904223u;
        tq_in[k] = (int8_t)(s >> 24);
    }
    (void)tq_calibrate(tq_models[0], TQ_WARM_NS);
    for (i = 0; i < TQ_MODELS; ++i) {
        tq_iters[i] = tq_calibrate(tq_models[i], TQ_MIN_NS);
        if (tq_iters[i] == 0) {
            printf("tq-error %d returned non-zero\n", TQ_FIRST + i);
            return 1;
        }
    }
    for (r = 0; r < TQ_REPEATS; ++r) {
        for (i = 0; i < TQ_MODELS; ++i) {
            tq_ns[i][r] = tq_batch(tq_models[i], tq_iters[i]) / (double)tq_iters[i];
        }
    }
    for (i = 0; i < TQ_MODELS; ++i) {
        printf("tq-lat %d %ld", TQ_FIRST + i, tq_iters[i]);
        for (r = 0; r < TQ_REPEATS; ++r) {
            printf(" %.4f", tq_ns[i][r] / 1000.0);
        }
        printf("\n");
    }
    printf("tq-done %d\n", TQ_MODELS);
    return 0;
}
"""


def _timing_main(prefixes: Sequence[str], first: int, max_in: int, max_out: int, options: LatencyOptions,
                 seed: int) -> str:
    """The timing program's ``main.c`` for the models of ``prefixes`` (numbered from ``first``)."""
    values = {"INCLUDES": "\n".join(f'#include "{p}/model.h"' for p in prefixes), "MODELS": str(len(prefixes)),
              "FIRST": str(first), "MAX_IN": str(max_in), "MAX_OUT": str(max_out), "REPEATS": str(options.repeats),
              "MIN_NS": f"{options.min_time_s * 1e9:.1f}", "WARM_NS": f"{options.warmup_s * 1e9:.1f}",
              "TABLE": ",\n".join(f"    {p}_invoke" for p in prefixes), "SEED": str(seed % 2 ** 32)}
    text = _MAIN_HEAD
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def _parse(stdout: str, first: int, n: int) -> list[Timing]:
    """The ``tq-lat`` lines of models ``first .. first + n - 1``; errors and gaps raise :class:`RunError`."""
    found: dict[int, Timing] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["tq-error"]:
            raise RunError(f"model {parts[1]} of the timing program: {' '.join(parts[2:])}")
        if parts[:1] == ["tq-lat"]:
            found[int(parts[1])] = Timing(int(parts[2]), tuple(float(v) for v in parts[3:]))
    if f"tq-done {n}" not in stdout or sorted(found) != list(range(first, first + n)):
        raise RunError(f"the timing program printed {len(found)} of {n} timings:\n{stdout[-2000:]}")
    return [found[i] for i in range(first, first + n)]


def _require_compiler(build: HostBuild) -> None:
    if build.cc == "gcc":
        require_tools("gcc")
    elif shutil.which(build.cc) is None:
        raise ToolchainError(f"the host compiler {build.cc!r} is not on PATH; install it or set HostBuild(cc=...)")


def _compile_object(build: HostBuild, source: Path, timeout: float) -> Path:
    return compile_object(source, source.with_suffix(".o"), build, timeout)


def _generate(blobs: Sequence[bytes], workdir: Path, options: LatencyOptions) -> list[tuple[Path, list[Path]]]:
    """The C of every model (``m0000`` ...), one folder and ``main.c`` per program: (folder, sources)."""
    programs = []
    for start in range(0, len(blobs), options.per_program):
        pdir = workdir / f"program{start // options.per_program:03d}"
        prefixes = [f"m{i:04d}" for i in range(start, min(start + options.per_program, len(blobs)))]
        results = [generate(blobs[int(p[1:])], pdir / p, CodegenOptions(prefix=p)) for p in prefixes]
        main = pdir / "main.c"
        main.write_text(_timing_main(prefixes, start, max(r.input_size for r in results),
                                     max(r.output_size for r in results), options, options.seed + start))
        programs.append((pdir, [main, *(pdir / p / "model.c" for p in prefixes)]))
    return programs


def time_models(blobs: Sequence[bytes], options: LatencyOptions = LatencyOptions(),
                workdir: str | os.PathLike | None = None) -> list[Timing]:
    """Host timings of the generated C of int8 ``.tflite`` models: the C of all of them (own prefixes),
    compiled (``jobs`` at once, the runtime once) into programs of ``per_program`` models that run one
    after the other. A missing compiler raises :class:`~tinyqml.classical.mcu.ToolchainError`."""
    if not blobs:
        raise NASError("time_models needs at least one model")
    _require_compiler(options.build)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="tinyqml-latency-") as tmp:
            return time_models(blobs, options, tmp)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    programs = _generate(blobs, workdir, options)
    runtime = programs[0][0] / "m0000" / "tinyqml_rt.c"
    jobs = options.jobs or min(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        rt = pool.submit(_compile_object, options.build, runtime, options.timeout)
        objects = [list(pool.map(lambda s: _compile_object(options.build, s, options.timeout), srcs))
                   for _, srcs in programs]
        rt_obj = rt.result()
    timings: list[Timing] = []
    for (pdir, _), objs in zip(programs, objects):
        exe = compile_host([*objs, rt_obj], [], pdir / "timing", options.build, options.timeout)
        timings += _parse(run_host(exe, options.timeout), len(timings), len(objs) - 1)
    log.info("timed %d models in %d programs", len(blobs), len(programs))
    return timings


# -- the table -----------------------------------------------------------------------------------------------

def _key_json(layer: Layer) -> dict[str, Any]:
    return {"kind": layer.kind, "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape),
            "kernel": layer.kernel, "stride": layer.stride, "relu6": layer.relu6}


def _no_constant(name: str) -> float:
    raise NASError(f"a latency table holds {name}; accepted: finite numbers (microseconds >= 0, a scale > 0)")


def _key_from_json(d: Mapping[str, Any]) -> Layer:
    try:
        return Layer(str(d["kind"]), tuple(int(v) for v in d["in_shape"]), tuple(int(v) for v in d["out_shape"]),
                     int(d["kernel"]), int(d["stride"]), bool(d["relu6"]))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise NASError(f"a latency table entry needs kind, in_shape, out_shape, kernel, stride, relu6: {d!r}") from exc


@dataclass(frozen=True)
class LatencyTable:
    """Microseconds per layer key (:func:`layer_key`), what the measurement was (``info``: compiler,
    flags, options, machine) and a ``scale`` applied to every prediction (1: the plain sum; layers timed
    alone run from warm caches, so whole networks take longer: :meth:`calibrated` fits it on networks
    timed end to end)."""

    entries: Mapping[Layer, float]
    info: Mapping[str, Any] = field(default_factory=dict)
    scale: float = 1.0

    def __post_init__(self) -> None:
        entries = {}
        for layer, us in dict(self.entries).items():
            if isinstance(us, bool) or not isinstance(us, (int, float)) or not np.isfinite(us) or us < 0:
                raise NASError(f"latency of {describe_layer(layer_key(layer))} must be a finite number >= 0 "
                               f"(microseconds), got {us!r}")
            entries[layer_key(layer)] = float(us)
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not np.isfinite(self.scale) \
                or self.scale <= 0:
            raise NASError(f"LatencyTable.scale must be a finite number > 0, got {self.scale!r}")
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "entries", MappingProxyType(entries))
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, layer: object) -> bool:
        return isinstance(layer, Layer) and layer_key(layer) in self.entries

    def latency_us(self, layer: Layer) -> float:
        """The entry of ``layer``; :class:`MissingLatencyError` when there is none."""
        key = layer_key(layer)
        if key not in self.entries:
            raise MissingLatencyError(f"the latency table has no entry for {describe_layer(key)}; measure it with "
                                      f"measure_latency_table(config, archs=[...]) for the architectures that use it "
                                      f"(or for the whole space) and merge the tables (table.merged(other))")
        return self.entries[key]

    def missing(self, arch: Arch, config: SupernetConfig) -> tuple[Layer, ...]:
        """The layer keys of ``arch`` the table lacks."""
        return tuple(k for k in space_layers(config, [arch]) if k not in self.entries)

    def predict(self, arch: Arch, config: SupernetConfig) -> float:
        """Predicted latency of ``arch`` in milliseconds: the sum of its layers' entries times ``scale``."""
        return self.scale * sum(self.latency_us(layer) for layer in layers(arch, config)) / 1000.0

    def calibrated(self, validation: LatencyValidation) -> LatencyTable:
        """This table with the ``scale`` that best fits (least squares) the whole networks of ``validation``
        (measured with this table: the fitted scale multiplies the current one)."""
        if not isinstance(validation, LatencyValidation) or not validation.checks:
            raise NASError("calibrated takes a non-empty LatencyValidation (validate_latency(table, archs, config))")
        p = np.array([c.predicted_ms for c in validation.checks])
        m = np.array([c.measured_ms for c in validation.checks])
        return replace(self, scale=self.scale * float((p @ m) / (p @ p)))

    def merged(self, other: LatencyTable) -> LatencyTable:
        """Both tables' entries (``other``'s win on a layer in both); ``info`` of ``self``."""
        if not isinstance(other, LatencyTable):
            raise NASError(f"merged takes a LatencyTable, got {type(other).__name__}")
        return LatencyTable({**self.entries, **other.entries}, self.info, self.scale)

    def to_json(self) -> str:
        rows = [_key_json(k) | {"us": us} for k, us in self.entries.items()]
        return json.dumps({"format": FORMAT, "version": _VERSION, "unit": "us", "info": dict(self.info),
                           "scale": self.scale, "entries": rows}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LatencyTable:
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise NASError(f"not a latency table (invalid JSON: {exc})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != _VERSION:
            raise NASError(f"not a latency table: expected format {FORMAT!r} version {_VERSION}")
        rows, info = data.get("entries", []), data.get("info", {})
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows) or not isinstance(info, dict):
            raise NASError("not a latency table: 'entries' must be a list of objects and 'info' an object")
        return cls({_key_from_json(r): r.get("us") for r in rows}, info, data.get("scale", 1.0))

    def save(self, path: str | os.PathLike) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.to_json())
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise NASError(f"cannot read a latency table from {str(path)!r}: {exc}") from exc
        return cls.from_json(text)


def _cc_version(cc: str) -> str:
    try:
        done = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout.splitlines() or ["unknown"])[0]


def _cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _info(options: LatencyOptions) -> dict[str, Any]:
    return {"cc": options.build.cc, "cc_version": _cc_version(options.build.cc),
            "flags": list(options.build.command_flags()), "repeats": options.repeats,
            "min_time_s": options.min_time_s, "seed": options.seed, "cpu": _cpu_model(),
            "machine": platform.machine(), "system": platform.system()}


def measure_latency_table(config: SupernetConfig, archs: Iterable[Arch] | None = None,
                          options: LatencyOptions = LatencyOptions(),
                          workdir: str | os.PathLike | None = None) -> LatencyTable:
    """Measure every distinct layer of the whole space of ``config`` (or only of ``archs``) on the host
    (:func:`layer_model` seeded with ``options.seed`` + the layer's index, timed by :func:`time_models`)."""
    keys = space_layers(config, archs)
    blobs = [layer_model(k, options.seed + i) for i, k in enumerate(keys)]
    timings = time_models(blobs, options, workdir)
    log.info("latency table: %d layers, %.1f us in all", len(keys), sum(t.us for t in timings))
    return LatencyTable({k: t.us for k, t in zip(keys, timings)}, _info(options))


# -- validation ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LatencyCheck:
    """One sub-network: the table's ``predicted_ms`` and the ``measured_ms`` of its whole generated C."""

    arch: Arch
    predicted_ms: float
    measured_ms: float

    @property
    def relative_error(self) -> float:
        """``(predicted - measured) / measured``."""
        return (self.predicted_ms - self.measured_ms) / self.measured_ms


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 0, ties sharing their mean rank."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=np.float64)
    for value in np.unique(v):
        ranks[v == value] = ranks[v == value].mean()
    return ranks


@dataclass(frozen=True)
class LatencyValidation:
    """Predicted vs measured latency of whole sub-networks.

    >>> cfg = SupernetConfig()
    >>> v = LatencyValidation((LatencyCheck(cfg.smallest(), 1.1, 1.0), LatencyCheck(cfg.largest(), 1.8, 2.0)))
    >>> round(v.mean_abs_relative_error, 3), round(v.spearman, 6)
    (0.1, 1.0)
    """

    checks: tuple[LatencyCheck, ...]

    @property
    def relative_errors(self) -> tuple[float, ...]:
        return tuple(c.relative_error for c in self.checks)

    @property
    def mean_abs_relative_error(self) -> float:
        return float(np.mean(np.abs(self.relative_errors)))

    @property
    def spearman(self) -> float:
        """Spearman's rank correlation of predicted and measured (NaN for fewer than two networks)."""
        if len(self.checks) < 2:
            return float("nan")
        a = _ranks([c.predicted_ms for c in self.checks])
        b = _ranks([c.measured_ms for c in self.checks])
        if a.std() == 0 or b.std() == 0:
            return float("nan")
        return float(np.corrcoef(a, b)[0, 1])


def subnet_tflite(arch: Arch, config: SupernetConfig, calibration: int = 8, seed: int = 0) -> bytes:
    """The int8 ``.tflite`` model of ``arch`` as the real pipeline makes it: ``TinyMobileNetV2`` (seeded),
    ``quantize_model`` on ``calibration`` seeded uniform images, ``to_tflite``."""
    net = TinyMobileNetV2(to_mobilenet_config(arch, config), seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(calibration, config.in_channels, arch.resolution, arch.resolution, generator=gen)
    return to_tflite(quantize_model(net, x).qgraph)


def validate_latency(table: LatencyTable, archs: Sequence[Arch], config: SupernetConfig,
                     options: LatencyOptions = LatencyOptions(),
                     workdir: str | os.PathLike | None = None) -> LatencyValidation:
    """Time the whole generated C of each of ``archs`` (from :func:`subnet_tflite`) as the table's layers
    were timed, next to the table's prediction."""
    if not isinstance(table, LatencyTable):
        raise NASError(f"validate_latency takes a LatencyTable, got {type(table).__name__}")
    archs = [config.check(a) for a in archs]
    predicted = [table.predict(a, config) for a in archs]
    timings = time_models([subnet_tflite(a, config, seed=options.seed) for a in archs], options, workdir)
    return LatencyValidation(tuple(LatencyCheck(a, p, t.us / 1000.0) for a, p, t in zip(archs, predicted, timings)))
