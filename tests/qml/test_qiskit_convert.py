"""tinyqml <-> Qiskit circuit conversion (tinyqml.qml.qiskit_convert).

tinyqml's state equals ``Statevector(qc).reverse_qargs()`` of the converted circuit;
round trips tinyqml -> Qiskit -> tinyqml keep the state (and the gate structure).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

qiskit = pytest.importorskip("qiskit")
from qiskit import QuantumCircuit  # noqa: E402
from qiskit.circuit import Parameter, ParameterVector  # noqa: E402
from qiskit.circuit import library as L  # noqa: E402
from qiskit.quantum_info import SparsePauliOp, Statevector  # noqa: E402
from scipy.stats import unitary_group  # noqa: E402

import tinyqml.qml as tq  # noqa: E402
from tinyqml.qml.circuit import Param  # noqa: E402
from tinyqml.qml.errors import (  # noqa: E402
    InteropError,
    ParameterError,
    TinyQMLError,
    UnsupportedExpressionError,
    UnsupportedInstructionError,
)
from tinyqml.qml.qiskit_convert import DECOMPOSE_BASIS, ParameterMap, bind, from_qiskit, to_qiskit  # noqa: E402

TOL = 1e-10
# Qiskit's matrix exponential for PauliEvolutionGate warns about sparse formats
pytestmark = pytest.mark.filterwarnings("ignore::scipy.sparse.SparseEfficiencyWarning")
ALL_GATES = sorted(tq.GATES)


# --------------------------------------------------------------------------- helpers


def random_param(rng: np.random.Generator, n_w: int = 3, n_x: int = 3) -> Param:
    """Constant, weight, feature or a product of features (repeats allowed), random scale/offset/shift."""
    r = rng.random()
    scale = 1.0 if rng.random() < 0.4 else float(rng.uniform(-2, 2))
    offset = 0.0 if rng.random() < 0.4 else float(rng.uniform(-1, 1))
    if r < 0.25:
        return Param("const", value=float(rng.uniform(-6, 6)), scale=scale, offset=offset)
    if r < 0.6:
        return tq.weight(int(rng.integers(n_w)), scale=scale, offset=offset)
    k = int(rng.integers(1, 4))
    idx = [int(i) for i in rng.integers(0, n_x, size=k)]
    shift = 0.0 if rng.random() < 0.4 else float(rng.uniform(-math.pi, math.pi))
    return tq.feature(idx if k > 1 else idx[0], scale=scale, offset=offset, shift=shift)


def random_circuit(rng: np.random.Generator, n: int, n_ops: int, forced: tuple[str, ...] = ()) -> tq.Circuit:
    b = tq.CircuitBuilder(n)
    names = list(forced) + [ALL_GATES[int(i)] for i in rng.integers(0, len(ALL_GATES), size=n_ops)]
    for name in names:
        g = tq.GATES[name]
        if name == "MultiRZ":
            k = int(rng.integers(1, n + 1))
        elif name == "MCX":
            k = int(rng.integers(2, n + 1)) if n >= 2 else 0
        elif name == "QubitUnitary":
            k = int(rng.integers(1, min(n, 3) + 1))
        else:
            k = g.num_wires if g.num_wires <= n else 0
        if not k:
            continue
        wires = [int(w) for w in rng.permutation(n)[:k]]
        matrix = unitary_group.rvs(2**k, random_state=rng) if name == "QubitUnitary" else None
        b.append(name, wires, *[random_param(rng) for _ in range(g.num_params)], matrix=matrix)
    return b.build()


def values(c: tq.Circuit, rng: np.random.Generator, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    w = torch.tensor(rng.uniform(-math.pi, math.pi, size=c.n_weights))
    x = torch.tensor(rng.uniform(-1.5, 1.5, size=(batch, c.n_inputs))) if c.n_inputs else None
    return w, x


def qiskit_state(qc: QuantumCircuit, pm: ParameterMap, w: torch.Tensor, x: torch.Tensor | None) -> np.ndarray:
    bound = qc.assign_parameters(pm.values(w, None if x is None else x[0])) if qc.parameters else qc
    return Statevector(bound).reverse_qargs().data


def same_up_to_phase(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - e^{iφ} b| with φ aligning the largest amplitude."""
    k = int(np.argmax(np.abs(a)))
    phase = a[k] / b[k] * abs(b[k]) / abs(a[k])
    return float(np.abs(a - phase * b).max())


