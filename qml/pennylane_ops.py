"""Translate PennyLane operations into tinyqml circuits (used by the ``tinyqml.qubit`` device).

Every gate parameter becomes a tinyqml :class:`~tinyqml.qml.circuit.Param` reference: a
scalar parameter is a ``weight`` and a broadcast parameter (one value per batch row) is a
``feature`` whose input column holds the broadcast values. The circuit's structure, and so
its compiled program, therefore does not depend on parameter values, and a whole broadcast
batch runs as one tinyqml call. Parameter values stay whatever they were (torch tensors
under backprop), so gradients flow from the simulation back to them.

Gate conventions are PennyLane's (wire 0 most significant, same matrices); a PennyLane
operation without a tinyqml equivalent is decomposed by the device before it gets here
(see :func:`is_supported`) or, when it has a matrix and no decomposition, runs as that
matrix. A trainable or broadcast matrix (``QubitUnitary(U)`` with ``U`` a torch tensor
that requires grad, or ``[B, d, d]``) is kept as a tensor (:class:`DenseStep`) and applied
with tinyqml's kernels, so it stays exact and differentiable. This module imports
PennyLane; ``import tinyqml.qml`` does not.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pennylane as qml
import torch

from tinyqml.qml import encoders as E
from tinyqml.qml import gates as G
from tinyqml.qml import kernels as K
from tinyqml.qml.circuit import Circuit, Op, Param, feature, weight
from tinyqml.qml.errors import DeviceError
from tinyqml.qml.params import resolve
from tinyqml.qml.simulate import statevector

Tensor = torch.Tensor


class TinyQMLDeviceError(DeviceError, qml.exceptions.DeviceError):
    """A :class:`tinyqml.qml.errors.DeviceError` that is also PennyLane's ``DeviceError``."""


#: PennyLane name -> tinyqml gate with the same wires, parameters (same order) and matrix
DIRECT: dict[str, str] = {
    "PauliX": "X", "PauliY": "Y", "PauliZ": "Z", "Hadamard": "H", "S": "S", "T": "T", "SX": "SX",
    "Adjoint(S)": "Sdg", "Adjoint(T)": "Tdg", "Adjoint(SX)": "SXdg",
    "CNOT": "CX", "CY": "CY", "CZ": "CZ", "CH": "CH", "SWAP": "SWAP", "ISWAP": "ISWAP", "ECR": "ECR",
    "Toffoli": "CCX", "CCZ": "CCZ", "CSWAP": "CSWAP",
    "RX": "RX", "RY": "RY", "RZ": "RZ", "PhaseShift": "P", "U1": "P", "ControlledPhaseShift": "CP",
    "CRX": "CRX", "CRY": "CRY", "CRZ": "CRZ", "IsingXX": "RXX", "IsingYY": "RYY", "IsingZZ": "RZZ",
    "MultiRZ": "MultiRZ", "U2": "U2", "U3": "U",
}

#: operations that do nothing to the state (Identity, markers)
IGNORED = frozenset({"Identity", "Barrier", "WireCut", "Snapshot"})

#: operations translated by a dedicated function below
SPECIAL = frozenset({"Rot", "GlobalPhase", "MultiControlledX", "QubitUnitary"})

#: parameter-free operations up to this many wires run as their (constant) matrix
MATRIX_MAX_WIRES = 3

#: PennyLane gate names the device runs natively (the target set for graph decompositions)
GATE_NAMES = frozenset(DIRECT) | SPECIAL | IGNORED

#: translated circuits kept so that repeated runs reuse the compiled tinyqml program
CACHE_SIZE = 256


# --------------------------------------------------------------------------- support


def _trainable(op: qml.operation.Operator) -> bool:
    return any(qml.math.requires_grad(d) for d in op.data)


def _constant(op: qml.operation.Operator) -> bool:
    """Neither trainable nor broadcast: the operation's matrix is a fixed tinyqml unitary."""
    return op.batch_size is None and not _trainable(op)


