"""Quantum noise channels as Kraus operators, and their action on density matrices.

A :class:`Channel` is a tuple of Kraus operators ``K_k`` (``complex128`` tensors of
shape ``[2**k, 2**k]``) acting as ``rho -> sum_k K_k rho K_k^dagger``. Its constructor
checks complete positivity and trace preservation (``sum_k K_k^dagger K_k = I`` within
``1e-10``) and raises :class:`~tinyqml.noise.errors.NotCPTPError` otherwise.

Wire convention is the one of :mod:`tinyqml.qml`: a ``k``-wire Kraus matrix reads its
first wire as the most significant bit, and in a density matrix on ``n`` wires wire 0 is
the most significant bit. (Qiskit is little-endian: to compare a two-wire channel with a
Qiskit one acting on ``qargs=[a, b]``, reverse the qargs.)

The factories follow Qiskit Aer's conventions (:mod:`qiskit_aer.noise`): the channel
built by :func:`depolarizing`, :func:`pauli`, :func:`amplitude_damping`,
:func:`phase_damping` and :func:`thermal_relaxation` has the same superoperator as the
matching ``qiskit_aer.noise.*_error``.

>>> import torch
>>> from tinyqml.noise.channels import bit_flip, apply_channel
>>> rho = torch.zeros(1, 2, 2, dtype=torch.complex128); rho[0, 0, 0] = 1   # |0><0|
>>> apply_channel(rho, bit_flip(0.25), wires=[0], n=1)[0].real
tensor([[0.7500, 0.0000],
        [0.0000, 0.2500]], dtype=torch.float64)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor

from tinyqml.noise.errors import NoiseParameterError, NotCPTPError
from tinyqml.qml.errors import ShapeError, WireError

__all__ = [
    "Channel", "ReadoutError", "apply_channel", "tensor", "compose", "average_gate_fidelity", "pauli_twirl",
    "depolarizing", "bit_flip", "phase_flip", "pauli", "amplitude_damping",
    "phase_damping", "thermal_relaxation", "kraus",
]

#: tolerance of the CPTP check ``|sum_k K^dagger K - I| <= CPTP_TOL`` (entrywise)
CPTP_TOL = 1e-10

_DTYPE = torch.complex128

_PAULI = {
    "I": ((1, 0), (0, 1)),
    "X": ((0, 1), (1, 0)),
    "Y": ((0, -1j), (1j, 0)),
    "Z": ((1, 0), (0, -1)),
}


def _pauli_matrix(label: str) -> Tensor:
    """The matrix of a Pauli string, its first letter on the most significant wire."""
    out = torch.ones(1, 1, dtype=_DTYPE)
    for letter in label:
        out = torch.kron(out, torch.tensor(_PAULI[letter], dtype=_DTYPE))
    return out


@dataclass(frozen=True)
class Channel:
    """A CPTP map given by Kraus operators on ``n_wires`` wires.

    ``kraus`` is normalised to a tuple of ``complex128`` tensors of shape
    ``[2**n_wires, 2**n_wires]``; construction raises :class:`NotCPTPError` when the
    shapes are wrong, a value is NaN/infinite, or ``sum_k K^dagger K != I``.

    >>> import torch
    >>> Channel("identity", (torch.eye(2),), 1).n_wires
    1
    >>> Channel("bad", (0.5 * torch.eye(2),), 1)
    Traceback (most recent call last):
    ...
    tinyqml.noise.errors.NotCPTPError: channel 'bad' is not trace preserving: ...
    """

    name: str
    kraus: tuple[Tensor, ...]
    n_wires: int

    def __post_init__(self) -> None:
        if not isinstance(self.n_wires, int) or isinstance(self.n_wires, bool) or self.n_wires < 1:
            raise NotCPTPError(f"channel {self.name!r}: n_wires must be a positive integer, got {self.n_wires!r}")
        ops = tuple(torch.as_tensor(k).to(_DTYPE).contiguous() for k in self.kraus)
        object.__setattr__(self, "kraus", ops)
        self.check()

    def check(self) -> None:
        """Raise :class:`NotCPTPError` unless the Kraus operators form a CPTP map."""
        d = 2 ** self.n_wires
        if len(self.kraus) == 0:
            raise NotCPTPError(f"channel {self.name!r} has no Kraus operators; give at least one")
        total = torch.zeros(d, d, dtype=_DTYPE)
        for i, k in enumerate(self.kraus):
            if tuple(k.shape) != (d, d):
                raise NotCPTPError(
                    f"channel {self.name!r}: Kraus operator {i} has shape {tuple(k.shape)}; "
                    f"a {self.n_wires}-wire channel needs shape ({d}, {d})")
            if not bool(torch.isfinite(k.detach()).all()):
                raise NotCPTPError(f"channel {self.name!r}: Kraus operator {i} has NaN or infinite values")
            total = total + (k.conj().T @ k).detach()
        err = float((total - torch.eye(d, dtype=_DTYPE)).abs().max())
        if err > CPTP_TOL:
            raise NotCPTPError(
                f"channel {self.name!r} is not trace preserving: sum_k K^dagger K differs from "
                f"the identity by {err:.3g} (accepted: at most {CPTP_TOL:g})")

    def superoperator(self) -> Tensor:
        """The ``[d**2, d**2]`` matrix ``S = sum_k K (x) conj(K)`` acting on row-major ``vec(rho)``.

        >>> bit_flip(0.5).superoperator().real[0]
        tensor([0.5000, 0.0000, 0.0000, 0.5000], dtype=torch.float64)
        """
        return sum(torch.kron(k, k.conj()) for k in self.kraus)


    @property
    def is_unitary_mixture(self) -> bool:
        """Whether every Kraus operator is a multiple of a unitary (a Pauli channel, a
        unitary gate): then a trajectory draws its branch with fixed probabilities."""
        d = 2 ** self.n_wires
        eye = torch.eye(d, dtype=_DTYPE)
        for k in self.kraus:
            kk = k.conj().T @ k
            if float((kk - kk[0, 0] * eye).abs().max()) > 1e-12:
                return False
        return True


def _choi_from_superop(s: Tensor, d: int) -> Tensor:
    """``J[(i,a),(j,b)] = S[(a,b),(i,j)]`` (input factor first), the inverse reshuffle of the Choi matrix."""
    return s.reshape(d, d, d, d).permute(2, 0, 3, 1).reshape(d * d, d * d)


def _channel_from_superop(name: str, s: Tensor, n_wires: int) -> Channel:
    """The channel of superoperator ``s`` with the fewest Kraus operators (at most ``4**n``)."""
    choi = _choi_from_superop(s, 2 ** n_wires)
    choi = (choi + choi.conj().T) / 2
    return Channel(name, _kraus_from_choi(choi), n_wires)


def tensor(*channels: Channel) -> Channel:
    """The product channel ``E_1 (x) E_2 (x) ...``; the first channel acts on the first
    (most significant) wires.

    >>> tensor(bit_flip(0.1), phase_flip(0.2)).n_wires
    2
    """
    if not channels or not all(isinstance(c, Channel) for c in channels):
        raise TypeError("tensor needs one or more Channel objects")
    ops: list[Tensor] = [torch.ones(1, 1, dtype=_DTYPE)]
    for ch in channels:
        ops = [torch.kron(a, b) for a in ops for b in ch.kraus]
    n = sum(c.n_wires for c in channels)
    name = " (x) ".join(c.name for c in channels)
    if len(ops) > 4 ** n:
        sup = sum(torch.kron(k, k.conj()) for k in ops)
        return _channel_from_superop(name, sup, n)
    return Channel(name, tuple(ops), n)


def compose(*channels: Channel) -> Channel:
    """Apply ``channels[0]`` first, then ``channels[1]``, ... (Qiskit's ``a.compose(b)``);
    all act on the same wires. The result has at most ``4**n`` Kraus operators.

    >>> ch = compose(bit_flip(0.5), bit_flip(0.5))
    >>> round(float(ch.superoperator()[0, 3].real), 6)
    0.5
    """
    if not channels or not all(isinstance(c, Channel) for c in channels):
        raise TypeError("compose needs one or more Channel objects")
    n = channels[0].n_wires
    if any(c.n_wires != n for c in channels):
        raise NotCPTPError(f"compose needs channels on the same number of wires, got "
                           f"{[c.n_wires for c in channels]}")
    if len(channels) == 1:
        return channels[0]
    sup = channels[0].superoperator()
    for ch in channels[1:]:
        sup = ch.superoperator() @ sup
    return _channel_from_superop(" then ".join(c.name for c in channels), sup, n)


def average_gate_fidelity(channel: Channel) -> float:
    """``F = (d + sum_k |Tr K_k|^2) / (d (d + 1))``, the fidelity with the identity averaged
    over pure input states (``qiskit.quantum_info.average_gate_fidelity``).

    >>> round(average_gate_fidelity(depolarizing(0.3)), 6)          # 1 - p/2 for one wire
    0.85
    """
    d = 2 ** channel.n_wires
    process = sum(abs(complex(torch.trace(k))) ** 2 for k in channel.kraus) / d ** 2
    return (d * process + 1) / (d + 1)


# ---------------------------------------------------------------- parameter checks

def _check_prob(name: str, value: float, high: float = 1.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise NoiseParameterError(f"{name} must be a real number in [0, {high:g}], got {value!r}") from None
    if not math.isfinite(v) or v < 0 or v > high:
        raise NoiseParameterError(f"{name} must be in [0, {high:g}], got {value!r}")
    return v


def _check_real(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise NoiseParameterError(f"{name} must be a real number, got {value!r}") from None
    if math.isnan(v):
        raise NoiseParameterError(f"{name} must be a real number, got NaN")
    return v


# ---------------------------------------------------------------- factories

def kraus(ops: Sequence, name: str = "kraus") -> Channel:
    """A channel from arbitrary Kraus operators (arrays or tensors, all ``[2**k, 2**k]``).

    >>> import math
    >>> ch = kraus([[[1, 0], [0, 0]], [[0, 0], [0, 1]]], name="measure_z")
    >>> ch.n_wires, len(ch.kraus)
    (1, 2)
    """
    tensors = tuple(torch.as_tensor(k).to(_DTYPE) for k in ops)
    if not tensors:
        raise NotCPTPError(f"channel {name!r} has no Kraus operators; give at least one")
    d = tensors[0].shape[0] if tensors[0].dim() == 2 else 0
    n = d.bit_length() - 1 if d > 0 else 0
    if d < 2 or 2 ** n != d:
        raise NotCPTPError(
            f"channel {name!r}: Kraus operator 0 has shape {tuple(tensors[0].shape)}; "
            "accepted: square matrices of size 2**k with k >= 1")
    return Channel(name, tensors, n)


def pauli(probs: Mapping[str, float]) -> Channel:
    """A Pauli channel: apply the Pauli string ``label`` with probability ``probs[label]``
    and the identity with the remaining probability (like ``qiskit_aer.noise.pauli_error``).

    Labels are strings over ``IXYZ``, all of the same length ``k`` (the number of wires);
    the first letter acts on the first wire (as in Qiskit's label, where it is the most
    significant qubit).

    >>> ch = pauli({"X": 0.1, "Z": 0.2})
    >>> [round(float((k.conj().T @ k)[0, 0].real), 2) for k in ch.kraus]
    [0.7, 0.1, 0.2]
    """
    if not isinstance(probs, Mapping) or not probs:
        raise NoiseParameterError(
            f"probs must be a non-empty dict from Pauli labels (e.g. 'X', 'XZ') to probabilities, got {probs!r}")
    lengths = set()
    for label in probs:
        if not isinstance(label, str) or not label or any(c not in _PAULI for c in label):
            raise NoiseParameterError(f"Pauli label {label!r} is invalid; accepted: non-empty strings over 'IXYZ'")
        lengths.add(len(label))
    if len(lengths) != 1:
        raise NoiseParameterError(f"Pauli labels must all have the same length (the number of wires), got {sorted(probs)}")
    k = lengths.pop()
    values = {label: _check_prob(f"probability of {label!r}", p) for label, p in probs.items()}
    total = sum(values.values())
    if total > 1 + 1e-12:
        raise NoiseParameterError(f"Pauli probabilities sum to {total:.6g}; accepted: a total in [0, 1]")
    identity = "I" * k
    p_id = max(0.0, 1.0 - total) + values.pop(identity, 0.0)
    ops = [math.sqrt(p_id) * _pauli_matrix(identity)]
    ops += [math.sqrt(p) * _pauli_matrix(label) for label, p in values.items()]
    name = "pauli(" + ", ".join(f"{label}={p:g}" for label, p in probs.items()) + ")"
    return Channel(name, tuple(ops), k)


def depolarizing(p: float, n_wires: int = 1) -> Channel:
    """The depolarizing channel ``rho -> (1 - p) rho + p I / d`` on ``n_wires`` (1 or 2)
    wires, ``d = 2**n_wires`` — the convention of ``qiskit_aer.noise.depolarizing_error(p, n)``.

    As in Aer, ``p`` may go up to ``4**n / (4**n - 1)`` (4/3 for one wire, 16/15 for two),
    where the channel is still CPTP; ``p = 1`` is the completely depolarizing channel.

    >>> ch = depolarizing(0.3)
    >>> len(ch.kraus), ch.n_wires
    (4, 1)
    """
    if n_wires not in (1, 2) or isinstance(n_wires, bool):
        raise NoiseParameterError(f"n_wires must be 1 or 2, got {n_wires!r}")
    terms = 4 ** n_wires
    p = _check_prob("p", p, high=terms / (terms - 1))
    p_pauli = p / terms
    probs = {"".join(s): p_pauli for s in itertools.product("IXYZ", repeat=n_wires)}
    probs.pop("I" * n_wires)
    ch = pauli(probs)
    return Channel(f"depolarizing({p:g})", ch.kraus, n_wires)


def bit_flip(p: float) -> Channel:
    """Apply X with probability ``p``.

    >>> bit_flip(0.1).name
    'bit_flip(0.1)'
    """
    p = _check_prob("p", p)
    return Channel(f"bit_flip({p:g})", pauli({"X": p}).kraus, 1)


def phase_flip(p: float) -> Channel:
    """Apply Z with probability ``p``.

    >>> phase_flip(0.2).n_wires
    1
    """
    p = _check_prob("p", p)
    return Channel(f"phase_flip({p:g})", pauli({"Z": p}).kraus, 1)


def amplitude_damping(gamma: float) -> Channel:
    """Decay ``|1> -> |0>`` with probability ``gamma`` (``qiskit_aer.noise.amplitude_damping_error``).

    >>> amplitude_damping(0.36).kraus[1].real
    tensor([[0.0000, 0.6000],
            [0.0000, 0.0000]], dtype=torch.float64)
    """
    g = _check_prob("gamma", gamma)
    k0 = torch.tensor([[1, 0], [0, math.sqrt(1 - g)]], dtype=_DTYPE)
    k1 = torch.tensor([[0, math.sqrt(g)], [0, 0]], dtype=_DTYPE)
    return Channel(f"amplitude_damping({g:g})", (k0, k1), 1)


def phase_damping(lam: float) -> Channel:
    """Lose phase coherence: off-diagonals scale by ``sqrt(1 - lam)``
    (``qiskit_aer.noise.phase_damping_error``).

    >>> len(phase_damping(0.5).kraus)
    2
    """
    lam = _check_prob("lam", lam)
    k0 = torch.tensor([[1, 0], [0, math.sqrt(1 - lam)]], dtype=_DTYPE)
    k1 = torch.tensor([[0, 0], [0, math.sqrt(lam)]], dtype=_DTYPE)
    return Channel(f"phase_damping({lam:g})", (k0, k1), 1)


def _kraus_from_choi(choi: Tensor) -> tuple[Tensor, ...]:
    """Kraus operators of ``J = sum_ij |i><j| (x) E(|i><j|)`` (input factor first)."""
    evals, evecs = torch.linalg.eigh(choi)
    d = int(round(math.sqrt(choi.shape[0])))
    ops = []
    for lam, v in zip(evals.tolist(), evecs.T):
        if lam > 1e-14:
            # |K>> = sum_i |i> (x) K|i>, i.e. v reshaped to (input, output) is K^T
            ops.append((math.sqrt(lam) * v.reshape(d, d).T).contiguous())
    return tuple(ops)


def thermal_relaxation(t1: float, t2: float, time: float, excited_population: float = 0.0) -> Channel:
    """T1/T2 relaxation for a duration ``time`` towards a thermal state with excited-state
    population ``excited_population`` (``qiskit_aer.noise.thermal_relaxation_error``).

    Requires ``t1 > 0``, ``0 < t2 <= 2 * t1`` (either may be ``inf``), ``time >= 0`` and
    ``excited_population`` in ``[0, 1]``. Populations relax with ``p_reset = 1 - exp(-time/t1)``
    and coherences decay by ``exp(-time/t2)``.

    >>> import torch
    >>> ch = thermal_relaxation(t1=50.0, t2=70.0, time=10.0)
    >>> rho = torch.full((1, 2, 2), 0.5, dtype=torch.complex128)          # |+><+|
    >>> out = apply_channel(rho, ch, [0], 1)[0].real
    >>> round(float(out[1, 1]), 4), round(float(out[0, 1]), 4)          # 0.5 e^(-1/5), 0.5 e^(-1/7)
    (0.4094, 0.4334)
    """
    t1 = _check_real("t1", t1)
    t2 = _check_real("t2", t2)
    time = _check_real("time", time)
    p1 = _check_prob("excited_population", excited_population)
    if t1 <= 0:
        raise NoiseParameterError(f"t1 must be > 0 (may be inf), got {t1!r}")
    if t2 <= 0:
        raise NoiseParameterError(f"t2 must be > 0 (may be inf), got {t2!r}")
    if t2 > 2 * t1:
        raise NoiseParameterError(f"t2 must be <= 2 * t1 = {2 * t1:g}, got t2={t2!r}")
    if time < 0 or math.isinf(time):
        raise NoiseParameterError(f"time must be finite and >= 0, got {time!r}")
    p0 = 1.0 - p1
    p_reset = 0.0 if math.isinf(t1) else 1.0 - math.exp(-time / t1)
    exp_t2 = 1.0 if math.isinf(t2) else math.exp(-time / t2)
    choi = torch.tensor([
        [1 - p1 * p_reset, 0, 0, exp_t2],
        [0, p1 * p_reset, 0, 0],
        [0, 0, p0 * p_reset, 0],
        [exp_t2, 0, 0, 1 - p0 * p_reset],
    ], dtype=_DTYPE)
    name = f"thermal_relaxation(t1={t1:g}, t2={t2:g}, time={time:g}, excited_population={p1:g})"
    return Channel(name, _kraus_from_choi(choi), 1)


# ---------------------------------------------------------------- readout

@dataclass(frozen=True)
class ReadoutError:
    """A classical single-qubit measurement error.

    ``p0_given_1`` is the probability of reading 0 when the qubit is 1, ``p1_given_0``
    of reading 1 when it is 0. :attr:`matrix` is the confusion matrix with **columns =
    true state, rows = measured outcome** (``matrix[m, t] = P(m | t)``), so measured
    probabilities are ``matrix @ true_probabilities``. This is the *transpose* of
    ``qiskit_aer.noise.ReadoutError(...).probabilities`` (rows = true state there).

    >>> ReadoutError(p0_given_1=0.1, p1_given_0=0.02).matrix
    tensor([[0.9800, 0.1000],
            [0.0200, 0.9000]], dtype=torch.float64)
    """

    p0_given_1: float
    p1_given_0: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "p0_given_1", _check_prob("p0_given_1", self.p0_given_1))
        object.__setattr__(self, "p1_given_0", _check_prob("p1_given_0", self.p1_given_0))

    @property
    def matrix(self) -> Tensor:
        """The 2x2 confusion matrix ``P(measured | true)`` (columns = true state)."""
        a, b = self.p1_given_0, self.p0_given_1
        return torch.tensor([[1 - a, b], [a, 1 - b]], dtype=torch.float64)


# ---------------------------------------------------------------- application

def _apply_on_axes(t: Tensor, m: Tensor, axes: Sequence[int], k: int) -> Tensor:
    """Contract the ``[2]*k + [2]*k`` tensor ``m`` (output, input) with ``t``'s ``axes``."""
    out = torch.tensordot(m, t, dims=(list(range(k, 2 * k)), list(axes)))
    # out axes: m's k output axes, then t's remaining axes in order
    return torch.movedim(out, list(range(k)), list(axes))


def apply_channel(rho: Tensor, channel: Channel, wires: Sequence[int], n: int) -> Tensor:
    """Return ``sum_k K_k rho K_k^dagger`` with each Kraus operator acting on ``wires``.

    ``rho`` is a batch of density matrices ``[B, 2**n, 2**n]`` (or a single ``[2**n, 2**n]``),
    wire 0 most significant. ``wires`` lists ``channel.n_wires`` distinct wires in any
    order; the Kraus matrix's first wire is ``wires[0]``. The input is not modified.

    >>> import torch
    >>> rho = torch.zeros(2, 4, 4, dtype=torch.complex128); rho[:, 0, 0] = 1     # |00><00|
    >>> out = apply_channel(rho, bit_flip(1.0), wires=[1], n=2)
    >>> out[0].diagonal().real                                                  # now |01>
    tensor([0., 1., 0., 0.], dtype=torch.float64)
    """
    if not isinstance(channel, Channel):
        raise TypeError(f"channel must be a tinyqml.noise.channels.Channel, got {type(channel).__name__}")
    if not isinstance(n, int) or n < 1:
        raise WireError(f"n must be a positive number of wires, got {n!r}")
    wires = [int(w) for w in wires]
    k = channel.n_wires
    if len(wires) != k:
        raise WireError(f"channel {channel.name!r} acts on {k} wire(s), got wires={wires}")
    if len(set(wires)) != k or any(w < 0 or w >= n for w in wires):
        raise WireError(f"wires {wires} must be distinct and in range(0, {n})")
    d = 2 ** n
    single = rho.dim() == 2
    if single:
        rho = rho.unsqueeze(0)
    if not rho.is_complex():
        rho = rho.to(_DTYPE)
    if rho.dim() != 3 or tuple(rho.shape[1:]) != (d, d):
        raise ShapeError(f"rho must have shape [B, {d}, {d}] (or [{d}, {d}]) for n={n}, got {tuple(rho.shape)}")
    b = rho.shape[0]
    t = rho.reshape([b] + [2] * (2 * n))
    row_axes = [1 + w for w in wires]
    col_axes = [1 + n + w for w in wires]
    out = torch.zeros_like(t)
    for op in channel.kraus:
        m = op.to(dtype=rho.dtype, device=rho.device).reshape([2] * (2 * k))
        term = _apply_on_axes(t, m, row_axes, k)
        term = _apply_on_axes(term, m.conj(), col_axes, k)
        out = out + term
    out = out.reshape(b, d, d)
    return out[0] if single else out


def pauli_twirl(channel: Channel) -> Channel:
    """The Pauli channel with the same Pauli-transfer diagonal as ``channel``: Pauli ``P``
    with probability ``sum_k |Tr(P K_k)|^2 / d^2`` (the Pauli-twirling approximation
    that noise injection uses; exact for Pauli and depolarizing channels).

    >>> ch = pauli_twirl(amplitude_damping(0.2))
    >>> ch.is_unitary_mixture, len(ch.kraus)
    (True, 4)
    """
    k = channel.n_wires
    d = 2 ** k
    probs = {}
    for label in ("".join(s) for s in itertools.product("IXYZ", repeat=k)):
        p = _pauli_matrix(label)
        probs[label] = sum(abs(complex(torch.trace(p @ op))) ** 2 for op in channel.kraus) / d ** 2
    total = sum(probs.values())
    probs = {label: v / total for label, v in probs.items() if v > 1e-15}
    out = pauli(probs)
    return Channel(f"twirl({channel.name})", out.kraus, k)
