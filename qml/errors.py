"""Named exceptions raised by tinyqml.qml.

Every check on user input raises one of these, with a message that says what was
wrong and what is accepted. All derive from :class:`TinyQMLError` (and from the
matching builtin, so ``except ValueError`` keeps working).
"""

from __future__ import annotations


class TinyQMLError(Exception):
    """Base class of every error tinyqml raises on bad input."""


class UnknownGateError(TinyQMLError, KeyError):
    """A gate name that is not in the gate registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class WireError(TinyQMLError, ValueError):
    """A wire index out of range, a duplicated wire, or a wrong number of wires."""


class ParameterError(TinyQMLError, ValueError):
    """A gate parameter reference of the wrong number or kind."""


class ShapeError(TinyQMLError, ValueError):
    """Weights or inputs of the wrong shape or size."""


class NonFiniteError(TinyQMLError, ValueError):
    """NaN or infinite values in weights, inputs or matrices."""


class NotUnitaryError(TinyQMLError, ValueError):
    """A matrix given as a unitary is not unitary (or not square of size 2**k)."""


class ObservableError(TinyQMLError, ValueError):
    """A malformed observable (unknown Pauli letter, wires out of range)."""


class EncodingError(TinyQMLError, ValueError):
    """Data an encoder cannot encode (for example a zero vector for amplitude encoding)."""


class CircuitFormatError(TinyQMLError, ValueError):
    """A serialized circuit (JSON) that does not describe a valid circuit."""


class DiffMethodError(TinyQMLError, ValueError):
    """An unknown differentiation method."""


class DeviceError(TinyQMLError, ValueError):
    """Something the ``tinyqml.qubit`` PennyLane device cannot run (an operation, measurement or option)."""


class InteropError(TinyQMLError, ValueError):
    """A circuit that cannot be converted to or from Qiskit / OpenQASM."""


class UnsupportedInstructionError(InteropError):
    """A Qiskit instruction tinyqml has no gate for (``.instruction`` holds its name)."""

    def __init__(self, message: str, instruction: str | None = None) -> None:
        super().__init__(message)
        self.instruction = instruction


class UnsupportedExpressionError(InteropError, ParameterError):
    """A Qiskit parameter expression tinyqml's parameter references cannot express."""


class QasmError(InteropError):
    """OpenQASM text that could not be read (``.line``, ``.column``, ``.parser_message`` when known)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None,
                 parser_message: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.parser_message = parser_message


class TranspileError(InteropError):
    """A circuit that cannot be transpiled onto the given backend."""
