"""PennyLane measurements on tinyqml states (used by the ``tinyqml.qubit`` device).

Analytic results are computed on the final state ``psi [B, 2**n]`` directly, with no
basis change: Pauli words and sums of them through :func:`tinyqml.qml.measure.expval`,
other observables (Hermitian, Projector, ...) as ``<psi|O|psi>`` with ``O`` applied to
its wires only. Everything stays in torch, so backprop and the adjoint method both work.

With finite shots, measurements are grouped so that each group has one measurement basis
(qubit-wise: a wire is read in the same Pauli basis by every member, or is owned by a
single non-Pauli observable). Each group rotates the state with its diagonalizing gates
and draws samples once with tinyqml's sampler and an explicit torch generator; PennyLane's
``process_samples`` then turns the samples into each measurement's result. Expectations
of sums are split into their terms, so non-commuting terms are estimated from separate
groups. This module imports PennyLane; ``import tinyqml.qml`` does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pennylane as qml
import torch
from pennylane.measurements import ExpectationMP, MeasurementProcess, ProbabilityMP, VarianceMP
from pennylane.wires import Wires

from tinyqml.qml import kernels as K
from tinyqml.qml import measure as M
from tinyqml.qml.pennylane_ops import as_real_tensor

Tensor = torch.Tensor


# --------------------------------------------------------------------------- helpers


def to_numpy(x: Any) -> Any:
    """``x`` (a tensor, or a tuple/list/dict of them) with torch tensors as numpy arrays."""
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, tuple):
        return tuple(to_numpy(v) for v in x)
    if isinstance(x, list):
        return [to_numpy(v) for v in x]
    return x


def _complex_tensor(m: Any, like: Tensor) -> Tensor:
    if isinstance(m, Tensor):
        return m.to(device=like.device, dtype=like.dtype)
    a = np.asarray(qml.math.unwrap(m), dtype=np.complex128)
    return torch.as_tensor(a).to(device=like.device, dtype=like.dtype)


def apply_matrix(psi: Tensor, matrix: Any, wires: Sequence[int], n: int) -> Tensor:
    """``matrix`` (``[2**k, 2**k]``, numpy or torch) applied to ``psi [B, 2**n]`` on wire indices ``wires``."""
    m = _complex_tensor(matrix, psi)
    if not wires:  # a scalar operator
        return psi * m.reshape(-1)[0]
    return K.apply_dense(psi, m.reshape(1, 2 ** len(wires), 2 ** len(wires)), list(wires), n)


def _obs_matrix(obs: qml.operation.Operator) -> Any:
    if obs.has_matrix:
        return qml.matrix(obs, wire_order=obs.wires)
    return obs.sparse_matrix(wire_order=obs.wires).toarray()


def apply_observable(obs: qml.operation.Operator, psi: Tensor, wire_map: dict, n: int) -> Tensor:
    """``O psi`` for an observable with a (dense or sparse) matrix, applied on its wires only."""
    return apply_matrix(psi, _obs_matrix(obs), [wire_map[w] for w in obs.wires], n)


def rotate(psi: Tensor, gates: Sequence[qml.operation.Operator], wire_map: dict, n: int) -> Tensor:
    """``psi`` after PennyLane (diagonalizing) gates, each applied as its matrix."""
    for g in gates:
        psi = apply_matrix(psi, qml.matrix(g, wire_order=g.wires), [wire_map[w] for w in g.wires], n)
    return psi


def _inner_real(a: Tensor, b: Tensor) -> Tensor:
    return (a.conj() * b).sum(-1).real


# --------------------------------------------------------------------------- analytic


def pauli_expvals(sentences: Sequence[Any], psi: Tensor, wire_map: dict, n: int) -> list[Tensor]:
    """``<psi|S|psi>`` ``[B]`` of PennyLane PauliSentences, all terms in one tinyqml call.

    Coefficients may be torch tensors (trainable Hamiltonian coefficients under backprop).
    """
    rdtype = psi.real.dtype
    words = [list(s) for s in sentences]
    strings = [M.PauliString("".join(w.values()), tuple(wire_map[q] for q in w)) for ws in words for w in ws]
    vals = M.expval(psi, strings, n) if strings else None
    out, pos = [], 0
    for s, ws in zip(sentences, words):
        if not ws:
            out.append(torch.zeros(psi.shape[0], dtype=rdtype, device=psi.device))
            continue
        coeffs = torch.stack([as_real_tensor(s[w], rdtype) for w in ws]).to(psi.device)
        out.append(vals[:, pos: pos + len(ws)] @ coeffs)  # type: ignore[index]
        pos += len(ws)
    return out


def pauli_expval(sentence: Any, psi: Tensor, wire_map: dict, n: int) -> Tensor:
    """``<psi|S|psi>`` ``[B]`` of one PennyLane PauliSentence."""
    return pauli_expvals([sentence], psi, wire_map, n)[0]


def expval(obs: qml.operation.Operator, psi: Tensor, wire_map: dict, n: int) -> Tensor:
    """``<psi|O|psi>`` ``[B]``: Pauli sentences through tinyqml, anything else by its matrix."""
    sentence = obs.pauli_rep
    if sentence is not None:
        return pauli_expval(sentence, psi, wire_map, n)
    return _inner_real(psi, apply_observable(obs, psi, wire_map, n))


def var(obs: qml.operation.Operator, psi: Tensor, wire_map: dict, n: int) -> Tensor:
    """``<O^2> - <O>^2`` ``[B]`` (a single Pauli word needs no matrix: ``c^2 (<psi|psi> - <P>^2)``,
    the norm kept symbolic so gradients through non-unitary inputs match default.qubit's)."""
    sentence = obs.pauli_rep
    if sentence is not None and len(sentence) == 1:
        (word, c), = sentence.items()
        c = as_real_tensor(c, psi.real.dtype).to(psi.device)
        if not word:
            return torch.zeros(psi.shape[0], dtype=psi.real.dtype, device=psi.device)
        e = pauli_expval({word: 1.0}, psi, wire_map, n)
        return c**2 * (_inner_real(psi, psi) - e**2)
    phi = apply_observable(obs, psi, wire_map, n)
    return _inner_real(phi, phi) - _inner_real(psi, phi) ** 2


def probs(mp: ProbabilityMP, psi: Tensor, wire_map: dict, n: int) -> Tensor:
    """Marginal probabilities ``[B, 2**k]`` (in the eigenbasis of ``mp.obs`` when it has one)."""
    if mp.obs is not None:
        psi = rotate(psi, mp.obs.diagonalizing_gates(), wire_map, n)
    wires = [wire_map[w] for w in mp.wires] if len(mp.wires) else None
    return M.probs(psi, n, wires)


def plain_probs(psi: Tensor, n: int, wires: Sequence[int] | None) -> Tensor:
    """Marginal probabilities from elementary torch ops only (differentiable to any order)."""
    p = psi.real**2 + psi.imag**2
    if wires is None:
        return p
    t = p.reshape((p.shape[0],) + (2,) * n)
    rest = [1 + w for w in range(n) if w not in wires]
    if rest:
        t = t.sum(dim=rest)
    kept = sorted(wires)
    return t.permute([0] + [1 + kept.index(w) for w in wires]).reshape(p.shape[0], -1)


def _measure(mp: MeasurementProcess, psi: Tensor, wire_map: dict, n: int, higher_order: bool) -> Tensor | None:
    """Expval/var/probs ``[B, ...]`` (``None``: not one of these)."""
    if isinstance(mp, ExpectationMP) and mp.obs is not None:
        if higher_order:
            return _inner_real(psi, apply_observable(mp.obs, psi, wire_map, n))
        return expval(mp.obs, psi, wire_map, n)
    if isinstance(mp, VarianceMP) and mp.obs is not None:
        return var(mp.obs, psi, wire_map, n)
    if isinstance(mp, ProbabilityMP) and mp.mv is None:
        if not higher_order:
            return probs(mp, psi, wire_map, n)
        if mp.obs is not None:
            psi = rotate(psi, mp.obs.diagonalizing_gates(), wire_map, n)
        return plain_probs(psi, n, [wire_map[w] for w in mp.wires] if len(mp.wires) else None)
    return None


def _pauli_indices(measurements: Sequence[MeasurementProcess]) -> list[int]:
    return [i for i, mp in enumerate(measurements)
            if isinstance(mp, ExpectationMP) and mp.obs is not None and mp.obs.pauli_rep is not None]


def analytic(measurements: Sequence[MeasurementProcess], psi: Tensor, wire_order: Wires, batched: bool,
             higher_order: bool = False) -> list[Any]:
    """Every measurement's exact result from ``psi [B, 2**n]`` (torch, differentiable).

    Expectations of Pauli sentences share one tinyqml call. ``higher_order=True`` computes
    with elementary torch operations only (no custom autograd functions), so that second
    derivatives by backprop are exact.
    """
    wire_map = {w: i for i, w in enumerate(wire_order)}
    n = len(wire_order)
    out: list[Any] = [None] * len(measurements)
    pauli = [] if higher_order else _pauli_indices(measurements)
    for i, val in zip(pauli, pauli_expvals([measurements[i].obs.pauli_rep for i in pauli], psi, wire_map, n)):
        out[i] = val
    for i, mp in enumerate(measurements):
        if out[i] is None:
            out[i] = _measure(mp, psi, wire_map, n, higher_order)
        if out[i] is None:  # state, density matrix, entropies, mid-circuit statistics, custom measurements
            out[i] = mp.process_state(psi if batched else psi[0], wire_order)
        elif not batched:
            out[i] = out[i][0]
    return out


# --------------------------------------------------------------------------- finite shots


@dataclass
class Unit:
    """One sampled quantity: ``coeff * mp`` contributes to the tape's measurement ``index``
    (``mp=None``: the identity term of a sum, the constant ``coeff``)."""

    index: int
    mp: MeasurementProcess | None
    coeff: Any = None


@dataclass
class Group:
    """Units sharing one measurement basis: ``basis`` maps a wire label to ``"X"``/``"Y"``/``"Z"``
    or to a token owned by one non-Pauli observable, whose diagonalizing gates are in ``gates``."""

    basis: dict = field(default_factory=dict)
    gates: list = field(default_factory=list)
    units: list = field(default_factory=list)

    def accepts(self, basis: dict) -> bool:
        return all(self.basis.get(w, b) == b for w, b in basis.items())


def _split_units(index: int, mp: MeasurementProcess) -> list[Unit]:
    """An expectation of a sum becomes one unit per term; anything else is one unit."""
    obs = mp.obs
    if not isinstance(mp, ExpectationMP) or obs is None:
        return [Unit(index, mp)]
    sentence = obs.pauli_rep
    if sentence is not None and len(sentence) > 1:
        return [Unit(index, qml.expval(word.operation()) if word else None, c) for word, c in sentence.items()]
    if sentence is None and isinstance(obs, qml.ops.Sum):
        coeffs, terms = obs.terms()
        return [Unit(index, qml.expval(t), c) for c, t in zip(coeffs, terms)]
    return [Unit(index, mp)]


def _unit_basis(unit: Unit, token: int, all_wires: Wires) -> tuple[dict, list]:
    obs = unit.mp.obs
    if obs is None:
        wires = unit.mp.wires if len(unit.mp.wires) else all_wires
        return {w: "Z" for w in wires}, []
    sentence = obs.pauli_rep
    if sentence is not None and len(sentence) == 1:
        (word,) = sentence
        return dict(word.items()), []
    return {w: ("U", token) for w in obs.wires}, list(obs.diagonalizing_gates())


_PAULI_ROTATION = {"X": lambda w: [qml.H(w)], "Y": lambda w: qml.Y(w).diagonalizing_gates(), "Z": lambda w: []}


def split_units(measurements: Sequence[MeasurementProcess]) -> list[Unit]:
    """All measurements as units (expectations of sums split into their terms)."""
    return [u for i, mp in enumerate(measurements) for u in _split_units(i, mp)]


def group_units(units: Sequence[Unit], all_wires: Wires) -> list[Group]:
    """Greedy qubit-wise grouping of the sampled units into shared-basis groups."""
    groups: list[Group] = []
    for token, unit in enumerate(units):
        if unit.mp is None:
            continue
        basis, gates = _unit_basis(unit, token, all_wires)
        group = next((g for g in groups if g.accepts(basis)), None)
        if group is None:
            group = Group()
            groups.append(group)
        group.basis.update(basis)
        group.gates += gates
        group.units.append(unit)
    return groups


def _group_gates(group: Group) -> list:
    gates = []
    for w, b in group.basis.items():
        if isinstance(b, str):
            gates += _PAULI_ROTATION[b](w)
    return gates + group.gates


def _scaled(value: Any, coeff: Any) -> Any:
    c = to_numpy(coeff)
    return np.real(np.asarray(c)) * np.asarray(value)


def sampled(measurements: Sequence[MeasurementProcess], psi: Tensor, wire_order: Wires, shots: Any,
            batched: bool, generator: torch.Generator) -> list[list[Any]]:
    """Per shot bin, the list of every measurement's result estimated from samples."""
    wire_map = {w: i for i, w in enumerate(wire_order)}
    n = len(wire_order)
    bins = list(shots.bins())
    out: list[list[Any]] = [[None] * len(measurements) for _ in bins]
    psi = psi.detach()
    units = split_units(measurements)
    ones = np.ones(psi.shape[0]) if batched else 1.0
    for b in range(len(bins)):
        for unit in units:
            if unit.mp is None:
                _accumulate(out[b], unit, ones)
    for group in group_units(units, wire_order):
        rotated = rotate(psi, _group_gates(group), wire_map, n)
        samples = M.sample(rotated, n, shots.total_shots, generator).cpu().numpy()
        if not batched:
            samples = samples[0]
        for b, (lo, hi) in enumerate(bins):
            part = samples[..., lo:hi, :]
            for unit in group.units:
                _accumulate(out[b], unit, unit.mp.process_samples(part, wire_order))
    return out


def _accumulate(results: list, unit: Unit, value: Any) -> None:
    if unit.coeff is None:
        results[unit.index] = value
        return
    term = _scaled(value, unit.coeff)
    prev = results[unit.index]
    results[unit.index] = term if prev is None else prev + term
