"""Efficiency predictors of once-for-all sub-networks: MACs, parameters, peak SRAM and latency.

:func:`peak_sram` is the peak SRAM of the generated C in the code generator's own terms
(:attr:`~tinyqml.classical.codegen.CodegenResult.peak_sram_bytes`: activation arena + kernel
scratch + float-edge buffers) for the int8 model of a sub-network as the real pipeline makes it
(``TinyMobileNetV2(to_mobilenet_config(arch, config))`` -> ``quantize_model`` -> ``to_tflite`` ->
:func:`~tinyqml.classical.codegen.generate`), computed from the shapes alone: the sub-network's
:func:`~tinyqml.classical.arch.layers` become the code generator's steps (an int8 PAD before each
convolution whose padding is neither SAME nor VALID, as the exporter writes it; global average pooling
as AVERAGE_POOL_2D + RESHAPE; int8 model input and output), with the same tensor lifetimes, in-place
offers (a depthwise convolution where the ring-buffer kernel is safe, the residual ADD, the RESHAPE)
and kernel scratch (int32 accumulators, the ring of an in-place depthwise), planned by the shared
:func:`~tinyqml.classical.arena.plan_with_scratch`. That is about a millisecond per network instead of
the pipeline's tens to hundreds, and results are cached per network
(:meth:`~tinyqml.classical.arch.Arch.canonical`; a cached call is tens of microseconds).

:func:`efficiency_costs` wraps the costs as a :class:`~tinyqml.search.CostModel` over :class:`Arch`
candidates (or their search-space configurations): ``macs``, ``params``, ``peak_sram`` (bytes) and,
with a measured :class:`~tinyqml.classical.latency_table.LatencyTable`, ``latency`` (ms).

>>> from tinyqml.classical.arch import SupernetConfig
>>> cfg = SupernetConfig()
>>> small, big = cfg.smallest(), cfg.largest()
>>> peak_sram(small, cfg) < peak_sram(big, cfg)
True
>>> plan = sram_plan(small, cfg)
>>> plan.peak_sram_bytes == plan.arena_bytes + plan.scratch_bytes == peak_sram(small, cfg)
True
>>> costs = efficiency_costs(cfg)
>>> costs.names
('macs', 'params', 'peak_sram')
>>> from tinyqml.search import Constraint
>>> costs.feasible(small, [Constraint("peak_sram", max=peak_sram(small, cfg))])
True
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from tinyqml.classical import arena
from tinyqml.classical.arch import Arch, Layer, NASError, SupernetConfig, layers, macs, params
from tinyqml.classical.codegen import ARENA_ALIGN, dw_inplace_safe, pad_amount
from tinyqml.classical.latency_table import LatencyTable
from tinyqml.classical.tflite_export import tflite_padding
from tinyqml.search import CostModel

__all__ = ["SramPlan", "sram_plan", "peak_sram", "efficiency_costs"]


@dataclass(frozen=True)
class SramPlan:
    """The predicted memory of one sub-network's generated C (bytes): the activation ``arena``, the
    kernels' ``scratch``, the planner's ``strategy`` and how many ``steps`` the program has."""

    arena_bytes: int
    scratch_bytes: int
    strategy: str
    steps: int

    @property
    def peak_sram_bytes(self) -> int:
        """Arena + scratch (the model's edges are int8: no float-edge buffers), as ``CodegenResult``'s."""
        return self.arena_bytes + self.scratch_bytes


@dataclass(frozen=True)
class _Step:
    """One step of the generated program: its output's bytes, the steps it reads (``-1``: the model
    input), int32 accumulator words, ring bytes and the step whose output it may overwrite in place
    (as :class:`tinyqml.classical.codegen.Step`)."""

    size: int
    inputs: tuple[int, ...]
    acc_words: int = 0
    ring_bytes: int = 0
    inplace_src: int | None = None


def _padded(steps: list[_Step], layer: Layer, x: int) -> tuple[int, tuple[int, int, int]]:
    """The convolution's input (step, shape): an int8 PAD step when the exporter writes one."""
    h, w, c = layer.in_shape
    k, s, p = layer.kernel, layer.stride, layer.kernel // 2
    if tflite_padding((h, w), (k, k), (s, s), (p, p, p, p)) is not None:
        return x, layer.in_shape
    steps.append(_Step((h + 2 * p) * (w + 2 * p) * c, (x,)))
    return len(steps) - 1, (h + 2 * p, w + 2 * p, c)


def _depthwise(layer: Layer, x: int, shape: tuple[int, int, int]) -> _Step:
    (h, w, c), (oh, ow, oc), k, s = shape, layer.out_shape, layer.kernel, layer.stride
    p = {"batches": 1, "dil_h": 1, "dil_w": 1, "in_h": h, "in_w": w, "in_c": c, "out_h": oh, "out_w": ow,
         "out_c": oc, "k_h": k, "stride_h": s, "pad_h": pad_amount(h, k, s, 1, oh)}
    safe = dw_inplace_safe(p)
    return _Step(oh * ow * oc, (x,), oc, k * w * c if safe else 0, x if safe else None)


