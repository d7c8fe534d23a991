"""Superoperator kernels on vectorized density matrices.

A density matrix ``rho [B, 2**n, 2**n]`` is held as ``[B, 4**n]``: one *ququart* per
wire, whose index is ``2 * row_bit + column_bit`` of that wire, wire 0 most
significant (:func:`to_vector` / :func:`to_matrix`). In this layout a channel on ``k``
wires is a ``4**k x 4**k`` matrix on ``k`` ququarts, so every operation, unitary or
not, is the statevector simulator's dense kernel with local dimension 4 (a unitary
``U`` is the one-Kraus case ``U (x) conj(U)``).

The fast engine (:func:`tinyqml.noise.fusion.run`) holds the same state by its real
Pauli coefficients instead (section "Pauli transfer form" below) and comes back to this
layout at the end (:func:`to_ququart`).

>>> import torch
>>> rho = torch.tensor([[[0.5, 0.5], [0.5, 0.5]]], dtype=torch.complex128)    # |+><+|
>>> v = to_vector(rho, 1); v.real
tensor([[0.5000, 0.5000, 0.5000, 0.5000]], dtype=torch.float64)
>>> torch.equal(to_matrix(v, 1), rho)
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache
from typing import Any, Sequence

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


# --------------------------------------------------------------------------- Pauli transfer form
#
# The fast simulator holds a density matrix by its real Pauli coefficients
# ``r_P = Tr(P rho)`` (``rho = 2**-n sum_P r_P P``), one base-4 digit per wire in the
# order I, X, Y, Z, wire 0 most significant. Every channel and unitary is then a real
# Pauli transfer matrix (PTM): a quarter of the complex arithmetic, half the memory.

#: one wire, Pauli coefficients -> ququart entries (times 1/2): rho00, rho01, rho10, rho11
_TO_QUQUART = ((1, 0, 0, 1), (0, 1, -1j, 0), (0, 1, 1j, 0), (1, 0, 0, -1))
#: one wire, ququart entries -> Pauli coefficients r_I, r_X, r_Y, r_Z
_TO_PAULI = ((1, 0, 0, 1), (0, 1, 1, 0), (0, 1j, -1j, 0), (1, 0, 0, -1))


@lru_cache(maxsize=64)
def pauli_change(k: int, dtype: torch.dtype, device: str = "cpu") -> tuple[Tensor, Tensor]:
    """``(to_pauli, to_ququart)``: the basis changes on ``k`` wires, ``[4**k, 4**k]`` complex."""
    one_p = torch.tensor(_TO_PAULI, dtype=dtype, device=device)
    one_q = torch.tensor(_TO_QUQUART, dtype=dtype, device=device) / 2
    to_p, to_q = one_p, one_q
    for _ in range(k - 1):
        to_p, to_q = torch.kron(to_p, one_p), torch.kron(to_q, one_q)
    return to_p, to_q


def pauli_transfer(s: Tensor, k: int) -> Tensor:
    """The real PTM ``[Bs, 4**k, 4**k]`` of a superoperator ``s`` in ququart order.

    >>> import torch
    >>> x = torch.tensor([[[0, 1], [1, 0]]], dtype=torch.complex128)
    >>> pauli_transfer(unitary_superop(x, 1), 1)[0]          # X flips the signs of Y and Z
    tensor([[ 1.,  0.,  0.,  0.],
            [ 0.,  1.,  0.,  0.],
            [ 0.,  0., -1.,  0.],
            [ 0.,  0.,  0., -1.]], dtype=torch.float64)
    """
    to_p, to_q = pauli_change(k, s.dtype, str(s.device))
    return (to_p @ s @ to_q).real.contiguous()


def pauli_initial(dtype: torch.dtype, device: Any = None) -> Tensor:
    """``|0><0|`` on one wire as Pauli coefficients ``[1, 4]``: ``r_I = r_Z = 1``."""
    return torch.tensor([[1, 0, 0, 1]], dtype=dtype, device=device)


def permute_transfer(m: Tensor, perm: Sequence[int]) -> Tensor:
    """Reorder the wires of a ``k``-wire matrix ``m [Bm, 4**k, 4**k]``: new wire ``j`` is old ``perm[j]``."""
    k = len(perm)
    if list(perm) == list(range(k)):
        return m
    b = m.shape[0]
    t = m.reshape((b,) + (4,) * (2 * k))
    order = [0] + [1 + p for p in perm] + [1 + k + p for p in perm]
    return t.permute(order).reshape(b, 4 ** k, 4 ** k)


def apply_transfer(x: Tensor, m: Tensor, pos: int, nw: int) -> Tensor:
    """Apply ``m [Bm, d, d]`` (``d = 4**k``) to the digits ``pos .. pos + k - 1`` of ``x [Bx, 4**nw]``.

    ``Bm`` and ``Bx`` are each 1 or the batch. The contraction runs on views of ``x``
    (one batched GEMM, no transposes); the digit order is unchanged.
    """
    d = m.shape[-1]
    lead, trail = 4 ** pos, x.shape[1] // (d * 4 ** pos)
    b = max(x.shape[0], m.shape[0])
    if m.shape[0] == 1:
        if trail == 1:
            return (x.reshape(-1, d) @ m[0].transpose(0, 1)).reshape(x.shape[0], -1)
        return torch.matmul(m[0], x.reshape(-1, d, trail)).reshape(x.shape[0], -1)
    if trail == 1:
        return torch.matmul(x.reshape(x.shape[0], lead, d), m.transpose(1, 2)).reshape(b, -1)
    return torch.matmul(m.unsqueeze(1), x.reshape(x.shape[0], lead, d, trail)).reshape(b, -1)


def kron_states(a: Tensor, b: Tensor) -> Tensor:
    """``[B, Na * Nb]``: the product of two factor states ``a [Ba, Na]`` and ``b [Bb, Nb]`` (``a`` leading)."""
    out = a.unsqueeze(2) * b.unsqueeze(1)
    return out.reshape(out.shape[0], -1)


def permute_digits(x: Tensor, perm: Sequence[int]) -> Tensor:
    """``x [B, 4**k]`` with its base-4 digits reordered: new digit ``j`` is old ``perm[j]``."""
    k = len(perm)
    t = x.reshape((x.shape[0],) + (4,) * k).permute([0] + [1 + p for p in perm])
    return t.reshape(x.shape[0], -1)


def to_ququart(x: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """Pauli coefficients ``x [B, 4**n]`` (real) -> the ququart layout (complex ``dtype``).

    >>> import torch
    >>> to_ququart(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), 1, torch.complex64)    # |0><0|
    tensor([[1.+0.j, 0.+0.j, 0.+0.j, 0.+0.j]])
    """
    half = torch.tensor(((0.5, 0, 0, 0.5), (0, 0.5, 0, 0), (0, 0, 0.5, 0), (0.5, 0, 0, -0.5)),
                        dtype=x.dtype, device=x.device)
    for w in range(n):
        t = x.reshape(-1, 4, 4 ** (n - 1 - w))
        x = torch.matmul(half, t).reshape(x.shape[0], -1)
    return finish_ququart(x, n, dtype)


def finish_ququart(x: Tensor, n: int, dtype: torch.dtype, out: Tensor | None = None) -> Tensor:
    """The ququart layout from per-wire coefficients ``(rho00, X/2, Y/2, rho11)`` (real ``[B, 4**n]``):
    per wire ``rho01 = X/2 - i Y/2`` and ``rho10 = X/2 + i Y/2``.

    Without autograd the butterflies run in place on one buffer (``out`` when given, a
    contiguous ``[B, 4**n]`` tensor of ``dtype``); with it, out of place.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _finish_graph(x, n, dtype)
    if out is None:
        out = empty_output(tuple(x.shape), dtype, x.device)
    out.copy_(x)
    for w in range(n):
        v = out.view(-1, 4, 4 ** (n - 1 - w))
        iy = v[:, 2].mul(1j)
        torch.add(v[:, 1], iy, out=v[:, 2])
        v[:, 1].sub_(iy)
    return out


