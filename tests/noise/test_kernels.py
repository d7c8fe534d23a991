"""Tests of tinyqml.noise.kernels: the ququart layout and the superoperator kernels.

Every kernel is checked against the plain ``[B, 2**n, 2**n]`` form written out in the
test: ``U rho U^dagger`` with ``U`` embedded by an explicit permutation of ``U (x) I``,
and ``sum_k K rho K^dagger`` through :func:`tinyqml.noise.channels.apply_channel`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tinyqml.noise import channels as C
from tinyqml.noise import kernels as K

DT = torch.complex128


def _random_rho(batch: int, n: int, seed: int, dtype=DT) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = 2 ** n
    a = torch.randn(batch, d, d, generator=g, dtype=torch.float64) + 1j * torch.randn(batch, d, d, generator=g, dtype=torch.float64)
    rho = a @ a.conj().transpose(-1, -2)
    rho = rho / rho.diagonal(dim1=-2, dim2=-1).sum(-1).real[:, None, None]
    return rho.to(dtype)


def _random_unitary(batch: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = 2 ** k
    a = torch.randn(batch, d, d, generator=g, dtype=torch.float64) + 1j * torch.randn(batch, d, d, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * (torch.diagonal(r, dim1=-2, dim2=-1) / torch.diagonal(r, dim1=-2, dim2=-1).abs()).unsqueeze(-2)


def _embed(op: torch.Tensor, wires: list[int], n: int) -> torch.Tensor:
    """Full ``[2**n, 2**n]`` matrix of ``op`` acting on ``wires`` (first listed wire = op's MSB)."""
    k = len(wires)
    full = torch.kron(op.contiguous(), torch.eye(2 ** (n - k), dtype=op.dtype))
    order = list(wires) + [w for w in range(n) if w not in wires]
    inv = [order.index(w) for w in range(n)]
    t = full.reshape([2] * (2 * n)).permute(inv + [n + i for i in inv])
    return t.reshape(2 ** n, 2 ** n)


def _conj_by(rho: torch.Tensor, u: torch.Tensor, wires: list[int], n: int) -> torch.Tensor:
    """``U rho U^dagger`` with a batch of ``U`` (``[Bu, 2**k, 2**k]``, Bu 1 or the batch)."""
    full = torch.stack([_embed(m, wires, n) for m in u])
    return full @ rho @ full.conj().transpose(-1, -2)


# ------------------------------------------------------------- layout

@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_vector_layout_is_interleaved_row_and_column_bits(n):
    rho = _random_rho(2, n, seed=n)
    v = K.to_vector(rho, n)
    assert v.shape == (2, 4 ** n)
    d = 2 ** n
    for r, c in itertools.product(range(d), repeat=2):
        q = 0
        for w in range(n):   # wire 0 most significant; ququart digit = 2 * row_bit + col_bit
            rb, cb = (r >> (n - 1 - w)) & 1, (c >> (n - 1 - w)) & 1
            q = 4 * q + 2 * rb + cb
        assert torch.equal(v[:, q], rho[:, r, c])
    assert torch.equal(K.to_matrix(v, n), rho)


def test_diagonal_positions_and_initial_state():
    for n in (1, 2, 3, 5):
        rho = _random_rho(1, n, seed=10 + n)
        pos = K.diagonal_positions(n)
        assert torch.equal(K.to_vector(rho, n)[0, pos], rho[0].diagonal())
        init = K.initial_state(n, DT, None)
        want = torch.zeros(1, 2 ** n, 2 ** n, dtype=DT)
        want[0, 0, 0] = 1
        assert torch.equal(K.to_matrix(init, n), want)
    assert K.initial_state(2, torch.complex64, None).dtype == torch.complex64


@pytest.mark.parametrize("k", [1, 2, 3])
def test_interleave_reorders_row_major_superoperator(k):
    ch = C.kraus([m for m in _random_unitary(1, k, seed=k)])
    s = K.interleave(ch.superoperator().unsqueeze(0), k)
    rho = _random_rho(3, k, seed=20 + k)
    got = K.to_matrix(K.to_vector(rho, k) @ s[0].T, k)   # s acts on the ququart vector
    want = C.apply_channel(rho, ch, list(range(k)), k)
    assert torch.allclose(got, want, atol=1e-12)


# ------------------------------------------------------------- dense superoperators

CASES = [  # (n, wires)
    (1, [0]), (3, [0]), (3, [2]), (4, [1]),
    (2, [0, 1]), (2, [1, 0]), (4, [3, 1]), (4, [0, 2]),
    (3, [2, 0, 1]), (4, [1, 3, 0]),
]


@pytest.mark.parametrize("n,wires", CASES)
@pytest.mark.parametrize("bs,b", [(1, 1), (1, 3), (3, 3), (3, 1)], ids=["shared1", "shared", "batched", "expand"])
def test_unitary_superop_equals_conjugation(n, wires, bs, b):
    k = len(wires)
    u = _random_unitary(bs, k, seed=n * 7 + k + bs)
    rho = _random_rho(b, n, seed=n + 100 * b)
    out = K.apply_superop(K.to_vector(rho, n), K.unitary_superop(u, k), wires, n)
    assert out.shape == (max(b, bs), 4 ** n)
    want = _conj_by(rho, u, wires, n)
    assert torch.allclose(K.to_matrix(out, n), want, atol=1e-12)


@pytest.mark.parametrize("n,wires", CASES)
def test_channel_superop_equals_apply_channel(n, wires):
    k = len(wires)
    rng = np.random.default_rng(n + 10 * k)
    d = 2 ** k
    a = rng.normal(size=(3 * d, d)) + 1j * rng.normal(size=(3 * d, d))
    q, _ = np.linalg.qr(a)
    ch = C.kraus([torch.tensor(q[i * d:(i + 1) * d]) for i in range(3)])
    s = K.interleave(ch.superoperator().unsqueeze(0), k)
    rho = _random_rho(2, n, seed=3 * n + k)
    out = K.to_matrix(K.apply_superop(K.to_vector(rho, n), s, wires, n), n)
    assert torch.allclose(out, C.apply_channel(rho, ch, wires, n), atol=1e-12)


def test_apply_superop_complex64():
    n, wires = 3, [2, 0]
    u = _random_unitary(1, 2, seed=1)
    rho = _random_rho(2, n, seed=2)
    out = K.apply_superop(K.to_vector(rho.to(torch.complex64), n), K.unitary_superop(u, 2).to(torch.complex64), wires, n)
    assert out.dtype == torch.complex64
    assert torch.allclose(K.to_matrix(out, n).to(DT), _conj_by(rho, u, wires, n), atol=1e-5)


# ------------------------------------------------------------- diagonals

@pytest.mark.parametrize("n,wires", CASES)
@pytest.mark.parametrize("bs,b", [(1, 2), (2, 2), (2, 1)], ids=["shared", "batched", "expand"])
def test_diagonal_superop_equals_conjugation(n, wires, bs, b):
    k = len(wires)
    g = torch.Generator().manual_seed(n + k + bs)
    phases = torch.rand(bs, 2 ** k, generator=g, dtype=torch.float64) * 6.0
    diag = torch.exp(1j * phases)
    rho = _random_rho(b, n, seed=50 + n + b)
    out = K.apply_diagonal(K.to_vector(rho, n), K.diagonal_superop(diag, k), wires, n)
    assert out.shape == (max(b, bs), 4 ** n)
    want = _conj_by(rho, torch.diag_embed(diag), wires, n)
    assert torch.allclose(K.to_matrix(out, n), want, atol=1e-12)


def test_diagonal_superop_is_the_diagonal_of_the_unitary_superop():
    g = torch.Generator().manual_seed(5)
    for k in (1, 2, 3):
        diag = torch.exp(1j * torch.rand(2, 2 ** k, generator=g, dtype=torch.float64) * 6)
        full = K.unitary_superop(torch.diag_embed(diag), k)
        assert torch.allclose(torch.diagonal(full, dim1=1, dim2=2), K.diagonal_superop(diag, k), atol=1e-15)
        off = full - torch.diag_embed(torch.diagonal(full, dim1=1, dim2=2))
        assert float(off.abs().max()) == 0.0


def test_dephasing_channel_is_diagonal_in_ququart_layout():
    n, wires = 3, [1]
    ch = C.phase_damping(0.35)
    s = K.interleave(ch.superoperator().unsqueeze(0), 1)[0]
    assert float((s - torch.diag(torch.diagonal(s))).abs().max()) == 0.0
    rho = _random_rho(2, n, seed=4)
    out = K.apply_diagonal(K.to_vector(rho, n), torch.diagonal(s).unsqueeze(0), wires, n)
    assert torch.allclose(K.to_matrix(out, n), C.apply_channel(rho, ch, wires, n), atol=1e-12)


# ------------------------------------------------------------- permutations

def _perm_matrix(perm) -> torch.Tensor:
    d = len(perm)
    m = torch.zeros(d, d, dtype=DT)
    m[torch.arange(d), torch.tensor(perm)] = 1    # out[i] = in[perm[i]]
    return m


@pytest.mark.parametrize("n,wires", CASES)
def test_permutation_superop_equals_conjugation(n, wires):
    k = len(wires)
    perm = tuple(int(v) for v in np.random.default_rng(n * 3 + k).permutation(2 ** k))
    local = K.permutation_superop(perm, k)
    assert sorted(local) == list(range(4 ** k))
    idx = K.full_index(local, tuple(wires), n)
    assert sorted(idx.tolist()) == list(range(4 ** n))
    rho = _random_rho(2, n, seed=n + 7 * k)
    out = K.to_vector(rho, n).index_select(1, idx)
    want = _conj_by(rho, _perm_matrix(perm).unsqueeze(0), wires, n)
    assert torch.equal(K.to_matrix(out, n), want)


def test_permutation_superop_of_cx_matches_unitary_superop():
    perm = (0, 1, 3, 2)
    local = K.permutation_superop(perm, 2)
    s = K.unitary_superop(_perm_matrix(perm).unsqueeze(0), 2)[0]
    # s is the permutation matrix of the ququart states: out[j] = in[local[j]]
    assert torch.equal(s, torch.eye(16, dtype=DT)[list(local)])
