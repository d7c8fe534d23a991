"""Conversion between tinyqml circuits and Qiskit ``QuantumCircuit`` objects.

Wire ``i`` of a tinyqml circuit is Qiskit qubit ``i``. Only the order of the state
vector differs: tinyqml puts wire 0 first (most significant), Qiskit last, so
``tq.statevector(c)`` equals ``Statevector(qc).reverse_qargs().data``. The one
operation whose description depends on the order is a ``QubitUnitary``: its matrix
reads its first wire as the most significant bit, a Qiskit ``UnitaryGate``'s its
first qubit as the least significant, so the wire list is reversed at the boundary.
This module, :mod:`tinyqml.qml.qasm` and :mod:`tinyqml.qml.transpiler` are the only
places that know about Qiskit's order.

Parameters. A bound number becomes a ``const`` reference. A free Qiskit
``Parameter`` becomes a trainable ``weight`` or an input ``feature`` according to
a :class:`ParameterMap` (name -> ``(kind, index)``); by default every free
parameter is a weight, numbered in order of first appearance, the elements of a
``ParameterVector`` in their vector order. Angles may be ``a * p + b`` in one
parameter (``scale`` / ``offset`` of :class:`~tinyqml.qml.circuit.Param`) or, for
input features only, ``a * (x_i + c) * (x_j + c) * ... + b`` (IQP-style
products); anything else raises :class:`~tinyqml.qml.errors.UnsupportedExpressionError`.

Instructions. Every gate of :data:`tinyqml.qml.GATES` has a Qiskit counterpart
(``MultiRZ`` is a ``PauliEvolutionGate`` of a Z string, ``QubitUnitary`` a
``UnitaryGate``, ``MCX`` an ``MCXGate``; ``CU`` is ``CUGate(θ, φ, λ, 0)``). Reading
Qiskit circuits also accepts ``u1``/``u3``/``cu1``/``cu3``, ``c3x``/``c4x``, open
controls (``ctrl_state``), a ``CUGate``'s ``γ`` and ``PauliEvolutionGate``\\ s of
Z strings; barriers, delays and global phases are dropped (a global phase is not
observable). Gates without a Qiskit library class (``QuantumCircuit.to_gate()``,
gates defined in OpenQASM) are expanded through their definitions. Any other
instruction raises :class:`~tinyqml.qml.errors.UnsupportedInstructionError` naming
it, unless ``decompose=True``, which lets Qiskit's transpiler rewrite just that
instruction into :data:`DECOMPOSE_BASIS`. Measurements, resets and classical
control flow are always refused (``drop_final_measurements=True`` removes the
measurements at the end of a circuit first).

>>> import tinyqml.qml as tq
>>> c = tq.CircuitBuilder(2).h(0).cx(0, 1).ry(1, tq.weight(0, scale=2.0)).rz(0, tq.feature(0)).build()
>>> qc, pm = to_qiskit(c)
>>> [(ins.operation.name, [str(p) for p in ins.operation.params]) for ins in qc.data]
[('h', []), ('cx', []), ('ry', ['2*w[0]']), ('rz', ['x[0]'])]
>>> pm.as_dict()
{'w[0]': ('weight', 0), 'x[0]': ('feature', 0)}
>>> from_qiskit(qc, pm)[0] == c
True
>>> from_qiskit(qc)[1].as_dict()        # without the map, every parameter is a weight
{'w[0]': ('weight', 0), 'x[0]': ('weight', 1)}
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np
import torch

from tinyqml.qml import gates as G
from tinyqml.qml.circuit import Circuit, Op, Param, const
from tinyqml.qml.errors import (
    InteropError,
    ParameterError,
    UnsupportedExpressionError,
    UnsupportedInstructionError,
)

KINDS = ("weight", "feature")

#: Qiskit gate names that map to tinyqml gates; ``decompose=True`` rewrites other
#: instructions into these with ``qiskit.transpile(..., basis_gates=DECOMPOSE_BASIS)``
DECOMPOSE_BASIS = (
    "id", "h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx", "sxdg", "rx", "ry", "rz", "p", "u", "u2",
    "cx", "cy", "cz", "ch", "swap", "iswap", "ecr", "crx", "cry", "crz", "cp", "cu",
    "rxx", "ryy", "rzz", "rzx", "ccx", "ccz", "cswap",
)

#: instructions that are dropped: no effect on an ideal state vector
_IGNORED = ("barrier", "delay", "global_phase")
#: instructions that are refused even with ``decompose=True``, and why
_FLOW = "classical control flow is not supported (tinyqml circuits are unitary)"
_NON_UNITARY = {
    "measure": "tinyqml circuits are unitary; pass drop_final_measurements=True to drop measurements at the end",
    "reset": "tinyqml circuits are unitary and cannot reset a qubit",
    "if_else": _FLOW, "while_loop": _FLOW, "for_loop": _FLOW, "switch_case": _FLOW, "box": _FLOW, "store": _FLOW,
}


# --------------------------------------------------------------------------- qiskit import


def _qiskit() -> Any:
    """The ``qiskit`` module, or a named error when it is not installed."""
    try:
        import qiskit
    except ImportError as exc:  # pragma: no cover - qiskit is installed in the test environment
        raise InteropError("Qiskit interoperability needs qiskit: pip install 'tinyqml[interop]'") from exc
    return qiskit


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[dict[type, str], dict[str, Any]]:
    """(Qiskit gate class -> tinyqml gate name, tinyqml gate name -> Qiskit gate constructor)."""
    _qiskit()
    from qiskit.circuit import library as L

    fixed = {
        "I": L.IGate, "H": L.HGate, "X": L.XGate, "Y": L.YGate, "Z": L.ZGate, "S": L.SGate, "Sdg": L.SdgGate,
        "T": L.TGate, "Tdg": L.TdgGate, "SX": L.SXGate, "SXdg": L.SXdgGate, "RX": L.RXGate, "RY": L.RYGate,
        "RZ": L.RZGate, "P": L.PhaseGate, "U": L.UGate, "U2": L.U2Gate, "CX": L.CXGate, "CY": L.CYGate,
        "CZ": L.CZGate, "CH": L.CHGate, "SWAP": L.SwapGate, "ISWAP": L.iSwapGate, "ECR": L.ECRGate,
        "CRX": L.CRXGate, "CRY": L.CRYGate, "CRZ": L.CRZGate, "CP": L.CPhaseGate, "RXX": L.RXXGate,
        "RYY": L.RYYGate, "RZZ": L.RZZGate, "RZX": L.RZXGate, "CCX": L.CCXGate, "CCZ": L.CCZGate,
        "CSWAP": L.CSwapGate,
    }
    from_cls: dict[type, str] = {cls: name for name, cls in fixed.items()}
    from_cls.update({L.U1Gate: "P", L.U3Gate: "U", L.CU1Gate: "CP", L.CU3Gate: "CU", L.CUGate: "CU",
                     L.MCXGate: "MCX", L.C3XGate: "MCX", L.C4XGate: "MCX"})
    to_cls: dict[str, Any] = dict(fixed)
    to_cls["CU"] = lambda t, p, lam: L.CUGate(t, p, lam, 0.0)
    return from_cls, to_cls


# --------------------------------------------------------------------------- parameter map


@dataclass(frozen=True)
class ParameterMap:
    """Which Qiskit parameter feeds which tinyqml weight or input feature.

    ``entries`` holds ``(name, kind, index)`` triples, ``kind`` being ``"weight"``
    or ``"feature"``; names and ``(kind, index)`` pairs are unique. It reads like a
    mapping from names to ``(kind, index)``:

    >>> pm = ParameterMap.from_dict({"theta": ("weight", 0), "x[1]": ("feature", 1)})
    >>> pm["x[1]"], "theta" in pm, len(pm), pm.n_weights, pm.n_inputs
    (('feature', 1), True, 2, 1, 2)
    >>> pm.values(weights=[0.5], inputs=[0.0, 2.0])
    {'theta': 0.5, 'x[1]': 2.0}
    """

    entries: tuple[tuple[str, str, int], ...] = ()

    def __post_init__(self) -> None:
        checked = []
        for entry in self.entries:
            try:
                name, kind, index = entry
            except (TypeError, ValueError):
                raise ParameterError(f"a ParameterMap entry is (name, kind, index), got {entry!r}") from None
            checked.append((_check_name(name), *_check_ref(name, (kind, index))))
        names = [e[0] for e in checked]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ParameterError(f"parameter name(s) {dup} appear more than once in the parameter map")
        refs = [(k, i) for _, k, i in checked]
        shared = sorted({r for r in refs if refs.count(r) > 1})
        if shared:
            raise ParameterError(f"several parameters map to the same {shared[0][0]} {shared[0][1]}; "
                                 "use one Qiskit parameter per weight / feature")
        checked.sort(key=lambda e: (KINDS.index(e[1]), e[2], e[0]))
        object.__setattr__(self, "entries", tuple(checked))

    # mapping protocol ------------------------------------------------------
    def __getitem__(self, name: str) -> tuple[str, int]:
        for n, kind, index in self.entries:
            if n == name:
                return kind, index
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(n == name for n, _, _ in self.entries)

    def __iter__(self) -> Iterator[str]:
        return (n for n, _, _ in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def as_dict(self) -> dict[str, tuple[str, int]]:
        """``{name: (kind, index)}``, weights first, each kind by index."""
        return {n: (k, i) for n, k, i in self.entries}

    @classmethod
    def from_dict(cls, mapping: Mapping[str, tuple[str, int]]) -> "ParameterMap":
        """A map from ``{name: (kind, index)}``."""
        if isinstance(mapping, ParameterMap):
            return mapping
        if not isinstance(mapping, Mapping):
            raise ParameterError(f"a parameter map is a mapping name -> (kind, index), got {type(mapping).__name__}")
        entries = []
        for name, ref in mapping.items():
            if isinstance(ref, str):
                raise ParameterError(f"parameter {name!r}: a ParameterMap needs (kind, index), got only {ref!r}")
            entries.append((name, *_check_ref(name, ref)))
        return cls(tuple(entries))

    @classmethod
    def default(cls, circuit: Circuit, flat: bool = False) -> "ParameterMap":
        """The names :func:`to_qiskit` gives: ``w[i]`` / ``x[i]`` (``w_i`` / ``x_i`` with ``flat=True``).

        Only the weights and features the circuit uses get an entry.
        """
        fmt = "{}_{}" if flat else "{}[{}]"
        return cls(tuple((fmt.format("w" if k == "weight" else "x", i), k, i) for k, i in _used_refs(circuit)))

    # queries ----------------------------------------------------------------
    def name_of(self, kind: str, index: int) -> str | None:
        """The name mapped to ``(kind, index)``, or ``None``."""
        for n, k, i in self.entries:
            if k == kind and i == index:
                return n
        return None

    @property
    def n_weights(self) -> int:
        """One more than the largest weight index (0 without weights)."""
        return max((i + 1 for _, k, i in self.entries if k == "weight"), default=0)

    @property
    def n_inputs(self) -> int:
        """One more than the largest feature index (0 without features)."""
        return max((i + 1 for _, k, i in self.entries if k == "feature"), default=0)

    def values(self, weights: Any = None, inputs: Any = None) -> dict[str, float]:
        """``{name: value}`` for ``QuantumCircuit.assign_parameters``.

        ``weights`` is a vector; ``inputs`` one sample (a vector, or shape ``[1, n]``).
        Every entry needs its value.
        """
        w = None if weights is None else _vector(weights, "weights")
        x = None if inputs is None else _vector(inputs, "inputs")
        out = {}
        for name, kind, index in self.entries:
            src = w if kind == "weight" else x
            if src is None or index >= len(src):
                have = 0 if src is None else len(src)
                raise ParameterError(f"parameter {name!r} is {kind} {index}, but only {have} "
                                     f"{'weights' if kind == 'weight' else 'input features'} were given")
            out[name] = float(src[index])
        return out


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ParameterError(f"parameter names must be non-empty strings, got {name!r}")
    return name


def _check_ref(name: str, ref: Any) -> tuple[str, int]:
    try:
        kind, index = ref
    except (TypeError, ValueError):
        raise ParameterError(f"parameter {name!r}: expected (kind, index), got {ref!r}") from None
    if kind not in KINDS:
        raise ParameterError(f"parameter {name!r}: kind must be 'weight' or 'feature', got {kind!r}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ParameterError(f"parameter {name!r}: index must be a non-negative integer, got {index!r}")
    return kind, int(index)


def _vector(values: Any, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise ParameterError(f"{what} must be one vector (one sample), got shape {arr.shape}")
    return arr


def _used_refs(circuit: Circuit) -> list[tuple[str, int]]:
    """The ``(kind, index)`` pairs a circuit reads, weights first, each kind sorted."""
    refs = {(p.kind, i) for op in circuit.ops for p in op.params if p.kind != "const" for i in p.index}
    return sorted(refs, key=lambda r: (KINDS.index(r[0]), r[1]))


ParametersArg = Union[ParameterMap, Mapping[str, Union[str, tuple[str, int]]], None]


# --------------------------------------------------------------------------- to_qiskit


_VECTOR_NAME = re.compile(r"^(.+)\[(\d+)\]$")


def _make_parameters(names: Iterable[str]) -> dict[str, Any]:
    """Qiskit parameters for ``names``; ``stem[i]`` names become elements of a ``ParameterVector``."""
    from qiskit.circuit import Parameter, ParameterVector

    names = list(names)
    stems: dict[str, int] = {}
    for n in names:
        m = _VECTOR_NAME.match(n)
        if m:
            stems[m.group(1)] = max(stems.get(m.group(1), 0), int(m.group(2)) + 1)
    vectors = {stem: ParameterVector(stem, size) for stem, size in stems.items()}
    out = {}
    for n in names:
        m = _VECTOR_NAME.match(n)
        out[n] = vectors[m.group(1)][int(m.group(2))] if m else Parameter(n)
    return out


def _expression(p: Param, symbols: Mapping[tuple[str, int], Any]) -> Any:
    """The Qiskit angle of a parameter reference: a float or a ``ParameterExpression``."""
    if p.kind == "const":
        return float(p.scale * p.value + p.offset)
    if p.scale == 0:
        return float(p.offset)
    if p.kind == "weight":  # a weight's angle ignores feature_shift
        base, offset = symbols[("weight", p.index[0])], p.offset
    elif len(p.index) == 1:  # scale * (x + shift) + offset = scale * x + (scale * shift + offset)
        base, offset = symbols[("feature", p.index[0])], p.offset + p.scale * p.feature_shift
    else:
        base = functools.reduce(lambda a, b: a * b, [symbols[("feature", i)] + p.feature_shift for i in p.index])
        offset = p.offset
    expr = base if p.scale == 1 else p.scale * base
    return expr + offset if offset else expr


def _to_instruction(op: Op, angles: list[Any]) -> tuple[Any, list[int]]:
    """A Qiskit gate for ``op`` and its qubits."""
    from qiskit.circuit.library import MCXGate, PauliEvolutionGate, UnitaryGate
    from qiskit.quantum_info import SparsePauliOp

    name, wires = op.name, list(op.wires)
    if name == "QubitUnitary":  # Qiskit reads the matrix with its first qubit least significant
        return UnitaryGate(op.unitary_array(), check_input=False), wires[::-1]
    if name == "MCX":
        return MCXGate(len(wires) - 1), wires
    if name == "MultiRZ":  # exp(-i θ/2 Z...Z) = exp(-i t Z...Z) with t = θ/2
        return PauliEvolutionGate(SparsePauliOp("Z" * len(wires)), time=angles[0] * 0.5), wires
    return _tables()[1][name](*angles), wires


def to_qiskit(circuit: Circuit, parameter_map: ParametersArg = None) -> tuple[Any, ParameterMap]:
    """The Qiskit ``QuantumCircuit`` of a tinyqml circuit, and the names of its parameters.

    Weights become elements of a ``ParameterVector`` ``"w"``, input features of
    ``"x"``, unless ``parameter_map`` names them (names of the form ``stem[i]``
    become ``ParameterVector`` elements, others plain ``Parameter``\\ s). A
    reference's ``scale`` and ``offset`` become the expression ``scale * p + offset``;
    a feature product becomes ``scale * (x_i + shift) * (x_j + shift) + offset``.
    The returned map lists every parameter of the Qiskit circuit; pass it to
    :func:`from_qiskit` to read the circuit back with the same indices.

    ``MultiRZ`` becomes a ``PauliEvolutionGate``. Qiskit 2.6's OpenQASM 3 exporter
    writes a wrong gate body for a ``PauliEvolutionGate`` with a symbolic time, so
    export with :func:`tinyqml.qml.qasm.to_qasm` (which writes a CX ladder) rather
    than ``qiskit.qasm3.dumps``.

    >>> import tinyqml.qml as tq
    >>> c = tq.CircuitBuilder(3).multirz([0, 1, 2], tq.weight(0)).unitary([0, 2], [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]).build()
    >>> qc, pm = to_qiskit(c, {"theta": ("weight", 0)})
    >>> [(i.operation.name, [qc.find_bit(q).index for q in i.qubits]) for i in qc.data]
    [('PauliEvolution', [0, 1, 2]), ('unitary', [2, 0])]
    >>> pm.as_dict()
    {'theta': ('weight', 0)}
    """
    if not isinstance(circuit, Circuit):
        raise InteropError(f"to_qiskit needs a tinyqml Circuit, got {type(circuit).__name__}")
    qk = _qiskit()
    given = ParameterMap() if parameter_map is None else ParameterMap.from_dict(parameter_map)
    entries = []
    for kind, index in _used_refs(circuit):
        name = given.name_of(kind, index) or f"{'w' if kind == 'weight' else 'x'}[{index}]"
        entries.append((name, kind, index))
    pmap = ParameterMap(tuple(entries))  # checks that default names do not collide with given ones
    params = _make_parameters(n for n, _, _ in pmap.entries)
    symbols = {(k, i): params[n] for n, k, i in pmap.entries}
    qc = qk.QuantumCircuit(circuit.n_wires)
    for op in circuit.ops:
        gate, qubits = _to_instruction(op, [_expression(p, symbols) for p in op.params])
        qc.append(gate, qubits)
    return qc, pmap


# --------------------------------------------------------------------------- from_qiskit: instructions


@dataclass(frozen=True)
class _Raw:
    """An operation read from Qiskit whose angles are still numbers or ``ParameterExpression``\\ s."""

    gate: str
    wires: tuple[int, ...]
    angles: tuple[Any, ...] = ()
    matrix: Any = None
    source: str = ""


def _is_user_defined(op: Any) -> bool:
    """A gate defined by its definition alone (``to_gate()``, OpenQASM ``gate``), not a library class."""
    from qiskit.circuit import Gate, Instruction

    cls = getattr(op, "base_class", type(op))  # AnnotatedOperation has none
    return cls in (Gate, Instruction) or cls.__module__ == "qiskit.qasm2.parse" or not cls.__module__.startswith("qiskit")


def _with_open_controls(op: Any, wires: list[int], raws: list[_Raw]) -> list[_Raw]:
    """Conjugate ``raws`` with X on the controls that trigger on |0> (Qiskit's ``ctrl_state``)."""
    from qiskit.circuit import ControlledGate

    if not isinstance(op, ControlledGate):
        return raws
    n = op.num_ctrl_qubits
    flips = [_Raw("X", (wires[i],), source=op.name) for i in range(n) if not (op.ctrl_state >> i) & 1]
    return flips + raws + flips


def _pauli_evolution(op: Any, wires: list[int]) -> list[_Raw] | None:
    """A ``PauliEvolutionGate`` of Z strings as ``MultiRZ`` operations (None: other Paulis)."""
    from qiskit.quantum_info import SparsePauliOp

    ops = op.operator if isinstance(op.operator, list) else [op.operator]
    time = op.params[0]
    out = []
    for operator in ops:
        try:
            spo = SparsePauliOp(operator)
        except Exception:  # noqa: BLE001 - e.g. an observable type Qiskit cannot convert
            return None
        for z, x, coeff in zip(spo.paulis.z, spo.paulis.x, spo.coeffs):
            if x.any() or abs(complex(coeff).imag) > 1e-12:
                return None
            zw = tuple(wires[i] for i in range(len(wires)) if z[i])
            if zw:  # an identity term is a global phase
                out.append(_Raw("MultiRZ", zw, (time * (2.0 * complex(coeff).real),), source=op.name))
    return out


def _known(op: Any, wires: list[int]) -> list[_Raw] | None:
    """The tinyqml operations of a Qiskit library gate, or None when tinyqml has no gate for it."""
    from qiskit.circuit.library import CUGate, PauliEvolutionGate, UnitaryGate

    cls = getattr(op, "base_class", type(op))  # AnnotatedOperation has none
    if cls is UnitaryGate:
        return [_Raw("QubitUnitary", tuple(wires[::-1]), (), np.asarray(op.to_matrix()), source=op.name)]
    if cls is PauliEvolutionGate:
        return _pauli_evolution(op, wires)
    name = _tables()[0].get(cls)
    if name is None:
        return None
    if name == "MCX" and op.num_qubits != op.num_ctrl_qubits + 1:  # variants with ancilla qubits
        return None
    raws = [_Raw(name, tuple(wires), tuple(op.params[: G.get_gate(name).num_params]), source=op.name)]
    if cls is CUGate and not (_is_number(op.params[3]) and float(op.params[3]) == 0.0):
        raws.append(_Raw("P", (wires[0],), (op.params[3],), source=op.name))  # γ: a phase on the control
    return _with_open_controls(op, wires, raws)


def _is_number(v: Any) -> bool:
    from qiskit.circuit import ParameterExpression

    return not isinstance(v, ParameterExpression) or not v.parameters


def _decompose(op: Any) -> Any:
    """``op`` alone rewritten by Qiskit's transpiler into :data:`DECOMPOSE_BASIS`."""
    qk = _qiskit()
    n_clbits = getattr(op, "num_clbits", 0)
    tmp = qk.QuantumCircuit(op.num_qubits, n_clbits)
    tmp.append(op, range(op.num_qubits), range(n_clbits))
    try:
        return qk.transpile(tmp, basis_gates=list(DECOMPOSE_BASIS), optimization_level=0)
    except Exception as exc:  # noqa: BLE001 - Qiskit raises many kinds; name the instruction instead
        raise UnsupportedInstructionError(
            f"Qiskit could not decompose {op.name!r} into tinyqml's gates: {exc}", op.name) from exc


def _unsupported(op: Any) -> UnsupportedInstructionError:
    name = op.name
    if name in _NON_UNITARY:
        return UnsupportedInstructionError(f"cannot convert {name!r}: {_NON_UNITARY[name]}", name)
    return UnsupportedInstructionError(
        f"tinyqml has no gate for the Qiskit instruction {name!r} ({type(op).__name__}); pass decompose=True "
        "to let Qiskit's transpiler rewrite it into tinyqml's gates", name)


def _walk(qc: Any, qubits: Sequence[int], decompose: bool, depth: int = 0) -> Iterator[_Raw]:
    """The operations of ``qc`` with its qubits renamed to ``qubits``; definitions expanded."""
    if depth > 64:
        raise UnsupportedInstructionError("gate definitions nested more than 64 levels deep")
    for ins in qc.data:
        op = ins.operation
        wires = [qubits[qc.find_bit(q).index] for q in ins.qubits]
        if op.name in _IGNORED:
            continue
        if op.name in _NON_UNITARY or getattr(op, "blocks", None):
            raise _unsupported(op)
        raws = _known(op, wires)
        if raws is not None:
            yield from raws
        elif _is_user_defined(op) and getattr(op, "definition", None) is not None:
            yield from _walk(op.definition, wires, decompose, depth + 1)
        elif decompose:
            yield from _walk(_decompose(op), wires, False, depth + 1)
        else:
            raise _unsupported(op)


# --------------------------------------------------------------------------- from_qiskit: parameters


def _parameters_in_order(raws: Sequence[_Raw]) -> list[Any]:
    """Free parameters in order of first appearance, each ParameterVector's elements together and in order."""
    from qiskit.circuit import ParameterExpression, ParameterVectorElement

    groups: dict[Any, set] = {}
    for raw in raws:
        for a in raw.angles:
            if isinstance(a, ParameterExpression):
                for p in sorted(a.parameters, key=lambda q: q.name):
                    key = ("vector", p.vector.name) if isinstance(p, ParameterVectorElement) else ("single", p.name)
                    groups.setdefault(key, set()).add(p)
    out = []
    for (tag, _), members in groups.items():
        out.extend(sorted(members, key=lambda q: q.index) if tag == "vector" else members)
    return out


def _resolve_map(params: Sequence[Any], parameters: ParametersArg) -> tuple[ParameterMap, dict[str, tuple[str, int]]]:
    """The parameter map of a circuit whose free parameters are ``params`` (in default order)."""
    from qiskit.circuit import ParameterVectorElement

    by_name = {p.name: p for p in params}
    fixed: dict[str, tuple[str, int]] = {}
    auto: dict[str, str] = {}  # name -> kind, index assigned below
    extra: list[tuple[str, str, int]] = []
    if isinstance(parameters, ParameterMap):  # entries for names the circuit lacks are kept as they are
        for name, kind, index in parameters.entries:
            if name in by_name:
                fixed[name] = (kind, index)
            else:
                extra.append((name, kind, index))
    elif parameters is not None:
        if not isinstance(parameters, Mapping):
            raise ParameterError("parameters must map parameter names to (kind, index) or a kind, "
                                 f"got {type(parameters).__name__}")
        vectors: dict[str, list[Any]] = {}
        for p in params:
            if isinstance(p, ParameterVectorElement):
                vectors.setdefault(p.vector.name, []).append(p)
        for name, ref in parameters.items():
            _check_name(name)
            if name in by_name:
                if isinstance(ref, str):
                    auto[name] = _check_ref(name, (ref, 0))[0]
                else:
                    fixed[name] = _check_ref(name, ref)
            elif name in vectors and isinstance(ref, str):  # a whole ParameterVector: element i -> index i
                kind = _check_ref(name, (ref, 0))[0]
                for p in vectors[name]:
                    fixed[p.name] = (kind, p.index)
            else:
                known = ", ".join(sorted(by_name)) or "none"
                hint = " (a ParameterVector name takes a kind only)" if name in vectors else ""
                raise ParameterError(f"the circuit has no parameter {name!r}{hint}; its parameters: {known}")
    taken = {kind: {i for k, i in list(fixed.values()) + [(k, i) for _, k, i in extra] if k == kind}
             for kind in KINDS}
    counters = {kind: 0 for kind in KINDS}
    refs: dict[str, tuple[str, int]] = dict(fixed)
    for p in params:
        if p.name in fixed:
            continue
        kind = auto.get(p.name, "weight")
        while counters[kind] in taken[kind]:
            counters[kind] += 1
        refs[p.name] = (kind, counters[kind])
        taken[kind].add(counters[kind])
    return ParameterMap(tuple((n, k, i) for n, (k, i) in refs.items()) + tuple(extra)), refs


def _real(z: Any, what: Any) -> float:
    z = complex(z)
    if abs(z.imag) > 1e-12 * max(1.0, abs(z.real)):
        raise UnsupportedExpressionError(f"the angle {what} is complex; tinyqml angles are real")
    return z.real


def _param_value(p: Param, values: Mapping[tuple[str, int], float]) -> float:
    if p.kind == "weight":
        base = values[("weight", p.index[0])]
    else:
        base = math.prod(values[("feature", i)] + p.feature_shift for i in p.index)
    return p.scale * base + p.offset


def _fit(angle: Any, refs: Mapping[str, tuple[str, int]]) -> Param:
    """The reference ``scale * prod(p + shift) + offset`` equal to the expression ``angle``.

    The expression is expanded into a polynomial (SymPy); the leading coefficient
    gives ``scale``, the next one ``shift``, the value at ``p = -shift`` ``offset``,
    and the expanded model must reproduce every coefficient.
    """
    import sympy

    expr = sympy.expand(angle.sympify())
    symbols = {s.name: s for s in expr.free_symbols}
    if not symbols:
        return const(_real(expr, angle))
    names = sorted(symbols, key=lambda n: (KINDS.index(refs[n][0]), refs[n][1]))
    kinds = {refs[n][0] for n in names}
    if len(kinds) > 1:
        raise UnsupportedExpressionError(f"the angle {angle} mixes trainable weights and input features")
    gens = [symbols[n] for n in names]
    poly = sympy.Poly(expr, *gens)  # PolynomialError: not a polynomial
    coeffs = {m: _real(c, angle) for m, c in poly.as_dict().items()}
    degrees = list(poly.degree_list())
    total = sum(degrees)
    if total > 1 and "weight" in kinds:
        raise UnsupportedExpressionError(
            f"the angle {angle} is not affine in one trainable weight (products and powers are supported "
            "only between input features; map those parameters to features)")
    scale = coeffs.get(tuple(degrees), 0.0)
    if total == 1:
        shift, offset = 0.0, coeffs.get((0,) * len(gens), 0.0)
    else:
        lower = [degrees[0] - 1] + degrees[1:]
        shift = coeffs.get(tuple(lower), 0.0) / (scale * degrees[0])
        offset = _real(expr.subs({g: -shift for g in gens}), angle)
    model = sympy.Poly(sympy.expand(scale * sympy.Mul(*[(g + shift) ** d for g, d in zip(gens, degrees)]) + offset),
                       *gens).as_dict()
    size = max(1.0, max(abs(c) for c in coeffs.values()))
    if any(abs(coeffs.get(m, 0.0) - _real(model.get(m, 0), angle)) > 1e-9 * size for m in set(coeffs) | set(model)):
        raise ValueError("not of the form scale * prod(x + shift) + offset")
    index = tuple(refs[n][1] for n, d in zip(names, degrees) for _ in range(d))
    return Param(kinds.pop(), index, scale=scale, offset=offset, feature_shift=shift)


def _to_param(angle: Any, refs: Mapping[str, tuple[str, int]], where: str) -> Param:
    """The tinyqml reference of a Qiskit angle (a number or a ``ParameterExpression``)."""
    from qiskit.circuit import Parameter, ParameterExpression

    if not isinstance(angle, ParameterExpression):
        return const(_real(angle, angle))
    if isinstance(angle, Parameter):  # the common case, without symbolic algebra
        kind, index = refs[angle.name]
        return Param(kind, (index,))
    try:
        return _fit(angle, refs)
    except UnsupportedExpressionError as exc:
        raise UnsupportedExpressionError(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the symbolic analysis means "not supported"
        raise UnsupportedExpressionError(
            f"{where}: unsupported parameter expression {angle}; tinyqml angles are scale * p + offset in one "
            "parameter, or scale * (x_i + shift) * (x_j + shift) * ... + offset over input features") from exc


def from_qiskit(qc: Any, parameters: ParametersArg = None, *, decompose: bool = False,
                drop_final_measurements: bool = False) -> tuple[Circuit, ParameterMap]:
    """A tinyqml circuit from a Qiskit ``QuantumCircuit``, and its parameter map.

    Args:
        qc: the Qiskit circuit (qubit ``i`` becomes wire ``i``; its global phase is dropped).
        parameters: which free parameters are input features. A :class:`ParameterMap`
            or a dict whose keys are parameter names with values ``(kind, index)`` or
            just a kind (next free index), or ``ParameterVector`` names with a kind
            (element ``i`` -> index ``i``): ``{"x": "feature"}``. Parameters it leaves
            out become weights in order of first appearance.
        decompose: rewrite instructions tinyqml has no gate for with Qiskit's transpiler.
        drop_final_measurements: remove measurements (and barriers) at the end first.

    >>> from qiskit import QuantumCircuit
    >>> from qiskit.circuit import Parameter, ParameterVector
    >>> x, theta = ParameterVector("x", 2), Parameter("θ")
    >>> qc = QuantumCircuit(2)
    >>> _ = qc.ry(x[0], 0); _ = qc.rzz(2 * (x[0] - 1) * (x[1] - 1), 0, 1); _ = qc.rx(theta / 2 + 1, 1)
    >>> c, pm = from_qiskit(qc, {"x": "feature"})
    >>> pm.as_dict()
    {'θ': ('weight', 0), 'x[0]': ('feature', 0), 'x[1]': ('feature', 1)}
    >>> [(op.name, op.params[0].kind, op.params[0].index, op.params[0].scale) for op in c.ops]
    [('RY', 'feature', (0,), 1.0), ('RZZ', 'feature', (0, 1), 2.0), ('RX', 'weight', (0,), 0.5)]
    >>> c.ops[1].params[0].feature_shift, c.ops[2].params[0].offset
    (-1.0, 1.0)
    >>> _ = qc.dcx(0, 1)
    >>> from_qiskit(qc)
    Traceback (most recent call last):
    ...
    tinyqml.qml.errors.UnsupportedInstructionError: tinyqml has no gate for the Qiskit instruction 'dcx' ...
    >>> from_qiskit(qc, {"x": "feature"}, decompose=True)[0].gate_counts["CX"]
    2
    """
    qk = _qiskit()
    if not isinstance(qc, qk.QuantumCircuit):
        raise InteropError(f"from_qiskit needs a qiskit QuantumCircuit, got {type(qc).__name__}")
    if qc.num_qubits < 1:
        raise InteropError("the Qiskit circuit has no qubits; a tinyqml circuit needs at least one wire")
    if drop_final_measurements:
        qc = qc.remove_final_measurements(inplace=False)
    raws = list(_walk(qc, list(range(qc.num_qubits)), decompose))
    pmap, refs = _resolve_map(_parameters_in_order(raws), parameters)
    ops = []
    for raw in raws:
        where = f"{raw.source} on qubits {list(raw.wires)}"
        params = tuple(_to_param(a, refs, where) for a in raw.angles)
        ops.append(Op(G.get_gate(raw.gate), raw.wires, params,
                      None if raw.matrix is None else tuple(tuple(complex(v) for v in row) for row in raw.matrix)))
    return Circuit(qc.num_qubits, tuple(ops)), pmap


def bind(circuit: Circuit, weights: Any = None, inputs: Any = None) -> Circuit:
    """``circuit`` with its weight (and/or feature) references replaced by constants.

    ``inputs`` is one sample. References whose values are not given stay as they are.

    >>> import tinyqml.qml as tq
    >>> c = tq.CircuitBuilder(1).rx(0, tq.weight(0, scale=2.0)).ry(0, tq.feature(0)).build()
    >>> [p.to_dict() for op in bind(c, weights=[0.25]).ops for p in op.params]
    [{'kind': 'const', 'value': 0.5}, {'kind': 'feature', 'index': [0]}]
    """
    w = None if weights is None else _vector(weights, "weights")
    x = None if inputs is None else _vector(inputs, "inputs")
    if w is not None and len(w) < circuit.n_weights:
        raise ParameterError(f"the circuit reads {circuit.n_weights} weights, got {len(w)}")
    if x is not None and len(x) < circuit.n_inputs:
        raise ParameterError(f"the circuit reads {circuit.n_inputs} input features, got {len(x)}")

    vals = {("weight", i): float(v) for i, v in enumerate(w if w is not None else ())}
    vals.update({("feature", i): float(v) for i, v in enumerate(x if x is not None else ())})

    def value(p: Param) -> Param:
        known = (p.kind == "weight" and w is not None) or (p.kind == "feature" and x is not None)
        return const(_param_value(p, vals)) if known else p

    return circuit.with_ops(replace(op, params=tuple(value(p) for p in op.params)) for op in circuit.ops)


__all__ = ["DECOMPOSE_BASIS", "ParameterMap", "bind", "from_qiskit", "to_qiskit"]
