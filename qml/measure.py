"""Observables and measurements on batched states.

Observables are Pauli strings with a coefficient and weighted sums of them
(Hamiltonians). Expectations are computed directly as ``<ψ|P|ψ>``: a Pauli string
is a bit-flip permutation times a phase, so no basis change is needed.

>>> import torch, tinyqml.qml as tq
>>> psi = torch.tensor([[1, 0, 0, 1]], dtype=torch.complex128) / 2 ** 0.5   # Bell state
>>> expval(psi, [tq.Z(0) @ tq.Z(1), tq.X(0) @ tq.X(1), tq.Z(0)], 2).round(decimals=6)
tensor([[1., 1., 0.]], dtype=torch.float64)
>>> probs(psi, 2, wires=[0])
tensor([[0.5000, 0.5000]], dtype=torch.float64)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

import torch

from tinyqml.qml.errors import ObservableError, ShapeError, WireError

Tensor = torch.Tensor


@dataclass(frozen=True)
class PauliString:
    """``coeff * P_{w0} ⊗ P_{w1} ⊗ ...`` with letters in ``"IXYZ"`` on distinct wires."""

    paulis: str
    wires: tuple[int, ...]
    coeff: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "wires", tuple(int(w) for w in self.wires))
        if len(self.paulis) != len(self.wires):
            raise ObservableError(f"{len(self.paulis)} Pauli letters for {len(self.wires)} wires")
        bad = set(self.paulis) - set("IXYZ")
        if bad:
            raise ObservableError(f"unknown Pauli letter(s) {sorted(bad)}; use I, X, Y, Z")
        if len(set(self.wires)) != len(self.wires):
            raise ObservableError(f"duplicated wire in Pauli string on {self.wires}")
        if any(w < 0 for w in self.wires):
            raise ObservableError(f"negative wire in {self.wires}")

    def __matmul__(self, other: "PauliString") -> "PauliString":
        if set(self.wires) & set(other.wires):
            raise ObservableError("tensor product of Pauli strings on overlapping wires")
        return PauliString(self.paulis + other.paulis, self.wires + other.wires, self.coeff * other.coeff)

    def __mul__(self, c: float) -> "PauliString":
        return PauliString(self.paulis, self.wires, self.coeff * float(c))

    __rmul__ = __mul__

    def __add__(self, other: "Observable") -> "Hamiltonian":
        return Hamiltonian((self,)) + other

    @property
    def is_diagonal(self) -> bool:
        return set(self.paulis) <= {"I", "Z"}

    def __str__(self) -> str:
        body = " ".join(f"{p}{w}" for p, w in zip(self.paulis, self.wires)) or "I"
        return body if self.coeff == 1 else f"{self.coeff}*{body}"


@dataclass(frozen=True)
class Hamiltonian:
    """A real-weighted sum of Pauli strings."""

    terms: tuple[PauliString, ...]

    def __add__(self, other: "Observable") -> "Hamiltonian":
        more = other.terms if isinstance(other, Hamiltonian) else (other,)
        return Hamiltonian(self.terms + tuple(more))

    def __mul__(self, c: float) -> "Hamiltonian":
        return Hamiltonian(tuple(t * c for t in self.terms))

    __rmul__ = __mul__


Observable = Union[PauliString, Hamiltonian]


def X(w: int) -> PauliString:
    """Pauli X on wire ``w``."""
    return PauliString("X", (w,))


def Y(w: int) -> PauliString:
    """Pauli Y on wire ``w``."""
    return PauliString("Y", (w,))


def Z(w: int) -> PauliString:
    """Pauli Z on wire ``w``."""
    return PauliString("Z", (w,))


def pauli(spec: str, coeff: float = 1.0) -> PauliString:
    """Parse ``"Z0 X2"`` (letter then wire, space separated).

    >>> str(pauli("Z0 X2"))
    'Z0 X2'
    """
    letters, wires = [], []
    for tok in spec.split():
        if len(tok) < 2 or not tok[1:].isdigit():
            raise ObservableError(f"bad Pauli term {tok!r}; write letter+wire, e.g. 'Z0 X1'")
        letters.append(tok[0].upper())
        wires.append(int(tok[1:]))
    return PauliString("".join(letters), tuple(wires), coeff)


def _terms(observables: Iterable[Observable]) -> list[tuple[int, PauliString]]:
    out = []
    for i, ob in enumerate(observables):
        if isinstance(ob, PauliString):
            out.append((i, ob))
        elif isinstance(ob, Hamiltonian):
            out.extend((i, t) for t in ob.terms)
        else:
            raise ObservableError(f"observables must be PauliString or Hamiltonian, got {type(ob).__name__}")
    return out


class _Abs2(torch.autograd.Function):
    """``|z|**2`` with a one-pass backward (``dL/dz = 2 g z`` in torch's convention)."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:  # type: ignore[override]
        z = z.resolve_conj()
        ctx.save_for_backward(z)
        zr = torch.view_as_real(z)
        return torch.einsum("...k,...k->...", zr, zr)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        (z,) = ctx.saved_tensors  # differentiable ops on the saved input: higher derivatives work
        return torch.view_as_complex(torch.view_as_real(z) * (2 * g).unsqueeze(-1))


def abs2(state: Tensor) -> Tensor:
    """``|state|**2`` elementwise (real), differentiable."""
    return _Abs2.apply(state)


def _check_wires(p: PauliString, n: int) -> None:
    bad = [w for w in p.wires if w >= n]
    if bad:
        raise ObservableError(f"observable {p} acts on wire {bad[0]}, but the state has {n} wires (0..{n - 1})")


def _masks(p: PauliString, n: int) -> tuple[int, int, int]:
    """(flip mask of X/Y, Z-phase mask of Y/Z, number of Y) for a Pauli string."""
    flip = zmask = ny = 0
    for letter, w in zip(p.paulis, p.wires):
        bit = 1 << (n - 1 - w)
        if letter in "XY":
            flip |= bit
        if letter in "YZ":
            zmask |= bit
        ny += letter == "Y"
    return flip, zmask, ny


def _parity_signs(mask: int, n: int, device: torch.device, rdtype: torch.dtype) -> Tensor:
    idx = torch.arange(2**n, device=device)
    v = idx & mask
    par = torch.zeros_like(idx)
    while mask:
        par ^= v & 1
        v >>= 1
        mask >>= 1
    return (1 - 2 * par).to(rdtype)


def diagonal_matrix(observables: Sequence[Observable], n: int, device: torch.device,
                    rdtype: torch.dtype) -> Tensor | None:
    """``[2**n, n_obs]`` eigenvalue table when every observable is diagonal (I/Z only), else ``None``."""
    terms = _terms(observables)
    if not all(p.is_diagonal for _, p in terms):
        return None
    table = torch.zeros(2**n, len(observables), dtype=rdtype, device=device)
    for i, p in terms:
        _check_wires(p, n)
        _, zmask, _ = _masks(p, n)
        table[:, i] += p.coeff * _parity_signs(zmask, n, device, rdtype)
    return table


def expval(state: Tensor, observables: Sequence[Observable], n: int) -> Tensor:
    """Expectations ``[B, n_obs]`` (real) of Pauli strings / Hamiltonians on ``state [B, 2**n]``."""
    if state.dim() != 2 or state.shape[1] != 2**n:
        raise ShapeError(f"state must have shape [batch, {2 ** n}], got {list(state.shape)}")
    rdtype = state.real.dtype
    table = diagonal_matrix(observables, n, state.device, rdtype)
    if table is not None:
        return abs2(state) @ table
    cols = []
    for terms in _grouped(observables):
        acc = torch.zeros(state.shape[0], dtype=rdtype, device=state.device)
        for p in terms:
            acc = acc + p.coeff * _pauli_expval(state, p, n)
        cols.append(acc)
    return torch.stack(cols, dim=1)


def _grouped(observables: Sequence[Observable]) -> list[list[PauliString]]:
    groups: list[list[PauliString]] = [[] for _ in observables]
    for i, p in _terms(observables):
        groups[i].append(p)
    return groups


def _pauli_expval(state: Tensor, p: PauliString, n: int) -> Tensor:
    _check_wires(p, n)
    flip, zmask, ny = _masks(p, n)
    dev, rdtype = state.device, state.real.dtype
    signs = _parity_signs(zmask, n, dev, rdtype)
    if flip == 0:
        return abs2(state) @ signs
    src = torch.arange(2**n, device=dev) ^ flip
    # (P ψ)[j] = i^{ny} * sign(j ^ flip) * ψ[j ^ flip]  with sign from Z-parity of the source index
    moved = state.index_select(1, src) * signs[src]
    val = (state.conj() * moved).sum(1) * (1j**ny)
    return val.real


def probs(state: Tensor, n: int, wires: Sequence[int] | None = None) -> Tensor:
    """Marginal probabilities ``[B, 2**len(wires)]`` (all wires when ``wires`` is None), wire order as given."""
    return marginal(abs2(state), n, wires)


def marginal(p: Tensor, n: int, wires: Sequence[int] | None = None) -> Tensor:
    """The marginal of probabilities ``p [B, 2**n]`` on ``wires``, in the order given."""
    if wires is None:
        return p
    wires = [int(w) for w in wires]
    if any(w < 0 or w >= n for w in wires) or len(set(wires)) != len(wires):
        raise WireError(f"probs wires {wires} must be distinct and in 0..{n - 1}")
    t = p.reshape((p.shape[0],) + (2,) * n)
    rest = [1 + w for w in range(n) if w not in wires]
    if rest:
        t = t.sum(dim=rest)
    kept = sorted(wires)
    t = t.permute([0] + [1 + kept.index(w) for w in wires])
    return t.reshape(p.shape[0], -1)


def sample(state: Tensor, n: int, shots: int, generator: torch.Generator | None = None,
           wires: Sequence[int] | None = None) -> Tensor:
    """Basis-state samples ``[B, shots, len(wires)]`` of 0/1 (int64), drawn with ``generator``."""
    if not isinstance(shots, int) or shots < 1:
        raise ShapeError(f"shots must be a positive integer, got {shots!r}")
    wires = list(range(n)) if wires is None else list(wires)
    p = probs(state, n, wires).detach()
    p = p / p.sum(1, keepdim=True)
    draws = torch.multinomial(p.to("cpu", torch.float64), shots, replacement=True, generator=generator)
    k = len(wires)
    bits = (draws.unsqueeze(-1) >> torch.arange(k - 1, -1, -1)) & 1
    return bits.to(state.device)


def counts(state: Tensor, n: int, shots: int, generator: torch.Generator | None = None,
           wires: Sequence[int] | None = None) -> list[dict[str, int]]:
    """Counts per sample as ``{"0101": n}`` bitstrings (first wire leftmost, as PennyLane)."""
    s = sample(state, n, shots, generator, wires).cpu()
    out = []
    for b in range(s.shape[0]):
        c = Counter("".join(str(int(v)) for v in row) for row in s[b])
        out.append(dict(sorted(c.items())))
    return out


def expval_from_samples(samples: Tensor, observables: Sequence[Observable]) -> Tensor:
    """Estimate diagonal (I/Z) observables from samples ``[B, shots, n]``."""
    n = samples.shape[-1]
    out = []
    for terms in _grouped(observables):
        acc = torch.zeros(samples.shape[0], dtype=torch.float64, device=samples.device)
        for p in terms:
            if not p.is_diagonal:
                raise ObservableError(f"{p} is not diagonal; rotate the basis before sampling")
            _check_wires(p, n)
            zw = [w for letter, w in zip(p.paulis, p.wires) if letter == "Z"]
            par = samples[..., zw].sum(-1) % 2 if zw else torch.zeros_like(samples[..., 0])
            acc = acc + p.coeff * (1 - 2 * par).to(torch.float64).mean(1)
        out.append(acc)
    return torch.stack(out, 1)
