"""Data encoders: circuits that read input features through ``feature(i)`` references.

Every encoder returns an ordinary :class:`~tinyqml.qml.circuit.Circuit` whose
parameters are feature references, so one circuit serves every batch and composes
with a trainable template (see :mod:`tinyqml.qml.templates`):

>>> import torch, tinyqml.qml as tq
>>> enc = angle(2, rotation="Y")
>>> enc.n_inputs, enc.gate_counts
(2, {'RY': 2})
>>> tq.expval(enc, [tq.Z(0), tq.Z(1)], inputs=torch.tensor([[0.0, 3.141592653589793]])).round(decimals=6)
tensor([[ 1., -1.]], dtype=torch.float64)

Amplitude encoding is not an angle encoding; :func:`amplitude` computes, in torch,
the angles of a state-preparation circuit from the data and returns the circuit
together with those angles, to be passed as ``inputs``:

>>> circ, feats = amplitude(torch.tensor([[3.0, -4.0]]), n_wires=1)
>>> tq.statevector(circ, inputs=feats).real
tensor([[ 0.6000, -0.8000]], dtype=torch.float64)
"""

from __future__ import annotations

import enum
import math
from itertools import combinations
from typing import Any, Sequence

import numpy as np
import torch

from tinyqml.qml import gates as G
from tinyqml.qml.circuit import Circuit, CircuitBuilder, feature
from tinyqml.qml.errors import EncodingError, NonFiniteError, ShapeError, WireError

Tensor = torch.Tensor

__all__ = [
    "Rotation", "angle", "iqp", "iqp_pairs",
    "amplitude", "amplitude_circuit", "amplitude_features", "amplitude_state", "amplitude_n_features",
]


# --------------------------------------------------------------------------- helpers


def _wires(n_wires: int, wires: Sequence[int] | None) -> tuple[int, ...]:
    """The wires an encoder acts on (all of them by default), checked against ``n_wires``."""
    Circuit(n_wires)  # validates n_wires
    ws = tuple(range(n_wires)) if wires is None else tuple(int(w) for w in wires)
    if not ws:
        raise WireError("an encoder needs at least one wire")
    if len(set(ws)) != len(ws):
        raise WireError(f"duplicated wire in {ws}")
    bad = [w for w in ws if not 0 <= w < n_wires]
    if bad:
        raise WireError(f"wire {bad[0]} out of range for {n_wires} wires (valid: 0..{n_wires - 1})")
    return ws


# --------------------------------------------------------------------------- angle


class Rotation(enum.Enum):
    """Rotation axis of :func:`angle`; the value is the gate."""

    X = G.RX
    Y = G.RY
    Z = G.RZ

    @classmethod
    def parse(cls, rotation: "str | Rotation") -> "Rotation":
        """``"x"``, ``"RY"``, ``Rotation.Z`` ... -> :class:`Rotation`.

        >>> Rotation.parse("ry")
        <Rotation.Y: Gate(RY)>
        >>> Rotation.parse("W")
        Traceback (most recent call last):
        ...
        tinyqml.qml.errors.EncodingError: unknown rotation axis 'W'; choose one of X, Y, Z
        """
        if isinstance(rotation, cls):
            return rotation
        key = str(rotation).upper()
        key = key[1:] if len(key) == 2 and key[0] == "R" else key
        try:
            return cls[key]
        except KeyError:
            raise EncodingError(
                f"unknown rotation axis {rotation!r}; choose one of {', '.join(r.name for r in cls)}"
            ) from None


def angle(n_wires: int, rotation: "str | Rotation" = "Y", wires: Sequence[int] | None = None,
          scale: float = 1.0) -> Circuit:
    """Angle encoding: rotation ``R_axis(scale * x[i])`` on ``wires[i]`` (PennyLane's AngleEmbedding).

    Feature ``i`` goes to the ``i``-th wire of ``wires`` (default ``0..n_wires-1``),
    so the circuit reads ``len(wires)`` features.

    >>> angle(3, "X", wires=[2, 0]).ops[0].wires, angle(3, "X", wires=[2, 0]).n_inputs
    ((2,), 2)
    """
    gate = Rotation.parse(rotation).value
    b = CircuitBuilder(n_wires)
    for i, w in enumerate(_wires(n_wires, wires)):
        b.append(gate, w, feature(i, scale=scale))
    return b.build()


# --------------------------------------------------------------------------- IQP


