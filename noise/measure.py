"""Measurements on vectorized density matrices, readout errors and their mitigation.

States are in the ququart layout of :mod:`tinyqml.noise.kernels`. ``Tr(P rho)`` of a
Pauli string is one contraction with a product vector; diagonal observables read the
probabilities ``rho[i, i]``. Readout errors act on measured probabilities as a product
of per-qubit confusion matrices (columns = true state); :func:`mitigate_readout`
applies their inverses.

>>> import torch
>>> from tinyqml.noise.channels import ReadoutError
>>> p = torch.tensor([[1.0, 0.0]], dtype=torch.float64)              # |0> measured on one wire
>>> noisy = apply_readout(p, [ReadoutError(p0_given_1=0.1, p1_given_0=0.05)])
>>> noisy
tensor([[0.9500, 0.0500]], dtype=torch.float64)
>>> mitigate_readout(noisy, [ReadoutError(0.1, 0.05)]).round(decimals=12)
tensor([[1., 0.]], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Sequence

import torch

from tinyqml.noise import kernels as K
from tinyqml.noise.channels import ReadoutError
from tinyqml.noise.errors import NoiseParameterError
from tinyqml.qml import measure as QM
from tinyqml.qml.errors import ShapeError, WireError

Tensor = torch.Tensor

# p_w[(r, c)] = P[c, r]: Tr(P rho) = sum over ququarts of rho_q * prod_w p_w
_TRACE_VECTORS = {
    "I": (1, 0, 0, 1),
    "X": (0, 1, 1, 0),
    "Y": (0, 1j, -1j, 0),
    "Z": (1, 0, 0, -1),
}


def diagonal(state: Tensor, n: int) -> Tensor:
    """The probabilities ``rho[i, i]`` (real, ``[B, 2**n]``)."""
    return state.index_select(1, K.diagonal_positions(n, str(state.device))).real


marginal = QM.marginal


def _trace_vector(p: QM.PauliString, n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    letters = {w: c for c, w in zip(p.paulis, p.wires)}
    out = torch.ones(1, dtype=dtype, device=device)
    for w in range(n):
        v = torch.tensor(_TRACE_VECTORS[letters.get(w, "I")], dtype=dtype, device=device)
        out = torch.kron(out, v)
    return out * p.coeff


def expval(state: Tensor, observables: Sequence[QM.Observable], n: int) -> Tensor:
    """``Tr(O rho)`` for Pauli strings / Hamiltonians, ``[B, n_obs]`` (real)."""
    if state.dim() != 2 or state.shape[1] != 4 ** n:
        raise ShapeError(f"state must have shape [batch, {4 ** n}] (ququart layout), got {list(state.shape)}")
    for ob in observables:
        for t in (ob.terms if isinstance(ob, QM.Hamiltonian) else (ob,)):
            if not isinstance(t, QM.PauliString):
                raise QM.ObservableError(f"observables must be PauliString or Hamiltonian, got {type(t).__name__}")
            QM._check_wires(t, n)
    rdtype = state.real.dtype
    table = QM.diagonal_matrix(observables, n, state.device, rdtype)
    if table is not None:
        return diagonal(state, n) @ table
    cols = []
    for terms in QM._grouped(observables):
        vec = sum(_trace_vector(t, n, state.dtype, state.device) for t in terms)
        cols.append(vec)
    return (state @ torch.stack(cols, 1)).real


def _apply_per_wire(p: Tensor, mats: Sequence[Tensor | None]) -> Tensor:
    k = len(mats)
    t = p.reshape((p.shape[0],) + (2,) * k)
    for j, m in enumerate(mats):
        if m is None:
            continue
        t = torch.movedim(torch.tensordot(t, m.to(p.dtype).to(p.device).T, dims=([1 + j], [0])), -1, 1 + j)
    return t.reshape(p.shape[0], 2 ** k)


def apply_readout(p: Tensor, errors: Sequence[ReadoutError | None]) -> Tensor:
    """Measured probabilities from true ones: ``p [B, 2**k]`` on ``k`` wires, one readout
    error (or ``None``) per wire, first wire most significant."""
    _check_readout_shape(p, errors)
    return _apply_per_wire(p, [None if e is None else e.matrix for e in errors])


def mitigate_readout(p: Tensor, errors: Sequence[ReadoutError | None]) -> Tensor:
    """Undo readout errors by inverting each wire's confusion matrix.

    The result is the least-biased estimate of the true probabilities; with finite
    shots it may hold small negative entries (it is not clipped).
    """
    _check_readout_shape(p, errors)
    mats: list[Tensor | None] = []
    for j, e in enumerate(errors):
        if e is None:
            mats.append(None)
            continue
        det = 1 - e.p0_given_1 - e.p1_given_0
        if abs(det) < 1e-12:
            raise NoiseParameterError(f"the readout error of wire {j} (P(0|1)={e.p0_given_1:g}, "
                                      f"P(1|0)={e.p1_given_0:g}) cannot be inverted: P(0|1) + P(1|0) = 1")
        mats.append(torch.linalg.inv(e.matrix))
    return _apply_per_wire(p, mats)


def _check_readout_shape(p: Tensor, errors: Sequence[ReadoutError | None]) -> int:
    k = len(errors)
    if p.dim() != 2 or p.shape[1] != 2 ** k:
        raise ShapeError(f"probabilities must have shape [batch, {2 ** k}] for {k} readout entries, "
                         f"got {list(p.shape)}")
    for e in errors:
        if e is not None and not isinstance(e, ReadoutError):
            raise NoiseParameterError(f"readout entries must be ReadoutError or None, got {type(e).__name__}")
    return k


def sample(p: Tensor, shots: int, generator: torch.Generator | None = None) -> Tensor:
    """Bits ``[B, shots, k]`` drawn from probabilities ``p [B, 2**k]`` with ``generator``."""
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1:
        raise ShapeError(f"shots must be a positive integer, got {shots!r}")
    k = p.shape[1].bit_length() - 1
    q = p.detach().to("cpu", torch.float64).clamp_min(0)
    q = q / q.sum(1, keepdim=True)
    draws = torch.multinomial(q, shots, replacement=True, generator=generator)
    bits = (draws.unsqueeze(-1) >> torch.arange(k - 1, -1, -1)) & 1
    return bits.to(p.device)