# --------------------------------------------------------------------------- round trips over the gate set

N_RANDOM = 60


def _cases() -> list[tuple[int, int, tq.Circuit]]:
    rng = np.random.default_rng(20241125)
    out = []
    for i in range(N_RANDOM):
        n = 1 + i % 5
        forced = tuple(ALL_GATES[(2 * i + j) % len(ALL_GATES)] for j in range(2)) + ("MultiRZ", "MCX")
        out.append((i, n, random_circuit(rng, n, int(rng.integers(3, 14)), forced)))
    return out


CASES = _cases()


def test_random_circuits_cover_every_gate_and_parameter_form() -> None:
    seen = {op.name for _, _, c in CASES for op in c.ops}
    assert seen == set(tq.GATES)
    params = [p for _, _, c in CASES for op in c.ops for p in op.params]
    assert {p.kind for p in params} == {"const", "weight", "feature"}
    assert any(p.kind == "feature" and len(set(p.index)) < len(p.index) for p in params)  # powers
    assert any(p.kind == "feature" and len(set(p.index)) > 1 and p.feature_shift for p in params)


@pytest.mark.parametrize("block", range(0, N_RANDOM, 10), ids=lambda b: f"block{b}")
def test_round_trip_keeps_the_state_and_matches_qiskit(block: int) -> None:
    for i, n, c in CASES[block : block + 10]:
        rng = np.random.default_rng(i)
        w, x = values(c, rng, batch=1)
        qc, pm = to_qiskit(c)
        assert qc.num_qubits == n
        back, pm2 = from_qiskit(qc, pm)
        assert pm2 == pm
        want = tq.statevector(c, w, x)[0].numpy()
        got = tq.statevector(back, w, x)[0].numpy()
        assert np.abs(got - want).max() <= TOL, f"circuit {i}: round trip changed the state"
        ref = qiskit_state(qc, pm, w, x)
        assert np.abs(ref - want).max() <= TOL, f"circuit {i}: Qiskit's state differs"


def _structure(c: tq.Circuit) -> list[tuple[str, tuple[int, ...]]]:
    # Qiskit's MCXGate(1) / MCXGate(2) are CXGate / CCXGate: MCX on 2 / 3 wires comes back as CX / CCX
    alias = {("MCX", 2): "CX", ("MCX", 3): "CCX"}
    return [(alias.get((op.name, len(op.wires)), op.name), op.wires) for op in c.ops]


def test_round_trip_keeps_the_gate_structure() -> None:
    for i, _, c in CASES:
        back, _ = from_qiskit(*to_qiskit(c))
        assert _structure(back) == _structure(c), i
        assert back.n_weights == c.n_weights and back.n_inputs == c.n_inputs
        for a, b in zip(c.ops, back.ops):
            for p, q in zip(a.params, b.params):
                if p.kind == "weight":
                    assert q == p  # weights come back identical
                assert q.kind == p.kind and sorted(q.index) == sorted(p.index)


def test_round_trip_with_batched_inputs() -> None:
    rng = np.random.default_rng(5)
    c = random_circuit(rng, 3, 12, forced=("RY", "MultiRZ", "CRX"))
    c = tq.CircuitBuilder(3).ry(0, tq.feature((0, 1), shift=0.4, scale=0.7)).ry(1, tq.feature(2)).build() + c
    w, x = values(c, rng, batch=4)
    back, _ = from_qiskit(*to_qiskit(c))
    assert torch.allclose(tq.statevector(back, w, x), tq.statevector(c, w, x), atol=TOL)


