"""The classical half of the main job: a digits CNN from PyTorch to C, checked against TFLite Micro.

On scikit-learn's 8×8 digits (10 classes): train :class:`~tinyqml.classical.models.SmallCNN`,
prune whole channels (physically smaller layers) and fine-tune, quantize to int8
(the TFLite int8 arithmetic), write a fully-int8 ``.tflite``, generate C99 for it
(:func:`~tinyqml.classical.codegen.generate`), compile it and run it on every test image,
and compare with the real TFLite Micro interpreter on the same file: identical int8
outputs, accuracy, latency per inference on this host, and memory (the C's peak SRAM
against TFLM's arena). With ``arm-none-eabi-gcc`` and QEMU (``make mcu-tools``) a few
images also run on an emulated Cortex-M4.

>>> ClassicalDemoConfig(widths=(8,))
Traceback (most recent call last):
...
tinyqml.demo.errors.DemoConfigError: ClassicalDemoConfig.widths must be 3 channel counts >= 1, got (8,)
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyqml.demo.progress import ProgressFn, Stage, silent
from tinyqml.demo.errors import MAX_SEED, DemoConfigError, check_int

logger = logging.getLogger(__name__)

__all__ = ["ClassicalDemoConfig", "CLASSICAL_FAST", "ClassicalStage", "ClassicalDemoResult", "run_classical",
           "tflm_latency_us"]

#: tools of the emulated Cortex-M4 run (optional)
M4_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "rdimon.specs", "qemu-system-arm")


@dataclass(frozen=True)
class ClassicalDemoConfig:
    """Sizes of the classical half (defaults: the full ``tinyqml demo``): the CNN's ``widths`` and
    ``epochs``, the channel-pruning ``prune_ratio`` (fraction of channels removed, rounded to
    ``round_to``) and ``finetune_epochs``, ``calibration`` images for int8, ``timing_repeats``
    rounds of latency, ``m4_images`` run under QEMU when its tools are installed (0: never)."""

    widths: tuple[int, ...] = (32, 64, 64)
    epochs: int = 30
    prune_ratio: float = 0.5
    round_to: int = 8
    finetune_epochs: int = 8
    calibration: int = 256
    timing_repeats: int = 7
    m4_images: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if len(self.widths) != 3 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.widths):
            raise DemoConfigError(f"{owner}.widths must be 3 channel counts >= 1, got {self.widths!r}")
        for name in ("epochs", "finetune_epochs", "calibration", "timing_repeats", "round_to"):
            check_int(owner, name, getattr(self, name))
        check_int(owner, "m4_images", self.m4_images, 0)
        check_int(owner, "seed", self.seed, 0, MAX_SEED)
        if not 0.0 <= self.prune_ratio < 1.0:
            raise DemoConfigError(f"{owner}.prune_ratio must be in [0, 1), got {self.prune_ratio!r}")


#: a few seconds: tests and ``tinyqml demo --fast``
CLASSICAL_FAST = ClassicalDemoConfig(widths=(16, 32, 32), epochs=4, finetune_epochs=2, timing_repeats=3, m4_images=2)


@dataclass(frozen=True)
class ClassicalStage:
    """One step of the flow: its test accuracy (%, on ``n`` images), MACs, parameters and size in bytes.
    fp32 rows: the module's parameters (BatchNorm included), 4 bytes each. int8 rows: the constant tensors
    of the ``.tflite`` (BatchNorm folded; int8 weights, int32 biases) and their bytes; for the generated C
    the bytes of its constant arrays (weights, biases, requantization multipliers and shifts), for TFLite
    Micro the whole ``.tflite`` file. Runtime code is in none of them."""

    name: str
    accuracy: float
    n: int
    macs: int
    params: int
    size_bytes: int


@dataclass(frozen=True)
class ClassicalDemoResult:
    """What :func:`run_classical` returns."""

    config: ClassicalDemoConfig
    stages: tuple[ClassicalStage, ...]
    widths_after: tuple[int, ...]
    bit_exact: int
    compared: int
    c_latency_us: float
    tflm_latency_us: float
    c_peak_sram: int
    c_arena: int
    tflm_arena: int
    c_const_bytes: int
    operators: tuple[str, ...]
    tflite_path: Path
    c_dir: Path
    m4: dict[str, Any] | None
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        """TFLite Micro's latency over the generated C's (> 1: the C is faster)."""
        return self.tflm_latency_us / self.c_latency_us


def tflm_latency_us(blob: bytes, x: np.ndarray, repeats: int = 7, min_time_s: float = 0.02) -> float:
    """Median microseconds of one TFLite Micro ``invoke`` on the int8 sample ``x`` [1, ...] (batches of
    calls lasting at least ``min_time_s``; includes the Python call, well under a microsecond)."""
    from tinyqml.classical.tflite_export import TFLMRunner

    runner = TFLMRunner(blob)
    runner.interpreter.set_input(np.ascontiguousarray(x), 0)
    invoke = runner.interpreter.invoke
    for _ in range(10):
        invoke()
    t = time.perf_counter()
    invoke()
    iters = max(5, math.ceil(min_time_s / max(time.perf_counter() - t, 1e-7)))
    batches = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(iters):
            invoke()
        batches.append((time.perf_counter() - t) / iters * 1e6)
    return float(statistics.median(batches))


def _acc(pred: Any, y: Any) -> float:
    return 100.0 * float((np.asarray(pred) == np.asarray(y)).mean())


def _train_stage(progress: ProgressFn, name: str, epochs: int, n_train: int, batch_size: int) -> Any:
    stage = Stage(progress, name, epochs * math.ceil(n_train / batch_size))
    return lambda _step: stage.advance()


def _fp32_stage(name: str, model: Any, data: Any) -> ClassicalStage:
    from tinyqml.classical.costs import profile_net
    from tinyqml.classical.train import evaluate

    prof = profile_net(model, data.x_test[:1])
    return ClassicalStage(name, evaluate(model, data.x_test, data.y_test), len(data.y_test), prof.macs, prof.params,
                          4 * prof.params)


def _train_and_prune(data: Any, config: ClassicalDemoConfig, progress: ProgressFn) -> tuple[Any, Any, dict]:
    """The dense CNN, its channel-pruned and fine-tuned copy, and their training histories."""
    from tinyqml.classical import prune_channels
    from tinyqml.classical.channel_pruning import ChannelPruneConfig
    from tinyqml.classical.models import SmallCNN, SmallCNNConfig
    from tinyqml.classical.train import TrainConfig, train

    dense = SmallCNN(SmallCNNConfig(widths=config.widths), seed=config.seed)
    cfg = TrainConfig(epochs=config.epochs, seed=config.seed)
    hist = train(dense, data, cfg, on_step=_train_stage(progress, "classical: train the CNN", config.epochs,
                                                         len(data.y_train), cfg.batch_size))
    dense.eval()
    res = prune_channels(dense, data.x_train[:64], ChannelPruneConfig(ratio=config.prune_ratio,
                                                                      round_to=config.round_to))
    ft = TrainConfig(epochs=config.finetune_epochs, lr=1e-3, seed=config.seed)
    ft_hist = train(res.model, data, ft, on_step=_train_stage(progress, "classical: prune channels + fine-tune",
                                                               config.finetune_epochs, len(data.y_train),
                                                               ft.batch_size))
    res.model.eval()
    history = {"loss": list(hist.loss), "val": list(hist.val_accuracy), "finetune_loss": list(ft_hist.loss),
               "widths_after": [after for _, after in res.plan.widths().values()]}
    return dense, res.model, history


def _constants(blob: bytes) -> tuple[int, int]:
    """Elements and bytes of the constant tensors of a ``.tflite`` (weights, biases, shapes)."""
    from tinyqml.classical.tflite_reader import read_tflite

    consts = [t.data for t in read_tflite(blob).tensors if t.data is not None]
    return sum(int(c.size) for c in consts), sum(int(c.nbytes) for c in consts)


def _int8_accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    return 100.0 * float((outputs.astype(np.int64).argmax(1) == y).mean())


def run_classical(out_dir: str | Path, config: ClassicalDemoConfig = ClassicalDemoConfig(),
                  progress: ProgressFn = silent) -> ClassicalDemoResult:
    """Run the classical half, writing ``model.tflite``, the C sources (``c/``) and builds under ``out_dir``."""
    from tinyqml.classical import quantize_model
    from tinyqml.classical.data import DigitsConfig, load_digits_data

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    data = load_digits_data(DigitsConfig(seed=config.seed))
    dense, pruned, history = _train_and_prune(data, config, progress)
    stages = [_fp32_stage("fp32 CNN", dense, data), _fp32_stage("channel-pruned fp32", pruned, data)]
    seconds = {"train + prune": time.perf_counter() - t}
    t = time.perf_counter()
    stage = Stage(progress, "classical: int8 -> TFLite -> C -> compile", 4)
    int8 = quantize_model(pruned, data.x_train[:config.calibration])
    stage.advance()
    deployed = _deploy(int8, stages[-1].macs, data, out, config, stage, progress)
    seconds["deploy"] = time.perf_counter() - t
    return ClassicalDemoResult(config=config, stages=tuple(stages + deployed.pop("stages")),
                               widths_after=tuple(history.pop("widths_after")), history=history, seconds=seconds,
                               **deployed)


def _deploy(int8: Any, macs: int, data: Any, out: Path, config: ClassicalDemoConfig, stage: Stage,
            progress: ProgressFn) -> dict[str, Any]:
    from tinyqml.classical.codegen import CodegenOptions, Target, generate
    from tinyqml.classical.convert import to_nhwc
    from tinyqml.classical.tflite_export import TFLMRunner, export_tflite, operator_names
    from tinyqml.classical.verify import compare_host_with_tflm

    tflite = export_tflite(int8, None, out / "model.tflite")
    blob = tflite.read_bytes()
    stage.advance()
    gen = generate(blob, out / "c", CodegenOptions(Target.HOST))
    stage.advance()
    xq = int8.qgraph.input.quantize(to_nhwc(data.x_test))
    both = compare_host_with_tflm(blob, gen, xq, out / "build" / "host")
    stage.advance()
    y, n = data.y_test.numpy(), len(data.y_test)
    n_const, const_bytes = _constants(blob)
    stages = [ClassicalStage("int8 (tinyqml engine)", _int8_accuracy(int8.int8(data.x_test).reshape(n, -1), y), n,
                             macs, n_const, const_bytes),
              ClassicalStage("generated C (host build)", _int8_accuracy(both.host, y), n, gen.macs, n_const,
                             gen.flash_bytes),
              ClassicalStage("TFLite Micro interpreter", _int8_accuracy(both.tflm, y), n, gen.macs, n_const, len(blob))]
    c_us, tflm_us = _latency(blob, xq[:1], out, config, progress)
    return {"stages": stages, "bit_exact": both.equal, "compared": int(both.tflm.size), "c_latency_us": c_us,
            "tflm_latency_us": tflm_us, "c_peak_sram": gen.peak_sram_bytes, "c_arena": gen.arena_bytes,
            "tflm_arena": TFLMRunner(blob).arena_bytes(), "c_const_bytes": gen.flash_bytes,
            "operators": tuple(operator_names(blob)), "tflite_path": tflite, "c_dir": gen.out_dir,
            "m4": _cortex_m4(blob, np.ascontiguousarray(xq.reshape(n, -1)), both.host, out, config, progress)}


def _latency(blob: bytes, x1: np.ndarray, out: Path, config: ClassicalDemoConfig,
             progress: ProgressFn) -> tuple[float, float]:
    """Microseconds per image: the generated C (timed inside C) and TFLite Micro's ``invoke``."""
    from tinyqml.classical.latency_table import LatencyOptions, time_models

    timing = Stage(progress, "classical: latency C vs TFLite Micro", 2)
    options = LatencyOptions(repeats=config.timing_repeats, min_time_s=0.02)
    c_us = time_models([blob], options, out / "build" / "timing")[0].us
    timing.advance()
    tflm_us = tflm_latency_us(blob, x1, repeats=config.timing_repeats)
    timing.advance()
    return c_us, tflm_us


