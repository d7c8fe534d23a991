"""Circuit gates on the shared pruning engine (:mod:`tinyqml.search`).

A circuit gate is pruned as a group: the weights of one operation.
:func:`gate_groups` gives those groups for a circuit's weight vector, so a
``QuantumLayer``'s ``weights`` parameter is pruned with the same
:class:`~tinyqml.search.Pruner`, masks and schedules as any NN weight.
:func:`identity_distance` scores a gate by how far its angles are from the identity
(modulo each parameter's period); :func:`squash_circuit` compiles away every gate that is
the identity up to a global phase at the given weights: fewer gates, lower depth.

>>> import torch, tinyqml.qml as tq
>>> from tinyqml.search import Pruner, Target
>>> c = tq.CircuitBuilder(2).ry(0, tq.weight(0)).cx(0, 1).rz(1, tq.weight(1)).build()
>>> layer = tq.QuantumLayer(c, [tq.Z(1)], seed=0)
>>> with torch.no_grad(): _ = layer.weights.copy_(torch.tensor([1.2, 1e-3], dtype=torch.float64))
>>> Pruner([gate_target(layer)], importance=identity_distance(c)).prune_to(0.5)
>>> small, w = squash_circuit(c, layer.weights)
>>> small.gate_counts, w.tolist()
({'RY': 1, 'CX': 1}, [1.2])
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from tinyqml.qml import gates as G
from tinyqml.qml.circuit import Circuit, Op, Param
from tinyqml.qml.params import check_weights
from tinyqml.search import FunctionImportance, Groups, Target

__all__ = ["gate_groups", "gate_target", "identity_distance", "is_identity", "squash_circuit", "compact_weights"]

#: an operation within this distance (max entry of U - phase * I) of the identity is dropped
IDENTITY_TOL = 1e-9


def gate_groups(circuit: Circuit) -> torch.Tensor:
    """Group id per weight index: the first operation that reads it (``-1``: unused weight)."""
    ids = torch.full((circuit.n_weights,), -1, dtype=torch.int64)
    for i, op in enumerate(circuit.ops):
        for p in op.params:
            if p.kind == "weight" and ids[p.index[0]] < 0:
                ids[p.index[0]] = i
    return ids


def gate_target(layer: Any, name: str = "weights") -> Target:
    """A pruning :class:`~tinyqml.search.Target` on a ``QuantumLayer``-like module's weights,
    one group per circuit operation."""
    return Target(layer, name, Groups(gate_groups(layer.circuit)), label=f"{type(layer).__name__}.{name}")


def _wrap(angle: torch.Tensor, period: float) -> torch.Tensor:
    return (torch.remainder(angle + period / 2, period) - period / 2).abs()


def identity_distance(circuit: Circuit) -> FunctionImportance:
    """Importance per weight: distance of its angle (``scale * w + offset``) from the
    nearest multiple of the gate parameter's period (``pi`` when the gate has none)."""
    entries = []
    for op in circuit.ops:
        periods = op.gate.periods or (math.pi,) * len(op.params)
        for p, period in zip(op.params, periods):
            if p.kind == "weight":
                entries.append((p.index[0], p.scale, p.offset, period))

    def fn(w: torch.Tensor, _grad: torch.Tensor | None) -> torch.Tensor:
        out = torch.zeros_like(w)
        for idx, scale, off, period in entries:
            out[idx] = torch.maximum(out[idx], _wrap(scale * w[idx] + off, period))
        return out

    return FunctionImportance(fn)


def _angle(p: Param, w: torch.Tensor) -> float | None:
    if p.kind == "const":
        return p.scale * p.value + p.offset
    if p.kind == "weight":
        return p.scale * float(w[p.index[0]]) + p.offset
    return None  # a feature: varies with the input


def is_identity(op: Op, w: torch.Tensor, tol: float = IDENTITY_TOL) -> bool:
    """Whether ``op`` is the identity up to a global phase at weights ``w``."""
    if op.gate is G.QubitUnitary:
        m = torch.tensor(op.unitary_array())
    else:
        angles = [_angle(p, w) for p in op.params]
        if any(a is None for a in angles):
            return False
        m = op.gate.matrix(torch.tensor([angles], dtype=torch.float64).reshape(1, -1), len(op.wires),
                           torch.complex128)[0]
    phase = m[0, 0]
    if abs(abs(complex(phase)) - 1) > tol:
        return False
    return float((m - phase * torch.eye(m.shape[0], dtype=m.dtype)).abs().max()) <= tol


def compact_weights(circuit: Circuit, weights: Any) -> tuple[Circuit, torch.Tensor]:
    """Renumber the weights a circuit reads densely (0, 1, ...); returns the circuit and its weights.

    >>> import tinyqml.qml as tq
    >>> c, w = compact_weights(tq.CircuitBuilder(1).rx(0, tq.weight(3)).build(), [0, 0, 0, 0.5])
    >>> c.n_weights, w.tolist()
    (1, [0.5])
    """
    w = check_weights(circuit, torch.as_tensor(weights).detach(), torch.float64, None)
    used = sorted({p.index[0] for op in circuit.ops for p in op.params if p.kind == "weight"})
    new_index = {old: new for new, old in enumerate(used)}
    ops = []
    for op in circuit.ops:
        params = tuple(replace(p, index=(new_index[p.index[0]],)) if p.kind == "weight" else p for p in op.params)
        ops.append(replace(op, params=params))
    return Circuit(circuit.n_wires, tuple(ops)), (w[used].clone() if used else w.new_zeros(0))


def squash_circuit(circuit: Circuit, weights: Any, tol: float = IDENTITY_TOL) -> tuple[Circuit, torch.Tensor]:
    """Drop every operation that is the identity (up to a global phase) at ``weights`` and
    renumber the remaining weights densely; returns the circuit and its weight vector."""
    w = check_weights(circuit, torch.as_tensor(weights).detach(), torch.float64, None)
    kept = tuple(op for op in circuit.ops if not is_identity(op, w, tol))
    return compact_weights(Circuit(circuit.n_wires, kept), _padded(w, kept))


def _padded(w: torch.Tensor, ops: tuple[Op, ...]) -> torch.Tensor:
    n = max((p.index[0] + 1 for op in ops for p in op.params if p.kind == "weight"), default=0)
    return w[:n]
