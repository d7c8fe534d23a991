"""Transpiling onto Qiskit fake backends (tinyqml.qml.transpiler)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("qiskit")
fake_provider = pytest.importorskip("qiskit_ibm_runtime.fake_provider")
from scipy.stats import unitary_group  # noqa: E402

import tinyqml.qml as tq  # noqa: E402
from tinyqml.qml.circuit import Param  # noqa: E402
from tinyqml.qml.errors import TinyQMLError, TranspileError  # noqa: E402
from tinyqml.qml.transpiler import Layout, lower_for_transpile, transpile  # noqa: E402

TOL = 1e-9
ALL_GATES = sorted(tq.GATES)
pytestmark = pytest.mark.filterwarnings("ignore::scipy.sparse.SparseEfficiencyWarning")


@pytest.fixture(scope="module")
def manila():
    return fake_provider.FakeManilaV2()


@pytest.fixture(scope="module")
def lagos():
    return fake_provider.FakeLagosV2()


def random_circuit(rng: np.random.Generator, n: int, n_ops: int, forced: tuple[str, ...] = ()) -> tq.Circuit:
    def param() -> Param:
        r = rng.random()
        if r < 0.3:
            return tq.const(float(rng.uniform(-6, 6)))
        if r < 0.7:
            return tq.weight(int(rng.integers(4)), scale=float(rng.uniform(-2, 2)), offset=float(rng.uniform(-1, 1)))
        idx = [int(i) for i in rng.integers(0, 2, size=int(rng.integers(1, 3)))]
        return tq.feature(idx, scale=float(rng.uniform(-2, 2)), shift=float(rng.uniform(-1, 1)))

    b = tq.CircuitBuilder(n)
    for name in list(forced) + [ALL_GATES[int(i)] for i in rng.integers(0, len(ALL_GATES), size=n_ops)]:
        g = tq.GATES[name]
        k = {"MultiRZ": int(rng.integers(1, n + 1)), "MCX": int(rng.integers(2, n + 1)),
             "QubitUnitary": int(rng.integers(1, 3))}.get(name, g.num_wires if g.num_wires <= n else 0)
        if not k:
            continue
        m = unitary_group.rvs(2**k, random_state=rng) if name == "QubitUnitary" else None
        b.append(name, [int(w) for w in rng.permutation(n)[:k]], *[param() for _ in range(g.num_params)], matrix=m)
    return b.build()


def edges(backend) -> set[tuple[int, int]]:
    return {tuple(e) for e in backend.coupling_map.get_edges()}


def check(c: tq.Circuit, pc: tq.Circuit, layout: Layout, backend, rng: np.random.Generator) -> None:
    assert pc.n_wires == backend.num_qubits == layout.n_physical and layout.n_virtual == c.n_wires
    assert pc.n_weights == c.n_weights and pc.n_inputs == c.n_inputs
    for op in pc.ops:
        assert op.name in {"RZ", "SX", "X", "CX", "I"}, op.name  # the backend's basis gates
        if len(op.wires) == 2:
            assert op.wires in edges(backend), f"{op.name} on {op.wires} is not a coupling-map edge"
    w = torch.tensor(rng.uniform(-math.pi, math.pi, c.n_weights))
    x = torch.tensor(rng.uniform(-1, 1, (3, c.n_inputs))) if c.n_inputs else None
    want = tq.probs(c, w, x)
    got = tq.probs(pc, w, x, wires=layout.final)
    assert torch.allclose(got, want, atol=TOL), float((got - want).abs().max())
    obs = [tq.Z(0), tq.X(c.n_wires - 1), tq.Z(0) @ tq.Y(c.n_wires - 1) if c.n_wires > 1 else tq.Y(0),
           0.5 * tq.Z(c.n_wires - 1) + tq.X(0)]
    e_want = tq.expval(c, obs, w, x)
    e_got = tq.expval(pc, [layout.physical(o) for o in obs], w, x)
    assert torch.allclose(e_got, e_want, atol=TOL)
    idle = set(range(pc.n_wires)) - set(layout.final)
    if idle:  # ancillas stay in |0>
        assert torch.allclose(tq.probs(pc, w, x, wires=sorted(idle))[:, 0], torch.ones(want.shape[0], dtype=torch.float64))


@pytest.mark.parametrize("seed", range(6))
def test_random_circuits_on_manila_and_lagos(seed: int, manila, lagos) -> None:
    rng = np.random.default_rng(100 + seed)
    backend = manila if seed % 2 else lagos
    n = 3 + seed % 2
    forced = tuple(ALL_GATES[(4 * seed + j) % len(ALL_GATES)] for j in range(4)) + ("CU", "MultiRZ")
    c = random_circuit(rng, n, 8, forced)
    pc, layout = transpile(c, backend, seed=seed)
    check(c, pc, layout, backend, rng)


def test_whole_gate_set_is_transpiled(lagos) -> None:
    rng = np.random.default_rng(11)
    c = random_circuit(rng, 4, 0, tuple(ALL_GATES))
    assert {op.name for op in c.ops} == set(tq.GATES)
    pc, layout = transpile(c, lagos, optimization_level=0, seed=1)
    check(c, pc, layout, lagos, rng)


def test_routing_moves_qubits_and_the_layout_follows(manila) -> None:
    # all-to-all interactions on 4 of Manila's 5 line-connected qubits need swaps
    b = tq.CircuitBuilder(4)
    for q in range(4):
        b.ry(q, tq.weight(q))
    for a in range(4):
        for t in range(4):
            if a != t:
                b.cx(a, t).rz(t, tq.feature(a))
    c = b.build()
    moved = 0
    rng = np.random.default_rng(0)
    for seed in range(3):
        pc, layout = transpile(c, manila, seed=seed)
        check(c, pc, layout, manila, rng)
        if layout.permutation is not None:
            moved += 1
            assert layout.final != layout.initial
            assert tuple(layout.permutation[p] for p in layout.initial) == layout.final
    assert moved


def test_initial_layout_and_levels(manila) -> None:
    rng = np.random.default_rng(3)
    c = tq.CircuitBuilder(2).h(0).cx(0, 1).ry(1, tq.weight(0)).crx(1, 0, tq.feature((0, 0), shift=0.5)).build()
    pc, layout = transpile(c, manila, initial_layout=[4, 3], optimization_level=0)
    assert layout.initial == (4, 3) and layout.permutation is None and layout.final == (4, 3)
    check(c, pc, layout, manila, rng)
    for level in (2, 3):
        pc, layout = transpile(c, manila, optimization_level=level, seed=0)
        check(c, pc, layout, manila, rng)


def test_trained_weights_keep_their_gradients(lagos) -> None:
    c = tq.CircuitBuilder(3).ry(0, tq.feature(0)).cu(0, 2, tq.weight(0), tq.weight(1), tq.weight(2)).cx(2, 1).build()
    pc, layout = transpile(c, lagos, seed=2)
    x = torch.tensor([[0.3], [1.2]], dtype=torch.float64)
    grads = []
    for circ, obs in ((c, tq.Z(1) @ tq.X(2)), (pc, layout.physical(tq.Z(1) @ tq.X(2)))):
        w = torch.tensor([0.4, -0.9, 1.3], dtype=torch.float64, requires_grad=True)
        tq.expval(circ, [obs], w, x).sum().backward()
        grads.append(w.grad)
    assert torch.allclose(grads[0], grads[1], atol=TOL)


def test_cu_lowering_is_exact_up_to_a_global_phase() -> None:
    b = tq.CircuitBuilder(2).h(0).h(1)
    b.cu(0, 1, tq.weight(0), tq.weight(1, scale=0.7), tq.feature(0, offset=0.2))
    b.cu(1, 0, tq.weight(2), tq.feature((0, 1), shift=0.3), tq.feature((0, 1), shift=0.1))
    b.cu(0, 1, tq.weight(0), 0.4, tq.weight(1))
    b.cu(1, 0, tq.weight(0), tq.weight(1, scale=2.0), tq.weight(1, offset=1.0))
    b.u(0, tq.weight(2), 0.3, tq.feature(1)).p(1, tq.weight(0, scale=-1.0))
    c = b.build()
    low = lower_for_transpile(c)
    assert "CU" not in low.gate_counts and "U" not in low.gate_counts and "P" not in low.gate_counts
    assert low.gate_counts["CX"] == 8  # two CX per CU
    w, x = torch.tensor([0.3, -1.1, 2.0], dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64)
    overlap = (tq.statevector(low, w, x).conj() * tq.statevector(c, w, x)).sum(1).abs()
    assert torch.allclose(overlap, torch.ones(4, dtype=torch.float64), atol=1e-12)


def test_layout_dataclass() -> None:
    lay = Layout(initial=(2, 0), final=(0, 2), n_physical=3, permutation=(2, 1, 0))
    assert lay.n_virtual == 2
    assert str(lay.physical(tq.Z(0) @ tq.X(1))) == "Z0 X2"
    ham = lay.physical(0.5 * tq.Z(1) + tq.X(0))
    assert [str(t) for t in ham.terms] == ["0.5*Z2", "X0"]
    with pytest.raises(TranspileError):
        lay.physical(tq.Z(2))
    with pytest.raises(TranspileError):
        Layout(initial=(0, 0), final=(0, 1), n_physical=2)
    with pytest.raises(TranspileError):
        Layout(initial=(0, 1), final=(0, 1), n_physical=2, permutation=(0, 0))
    with pytest.raises(AttributeError):
        lay.final = (1, 2)  # type: ignore[misc]


def test_errors(manila) -> None:
    c6 = tq.CircuitBuilder(6).h(5).build()
    with pytest.raises(TranspileError, match="only 5 qubits"):
        transpile(c6, manila)
    c = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
    with pytest.raises(TranspileError, match="BackendV2"):
        transpile(c, "manila")
    with pytest.raises(TranspileError, match="optimization_level"):
        transpile(c, manila, optimization_level=4)
    with pytest.raises(TranspileError, match="initial_layout"):
        transpile(c, manila, initial_layout=[0, 0])
    with pytest.raises(TranspileError, match="initial_layout"):
        transpile(c, manila, initial_layout=[0, 9])
    with pytest.raises(TinyQMLError):
        transpile("not a circuit", manila)  # type: ignore[arg-type]


def test_sizes_survive_references_optimized_away() -> None:
    from tinyqml.qml.transpiler import _keep_sizes

    c = tq.CircuitBuilder(2).rx(0, tq.weight(0)).ry(1, tq.weight(2)).rz(1, tq.feature(1)).build()
    shrunk = tq.CircuitBuilder(5).rx(3, tq.weight(0)).build()
    kept = _keep_sizes(shrunk, c)
    assert kept.n_weights == 3 and kept.n_inputs == 2 and kept.n_wires == 5
    w, x = torch.tensor([0.3, 0.0, 0.9], dtype=torch.float64), torch.tensor([[0.5, -0.2]], dtype=torch.float64)
    assert torch.allclose(tq.statevector(kept, w, x), tq.statevector(shrunk, w[:1]), atol=1e-12)
    assert _keep_sizes(c, c) is c
