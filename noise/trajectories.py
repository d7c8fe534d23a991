"""Quantum trajectories: statevectors with Kraus branches drawn at random.

Every row of the batch, and every one of its ``n_trajectories`` copies, draws its own
errors (not one error shared by the whole batch): at each channel the branch ``k`` is
chosen with probability ``||K_k psi||^2`` and the state becomes ``K_k psi / ||K_k psi||``.
For mixtures of unitaries (Pauli channels, depolarizing) the probabilities are fixed
and only the drawn branch is applied. Averages over trajectories converge to the
density matrix of :func:`tinyqml.noise.density_matrix`; draws come from an explicit
``torch.Generator``. Results are differentiable by backpropagation (exactly so for
unitary mixtures, which is what noise injection during training uses).

>>> import torch, tinyqml.qml as tq
>>> from tinyqml.noise import NoiseModel, BitFlip
>>> c = tq.CircuitBuilder(1).x(0).build()
>>> g = torch.Generator().manual_seed(0)
>>> z = trajectory_expval(c, [tq.Z(0)], NoiseModel().add("X", BitFlip(0.25)), n_trajectories=4000, generator=g)
>>> z.shape, round(float(z.mean()), 1)            # exact value: -(1 - 2 * 0.25)
(torch.Size([1, 4000, 1]), -0.5)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from tinyqml.noise.channels import Channel
from tinyqml.noise.model import ChannelOp, NoiseModel, NoisyCircuit, as_noisy
from tinyqml.qml import fusion as QF
from tinyqml.qml import kernels as QK
from tinyqml.qml import measure as QM
from tinyqml.qml.circuit import Circuit
from tinyqml.qml.errors import ShapeError
from tinyqml.qml.params import resolve
from tinyqml.qml.simulate import _check_dtype, _device

Tensor = torch.Tensor

__all__ = ["trajectory_states", "trajectory_expval", "trajectory_probs"]


def _apply_matrix(psi: Tensor, m: Tensor, wires: Sequence[int], n: int) -> Tensor:
    m = m.to(dtype=psi.dtype, device=psi.device).unsqueeze(0)
    if len(wires) == 1:
        return QK.apply_single(psi, m, wires[0], n)
    return QK.apply_dense(psi, m, wires, n)


def _draw(weights: Tensor, generator: torch.Generator | None) -> Tensor:
    """One branch index per row of ``weights [R, K]`` (drawn on the CPU)."""
    w = weights.detach().to("cpu", torch.float64).clamp_min(0)
    return torch.multinomial(w, 1, replacement=True, generator=generator)[:, 0]


def _branches(ch: Channel) -> tuple[Tensor, Tensor, int]:
    """(probabilities [K], unitaries [K, d, d], index of the identity branch or -1) of a mixture."""
    d = 2 ** ch.n_wires
    probs = torch.tensor([float((k.conj().T @ k)[0, 0].real) for k in ch.kraus], dtype=torch.float64)
    mats = torch.stack([k / math.sqrt(max(float(p), 1e-300)) for k, p in zip(ch.kraus, probs)])
    eye = torch.eye(d, dtype=mats.dtype)
    ident = -1
    for i, m in enumerate(mats):
        if abs(abs(complex(m[0, 0])) - 1) < 1e-12 and float((m - m[0, 0] * eye).abs().max()) < 1e-12:
            ident = i
            break
    return probs, mats, ident


def _mixture(psi: Tensor, ch: Channel, wires: Sequence[int], n: int, generator: torch.Generator | None) -> Tensor:
    """Draw a unitary branch per row; rows that drew the identity are left untouched."""
    probs, mats, ident = _branches(ch)
    draws = _draw(probs.expand(psi.shape[0], -1), generator)
    hit = (draws != ident).nonzero()[:, 0]
    if hit.numel() == 0:
        return psi
    chosen = mats[draws[hit]].to(dtype=psi.dtype, device=psi.device)
    hit = hit.to(psi.device)
    sub = psi.index_select(0, hit)
    sub = QK.apply_single(sub, chosen, wires[0], n) if len(wires) == 1 else QK.apply_dense(sub, chosen, wires, n)
    return psi.index_copy(0, hit, sub)


def _general(psi: Tensor, ch: Channel, wires: Sequence[int], n: int, generator: torch.Generator | None) -> Tensor:
    branches = torch.stack([_apply_matrix(psi, k, wires, n) for k in ch.kraus])  # [K, R, D]
    weight = QM.abs2(branches).sum(-1).transpose(0, 1)  # [R, K]
    draws = _draw(weight, generator).to(psi.device)
    rows = torch.arange(psi.shape[0], device=psi.device)
    chosen = branches[draws, rows]
    return chosen / weight[rows, draws].sqrt().unsqueeze(1).to(chosen.dtype)


def _apply_sampled(psi: Tensor, step: ChannelOp, n: int, generator: torch.Generator | None) -> Tensor:
    ch = step.channel
    if len(ch.kraus) == 1:
        return _apply_matrix(psi, ch.kraus[0], step.wires, n)
    if ch.is_unitary_mixture:
        return _mixture(psi, ch, step.wires, n, generator)
    return _general(psi, ch, step.wires, n, generator)


def trajectory_states(circuit: Circuit | NoisyCircuit, noise_model: NoiseModel | None = None,
                      weights: Any = None, inputs: Any = None, n_trajectories: int = 1,
                      generator: torch.Generator | None = None, dtype: torch.dtype = torch.complex128,
                      device: Any = None) -> Tensor:
    """Sampled final states ``[B, n_trajectories, 2**n]``, each row's errors drawn independently."""
    _check_dtype(dtype)
    if not isinstance(n_trajectories, int) or isinstance(n_trajectories, bool) or n_trajectories < 1:
        raise ShapeError(f"n_trajectories must be a positive integer, got {n_trajectories!r}")
    noisy = as_noisy(circuit, noise_model)
    circ, n, t = noisy.circuit, noisy.n_wires, n_trajectories
    angles, batched = resolve(circ, weights, inputs, dtype, _device(weights, inputs, device))
    rows = angles.shape[0] * t
    prog = QF.compile_circuit(circ)
    psi = torch.zeros(rows, 2 ** n, dtype=dtype, device=angles.device)
    psi[:, 0] = 1
    for step in noisy.steps:
        if isinstance(step, ChannelOp):
            psi = _apply_sampled(psi, step, n, generator)
            continue
        op = circ.ops[step]
        cols = list(prog.slots[step])
        is_b = any(batched[s] for s in cols)
        p = angles[:, cols].repeat_interleave(t, dim=0) if is_b else angles[:1, cols]
        u = torch.tensor(op.unitary_array(), dtype=dtype, device=angles.device) if op.matrix is not None else None
        psi = QK.apply_gate(psi, op.gate, p, op.wires, n, unitary=u)
    return psi.reshape(angles.shape[0], t, 2 ** n)