def is_supported(op: qml.operation.Operator) -> bool:
    """Whether the device runs ``op`` itself (otherwise PennyLane decomposes it).

    Besides the gates with a tinyqml equivalent, operations run as their matrix when they
    are a ``QubitUnitary``, have no decomposition (``BlockEncode``, ...), or are constant,
    parameter-free and act on at most :data:`MATRIX_MAX_WIRES` wires. A trainable or
    broadcast matrix is applied as a torch tensor, so gradients reach it (see
    :class:`DenseStep`); other trainable operations are decomposed into rotations.
    """
    name = op.name
    if name in DIRECT or name in IGNORED or name in BUILDERS:
        return True
    if isinstance(op, (qml.ops.MidMeasure, qml.ops.Conditional)) or not op.has_matrix or not op.wires:
        return False
    if name == "QubitUnitary" or not op.has_decomposition:
        return True
    return op.num_params == 0 and len(op.wires) <= MATRIX_MAX_WIRES and _constant(op)


# --------------------------------------------------------------------------- parameters


def _is_batched(value: Any, batch_size: int | None) -> bool:
    return batch_size is not None and qml.math.ndim(value) >= 1


class ParamTable:
    """Collects parameter values and hands out the matching tinyqml references.

    ``ref(value)`` returns ``weight(i)`` for a scalar value and ``feature(j)`` for a
    broadcast one (a vector with one value per batch row).
    """

    def __init__(self, batch_size: int | None) -> None:
        self.batch_size = batch_size
        self.weights: list[Any] = []
        self.features: list[Any] = []

    def ref(self, value: Any, scale: float = 1.0, offset: float = 0.0) -> Param:
        """A reference to ``scale * value + offset``."""
        if _is_batched(value, self.batch_size):
            self.features.append(value)
            return feature(len(self.features) - 1, scale=scale, offset=offset)
        self.weights.append(value)
        return weight(len(self.weights) - 1, scale=scale, offset=offset)

    def tensors(self, rdtype: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
        """``(weights [W] or None, inputs [B, F] or None)`` as real torch tensors."""
        w = torch.stack([as_real_tensor(v, rdtype) for v in self.weights]) if self.weights else None
        if not self.features:
            return w, None
        cols = [as_real_tensor(v, rdtype).reshape(-1) for v in self.features]
        b = max(c.shape[0] for c in cols)
        return w, torch.stack([c.expand(b) for c in cols], dim=1)


def as_real_tensor(value: Any, rdtype: torch.dtype) -> Tensor:
    """A real torch tensor of ``value`` (torch tensors keep their autograd graph)."""
    if isinstance(value, Tensor):
        t = value.real if value.is_complex() else value
        return t.to(rdtype)
    a = np.asarray(qml.math.unwrap(value))
    return torch.as_tensor(np.real(a).astype(np.float64)).to(rdtype)


# --------------------------------------------------------------------------- translation


@dataclass(frozen=True)
class DenseStep:
    """An operation applied as its matrix tensor (trainable or broadcast ``[B, d, d]``),
    after the first ``position`` operations of the tinyqml circuit."""

    position: int
    matrix: Any
    wires: tuple[int, ...]


@dataclass
class Translation:
    """A tape's operations as a tinyqml circuit plus the values its references read.

    ``dense`` lists the operations whose matrices are tensors (rare: trainable or
    broadcast unitaries); without them the whole circuit is one tinyqml call.
    """

    circuit: Circuit
    weights: Tensor | None
    inputs: Tensor | None
    dense: tuple[DenseStep, ...] = ()


OpBuilder = Callable[[qml.operation.Operator, tuple[int, ...], ParamTable], list[Op]]


def _direct(op: qml.operation.Operator, wires: tuple[int, ...], table: ParamTable) -> list[Op]:
    gate = G.get_gate(DIRECT[op.name])
    return [Op(gate, wires, tuple(table.ref(p) for p in op.data))]


def _rot(op: qml.operation.Operator, wires: tuple[int, ...], table: ParamTable) -> list[Op]:
    phi, theta, omega = op.data  # Rot = RZ(omega) RY(theta) RZ(phi)
    return [Op(G.RZ, wires, (table.ref(phi),)), Op(G.RY, wires, (table.ref(theta),)),
            Op(G.RZ, wires, (table.ref(omega),))]


def _global_phase(op: qml.operation.Operator, wires: tuple[int, ...], table: ParamTable) -> list[Op]:
    # exp(-i phi) I = P(-2 phi) RZ(2 phi) on any one wire (wire 0: the phase is global)
    phi = op.data[0]
    return [Op(G.RZ, (0,), (table.ref(phi, scale=2.0),)), Op(G.P, (0,), (table.ref(phi, scale=-2.0),))]


def _mcx(op: qml.operation.Operator, wires: tuple[int, ...], table: ParamTable) -> list[Op]:
    values = op.hyperparameters.get("control_values") or [True] * (len(wires) - 1)
    flips = [Op(G.X, (w,)) for w, v in zip(wires[:-1], values) if not v]
    return flips + [Op(G.MCX, wires)] + flips


def _matrix_op(op: qml.operation.Operator, wires: tuple[int, ...], table: ParamTable) -> list[Op]:
    m = qml.math.unwrap(qml.matrix(op, wire_order=op.wires))
    return [Op(G.QubitUnitary, wires, (), _tuple_matrix(np.asarray(m, dtype=np.complex128)))]


def _tuple_matrix(m: np.ndarray) -> tuple[tuple[complex, ...], ...]:
    return tuple(tuple(complex(v) for v in row) for row in m)


BUILDERS: dict[str, OpBuilder] = {"Rot": _rot, "GlobalPhase": _global_phase, "MultiControlledX": _mcx}


def _ops_for(op: qml.operation.Operator, wires: tuple[int, ...], table: ParamTable) -> list[Op]:
    """The tinyqml operations of a PennyLane operation (not for :class:`DenseStep` ones)."""
    if op.name in IGNORED:
        return []
    if op.name in DIRECT:
        return _direct(op, wires, table)
    builder = BUILDERS.get(op.name)
    if builder is not None:
        return builder(op, wires, table)
    if is_supported(op):
        return _matrix_op(op, wires, table)
    raise TinyQMLDeviceError(f"operation {op.name} is not supported by tinyqml.qubit; decompose it first")


# --------------------------------------------------------------------------- state preparation


def _basis_bits(op: qml.operation.Operator) -> np.ndarray | None:
    """The bits of a constant, unbroadcast BasisState (None otherwise)."""
    if not isinstance(op, qml.BasisState) or op.batch_size is not None or _trainable(op):
        return None
    return np.asarray(qml.math.unwrap(op.data[0])).astype(np.int64).reshape(-1)


def state_prep_ops(op: qml.operation.Operator, wire_map: dict, n: int, table: ParamTable) -> list[Op]:
    """Operations preparing ``op``'s state from ``|0...0>``.

    A constant basis state becomes X gates; any other state is prepared exactly (global
    phase included) by tinyqml's amplitude encoding, whose angles are computed in torch
    from the state, so broadcast and trainable states work too.
    """
    bits = _basis_bits(op)
    if bits is not None:
        return [Op(G.X, (wire_map[w],)) for w, b in zip(op.wires, bits) if b]
    order = list(wire_map)
    state = op.state_vector(wire_order=order)
    rows = -1 if op.batch_size is not None else 1
    state = qml.math.reshape(state, (rows, 2**n))
    if not isinstance(state, Tensor):
        state = torch.as_tensor(np.asarray(qml.math.unwrap(state), dtype=np.complex128))
    feats = E.amplitude_features(state.to(torch.complex128), n, phases=True)
    batched = op.batch_size is not None
    ops = []
    for src in E.amplitude_circuit(n, phases=True).ops:
        params = tuple(_feature_ref(p, feats, batched, table) for p in src.params)
        ops.append(Op(src.gate, src.wires, params))
    return ops


def _feature_ref(p: Param, feats: Tensor, batched: bool, table: ParamTable) -> Param:
    col = feats[:, p.index[0]] if batched else feats[0, p.index[0]]
    return table.ref(col, scale=p.scale, offset=p.offset)


# --------------------------------------------------------------------------- circuits


_CACHE: "OrderedDict[Circuit, Circuit]" = OrderedDict()


def cached_circuit(n: int, ops: Sequence[Op]) -> Circuit:
    """The circuit of ``ops``; an equal circuit seen before is returned (with its compiled program)."""
    c = Circuit(n, tuple(ops))
    hit = _CACHE.get(c)
    if hit is not None:
        _CACHE.move_to_end(c)
        return hit
    _CACHE[c] = c
    if len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return c


def translate(operations: Sequence[qml.operation.Operator], wire_order: Sequence[Any],
              batch_size: int | None, rdtype: torch.dtype = torch.float64) -> Translation:
    """Translate a tape's operations (on ``wire_order``) into a tinyqml circuit and its values.

    A state preparation is accepted as the first operation only (the device's
    preprocessing decomposes any later one).
    """
    wire_map = {w: i for i, w in enumerate(wire_order)}
    n = max(len(wire_map), 1)
    table = ParamTable(batch_size)
    ops: list[Op] = []
    dense: list[DenseStep] = []
    for i, op in enumerate(operations):
        wires = tuple(wire_map[w] for w in op.wires)
        if isinstance(op, qml.operation.StatePrepBase):
            if i:
                raise TinyQMLDeviceError(f"{op.name} is supported as the first operation only, found at position {i}")
            ops += state_prep_ops(op, wire_map, n, table)
        elif _is_dense(op):
            dense.append(DenseStep(len(ops), qml.matrix(op, wire_order=op.wires), wires))
        else:
            ops += _ops_for(op, wires, table)
    weights, inputs = table.tensors(rdtype)
    return Translation(cached_circuit(n, ops), weights, inputs, tuple(dense))


def _is_dense(op: qml.operation.Operator) -> bool:
    return (op.name not in DIRECT and op.name not in BUILDERS and op.name not in IGNORED
            and not _constant(op) and is_supported(op))


# --------------------------------------------------------------------------- simulation


def _sliced(values: Tensor | None, size: int, columns: bool) -> Tensor | None:
    if values is None or size == 0:
        return None
    return values[:, :size] if columns else values[:size]


def _matrix_tensor(m: Any, like: Tensor) -> Tensor:
    t = m if isinstance(m, Tensor) else torch.as_tensor(np.asarray(qml.math.unwrap(m), dtype=np.complex128))
    t = t.to(device=like.device, dtype=like.dtype)
    return t if t.dim() == 3 else t.unsqueeze(0)


def run(t: Translation, dtype: torch.dtype = torch.complex128, adjoint: bool = False) -> Tensor:
    """The final state ``[B, 2**n]`` of a translation.

    Without dense steps this is a single tinyqml call (``adjoint``: tinyqml's adjoint
    method). Otherwise tinyqml runs the operations before the first dense step, and the
    rest are applied one by one with tinyqml's gate kernels (plain autograd).
    """
    method = "adjoint" if adjoint else "backprop"
    if not t.dense:
        return statevector(t.circuit, t.weights, t.inputs, dtype=dtype, diff_method=method)
    n, ops = t.circuit.n_wires, t.circuit.ops
    first = t.dense[0].position
    prefix = cached_circuit(n, ops[:first])
    psi = statevector(prefix, _sliced(t.weights, prefix.n_weights, False),
                      _sliced(t.inputs, prefix.n_inputs, True), dtype=dtype, diff_method=method)
    angles, batched = resolve(t.circuit, t.weights, t.inputs, dtype)
    slots = np.cumsum([0] + [len(op.params) for op in ops])
    for pos in range(first, len(ops) + 1):
        for step in (d for d in t.dense if d.position == pos):
            m = _matrix_tensor(step.matrix, psi)
            psi = K.apply_dense(psi.expand(max(psi.shape[0], m.shape[0]), -1), m, step.wires, n)
        if pos < len(ops):
            psi = _apply_op(psi, ops[pos], angles, batched, range(slots[pos], slots[pos + 1]), n)
    return psi


def _apply_op(psi: Tensor, op: Op, angles: Tensor, batched: Sequence[bool], cols: range, n: int) -> Tensor:
    rows = angles if any(batched[c] for c in cols) else angles[:1]
    p = rows[:, list(cols)] if len(cols) else angles.new_zeros(1, 0)
    u = torch.as_tensor(op.unitary_array(), dtype=psi.dtype) if op.matrix is not None else None
    return K.apply_gate(psi.expand(max(psi.shape[0], p.shape[0]), -1), op.gate, p, op.wires, n, unitary=u)
