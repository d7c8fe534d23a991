"""PennyLane operation -> tinyqml translation (tinyqml.qml.pennylane_ops).

Every directly mapped gate has PennyLane's matrix; the composite translations (Rot,
GlobalPhase, MultiControlledX with control values, constant matrices, state preparation)
give PennyLane's unitary or state; broadcast parameters become feature columns.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

qml = pytest.importorskip("pennylane")

from tinyqml.qml import gates as G  # noqa: E402
from tinyqml.qml import pennylane_ops as PO  # noqa: E402
from tinyqml.qml.simulate import statevector  # noqa: E402

RNG = np.random.default_rng(7)


def _pl_op(name: str, k: int):
    cls = getattr(qml, name)
    params = RNG.uniform(-3, 3, size=cls.num_params) if cls.num_params else ()
    return cls(*params, wires=list(range(k)))


def _direct_cases():
    out = []
    for name, target in PO.DIRECT.items():
        if name.startswith("Adjoint("):
            base = getattr(qml, name[len("Adjoint("):-1])
            out.append((qml.adjoint(base(wires=0)), target))
            continue
        gate = G.get_gate(target)
        k = gate.num_wires or 3
        out.append((_pl_op(name, k), target))
    return out


@pytest.mark.parametrize("op, target", _direct_cases(), ids=lambda v: getattr(v, "name", str(v)))
def test_direct_gates_have_pennylanes_matrix(op, target):
    gate = G.get_gate(target)
    params = torch.tensor([list(map(float, op.data))], dtype=torch.float64).reshape(1, -1)
    mine = gate.matrix(params, len(op.wires), torch.complex128)[0].numpy()
    np.testing.assert_allclose(mine, qml.matrix(op), atol=1e-12)


def _unitary(ops, n):
    """The unitary of translated operations, column by column from basis states."""
    t = PO.translate(ops, list(range(n)), None)
    cols = []
    for j in range(2**n):
        bits = [(j >> (n - 1 - w)) & 1 for w in range(n)]
        prep = PO.translate([qml.BasisState(np.array(bits), wires=range(n))] + list(ops), list(range(n)), None)
        cols.append(statevector(prep.circuit, prep.weights, prep.inputs)[0].numpy())
    assert t.circuit.n_wires == n
    return np.stack(cols, 1)


@pytest.mark.parametrize("op", [
    qml.Rot(0.3, -1.1, 2.2, wires=1),
    qml.GlobalPhase(0.7, wires=[0, 1]),
    qml.MultiControlledX(wires=[2, 0, 1], control_values=[0, 1]),
    qml.MultiControlledX(wires=[0, 2, 1], control_values=[1, 1]),
    qml.SISWAP(wires=[0, 2]),
    qml.QubitSum(wires=[2, 0, 1]),
    qml.QubitUnitary(qml.matrix(qml.Rot(0.1, 0.2, 0.3, wires=0) @ qml.RX(0.4, wires=1)), wires=[2, 0]),
    qml.BlockEncode(np.array([[0.1, 0.2], [0.3, 0.4]]), wires=[0, 1]),
])
def test_composite_translations_match_pennylane(op):
    np.testing.assert_allclose(_unitary([op], 3), qml.matrix(op, wire_order=[0, 1, 2]), atol=1e-10)


@pytest.mark.parametrize("batched", [False, True])
def test_state_prep_is_exact_including_phase_and_broadcasting(batched):
    n = 3
    v = RNG.normal(size=(4, 2**n)) + 1j * RNG.normal(size=(4, 2**n))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    state = v if batched else v[0]
    op = qml.StatePrep(state, wires=range(n))
    t = PO.translate([op], list(range(n)), op.batch_size)
    psi = statevector(t.circuit, t.weights, t.inputs).numpy()
    np.testing.assert_allclose(psi, v if batched else v[:1], atol=1e-12)


def test_state_prep_on_some_wires_pads_with_zero():
    op = qml.StatePrep(np.array([0.6, 0.8j]), wires=[1])
    t = PO.translate([op], [0, 1], None)
    psi = statevector(t.circuit, t.weights, t.inputs)[0].numpy()
    np.testing.assert_allclose(psi, [0.6, 0.8j, 0, 0], atol=1e-12)


def test_basis_state_becomes_x_gates():
    t = PO.translate([qml.BasisState(np.array([1, 0, 1]), wires=[0, 1, 2])], [0, 1, 2], None)
    assert t.circuit.gate_counts == {"X": 2}


def test_broadcast_parameters_become_features_and_scalars_weights():
    ops = [qml.RX(np.array([0.1, 0.2, 0.3]), wires=0), qml.RY(0.5, wires=1), qml.CNOT(wires=[0, 1])]
    t = PO.translate(ops, [0, 1], 3)
    assert t.circuit.n_inputs == 1 and t.circuit.n_weights == 1
    assert t.inputs.shape == (3, 1) and t.weights.shape == (1,)
    assert statevector(t.circuit, t.weights, t.inputs).shape == (3, 4)


def test_equal_structures_share_one_circuit_object():
    a = PO.translate([qml.RX(0.1, wires=0), qml.CNOT(wires=[0, 1])], [0, 1], None)
    b = PO.translate([qml.RX(0.9, wires=0), qml.CNOT(wires=[0, 1])], [0, 1], None)
    assert a.circuit is b.circuit
    assert float(b.weights[0]) == 0.9


def test_torch_parameters_keep_their_graph():
    x = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    t = PO.translate([qml.RX(x, wires=0)], [0], None)
    psi = statevector(t.circuit, t.weights, t.inputs)
    (psi.abs() ** 2)[0, 0].backward()
    assert torch.isclose(x.grad, -torch.sin(x.detach()) / 2)


def test_supported_set():
    assert PO.is_supported(qml.RX(0.1, wires=0))
    assert PO.is_supported(qml.QubitUnitary(np.eye(2), wires=0))
    assert PO.is_supported(qml.QubitUnitary(np.stack([np.eye(2)] * 2), wires=0))  # broadcast: dense step
    assert PO.is_supported(qml.SISWAP(wires=[0, 1]))  # constant matrix
    assert not PO.is_supported(qml.CRot(0.1, 0.2, 0.3, wires=[0, 1]))  # decomposed into rotations
    assert not PO.is_supported(qml.PauliRot(0.1, "XY", wires=[0, 1]))


def _unitaries(k, batch):
    from scipy.stats import unitary_group

    return np.stack([unitary_group.rvs(2**k, random_state=s) for s in range(batch)])


def test_trainable_and_broadcast_unitaries_are_dense_steps_with_gradients():
    u = torch.tensor(_unitaries(2, 1)[0], requires_grad=True)
    x = torch.tensor([0.2, 0.9, -0.4], dtype=torch.float64, requires_grad=True)
    ops = [qml.Hadamard(0), qml.RX(x, wires=1), qml.QubitUnitary(u, wires=[1, 2]), qml.RY(0.3, wires=0),
           qml.QubitUnitary(_unitaries(1, 3), wires=0), qml.CNOT(wires=[2, 0])]
    t = PO.translate(ops, [0, 1, 2], 3)
    assert [d.position for d in t.dense] == [2, 3]
    psi = PO.run(t)
    tape = qml.tape.QuantumScript(ops, [qml.state()])
    ref = qml.device("default.qubit", wires=3).execute(tape)
    np.testing.assert_allclose(psi.detach().numpy(), ref.detach().numpy(), atol=1e-12)
    (psi.abs() ** 2)[:, 3].sum().backward()
    assert u.grad is not None and x.grad is not None and torch.all(x.grad != 0)


def test_state_prep_later_in_circuit_is_an_error():
    with pytest.raises(PO.TinyQMLDeviceError, match="first operation"):
        PO.translate([qml.X(0), qml.StatePrep(np.array([1.0, 0.0]), wires=0)], [0], None)
