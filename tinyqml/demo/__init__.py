"""The main job (``make demo`` = ``tinyqml demo``): both halves of tinyqml in one run, with a report.

- quantum (:mod:`tinyqml.demo.quantum`): noise-aware QuantumNAS for 4-class digits on a 5-qubit
  calibrated fake backend, searched, trained and pruned, evaluated on Qiskit Aer with the
  backend's noise against a hardware-efficient baseline;
- classical (:mod:`tinyqml.demo.classical`): a digits CNN trained, channel-pruned, quantized
  to int8, written as TFLite, turned into C, compiled and run, compared with TFLite Micro;
- the report (:mod:`tinyqml.demo.report`): ``runs/<timestamp>/report.md`` with its plots and
  ``results.json``, and the summary table the CLI prints.

>>> DEMO_FAST.quantum.trials, DEMO_FAST.classical.epochs
(8, 4)
>>> DemoConfig(parts=("quantum", "optics"))
Traceback (most recent call last):
...
tinyqml.demo.errors.DemoConfigError: DemoConfig.parts must be a non-empty subset of ('quantum', 'classical'), got ('quantum', 'optics')
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from tinyqml.demo.classical import CLASSICAL_FAST, ClassicalDemoConfig, ClassicalDemoResult, run_classical
from tinyqml.demo.progress import ProgressFn, silent
from tinyqml.demo.errors import DemoConfigError
from tinyqml.demo.quantum import QUANTUM_FAST, QuantumDemoConfig, QuantumDemoResult, load_backend, run_quantum
from tinyqml.demo.report import write_report

logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "DEMO_FAST", "DemoResult", "run_demo", "run_dir", "DemoConfigError", "PARTS", "preflight"]

#: the halves of the job
PARTS = ("quantum", "classical")


@dataclass(frozen=True)
class DemoConfig:
    """Both halves' configurations, which ``parts`` run, and ``fast`` (recorded in the report)."""

    quantum: QuantumDemoConfig = field(default_factory=QuantumDemoConfig)
    classical: ClassicalDemoConfig = field(default_factory=ClassicalDemoConfig)
    parts: tuple[str, ...] = PARTS
    fast: bool = False

    def __post_init__(self) -> None:
        if not self.parts or any(p not in PARTS for p in self.parts) or len(set(self.parts)) != len(self.parts):
            raise DemoConfigError(f"DemoConfig.parts must be a non-empty subset of {PARTS}, got {self.parts!r}")

    def with_seed(self, seed: int) -> "DemoConfig":
        """The same configuration with every seed set to ``seed``."""
        return replace(self, quantum=replace(self.quantum, seed=seed), classical=replace(self.classical, seed=seed))


#: about a minute on 2 cores: tests and ``tinyqml demo --fast``
DEMO_FAST = DemoConfig(quantum=QUANTUM_FAST, classical=CLASSICAL_FAST, fast=True)


@dataclass(frozen=True)
class DemoResult:
    """Where the run wrote its files, and the two halves' results (``None``: not run)."""

    out_dir: Path
    report: Path
    quantum: QuantumDemoResult | None
    classical: ClassicalDemoResult | None
    seconds: float


def run_dir(root: str | os.PathLike, now: datetime | None = None) -> Path:
    """A new folder ``root/<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... when taken), created.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> t = datetime(2026, 12, 2, 9, 30, 0)
    >>> run_dir(root, t).name, run_dir(root, t).name
    ('20261202-093000', '20261202-093000-2')
    """
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = Path(root)
    for k in range(1, 1000):
        path = base / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise DemoConfigError(f"cannot create the run folder {path} ({exc.strerror or exc}); give a writable "
                                  f"folder with -o DIR") from exc
    raise DemoConfigError(f"cannot create a new run folder under {base}: {stamp} and 998 more are taken")


def _cpu_name() -> str:
    """The CPU model (Linux ``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        logger.debug("no /proc/cpuinfo")
    return platform.processor() or platform.machine()


def _meta(config: DemoConfig, started: datetime, command: str) -> dict[str, Any]:
    import torch

    try:
        import qiskit

        qiskit_version = qiskit.__version__
    except ModuleNotFoundError:
        qiskit_version = "not installed"
    return {"started": started.strftime("%Y-%m-%d %H:%M:%S"), "machine": f"{_cpu_name()}"
            f" ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})", "torch": torch.__version__,
            "qiskit": qiskit_version, "seed": config.quantum.seed, "fast": config.fast, "command": command,
            "parts": list(config.parts)}


def _require(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise DemoConfigError(f"the demo needs {module}: pip install 'tinyqml[{extra}]' (make demo installs it)")


def _check_scales(backend: Any, scales: tuple[float, ...]) -> None:
    """Every evaluation scale must give a valid noise model for ``backend`` (before any training)."""
    from tinyqml.noise import NoiseModel
    from tinyqml.qml.errors import TinyQMLError

    model = NoiseModel.from_backend(backend)
    for scale in scales:
        try:
            model.scaled(scale)
        except TinyQMLError as exc:
            raise DemoConfigError(f"{backend.name}'s noise model cannot be scaled by {scale:g} for the evaluation "
                                  f"({exc}); pick another backend (FakeQuitoV2, FakeManilaV2) or smaller scales "
                                  f"in QuantumDemoConfig.scales") from exc


def preflight(config: DemoConfig) -> Any:
    """Check what the run needs before anything is trained; returns the quantum half's backend (or ``None``)."""
    _require("matplotlib", "plot")
    backend = None
    if "quantum" in config.parts:
        _require("qiskit_aer", "interop")
        backend = load_backend(config.quantum.backend)
        _check_scales(backend, config.quantum.scales)
    if "classical" in config.parts:
        from tinyqml.classical import mcu

        _require("tflite_micro", "classical")
        mcu.require_tools("gcc")
    return backend


def run_demo(root: str | os.PathLike = "runs", config: DemoConfig = DemoConfig(), progress: ProgressFn = silent,
             command: str = "tinyqml demo") -> DemoResult:
    """Run the main job; files go to a new ``root/<timestamp>/`` (see :func:`run_dir`)."""
    started = datetime.now()
    t0 = time.perf_counter()
    backend = preflight(config)
    out = run_dir(root, started)
    logger.info("demo: writing to %s", out)
    quantum = classical = None
    if "quantum" in config.parts:
        quantum = run_quantum(config.quantum, progress, storage=f"sqlite:///{out / 'quantumnas.db'}",
                              backend=backend)
    if "classical" in config.parts:
        classical = run_classical(out / "classical", config.classical, progress)
    seconds = time.perf_counter() - t0
    meta = {**_meta(config, started, command), "seconds": seconds}
    report = write_report(out, quantum, classical, meta)
    return DemoResult(out, report, quantum, classical, seconds)
