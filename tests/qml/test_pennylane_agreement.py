"""tinyqml agrees with PennyLane's default.qubit (float64, torch interface, broadcasting).

Expectations agree to 1e-10; gradients w.r.t. weights and inputs from each tinyqml
diff method agree with PennyLane's backprop gradients to 1e-8. The PennyLane side
uses PennyLane's own templates where one exists, and otherwise a gate-by-gate
translation whose angles are computed here from the parameter references.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import pytest
import torch

import tinyqml.qml as tq
from tinyqml.qml import encoders as E
from tinyqml.qml import templates as T

qml = pytest.importorskip("pennylane")

F64 = torch.float64

OBSERVABLES = (
    tq.Z(0),
    tq.X(0) @ tq.Y(1),
    tq.pauli("Z0 Z1", 0.3) + tq.X(2) * -1.2 + tq.pauli("Y0 X1 Z3", 0.7) + tq.pauli("X1 X3", 0.25),
)


# --------------------------------------------------------------------------- translation to PennyLane


def _angle(p: tq.Param, w: torch.Tensor, x: torch.Tensor):
    """The angle of a parameter reference, computed independently of tinyqml."""
    if p.kind == "const":
        base = torch.tensor(p.value, dtype=F64)
    elif p.kind == "weight":
        base = w[p.index[0]]
    else:
        base = torch.ones(x.shape[0], dtype=F64)
        for i in p.index:
            base = base * (x[:, i] + p.feature_shift)
    return p.scale * base + p.offset


def _ctrl(op_cls):
    return lambda a, ws: qml.ctrl(op_cls(*a, wires=ws[1:]), control=ws[0])


PL_GATES: dict[str, Callable] = {
    "H": lambda a, ws: qml.Hadamard(ws), "X": lambda a, ws: qml.PauliX(ws), "Y": lambda a, ws: qml.PauliY(ws),
    "Z": lambda a, ws: qml.PauliZ(ws), "S": lambda a, ws: qml.S(ws), "T": lambda a, ws: qml.T(ws),
    "SX": lambda a, ws: qml.SX(ws), "CX": lambda a, ws: qml.CNOT(ws), "CY": lambda a, ws: qml.CY(ws),
    "CZ": lambda a, ws: qml.CZ(ws), "SWAP": lambda a, ws: qml.SWAP(ws), "CCX": lambda a, ws: qml.Toffoli(ws),
    "RX": lambda a, ws: qml.RX(*a, ws), "RY": lambda a, ws: qml.RY(*a, ws), "RZ": lambda a, ws: qml.RZ(*a, ws),
    "P": lambda a, ws: qml.PhaseShift(*a, ws), "U": lambda a, ws: qml.U3(*a, wires=ws),
    "U2": lambda a, ws: qml.U2(*a, wires=ws),
    "CRX": lambda a, ws: qml.CRX(*a, ws), "CRY": lambda a, ws: qml.CRY(*a, ws), "CRZ": lambda a, ws: qml.CRZ(*a, ws),
    "CP": lambda a, ws: qml.ControlledPhaseShift(*a, ws), "CU": _ctrl(qml.U3),
    "RXX": lambda a, ws: qml.IsingXX(*a, ws), "RYY": lambda a, ws: qml.IsingYY(*a, ws),
    "RZZ": lambda a, ws: qml.IsingZZ(*a, ws), "RZX": lambda a, ws: qml.PauliRot(*a, "ZX", wires=ws),
    "MultiRZ": lambda a, ws: qml.MultiRZ(*a, wires=ws),
}


def _apply_translated(circuit: tq.Circuit, w: torch.Tensor, x: torch.Tensor) -> None:
    for op in circuit.ops:
        PL_GATES[op.name]([_angle(p, w, x) for p in op.params], list(op.wires))


def _pl_observable(ob):
    if isinstance(ob, tq.Hamiltonian):
        return qml.Hamiltonian([t.coeff for t in ob.terms], [_pl_observable(t * (1 / t.coeff)) for t in ob.terms])
    letters = {"I": qml.Identity, "X": qml.PauliX, "Y": qml.PauliY, "Z": qml.PauliZ}
    term = qml.prod(*[letters[p](w) for p, w in zip(ob.paulis, ob.wires)])
    return term if ob.coeff == 1 else qml.s_prod(ob.coeff, term)


# --------------------------------------------------------------------------- shared cases


@dataclass(frozen=True)
class Case:
    """A tinyqml circuit, its PennyLane counterpart and data (``x`` as tinyqml reads it)."""

    circuit: tq.Circuit
    pl_body: Callable  # (weights, raw inputs) -> None, queues PennyLane operations
    w: torch.Tensor
    x: torch.Tensor  # the raw data PennyLane sees
    to_inputs: Callable = lambda x: x  # raw data -> tinyqml inputs (amplitude encoding derives angles)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _angle_strongly() -> Case:
    n, layers = 4, 3
    enc, ans = E.angle(n, "Y"), T.strongly_entangling(n, layers)
    r = _rng(1)

    def body(w, x):
        qml.AngleEmbedding(x, wires=range(n), rotation="Y")
        qml.StronglyEntanglingLayers(w.reshape(layers, n, 3), wires=range(n))

    return Case(T.classifier_circuit(enc, ans), body, torch.tensor(r.uniform(-3, 3, ans.n_weights), dtype=F64),
                torch.tensor(r.uniform(-2, 2, (4, n)), dtype=F64))


def _iqp_hardware_efficient() -> Case:
    n = 4
    enc, ans = E.iqp(n, n_repeats=2), T.hardware_efficient(n, 2, rotations=("RY", "RZ", "RX"), entangler="all")
    r = _rng(2)

    def body(w, x):
        qml.IQPEmbedding(x, wires=range(n), n_repeats=2)
        _apply_translated(ans, w, x)

    return Case(enc + ans, body, torch.tensor(r.uniform(-3, 3, ans.n_weights), dtype=F64),
                torch.tensor(r.uniform(-1.5, 1.5, (3, n)), dtype=F64))


def _angle_x_u3cu3_reupload() -> Case:
    n = 4
    enc, ans = E.angle(n, "X", scale=0.5), T.u3cu3(n, 1)
    circ = T.classifier_circuit(enc, ans, n_reuploads=2)
    r = _rng(3)

    def body(w, x):
        _apply_translated(circ, w, x)

    return Case(circ, body, torch.tensor(r.uniform(-3, 3, circ.n_weights), dtype=F64),
                torch.tensor(r.uniform(-2, 2, (5, n)), dtype=F64))


def _amplitude_strongly() -> Case:
    n, layers = 4, 2
    ans = T.strongly_entangling(n, layers)
    r = _rng(4)

    def body(w, x):
        qml.AmplitudeEmbedding(x, wires=range(n), normalize=True, pad_with=0.0)
        qml.StronglyEntanglingLayers(w.reshape(layers, n, 3), wires=range(n))

    return Case(T.classifier_circuit(E.amplitude_circuit(n), ans), body,
                torch.tensor(r.uniform(-3, 3, ans.n_weights), dtype=F64),
                torch.tensor(r.uniform(-1, 1, (4, 13)), dtype=F64), lambda x: E.amplitude_features(x, n))


RANDOM_GATES = ("RX", "RY", "RZ", "P", "U", "U2", "CRX", "CRY", "CRZ", "CP", "CU", "RXX", "RYY", "RZZ", "RZX",
                "MultiRZ", "H", "CX", "CZ", "SX", "S", "CY", "SWAP", "CCX", "T")


def _random_circuit(seed: int, n: int = 4, n_ops: int = 36, n_weights: int = 12, n_inputs: int = 3) -> Case:
    r = _rng(seed)
    b = tq.CircuitBuilder(n)
    names = list(RANDOM_GATES) + list(RANDOM_GATES[:16])  # parametrized gates twice as likely
    for k in range(n_ops):
        g = tq.get_gate(str(r.choice(names)))
        k_wires = g.num_wires or int(r.integers(1, n + 1))
        wires = [int(v) for v in r.permutation(n)[:k_wires]]
        params = []
        for _ in range(g.num_params):
            kind = r.integers(3)
            if kind == 0:
                params.append(tq.weight(int(r.integers(n_weights)), scale=float(r.choice([1.0, -0.5, 2.0])),
                                        offset=float(r.uniform(-1, 1))))
            elif kind == 1:
                idx = [int(i) for i in r.choice(n_inputs, size=int(r.integers(1, 3)), replace=False)]
                params.append(tq.feature(idx, scale=float(r.choice([1.0, 0.7])), shift=float(r.choice([0.0, 0.3]))))
            else:
                params.append(tq.const(float(r.uniform(-3, 3))))
        b.append(g, wires, *params)
    for i in range(n_weights):  # every weight is used at least once
        b.ry(i % n, tq.weight(i))
    for i in range(n_inputs):
        b.rx((i + 1) % n, tq.feature(i))
    circ = b.build()

    def body(w, x):
        _apply_translated(circ, w, x)

    return Case(circ, body, torch.tensor(r.uniform(-3, 3, n_weights), dtype=F64),
                torch.tensor(r.uniform(-2, 2, (int(r.integers(3, 6)), n_inputs)), dtype=F64))


CASES: dict[str, Callable[[], Case]] = {
    "angle+strongly_entangling": _angle_strongly,
    "iqp+hardware_efficient": _iqp_hardware_efficient,
    "angleX+u3cu3_reupload": _angle_x_u3cu3_reupload,
    "amplitude+strongly_entangling": _amplitude_strongly,
    "random0": lambda: _random_circuit(10),
    "random1": lambda: _random_circuit(11),
    "random2": lambda: _random_circuit(12, n=5, n_ops=40),
}


def _coefficients(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor(_rng(99).uniform(-1, 1, shape), dtype=F64)


@lru_cache(maxsize=None)
def _case(name: str) -> Case:
    return CASES[name]()


@lru_cache(maxsize=None)
def _pennylane(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PennyLane's expectations [B, n_obs] and backprop gradients of sum(coef * E) w.r.t. weights and x."""
    case = _case(name)
    n = case.circuit.n_wires
    dev = qml.device("default.qubit", wires=n)
    obs = [_pl_observable(o) for o in OBSERVABLES]

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def qnode(w, x):
        case.pl_body(w, x)
        return [qml.expval(o) for o in obs]

    w = case.w.clone().requires_grad_(True)
    x = case.x.clone().requires_grad_(True)
    e = torch.stack(list(qnode(w, x)), dim=1)
    (e * _coefficients(tuple(e.shape))).sum().backward()
    return e.detach(), w.grad, x.grad


