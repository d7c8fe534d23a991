"""Argument types and the one-line error shared by the ``tinyqml`` subcommands.

>>> positive_int("3"), seed("7")
(3, 7)
>>> fraction("0.5")
0.5
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["positive_int", "seed", "fraction", "error", "Subparsers"]

#: the object ``add_subparsers`` returns, which every command module's ``register`` receives
Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def seed(text: str) -> int:
    """An integer seed in ``0 .. 2**62-1`` (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2 ** 62:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..2**62-1, got {value}")
    return value


def fraction(text: str) -> float:
    """A number in ``[0, 1)`` such as a sparsity or a pruning ratio (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value}")
    return value


def error(exc: BaseException) -> int:
    """Print ``tinyqml: error: <message>`` on one line to stderr; the exit status of a tinyqml error (1)."""
    message = " ".join(str(exc).split())  # always a single line
    print(f"tinyqml: error: {message}", file=sys.stderr)
    return 1
