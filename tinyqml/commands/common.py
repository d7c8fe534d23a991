"""Argument types, the one-line error and the model-file helpers shared by the ``tinyqml`` subcommands.

>>> positive_int("3"), seed("7")
(3, 7)
>>> fraction("0.5")
0.5
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["positive_int", "seed", "fraction", "positive_float", "non_negative_int", "error", "Subparsers",
           "open_model_file", "split_seed", "printed_epochs"]

#: the object ``add_subparsers`` returns, which every command module's ``register`` receives
Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _number(text: str, cast: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Any:
    """``cast(text)`` when it parses and ``ok`` accepts it, else argparse's error saying what was expected."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An integer >= 0 such as a number of fine-tuning epochs (argparse type)."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def seed(text: str) -> int:
    """An integer seed in ``0 .. 2**62-1`` (argparse type)."""
    return _number(text, int, lambda v: 0 <= v < 2 ** 62, "an integer seed in 0..2**62-1")


def fraction(text: str) -> float:
    """A number in ``[0, 1)`` such as a sparsity or a pruning ratio (argparse type)."""
    return _number(text, float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def positive_float(text: str) -> float:
    """A finite number > 0 such as a learning rate (argparse type)."""
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a positive number")


def error(exc: BaseException) -> int:
    """Print ``tinyqml: error: <message>`` on one line to stderr; the exit status of a tinyqml error (1)."""
    message = " ".join(str(exc).split())  # always a single line
    print(f"tinyqml: error: {message}", file=sys.stderr)
    return 1


def open_model_file(path: str):  # type: ignore[no-untyped-def]
    """:func:`~tinyqml.classical.model_file.load_model_file`, whose missing-file and not-a-model-file errors
    also say how to make one (``tinyqml train cnn -o PATH``)."""
    from tinyqml.classical.model_file import ModelFileNotFoundError, NotAModelFileError, load_model_file

    try:
        return load_model_file(path)
    except (ModelFileNotFoundError, NotAModelFileError) as exc:
        p = Path(path)
        if "TFLite flatbuffer" in str(exc):
            hint = (f"prune and quantize read the .pt model files of `tinyqml train cnn` and `tinyqml prune`; "
                    f"`tinyqml codegen {p} -o DIR` reads a .tflite")
        else:
            made = p / "cnn.pt" if p.is_dir() else (p if p.suffix == ".pt" else p.with_suffix(".pt"))
            hint = f"make one with `tinyqml train cnn -o {made}`"
        raise type(exc)(f"{exc}; {hint}") from exc


def split_seed(metadata: dict, path: str) -> int | None:
    """The digits split seed a model file names (``metadata["data_seed"]``), None when it names none."""
    from tinyqml.classical.model_file import ModelFileFormatError

    value = metadata.get("data_seed")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelFileFormatError(f"{path} has the data_seed {value!r}; expected an integer >= 0")
    return value


@contextlib.contextmanager
def printed_epochs(indent: str = "") -> Iterator[None]:
    """Print the per-epoch line of :func:`tinyqml.classical.train.train` (``epoch k/N loss ... val ...%``,
    which it logs at INFO on its module logger) to stdout while the block runs."""
    import logging

    logger = logging.getLogger("tinyqml.classical.train")

    class _Print(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            print(f"{indent}{record.getMessage()}", flush=True)

    handler = _Print(logging.INFO)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # printed here, not twice
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