@pytest.mark.parametrize("name", ALL_GATES)
def test_each_gate_matches_qiskit_on_an_entangled_state(name: str) -> None:
    rng = np.random.default_rng(sum(map(ord, name)))
    n = 4
    prep = tq.CircuitBuilder(n)
    for q in range(n):
        prep.u(q, *rng.uniform(-3, 3, 3))
    prep.cx(0, 1).cx(2, 3).rzz(1, 2, 0.7)
    for q in range(n):
        prep.u(q, *rng.uniform(-3, 3, 3))
    g = tq.GATES[name]
    for _ in range(3):
        k = {"MultiRZ": int(rng.integers(1, 5)), "MCX": int(rng.integers(2, 5)),
             "QubitUnitary": int(rng.integers(1, 4))}.get(name, g.num_wires)
        wires = [int(v) for v in rng.permutation(n)[:k]]
        m = unitary_group.rvs(2**k, random_state=rng) if name == "QubitUnitary" else None
        c = tq.CircuitBuilder(n).extend(prep.build()).append(name, wires, *rng.uniform(-4, 4, g.num_params),
                                                              matrix=m).build()
        qc, pm = to_qiskit(c)
        assert np.abs(Statevector(qc).reverse_qargs().data - tq.statevector(c)[0].numpy()).max() <= TOL


def test_qubit_unitary_matrix_reads_its_first_wire_as_most_significant() -> None:
    # |0>|0>|0> -> the matrix maps basis 0 of (wire 2, wire 0) to basis 1: wire 0 flips
    m = np.eye(4)[[1, 0, 2, 3]]  # swaps basis states 0 and 1 (last listed wire is least significant)
    c = tq.CircuitBuilder(3).unitary([2, 0], m).build()
    qc, _ = to_qiskit(c)
    assert [qc.find_bit(q).index for q in qc.data[0].qubits] == [0, 2]
    probs = Statevector(qc).probabilities_dict()
    assert probs == {"001": 1.0}  # Qiskit bit string: qubit 0 rightmost
    assert tq.probs(c)[0, 0b100].item() == 1.0  # tinyqml: wire 0 most significant
    assert from_qiskit(qc)[0] == c


# --------------------------------------------------------------------------- reading Qiskit circuits


def _check_against_qiskit(qc: QuantumCircuit, tol: float = TOL, phase: bool = False, **kw) -> tq.Circuit:
    c, pm = from_qiskit(qc, **kw)
    assert not qc.parameters
    want = Statevector(qc).reverse_qargs().data
    got = tq.statevector(c)[0].numpy()
    err = same_up_to_phase(want, got) if phase else float(np.abs(want - got).max())
    assert err <= tol, f"max |diff| = {err:.2e}"
    return c


def _prepared(n: int, seed: int = 0) -> QuantumCircuit:
    rng = np.random.default_rng(seed)
    qc = QuantumCircuit(n)
    for q in range(n):
        qc.u(*rng.uniform(-3, 3, 3), q)
    for q in range(n - 1):
        qc.cx(q, q + 1)
    for q in range(n):
        qc.ry(float(rng.uniform(-3, 3)), q)
    return qc


def test_qiskit_aliases_and_variants() -> None:
    qc = _prepared(5)
    qc.append(L.U1Gate(0.3), [1])
    qc.append(L.U3Gate(0.3, -0.2, 1.1), [2])
    qc.append(L.CU1Gate(0.7), [0, 3])
    qc.append(L.CU3Gate(0.3, -0.2, 1.1), [3, 1])
    qc.append(L.CUGate(0.4, 0.5, -0.6, 0.9), [2, 4])  # γ != 0: a phase on the control
    qc.append(L.C3XGate(), [4, 0, 2, 1])
    qc.append(L.C4XGate(), [0, 1, 2, 3, 4])
    qc.append(L.XGate().control(3), [1, 2, 3, 0])
    qc.append(L.ZGate().control(2), [3, 0, 4])
    qc.id(3)
    c = _check_against_qiskit(qc)
    assert c.gate_counts["MCX"] == 3 and c.gate_counts["CU"] == 2 and c.gate_counts["CCZ"] == 1