def iqp_pairs(n_wires: int, pairs: "str | Sequence[Sequence[int]]" = "all",
              wires: Sequence[int] | None = None) -> tuple[tuple[int, int], ...]:
    """The wire pairs of the ZZ interactions of :func:`iqp`.

    ``"all"`` is every pair ``i < j`` (PennyLane's default pattern), ``"linear"`` the
    neighbours ``(w_i, w_{i+1})``, ``"ring"`` adds ``(w_last, w_0)``; a list gives the pairs.

    >>> iqp_pairs(3)
    ((0, 1), (0, 2), (1, 2))
    >>> iqp_pairs(3, "ring")
    ((0, 1), (1, 2), (2, 0))
    """
    ws = _wires(n_wires, wires)
    if isinstance(pairs, str):
        patterns = {
            "all": lambda: tuple(combinations(ws, 2)),
            "linear": lambda: tuple(zip(ws[:-1], ws[1:])),
            "ring": lambda: tuple(zip(ws, ws[1:] + ws[:1])) if len(ws) > 2 else tuple(zip(ws[:-1], ws[1:])),
        }
        if pairs not in patterns:
            raise EncodingError(f"unknown IQP pattern {pairs!r}; choose one of {', '.join(patterns)} or a list of pairs")
        return patterns[pairs]()
    out = []
    for pair in pairs:
        p = tuple(int(w) for w in pair)
        if len(p) != 2 or p[0] == p[1]:
            raise WireError(f"an IQP pair needs two distinct wires, got {tuple(pair)!r}")
        if any(w not in ws for w in p):
            raise WireError(f"IQP pair {p} uses a wire outside the encoder's wires {ws}")
        out.append(p)
    return tuple(out)


def iqp(n_wires: int, n_repeats: int = 1, pairs: "str | Sequence[Sequence[int]]" = "all",
        wires: Sequence[int] | None = None) -> Circuit:
    """IQP (ZZ) feature map, PennyLane's ``IQPEmbedding`` convention.

    Each repetition applies ``H`` then ``RZ(x_i)`` on every wire ``w_i``, then
    ``MultiRZ(x_i * x_j)`` (``exp(-i x_i x_j Z⊗Z / 2)``) on every pair ``(w_i, w_j)``
    of :func:`iqp_pairs`. With the default wires and ``pairs="all"`` this equals
    ``qml.IQPEmbedding(x, wires=range(n_wires), n_repeats=n_repeats)``; a list of
    pairs equals its ``pattern`` argument.

    >>> c = iqp(3, n_repeats=2)
    >>> c.gate_counts, c.n_inputs
    ({'H': 6, 'RZ': 6, 'MultiRZ': 6}, 3)
    >>> c.ops[6].params[0].index
    (0, 1)
    """
    if not isinstance(n_repeats, int) or n_repeats < 1:
        raise EncodingError(f"n_repeats must be a positive integer, got {n_repeats!r}")
    ws = _wires(n_wires, wires)
    pos = {w: i for i, w in enumerate(ws)}
    pp = iqp_pairs(n_wires, pairs, ws)
    b = CircuitBuilder(n_wires)
    for _ in range(n_repeats):
        for i, w in enumerate(ws):
            b.h(w).rz(w, feature(i))
        for a, c in pp:
            b.multirz((a, c), feature((pos[a], pos[c])))
    return b.build()


# --------------------------------------------------------------------------- amplitude


def amplitude_n_features(n_wires: int, phases: bool = False) -> int:
    """Number of angles :func:`amplitude_features` produces: ``2**n - 1`` RY angles
    (plus ``2**n - 1`` RZ angles and one global phase with ``phases=True``).

    >>> amplitude_n_features(3), amplitude_n_features(3, phases=True)
    (7, 15)
    """
    Circuit(n_wires)
    m = 2**n_wires - 1
    return 2 * m + 1 if phases else m


def amplitude_state(x: Any, n_wires: int, pad_with: float = 0.0, normalize: bool = True) -> Tensor:
    """The state amplitude encoding prepares: ``x`` padded to ``2**n_wires`` and normalized.

    ``x`` is ``[L]`` or ``[B, L]`` with ``L <= 2**n_wires``, real or complex; the result is
    complex ``[B, 2**n_wires]`` (complex128, or complex64 for single-precision input).

    >>> amplitude_state([1.0, 1.0, 1.0], 2, pad_with=1.0).real
    tensor([[0.5000, 0.5000, 0.5000, 0.5000]], dtype=torch.float64)
    >>> amplitude_state([[0.0, 0.0]], 1)
    Traceback (most recent call last):
    ...
    tinyqml.qml.errors.EncodingError: amplitude encoding of an all-zero vector (row 0) is undefined
    """
    v = _padded(x, n_wires, pad_with)
    norm = v.abs().square().sum(1, keepdim=True).sqrt()
    zero = (norm[:, 0] == 0).nonzero()
    if zero.numel():
        raise EncodingError(f"amplitude encoding of an all-zero vector (row {int(zero[0, 0])}) is undefined")
    if normalize:
        v = v / norm
    else:
        err = (norm[:, 0] - 1).abs()
        tol = 1e-6 if norm.dtype == torch.float32 else 1e-10
        if (err > tol).any():
            row = int(err.argmax())
            raise EncodingError(
                f"row {row} has norm {float(norm[row, 0]):.6g}, not 1; pass normalize=True to normalize it"
            )
    cdtype = torch.complex64 if v.real.dtype == torch.float32 else torch.complex128
    return v.to(cdtype)


