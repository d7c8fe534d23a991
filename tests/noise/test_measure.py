"""Tests of tinyqml.noise.measure: expectations and probabilities from the vectorized
density matrix, readout errors and their mitigation, sampling."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import tinyqml.qml as tq
from tinyqml.noise import kernels as K
from tinyqml.noise import measure as M
from tinyqml.noise.channels import ReadoutError
from tinyqml.noise.errors import NoiseParameterError
from tinyqml.qml.errors import ObservableError, ShapeError, WireError

DT = torch.complex128
PAULI = {
    "I": torch.eye(2, dtype=DT),
    "X": torch.tensor([[0, 1], [1, 0]], dtype=DT),
    "Y": torch.tensor([[0, -1j], [1j, 0]], dtype=DT),
    "Z": torch.tensor([[1, 0], [0, -1]], dtype=DT),
}


def _random_rho(batch: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = 2 ** n
    a = torch.randn(batch, d, d, generator=g, dtype=torch.float64) + 1j * torch.randn(batch, d, d, generator=g, dtype=torch.float64)
    rho = a @ a.conj().transpose(-1, -2)
    return rho / rho.diagonal(dim1=-2, dim2=-1).sum(-1).real[:, None, None]


def _matrix(p: tq.PauliString, n: int) -> torch.Tensor:
    letters = dict(zip(p.wires, p.paulis))
    out = torch.ones(1, 1, dtype=DT)
    for w in range(n):
        out = torch.kron(out, PAULI[letters.get(w, "I")])
    return p.coeff * out


def _obs_matrix(ob, n: int) -> torch.Tensor:
    if isinstance(ob, tq.Hamiltonian):
        return sum(_matrix(t, n) for t in ob.terms)
    return _matrix(ob, n)


def _explicit_probs(rho: torch.Tensor) -> torch.Tensor:
    return rho.diagonal(dim1=-2, dim2=-1).real


# --------------------------------------------------------------------------- expectations


def _observables(n: int, rng: np.random.Generator) -> list:
    out = [tq.Z(0), tq.X(n - 1), tq.Y(0)]
    for _ in range(6):
        k = int(rng.integers(1, n + 1))
        wires = [int(w) for w in rng.permutation(n)[:k]]
        out.append(tq.PauliString("".join(rng.choice(list("IXYZ"), size=k)), tuple(wires), float(rng.uniform(-2, 2))))
    out.append(0.5 * tq.Z(0) + (-1.5) * out[-1] + tq.PauliString("Y" * n, tuple(range(n)), 0.3))
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_expval_equals_trace(n):
    rng = np.random.default_rng(n)
    obs = _observables(n, rng)
    rho = _random_rho(3, n, seed=n)
    got = M.expval(K.to_vector(rho, n), obs, n)
    assert got.shape == (3, len(obs)) and got.dtype == torch.float64
    want = torch.stack([torch.einsum("bij,ji->b", rho, _obs_matrix(ob, n)).real for ob in obs], 1)
    assert torch.allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("n", [1, 3])
def test_expval_diagonal_observables_use_probabilities(n):
    obs = [tq.Z(n - 1), 2.0 * tq.Z(0), tq.PauliString("Z" * n, tuple(range(n))), tq.Z(0) + 0.5 * tq.PauliString("I", (0,))]
    rho = _random_rho(2, n, seed=10 + n)
    got = M.expval(K.to_vector(rho, n), obs, n)
    want = torch.stack([torch.einsum("bij,ji->b", rho, _obs_matrix(ob, n)).real for ob in obs], 1)
    assert torch.allclose(got, want, atol=1e-12)


def test_expval_of_a_pure_state_equals_statevector_expval():
    c = tq.CircuitBuilder(3).h(0).cx(0, 1).ry(2, 0.7).rx(1, 0.3).cz(2, 0).build()
    psi = tq.statevector(c)
    rho = psi.unsqueeze(-1) * psi.conj().unsqueeze(-2)
    obs = _observables(3, np.random.default_rng(5))
    assert torch.allclose(M.expval(K.to_vector(rho, 3), obs, 3), tq.expval(c, obs), atol=1e-12)


@pytest.mark.parametrize("obs,err,fragment", [
    ([tq.Z(3)], ObservableError, "acts on wire 3, but the state has 2 wires"),
    (["Z0"], ObservableError, "PauliString or Hamiltonian"),
])
def test_expval_invalid(obs, err, fragment):
    vec = K.to_vector(_random_rho(1, 2, seed=0), 2)
    with pytest.raises(err) as info:
        M.expval(vec, obs, 2)
    assert fragment in str(info.value)


def test_expval_shape_error():
    with pytest.raises(ShapeError, match=r"ququart layout"):
        M.expval(torch.zeros(1, 8, dtype=DT), [tq.Z(0)], 2)


# --------------------------------------------------------------------------- probabilities


@pytest.mark.parametrize("n", [1, 2, 4])
def test_diagonal_is_the_probabilities(n):
    rho = _random_rho(3, n, seed=20 + n)
    p = M.diagonal(K.to_vector(rho, n), n)
    assert p.dtype == torch.float64
    assert torch.allclose(p, _explicit_probs(rho), atol=1e-15)


@pytest.mark.parametrize("wires", [None, [0], [2], [2, 0], [1, 3, 0], [3, 2, 1, 0]])
def test_marginal_wire_order(wires):
    n = 4
    rho = _random_rho(2, n, seed=1)
    p = _explicit_probs(rho)
    got = M.marginal(p, n, wires)
    if wires is None:
        assert torch.equal(got, p)
        return
    want = torch.zeros(2, 2 ** len(wires), dtype=torch.float64)
    for i in range(2 ** n):
        bits = [(i >> (n - 1 - w)) & 1 for w in range(n)]
        j = 0
        for w in wires:   # first listed wire most significant
            j = 2 * j + bits[w]
        want[:, j] += p[:, i]
    assert torch.allclose(got, want, atol=1e-15)


@pytest.mark.parametrize("wires", [[4], [-1], [0, 0]])
def test_marginal_invalid(wires):
    with pytest.raises(WireError, match="distinct and in 0..3"):
        M.marginal(torch.ones(1, 16, dtype=torch.float64) / 16, 4, wires)


# --------------------------------------------------------------------------- readout


def _explicit_readout(p: torch.Tensor, errors) -> torch.Tensor:
    full = torch.ones(1, 1, dtype=torch.float64)
    for e in errors:
        full = torch.kron(full, torch.eye(2, dtype=torch.float64) if e is None else e.matrix)
    return p @ full.T


ERRS = [ReadoutError(0.1, 0.02), None, ReadoutError(0.3, 0.25), ReadoutError(0.0, 0.4)]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_apply_readout_is_the_kronecker_product_of_confusion_matrices(k):
    p = _explicit_probs(_random_rho(3, k, seed=k))
    errors = ERRS[:k]
    got = M.apply_readout(p, errors)
    assert torch.allclose(got, _explicit_readout(p, errors), atol=1e-15)
    assert torch.allclose(got.sum(1), torch.ones(3, dtype=torch.float64), atol=1e-14)


def test_apply_readout_asymmetric_on_basis_states():
    e = ReadoutError(p0_given_1=0.2, p1_given_0=0.05)
    p = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)   # |00>, |11>
    got = M.apply_readout(p, [e, None])
    assert torch.allclose(got[0], torch.tensor([0.95, 0.0, 0.05, 0.0], dtype=torch.float64))
    assert torch.allclose(got[1], torch.tensor([0.0, 0.2, 0.0, 0.8], dtype=torch.float64))
    # the wire order matters: the error sits on the first (most significant) wire
    assert not torch.allclose(got, M.apply_readout(p, [None, e]))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_mitigate_undoes_apply(k):
    p = _explicit_probs(_random_rho(4, k, seed=30 + k))
    errors = ERRS[:k]
    noisy = M.apply_readout(p, errors)
    assert float((noisy - p).abs().max()) > 1e-3
    assert torch.allclose(M.mitigate_readout(noisy, errors), p, atol=1e-13)
    assert torch.allclose(M.apply_readout(M.mitigate_readout(p, errors), errors), p, atol=1e-13)


def test_mitigate_is_not_clipped():
    e = ReadoutError(0.1, 0.1)
    out = M.mitigate_readout(torch.tensor([[1.0, 0.0]], dtype=torch.float64), [e])
    assert torch.allclose(out, torch.tensor([[1.125, -0.125]], dtype=torch.float64))


def test_readout_is_differentiable():
    p = torch.tensor([[0.3, 0.7]], dtype=torch.float64, requires_grad=True)
    out = M.apply_readout(p, [ReadoutError(0.1, 0.2)])
    out[0, 1].backward()
    assert torch.allclose(p.grad, torch.tensor([[0.2, 0.9]], dtype=torch.float64))


@pytest.mark.parametrize("fn,p,errors,err,fragment", [
    (M.mitigate_readout, torch.ones(1, 2) / 2, [ReadoutError(0.5, 0.5)], NoiseParameterError, "cannot be inverted"),
    (M.mitigate_readout, torch.ones(1, 4) / 4, [None, ReadoutError(1.0, 0.0)], NoiseParameterError, "wire 1"),
    (M.apply_readout, torch.ones(1, 4) / 4, [None], ShapeError, "shape [batch, 2] for 1 readout entries"),
    (M.apply_readout, torch.ones(4) / 4, [None, None], ShapeError, "got [4]"),
    (M.apply_readout, torch.ones(1, 2) / 2, [(0.1, 0.1)], NoiseParameterError, "ReadoutError or None"),
    (M.mitigate_readout, torch.ones(1, 8) / 8, [None, None], ShapeError, "[batch, 4]"),
])
def test_readout_invalid(fn, p, errors, err, fragment):
    with pytest.raises(err) as info:
        fn(p.to(torch.float64), errors)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- sampling


def test_sample_shape_bits_and_seed():
    p = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 7 + [1.0]], dtype=torch.float64)
    s = M.sample(p, 5, torch.Generator().manual_seed(0))
    assert s.shape == (2, 5, 3)
    assert s[0].tolist() == [[0, 0, 1]] * 5 and s[1].tolist() == [[1, 1, 1]] * 5     # first wire leftmost
    p = _explicit_probs(_random_rho(1, 3, seed=3))
    a = M.sample(p, 100, torch.Generator().manual_seed(7))
    b = M.sample(p, 100, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_sample_frequencies_within_four_sigma():
    shots = 20000
    p = _explicit_probs(_random_rho(2, 3, seed=8))
    s = M.sample(p, shots, torch.Generator().manual_seed(1))
    idx = (s * torch.tensor([4, 2, 1])).sum(-1)
    for b in range(2):
        freq = torch.bincount(idx[b], minlength=8).double() / shots
        sigma = torch.sqrt(p[b] * (1 - p[b]) / shots).clamp_min(1 / shots)
        assert bool(((freq - p[b]).abs() <= 4 * sigma).all()), (freq, p[b])


def test_sample_clamps_tiny_negatives():
    p = torch.tensor([[1.0 + 1e-17, -1e-17]], dtype=torch.float64)
    s = M.sample(p, 50, torch.Generator().manual_seed(0))
    assert int(s.sum()) == 0


@pytest.mark.parametrize("shots", [0, -3, 2.5, True])
def test_sample_invalid_shots(shots):
    with pytest.raises(ShapeError, match="shots must be a positive integer"):
        M.sample(torch.ones(1, 2, dtype=torch.float64) / 2, shots)


def test_every_outcome_index_of_trace_vectors():
    """Tr(P rho) over all 16 two-wire Pauli strings of a random state, one at a time."""
    rho = _random_rho(1, 2, seed=99)
    vec = K.to_vector(rho, 2)
    for a, b in itertools.product("IXYZ", repeat=2):
        p = tq.PauliString(a + b, (0, 1), 1.0)
        want = torch.einsum("ij,ji->", rho[0], _matrix(p, 2)).real
        assert math.isclose(float(M.expval(vec, [p], 2)), float(want), abs_tol=1e-13)