@pytest.mark.parametrize("ctrl_state", [0, 1, 2])
def test_open_controls(ctrl_state: int) -> None:
    qc = _prepared(4, seed=ctrl_state)
    qc.append(L.CXGate(ctrl_state=ctrl_state % 2), [1, 3])
    qc.append(L.CCXGate(ctrl_state=ctrl_state), [0, 2, 1])
    qc.append(L.CRYGate(0.8, ctrl_state=ctrl_state % 2), [3, 0])
    qc.append(L.CUGate(0.4, 0.5, -0.6, 0.9, ctrl_state=ctrl_state % 2), [2, 3])
    qc.append(L.MCXGate(3, ctrl_state=ctrl_state + 3), [3, 1, 0, 2])
    qc.append(L.CSwapGate(ctrl_state=ctrl_state % 2), [2, 0, 3])
    _check_against_qiskit(qc)


def test_pauli_evolution_of_z_strings_becomes_multirz() -> None:
    qc = _prepared(4)
    qc.append(L.PauliEvolutionGate(SparsePauliOp(["ZIZZ", "IZZI", "IIII", "ZIII"], [0.5, -0.25, 0.3, 1.0]),
                                   time=0.7), [0, 1, 2, 3])
    c = _check_against_qiskit(qc, phase=True)  # the identity term is a global phase
    multi = [op for op in c.ops if op.name == "MultiRZ"]
    assert [op.wires for op in multi] == [(0, 1, 3), (1, 2), (3,)]
    assert multi[0].params[0].value == pytest.approx(0.7)


def test_barriers_delays_and_global_phase_are_dropped() -> None:
    qc = _prepared(2)
    qc.barrier()
    qc.delay(100, 0)
    qc.global_phase = 0.4
    qc.append(L.GlobalPhaseGate(0.3), [])
    qc.h(1)
    c = _check_against_qiskit(qc, phase=True)
    assert "barrier" not in c.gate_counts and c.ops[-1].name == "H"


def test_custom_gates_are_expanded_through_their_definitions() -> None:
    a = Parameter("a")
    sub = QuantumCircuit(2, name="block")
    sub.h(0)
    sub.cx(0, 1)
    sub.ry(2 * a, 1)
    inner = sub.to_gate()
    outer = QuantumCircuit(3, name="outer")
    outer.append(inner, [2, 0])
    outer.rz(a, 1)
    qc = QuantumCircuit(3)
    qc.append(outer.to_instruction(), [1, 2, 0])
    c, pm = from_qiskit(qc)
    # block qubits (0, 1) -> outer (2, 0) -> qc (0, 1); outer qubit 1 -> qc 2
    assert [(op.name, op.wires) for op in c.ops] == [("H", (0,)), ("CX", (0, 1)), ("RY", (1,)), ("RZ", (2,))]
    assert pm.as_dict() == {"a": ("weight", 0)}
    w = torch.tensor([0.37])
    assert np.abs(qiskit_state(qc, pm, w, None) - tq.statevector(c, w)[0].numpy()).max() <= TOL