def _padded(x: Any, n_wires: int, pad_with: float) -> Tensor:
    """``x`` as ``[B, 2**n]`` (float or complex, float64 unless given single precision)."""
    Circuit(n_wires)
    t = _as_tensor(x)
    if not (t.is_floating_point() or t.is_complex()):
        t = t.to(torch.float64)
    elif t.dtype not in (torch.float32, torch.float64, torch.complex64, torch.complex128):
        t = t.to(torch.float64)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ShapeError(f"amplitude encoding needs x of shape [L] or [batch, L] with L >= 1, got {list(t.shape)}")
    if not torch.isfinite(t).all():
        raise NonFiniteError("amplitude encoding input contains NaN or inf")
    if not math.isfinite(pad_with):
        raise NonFiniteError(f"pad_with must be finite, got {pad_with!r}")
    dim = 2**n_wires
    if t.shape[1] > dim:
        raise EncodingError(f"{t.shape[1]} features do not fit in the {dim} amplitudes of {n_wires} wires")
    if t.shape[1] < dim:
        pad = torch.full((t.shape[0], dim - t.shape[1]), float(pad_with), dtype=t.dtype, device=t.device)
        t = torch.cat([t, pad], 1)
    return t


def _as_tensor(x: Any) -> Tensor:
    """``x`` as a tensor; Python and numpy data become float64 (complex128 if complex)."""
    if isinstance(x, torch.Tensor):
        return x
    a = np.asarray(x)
    return torch.as_tensor(a, dtype=torch.complex128 if np.iscomplexobj(a) else torch.float64)


def _safe_sqrt(s: Tensor) -> Tensor:
    """``sqrt(s)`` with a zero (not NaN) gradient where ``s == 0``."""
    pos = s > 0
    return torch.where(pos, torch.where(pos, s, torch.ones_like(s)).sqrt(), torch.zeros_like(s))


def _safe_angle(y: Tensor, x: Tensor) -> Tensor:
    """``2 * atan2(y, x)``: the RY angle taking ``|0>`` to ``(x|0> + y|1>) / r``; 0 when ``x = y = 0``."""
    zero = (x == 0) & (y == 0)
    return 2 * torch.atan2(torch.where(zero, torch.zeros_like(y), y), torch.where(zero, torch.ones_like(x), x))


def _gray_transform(level: int, dtype: torch.dtype, device: Any) -> Tensor:
    """``M [2**l, 2**l]`` with ``alpha = theta @ M``: multiplexor angles -> angles of the CX/rotation chain.

    The chain ``R(a_0) CX(c_0) R(a_1) ... R(a_{N-1}) CX(c_{N-1})`` (``c_i`` the bit where Gray codes
    ``g(i)`` and ``g(i+1)`` differ) applies ``R(sum_i (-1)^{|j & g(i)|} a_i)`` for control state ``j``.
    """
    n = 2**level
    j = torch.arange(n)
    g = j ^ (j >> 1)
    par = torch.zeros(n, n, dtype=torch.int64)
    bits = j[:, None] & g[None, :]  # [j, i]
    for _ in range(level):
        par ^= bits & 1
        bits = bits >> 1
    return ((1 - 2 * par).to(dtype) / n).to(device)


def _chain_controls(level: int) -> tuple[int, ...]:
    """Control wires of the CX chain of a multiplexor whose controls are wires ``0..level-1``."""
    n = 2**level
    out = []
    for i in range(n):
        g0, g1 = i ^ (i >> 1), ((i + 1) % n) ^ (((i + 1) % n) >> 1)
        bit = (g0 ^ g1).bit_length() - 1  # bit position, 0 = least significant = wire level-1
        out.append(level - 1 - bit)
    return tuple(out)


def _multiplexor(b: CircuitBuilder, gate: G.Gate, level: int, first_feature: int) -> int:
    """Append a uniformly controlled ``gate`` on wire ``level`` (controls ``0..level-1``); returns the next feature."""
    if level == 0:
        b.append(gate, 0, feature(first_feature))
        return first_feature + 1
    for i, c in enumerate(_chain_controls(level)):
        b.append(gate, level, feature(first_feature + i))
        b.cx(c, level)
    return first_feature + 2**level


