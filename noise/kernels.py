"""Superoperator kernels on vectorized density matrices.

A density matrix ``rho [B, 2**n, 2**n]`` is held as ``[B, 4**n]``: one *ququart* per
wire, whose index is ``2 * row_bit + column_bit`` of that wire, wire 0 most
significant (:func:`to_vector` / :func:`to_matrix`). In this layout a channel on ``k``
wires is a ``4**k x 4**k`` matrix on ``k`` ququarts, so every operation, unitary or
not, is the statevector simulator's dense kernel with local dimension 4 (a unitary
``U`` is the one-Kraus case ``U (x) conj(U)``).

>>> import torch
>>> rho = torch.tensor([[[0.5, 0.5], [0.5, 0.5]]], dtype=torch.complex128)    # |+><+|
>>> v = to_vector(rho, 1); v.real
tensor([[0.5000, 0.5000, 0.5000, 0.5000]], dtype=torch.float64)
>>> torch.equal(to_matrix(v, 1), rho)
True
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch

Tensor = torch.Tensor


def to_vector(rho: Tensor, n: int) -> Tensor:
    """``[B, 2**n, 2**n]`` -> the ququart layout ``[B, 4**n]``."""
    b = rho.shape[0]
    t = rho.reshape((b,) + (2,) * (2 * n))
    order = [0] + [a for w in range(n) for a in (1 + w, 1 + n + w)]
    return t.permute(order).reshape(b, 4 ** n)


def to_matrix(vec: Tensor, n: int) -> Tensor:
    """The ququart layout ``[B, 4**n]`` -> ``[B, 2**n, 2**n]``."""
    b = vec.shape[0]
    t = vec.reshape((b,) + (2,) * (2 * n))
    order = [0] + [1 + 2 * w for w in range(n)] + [2 + 2 * w for w in range(n)]
    return t.permute(order).reshape(b, 2 ** n, 2 ** n)


def interleave(s: Tensor, k: int) -> Tensor:
    """A ``[Bs, 4**k, 4**k]`` superoperator in ``(rows..., cols...)`` order -> ququart order.

    ``Channel.superoperator()`` and ``U (x) conj(U)`` index ``vec(rho)`` row-major, i.e.
    all row bits then all column bits; the ququart layout pairs them per wire.
    """
    if k == 1:
        return s
    b = s.shape[0]
    t = s.reshape((b,) + (2,) * (4 * k))
    out_order = [a for w in range(k) for a in (1 + w, 1 + k + w)]
    in_order = [2 * k + a for a in out_order]
    return t.permute([0] + out_order + in_order).reshape(b, 4 ** k, 4 ** k)


def unitary_superop(u: Tensor, k: int) -> Tensor:
    """``U (x) conj(U)`` in ququart order for a batch ``[Bu, 2**k, 2**k]`` of unitaries."""
    b, d = u.shape[0], 2 ** k
    s = (u.reshape(b, d, 1, d, 1) * u.conj().reshape(b, 1, d, 1, d)).reshape(b, d * d, d * d)
    return interleave(s, k)


def diagonal_superop(diag: Tensor, k: int) -> Tensor:
    """The diagonal of ``D (x) conj(D)`` in ququart order for diagonals ``[Bd, 2**k]``."""
    b, d = diag.shape[0], 2 ** k
    s = (diag.reshape(b, d, 1) * diag.conj().reshape(b, 1, d)).reshape(b, d * d)
    if k == 1:
        return s
    t = s.reshape((b,) + (2,) * (2 * k))
    order = [a for w in range(k) for a in (1 + w, 1 + k + w)]
    return t.permute([0] + order).reshape(b, 4 ** k)


def apply_superop(state: Tensor, s: Tensor, wires: Sequence[int], n: int) -> Tensor:
    """Apply ``s [Bs, 4**k, 4**k]`` (``Bs`` 1 or the batch) to the ququarts ``wires``."""
    b, k = state.shape[0], len(wires)
    if s.shape[0] != 1 and b == 1:
        state = state.expand(s.shape[0], -1)
        b = s.shape[0]
    if k == 1:
        w = wires[0]
        view = state.reshape(b, 4 ** w, 4, 4 ** (n - 1 - w))
        out = s[0] @ view if s.shape[0] == 1 else s.unsqueeze(1) @ view
        return out.reshape(b, 4 ** n)
    d = 4 ** k
    t = state.reshape((b,) + (4,) * n)
    axes = [1 + w for w in wires]
    last = list(range(n + 1 - k, n + 1))
    t = torch.movedim(t, axes, last)
    moved = t.shape
    flat = t.reshape(b, -1, d)
    out = flat @ s[0].transpose(0, 1) if s.shape[0] == 1 else flat @ s.transpose(1, 2)
    out = torch.movedim(out.reshape(moved), last, axes)
    return out.reshape(b, 4 ** n)


def apply_diagonal(state: Tensor, diag: Tensor, wires: Sequence[int], n: int) -> Tensor:
    """Multiply by a diagonal superoperator ``diag [Bd, 4**k]`` on the ququarts ``wires``."""
    b, k = state.shape[0], len(wires)
    order = sorted(range(k), key=lambda j: wires[j])
    d = diag.reshape((diag.shape[0],) + (4,) * k).permute([0] + [1 + j for j in order])
    shape = [d.shape[0]] + [1] * n
    for w in wires:
        shape[1 + w] = 4
    out = state.reshape((b,) + (4,) * n) * d.reshape(shape)
    return out.reshape(out.shape[0], 4 ** n)


@lru_cache(maxsize=256)
def full_index(local: tuple[int, ...], wires: tuple[int, ...], n: int, device: str = "cpu") -> Tensor:
    """Gather index over ``4**n`` for a permutation ``local`` of the ``4**k`` ququart
    states of ``wires`` (``out[..., j] = in[..., src[j]]``)."""
    k = len(wires)
    idx = torch.arange(4 ** n, device=device)
    loc = torch.zeros_like(idx)
    for w in wires:
        loc = loc * 4 + (idx // 4 ** (n - 1 - w)) % 4
    src_loc = torch.tensor(local, device=device)[loc]
    src = idx.clone()
    for j, w in enumerate(wires):
        p = 4 ** (n - 1 - w)
        digit = (src_loc // 4 ** (k - 1 - j)) % 4
        src = src - ((idx // p) % 4) * p + digit * p
    return src


def permutation_superop(perm: Sequence[int], k: int) -> tuple[int, ...]:
    """The ququart permutation of ``rho -> P rho P^T`` for a basis permutation ``perm``
    (``out[i] = in[perm[i]]``) on ``k`` wires."""
    out = []
    for q in range(4 ** k):
        r = c = 0
        for j in range(k):
            digit = (q >> (2 * (k - 1 - j))) & 3
            r = (r << 1) | (digit >> 1)
            c = (c << 1) | (digit & 1)
        pr, pc = perm[r], perm[c]
        src = 0
        for j in range(k):
            bit_r = (pr >> (k - 1 - j)) & 1
            bit_c = (pc >> (k - 1 - j)) & 1
            src = (src << 2) | (bit_r << 1) | bit_c
        out.append(src)
    return tuple(out)


@lru_cache(maxsize=64)
def diagonal_positions(n: int, device: str = "cpu") -> Tensor:
    """Positions of ``rho[i, i]`` in the ququart layout, in basis order (wire 0 MSB)."""
    idx = torch.arange(2 ** n, device=device)
    out = torch.zeros_like(idx)
    for w in range(n):
        bit = (idx >> (n - 1 - w)) & 1
        out = out * 4 + 3 * bit
    return out


def initial_state(n: int, dtype: torch.dtype, device: torch.device | None) -> Tensor:
    """``|0...0><0...0|`` in the ququart layout, ``[1, 4**n]``."""
    v = torch.zeros(1, 4 ** n, dtype=dtype, device=device)
    v[0, 0] = 1
    return v
