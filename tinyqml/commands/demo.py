"""``tinyqml demo``: the main job (QuantumNAS on a noisy fake backend + a CNN to C), a report under runs/.

>>> from tinyqml.cli import build_parser
>>> config = demo_config(build_parser().parse_args(["demo", "--fast", "--seed", "2", "--only", "classical"]))
>>> config.parts, config.quantum.seed, config.classical.epochs
(('classical',), 2, 4)
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys

from tinyqml.commands.common import error, quiet_logging, seed

__all__ = ["register", "demo_config", "reproduce_command"]

DEMO_EXAMPLES = """\
examples:
  tinyqml demo                       # the whole job (about 5 minutes on 2 cores), report in runs/<timestamp>/
  tinyqml demo --fast                # the same, small and quick (about a minute)
  tinyqml demo --only quantum        # only the QuantumNAS half
  tinyqml demo --backend FakeManilaV2 --seed 1 -o runs/manila
what it does:
  quantum    noise-aware QuantumNAS for 4-class digits on a 5-qubit calibrated fake backend (search sub-circuit
             + qubit mapping, train, prune gates), evaluated on Qiskit Aer with the backend's noise model
             against a hardware-efficient ansatz with as many parameters
  classical  digits CNN -> channel pruning -> int8 -> TFLite -> C -> compiled and run on every test image,
             compared with the TFLite Micro interpreter (outputs, accuracy, latency, memory)
writes runs/<timestamp>/report.md (+ PNG plots, results.json, quantumnas.db for optuna-dashboard, the C sources)
"""


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``tinyqml demo`` to the sub-parsers ``sub``."""
    p = sub.add_parser(
        "demo", help="the main job: QuantumNAS on a noisy fake backend + a digits CNN to C vs TFLite Micro",
        description="Run both halves of tinyqml on the digits and write a report: noise-aware QuantumNAS on a "
                    "calibrated 5-qubit fake backend against a hardware-efficient baseline on Qiskit Aer, and a "
                    "CNN pruned, quantized to int8, compiled to C and compared with TFLite Micro. Prints a summary "
                    "table; every number in it is computed in this run.",
        epilog=DEMO_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--fast", action="store_true", help="small models, few trials and epochs (about a minute)")
    p.add_argument("--seed", type=seed, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--only", choices=["quantum", "classical"], default=None, help="run one half only")
    p.add_argument("--backend", default=None, metavar="NAME",
                   help="calibrated 5-qubit fake backend of qiskit_ibm_runtime (default FakeQuitoV2)")
    p.add_argument("-o", "--output", default="runs", metavar="DIR",
                   help="the report goes to DIR/<timestamp>/ (default runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (also when stderr is not a tty)")
    p.set_defaults(func=_run_demo)


def demo_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The :class:`~tinyqml.demo.DemoConfig` that ``tinyqml demo`` arguments ask for."""
    import dataclasses

    from tinyqml.demo import DEMO_FAST, PARTS, DemoConfig

    config = (DEMO_FAST if args.fast else DemoConfig()).with_seed(args.seed)
    if args.backend:
        config = dataclasses.replace(config, quantum=dataclasses.replace(config.quantum, backend=args.backend))
    return dataclasses.replace(config, parts=(args.only,) if args.only else PARTS)


def reproduce_command(args: argparse.Namespace) -> str:
    """The ``tinyqml demo`` command line that runs the same job again (for the report).

    >>> from tinyqml.cli import build_parser
    >>> reproduce_command(build_parser().parse_args(["demo", "--fast", "--only", "classical", "-o", "my runs"]))
    "tinyqml demo --fast --only classical -o 'my runs'"
    """
    parts = ["tinyqml", "demo"] + (["--fast"] if args.fast else []) + (["--seed", str(args.seed)] if args.seed else [])
    parts += (["--only", args.only] if args.only else []) + (["--backend", args.backend] if args.backend else [])
    parts += ["-o", args.output] if args.output != "runs" else []
    return " ".join(shlex.quote(p) for p in parts)


class _Bars:
    """One tqdm bar per stage of the job (the previous one closes when the next stage starts)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bar, self.stage = enabled, None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            if done == 0:
                print(f"... {stage}", flush=True)
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            # a terminal that reports 0 x 0 (some CI and ``script`` sessions) would get an empty bar
            size = shutil.get_terminal_size((100, 24))
            self.bar = tqdm(total=total, desc=stage, unit="step", leave=True, file=sys.stderr,
                            ncols=min(size.columns, 120), nrows=max(size.lines, 2))
        assert self.bar is not None
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _run_demo(args: argparse.Namespace) -> int:
    from tinyqml.classical.errors import CompressionError
    from tinyqml.demo import run_demo
    from tinyqml.demo.report import SUMMARY_HEADER, format_table, summary_rows
    from tinyqml.qml.errors import TinyQMLError
    from tinyqml.search import SearchError

    quiet_logging()
    config = demo_config(args)
    bars = _Bars(enabled=not args.no_progress and sys.stderr.isatty())
    command = reproduce_command(args)
    print(f"tinyqml demo{' (fast)' if config.fast else ''}: {', '.join(config.parts)}; seed {args.seed}", flush=True)
    try:
        result = run_demo(args.output, config, progress=bars, command=command)
    except (TinyQMLError, CompressionError, SearchError, OSError) as exc:
        bars.close()
        return error(exc)
    except KeyboardInterrupt:
        bars.close()
        print("tinyqml: demo interrupted", file=sys.stderr)
        return 130
    bars.close()
    print()
    print(format_table(SUMMARY_HEADER, summary_rows(result.quantum, result.classical)))
    print()
    print(f"report: {result.report}  ({result.seconds:.0f} s; plots and results.json next to it)")
    return 0
