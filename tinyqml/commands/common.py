"""Argument types, the one-line error, output checks and the model-file helpers shared by the ``tinyqml``
subcommands.

>>> positive_int("3"), seed("7"), seed(str(2 ** 32 - 1))
(3, 7, 4294967295)
>>> fraction("0.5")
0.5
>>> seed(str(2 ** 32))
Traceback (most recent call last):
...
argparse.ArgumentTypeError: expected an integer seed in 0..4294967295 (2**32-1), got '4294967296'
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["positive_int", "seed", "fraction", "positive_float", "non_negative_int", "error", "Subparsers",
           "MAX_SEED", "OutputError", "output_folder", "output_file", "quiet_logging",
           "open_model_file", "split_seed", "ModelAndDigits", "open_model_and_digits", "printed_epochs"]

#: the largest seed: scikit-learn's ``random_state``, numpy's ``RandomState`` and optuna's samplers take
#: seeds in ``0 .. 2**32-1``
MAX_SEED = 2 ** 32 - 1

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
    """An integer seed in ``0 .. 2**32-1`` (:data:`MAX_SEED`; argparse type)."""
    return _number(text, int, lambda v: 0 <= v <= MAX_SEED, f"an integer seed in 0..{MAX_SEED} (2**32-1)")


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


class OutputError(OSError):
    """An output path that cannot be written (a directory where a file goes, a folder that cannot be created
    or written to); raised before the work that would write it."""


def _writable(folder: Path) -> None:
    """Create ``folder`` (and its parents) and check that a file can be created in it: a probe file, created
    and removed at once (permission bits do not tell: root may not write to ``/proc`` or a read-only mount)."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"cannot write to the folder {folder}: it is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder, prefix=".tinyqml-probe-").close()  # creating it is the check
    except OSError as exc:
        raise OutputError(f"cannot write to the folder {folder}: {exc.strerror or exc}") from exc


def output_folder(path: str | Path) -> Path:
    """The output folder ``path``, created and checked writable (:class:`OutputError` if not), before the work."""
    folder = Path(path)
    _writable(folder)
    return folder


def output_file(path: str | Path, what: str, example: str) -> Path:
    """The output file ``path`` (``what`` it is, e.g. ``"the model file"``), checked before the work: not a
    directory (the error suggests ``-o DIR/example``), its folder created and writable; else :class:`OutputError`.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     output_file(tmp, "the model file", "cnn.pt")
    Traceback (most recent call last):
    ...
    tinyqml.commands.common.OutputError: ... is a directory; give the model file to write, e.g. -o .../cnn.pt
    """
    out = Path(path)
    if out.is_dir():
        raise OutputError(f"{out} is a directory; give {what} to write, e.g. -o {out / example}")
    _writable(out.parent)
    return out


def quiet_logging() -> None:
    """Only warnings from optuna and tinyqml's loggers: the commands print their own progress."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("tinyqml").setLevel(logging.WARNING)


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
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ModelFileFormatError(f"{path} has the data_seed {value!r}; expected an integer in 0..{MAX_SEED}")
    return value


@dataclass(frozen=True, eq=False)
class ModelAndDigits:
    """A model file's model, config and metadata, and the digits split of the seed it names."""

    model: Any
    config: Any
    metadata: dict
    data: Any
    #: the split seed used: the file's ``data_seed``, 0 when it names none
    data_seed: int
    #: whether the file names its split seed
    named: bool

    @property
    def split(self) -> str:
        """``360 images, digits split seed 1`` (``...: the file names none`` when it names none)."""
        return (f"{len(self.data.y_test)} images, digits split seed {self.data_seed}"
                f"{'' if self.named else ': the file names none'}")


def open_model_and_digits(path: str) -> ModelAndDigits:
    """:func:`open_model_file` and the digits split of its :func:`split_seed` (0 when it names none)."""
    from tinyqml.classical.data import DigitsConfig, load_digits_data

    model, config, metadata = open_model_file(path)
    named = split_seed(metadata, path)
    data_seed = 0 if named is None else named
    data = load_digits_data(DigitsConfig(seed=data_seed))
    return ModelAndDigits(model, config, metadata, data, data_seed, named is not None)


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