def _cortex_m4(blob: bytes, rows: np.ndarray, host_out: np.ndarray, out: Path, config: ClassicalDemoConfig,
               progress: ProgressFn) -> dict[str, Any] | None:
    from tinyqml.classical import mcu
    from tinyqml.classical.codegen import CodegenOptions, Target, generate

    have = mcu.tools_available()
    if config.m4_images == 0 or not all(have[t] for t in M4_TOOLS):
        logger.info("no Cortex-M4 run: missing %s", [t for t in M4_TOOLS if not have[t]])
        return None
    stage = Stage(progress, "classical: Cortex-M4 under QEMU", 1)
    gen = generate(blob, out / "c_m4", CodegenOptions(Target.CORTEX_M4))
    sources = [gen.out_dir / "model.c", gen.out_dir / "tinyqml_rt.c"]
    k = min(config.m4_images, len(rows))
    run = mcu.run_harness(sources, [gen.out_dir], rows[:k], gen.output_size, out / "build" / "m4", "cortex-m4",
                          timeout=300)
    size = mcu.object_size(sources, [gen.out_dir], out / "build" / "m4_obj")
    stage.finish()
    return {"images": k, "equal_to_host": bool(np.array_equal(run.outputs, host_out[:k])), "flash": size.flash,
            "sram": size.sram}