@pytest.mark.parametrize("builder", [
    lambda qc: qc.rccx(0, 1, 2),
    lambda qc: qc.dcx(0, 1),
    lambda qc: qc.csx(2, 0),
    lambda qc: qc.cs(1, 2),
    lambda qc: qc.r(0.4, 0.3, 1),
    lambda qc: qc.append(L.XXPlusYYGate(0.3, 0.2), [0, 2]),
    lambda qc: qc.append(L.QFTGate(3), [2, 0, 1]),
    lambda qc: qc.append(L.PauliEvolutionGate(SparsePauliOp("XYZ"), time=0.3), [0, 1, 2]),
    lambda qc: qc.append(L.RYGate(0.3).control(2, annotated=False), [0, 1, 2]),
    lambda qc: qc.append(L.RYGate(0.3).control(2, annotated=True), [0, 1, 2]),
    lambda qc: qc.append(L.HGate().inverse(annotated=True).power(2, annotated=True), [1]),
], ids=["rccx", "dcx", "csx", "cs", "r", "xx_plus_yy", "qft", "pauli_xyz", "ccry", "annotated_ccry", "annotated"])
def test_missing_instructions_are_named_and_decompose_on_request(builder) -> None:
    qc = _prepared(3)
    builder(qc)
    name = qc.data[-1].operation.name
    with pytest.raises(UnsupportedInstructionError, match=name) as info:
        from_qiskit(qc)
    assert info.value.instruction == name and "decompose=True" in str(info.value)
    c = _check_against_qiskit(qc, phase=True, decompose=True)  # Qiskit's rewrite may add a global phase
    assert [op.name for op in c.ops[:5]] == ["U", "U", "U", "CX", "CX"]  # the rest is kept as it is


def test_decompose_keeps_parameters() -> None:
    t = Parameter("t")
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.append(L.XXPlusYYGate(t, 0.2), [0, 1])
    qc.cs(0, 1)
    c, pm = from_qiskit(qc, decompose=True)
    assert pm.as_dict() == {"t": ("weight", 0)}
    w = torch.tensor([0.9])
    assert same_up_to_phase(qiskit_state(qc, pm, w, None), tq.statevector(c, w)[0].numpy()) <= TOL


def test_decompose_basis_names_are_tinyqml_gates() -> None:
    for name in DECOMPOSE_BASIS:
        gate = L.get_standard_gate_name_mapping()[name]
        if gate.params:
            gate = gate.base_class(*[0.3] * len(gate.params))
        qc = QuantumCircuit(3)
        qc.append(gate, list(range(gate.num_qubits)))
        c, _ = from_qiskit(qc)
        assert c.ops[0].name in tq.GATES and len(c.ops) == (2 if name == "cu" else 1)  # cu's γ: a phase


def test_measurements_resets_and_control_flow_are_refused() -> None:
    qc = _prepared(2)
    qc.measure_all()
    with pytest.raises(UnsupportedInstructionError, match="measure") as info:
        from_qiskit(qc)
    assert info.value.instruction == "measure" and "drop_final_measurements" in str(info.value)
    c = _check_against_qiskit(qc.remove_final_measurements(inplace=False))
    assert from_qiskit(qc, drop_final_measurements=True)[0] == c

    mid = QuantumCircuit(2, 1)
    mid.h(0)
    mid.measure(0, 0)
    mid.x(0)
    with pytest.raises(UnsupportedInstructionError, match="measure"):
        from_qiskit(mid, drop_final_measurements=True)

    reset = QuantumCircuit(1)
    reset.reset(0)
    with pytest.raises(UnsupportedInstructionError, match="reset"):
        from_qiskit(reset, decompose=True)

    flow = QuantumCircuit(2, 1)
    flow.h(0)
    flow.measure(0, 0)
    with flow.if_test((flow.clbits[0], 1)):
        flow.x(1)
    with pytest.raises(UnsupportedInstructionError, match="measure|if_else"):
        from_qiskit(flow, decompose=True)
    cond = QuantumCircuit(2, 1)
    with cond.if_test((cond.clbits[0], 1)):
        cond.x(1)
    with pytest.raises(UnsupportedInstructionError, match="if_else") as info:
        from_qiskit(cond)
    assert "control flow" in str(info.value)

    init = QuantumCircuit(2)
    init.initialize([0, 1, 0, 0], [0, 1])
    with pytest.raises(UnsupportedInstructionError):
        from_qiskit(init)
    with pytest.raises(UnsupportedInstructionError, match="reset"):
        from_qiskit(init, decompose=True)


