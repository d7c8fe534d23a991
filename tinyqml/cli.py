"""The ``tinyqml`` command line: one sub-parser per module of :mod:`tinyqml.commands`.

Examples::

    tinyqml --version
    tinyqml demo                      # the main job: QuantumNAS on a noisy fake backend + CNN to C, a report
    tinyqml demo --fast               # the same in about a minute (smaller everything)
    tinyqml train qnn --fast          # the 4-qubit digits classifier
    tinyqml noise show FakeManilaV2   # a backend's calibration and the derived noise model
    tinyqml codegen model.tflite -o build/model --target cortex-m4
    tinyqml search qnas --trials 60 --study qnas1 --workers 2

Bad arguments exit with argparse's usual message (status 2); a tinyqml error
(:class:`tinyqml.qml.errors.TinyQMLError`, or a :class:`tinyqml.classical.errors.CompressionError`
or :class:`tinyqml.search.SearchError` where a command reads models or studies) prints one line
``tinyqml: error: ...`` to stderr and exits with status 1; an interrupted ``search`` exits with 130.

>>> args = build_parser().parse_args(["train", "qnn", "--fast", "--seed", "3"])
>>> args.command, args.fast, args.seed
('train', True, 3)
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from tinyqml import __version__
from tinyqml.commands import COMMANDS
from tinyqml.commands.common import error

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tinyqml`` (one sub-parser per subcommand)."""
    parser = argparse.ArgumentParser(
        prog="tinyqml", description="tinyqml: machine learning on small and noisy hardware -- quantum circuits "
                                    "on noisy devices, tiny networks on microcontrollers, one search engine.",
        epilog="examples:\n  tinyqml demo --fast\n  tinyqml COMMAND --help", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tinyqml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


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
    except Exception as exc:
        # imported here: tinyqml.qml loads torch, which ``tinyqml --help`` and argument errors never need
        from tinyqml.qml.errors import TinyQMLError

        if isinstance(exc, TinyQMLError):
            return error(exc)
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
