"""Every fast kernel equals the dense fallback; the matrix gradients equal autograd's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tinyqml.qml as tq
from tinyqml.qml import gates as G
from tinyqml.qml import kernels as K

DT = torch.complex128
TOL = 1e-12


def rand_state(gen: torch.Generator, b: int, n: int, dtype: torch.dtype = DT) -> torch.Tensor:
    re = torch.randn(b, 2**n, generator=gen, dtype=torch.float64)
    im = torch.randn(b, 2**n, generator=gen, dtype=torch.float64)
    psi = torch.complex(re, im)
    return (psi / psi.norm(dim=1, keepdim=True)).to(dtype)


def rand_unitary(gen: torch.Generator, b: int, d: int) -> torch.Tensor:
    a = torch.complex(torch.randn(b, d, d, generator=gen, dtype=torch.float64),
                      torch.randn(b, d, d, generator=gen, dtype=torch.float64))
    q, r = torch.linalg.qr(a)
    ph = torch.diagonal(r, dim1=-2, dim2=-1)
    return q * (ph / ph.abs()).unsqueeze(-2)


def rand_matrix(gen: torch.Generator, b: int, d: int) -> torch.Tensor:
    """A general (non-unitary) complex matrix: kernels must not rely on unitarity."""
    return torch.complex(torch.randn(b, d, d, generator=gen, dtype=torch.float64),
                         torch.randn(b, d, d, generator=gen, dtype=torch.float64))


def rand_wires(gen: torch.Generator, n: int, k: int) -> list[int]:
    return [int(w) for w in torch.randperm(n, generator=gen)[:k]]


def _arity(name: str, n: int, gen: torch.Generator) -> int:
    g = G.GATES[name]
    if g.num_wires:
        return g.num_wires
    lo = 2 if name == "MCX" else 1
    hi = min(n, 3) if name == "QubitUnitary" else n
    return int(torch.randint(lo, hi + 1, (1,), generator=gen))


# --------------------------------------------------------------------------- apply_gate fast vs dense


GATE_CASES = [(name, n) for name in sorted(G.GATES) for n in (1, 3, 5)
              if (G.GATES[name].num_wires or G.GATES[name].min_wires) <= n]


def test_gate_cases_cover_every_gate() -> None:
    assert {name for name, _ in GATE_CASES} == set(G.GATES)


@pytest.mark.parametrize(("name", "n"), GATE_CASES)
def test_apply_gate_fast_equals_dense(name: str, n: int) -> None:
    gate = G.GATES[name]
    gen = torch.Generator().manual_seed(n * 1000 + sum(map(ord, name)))
    for trial in range(6):
        k = _arity(name, n, gen)
        wires = rand_wires(gen, n, k)
        b = 4
        psi = rand_state(gen, b, n)
        # batched ([B, P]) and shared ([1, P]) parameters
        pb = 1 if trial % 2 else b
        params = torch.rand(pb, gate.num_params, generator=gen, dtype=torch.float64) * 12 - 6
        u = rand_unitary(gen, 1, 2**k)[0] if gate is G.QubitUnitary else None
        fast = K.apply_gate(psi, gate, params, wires, n, unitary=u, fast=True)
        dense = K.apply_gate(psi, gate, params, wires, n, unitary=u, fast=False)
        assert fast.shape == dense.shape == (b, 2**n)
        assert (fast - dense).abs().max() <= TOL, f"{name} on {wires}"
        # and the dense fallback really is the gate matrix on those wires (explicit kron)
        m = K.gate_matrix(gate, params, k, DT, u)
        full = _embed(m, wires, n)
        ref = torch.einsum("bij,bj->bi", full.expand(b, -1, -1), psi)
        assert (dense - ref).abs().max() <= TOL


def _embed(m: torch.Tensor, wires: list[int], n: int) -> torch.Tensor:
    """Full 2**n matrix of a k-wire matrix on ``wires`` (wire 0 MSB), built by index arithmetic."""
    k = len(wires)
    d = 2**n
    idx = np.arange(d)
    bits = (idx[:, None] >> (n - 1 - np.arange(n))[None, :]) & 1  # [d, n]
    loc = np.zeros(d, dtype=np.int64)
    for w in wires:
        loc = (loc << 1) | bits[:, w]
    others = [w for w in range(n) if w not in wires]
    rest = np.zeros(d, dtype=np.int64)
    for w in others:
        rest = (rest << 1) | bits[:, w]
    same_rest = torch.as_tensor(rest[:, None] == rest[None, :])
    full = m[:, torch.as_tensor(loc)[:, None], torch.as_tensor(loc)[None, :]]
    return full * same_rest


def test_embed_helper_agrees_with_kron() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = rand_matrix(gen, 1, 2), rand_matrix(gen, 1, 4)
    # wires (0,) then (1, 2): kron order
    full = _embed(a, [0], 3) @ _embed(b, [1, 2], 3)
    assert torch.allclose(full[0], torch.kron(a[0], b[0]))
    swap = _embed(G.SWAP.matrix(torch.zeros(1, 0), 2, DT), [0, 1], 2)
    assert torch.allclose(_embed(b, [1, 0], 2), swap @ b @ swap)


# --------------------------------------------------------------------------- individual kernels


@pytest.mark.parametrize("n", [1, 2, 4, 6])
@pytest.mark.parametrize("batched", [False, True])
def test_apply_single_equals_dense(n: int, batched: bool) -> None:
    gen = torch.Generator().manual_seed(10 + n)
    b = 3
    psi = rand_state(gen, b, n)
    for wire in range(n):
        m = rand_matrix(gen, b if batched else 1, 2)
        assert (K.apply_single(psi, m, wire, n) - K.apply_dense(psi, m, [wire], n)).abs().max() <= TOL


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("batched", [False, True])
def test_apply_diagonal_equals_dense(n: int, batched: bool) -> None:
    gen = torch.Generator().manual_seed(20 + n)
    b = 3
    psi = rand_state(gen, b, n)
    for k in range(1, n + 1):
        for _ in range(3):
            wires = rand_wires(gen, n, k)  # unsorted orders included
            diag = torch.polar(torch.ones(b if batched else 1, 2**k, dtype=torch.float64),
                               torch.rand(b if batched else 1, 2**k, generator=gen, dtype=torch.float64) * 6)
            got = K.apply_diagonal(psi, diag, wires, n)
            ref = K.apply_dense(psi, torch.diag_embed(diag), wires, n)
            assert (got - ref).abs().max() <= TOL, wires
            # lift_diagonal gives the same full diagonal
            full = K.lift_diagonal(diag, wires, n)
            assert (psi * full - ref).abs().max() <= TOL


@pytest.mark.parametrize("n", [2, 3, 5])
def test_apply_permutation_equals_dense(n: int) -> None:
    gen = torch.Generator().manual_seed(30 + n)
    psi = rand_state(gen, 3, n)
    for k in range(1, min(n, 3) + 1):
        for _ in range(4):
            wires = rand_wires(gen, n, k)
            perm = tuple(int(i) for i in torch.randperm(2**k, generator=gen))
            # the permutation matrix with out[i] = in[perm[i]]
            m = torch.zeros(1, 2**k, 2**k, dtype=DT)
            m[0, torch.arange(2**k), torch.tensor(perm)] = 1
            src = K.full_permutation(perm, tuple(wires), n)
            got = K.apply_permutation(psi, src)
            assert (got - K.apply_dense(psi, m, wires, n)).abs().max() <= TOL, (wires, perm)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("batched", [False, True])
def test_apply_controlled_equals_dense(n: int, batched: bool) -> None:
    gen = torch.Generator().manual_seed(40 + n)
    b = 3
    psi = rand_state(gen, b, n)
    for controls in range(1, n):
        for kt in range(1, n - controls + 1):
            wires = rand_wires(gen, n, controls + kt)
            base = rand_matrix(gen, b if batched else 1, 2**kt)
            d = 2 ** (controls + kt)
            full = torch.eye(d, dtype=DT).repeat(base.shape[0], 1, 1)
            full[:, d - 2**kt :, d - 2**kt :] = base
            got = K.apply_controlled(psi, base, wires, controls, n)
            ref = K.apply_dense(psi, full, wires, n)
            assert (got - ref).abs().max() <= TOL, (wires, controls)


def test_kernels_do_not_modify_their_input() -> None:
    gen = torch.Generator().manual_seed(5)
    psi = rand_state(gen, 2, 3)
    keep = psi.clone()
    m2, m4 = rand_matrix(gen, 1, 2), rand_matrix(gen, 1, 4)
    K.apply_single(psi, m2, 1, 3)
    K.apply_dense(psi, m4, [2, 0], 3)
    K.apply_diagonal(psi, torch.ones(1, 4, dtype=DT) * 2, [1, 2], 3)
    K.apply_controlled(psi, m2, [2, 0], 1, 3)
    K.apply_permutation(psi, K.full_permutation((1, 0), (1,), 3))
    assert torch.equal(psi, keep)


def test_complex64_kernels_match_dense() -> None:
    gen = torch.Generator().manual_seed(6)
    psi = rand_state(gen, 2, 4, torch.complex64)
    for name in ("RX", "CRY", "CZ", "CCX", "MultiRZ", "U", "CU", "ECR"):
        gate = G.GATES[name]
        k = gate.num_wires or 3
        wires = rand_wires(gen, 4, k)
        p = torch.rand(2, gate.num_params, generator=gen, dtype=torch.float32)
        fast = K.apply_gate(psi, gate, p, wires, 4)
        dense = K.apply_gate(psi, gate, p, wires, 4, fast=False)
        assert fast.dtype == torch.complex64
        assert (fast - dense).abs().max() < 1e-5


# --------------------------------------------------------------------------- matrix gradients


def _loss_and_grads(apply, psi: torch.Tensor, m: torch.Tensor, gen: torch.Generator):
    """A real loss of the output; returns (autograd dL/dM, dL/dout)."""
    m = m.clone().requires_grad_(True)
    out = apply(psi, m)
    out.retain_grad()
    c = torch.complex(torch.randn(out.shape, generator=gen, dtype=torch.float64),
                      torch.randn(out.shape, generator=gen, dtype=torch.float64))
    # mixes a linear and a quadratic (|.|^2) term, so the loss is not holomorphic
    loss = (c * out).real.sum() + (out.abs() ** 2 * c.real).sum()
    loss.backward()
    return m.grad, out.grad


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("n", [1, 3, 5])
def test_dense_grad_equals_autograd(n: int, batched: bool) -> None:
    gen = torch.Generator().manual_seed(50 + n)
    b = 3
    for k in range(1, min(n, 3) + 1):
        wires = rand_wires(gen, n, k)
        psi = rand_state(gen, b, n)
        m = rand_matrix(gen, b if batched else 1, 2**k)
        gm, gout = _loss_and_grads(lambda s, mm: K.apply_dense(s, mm, wires, n), psi, m, gen)
        ours = K.dense_grad(gout, psi, wires, n, batched)
        assert ours.shape == gm.shape
        assert (ours - gm).abs().max() <= 1e-10, wires


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("n", [1, 2, 4])
def test_single_grad_equals_autograd(n: int, batched: bool) -> None:
    gen = torch.Generator().manual_seed(60 + n)
    b = 3
    for wire in range(n):
        psi = rand_state(gen, b, n)
        m = rand_matrix(gen, b if batched else 1, 2)
        gm, gout = _loss_and_grads(lambda s, mm: K.apply_single(s, mm, wire, n), psi, m, gen)
        ours = K.single_grad(gout, psi, wire, n, batched)
        assert ours.shape == gm.shape
        assert (ours - gm).abs().max() <= 1e-10, wire


def test_autograd_through_fast_kernels_equals_dense() -> None:
    """Gradients w.r.t. gate parameters are the same through the fast and the dense kernels."""
    gen = torch.Generator().manual_seed(70)
    n = 4
    psi = rand_state(gen, 2, n)
    for name in ("RX", "RZ", "P", "U", "U2", "CRX", "CRZ", "CP", "CU", "RXX", "RZZ", "RZX", "MultiRZ"):
        gate = G.GATES[name]
        k = gate.num_wires or 3
        wires = rand_wires(gen, n, k)
        grads = []
        for fast in (True, False):
            p = (torch.rand(2, gate.num_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 6)
            p.requires_grad_(True)
            out = K.apply_gate(psi, gate, p, wires, n, fast=fast)
            (out.real[:, :5].sum() + out.imag[:, 3:].sum()).backward()
            grads.append(p.grad)
        assert (grads[0] - grads[1]).abs().max() <= 1e-12, name


def test_kernel_registry_has_every_structure() -> None:
    structures = {g.structure for g in G.GATES.values()}
    assert structures <= set(K.KERNELS)
    assert tq.GATES is G.GATES
