"""Transpiling a tinyqml circuit onto a Qiskit backend's qubits and gates.

:func:`transpile` runs ``qiskit.transpile`` with a ``BackendV2`` (its coupling map
and basis gates; the calibrated fake backends of
``qiskit_ibm_runtime.fake_provider`` work offline) and converts the result back.
The returned circuit acts on the backend's *physical* qubits (``n_wires =
backend.num_qubits``); :class:`Layout` says where each of the original (virtual)
qubits starts and, after the swaps routing inserted, where it ends. Read virtual
qubit ``v`` of the result on wire ``layout.final[v]``:

>>> import tinyqml.qml as tq
>>> from qiskit_ibm_runtime.fake_provider import FakeManilaV2
>>> c = tq.CircuitBuilder(3).h(0).cx(0, 1).cx(0, 2).cx(1, 2).ry(2, tq.weight(0)).build()
>>> pc, layout = transpile(c, FakeManilaV2(), seed=7)
>>> pc.n_wires, layout.n_virtual, pc.n_weights
(5, 3, 1)
>>> w = [0.3]
>>> bool(tq.probs(pc, w, wires=layout.final).allclose(tq.probs(c, w)))
True
>>> obs = tq.Z(0) @ tq.Z(2)
>>> bool(tq.expval(pc, [layout.physical(obs)], w).allclose(tq.expval(c, [obs], w)))
True

Weights and features keep their indices, so a weight vector trained on the
original circuit drives the transpiled one. A ``CU`` whose φ and λ are different
references is first rewritten into single-parameter gates (Qiskit's own
decomposition would add φ and λ, which a tinyqml reference cannot express).
Qiskit's global phase is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from tinyqml.qml import gates as G
from tinyqml.qml import measure as M
from tinyqml.qml.circuit import Circuit, Op, Param
from tinyqml.qml.errors import InteropError, TranspileError
from tinyqml.qml.qiskit_convert import _qiskit, from_qiskit, to_qiskit


@dataclass(frozen=True)
class Layout:
    """Where the virtual qubits of a transpiled circuit live.

    Attributes:
        initial: ``initial[v]`` is the physical wire virtual qubit ``v`` starts on.
        final: ``final[v]`` is the physical wire holding virtual qubit ``v`` at the
            end (``initial`` moved by routing's swaps); measure there.
        n_physical: number of physical wires (the backend's qubits).
        permutation: ``permutation[p]`` is the wire where the state of physical
            wire ``p`` ends up, or ``None`` when routing moved nothing.
    """

    initial: tuple[int, ...]
    final: tuple[int, ...]
    n_physical: int
    permutation: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("initial", "final"):
            wires = tuple(int(p) for p in getattr(self, name))
            if len(set(wires)) != len(wires) or any(not 0 <= p < self.n_physical for p in wires):
                raise TranspileError(f"Layout.{name} must hold distinct wires in 0..{self.n_physical - 1}, "
                                     f"got {wires}")
            object.__setattr__(self, name, wires)
        if len(self.initial) != len(self.final):
            raise TranspileError("Layout.initial and Layout.final need one entry per virtual qubit")
        if self.permutation is not None:
            perm = tuple(int(p) for p in self.permutation)
            if sorted(perm) != list(range(self.n_physical)):
                raise TranspileError(f"Layout.permutation must permute 0..{self.n_physical - 1}, got {perm}")
            object.__setattr__(self, "permutation", perm)

    @property
    def n_virtual(self) -> int:
        """Number of qubits of the original circuit."""
        return len(self.initial)

    def physical(self, observable: M.Observable) -> M.Observable:
        """An observable on virtual qubits moved to the physical wires they end on.

        >>> import tinyqml.qml as tq
        >>> str(Layout(initial=(2, 0), final=(0, 2), n_physical=3).physical(tq.Z(0) @ tq.X(1)))
        'Z0 X2'
        """
        if isinstance(observable, M.Hamiltonian):
            return M.Hamiltonian(tuple(self.physical(t) for t in observable.terms))  # type: ignore[misc]
        if not isinstance(observable, M.PauliString):
            raise TranspileError(f"expected a PauliString or Hamiltonian, got {type(observable).__name__}")
        bad = [w for w in observable.wires if not 0 <= w < self.n_virtual]
        if bad:
            raise TranspileError(f"wire {bad[0]} is not a virtual qubit (0..{self.n_virtual - 1})")
        return M.PauliString(observable.paulis, tuple(self.final[w] for w in observable.wires), observable.coeff)


def _scaled(p: Param, k: float) -> Param:
    return replace(p, scale=k * p.scale, offset=k * p.offset)


def _phase_free(op: Op) -> list[Op]:
    """``U``, ``CU`` and ``P`` as ``RZ``/``RY``/``CX`` of one reference each (exact up to a global phase)."""
    if op.gate is G.U:
        theta, phi, lam = op.params
        return [Op(G.RZ, op.wires, (lam,)), Op(G.RY, op.wires, (theta,)), Op(G.RZ, op.wires, (phi,))]
    if op.gate is G.P:
        return [Op(G.RZ, op.wires, op.params)]
    if op.gate is not G.CU:
        return [op]
    theta, phi, lam = op.params
    c, t = op.wires
    return [Op(G.RZ, (c,), (_scaled(lam, 0.5),)), Op(G.RZ, (c,), (_scaled(phi, 0.5),)),
            Op(G.RZ, (t,), (_scaled(lam, 0.5),)), Op(G.RZ, (t,), (_scaled(phi, -0.5),)),
            Op(G.CX, (c, t)),
            Op(G.RZ, (t,), (_scaled(phi, -0.5),)), Op(G.RZ, (t,), (_scaled(lam, -0.5),)),
            Op(G.RY, (t,), (_scaled(theta, -0.5),)),
            Op(G.CX, (c, t)),
            Op(G.RY, (t,), (_scaled(theta, 0.5),)), Op(G.RZ, (t,), (phi,))]


def lower_for_transpile(circuit: Circuit) -> Circuit:
    """Rewrite ``U``, ``CU`` and ``P`` into ``RZ``/``RY``/``CX`` gates of one reference each.

    Exact up to a global phase: ``U(θ, φ, λ) ≅ RZ(λ) RY(θ) RZ(φ)`` (circuit order),
    ``P(φ) ≅ RZ(φ)``, and ``CU(θ, φ, λ)`` takes two CX (``RZ(λ/2) RZ(φ/2)`` on the control,
    ``RZ(λ/2) RZ(-φ/2)`` on the target, ``CX``, ``RZ(-φ/2) RZ(-λ/2) RY(-θ/2)`` on the target,
    ``CX``, ``RY(θ/2) RZ(φ)`` on the target). Every gate Qiskit then produces reads a
    single reference, and Qiskit's basis translation does not build up a symbolic
    global phase (which makes transpiling deep U3 + CU3 circuits take minutes).

    >>> import tinyqml.qml as tq
    >>> c = tq.CircuitBuilder(2).u(0, tq.weight(0), tq.weight(1), tq.weight(2)).cu(0, 1, 0.1, 0.2, tq.weight(3)).build()
    >>> lower_for_transpile(c).gate_counts
    {'RZ': 9, 'RY': 3, 'CX': 2}
    """
    return circuit.with_ops([low for op in circuit.ops for low in _phase_free(op)])


def _layout(tqc: Any, n_virtual: int) -> Layout:
    n_phys = tqc.num_qubits
    tl = tqc.layout
    if tl is None:  # nothing was laid out: the identity
        return Layout(tuple(range(n_virtual)), tuple(range(n_virtual)), n_phys)
    initial = tuple(tl.initial_index_layout(filter_ancillas=True))
    final = tuple(tl.final_index_layout(filter_ancillas=True))
    start, end = tl.initial_index_layout(filter_ancillas=False), tl.final_index_layout(filter_ancillas=False)
    perm = [0] * n_phys
    for a, b in zip(start, end):
        perm[a] = b
    moved = tuple(perm) if any(p != i for i, p in enumerate(perm)) else None
    return Layout(initial, final, n_phys, moved)


def _keep_sizes(out: Circuit, circuit: Circuit) -> Circuit:
    """Keep ``n_weights`` / ``n_inputs`` when optimization removed the last reference (an RZ(0·p) on wire 0)."""
    extra = []
    if out.n_weights < circuit.n_weights:
        extra.append(Op(G.RZ, (0,), (Param("weight", (circuit.n_weights - 1,), scale=0.0),)))
    if out.n_inputs < circuit.n_inputs:
        extra.append(Op(G.RZ, (0,), (Param("feature", (circuit.n_inputs - 1,), scale=0.0),)))
    return out.with_ops(out.ops + tuple(extra)) if extra else out


def transpile(circuit: Circuit, backend: Any, initial_layout: Sequence[int] | None = None,
              optimization_level: int = 1, seed: int | None = None) -> tuple[Circuit, Layout]:
    """``circuit`` compiled by Qiskit for ``backend``: a circuit on its physical qubits and the layout.

    Args:
        circuit: the tinyqml circuit (its wires are the virtual qubits).
        backend: a Qiskit ``BackendV2`` (e.g. ``FakeManilaV2()``); its target gives the
            coupling map and basis gates.
        initial_layout: physical qubit of each virtual qubit (default: Qiskit chooses).
        optimization_level: Qiskit's preset level 0-3. Levels 2-3 may merge rotations
            of different parameters, which tinyqml references cannot express; such
            a result raises :class:`~tinyqml.qml.errors.TranspileError`.
        seed: ``seed_transpiler`` (the layout and routing passes are randomized).
    """
    if not isinstance(circuit, Circuit):
        raise TranspileError(f"transpile needs a tinyqml Circuit, got {type(circuit).__name__}")
    qk = _qiskit()
    if getattr(backend, "target", None) is None or not isinstance(getattr(backend, "num_qubits", None), int):
        raise TranspileError(f"backend must be a Qiskit BackendV2 (with a target), got {type(backend).__name__}")
    name = getattr(backend, "name", type(backend).__name__)
    if circuit.n_wires > backend.num_qubits:
        raise TranspileError(f"the circuit has {circuit.n_wires} wires but {name} has only "
                             f"{backend.num_qubits} qubits")
    if optimization_level not in (0, 1, 2, 3):
        raise TranspileError(f"optimization_level must be 0, 1, 2 or 3, got {optimization_level!r}")
    if initial_layout is not None:
        initial_layout = [int(p) for p in initial_layout]
        if (len(initial_layout) != circuit.n_wires or len(set(initial_layout)) != len(initial_layout)
                or any(not 0 <= p < backend.num_qubits for p in initial_layout)):
            raise TranspileError(f"initial_layout needs {circuit.n_wires} distinct qubits of {name} "
                                 f"(0..{backend.num_qubits - 1}), got {initial_layout}")
    qc, pmap = to_qiskit(lower_for_transpile(circuit))
    try:
        tqc = qk.transpile(qc, backend=backend, initial_layout=initial_layout,
                           optimization_level=optimization_level, seed_transpiler=seed)
    except Exception as exc:  # noqa: BLE001 - Qiskit raises many kinds; report them as one
        raise TranspileError(f"Qiskit could not transpile the circuit for {name}: {exc}") from exc
    try:
        out, _ = from_qiskit(tqc, pmap)
    except InteropError as exc:
        raise TranspileError(f"the circuit Qiskit produced for {name} cannot be read back: {exc} "
                             f"(a lower optimization_level keeps rotations of different parameters apart)") from exc
    return _keep_sizes(out, circuit), _layout(tqc, circuit.n_wires)


__all__ = ["Layout", "lower_for_transpile", "transpile"]
