"""The ``tinyqml`` command line.

Examples::

    tinyqml --version
    tinyqml demo            # full run: 4-class digits quantum classifier
    tinyqml demo --fast     # a few seconds, lower accuracy
    tinyqml codegen model.tflite -o build/model --target cortex-m4

Bad arguments exit with argparse's usual message (status 2); a tinyqml error
(:class:`tinyqml.qml.errors.TinyQMLError`, or a :class:`tinyqml.classical.errors.CompressionError`
from ``codegen``) prints one line ``tinyqml: error: ...`` to stderr and exits with status 1.

>>> args = build_parser().parse_args(["demo", "--fast", "--seed", "3"])
>>> args.command, args.fast, args.seed
('demo', True, 3)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable, Sequence

from tinyqml import __version__
from tinyqml.qml.errors import TinyQMLError

__all__ = ["main", "build_parser"]

DEMO_EXAMPLES = """\
examples:
  tinyqml demo                 # full run (reaches >= 80% test accuracy)
  tinyqml demo --fast          # quick check, a few seconds
  tinyqml demo --seed 3 --epochs 30 --layers 10
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_demo(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "demo", help="train the 4-qubit digits (0-3) quantum classifier",
        description="Train the 4-qubit variational classifier on scikit-learn's digits 0-3 "
                    "(4x4 pooled pixels, RY/RZ/RX/RY encoding, U3 + CNOT-ring layers, adjoint gradients) "
                    "and print the loss and accuracies after every epoch.",
        epilog=DEMO_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--fast", action="store_true", help="small model and 3 epochs (seconds; for smoke tests)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and batch order (default 0)")
    p.add_argument("--epochs", type=_positive_int, default=None, help="override the number of epochs")
    p.add_argument("--layers", type=_positive_int, default=None, help="override the number of ansatz layers")
    p.set_defaults(func=_run_demo)


CODEGEN_EXAMPLES = """\
examples:
  tinyqml codegen model.tflite -o build/model                     # host C99
  tinyqml codegen model.tflite -o build/m4 --target cortex-m4     # same C, recorded for the Cortex-M4
"""


def _add_codegen(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "codegen", help="compile a fully-int8 .tflite model to C99 (bit-exact with TFLite Micro)",
        description="Write model.h, model.c and the tinyqml C runtime (plus report.md / report.json) for a "
                    "fully-int8 TFLite model, and print the report's summary: MACs, arena, peak SRAM, flash.",
        epilog=CODEGEN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="the .tflite file")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the C sources (created)")
    p.add_argument("--target", choices=["host", "cortex-m4"], default="host", help="target (default host)")
    p.add_argument("--prefix", default="tinyqml", help="prefix of the C symbols and macros (default tinyqml)")
    p.set_defaults(func=_run_codegen)


def _run_codegen(args: argparse.Namespace) -> int:
    from tinyqml.classical.codegen import CodegenOptions, Target, generate
    from tinyqml.classical.errors import CompressionError

    try:
        result = generate(args.model, args.output, CodegenOptions(target=Target(args.target), prefix=args.prefix))
    except CompressionError as exc:
        message = " ".join(str(exc).split())
        print(f"tinyqml: error: {message}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(p.name for p in result.files)} to {result.out_dir}")
    print(result.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tinyqml`` (one sub-parser per subcommand)."""
    parser = argparse.ArgumentParser(
        prog="tinyqml", description="tinyqml: machine learning on small and noisy quantum hardware.",
        epilog="example:\n  tinyqml demo --fast", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tinyqml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_codegen(sub)
    return parser


def _demo_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from tinyqml.demo import FAST_CONFIG, ClassifierConfig

    config = FAST_CONFIG if args.fast else ClassifierConfig()
    changes = {"seed": args.seed}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.layers is not None:
        changes["layers"] = args.layers
    return dataclasses.replace(config, **changes)


def _run_demo(args: argparse.Namespace) -> int:
    from tinyqml.demo import EpochStats, train_classifier

    config = _demo_config(args)
    print(f"digits 0-3, 4 qubits, {config.layers} layers, {config.epochs} epochs, "
          f"batch {config.batch_size}, lr {config.lr}, seed {config.seed}", flush=True)

    def report(s: EpochStats) -> None:
        print(f"epoch {s.epoch:3d}/{config.epochs}  loss {s.loss:.4f}  train acc {s.train_accuracy:.3f}  "
              f"test acc {s.test_accuracy:.3f}  ({s.seconds:.1f}s)", flush=True)

    result = train_classifier(config, on_epoch=report)
    print(f"final train accuracy {result.train_accuracy:.4f} ({result.n_train} samples), "
          f"test accuracy {result.test_accuracy:.4f} ({result.n_test} samples), {result.seconds:.1f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tinyqml`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except TinyQMLError as exc:
        message = " ".join(str(exc).split())  # always a single line
        print(f"tinyqml: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
