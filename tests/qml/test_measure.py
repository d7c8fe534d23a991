"""Observables and measurements against explicit matrix computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import tinyqml.qml as tq
from tinyqml.qml import measure as M

DT = torch.complex128
PAULI = {
    "I": np.eye(2, dtype=complex),
    "X": np.array([[0, 1], [1, 0]], dtype=complex),
    "Y": np.array([[0, -1j], [1j, 0]], dtype=complex),
    "Z": np.array([[1, 0], [0, -1]], dtype=complex),
}


def dense_pauli(p: M.PauliString, n: int) -> np.ndarray:
    """coeff * kron of single-wire matrices, wire 0 leftmost (most significant)."""
    per_wire = ["I"] * n
    for letter, w in zip(p.paulis, p.wires):
        per_wire[w] = letter
    out = np.eye(1, dtype=complex)
    for letter in per_wire:
        out = np.kron(out, PAULI[letter])
    return p.coeff * out


def dense_obs(ob, n: int) -> np.ndarray:
    if isinstance(ob, M.Hamiltonian):
        return sum((dense_pauli(t, n) for t in ob.terms), np.zeros((2**n, 2**n), dtype=complex))
    return dense_pauli(ob, n)


def rand_states(rng: np.random.Generator, b: int, n: int) -> torch.Tensor:
    psi = rng.normal(size=(b, 2**n)) + 1j * rng.normal(size=(b, 2**n))
    return torch.as_tensor(psi / np.linalg.norm(psi, axis=1, keepdims=True))


def random_pauli(rng: np.random.Generator, n: int, letters: str = "IXYZ") -> M.PauliString:
    k = int(rng.integers(1, n + 1))
    wires = tuple(int(w) for w in rng.permutation(n)[:k])  # unsorted wire order
    word = "".join(letters[int(i)] for i in rng.integers(0, len(letters), k))
    return M.PauliString(word, wires, float(rng.uniform(-2, 2)))


def explicit_expval(psi: torch.Tensor, ob, n: int) -> np.ndarray:
    m = dense_obs(ob, n)
    s = psi.numpy()
    return np.einsum("bi,ij,bj->b", s.conj(), m, s).real


# --------------------------------------------------------------------------- expval


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_pauli_strings_vs_matrices(n: int) -> None:
    rng = np.random.default_rng(n)
    psi = rand_states(rng, 4, n)
    obs = [random_pauli(rng, n) for _ in range(25)]
    got = M.expval(psi, obs, n)
    assert got.shape == (4, 25) and got.dtype == torch.float64
    for j, ob in enumerate(obs):
        assert np.abs(got[:, j].numpy() - explicit_expval(psi, ob, n)).max() < 1e-12, str(ob)


@pytest.mark.parametrize("n", [2, 4])
def test_diagonal_only_observables_vs_matrices(n: int) -> None:
    """All-I/Z observables take the eigenvalue-table path."""
    rng = np.random.default_rng(10 + n)
    psi = rand_states(rng, 3, n)
    obs = [random_pauli(rng, n, "IZ") for _ in range(10)]
    obs.append(M.Hamiltonian(tuple(random_pauli(rng, n, "IZ") for _ in range(4))))
    obs.append(M.PauliString("", (), 0.75))  # identity with a coefficient
    assert M.diagonal_matrix(obs, n, torch.device("cpu"), torch.float64) is not None
    got = M.expval(psi, obs, n)
    for j, ob in enumerate(obs):
        assert np.abs(got[:, j].numpy() - explicit_expval(psi, ob, n)).max() < 1e-12
    assert torch.allclose(got[:, -1], torch.full((3,), 0.75, dtype=torch.float64))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_hamiltonians_vs_matrices(n: int) -> None:
    rng = np.random.default_rng(20 + n)
    psi = rand_states(rng, 3, n)
    hs = [M.Hamiltonian(tuple(random_pauli(rng, n) for _ in range(int(rng.integers(1, 6))))) for _ in range(6)]
    hs.append(0.5 * tq.X(0) + tq.Z(n - 1) * 2.0 + tq.pauli("Y0 Y1", -0.3))
    hs.append(M.Hamiltonian(()))  # empty sum: zero
    got = M.expval(psi, hs + [tq.Z(0)], n)
    assert got.shape == (3, len(hs) + 1)
    for j, h in enumerate(hs):
        assert np.abs(got[:, j].numpy() - explicit_expval(psi, h, n)).max() < 1e-12
    assert torch.equal(got[:, len(hs) - 1], torch.zeros(3, dtype=torch.float64))


def test_observable_algebra() -> None:
    p = tq.Z(0) @ tq.X(2)
    assert (p.paulis, p.wires, p.coeff) == ("ZX", (0, 2), 1.0)
    q = 3 * p
    assert q.coeff == 3.0 and (p * 2).coeff == 2.0
    h = p + tq.Y(1)
    assert isinstance(h, M.Hamiltonian) and len(h.terms) == 2
    h2 = (h + h) * 0.5
    assert [t.coeff for t in h2.terms] == [0.5, 0.5, 0.5, 0.5]
    assert (2 * h).terms[1].coeff == 2.0
    assert tq.pauli("Z0 X2") == p
    assert tq.pauli("z0 x2", 0.5).coeff == 0.5
    assert str(p) == "Z0 X2" and str(q) == "3.0*Z0 X2" and str(M.PauliString("", ())) == "I"
    assert p.is_diagonal is False and tq.pauli("Z1 I0").is_diagonal
    rng = np.random.default_rng(0)
    psi = rand_states(rng, 2, 3)
    # expval is linear in the Hamiltonian
    a = M.expval(psi, [h2], 3)
    b = M.expval(psi, [p, tq.Y(1)], 3).sum(1, keepdim=True)
    assert torch.allclose(a, b, atol=1e-14)


def test_expval_entry_point_vs_matrices() -> None:
    """simulate.expval = measure.expval of the statevector, for every diff method."""
    rng = np.random.default_rng(3)
    c = tq.CircuitBuilder(3).h(0).ry(1, tq.weight(0)).cx(0, 2).u(2, 0.3, tq.feature(0), 1.1).crx(2, 1, tq.weight(1)).build()
    w = torch.tensor([0.4, -1.2], dtype=torch.float64)
    x = torch.tensor([[0.3], [-0.8]], dtype=torch.float64)
    obs = [random_pauli(rng, 3) for _ in range(6)] + [tq.Z(0) + tq.pauli("X1 Y2", 0.5)]
    psi = tq.statevector(c, w, x)
    for method in tq.DIFF_METHODS:
        got = tq.expval(c, obs, weights=w, inputs=x, diff_method=method)
        for j, ob in enumerate(obs):
            assert np.abs(got[:, j].numpy() - explicit_expval(psi, ob, 3)).max() < 1e-12


# --------------------------------------------------------------------------- probs


def explicit_marginal(psi: torch.Tensor, n: int, wires: list[int]) -> np.ndarray:
    p = (psi.abs() ** 2).numpy()
    out = np.zeros((p.shape[0], 2 ** len(wires)))
    for i in range(2**n):
        bits = [(i >> (n - 1 - w)) & 1 for w in range(n)]
        j = 0
        for w in wires:
            j = (j << 1) | bits[w]
        out[:, j] += p[:, i]
    return out


@pytest.mark.parametrize("n", [1, 3, 4])
def test_probs_marginals_with_custom_wire_order(n: int) -> None:
    rng = np.random.default_rng(30 + n)
    psi = rand_states(rng, 3, n)
    assert torch.allclose(M.probs(psi, n), psi.abs() ** 2)
    for k in range(1, n + 1):
        for wires in itertools.permutations(range(n), k):
            got = M.probs(psi, n, list(wires))
            assert got.shape == (3, 2**k)
            assert np.abs(got.numpy() - explicit_marginal(psi, n, list(wires))).max() < 1e-14, wires
            assert torch.allclose(got.sum(1), torch.ones(3, dtype=torch.float64))


def test_probs_entry_point() -> None:
    c = tq.CircuitBuilder(3).x(0).h(2).build()  # |1> (x) |0> (x) |+>
    p = tq.probs(c)
    assert torch.allclose(p, torch.tensor([[0, 0, 0, 0, 0.5, 0.5, 0, 0]], dtype=torch.float64))
    assert torch.allclose(tq.probs(c, wires=[0]), torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(tq.probs(c, wires=[1, 0]), torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(tq.probs(c, wires=[2, 0]), torch.tensor([[0.0, 0.5, 0.0, 0.5]], dtype=torch.float64))
    # differentiable by backprop
    cw = tq.CircuitBuilder(1).ry(0, tq.weight(0)).build()
    w = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    tq.probs(cw, w)[0, 1].backward()
    assert torch.isclose(w.grad[0], torch.tensor(math.sin(0.7) / 2, dtype=torch.float64))


@pytest.mark.parametrize("wires", [[0, 0], [3], [-1], [1, 5]])
def test_probs_bad_wires(wires: list[int]) -> None:
    psi = rand_states(np.random.default_rng(0), 1, 3)
    with pytest.raises(tq.WireError, match=r"must be distinct and in 0\.\.2"):
        M.probs(psi, 3, wires)


# --------------------------------------------------------------------------- sampling


def _bell_like() -> tq.Circuit:
    return tq.CircuitBuilder(3).ry(0, 1.1).cx(0, 1).ry(2, tq.feature(0)).cz(1, 2).build()


def test_samples_are_reproducible_with_a_seeded_generator() -> None:
    c = _bell_like()
    x = torch.tensor([[0.4], [2.0]], dtype=torch.float64)
    s1 = tq.sample(c, 500, inputs=x, generator=torch.Generator().manual_seed(123))
    s2 = tq.sample(c, 500, inputs=x, generator=torch.Generator().manual_seed(123))
    s3 = tq.sample(c, 500, inputs=x, generator=torch.Generator().manual_seed(124))
    assert s1.shape == (2, 500, 3) and s1.dtype == torch.int64
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)
    assert set(s1.unique().tolist()) <= {0, 1}
    # wires 0 and 1 are perfectly correlated
    assert torch.equal(s1[..., 0], s1[..., 1])
    c1 = tq.counts(c, 300, inputs=x, generator=torch.Generator().manual_seed(5))
    c2 = tq.counts(c, 300, inputs=x, generator=torch.Generator().manual_seed(5))
    assert c1 == c2 and len(c1) == 2
    assert all(sum(d.values()) == 300 for d in c1)
    assert all(k[0] == k[1] and len(k) == 3 for d in c1 for k in d)
    assert list(c1[0]) == sorted(c1[0])


@pytest.mark.parametrize("wires", [None, [2, 0], [1]])
def test_sample_frequencies_converge_to_probs(wires) -> None:
    c = (tq.CircuitBuilder(3).ry(0, 0.9).rx(1, 2.1).cx(0, 2).u(2, 0.4, 1.0, -0.3).crx(1, 0, 0.8).build())
    shots = 40_000
    s = tq.sample(c, shots, generator=torch.Generator().manual_seed(0), wires=wires)
    k = 3 if wires is None else len(wires)
    assert s.shape == (1, shots, k)
    idx = (s[0] * (2 ** torch.arange(k - 1, -1, -1))).sum(1)
    freq = torch.bincount(idx, minlength=2**k).double() / shots
    p = tq.probs(c, wires=wires)[0]
    # 5 sigma of a binomial frequency, per outcome
    sigma = torch.sqrt(p * (1 - p) / shots)
    assert ((freq - p).abs() <= 5 * sigma + 1e-12).all(), (freq, p)
    counts = tq.counts(c, shots, generator=torch.Generator().manual_seed(0), wires=wires)[0]
    # counts are the same draws as the samples, as bitstrings (first listed wire leftmost)
    for bits, cnt in counts.items():
        j = int(bits, 2)
        assert cnt == int((idx == j).sum())


def test_sample_deterministic_states() -> None:
    c = tq.CircuitBuilder(4).x(1).x(3).build()  # |0101>
    s = tq.sample(c, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s[0], torch.tensor([[0, 1, 0, 1]] * 20))
    assert tq.counts(c, 7) == [{"0101": 7}]
    assert tq.counts(c, 7, wires=[3, 0]) == [{"10": 7}]


@pytest.mark.parametrize("shots", [0, -3, 2.5, "10"])
def test_bad_shots(shots) -> None:
    c = tq.CircuitBuilder(1).h(0).build()
    with pytest.raises(tq.ShapeError, match="shots must be a positive integer"):
        tq.sample(c, shots)


def test_expval_from_samples() -> None:
    c = (tq.CircuitBuilder(3).ry(0, 0.9).rx(1, 2.1).cx(0, 2).ry(2, tq.feature(0)).build())
    x = torch.tensor([[0.3], [1.7]], dtype=torch.float64)
    obs = [tq.Z(0), tq.Z(0) @ tq.Z(2), 0.5 * tq.Z(1) + tq.pauli("Z0 Z1 Z2", -2.0) + tq.PauliString("", (), 0.25),
           tq.pauli("I1")]
    shots = 50_000
    s = tq.sample(c, shots, inputs=x, generator=torch.Generator().manual_seed(1))
    est = M.expval_from_samples(s, obs)
    exact = tq.expval(c, obs, inputs=x)
    assert est.shape == exact.shape == (2, 4)
    assert (est - exact).abs().max() < 0.05
    assert torch.equal(est[:, 3], torch.ones(2, dtype=torch.float64))
    # exact on a deterministic sample set
    fixed = torch.tensor([[[0, 1, 1], [1, 1, 0]]])
    got = M.expval_from_samples(fixed, [tq.Z(0), tq.Z(1), tq.pauli("Z0 Z2"), 3 * tq.Z(2)])
    assert torch.equal(got, torch.tensor([[0.0, -1.0, -1.0, 0.0]], dtype=torch.float64))


def test_expval_from_samples_errors() -> None:
    s = torch.zeros(1, 10, 2, dtype=torch.int64)
    with pytest.raises(tq.ObservableError, match="X0 is not diagonal; rotate the basis"):
        M.expval_from_samples(s, [tq.X(0)])
    with pytest.raises(tq.ObservableError, match="acts on wire 2"):
        M.expval_from_samples(s, [tq.Z(2)])


# --------------------------------------------------------------------------- observable errors


def test_observable_errors() -> None:
    with pytest.raises(tq.ObservableError, match=r"unknown Pauli letter\(s\) \['Q'\]; use I, X, Y, Z"):
        M.PauliString("ZQ", (0, 1))
    with pytest.raises(tq.ObservableError, match=r"unknown Pauli letter"):
        tq.pauli("Z0 W1")
    with pytest.raises(tq.ObservableError, match="2 Pauli letters for 1 wires"):
        M.PauliString("ZZ", (0,))
    with pytest.raises(tq.ObservableError, match=r"duplicated wire in Pauli string on \(1, 1\)"):
        M.PauliString("ZX", (1, 1))
    with pytest.raises(tq.ObservableError, match="negative wire"):
        tq.Z(-1)
    with pytest.raises(tq.ObservableError, match="overlapping wires"):
        tq.Z(0) @ tq.X(0)
    with pytest.raises(tq.ObservableError, match="bad Pauli term 'Z'; write letter\\+wire"):
        tq.pauli("Z")
    with pytest.raises(tq.ObservableError, match="bad Pauli term 'Zx'"):
        tq.pauli("Zx")
    with pytest.raises(tq.ObservableError, match="must be PauliString or Hamiltonian, got str"):
        M.expval(rand_states(np.random.default_rng(0), 1, 1), ["Z0"], 1)


@pytest.mark.parametrize("method", tq.DIFF_METHODS)
def test_observable_wire_out_of_range(method: str) -> None:
    c = tq.CircuitBuilder(2).h(0).build()
    for ob in (tq.Z(2), tq.pauli("X0 Y5"), tq.Z(0) + tq.X(3)):
        with pytest.raises(tq.ObservableError, match=r"acts on wire \d, but the state has 2 wires \(0\.\.1\)"):
            tq.expval(c, [tq.Z(0), ob], diff_method=method)
    with pytest.raises(tq.ObservableError, match="must be PauliString or Hamiltonian, got int"):
        tq.expval(c, [3], diff_method=method)


def test_measure_expval_wire_out_of_range() -> None:
    psi = rand_states(np.random.default_rng(0), 1, 2)
    for ob in ([tq.Z(4)], [tq.X(4)], [tq.Z(0) + tq.Y(2)]):
        with pytest.raises(tq.ObservableError, match="but the state has 2 wires"):
            M.expval(psi, ob, 2)


def test_expval_bad_state_shape() -> None:
    with pytest.raises(tq.ShapeError, match=r"state must have shape \[batch, 4\], got \[4\]"):
        M.expval(torch.zeros(4, dtype=DT), [tq.Z(0)], 2)


def test_abs2_has_correct_second_derivatives() -> None:
    from tinyqml.qml.measure import abs2

    x = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    f = abs2((torch.exp(1j * x) * torch.cos(x)).reshape(1, 1)).sum()  # = cos(x)**2
    (g,) = torch.autograd.grad(f, x, create_graph=True)
    (h,) = torch.autograd.grad(g, x)
    torch.testing.assert_close(g.detach(), -torch.sin(2 * x.detach()))
    torch.testing.assert_close(h, -2 * torch.cos(2 * x.detach()))
