"""Cross-check tinyqml's simulator against Qiskit on seeded random circuits.

Every circuit is built twice, in the test: once as a tinyqml circuit (with constant,
weight and feature parameter references) and once directly as a Qiskit
``QuantumCircuit`` whose angles the test resolves itself. tinyqml's wire ``i`` is
Qiskit's qubit ``i``; tinyqml puts wire 0 first (most significant), so its state
equals ``Statevector(qc).reverse_qargs().data``.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

qiskit = pytest.importorskip("qiskit")
from qiskit import QuantumCircuit  # noqa: E402
from qiskit.circuit.library import U2Gate  # noqa: E402
from qiskit.quantum_info import Statevector  # noqa: E402
from scipy.stats import unitary_group  # noqa: E402

import tinyqml.qml as tq  # noqa: E402
from tinyqml.qml.circuit import Param  # noqa: E402

TOL = 1e-10
ALL_GATES = sorted(tq.GATES)

# --------------------------------------------------------------------------- random circuits


def _rand_param(rng: np.random.Generator, n_w: int, n_x: int) -> Param:
    """A random parameter reference: constant, weight or (product of) features."""
    r = rng.random()
    scale = 1.0 if rng.random() < 0.5 else float(rng.uniform(-2.0, 2.0))
    offset = 0.0 if rng.random() < 0.5 else float(rng.uniform(-1.0, 1.0))
    if r < 0.3:
        return Param("const", value=float(rng.uniform(-2 * math.pi, 2 * math.pi)), scale=scale, offset=offset)
    if r < 0.65:
        return tq.weight(int(rng.integers(n_w)), scale=scale, offset=offset)
    k = int(rng.integers(1, 3))  # one feature (angle encoding) or a product of two (IQP style)
    idx = [int(i) for i in rng.integers(0, n_x, size=k)]
    shift = 0.0 if rng.random() < 0.5 else float(rng.uniform(-math.pi, math.pi))
    return tq.feature(idx if k > 1 else idx[0], scale=scale, offset=offset, shift=shift)


def _arity(rng: np.random.Generator, name: str, n: int) -> int | None:
    """Number of wires for ``name`` on an ``n``-wire circuit (None: does not fit)."""
    g = tq.GATES[name]
    if name == "MultiRZ":
        return int(rng.integers(1, n + 1))
    if name == "MCX":
        return int(rng.integers(2, n + 1)) if n >= 2 else None
    if name == "QubitUnitary":
        return int(rng.integers(1, min(n, 3) + 1))
    return g.num_wires if g.num_wires <= n else None


def random_spec(rng: np.random.Generator, n: int, n_ops: int, forced: list = ()) -> list[tuple]:
    """A list of ``(gate name, wires, params, matrix)``.

    ``forced`` entries (a gate name, or ``(name, number of wires)``) are included when they fit.
    """
    items = list(forced) + [ALL_GATES[int(i)] for i in rng.integers(0, len(ALL_GATES), size=n_ops)]
    order = rng.permutation(len(items))
    spec = []
    for item in (items[int(j)] for j in order):
        name, k = (item, _arity(rng, item, n)) if isinstance(item, str) else item
        if k is None:
            continue
        wires = tuple(int(w) for w in rng.permutation(n)[:k])
        g = tq.GATES[name]
        params = tuple(_rand_param(rng, 3, 3) for _ in range(g.num_params))
        matrix = unitary_group.rvs(2**k, random_state=rng) if name == "QubitUnitary" else None
        spec.append((name, wires, params, matrix))
    return spec


def build_tinyqml(spec: list[tuple], n: int) -> tq.Circuit:
    b = tq.CircuitBuilder(n)
    for name, wires, params, matrix in spec:
        b.append(name, wires, *params, matrix=matrix)
    return b.build()


def resolve_angle(p: Param, w: np.ndarray, x: np.ndarray | None) -> float:
    """The angle of a parameter reference, computed independently of tinyqml.qml.params."""
    if p.kind == "const":
        base = p.value
    elif p.kind == "weight":
        base = w[p.index[0]]
    else:
        assert x is not None
        base = float(np.prod([x[i] + p.feature_shift for i in p.index]))
    return p.scale * base + p.offset


def _q_multirz(qc: QuantumCircuit, theta: float, wires: list[int]) -> None:
    """exp(-i theta/2 Z..Z): parity into the last wire with a CX ladder, RZ, uncompute."""
    for a, b in zip(wires[:-1], wires[1:]):
        qc.cx(a, b)
    qc.rz(theta, wires[-1])
    for a, b in reversed(list(zip(wires[:-1], wires[1:]))):
        qc.cx(a, b)


def q_apply(qc: QuantumCircuit, name: str, w: list[int], a: list[float], matrix: np.ndarray | None) -> None:
    """Append one gate to a Qiskit circuit using Qiskit's own gate definitions."""
    fixed = {
        "I": qc.id, "H": qc.h, "X": qc.x, "Y": qc.y, "Z": qc.z, "S": qc.s, "Sdg": qc.sdg, "T": qc.t,
        "Tdg": qc.tdg, "SX": qc.sx, "SXdg": qc.sxdg, "CX": qc.cx, "CY": qc.cy, "CZ": qc.cz, "CH": qc.ch,
        "SWAP": qc.swap, "ISWAP": qc.iswap, "ECR": qc.ecr, "CCX": qc.ccx, "CCZ": qc.ccz, "CSWAP": qc.cswap,
    }
    rot = {
        "RX": qc.rx, "RY": qc.ry, "RZ": qc.rz, "P": qc.p, "CRX": qc.crx, "CRY": qc.cry, "CRZ": qc.crz,
        "CP": qc.cp, "RXX": qc.rxx, "RYY": qc.ryy, "RZZ": qc.rzz, "RZX": qc.rzx,
    }
    if name in fixed:
        fixed[name](*w)
    elif name in rot:
        rot[name](a[0], *w)
    elif name == "U":
        qc.u(a[0], a[1], a[2], w[0])
    elif name == "U2":
        qc.append(U2Gate(a[0], a[1]), w)
    elif name == "CU":
        qc.cu(a[0], a[1], a[2], 0.0, w[0], w[1])
    elif name == "MultiRZ":
        _q_multirz(qc, a[0], w)
    elif name == "MCX":
        qc.mcx(w[:-1], w[-1])
    elif name == "QubitUnitary":
        # Qiskit reads a matrix little-endian (first listed qubit least significant)
        qc.unitary(matrix, list(reversed(w)))
    else:  # pragma: no cover - a new gate must be added here
        raise AssertionError(f"no Qiskit translation for {name}")


