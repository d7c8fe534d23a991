"""Tests of tinyqml.qml.prune: circuit gates on the shared pruning engine, squash."""

from __future__ import annotations

import math

import torch

import tinyqml.qml as tq
from tinyqml.qml.prune import compact_weights, gate_groups, gate_target, identity_distance, is_identity, squash_circuit
from tinyqml.search import AGP, Pruner


def _circuit():
    return (tq.CircuitBuilder(3).ry(0, tq.feature(0)).ry(1, tq.feature(1)).ry(2, tq.feature(2))
            .u(0, tq.weight(0), tq.weight(1), tq.weight(2)).rx(1, tq.weight(3)).cx(0, 1)
            .crz(1, 2, tq.weight(4)).rz(2, tq.weight(5, scale=2.0)).ry(0, tq.weight(6)).build())


def test_gate_groups_are_operations():
    c = _circuit()
    assert gate_groups(c).tolist() == [3, 3, 3, 4, 6, 7, 8]
    shared = tq.CircuitBuilder(1).rx(0, tq.weight(1)).ry(0, tq.weight(1)).build()
    assert gate_groups(shared).tolist() == [-1, 0]


def test_identity_distance_respects_periods_and_scale():
    c = _circuit()
    w = torch.tensor([4 * math.pi, 0.0, 2 * math.pi, 0.3, 4 * math.pi - 0.1, 2 * math.pi, -0.2], dtype=torch.float64)
    d = identity_distance(c)(w, None)
    assert torch.allclose(d, torch.tensor([0, 0, 0, 0.3, 0.1, 0, 0.2], dtype=torch.float64), atol=1e-12)


def test_is_identity_up_to_global_phase_only():
    w = torch.tensor([2 * math.pi], dtype=torch.float64)
    rz = tq.CircuitBuilder(1).rz(0, tq.weight(0)).build().ops[0]
    crz = tq.CircuitBuilder(2).crz(0, 1, tq.weight(0)).build().ops[0]
    assert is_identity(rz, w)            # RZ(2 pi) = -I: a global phase
    assert not is_identity(crz, w)       # CRZ(2 pi) = diag(1, 1, -1, -1): a relative phase
    u2 = tq.CircuitBuilder(1).u2(0, 0.0, 0.0).build().ops[0]
    assert not is_identity(u2, w)        # periodic parameters, but U2(0, 0) is not the identity
    feat = tq.CircuitBuilder(1).rx(0, tq.feature(0)).build().ops[0]
    assert not is_identity(feat, w)


def test_squash_removes_identity_gates_and_keeps_the_state():
    c = _circuit()
    w = torch.tensor([0.0, 0.0, 0.0, 0.7, 4 * math.pi, math.pi, 0.4], dtype=torch.float64)
    small, sw = squash_circuit(c, w)
    assert len(small) == len(c) - 3 and small.depth <= c.depth
    assert small.gate_counts.get("U") is None and small.gate_counts.get("CRZ") is None
    x = torch.rand(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = tq.statevector(c, w, x), tq.statevector(small, sw, x)
    overlap = (a.conj() * b).sum(1).abs()
    assert torch.allclose(overlap, torch.ones(4, dtype=torch.float64), atol=1e-12)
    assert small.n_weights == len(sw) == 2 and "RZ" not in small.gate_counts   # RZ(2 x pi) = -I


def test_pruning_a_layer_with_a_schedule_then_squash():
    c = _circuit()
    layer = tq.QuantumLayer(c, [tq.Z(0), tq.Z(2)], seed=3)
    pruner = Pruner([gate_target(layer)], importance=identity_distance(c), schedule=AGP(0.6, start=0, end=4))
    x = torch.rand(8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for step in range(6):
        pruner.step(step)
        opt.zero_grad()
        layer(x).pow(2).sum().backward()
        opt.step()
        pruner.reapply()
    assert pruner.sparsity() >= 0.5
    zeros = set(torch.nonzero(layer.weights == 0).flatten().tolist())
    groups = gate_groups(c).tolist()
    for g in set(groups):  # whole operations are pruned together
        members = {i for i, gi in enumerate(groups) if gi == g}
        assert members <= zeros or not (members & zeros)
    small, sw = squash_circuit(c, layer.weights)
    assert len(small) < len(c)
    before = layer(x).detach()
    after = tq.expval(small, layer.observables, sw, x)
    assert torch.allclose(before, after, atol=1e-10)


def test_compact_weights():
    c = tq.CircuitBuilder(2).rx(0, tq.weight(5)).ry(1, tq.weight(2)).rz(0, tq.weight(5)).build()
    small, w = compact_weights(c, torch.arange(6, dtype=torch.float64))
    assert small.n_weights == 2 and w.tolist() == [2.0, 5.0]
    assert [op.params[0].index for op in small.ops] == [(1,), (0,), (1,)]
