"""Gate matrices: unitarity, batching, structure, inverses, shift rules, lookup."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tinyqml.qml as tq
from tinyqml.qml import gates as G
from tinyqml.qml.circuit import Op, Param

DT = torch.complex128
PARAM_GATES = sorted(name for name, g in G.GATES.items() if g.num_params)
MATRIX_GATES = sorted(name for name in G.GATES if name != "QubitUnitary")


def _sizes(g: G.Gate) -> list[int]:
    """Wire counts to test a gate on."""
    if g.num_wires:
        return [g.num_wires]
    return list(range(g.min_wires, 5))


def _rand_params(gen: torch.Generator, b: int, p: int, dtype=torch.float64) -> torch.Tensor:
    return (torch.rand(b, p, generator=gen, dtype=torch.float64) * 16 - 8).to(dtype)


def _angle(p: Param) -> float:
    assert p.kind == "const"
    return p.scale * p.value + p.offset


def op_matrix(op: Op) -> torch.Tensor:
    """The (constant-parameter) matrix of one operation."""
    if op.gate is G.QubitUnitary:
        return torch.as_tensor(op.unitary_array())
    angles = torch.tensor([[_angle(p) for p in op.params]], dtype=torch.float64).reshape(1, len(op.params))
    return op.gate.matrix(angles, len(op.wires), DT)[0]


def _random_unitary(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d)))
    return q * (np.diag(r) / np.abs(np.diag(r)))


# --------------------------------------------------------------------------- matrices


@pytest.mark.parametrize("name", MATRIX_GATES)
@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
def test_matrices_are_unitary_and_batched(name: str, dtype: torch.dtype) -> None:
    g = G.GATES[name]
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    rdtype = torch.float64 if dtype == torch.complex128 else torch.float32
    tol = 1e-12 if dtype == torch.complex128 else 1e-5
    b = 5
    for k in _sizes(g):
        p = _rand_params(gen, b, g.num_params, rdtype)
        m = g.matrix(p, k, dtype)
        d = 2**k
        assert m.shape == (b, d, d) and m.dtype == dtype
        eye = torch.eye(d, dtype=dtype)
        assert (m.conj().transpose(1, 2) @ m - eye).abs().max() < tol
        assert (m @ m.conj().transpose(1, 2) - eye).abs().max() < tol
        # each row of the batch is the matrix of that row's parameters alone
        for i in range(b):
            assert (g.matrix(p[i : i + 1], k, dtype)[0] - m[i]).abs().max() < tol
        if g.hermitian:
            assert (m - m.conj().transpose(1, 2)).abs().max() < tol


@pytest.mark.parametrize("name", MATRIX_GATES)
def test_structure_data_matches_matrix(name: str) -> None:
    g = G.GATES[name]
    gen = torch.Generator().manual_seed(1 + sum(map(ord, name)))
    for k in _sizes(g):
        p = _rand_params(gen, 3, g.num_params)
        m = g.matrix(p, k, DT)
        if g.structure == "diagonal":
            assert g.diagonal is not None
            dg = g.diagonal(p, k, DT)
            assert dg.shape == (3, 2**k)
            assert (torch.diag_embed(dg) - m).abs().max() < 1e-14
        elif g.structure == "permutation":
            assert g.permutation is not None
            perm = g.permutation(k)
            assert sorted(perm) == list(range(2**k))
            pm = torch.zeros(2**k, 2**k, dtype=DT)
            pm[torch.arange(2**k), torch.tensor(perm)] = 1  # out[i] = in[perm[i]]
            assert (m - pm).abs().max() == 0
        else:
            assert g.structure == "dense"
        if g.controls and g.base is not None:
            kb = k - g.controls
            base = g.base.matrix(p, kb, DT)
            d, db = 2**k, 2**kb
            assert (m[:, d - db :, d - db :] - base).abs().max() < 1e-14
            eye_part = m.clone()
            eye_part[:, d - db :, d - db :] = torch.eye(db, dtype=DT)
            assert (eye_part - torch.eye(d, dtype=DT)).abs().max() < 1e-14


def test_some_matrices_by_hand() -> None:
    z = torch.zeros(1, 0)
    s2 = 1 / math.sqrt(2)
    assert torch.allclose(G.H.matrix(z, 1, DT)[0], torch.tensor([[s2, s2], [s2, -s2]], dtype=DT))
    # CX: control is the first wire, which is the most significant bit
    assert torch.equal(G.CX.matrix(z, 2, DT)[0].real, torch.tensor(
        [[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.float64))
    th = torch.tensor([[0.7]], dtype=torch.float64)
    c, s = math.cos(0.35), math.sin(0.35)
    assert torch.allclose(G.RY.matrix(th, 1, DT)[0], torch.tensor([[c, -s], [s, c]], dtype=DT))
    assert torch.allclose(G.RX.matrix(th, 1, DT)[0], torch.tensor([[c, -1j * s], [-1j * s, c]], dtype=DT))
    assert torch.allclose(G.RZ.matrix(th, 1, DT)[0], torch.diag(torch.tensor([c - 1j * s, c + 1j * s], dtype=DT)))
    assert torch.allclose(G.MultiRZ.matrix(th, 2, DT)[0], G.RZZ.matrix(th, 2, DT)[0])
    # MultiRZ eigenvalue on |011> (parity 0) and |010> (parity 1)
    d3 = G.MultiRZ.diagonal(th, 3, DT)[0]
    assert torch.isclose(d3[3], torch.tensor(c - 1j * s, dtype=DT))
    assert torch.isclose(d3[2], torch.tensor(c + 1j * s, dtype=DT))
    u2 = G.U2.matrix(torch.tensor([[0.3, -1.1]], dtype=torch.float64), 1, DT)[0]
    u3 = G.U.matrix(torch.tensor([[math.pi / 2, 0.3, -1.1]], dtype=torch.float64), 1, DT)[0]
    assert torch.allclose(u2, u3)
    assert G.MCX.permutation(2) == G.CX.permutation(2)
    assert G.MCX.permutation(3) == G.CCX.permutation(3)
    assert G.CSWAP.permutation(3) == (0, 1, 2, 3, 4, 6, 5, 7)


# --------------------------------------------------------------------------- inverses


def _ops_for(name: str, rng: np.random.Generator) -> list[Op]:
    g = G.GATES[name]
    out = []
    sizes = [1, 2, 3] if g is G.QubitUnitary else _sizes(g)
    for k in sizes:
        wires = tuple(int(w) for w in rng.permutation(5)[:k])
        if g is G.QubitUnitary:
            out.append(Op(g, wires, (), _random_unitary(rng, 2**k)))
            continue
        for _ in range(3):
            params = tuple(
                Param("const", value=float(rng.uniform(-7, 7)), scale=float(rng.choice([1.0, -0.5, 2.0])),
                      offset=float(rng.choice([0.0, 0.3])))
                for _ in range(g.num_params)
            )
            out.append(Op(g, wires, params))
    return out


@pytest.mark.parametrize("name", sorted(G.GATES))
def test_inverse_times_gate_is_identity(name: str) -> None:
    rng = np.random.default_rng(sum(map(ord, name)))
    for op in _ops_for(name, rng):
        inv = op.inverse()
        assert inv.wires == op.wires
        expected_name = G.GATES[name].inverse_name or "QubitUnitary"
        assert inv.name == expected_name
        m, mi = op_matrix(op), op_matrix(inv)
        eye = torch.eye(m.shape[0], dtype=DT)
        assert (mi @ m - eye).abs().max() < 1e-12, f"{name}: inverse {inv}"
        assert (m @ mi - eye).abs().max() < 1e-12
        # the inverse of the inverse is the gate again
        assert (op_matrix(inv.inverse()) - m).abs().max() < 1e-12


def test_inverse_keeps_trainable_references() -> None:
    op = Op(G.U, (0,), (tq.weight(0), tq.feature(1, scale=2.0, offset=0.5), tq.weight(2, offset=-1.0)))
    inv = op.inverse()
    assert [p.kind for p in inv.params] == ["weight", "weight", "feature"]
    assert inv.params[0].index == (0,) and inv.params[0].scale == -1.0
    assert inv.params[1].index == (2,) and inv.params[1].offset == 1.0
    assert inv.params[2].index == (1,) and inv.params[2].scale == -2.0 and inv.params[2].offset == -0.5


@pytest.mark.parametrize("name", [n for n in PARAM_GATES])
def test_periods(name: str) -> None:
    """Shifting a parameter by its period gives the same gate up to a global phase."""
    g = G.GATES[name]
    assert len(g.periods) == g.num_params
    gen = torch.Generator().manual_seed(3)
    k = g.num_wires or 3
    p = _rand_params(gen, 2, g.num_params)
    m = g.matrix(p, k, DT)
    for j, period in enumerate(g.periods):
        q = p.clone()
        q[:, j] += period
        m2 = g.matrix(q, k, DT)
        # m2 = e^{i a} m  <=>  m^H m2 is a multiple of the identity
        r = m.conj().transpose(1, 2) @ m2
        ph = r[:, :1, :1]
        assert (r - ph * torch.eye(2**k, dtype=DT)).abs().max() < 1e-12, (name, j)
        assert (ph.abs() - 1).abs().max() < 1e-12


# --------------------------------------------------------------------------- parameter shift


def _shift_circuit(name: str, k: int, rng: np.random.Generator) -> tq.Circuit:
    n = 4
    g = G.GATES[name]
    b = tq.CircuitBuilder(n)
    for q in range(n):
        b.u(q, *[float(v) for v in rng.uniform(-3, 3, 3)])
    b.cx(0, 1).cx(2, 3).cry(1, 2, 0.9)
    wires = [int(w) for w in rng.permutation(n)[:k]]
    b.append(g, wires, *[tq.weight(j) for j in range(g.num_params)])
    for q in range(n):
        b.u(q, *[float(v) for v in rng.uniform(-3, 3, 3)])
    b.cz(3, 0)
    return b.build()


OBS = [tq.Z(0), tq.pauli("X1 Y2"), 0.5 * tq.pauli("Y0 Z1 X3") + tq.pauli("Z2 Z3", -0.8) + tq.X(1)]


@pytest.mark.parametrize(("name", "k"), [(n, k) for n in PARAM_GATES for k in (_sizes(G.GATES[n])[:3])])
def test_shift_rules_give_the_derivative(name: str, k: int) -> None:
    g = G.GATES[name]
    assert len(g.shift_rules) == g.num_params
    rng = np.random.default_rng(7 * k + sum(map(ord, name)))
    c = _shift_circuit(name, k, rng)
    theta = torch.tensor(rng.uniform(-4, 4, g.num_params), dtype=torch.float64)

    def f(t: torch.Tensor) -> torch.Tensor:
        return tq.expval(c, OBS, weights=t)[0]

    h = 1e-6
    for j, rule in enumerate(g.shift_rules):
        e = torch.zeros(g.num_params, dtype=torch.float64)
        e[j] = 1
        shifted = sum(coef * f(theta + s * e) for coef, s in rule)
        fd = (f(theta + h * e) - f(theta - h * e)) / (2 * h)
        assert (shifted - fd).abs().max() < 1e-7, f"{name} param {j}: shift {shifted} vs fd {fd}"
        assert fd.abs().max() > 1e-4 or j  # the derivative is not trivially zero
    # the library's parameter-shift backward gives the same gradient as autograd
    w1 = theta.clone().requires_grad_(True)
    w2 = theta.clone().requires_grad_(True)
    tq.expval(c, OBS, weights=w1, diff_method="parameter-shift").sum().backward()
    tq.expval(c, OBS, weights=w2, diff_method="backprop").sum().backward()
    assert (w1.grad - w2.grad).abs().max() < 1e-10


# --------------------------------------------------------------------------- lookup


@pytest.mark.parametrize(("alias", "name"), sorted(G.ALIASES.items()))
def test_aliases(alias: str, name: str) -> None:
    assert tq.get_gate(alias) is G.GATES[name]
    assert tq.get_gate(alias.lower()) is G.GATES[name]


def test_get_gate_lookup() -> None:
    assert tq.get_gate("cnot") is G.CX
    assert tq.get_gate("Toffoli") is G.CCX
    assert tq.get_gate("PhaseShift") is G.P
    assert tq.get_gate("IsingZZ") is G.RZZ
    assert tq.get_gate("u3") is G.U
    assert tq.get_gate("multirz") is G.MultiRZ
    assert tq.get_gate("sdg") is G.Sdg
    for name, gate in G.GATES.items():
        assert tq.get_gate(name) is gate
        assert tq.get_gate(name.lower()) is gate
        assert tq.get_gate(name.upper()) is gate
        assert tq.get_gate(gate) is gate
        assert gate.name == name
        assert repr(gate) == f"Gate({name})"


@pytest.mark.parametrize("bad", ["foo", "CNOTT", "", "R X"])
def test_unknown_gate(bad: str) -> None:
    with pytest.raises(tq.UnknownGateError, match="unknown gate") as info:
        tq.get_gate(bad)
    msg = str(info.value)
    assert repr(bad) in msg
    assert "known gates:" in msg and "CX" in msg and "MultiRZ" in msg
    assert isinstance(info.value, KeyError) and isinstance(info.value, tq.TinyQMLError)
    assert not msg.startswith('"')  # readable, not KeyError-quoted


def test_check_wires() -> None:
    assert G.CX.check_wires(2) and not G.CX.check_wires(3)
    assert G.MultiRZ.check_wires(1) and G.MultiRZ.check_wires(7) and not G.MultiRZ.check_wires(0)
    assert G.MCX.check_wires(2) and not G.MCX.check_wires(1)
    assert G.QubitUnitary.check_wires(3)


def test_qubit_unitary_has_no_matrix_function() -> None:
    with pytest.raises(tq.UnknownGateError, match="Op.matrix"):
        G.QubitUnitary.matrix(torch.zeros(1, 0), 1, DT)