def test_bad_arguments() -> None:
    with pytest.raises(InteropError):
        from_qiskit(tq.CircuitBuilder(1).h(0).build())
    with pytest.raises(InteropError):
        to_qiskit(QuantumCircuit(1))
    with pytest.raises(InteropError, match="no qubits"):
        from_qiskit(QuantumCircuit())


# --------------------------------------------------------------------------- parameters


def test_default_map_numbers_parameters_by_first_appearance_and_keeps_vector_order() -> None:
    theta, phi = ParameterVector("θ", 3), Parameter("phi")
    qc = QuantumCircuit(2)
    qc.rx(theta[2], 0)
    qc.ry(phi, 1)
    qc.rz(theta[0], 0)
    qc.rx(Parameter("alpha"), 1)
    c, pm = from_qiskit(qc)
    assert pm.as_dict() == {"θ[0]": ("weight", 0), "θ[2]": ("weight", 1), "phi": ("weight", 2),
                            "alpha": ("weight", 3)}
    assert [op.params[0].index for op in c.ops] == [(1,), (2,), (0,), (3,)]


def test_user_map_features_weights_and_vector_shorthand() -> None:
    x, w = ParameterVector("x", 3), ParameterVector("w", 2)
    b = Parameter("b")
    qc = QuantumCircuit(3)
    qc.ry(x[0], 0)
    qc.ry(x[2], 1)
    qc.rz(w[1] * 0.5 - 0.2, 2)
    qc.rx(b, 0)
    qc.rzz((x[0] + 0.3) * (x[2] + 0.3) * 1.5, 0, 2)
    _, pm = from_qiskit(qc, {"x[0]": ("feature", 0), "x[2]": ("feature", 1)})
    assert pm.as_dict() == {"w[1]": ("weight", 0), "b": ("weight", 1), "x[0]": ("feature", 0),
                            "x[2]": ("feature", 1)}
    c, pm = from_qiskit(qc, {"x": "feature", "b": ("weight", 4)})
    assert pm.as_dict() == {"w[1]": ("weight", 0), "b": ("weight", 4), "x[0]": ("feature", 0),
                            "x[2]": ("feature", 2)}
    assert c.n_weights == 5 and c.n_inputs == 3
    c, pm = from_qiskit(qc, {"x": "feature", "b": "feature"})
    assert pm["b"] == ("feature", 1)  # bare kind: next free index of that kind
    w_, x_ = torch.tensor([0.3]), torch.tensor([[0.2, -0.7, 1.1]])
    assert np.abs(qiskit_state(qc, pm, w_, x_) - tq.statevector(c, w_, x_)[0].numpy()).max() <= TOL


def test_parameter_map_instances_may_name_parameters_the_circuit_lacks() -> None:
    a = Parameter("a")
    qc = QuantumCircuit(1)
    qc.rx(a, 0)
    pm = ParameterMap.from_dict({"a": ("weight", 2), "gone": ("weight", 0), "x[0]": ("feature", 0)})
    c, out = from_qiskit(qc, pm)
    assert out == pm and c.n_weights == 3
    with pytest.raises(ParameterError, match="no parameter 'gone'"):
        from_qiskit(qc, {"gone": ("weight", 0)})