def _finish_graph(x: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    out = x.to(dtype)
    for w in range(n):
        a, px, py, b = out.reshape(-1, 4, 4 ** (n - 1 - w)).unbind(1)
        iy = py * 1j
        out = torch.stack([a, px - iy, px + iy, b], 1).reshape(x.shape[0], -1)
    return out


#: outputs at least this large are backed by transparent huge pages where the OS allows it
HUGE_PAGE_BYTES = 8 * 2 ** 20
_MADV_HUGEPAGE = 14
_HUGE = 2 ** 21


@lru_cache(maxsize=1)
def _madvise() -> Any:
    """libc's ``madvise`` on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def empty_output(shape: tuple[int, ...], dtype: torch.dtype, device: Any = None) -> Tensor:
    """An uninitialised tensor; a large CPU one is advised onto transparent huge pages
    before its first touch (its page faults cost more than the simulation at ``n >= 9``)."""
    out = torch.empty(shape, dtype=dtype, device=device)
    nbytes = out.numel() * out.element_size()
    fn = _madvise() if out.device.type == "cpu" and nbytes >= HUGE_PAGE_BYTES else None
    if fn is not None:
        start = (out.data_ptr() + _HUGE - 1) // _HUGE * _HUGE
        end = (out.data_ptr() + nbytes) // _HUGE * _HUGE
        if end > start:
            fn(start, end - start, _MADV_HUGEPAGE)  # advice only: a refusal changes nothing
    return out