@pytest.mark.parametrize("name", list(CASES))
def test_expectations_agree(name: str) -> None:
    case = _case(name)
    e_pl, _, _ = _pennylane(name)
    assert e_pl.shape == (case.x.shape[0], len(OBSERVABLES))
    for method in tq.DIFF_METHODS:
        e = tq.expval(case.circuit, OBSERVABLES, weights=case.w, inputs=case.to_inputs(case.x), diff_method=method)
        torch.testing.assert_close(e, e_pl, atol=1e-10, rtol=0)


@pytest.mark.parametrize("method", tq.DIFF_METHODS)
@pytest.mark.parametrize("name", list(CASES))
def test_gradients_agree(name: str, method: str) -> None:
    case = _case(name)
    _, gw_pl, gx_pl = _pennylane(name)
    w = case.w.clone().requires_grad_(True)
    x = case.x.clone().requires_grad_(True)
    e = tq.expval(case.circuit, OBSERVABLES, weights=w, inputs=case.to_inputs(x), diff_method=method)
    (e * _coefficients(tuple(e.shape))).sum().backward()
    torch.testing.assert_close(w.grad, gw_pl, atol=1e-8, rtol=0)
    torch.testing.assert_close(x.grad, gx_pl, atol=1e-8, rtol=0)


def test_states_agree_on_random_circuits() -> None:
    """The full broadcast state, not only expectations (global phases included)."""
    for name in ("random0", "random2"):
        case = _case(name)
        dev = qml.device("default.qubit", wires=case.circuit.n_wires)

        @qml.qnode(dev, interface="torch")
        def qnode(w, x):
            case.pl_body(w, x)
            return qml.state()

        psi = tq.statevector(case.circuit, weights=case.w, inputs=case.x)
        torch.testing.assert_close(psi, qnode(case.w, case.x), atol=1e-10, rtol=0)


def test_random_circuits_cover_the_gate_list() -> None:
    used = set()
    for name in ("random0", "random1", "random2"):
        used |= set(_case(name).circuit.gate_counts)
    assert {"CRX", "CRY", "CRZ", "CP", "U", "RXX", "RYY", "RZZ", "MultiRZ"} <= used, sorted(used)