def _steps(arch: Arch, config: SupernetConfig) -> list[_Step]:
    """The code generator's steps of the sub-network, in program order."""
    steps: list[_Step] = []
    x, block_input, block = -1, {}, None
    for layer in layers(arch, config):
        if layer.block != block:
            block = layer.block
            block_input[block] = x
        size = layer.out_shape[0] * layer.out_shape[1] * layer.out_shape[2]
        if layer.kind in ("conv", "depthwise"):
            x, shape = _padded(steps, layer, x)
            steps.append(_depthwise(layer, x, shape) if layer.kind == "depthwise" else _Step(size, (x,)))
        elif layer.kind == "add":  # x + block(x): the block's input is the first operand
            steps.append(_Step(size, (block_input[block], x), inplace_src=block_input[block]))
        elif layer.kind == "mean":  # AVERAGE_POOL_2D, then RESHAPE [1, 1, 1, c] -> [1, c]
            steps.append(_Step(size, (x,), acc_words=layer.in_shape[2]))
            steps.append(_Step(size, (len(steps) - 1,), inplace_src=len(steps) - 1))
        else:
            steps.append(_Step(size, (x,)))
        x = len(steps) - 1
    return steps


def _lifetimes(steps: list[_Step]) -> dict[int, tuple[int, int]]:
    """First and last step of every intermediate (the model input and output live in the caller's buffers)."""
    io = {-1, len(steps) - 1}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for s, step in enumerate(steps):
        if s not in io:
            first[s], last[s] = s, s
        for t in step.inputs:
            if t not in io:
                last[t] = s
    return {t: (first[t], last[t]) for t in first}


def _scratch(steps: list[_Step]) -> Callable[[tuple[arena.InPlace, ...]], int]:
    def scratch(pairs: tuple[arena.InPlace, ...]) -> int:
        used = {int(p.dst[1:]) for p in pairs}
        return 4 * max(s.acc_words + (-(-s.ring_bytes // 4) if i in used and s.ring_bytes else 0)
                       for i, s in enumerate(steps))
    return scratch


def _plan(steps: list[_Step]) -> SramPlan:
    lives = _lifetimes(steps)
    buffers = [arena.Buffer(f"t{t}", steps[t].size, *lives[t]) for t in sorted(lives)]
    pairs = [arena.InPlace(f"t{step.inplace_src}", f"t{s}") for s, step in enumerate(steps)
             if step.inplace_src is not None and step.inplace_src in lives and s in lives
             and lives[step.inplace_src][1] == s and lives[s][0] == s]
    scratch = _scratch(steps)
    plan = arena.plan_with_scratch(buffers, pairs, scratch, ARENA_ALIGN, check=False)
    return SramPlan(plan.size, scratch(plan.inplace), plan.strategy, len(steps))


@functools.lru_cache(maxsize=1 << 16)
def _cached_plan(arch: Arch, config: SupernetConfig) -> SramPlan:
    return _plan(_steps(arch, config))


def _check(arch: Any, config: Any) -> Arch:
    if not isinstance(config, SupernetConfig):
        raise NASError(f"expected a SupernetConfig, got {type(config).__name__}")
    if not isinstance(arch, Arch):
        raise NASError(f"expected an Arch, got {type(arch).__name__}")
    return arch.canonical(config)


def sram_plan(arch: Arch, config: SupernetConfig) -> SramPlan:
    """Arena and scratch of the generated C of ``arch`` (cached per network)."""
    return _cached_plan(_check(arch, config), config)


def peak_sram(arch: Arch, config: SupernetConfig) -> int:
    """Peak SRAM bytes of the generated C of ``arch``: exactly the ``peak_sram_bytes`` that
    :func:`~tinyqml.classical.codegen.generate` reports for the sub-network's int8 TFLite model."""
    return sram_plan(arch, config).peak_sram_bytes


def _as_arch(candidate: Any, config: SupernetConfig) -> Arch:
    """An :class:`Arch`, or one from a search-space configuration (``resolution``, ``depth[s]``, ...)."""
    if isinstance(candidate, Mapping):
        return Arch.from_params(candidate, config)
    return candidate


def efficiency_costs(config: SupernetConfig, latency: LatencyTable | None = None) -> CostModel:
    """A :class:`~tinyqml.search.CostModel` over :class:`Arch` candidates (or their
    :meth:`~tinyqml.classical.arch.Arch.params`): ``macs``, ``params``, ``peak_sram`` (bytes) and, with
    a :class:`~tinyqml.classical.latency_table.LatencyTable` ``latency``, ``latency`` (ms). A constraint
    on a cost the model lacks (``latency`` without a table) raises
    :class:`~tinyqml.search.UnknownConstraintError` when checked."""
    if not isinstance(config, SupernetConfig):
        raise NASError(f"efficiency_costs needs a SupernetConfig, got {type(config).__name__}")
    if latency is not None and not isinstance(latency, LatencyTable):
        raise NASError(f"latency must be a LatencyTable (see measure_latency_table), got {type(latency).__name__}")
    costs: dict[str, Callable[[Any], float]] = {
        "macs": lambda c: macs(_as_arch(c, config), config),
        "params": lambda c: params(_as_arch(c, config), config),
        "peak_sram": lambda c: peak_sram(_as_arch(c, config), config),
    }
    if latency is not None:
        costs["latency"] = lambda c: latency.predict(_as_arch(c, config), config)
    return CostModel(costs)
