"""Parameter resolution and the checks on weights and inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tinyqml.qml as tq
from tinyqml.qml.circuit import Param
from tinyqml.qml.params import resolve, slot_table


def _circuit() -> tq.Circuit:
    return (tq.CircuitBuilder(2)
            .rx(0, tq.const(0.5))
            .ry(1, tq.weight(1, scale=2.0, offset=0.1))
            .rz(0, tq.feature(0))
            .u(1, tq.feature([0, 2], scale=-1.5, offset=0.25, shift=0.5), Param("const", value=2.0, scale=-0.5, offset=1.0),
               tq.weight(0))
            .cp(0, 1, tq.feature([1, 1, 2], shift=-1.0))
            .build())


def test_resolve_values() -> None:
    c = _circuit()
    assert (c.n_weights, c.n_inputs) == (2, 3)
    assert slot_table(c).n_slots == 7
    w = torch.tensor([0.3, -0.7], dtype=torch.float64)
    x = torch.tensor([[0.1, 0.2, 0.3], [1.0, -2.0, 0.5]], dtype=torch.float64)
    angles, _ = resolve(c, w, x)
    assert angles.shape == (2, 7) and angles.dtype == torch.float64
    for b in range(2):
        x0, x1, x2 = x[b].tolist()
        expected = [
            0.5,                                          # const
            2.0 * -0.7 + 0.1,                             # weight * scale + offset
            x0,                                           # plain angle encoding
            -1.5 * (x0 + 0.5) * (x2 + 0.5) + 0.25,        # shifted feature product
            -0.5 * 2.0 + 1.0,                             # const with scale and offset
            0.3,                                          # weight 0
            (x1 - 1.0) * (x1 - 1.0) * (x2 - 1.0),         # repeated index: a square
        ]
        assert torch.allclose(angles[b], torch.tensor(expected, dtype=torch.float64), atol=1e-15, rtol=0)


def test_resolve_all_slots_and_batched_flags() -> None:
    c = _circuit()
    w = torch.tensor([0.3, -0.7], dtype=torch.float64)
    x = torch.tensor([[0.1, 0.2, 0.3], [1.0, -2.0, 0.5]], dtype=torch.float64)
    angles, batched = resolve(c, w, x)
    assert angles.shape == (2, 7)
    assert batched == (False, False, True, True, False, False, True)
    for b in range(2):
        x0, x1, x2 = x[b].tolist()
        assert math.isclose(angles[b, 6].item(), (x1 - 1.0) * (x1 - 1.0) * (x2 - 1.0), abs_tol=1e-15)
    # one sample: nothing varies over the batch
    a1, b1 = resolve(c, w, x[:1])
    assert a1.shape == (1, 7) and b1 == (False,) * 7
    assert torch.equal(a1[0], angles[0])


def test_resolve_without_features_is_unbatched() -> None:
    c = tq.CircuitBuilder(1).rx(0, tq.weight(0)).ry(0, 0.2).build()
    angles, batched = resolve(c, torch.tensor([1.25]))
    assert angles.shape == (1, 2) and batched == (False, False)
    assert torch.allclose(angles, torch.tensor([[1.25, 0.2]], dtype=torch.float64))
    assert resolve(tq.Circuit(1))[0].shape == (1, 0)


def test_resolve_dtype_and_gradients() -> None:
    c = _circuit()
    w = torch.tensor([0.3, -0.7], requires_grad=True)
    x = torch.tensor([[0.1, 0.2, 0.3]], requires_grad=True)
    angles, _ = resolve(c, w, x, dtype=torch.complex64)
    assert angles.dtype == torch.float32
    angles.sum().backward()
    assert torch.allclose(w.grad, torch.tensor([1.0, 2.0]))
    x0, x1, x2 = 0.1, 0.2, 0.3
    # d/dx of: x0 + (-1.5)(x0+.5)(x2+.5) + (x1-1)^2 (x2-1)
    expected = [1 - 1.5 * (x2 + 0.5), 2 * (x1 - 1) * (x2 - 1), -1.5 * (x0 + 0.5) + (x1 - 1) ** 2]
    assert torch.allclose(x.grad[0], torch.tensor(expected), atol=1e-6)


def test_weights_and_inputs_accept_lists_and_numpy() -> None:
    c = _circuit()
    ref = tq.statevector(c, torch.tensor([0.3, -0.7]).double(), torch.tensor([[0.1, 0.2, 0.3]]).double())
    assert torch.allclose(tq.statevector(c, [0.3, -0.7], [[0.1, 0.2, 0.3]]), ref)
    assert torch.allclose(tq.statevector(c, np.array([0.3, -0.7]), np.array([0.1, 0.2, 0.3])), ref)


def test_1d_inputs_are_one_sample() -> None:
    c = _circuit()
    w = torch.tensor([0.3, -0.7], dtype=torch.float64)
    x = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    one = tq.statevector(c, w, x)
    two = tq.statevector(c, w, x.unsqueeze(0))
    assert one.shape == (1, 4) and torch.equal(one, two)
    e = tq.expval(c, [tq.Z(0)], weights=w, inputs=x)
    assert e.shape == (1, 1)
    angles, batched = resolve(c, w, x)
    assert angles.shape == (1, 7) and not any(batched)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("weights", "fragment"), [
    (None, "the circuit has 2 trainable weights but weights=None was given"),
    (torch.zeros(3), "weights must have shape [2] (circuit.n_weights), got [3]"),
    (torch.zeros(1, 2), "weights must have shape [2] (circuit.n_weights), got [1, 2]"),
    (torch.zeros(()), "weights must have shape [2] (circuit.n_weights), got []"),
    (torch.zeros(2, dtype=torch.complex128), "weights must be real numbers"),
])
@pytest.mark.parametrize("entry", ["statevector", "expval"])
def test_bad_weights_shape(weights, fragment: str, entry: str) -> None:
    c = _circuit()
    x = torch.zeros(2, 3)
    with pytest.raises(tq.ShapeError) as info:
        if entry == "statevector":
            tq.statevector(c, weights, x)
        else:
            tq.expval(c, [tq.Z(0)], weights=weights, inputs=x)
    assert fragment in str(info.value)


@pytest.mark.parametrize(("inputs", "fragment"), [
    (None, "the circuit reads 3 input features but inputs=None was given"),
    (torch.zeros(2, 4), "inputs must have shape [batch, 3] (circuit.n_inputs), got [2, 4]"),
    (torch.zeros(4), "inputs must have shape [batch, 3] (circuit.n_inputs), got [4]"),
    (torch.zeros(2, 3, 1), "inputs must have shape [batch, 3] (circuit.n_inputs), got [2, 3, 1]"),
    ([[0.0, 1.0]], "inputs must have shape [batch, 3] (circuit.n_inputs), got [1, 2]"),
    (torch.zeros(0, 3), "inputs have an empty batch"),
    (torch.zeros(2, 3, dtype=torch.complex64), "inputs must be real numbers"),
])
@pytest.mark.parametrize("entry", ["statevector", "expval"])
def test_bad_inputs_shape(inputs, fragment: str, entry: str) -> None:
    c = _circuit()
    w = torch.zeros(2)
    with pytest.raises(tq.ShapeError) as info:
        if entry == "statevector":
            tq.statevector(c, w, inputs)
        else:
            tq.expval(c, [tq.Z(0)], weights=w, inputs=inputs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("entry", ["statevector", "expval", "probs"])
def test_non_finite_values(bad: float, entry: str) -> None:
    c = _circuit()
    good_w, good_x = torch.zeros(2), torch.zeros(2, 3)
    bad_w = good_w.clone()
    bad_w[1] = bad
    bad_x = good_x.clone()
    bad_x[1, 2] = bad

    def run(w, x):
        if entry == "statevector":
            return tq.statevector(c, w, x)
        if entry == "expval":
            return tq.expval(c, [tq.Z(0)], weights=w, inputs=x, diff_method="backprop")
        return tq.probs(c, w, x)

    with pytest.raises(tq.NonFiniteError, match="weights contain NaN or inf"):
        run(bad_w, good_x)
    with pytest.raises(tq.NonFiniteError, match="inputs contain NaN or inf"):
        run(good_w, bad_x)
    assert issubclass(tq.NonFiniteError, ValueError)


def test_inputs_to_a_circuit_without_features() -> None:
    c = tq.CircuitBuilder(1).rx(0, tq.weight(0)).build()
    with pytest.raises(tq.ShapeError, match=r"\[batch, 0\]"):
        tq.statevector(c, torch.zeros(1), torch.zeros(2, 1))
    # an explicit empty feature matrix is accepted
    assert tq.statevector(c, torch.zeros(1), torch.zeros(2, 0)).shape[1] == 2


def test_bad_dtype_and_method() -> None:
    c = tq.CircuitBuilder(1).h(0).build()
    with pytest.raises(tq.ShapeError, match="dtype must be torch.complex64 or torch.complex128"):
        tq.statevector(c, dtype=torch.float64)
    with pytest.raises(tq.DiffMethodError, match="unknown diff_method 'finite'; choose one of backprop, adjoint"):
        tq.expval(c, [tq.Z(0)], diff_method="finite")
    with pytest.raises(tq.DiffMethodError, match="parameter-shift differentiates expectations"):
        tq.statevector(c, diff_method="parameter-shift")
    with pytest.raises(tq.ShapeError, match="at least one observable"):
        tq.expval(c, [])