def amplitude_circuit(n_wires: int, phases: bool = False) -> Circuit:
    """State preparation reading the angles of :func:`amplitude_features` as inputs.

    A binary tree of uniformly controlled RY rotations (wire ``l`` controlled by wires
    ``0..l-1``, each decomposed into ``2**l`` RY and ``2**l`` CX); the last level carries
    the signs of real amplitudes. ``phases=True`` adds uniformly controlled RZ rotations
    and a global phase ``P(γ) RZ(-γ)`` for complex amplitudes.

    >>> c = amplitude_circuit(3)
    >>> c.gate_counts, c.n_inputs == amplitude_n_features(3)
    ({'RY': 7, 'CX': 6}, True)
    """
    b = CircuitBuilder(n_wires)
    k = 0
    for level in range(n_wires):
        k = _multiplexor(b, G.RY, level, k)
    if phases:
        for level in range(n_wires):
            k = _multiplexor(b, G.RZ, level, k)
        b.p(0, feature(k)).rz(0, feature(k, scale=-1.0))
    return b.build()


def amplitude_features(x: Any, n_wires: int, pad_with: float = 0.0, normalize: bool = True,
                       phases: bool | None = None) -> Tensor:
    """Angles ``[B, amplitude_n_features(n_wires, phases)]`` for :func:`amplitude_circuit`.

    Differentiable w.r.t. ``x``. ``phases`` defaults to ``x.is_complex()``; real data use
    signed RY angles at the last level, so ``phases=False`` is exact for real ``x``
    (and for complex ``x`` keeps only the moduli).

    >>> amplitude_features([[1.0, 0.0, 0.0, 1.0]], 2).round(decimals=4)
    tensor([[ 1.5708,  1.5708, -1.5708]], dtype=torch.float64)
    """
    t = _as_tensor(x)
    with_phases = t.is_complex() if phases is None else bool(phases)
    v = amplitude_state(t, n_wires, pad_with, normalize)
    rdtype = v.real.dtype
    real_input = not t.is_complex()
    mag = v.real if real_input else v.abs()  # signed for real data: the last level carries the signs
    sq = mag.square()
    batch = v.shape[0]
    out = []
    for level in range(n_wires):
        if level < n_wires - 1:
            halves = sq.reshape(batch, 2**level, 2, -1).sum(-1)
            theta = _safe_angle(_safe_sqrt(halves[..., 1]), _safe_sqrt(halves[..., 0]))
        else:
            pairs = mag.reshape(batch, 2**level, 2)
            theta = _safe_angle(pairs[..., 1], pairs[..., 0])
        out.append(theta @ _gray_transform(level, rdtype, v.device))
    if with_phases:
        omega = torch.zeros_like(mag) if real_input else torch.angle(v)
        rz = []
        for level in range(n_wires - 1, -1, -1):
            pairs = omega.reshape(batch, 2**level, 2)
            rz.append((pairs[..., 1] - pairs[..., 0]) @ _gray_transform(level, rdtype, v.device))
            omega = pairs.mean(-1)
        out += rz[::-1]
        out.append(2 * omega.reshape(batch, 1))
    return torch.cat(out, 1)


def amplitude(x: Any, n_wires: int, pad_with: float = 0.0, normalize: bool = True,
              phases: bool | None = None) -> tuple[Circuit, Tensor]:
    """Amplitude encoding as ``(circuit, inputs)``: run ``circuit`` with ``inputs=inputs``.

    ``statevector(circuit, inputs=inputs)`` equals :func:`amplitude_state` of ``x``
    exactly, global phase included (``phases`` defaults to ``x.is_complex()``; real data
    need no phase gates). Compose a template after ``circuit`` to classify;
    the angles are computed from ``x`` in torch, so gradients reach ``x``.

    Raises :class:`EncodingError` for an all-zero row, more than ``2**n_wires`` features
    or (with ``normalize=False``) a row that is not normalized, and
    :class:`NonFiniteError` for NaN or inf.

    >>> import tinyqml.qml as tq
    >>> circ, feats = amplitude([[1.0, 2.0, 2.0]], n_wires=2)
    >>> (tq.statevector(circ, inputs=feats).real * 3).round(decimals=6)
    tensor([[1., 2., 2., 0.]], dtype=torch.float64)
    """
    t = _as_tensor(x)
    with_phases = t.is_complex() if phases is None else bool(phases)
    feats = amplitude_features(t, n_wires, pad_with, normalize, with_phases)
    return amplitude_circuit(n_wires, with_phases), feats
