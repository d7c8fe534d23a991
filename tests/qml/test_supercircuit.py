"""Tests of tinyqml.qml.supercircuit: weight sharing, front and restricted sampling, inheritance."""

from __future__ import annotations

import random

import pytest
import torch

import tinyqml.qml as tq
from tinyqml.qml.errors import ParameterError
from tinyqml.qml.supercircuit import SuperCircuit, SuperCircuitConfig, SuperLayer
from tinyqml.search import SearchSpaceError

SC = SuperCircuit(SuperCircuitConfig(n_wires=3, n_blocks=2))
ENC = tq.encoders.angle(3, "Y")


def test_largest_is_the_u3cu3_template():
    big = SC.build(SC.largest())
    assert big == tq.templates.u3cu3(3, 2)
    assert SC.n_weights == big.n_weights == 36


def test_front_sampling_keeps_leading_gates_with_shared_weights():
    cfg = {**SC.largest(), "blocks": 2, "u3[0]": 1, "cu3[0]": 2, "u3[1]": 3, "cu3[1]": 0}
    sub = SC.build(cfg)
    big = SC.build(SC.largest())
    assert [op.wires for op in sub.ops] == [(0,), (0, 1), (1, 2), (0,), (1,), (2,)]
    big_params = {(i // 1, op.wires, op.gate.name): op.params for i, op in enumerate(big.ops)}
    by_place = {}
    for blk_ops, blk in ((big.ops[:6], 0), (big.ops[6:], 1)):
        for op in blk_ops:
            by_place[(blk, op.gate.name, op.wires)] = op.params
    assert sub.ops[0].params == by_place[(0, "U", (0,))]
    assert sub.ops[1].params == by_place[(0, "CU", (0, 1))]
    assert sub.ops[5].params == by_place[(1, "U", (2,))]
    assert big_params  # built
    assert SC.key({**cfg, "u3[1]": 3}) == SC.key(cfg)


def test_unused_block_choices_do_not_change_the_circuit():
    a = {**SC.largest(), "blocks": 1, "u3[1]": 1}
    b = {**SC.largest(), "blocks": 1, "u3[1]": 2}
    assert SC.build(a) is SC.build(b)


def test_restricted_sampling_changes_at_most_k_choices():
    rng = random.Random(0)
    prev = SC.largest()
    for _ in range(100):
        nxt = SC.sample(rng, previous=prev, restrict=2)
        assert SC.space.contains(nxt)
        assert 1 <= sum(nxt[k] != prev[k] for k in prev) <= 2
        prev = nxt


def test_super_layer_trains_and_subnets_inherit():
    layer = SuperLayer(ENC, SC, [tq.Z(0), tq.Z(1)], seed=0)
    x = torch.rand(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cfg = {**SC.largest(), "blocks": 1, "u3[0]": 2, "cu3[0]": 1}
    out = layer(x, cfg)
    out.sum().backward()
    used = {p.index[0] for op in SC.build(cfg).ops for p in op.params}
    grad_nonzero = set(torch.nonzero(layer.weights.grad).flatten().tolist())
    assert grad_nonzero <= used and grad_nonzero
    child = layer.inherit(cfg)
    assert child.circuit.n_weights == 3 * 3
    assert torch.allclose(child(x), out.detach(), atol=1e-12)


def test_bad_input():
    with pytest.raises(ParameterError, match="positive integer"):
        SuperCircuitConfig(n_wires=0, n_blocks=2)
    with pytest.raises(SearchSpaceError, match="not in the space"):
        SC.build({**SC.largest(), "u3[0]": 9})
    with pytest.raises(ParameterError, match="without trainable weights"):
        SuperLayer(tq.templates.u3cu3(3, 1), SC, [tq.Z(0)])
    with pytest.raises(ParameterError, match="restrict"):
        SC.sample(random.Random(0), previous=SC.largest(), restrict=0)
