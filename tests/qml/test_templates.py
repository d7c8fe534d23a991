"""Trainable templates: hardware-efficient, strongly entangling, U3+CU3, composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tinyqml.qml as tq
from tinyqml.qml import encoders as E
from tinyqml.qml import templates as T
from tinyqml.qml.errors import ParameterError, UnknownGateError, WireError


def _weight_indices(c: tq.Circuit) -> list[int]:
    return [p.index[0] for op in c.ops for p in op.params if p.kind == "weight"]


# --------------------------------------------------------------------------- hardware-efficient


@pytest.mark.parametrize(
    "entangler, n, pairs",
    [
        ("ring", 4, [(0, 1), (1, 2), (2, 3), (3, 0)]),
        ("ring", 2, [(0, 1), (1, 0)]),
        ("ring", 1, []),
        ("linear", 4, [(0, 1), (1, 2), (2, 3)]),
        ("all", 4, [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]),
    ],
)
def test_hardware_efficient_entanglers(entangler: str, n: int, pairs: list) -> None:
    c = T.hardware_efficient(n, n_layers=2, entangler=entangler)
    cx = [op.wires for op in c.ops if op.name == "CX"]
    assert cx == pairs * 2
    assert c.n_weights == 2 * 2 * n
    assert _weight_indices(c) == list(range(4 * n))


def test_hardware_efficient_layout_and_offset() -> None:
    c = T.hardware_efficient(3, n_layers=1, rotations=("RX", "ry", "RZ"), entangler="linear", weight_offset=5)
    rot = [(op.name, op.wires[0], op.params[0].index[0]) for op in c.ops if op.name != "CX"]
    assert rot == [("RX", 0, 5), ("RX", 1, 6), ("RX", 2, 7), ("RY", 0, 8), ("RY", 1, 9), ("RY", 2, 10),
                   ("RZ", 0, 11), ("RZ", 1, 12), ("RZ", 2, 13)]
    assert c.n_weights == 14
    assert T.hardware_efficient(2, 1, rotations="RY").gate_counts == {"RY": 2, "CX": 2}


def test_hardware_efficient_errors() -> None:
    with pytest.raises(ParameterError, match="ring, linear, all"):
        T.hardware_efficient(3, 1, entangler="star")
    with pytest.raises(UnknownGateError):
        T.hardware_efficient(3, 1, rotations=("RQ",))
    with pytest.raises(ParameterError, match="one-wire one-parameter"):
        T.hardware_efficient(3, 1, rotations=("U",))
    with pytest.raises(ParameterError):
        T.hardware_efficient(3, 1, rotations=())
    with pytest.raises(ParameterError, match="n_layers"):
        T.hardware_efficient(3, 0)
    with pytest.raises(ParameterError, match="weight_offset"):
        T.hardware_efficient(3, 1, weight_offset=-1)
    with pytest.raises(WireError):
        T.hardware_efficient(0, 1)


# --------------------------------------------------------------------------- strongly entangling


def test_strongly_entangling_structure() -> None:
    c = T.strongly_entangling(4, n_layers=4)
    cx = [op.wires for op in c.ops if op.name == "CX"]
    expect = []
    for r in (1, 2, 3, 1):
        expect += [(i, (i + r) % 4) for i in range(4)]
    assert cx == expect
    assert c.n_weights == 4 * 4 * 3 and _weight_indices(c) == list(range(48))
    assert T.strongly_entangling(1, 2).gate_counts == {"RZ": 4, "RY": 2}
    assert [op.wires for op in T.strongly_entangling(3, 1, ranges=[2]).ops if op.name == "CX"] == [
        (0, 2), (1, 0), (2, 1)]
    assert T.strongly_entangling(2, 1, weight_offset=3).n_weights == 9


def test_strongly_entangling_errors() -> None:
    with pytest.raises(ParameterError, match="one entry per layer"):
        T.strongly_entangling(3, 2, ranges=[1])
    with pytest.raises(ParameterError, match="multiple of n_wires"):
        T.strongly_entangling(3, 1, ranges=[3])
    with pytest.raises(ParameterError):
        T.strongly_entangling(3, 0)


@pytest.mark.parametrize("n, layers, ranges", [(1, 2, None), (2, 2, None), (3, 3, None), (4, 2, [3, 2])])
def test_strongly_entangling_matches_pennylane(n: int, layers: int, ranges) -> None:
    qml = pytest.importorskip("pennylane")
    rng = np.random.default_rng(n)
    w = torch.tensor(rng.uniform(-np.pi, np.pi, (layers, n, 3)), dtype=torch.float64)
    dev = qml.device("default.qubit", wires=n)

    @qml.qnode(dev, interface="torch")
    def circuit(weights):
        qml.StronglyEntanglingLayers(weights, wires=range(n), ranges=ranges)
        return qml.state()

    c = T.strongly_entangling(n, layers, ranges=ranges)
    torch.testing.assert_close(tq.statevector(c, weights=w.reshape(-1))[0], circuit(w), atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- U3 + CU3


def test_u3cu3_structure() -> None:
    c = T.u3cu3(3, n_blocks=2, weight_offset=1)
    names = [op.name for op in c.ops]
    assert names == (["U"] * 3 + ["CU"] * 3) * 2
    assert [op.wires for op in c.ops if op.name == "CU"][:3] == [(0, 1), (1, 2), (2, 0)]
    assert _weight_indices(c) == list(range(1, 1 + 36)) and c.n_weights == 37
    assert T.u3cu3(1, 1).gate_counts == {"U": 1}
    assert T.u3cu3(3, 1, entangler="linear").gate_counts == {"U": 3, "CU": 2}
    with pytest.raises(ParameterError, match="n_blocks"):
        T.u3cu3(3, 0)


def test_u3cu3_matches_pennylane() -> None:
    qml = pytest.importorskip("pennylane")
    n = 3
    c = T.u3cu3(n, 2)
    w = torch.tensor(np.random.default_rng(7).uniform(-np.pi, np.pi, c.n_weights), dtype=torch.float64)
    dev = qml.device("default.qubit", wires=n)

    @qml.qnode(dev, interface="torch")
    def circuit(weights):
        k = 0
        for _ in range(2):
            for i in range(n):
                qml.U3(weights[k], weights[k + 1], weights[k + 2], wires=i)
                k += 3
            for i in range(n):
                qml.ctrl(qml.U3(weights[k], weights[k + 1], weights[k + 2], wires=(i + 1) % n), control=i)
                k += 3
        return qml.state()

    torch.testing.assert_close(tq.statevector(c, weights=w)[0], circuit(w), atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- composition


def test_classifier_circuit_composes_encoder_and_ansatz() -> None:
    enc = E.angle(3)
    ans = T.strongly_entangling(3, 2)
    model = T.classifier_circuit(enc, ans)
    assert model == enc + ans == enc.compose(ans)
    assert model.n_inputs == 3 and model.n_weights == 18
    re = T.classifier_circuit(enc, ans, n_reuploads=3)
    assert len(re) == 3 * (len(enc) + len(ans)) and re.n_weights == 18
    stacked = T.hardware_efficient(3, 1) + T.u3cu3(3, 1, weight_offset=6)
    assert stacked.n_weights == 6 + 18 and sorted(set(_weight_indices(stacked))) == list(range(24))


def test_classifier_circuit_rejects_shared_weights() -> None:
    first = T.hardware_efficient(2, 1)
    with pytest.raises(ParameterError, match="weight_offset >= 4"):
        T.classifier_circuit(first, T.hardware_efficient(2, 1))
    assert T.classifier_circuit(first, T.hardware_efficient(2, 1, weight_offset=4)).n_weights == 8
    with pytest.raises(ParameterError):
        T.classifier_circuit(first, "not a circuit")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="n_reuploads"):
        T.classifier_circuit(E.angle(2), first, n_reuploads=0)


def test_templates_run_batched_with_all_diff_methods() -> None:
    model = T.classifier_circuit(E.iqp(3), T.u3cu3(3, 1))
    x = torch.rand(4, 3, dtype=torch.float64)
    w = torch.rand(model.n_weights, dtype=torch.float64)
    outs = [tq.expval(model, [tq.Z(0), tq.X(1)], weights=w, inputs=x, diff_method=m) for m in tq.DIFF_METHODS]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], atol=1e-12, rtol=0)