def qiskit_state(spec: list[tuple], n: int, w: np.ndarray, x: np.ndarray | None) -> np.ndarray:
    qc = QuantumCircuit(n)
    for name, wires, params, matrix in spec:
        q_apply(qc, name, list(wires), [resolve_angle(p, w, x) for p in params], matrix)
    return Statevector(qc).reverse_qargs().data


def _values(c: tq.Circuit, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray | None]:
    w = rng.uniform(-math.pi, math.pi, size=c.n_weights)
    x = rng.uniform(-1.5, 1.5, size=(batch, c.n_inputs)) if c.n_inputs else None
    return w, x


def _coverage_key(name: str, wires: tuple[int, ...]) -> tuple[str, int]:
    return name, len(wires)


# --------------------------------------------------------------------------- tests

N_CIRCUITS = 240


def _all_specs() -> list[tuple[int, int, list[tuple]]]:
    out = []
    rng = np.random.default_rng(20240611)
    for i in range(N_CIRCUITS):
        n = 1 + i % 8
        # cycle through the gate set so every gate appears on every register size it fits
        forced: list = [ALL_GATES[(i + j) % len(ALL_GATES)] for j in range(3)]
        # variadic gates on every size: MultiRZ on 1..n wires, MCX with 1..n-1 controls
        forced.append(("MultiRZ", 1 + (i // 8) % n))
        if n >= 2:
            forced.append(("MCX", 2 + (i // 8) % (n - 1)))
        spec = random_spec(rng, n, int(rng.integers(3, 22)), forced)
        out.append((i, n, spec))
    return out


SPECS = _all_specs()


def test_random_circuits_cover_the_whole_gate_set() -> None:
    seen = Counter(_coverage_key(name, wires) for _, _, spec in SPECS for name, wires, _, _ in spec)
    names = {name for name, _ in seen}
    assert names == set(tq.GATES), f"gates never exercised: {sorted(set(tq.GATES) - names)}"
    assert {k for name, k in seen if name == "MultiRZ"} == set(range(1, 9))
    assert {k - 1 for name, k in seen if name == "MCX"} == set(range(1, 8))  # 1..n-1 controls
    assert {k for name, k in seen if name == "QubitUnitary"} == {1, 2, 3}
    kinds = Counter(p.kind for _, _, spec in SPECS for _, _, ps, _ in spec for p in ps)
    assert min(kinds["const"], kinds["weight"], kinds["feature"]) > 50
    prods = [p for _, _, spec in SPECS for _, _, ps, _ in spec for p in ps if p.kind == "feature" and len(p.index) > 1]
    assert len(prods) > 20
    assert any(p.feature_shift for p in prods)


@pytest.mark.parametrize("case", range(0, N_CIRCUITS, 10), ids=lambda i: f"block{i}")
def test_statevector_matches_qiskit(case: int) -> None:
    """Ten circuits per test id (240 in all), backprop and adjoint forward paths."""
    for i, n, spec in SPECS[case : case + 10]:
        rng = np.random.default_rng(1000 + i)
        c = build_tinyqml(spec, n)
        w, x = _values(c, rng, 1)
        expected = qiskit_state(spec, n, w, None if x is None else x[0])
        for method in ("backprop", "adjoint"):
            got = tq.statevector(c, torch.tensor(w), None if x is None else torch.tensor(x), diff_method=method)
            assert got.dtype == torch.complex128 and got.shape == (1, 2**n)
            err = np.abs(got[0].numpy() - expected).max()
            assert err <= TOL, f"circuit {i} ({n} wires, {method}): max |diff| = {err:.3e}\n{c.to_json()}"


@pytest.mark.parametrize("method", ["backprop", "adjoint"])
def test_batched_inputs_match_qiskit_row_by_row(method: str) -> None:
    rng = np.random.default_rng(7)
    n_checked = 0
    for i in range(24):
        n = 1 + i % 8
        spec = random_spec(rng, n, int(rng.integers(4, 18)), forced=[ALL_GATES[i % len(ALL_GATES)], "RY"])
        # make sure the circuit reads features both in the opening layer and after entanglers
        spec = [("RY", (0,), (tq.feature(0),), None)] + spec + [("RX", (n - 1,), (tq.feature([0, 1], shift=0.3),), None)]
        c = build_tinyqml(spec, n)
        batch = 3 if i % 2 else 5  # B > 2**n / 2 on small registers: the unitary shortcut
        w, x = _values(c, rng, batch)
        got = tq.statevector(c, torch.tensor(w), torch.tensor(x), diff_method=method)
        assert got.shape == (batch, 2**n)
        for b in range(batch):
            expected = qiskit_state(spec, n, w, x[b])
            err = np.abs(got[b].numpy() - expected).max()
            assert err <= TOL, f"circuit {i} row {b} ({method}): max |diff| = {err:.3e}"
            n_checked += 1
    assert n_checked == 12 * 3 + 12 * 5


def test_complex64_matches_qiskit_loosely() -> None:
    for i, n, spec in SPECS[:40]:
        rng = np.random.default_rng(1000 + i)
        c = build_tinyqml(spec, n)
        w, x = _values(c, rng, 1)
        expected = qiskit_state(spec, n, w, None if x is None else x[0])
        got = tq.statevector(c, torch.tensor(w), None if x is None else torch.tensor(x), dtype=torch.complex64)
        assert got.dtype == torch.complex64
        assert np.abs(got[0].numpy() - expected).max() < 1e-4


@pytest.mark.parametrize("name", ALL_GATES)
def test_each_gate_alone_matches_qiskit_on_a_random_state(name: str) -> None:
    """Each gate on permuted wires after a random entangling preparation (all wire orders)."""
    rng = np.random.default_rng(sum(map(ord, name)))
    n = 4
    g = tq.GATES[name]
    prep = [("U", (q,), tuple(tq.const(float(v)) for v in rng.uniform(-3, 3, 3)), None) for q in range(n)]
    prep += [("CX", (0, 1), (), None), ("CX", (2, 3), (), None), ("RZZ", (1, 2), (tq.const(0.7),), None)]
    prep += [("U", (q,), tuple(tq.const(float(v)) for v in rng.uniform(-3, 3, 3)), None) for q in range(n)]
    for trial in range(4):
        k = _arity(rng, name, n)
        assert k is not None
        wires = tuple(int(v) for v in rng.permutation(n)[:k])
        params = tuple(tq.const(float(v)) for v in rng.uniform(-4, 4, g.num_params))
        matrix = unitary_group.rvs(2**k, random_state=rng) if name == "QubitUnitary" else None
        spec = prep + [(name, wires, params, matrix)]
        c = build_tinyqml(spec, n)
        expected = qiskit_state(spec, n, np.zeros(0), None)
        for method in ("backprop", "adjoint"):
            got = tq.statevector(c, diff_method=method)[0].numpy()
            err = np.abs(got - expected).max()
            assert err <= TOL, f"{name} on {wires} ({method}): max |diff| = {err:.3e}"
