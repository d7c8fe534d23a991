"""tinyqml.qml: a batched, differentiable quantum-circuit simulator in PyTorch.

Wire 0 is the most significant bit (PennyLane's order); see :mod:`tinyqml.qml.gates`.

>>> import torch, tinyqml.qml as tq
>>> c = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
>>> tq.expval(c, [tq.Z(0) @ tq.Z(1)]).round(decimals=6)
tensor([[1.]], dtype=torch.float64)
"""

from tinyqml.qml import encoders, gates, templates
from tinyqml.qml.circuit import Circuit, CircuitBuilder, Op, Param, const, feature, weight
from tinyqml.qml.errors import (
    CircuitFormatError,
    DeviceError,
    DiffMethodError,
    EncodingError,
    InteropError,
    NonFiniteError,
    NotUnitaryError,
    ObservableError,
    ParameterError,
    QasmError,
    ShapeError,
    TinyQMLError,
    TranspileError,
    UnknownGateError,
    UnsupportedExpressionError,
    UnsupportedInstructionError,
    WireError,
)
from tinyqml.qml.gates import GATES, Gate, get_gate
from tinyqml.qml.layer import QuantumLayer
from tinyqml.qml.measure import Hamiltonian, PauliString, X, Y, Z, pauli
from tinyqml.qml.qasm import from_qasm, to_qasm
from tinyqml.qml.qiskit_convert import ParameterMap, from_qiskit, to_qiskit
from tinyqml.qml.simulate import DIFF_METHODS, counts, expval, probs, sample, statevector
from tinyqml.qml.transpiler import Layout, transpile

__all__ = [
    "Circuit", "CircuitBuilder", "Op", "Param", "const", "feature", "weight",
    "Gate", "GATES", "get_gate", "gates", "encoders", "templates",
    "QuantumLayer", "Hamiltonian", "PauliString", "X", "Y", "Z", "pauli",
    "DIFF_METHODS", "counts", "expval", "probs", "sample", "statevector",
    "TinyQMLError", "UnknownGateError", "WireError", "ParameterError", "ShapeError", "NonFiniteError",
    "NotUnitaryError", "ObservableError", "EncodingError", "CircuitFormatError", "DiffMethodError",
    "ParameterMap", "from_qiskit", "to_qiskit", "from_qasm", "to_qasm", "Layout", "transpile",
    "InteropError", "UnsupportedInstructionError", "UnsupportedExpressionError", "QasmError", "TranspileError",
    "DeviceError",
]
