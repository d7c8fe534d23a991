"""The demo's error and the range check its configurations share.

>>> check_int("Cfg", "epochs", 0)
Traceback (most recent call last):
...
tinyqml.demo.errors.DemoConfigError: Cfg.epochs must be an integer >= 1, got 0
"""

from __future__ import annotations

from typing import Any

from tinyqml.qml.errors import TinyQMLError

__all__ = ["DemoConfigError", "check_int", "MAX_SEED"]

#: seeds go to numpy's RandomState, scikit-learn and optuna, which take 32-bit seeds
MAX_SEED = 2 ** 32 - 1


class DemoConfigError(TinyQMLError, ValueError):
    """A demo configuration value is out of range, or something the run needs is missing."""


def check_int(owner: str, name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> None:
    """Raise :class:`DemoConfigError` unless ``value`` is an ``int`` in ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise DemoConfigError(f"{owner}.{name} must be an integer {bound}, got {value!r}")
