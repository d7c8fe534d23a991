"""Named exceptions raised by tinyqml.noise.

Like :mod:`tinyqml.qml.errors`, every check on user input raises one of these with a
message that says what was wrong and what is accepted. Both derive from
:class:`tinyqml.qml.errors.TinyQMLError` and from :class:`ValueError`.

>>> from tinyqml.noise.errors import NoiseParameterError
>>> issubclass(NoiseParameterError, ValueError)
True
"""

from __future__ import annotations

from tinyqml.qml.errors import TinyQMLError

__all__ = ["NotCPTPError", "NoiseParameterError", "NoiseModelError"]


class NotCPTPError(TinyQMLError, ValueError):
    """Kraus operators that do not form a channel: wrong shapes, non-finite values, or
    ``sum_k K_k^dagger K_k`` not equal to the identity (not trace preserving)."""


class NoiseParameterError(TinyQMLError, ValueError):
    """A noise parameter out of its accepted range (a probability outside ``[0, 1]``,
    probabilities summing to more than 1, a non-positive T1/T2, a negative time, ...)."""


class NoiseModelError(TinyQMLError, ValueError):
    """A malformed noise model or noisy circuit: a rule for an unknown gate, an error on
    the wrong number of qubits, a channel on a wire the circuit lacks, bad JSON."""