def trajectory_expval(circuit: Circuit | NoisyCircuit, observables: Sequence[QM.Observable],
                      noise_model: NoiseModel | None = None, weights: Any = None, inputs: Any = None,
                      n_trajectories: int = 1, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.complex128, device: Any = None) -> Tensor:
    """Per-trajectory expectations ``[B, n_trajectories, n_obs]`` (average over axis 1)."""
    psi = trajectory_states(circuit, noise_model, weights, inputs, n_trajectories, generator, dtype, device)
    b, t, d = psi.shape
    n = d.bit_length() - 1
    return QM.expval(psi.reshape(b * t, d), list(observables), n).reshape(b, t, -1)


def trajectory_probs(circuit: Circuit | NoisyCircuit, noise_model: NoiseModel | None = None,
                     weights: Any = None, inputs: Any = None, wires: Sequence[int] | None = None,
                     n_trajectories: int = 1, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.complex128, device: Any = None) -> Tensor:
    """Per-trajectory probabilities ``[B, n_trajectories, 2**len(wires)]`` (no readout error)."""
    psi = trajectory_states(circuit, noise_model, weights, inputs, n_trajectories, generator, dtype, device)
    b, t, d = psi.shape
    n = d.bit_length() - 1
    return QM.probs(psi.reshape(b * t, d), n, wires).reshape(b, t, -1)
