"""Trainable ansätze: circuits whose parameters are ``weight(k)`` references.

Weights are numbered from ``weight_offset`` on, layer by layer, so an ansatz composes
with an encoder (features only) or with another ansatz (a larger offset). A
circuit's ``n_weights`` is one more than its largest weight index, i.e.
``weight_offset`` plus the ansatz's own weights.

>>> import torch, tinyqml.qml as tq
>>> from tinyqml.qml import encoders
>>> model = classifier_circuit(encoders.angle(3), strongly_entangling(3, n_layers=2))
>>> model.n_inputs, model.n_weights
(3, 18)
>>> w = torch.zeros(model.n_weights, dtype=torch.float64)
>>> tq.expval(model, [tq.Z(0)], weights=w, inputs=torch.zeros(4, 3)).shape
torch.Size([4, 1])
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable, Sequence

from tinyqml.qml import gates as G
from tinyqml.qml.circuit import Circuit, CircuitBuilder, weight
from tinyqml.qml.errors import ParameterError

__all__ = [
    "ENTANGLERS", "entangler_pairs", "hardware_efficient", "strongly_entangling", "strongly_entangling_ranges",
    "u3cu3", "classifier_circuit",
]

Pairs = tuple[tuple[int, int], ...]


def _ring(n: int) -> Pairs:
    return tuple((i, (i + 1) % n) for i in range(n)) if n > 1 else ()


def _linear(n: int) -> Pairs:
    return tuple((i, i + 1) for i in range(n - 1))


def _all(n: int) -> Pairs:
    return tuple(combinations(range(n), 2))


#: entangling patterns: name -> (n_wires -> (control, target) pairs)
ENTANGLERS: dict[str, Callable[[int], Pairs]] = {"ring": _ring, "linear": _linear, "all": _all}


def entangler_pairs(name: str, n_wires: int) -> Pairs:
    """The (control, target) pairs of an entangling pattern, in application order.

    ``"ring"``: ``(i, i+1 mod n)`` for every wire (two gates for ``n = 2``, none for
    ``n = 1``); ``"linear"``: ``(i, i+1)``; ``"all"``: every pair ``i < j``.

    >>> entangler_pairs("ring", 3), entangler_pairs("linear", 3), entangler_pairs("all", 3)
    (((0, 1), (1, 2), (2, 0)), ((0, 1), (1, 2)), ((0, 1), (0, 2), (1, 2)))
    >>> entangler_pairs("star", 3)
    Traceback (most recent call last):
    ...
    tinyqml.qml.errors.ParameterError: unknown entangler 'star'; choose one of ring, linear, all
    """
    if name not in ENTANGLERS:
        raise ParameterError(f"unknown entangler {name!r}; choose one of {', '.join(ENTANGLERS)}")
    return ENTANGLERS[name](n_wires)


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"{name} must be a positive integer, got {value!r}")


def _check_offset(weight_offset: int) -> None:
    if isinstance(weight_offset, bool) or not isinstance(weight_offset, int) or weight_offset < 0:
        raise ParameterError(f"weight_offset must be a non-negative integer, got {weight_offset!r}")


def _rotation_gate(name: str | G.Gate) -> G.Gate:
    g = G.get_gate(name)
    if g.num_wires != 1 or g.num_params != 1:
        raise ParameterError(f"rotations must be one-wire one-parameter gates (RX, RY, RZ, P), got {g.name}")
    return g


def hardware_efficient(n_wires: int, n_layers: int, rotations: Sequence[str] = ("RY", "RZ"),
                       entangler: str = "ring", weight_offset: int = 0) -> Circuit:
    """Hardware-efficient ansatz: per layer, each rotation on every wire, then a CX pattern.

    Weight ``weight_offset + (layer * len(rotations) + r) * n_wires + wire`` drives
    rotation ``r`` on ``wire``; the CX pairs are :func:`entangler_pairs` of ``entangler``.

    >>> c = hardware_efficient(3, n_layers=2, entangler="linear")
    >>> c.gate_counts, c.n_weights
    ({'RY': 6, 'RZ': 6, 'CX': 4}, 12)
    """
    Circuit(n_wires)
    _check_count("n_layers", n_layers)
    _check_offset(weight_offset)
    gates = [_rotation_gate(r) for r in ([rotations] if isinstance(rotations, str) else rotations)]
    if not gates:
        raise ParameterError("hardware_efficient needs at least one rotation")
    pairs = entangler_pairs(entangler, n_wires)
    b = CircuitBuilder(n_wires)
    k = weight_offset
    for _ in range(n_layers):
        for g in gates:
            for w in range(n_wires):
                b.append(g, w, weight(k))
                k += 1
        for c, t in pairs:
            b.cx(c, t)
    return b.build()


def strongly_entangling_ranges(n_wires: int, n_layers: int) -> tuple[int, ...]:
    """PennyLane's default ranges: ``l mod (n_wires - 1) + 1`` (all 0 on one wire).

    >>> strongly_entangling_ranges(4, 5)
    (1, 2, 3, 1, 2)
    """
    if n_wires == 1:
        return (0,) * n_layers
    return tuple(layer % (n_wires - 1) + 1 for layer in range(n_layers))


def strongly_entangling(n_wires: int, n_layers: int, ranges: Sequence[int] | None = None,
                        weight_offset: int = 0) -> Circuit:
    """PennyLane's ``StronglyEntanglingLayers`` (CNOT imprimitive), weights flattened from ``[L, n, 3]``.

    Layer ``l`` applies ``Rot(φ, θ, ω) = RZ(ω) RY(θ) RZ(φ)`` on each wire ``i`` with
    ``(φ, θ, ω)`` = weights ``weight_offset + 3 * (l * n_wires + i) + (0, 1, 2)``, then
    ``CX(i, (i + r_l) mod n)`` for every wire (none on a single wire). So
    ``weights = W.reshape(-1)`` for PennyLane's ``W`` of shape ``[L, n, 3]``.

    >>> c = strongly_entangling(2, 1)
    >>> [(op.name, op.wires) for op in c.ops[3:]]
    [('RZ', (1,)), ('RY', (1,)), ('RZ', (1,)), ('CX', (0, 1)), ('CX', (1, 0))]
    """
    Circuit(n_wires)
    _check_count("n_layers", n_layers)
    _check_offset(weight_offset)
    if ranges is None:
        rs = strongly_entangling_ranges(n_wires, n_layers)
    else:
        rs = tuple(int(r) for r in ranges)
        if len(rs) != n_layers:
            raise ParameterError(f"ranges needs one entry per layer ({n_layers}), got {len(rs)}")
        if n_wires > 1 and any(r % n_wires == 0 for r in rs):
            raise ParameterError(f"ranges must not be 0 or a multiple of n_wires={n_wires}; got {rs}")
    b = CircuitBuilder(n_wires)
    for layer in range(n_layers):
        for i in range(n_wires):
            k = weight_offset + 3 * (layer * n_wires + i)
            b.rz(i, weight(k)).ry(i, weight(k + 1)).rz(i, weight(k + 2))
        if n_wires > 1:
            for i in range(n_wires):
                b.cx(i, (i + rs[layer]) % n_wires)
    return b.build()


def u3cu3(n_wires: int, n_blocks: int, entangler: str = "ring", weight_offset: int = 0) -> Circuit:
    """QuantumNAS-style ``U3+CU3`` blocks: ``U(θ, φ, λ)`` on every wire, then ``CU`` on each pair.

    The pairs are :func:`entangler_pairs` of ``entangler`` (default ring ``i -> i+1 mod n``).
    Each gate takes three consecutive weights, in circuit order, from ``weight_offset`` on.

    >>> c = u3cu3(3, n_blocks=2)
    >>> c.gate_counts, c.n_weights
    ({'U': 6, 'CU': 6}, 36)
    """
    Circuit(n_wires)
    _check_count("n_blocks", n_blocks)
    _check_offset(weight_offset)
    pairs = entangler_pairs(entangler, n_wires)
    b = CircuitBuilder(n_wires)
    k = weight_offset
    for _ in range(n_blocks):
        for w in range(n_wires):
            b.u(w, weight(k), weight(k + 1), weight(k + 2))
            k += 3
        for c, t in pairs:
            b.cu(c, t, weight(k), weight(k + 1), weight(k + 2))
            k += 3
    return b.build()


def classifier_circuit(encoder: Circuit, ansatz: Circuit, n_reuploads: int = 1) -> Circuit:
    """``encoder`` followed by ``ansatz``, ``n_reuploads`` times (data re-uploading).

    The same weights are reused in every repetition; build ansätze with distinct
    ``weight_offset`` and compose them with ``+`` for independent weights. The two
    circuits must not both use the same weight index.

    >>> from tinyqml.qml import encoders
    >>> c = classifier_circuit(encoders.iqp(2), hardware_efficient(2, 1), n_reuploads=2)
    >>> c.n_inputs, c.n_weights, len(c)
    (2, 4, 22)
    """
    if not isinstance(encoder, Circuit) or not isinstance(ansatz, Circuit):
        raise ParameterError("classifier_circuit composes two tinyqml Circuits")
    _check_count("n_reuploads", n_reuploads)
    shared = _weight_indices(encoder) & _weight_indices(ansatz)
    if shared:
        raise ParameterError(
            f"encoder and ansatz both use weight index {min(shared)}; give the ansatz a weight_offset "
            f">= {encoder.n_weights}"
        )
    out = encoder + ansatz
    for _ in range(n_reuploads - 1):
        out = out + encoder + ansatz
    return out


def _weight_indices(c: Circuit) -> set[int]:
    return {p.index[0] for op in c.ops for p in op.params if p.kind == "weight"}