@pytest.mark.parametrize("mapping, match", [
    ({"a": ("weight", 0), "b": ("weight", 0)}, "same weight 0"),
    ({"a": ("bias", 0)}, "kind must be"),
    ({"a": ("weight", -1)}, "non-negative"),
    ({"a": ("weight", 1.5)}, "non-negative integer"),
    ({"a": "weights"}, "kind must be"),
    ({"v": ("feature", 0)}, "ParameterVector name takes a kind"),
    ({"a": ("weight",)}, "expected \\(kind, index\\)"),
])
def test_bad_parameter_maps(mapping, match) -> None:
    v = ParameterVector("v", 2)
    qc = QuantumCircuit(1)
    qc.rx(Parameter("a"), 0)
    qc.ry(Parameter("b"), 0)
    qc.rz(v[0], 0)
    qc.rz(v[1], 0)
    with pytest.raises(ParameterError, match=match):
        from_qiskit(qc, mapping)
    with pytest.raises(ParameterError):
        from_qiskit(qc, ["a"])  # type: ignore[arg-type]


@pytest.mark.parametrize("make, ok", [
    (lambda a, b, x, y: 2 * a - 1, True),
    (lambda a, b, x, y: a / 3, True),
    (lambda a, b, x, y: -a, True),
    (lambda a, b, x, y: 0.5 * (a + 2) - 4, True),
    (lambda a, b, x, y: a * 0 + 1.5, True),
    (lambda a, b, x, y: (x - 1) * (y - 1) * 3 + 0.2, True),
    (lambda a, b, x, y: 2 * (x + 0.5) ** 3 - 1, True),
    (lambda a, b, x, y: (x + 0.1) ** 2 * (y + 0.1), True),
    (lambda a, b, x, y: a.sin(), False),
    (lambda a, b, x, y: a * a, False),
    (lambda a, b, x, y: a * b, False),
    (lambda a, b, x, y: a + b, False),
    (lambda a, b, x, y: a * x, False),
    (lambda a, b, x, y: x + y, False),
    (lambda a, b, x, y: x * y + x, False),
    (lambda a, b, x, y: (x + 1) * (y + 2), False),
    (lambda a, b, x, y: 1 / a, False),
    (lambda a, b, x, y: a * 1j, False),
    (lambda a, b, x, y: x.exp(), False),
])
def test_parameter_expressions(make, ok) -> None:
    a, b, x, y = Parameter("a"), Parameter("b"), Parameter("x"), Parameter("y")
    expr = make(a, b, x, y)
    qc = QuantumCircuit(1)
    qc.rx(b, 0)
    qc.rx(a, 0)
    qc.ry(x, 0)
    qc.ry(y, 0)
    qc.rz(expr, 0)
    mapping = {"x": ("feature", 0), "y": ("feature", 1)}
    if not ok:
        with pytest.raises(UnsupportedExpressionError) as info:
            from_qiskit(qc, mapping)
        assert str(expr) in str(info.value) and "rz on qubits [0]" in str(info.value)
        assert isinstance(info.value, ParameterError) and isinstance(info.value, TinyQMLError)
        return
    c, pm = from_qiskit(qc, mapping)
    rng = np.random.default_rng(1)
    for _ in range(3):
        w, xs = torch.tensor(rng.uniform(-2, 2, 2)), torch.tensor(rng.uniform(-2, 2, (1, 2)))
        err = np.abs(qiskit_state(qc, pm, w, xs) - tq.statevector(c, w, xs)[0].numpy()).max()
        assert err <= TOL


def test_to_qiskit_names_parameters_from_a_map() -> None:
    c = (tq.CircuitBuilder(2).rx(0, tq.weight(0)).ry(1, tq.weight(2, scale=0.5)).rz(0, tq.feature((0, 1), shift=1.0))
         .build())
    qc, pm = to_qiskit(c, {"theta[0]": ("weight", 0), "gamma": ("weight", 2)})
    assert pm.as_dict() == {"theta[0]": ("weight", 0), "gamma": ("weight", 2), "x[0]": ("feature", 0),
                            "x[1]": ("feature", 1)}
    assert [type(p).__name__ for p in qc.parameters] == ["Parameter", "ParameterVectorElement",
                                                         "ParameterVectorElement", "ParameterVectorElement"]
    assert {p.name for p in qc.data[2].operation.params[0].parameters} == {"x[0]", "x[1]"}
    back, _ = from_qiskit(qc, pm)
    assert back.ops[1] == c.ops[1] and back.ops[2].params[0] == c.ops[2].params[0]
    with pytest.raises(ParameterError, match="more than once"):
        to_qiskit(c, {"x[0]": ("weight", 0)})  # the default name of feature 0 is taken


