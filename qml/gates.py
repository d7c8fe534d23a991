"""The gate set: one :class:`Gate` record per gate kind, all matrices batched.

Wire convention (the one place it is documented): **wire 0 is the most significant
bit**. The state of ``n`` wires reshaped to ``[2] * n`` has wire ``w`` on axis ``w``,
and a ``k``-wire gate matrix is indexed with its first wire as the most significant
bit, exactly as in PennyLane. Qiskit orders qubits the other way round
(little-endian); conversion happens only at the Qiskit boundary.

A gate's matrix function takes real parameters of shape ``[B, num_params]`` and
returns complex matrices of shape ``[B, 2**k, 2**k]``:

>>> import torch
>>> from tinyqml.qml.gates import RY, CX
>>> RY.matrix(torch.tensor([[0.0], [3.141592653589793]]), 1, torch.complex128).shape
torch.Size([2, 2, 2])
>>> CX.permutation(2)
(0, 1, 3, 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from tinyqml.qml.errors import UnknownGateError

Tensor = torch.Tensor
MatrixFn = Callable[[Tensor, int, torch.dtype], Tensor]

#: parameter-shift rule terms ``(coefficient, shift)``: df/dθ = Σ c·f(θ + s)
TWO_TERM = ((0.5, math.pi / 2), (-0.5, -math.pi / 2))
_C1 = (math.sqrt(2) + 1) / (4 * math.sqrt(2))
_C2 = (math.sqrt(2) - 1) / (4 * math.sqrt(2))
FOUR_TERM = (
    (_C1, math.pi / 2),
    (-_C1, -math.pi / 2),
    (-_C2, 3 * math.pi / 2),
    (_C2, -3 * math.pi / 2),
)


@dataclass(frozen=True, eq=False)
class Gate:
    """One gate kind.

    Attributes:
        name: registry key (PennyLane-style capitalisation: ``"RX"``, ``"CX"``).
        num_wires: fixed wire count, or ``0`` for variadic gates (``min_wires`` applies).
        num_params: number of real parameters.
        matrix: ``(params [B, P], k, complex dtype) -> [B, 2**k, 2**k]``.
        structure: ``"dense"``, ``"diagonal"`` or ``"permutation"``; kernels use it.
        diagonal: for diagonal gates, ``(params, k, dtype) -> [B, 2**k]``.
        permutation: for permutation gates, ``k -> perm`` with ``out[i] = in[perm[i]]``.
        controls: number of leading control wires (0 for none); ``base`` is the
            gate applied to the remaining wires when all controls are 1.
        shift_rules: per parameter, the parameter-shift terms.
        inverse: per parameter ``(source index, sign, offset)`` giving the inverse's
            parameters, with ``inverse_name`` the inverse's gate (``None``: no gate in
            the set; the inverse is a QubitUnitary).
        periods: per parameter, the period after which the gate repeats exactly
            (up to a global phase); used to prune rotations that are ≡ 0.
        real: the matrix is real for every parameter value; the simulator applies
            layers of such gates with real arithmetic (half the work).
    """

    name: str
    num_wires: int
    num_params: int
    matrix: MatrixFn
    structure: str = "dense"
    diagonal: Callable[[Tensor, int, torch.dtype], Tensor] | None = None
    permutation: Callable[[int], tuple[int, ...]] | None = None
    controls: int = 0
    base: "Gate | None" = None
    shift_rules: tuple[tuple[tuple[float, float], ...], ...] = ()
    inverse_name: str | None = None
    inverse: tuple[tuple[int, float, float], ...] = ()
    periods: tuple[float, ...] = ()
    min_wires: int = 1
    hermitian: bool = field(default=False)
    real: bool = False  # matrix is real for every parameter value (RY, H, X, Z, ...)

    def __repr__(self) -> str:
        return f"Gate({self.name})"

    def __reduce__(self) -> tuple:
        # gates are registry singletons compared by identity: copy/pickle by name
        return (get_gate, (self.name,))

    def check_wires(self, k: int) -> bool:
        """Whether the gate accepts ``k`` wires."""
        if self.num_wires:
            return k == self.num_wires
        return k >= self.min_wires


# --------------------------------------------------------------------------- helpers


def _const(rows: list[list[complex]], dtype: torch.dtype, b: int) -> Tensor:
    m = torch.tensor(rows, dtype=dtype)
    return m.unsqueeze(0).expand(b, -1, -1)


def _fixed(rows: list[list[complex]]) -> MatrixFn:
    def fn(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
        return _const(rows, dtype, p.shape[0]).to(p.device)

    return fn


def _mat2(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """Stack four [B] tensors into [B, 2, 2]."""
    return torch.stack([torch.stack([a, b], -1), torch.stack([c, d], -1)], -2)


def _cis(x: Tensor, dtype: torch.dtype) -> Tensor:
    """exp(i x) as a complex tensor."""
    return torch.polar(torch.ones_like(x), x).to(dtype)


def _cs(p: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    half = p[:, 0] / 2
    return torch.cos(half).to(dtype), torch.sin(half).to(dtype)


def _perm_from_fn(k: int, fn: Callable[[list[int]], list[int]]) -> tuple[int, ...]:
    """Basis permutation of a classical reversible gate given on bit lists (wire 0 first)."""
    out = []
    for i in range(2**k):
        bits = [(i >> (k - 1 - j)) & 1 for j in range(k)]
        src = fn(bits)  # the input basis state mapped to output i (gates here are involutions)
        out.append(sum(b << (k - 1 - j) for j, b in enumerate(src)))
    return tuple(out)


def _perm_matrix(perm_fn: Callable[[int], tuple[int, ...]]) -> MatrixFn:
    def fn(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
        perm = perm_fn(k)
        d = len(perm)
        m = torch.zeros(d, d, dtype=dtype, device=p.device)
        m[torch.arange(d), torch.tensor(perm)] = 1
        return m.unsqueeze(0).expand(p.shape[0], -1, -1)

    return fn


def _diag_matrix(diag_fn: Callable[[Tensor, int, torch.dtype], Tensor]) -> MatrixFn:
    def fn(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
        return torch.diag_embed(diag_fn(p, k, dtype))

    return fn


def _controlled_matrix(base: "Gate", controls: int) -> MatrixFn:
    def fn(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
        kb = k - controls
        u = base.matrix(p, kb, dtype)
        b, db = u.shape[0], u.shape[-1]
        d = db << controls
        m = torch.eye(d, dtype=dtype, device=p.device).unsqueeze(0).repeat(b, 1, 1)
        m[:, d - db :, d - db :] = u
        return m

    return fn


# --------------------------------------------------------------------------- matrices


def _rx(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    c, s = _cs(p, dtype)
    return _mat2(c, -1j * s, -1j * s, c)


def _ry(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    c, s = _cs(p, dtype)
    return _mat2(c, -s, s, c)


def _rz_diag(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    half = p[:, 0] / 2
    return torch.stack([_cis(-half, dtype), _cis(half, dtype)], -1)


def _phase_diag(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    one = torch.ones_like(p[:, 0]).to(dtype)
    return torch.stack([one, _cis(p[:, 0], dtype)], -1)


def _u3(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    theta, phi, lam = p[:, 0], p[:, 1], p[:, 2]
    c, s = torch.cos(theta / 2).to(dtype), torch.sin(theta / 2).to(dtype)
    e_phi, e_lam = _cis(phi, dtype), _cis(lam, dtype)
    # e^{i phi} e^{i lam}, not e^{i (phi + lam)}: the rounded (or overflowing) sum of two large
    # angles would break unitarity (|U^dagger U - I| ~ 1e-9 at lam ~ 1e7)
    return _mat2(c, -e_lam * s, e_phi * s, e_phi * e_lam * c)


def _u2(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    full = torch.cat([torch.full_like(p[:, :1], math.pi / 2), p], dim=1)
    return _u3(full, k, dtype)


def _pauli_rot(kind: str) -> MatrixFn:
    """exp(-i θ/2 P⊗P) for P in X, Y, and exp(-i θ/2 Z⊗X)."""
    base = {
        "XX": [[0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]],
        "YY": [[0, 0, 0, -1], [0, 0, 1, 0], [0, 1, 0, 0], [-1, 0, 0, 0]],
        "ZX": [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, -1], [0, 0, -1, 0]],
    }[kind]

    def fn(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
        c, s = _cs(p, dtype)
        gen = torch.tensor(base, dtype=dtype, device=p.device)
        eye = torch.eye(4, dtype=dtype, device=p.device)
        return c[:, None, None] * eye - 1j * s[:, None, None] * gen

    return fn


def _zz_signs(k: int, device: torch.device | None = None) -> Tensor:
    """Eigenvalues (+1/-1) of Z⊗...⊗Z on k wires, basis order."""
    idx = torch.arange(2**k, device=device)
    parity = torch.zeros_like(idx)
    for j in range(k):
        parity ^= (idx >> j) & 1
    return 1 - 2 * parity


def _multirz_diag(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    signs = _zz_signs(k, p.device).to(p.dtype)
    return _cis(-p[:, :1] / 2 * signs, dtype)


def _unitary_placeholder(p: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    raise UnknownGateError("QubitUnitary carries its matrix on the operation; use Op.matrix")


def _mcx_perm(k: int) -> tuple[int, ...]:
    return _perm_from_fn(k, lambda b: b[:-1] + [b[-1] ^ 1] if all(b[:-1]) else b)


def _swap_perm(k: int) -> tuple[int, ...]:
    return _perm_from_fn(k, lambda b: [b[1], b[0]])


def _cswap_perm(k: int) -> tuple[int, ...]:
    return _perm_from_fn(k, lambda b: [b[0], b[2], b[1]] if b[0] else b)


_S2 = 1 / math.sqrt(2)

# --------------------------------------------------------------------------- registry

GATES: dict[str, Gate] = {}


def _register(g: Gate) -> Gate:
    GATES[g.name] = g
    return g


def _real(g: Gate) -> Gate:
    """Mark a registered gate as real-valued (re-registers the updated record)."""
    return _register(replace(g, real=True))


def _fixed_gate(name: str, rows: list[list[complex]], inv: str | None, herm: bool = False) -> Gate:
    k = int(math.log2(len(rows)))
    return _register(Gate(name, k, 0, _fixed(rows), inverse_name=inv, hermitian=herm))


def _diag_gate(name: str, diag: list[complex], inv: str | None, herm: bool = False) -> Gate:
    k = int(math.log2(len(diag)))

    def dfn(p: Tensor, kk: int, dtype: torch.dtype) -> Tensor:
        return torch.tensor(diag, dtype=dtype, device=p.device).unsqueeze(0).expand(p.shape[0], -1)

    return _register(
        Gate(name, k, 0, _diag_matrix(dfn), structure="diagonal", diagonal=dfn, inverse_name=inv, hermitian=herm)
    )


def _perm_gate(name: str, k: int, perm_fn: Callable[[int], tuple[int, ...]], **kw: object) -> Gate:
    return _register(
        Gate(
            name, k, 0, _perm_matrix(perm_fn), structure="permutation", permutation=perm_fn,
            inverse_name=name, hermitian=True, **kw,  # type: ignore[arg-type]
        )
    )


def _rot_gate(name: str, k: int, fn: MatrixFn, period: float = 4 * math.pi, **kw: object) -> Gate:
    return _register(
        Gate(name, k, 1, fn, shift_rules=(TWO_TERM,), inverse_name=name, inverse=((0, -1.0, 0.0),),
             periods=(period,), **kw)  # type: ignore[arg-type]
    )


def _controlled(name: str, base: Gate, controls: int = 1, **kw: object) -> Gate:
    """A controlled version of ``base``: matrix blockdiag(I, U); structure inherited."""
    k = base.num_wires + controls if base.num_wires else 0
    structure = base.structure
    diag = None
    if base.structure == "diagonal":
        bd = base.diagonal
        assert bd is not None

        def diag(p: Tensor, kk: int, dtype: torch.dtype, _bd=bd) -> Tensor:
            inner = _bd(p, kk - controls, dtype)
            ones = torch.ones(p.shape[0], (2 ** (kk - controls)) * (2**controls - 1), dtype=dtype, device=p.device)
            return torch.cat([ones, inner], -1)

    perm = None
    if base.structure == "permutation":
        bp = base.permutation
        assert bp is not None

        def perm(kk: int, _bp=bp) -> tuple[int, ...]:
            inner = _bp(kk - controls)
            off = (2**kk) - len(inner)
            return tuple(range(off)) + tuple(off + i for i in inner)

    fields = dict(
        structure=structure, diagonal=diag, permutation=perm, controls=controls, base=base,
        inverse_name=kw.pop("inverse_name", name), inverse=base.inverse, periods=base.periods,
        hermitian=base.hermitian,
    )
    fields.update(kw)
    return _register(Gate(name, k, base.num_params, _controlled_matrix(base, controls), **fields))  # type: ignore[arg-type]


I = _real(_diag_gate("I", [1, 1], "I", herm=True))
H = _real(_fixed_gate("H", [[_S2, _S2], [_S2, -_S2]], "H", herm=True))
X = _real(_perm_gate("X", 1, lambda k: (1, 0)))
Y = _fixed_gate("Y", [[0, -1j], [1j, 0]], "Y", herm=True)
Z = _real(_diag_gate("Z", [1, -1], "Z", herm=True))
S = _diag_gate("S", [1, 1j], "Sdg")
Sdg = _diag_gate("Sdg", [1, -1j], "S")
T = _diag_gate("T", [1, complex(_S2, _S2)], "Tdg")
Tdg = _diag_gate("Tdg", [1, complex(_S2, -_S2)], "T")
SX = _fixed_gate("SX", [[0.5 + 0.5j, 0.5 - 0.5j], [0.5 - 0.5j, 0.5 + 0.5j]], "SXdg")
SXdg = _fixed_gate("SXdg", [[0.5 - 0.5j, 0.5 + 0.5j], [0.5 + 0.5j, 0.5 - 0.5j]], "SX")

RX = _rot_gate("RX", 1, _rx)
RY = _real(_rot_gate("RY", 1, _ry))
RZ = _register(
    Gate("RZ", 1, 1, _diag_matrix(_rz_diag), structure="diagonal", diagonal=_rz_diag, shift_rules=(TWO_TERM,),
         inverse_name="RZ", inverse=((0, -1.0, 0.0),), periods=(4 * math.pi,))
)
P = _register(
    Gate("P", 1, 1, _diag_matrix(_phase_diag), structure="diagonal", diagonal=_phase_diag, shift_rules=(TWO_TERM,),
         inverse_name="P", inverse=((0, -1.0, 0.0),), periods=(2 * math.pi,))
)
U = _register(
    Gate("U", 1, 3, _u3, shift_rules=(TWO_TERM,) * 3, inverse_name="U",
         inverse=((0, -1.0, 0.0), (2, -1.0, 0.0), (1, -1.0, 0.0)), periods=(4 * math.pi, 2 * math.pi, 2 * math.pi))
)
U2 = _register(
    Gate("U2", 1, 2, _u2, shift_rules=(TWO_TERM,) * 2, inverse_name="U2",
         inverse=((1, -1.0, -math.pi), (0, -1.0, math.pi)), periods=(2 * math.pi, 2 * math.pi))
)

CX = _controlled("CX", X)
CY = _controlled("CY", Y)
CZ = _controlled("CZ", Z)
CH = _controlled("CH", H)
SWAP = _perm_gate("SWAP", 2, _swap_perm)
ISWAP = _fixed_gate("ISWAP", [[1, 0, 0, 0], [0, 0, 1j, 0], [0, 1j, 0, 0], [0, 0, 0, 1]], None)
ECR = _fixed_gate(
    "ECR",
    [[0, 0, _S2, 1j * _S2], [0, 0, 1j * _S2, _S2], [_S2, -1j * _S2, 0, 0], [-1j * _S2, _S2, 0, 0]],
    "ECR",
    herm=True,
)
CRX = _controlled("CRX", RX, shift_rules=(FOUR_TERM,))
CRY = _controlled("CRY", RY, shift_rules=(FOUR_TERM,))
CRZ = _controlled("CRZ", RZ, shift_rules=(FOUR_TERM,))
CP = _controlled("CP", P, shift_rules=(TWO_TERM,))
CU = _controlled("CU", U, shift_rules=(FOUR_TERM, TWO_TERM, TWO_TERM))
RXX = _rot_gate("RXX", 2, _pauli_rot("XX"))
RYY = _rot_gate("RYY", 2, _pauli_rot("YY"))
RZX = _rot_gate("RZX", 2, _pauli_rot("ZX"))
MultiRZ = _register(
    Gate("MultiRZ", 0, 1, _diag_matrix(_multirz_diag), structure="diagonal", diagonal=_multirz_diag,
         shift_rules=(TWO_TERM,), inverse_name="MultiRZ", inverse=((0, -1.0, 0.0),), periods=(4 * math.pi,))
)
RZZ = _register(
    Gate("RZZ", 2, 1, _diag_matrix(_multirz_diag), structure="diagonal", diagonal=_multirz_diag,
         shift_rules=(TWO_TERM,), inverse_name="RZZ", inverse=((0, -1.0, 0.0),), periods=(4 * math.pi,))
)
CCX = _controlled("CCX", X, controls=2)
CCZ = _controlled("CCZ", Z, controls=2)
CSWAP = _perm_gate("CSWAP", 3, _cswap_perm, controls=1, base=SWAP)
MCX = _register(
    Gate("MCX", 0, 0, _perm_matrix(_mcx_perm), structure="permutation", permutation=_mcx_perm,
         inverse_name="MCX", hermitian=True, min_wires=2)
)
QubitUnitary = _register(Gate("QubitUnitary", 0, 0, _unitary_placeholder, min_wires=1))

#: PennyLane / common aliases accepted by :func:`get_gate` (the registry keys are canonical)
ALIASES = {
    "CNOT": "CX", "TOFFOLI": "CCX", "U3": "U", "CU3": "CU", "PHASESHIFT": "P", "CONTROLLEDPHASESHIFT": "CP",
    "ISWAP": "ISWAP", "IDENTITY": "I", "ISINGXX": "RXX", "ISINGYY": "RYY", "ISINGZZ": "RZZ", "MULTICONTROLLEDX": "MCX",
    "SDG": "Sdg", "TDG": "Tdg", "SXDG": "SXdg", "SADJ": "Sdg", "TADJ": "Tdg", "MULTIRZ": "MultiRZ",
    "QUBITUNITARY": "QubitUnitary", "UNITARY": "QubitUnitary",
}


def get_gate(name: str) -> Gate:
    """Look a gate up by name (case-insensitive, common aliases accepted).

    >>> get_gate("cnot").name
    'CX'
    >>> get_gate("foo")
    Traceback (most recent call last):
    ...
    tinyqml.qml.errors.UnknownGateError: unknown gate 'foo'; known gates: CCX, CCZ, CH, ...
    """
    if isinstance(name, Gate):
        return name
    if name in GATES:
        return GATES[name]
    upper = str(name).upper()
    for key in GATES:
        if key.upper() == upper:
            return GATES[key]
    if upper in ALIASES:
        return GATES[ALIASES[upper]]
    known = ", ".join(sorted(GATES))
    raise UnknownGateError(f"unknown gate {name!r}; known gates: {known}")
