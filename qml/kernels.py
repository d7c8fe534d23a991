"""Gate kernels: pure functions that apply one gate to a batched state.

The state is a tensor of shape ``[B, 2**n]`` (wire 0 most significant). A kernel
takes the state and the gate's data and returns a new state; nothing is modified
in place, so autograd can differentiate through every kernel.

Kernels are chosen by the gate's ``structure`` through :data:`KERNELS` (a small
registry with :func:`apply_dense` as the generic fallback). Every fast kernel is
tested against the dense fallback.

>>> import torch
>>> from tinyqml.qml import kernels, gates
>>> psi = torch.zeros(1, 4, dtype=torch.complex128); psi[0, 0] = 1
>>> h = gates.H.matrix(torch.zeros(1, 0), 1, torch.complex128)
>>> kernels.apply_single(psi, h, 0, 2).real
tensor([[0.7071, 0.0000, 0.7071, 0.0000]], dtype=torch.float64)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

import torch

from tinyqml.qml import gates as G

Tensor = torch.Tensor


# --------------------------------------------------------------------------- dense


def apply_dense(state: Tensor, matrix: Tensor, wires: Sequence[int], n: int) -> Tensor:
    """Generic fallback: any ``[Bm, 2**k, 2**k]`` matrix on any ``k`` wires.

    Moves the target axes last, multiplies, moves them back.
    """
    b, k = state.shape[0], len(wires)
    d = 2**k
    t = state.reshape((b,) + (2,) * n)
    axes = [1 + w for w in wires]
    t = torch.movedim(t, axes, list(range(n + 1 - k, n + 1)))
    moved_shape = t.shape
    flat = t.reshape(b, -1, d)
    if matrix.shape[0] == 1:
        out = flat @ matrix[0].transpose(0, 1)
    else:
        out = flat @ matrix.transpose(1, 2)
    out = out.reshape(moved_shape)
    out = torch.movedim(out, list(range(n + 1 - k, n + 1)), axes)
    return out.reshape(b, 2**n)


def dense_grad(g_out: Tensor, psi_in: Tensor, wires: Sequence[int], n: int, batched: bool,
               x_is_conj: bool = False) -> Tensor:
    """Gradient of a real loss w.r.t. the matrix of :func:`apply_dense` (torch's convention).

    For ``y = M x`` on the moved axes, ``dL/dM = g_y x^H``, summed over the other axes
    (and over the batch when the matrix is shared). ``x_is_conj``: ``psi_in`` is already conjugated.
    """
    b, k = psi_in.shape[0], len(wires)
    d = 2**k
    axes = [1 + w for w in wires]
    last = list(range(n + 1 - k, n + 1))
    g = torch.movedim(g_out.reshape((b,) + (2,) * n), axes, last).reshape(b, -1, d)
    x = torch.movedim(psi_in.reshape((b,) + (2,) * n), axes, last).reshape(b, -1, d)
    xc = x if x_is_conj else x.conj()
    if batched:
        return g.transpose(1, 2) @ xc
    return (g.reshape(-1, d).transpose(0, 1) @ xc.reshape(-1, d)).unsqueeze(0)


# --------------------------------------------------------------------------- single wire


def apply_single(state: Tensor, matrix: Tensor, wire: int, n: int) -> Tensor:
    """A ``[Bm, 2, 2]`` matrix on one wire, as a matmul on the ``[.., 2, R]`` view."""
    b = state.shape[0]
    left, right = 2**wire, 2 ** (n - wire - 1)
    if matrix.shape[0] == 1:
        out = matrix[0] @ state.reshape(b * left, 2, right)
    else:
        out = matrix.unsqueeze(1) @ state.reshape(b, left, 2, right)
    return out.reshape(b, 2**n)


def single_grad(g_out: Tensor, psi_in: Tensor, wire: int, n: int, batched: bool, x_is_conj: bool = False) -> Tensor:
    """Gradient w.r.t. the matrix of :func:`apply_single` (``x_is_conj``: ``psi_in`` is already conjugated)."""
    b = psi_in.shape[0]
    left, right = 2**wire, 2 ** (n - wire - 1)
    g = g_out.reshape(b, left, 2, right)
    x = psi_in.reshape(b, left, 2, right)
    xc = x if x_is_conj else x.conj()
    if batched:
        return (g @ xc.transpose(-1, -2)).sum(1)
    gx = g.reshape(b * left, 2, right) @ xc.reshape(b * left, 2, right).transpose(-1, -2)
    return gx.sum(0, keepdim=True)


# --------------------------------------------------------------------------- diagonal


@lru_cache(maxsize=512)
def local_index(wires: tuple[int, ...], n: int, device: str = "cpu") -> Tensor:
    """For every basis index of ``n`` wires, the index of its bits on ``wires`` (first wire MSB)."""
    idx = torch.arange(2**n, device=device)
    out = torch.zeros_like(idx)
    for w in wires:
        out = (out << 1) | ((idx >> (n - 1 - w)) & 1)
    return out


def lift_diagonal(diag: Tensor, wires: Sequence[int], n: int) -> Tensor:
    """Expand a ``[Bm, 2**k]`` diagonal on ``wires`` to the full ``[Bm, 2**n]`` diagonal."""
    return diag[:, local_index(tuple(wires), n, str(diag.device))]


def apply_diagonal(state: Tensor, diag: Tensor, wires: Sequence[int], n: int) -> Tensor:
    """A diagonal gate as an elementwise product (broadcast over the untouched axes)."""
    b, k = state.shape[0], len(wires)
    order = sorted(range(k), key=lambda j: wires[j])
    d = diag.reshape((diag.shape[0],) + (2,) * k).permute([0] + [1 + j for j in order])
    shape = [d.shape[0]] + [1] * n
    for w in wires:
        shape[1 + w] = 2
    return (state.reshape((b,) + (2,) * n) * d.reshape(shape)).reshape(b, 2**n)


# --------------------------------------------------------------------------- permutation


@lru_cache(maxsize=512)
def full_permutation(perm: tuple[int, ...], wires: tuple[int, ...], n: int, device: str = "cpu") -> Tensor:
    """Index vector ``src`` with ``out[:, j] = in[:, src[j]]`` for a local permutation on ``wires``."""
    k = len(wires)
    idx = torch.arange(2**n, device=device)
    loc = local_index(wires, n, device)
    src_loc = torch.tensor(perm, device=device)[loc]
    mask = 0
    for w in wires:
        mask |= 1 << (n - 1 - w)
    src = idx & ~mask
    for j, w in enumerate(wires):
        bit = (src_loc >> (k - 1 - j)) & 1
        src = src | (bit << (n - 1 - w))
    return src


def apply_permutation(state: Tensor, src: Tensor) -> Tensor:
    """A basis permutation as an index move (gather along the basis axis)."""
    return state.index_select(1, src)


# --------------------------------------------------------------------------- controlled


def apply_controlled(state: Tensor, base_matrix: Tensor, wires: Sequence[int], controls: int, n: int) -> Tensor:
    """Apply ``base_matrix`` to the target wires on the slice where every control is 1.

    The untouched slices are copied through; only the controlled slice is multiplied.
    """
    b = state.shape[0]
    t = state.reshape((b,) + (2,) * n)
    ctrl, targets = wires[:controls], list(wires[controls:])
    ctrl_axes = sorted(1 + c for c in ctrl)
    sub = t
    for ax in reversed(ctrl_axes):  # select the all-ones slice, last axis first keeps indices valid
        sub = sub.select(ax, 1)
    rest = [w for w in range(n) if w not in ctrl]
    sub_targets = [rest.index(w) for w in targets]
    new_sub = apply_dense(sub.reshape(b, -1), base_matrix, sub_targets, n - controls).reshape(sub.shape)
    out = t.clone()
    idx: list[slice | int] = [slice(None)] * (n + 1)
    for ax in ctrl_axes:
        idx[ax] = 1
    out[tuple(idx)] = new_sub
    return out.reshape(b, 2**n)


# --------------------------------------------------------------------------- dispatch


def gate_matrix(gate: G.Gate, params: Tensor, k: int, dtype: torch.dtype, unitary: Tensor | None = None) -> Tensor:
    """The gate's batched matrix ``[Bm, 2**k, 2**k]`` (``unitary`` for QubitUnitary)."""
    if gate is G.QubitUnitary:
        assert unitary is not None
        return unitary.to(dtype).unsqueeze(0)
    return gate.matrix(params, k, dtype)


def _k_dense(state: Tensor, gate: G.Gate, params: Tensor, wires: Sequence[int], n: int,
             dtype: torch.dtype, unitary: Tensor | None) -> Tensor:
    m = gate_matrix(gate, params, len(wires), dtype, unitary)
    if len(wires) == 1:
        return apply_single(state, m, wires[0], n)
    if gate.controls and gate.base is not None:
        bm = gate.base.matrix(params, len(wires) - gate.controls, dtype)
        return apply_controlled(state, bm, wires, gate.controls, n)
    return apply_dense(state, m, wires, n)


def _k_diagonal(state: Tensor, gate: G.Gate, params: Tensor, wires: Sequence[int], n: int,
                dtype: torch.dtype, unitary: Tensor | None) -> Tensor:
    assert gate.diagonal is not None
    return apply_diagonal(state, gate.diagonal(params, len(wires), dtype), wires, n)


def _k_permutation(state: Tensor, gate: G.Gate, params: Tensor, wires: Sequence[int], n: int,
                   dtype: torch.dtype, unitary: Tensor | None) -> Tensor:
    assert gate.permutation is not None
    src = full_permutation(gate.permutation(len(wires)), tuple(wires), n, str(state.device))
    return apply_permutation(state, src)


KernelFn = Callable[[Tensor, G.Gate, Tensor, Sequence[int], int, torch.dtype, "Tensor | None"], Tensor]

#: structure -> kernel; unknown structures use the dense fallback
KERNELS: dict[str, KernelFn] = {
    "dense": _k_dense,
    "diagonal": _k_diagonal,
    "permutation": _k_permutation,
}


def apply_gate(state: Tensor, gate: G.Gate, params: Tensor, wires: Sequence[int], n: int,
               unitary: Tensor | None = None, fast: bool = True) -> Tensor:
    """Apply one gate with its registered kernel (``fast=False``: always the dense fallback)."""
    dtype = state.dtype
    if not fast:
        return apply_dense(state, gate_matrix(gate, params, len(wires), dtype, unitary), wires, n)
    return KERNELS.get(gate.structure, _k_dense)(state, gate, params, wires, n, dtype, unitary)