def test_parameter_map_api() -> None:
    pm = ParameterMap.from_dict({"b": ("feature", 0), "a": ("weight", 1)})
    assert list(pm) == ["a", "b"] and pm == ParameterMap((("a", "weight", 1), ("b", "feature", 0)))
    assert hash(pm) == hash(ParameterMap.from_dict(pm.as_dict()))
    assert pm.name_of("weight", 1) == "a" and pm.name_of("weight", 0) is None
    assert pm.n_weights == 2 and pm.n_inputs == 1
    with pytest.raises(KeyError):
        pm["c"]
    assert pm.values(weights=torch.tensor([9.0, 1.5]), inputs=np.array([[0.25]])) == {"a": 1.5, "b": 0.25}
    with pytest.raises(ParameterError, match="input features"):
        pm.values(weights=[0.0, 1.0])
    with pytest.raises(ParameterError, match="one vector"):
        pm.values(weights=[0.0, 1.0], inputs=[[1.0], [2.0]])
    with pytest.raises(ParameterError, match="more than once"):
        ParameterMap((("a", "weight", 0), ("a", "feature", 0)))
    with pytest.raises(ParameterError, match="non-empty"):
        ParameterMap((("", "weight", 0),))
    with pytest.raises(ParameterError, match="\\(kind, index\\)"):
        ParameterMap.from_dict({"a": "weight"})
    c = tq.CircuitBuilder(1).rx(0, tq.weight(3)).ry(0, tq.feature((1, 1))).build()
    assert ParameterMap.default(c).as_dict() == {"w[3]": ("weight", 3), "x[1]": ("feature", 1)}
    assert ParameterMap.default(c, flat=True).as_dict() == {"w_3": ("weight", 3), "x_1": ("feature", 1)}


def test_bind_replaces_references_by_constants() -> None:
    rng = np.random.default_rng(3)
    c = random_circuit(rng, 3, 15, forced=("RX", "MultiRZ"))
    w, x = values(c, rng)
    bound = bind(c, w, x)
    assert bound.n_weights == 0 and bound.n_inputs == 0
    assert torch.allclose(tq.statevector(bound), tq.statevector(c, w, x), atol=TOL)
    half = bind(c, weights=w)
    assert half.n_weights == 0 and half.n_inputs == c.n_inputs
    with pytest.raises(ParameterError, match="weights"):
        bind(c, weights=w[:1]) if c.n_weights > 1 else bind(c, weights=[])


def test_feature_shift_is_ignored_on_weights_and_folded_for_single_features() -> None:
    c = (tq.CircuitBuilder(1).rx(0, Param("weight", (0,), scale=2.0, offset=0.1, feature_shift=0.7))
         .ry(0, tq.feature(0, scale=-1.5, offset=0.2, shift=0.4)).rz(0, Param("const", value=1.0, scale=3.0)).build())
    qc, pm = to_qiskit(c)
    w, x = torch.tensor([0.3]), torch.tensor([[0.9]])
    assert np.abs(qiskit_state(qc, pm, w, x) - tq.statevector(c, w, x)[0].numpy()).max() <= TOL
    back, _ = from_qiskit(qc, pm)
    p = back.ops[1].params[0]
    assert (p.kind, p.index, p.feature_shift) == ("feature", (0,), 0.0)
    assert (p.scale, p.offset) == pytest.approx((-1.5, 0.2 - 1.5 * 0.4))
    assert back.ops[2].params[0] == tq.const(3.0)
