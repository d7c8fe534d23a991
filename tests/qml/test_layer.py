"""QuantumLayer as a torch module: training, diff methods, dtypes, state_dict, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tinyqml.qml as tq
from tinyqml.qml import encoders as E
from tinyqml.qml import templates as T
from tinyqml.qml.errors import DiffMethodError, ShapeError

N_WIRES = 3


def _circuit(n_reuploads: int = 2) -> tq.Circuit:
    return T.classifier_circuit(E.angle(N_WIRES, "Y"), T.strongly_entangling(N_WIRES, 2), n_reuploads=n_reuploads)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """A tiny seeded binary problem: the label is the sign of the sum of the features."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 4, generator=gen) * 2 - 1
    y = (x.sum(1) > 0).float().unsqueeze(1)
    return x, y


def _model(method: str, dtype: torch.dtype = torch.complex128) -> nn.Sequential:
    torch.manual_seed(0)
    q = tq.QuantumLayer(_circuit(), [tq.Z(w) for w in range(N_WIRES)], diff_method=method, dtype=dtype, seed=1)
    rdtype = torch.float64 if dtype == torch.complex128 else torch.float32
    return nn.Sequential(nn.Linear(4, N_WIRES), nn.Tanh(), q, nn.Linear(N_WIRES, 1)).to(rdtype)


def _train(model: nn.Sequential, steps: int = 20) -> list[float]:
    x, y = _data()
    rdtype = next(model.parameters()).dtype
    x, y = x.to(rdtype), y.to(rdtype)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("method", tq.DIFF_METHODS)
def test_sequential_trains_with_adam(method: str) -> None:
    model = _model(method)
    q = model[2]
    before = q.weights.detach().clone()
    losses = _train(model)
    assert losses[-1] < 0.8 * losses[0], losses
    assert not torch.equal(before, q.weights.detach())  # the quantum weights were trained too


def test_diff_methods_give_the_same_training_step() -> None:
    grads = []
    for method in tq.DIFF_METHODS:
        model = _model(method)
        x, y = _data()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x.double()), y.double())
        loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("method", tq.DIFF_METHODS)
def test_complex64_layer_trains(method: str) -> None:
    model = _model(method, torch.complex64)
    q = model[2]
    assert q.weights.dtype == torch.float32
    out = model(_data()[0])
    assert out.dtype == torch.float32
    losses = _train(model)
    assert losses[-1] < 0.8 * losses[0], losses
    ref, single = _model(method), _model(method, torch.complex64)
    single.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x = _data()[0]
    with torch.no_grad():
        torch.testing.assert_close(single(x), ref(x.double()).float(), atol=1e-5, rtol=0)


def test_to_float64_and_state_dict_round_trip() -> None:
    q = tq.QuantumLayer(_circuit(), [tq.Z(0), tq.X(1) @ tq.X(2)], dtype=torch.complex64, seed=3)
    x = torch.rand(5, N_WIRES, dtype=torch.float64)
    q64 = q.to(torch.float64)
    assert q64.weights.dtype == torch.float64
    out = q64(x)
    assert out.shape == (5, 2) and torch.isfinite(out).all()

    src = tq.QuantumLayer(_circuit(), [tq.Z(0), tq.X(1) @ tq.X(2)], seed=4)
    dst = tq.QuantumLayer(_circuit(), [tq.Z(0), tq.X(1) @ tq.X(2)], seed=5)
    assert not torch.equal(src.weights, dst.weights)
    state = src.state_dict()
    assert list(state) == ["weights"] and state["weights"].shape == (_circuit().n_weights,)
    dst.load_state_dict(state)
    torch.testing.assert_close(dst(x), src(x), atol=0, rtol=0)


def test_layer_weights_match_circuit_and_expval() -> None:
    c = _circuit()
    q = tq.QuantumLayer(c, [tq.Z(1)], diff_method="backprop", seed=2)
    assert q.weights.shape == (c.n_weights,) and q.n_outputs == 1
    x = torch.rand(3, N_WIRES, dtype=torch.float64)
    torch.testing.assert_close(q(x), tq.expval(c, [tq.Z(1)], weights=q.weights.detach(), inputs=x))


def test_bad_diff_method_and_input_width() -> None:
    with pytest.raises(DiffMethodError, match="backprop, adjoint, parameter-shift"):
        tq.QuantumLayer(_circuit(), [tq.Z(0)], diff_method="finite-diff")
    q = tq.QuantumLayer(_circuit(), [tq.Z(0)])
    with pytest.raises(ShapeError, match=r"\[batch, 3\]"):
        q(torch.rand(4, 5))
    with pytest.raises(ShapeError):
        q(None)


@pytest.mark.parametrize("method", ["backprop", "adjoint", "parameter-shift"])
def test_encoder_then_ansatz_with_a_large_batch(method: str) -> None:
    c = _circuit(n_reuploads=1)
    x = torch.rand(2**N_WIRES, N_WIRES, dtype=torch.float64)
    w = torch.rand(c.n_weights, dtype=torch.float64)
    ref = torch.cat([tq.expval(c, [tq.Z(0)], weights=w, inputs=x[i : i + 1], diff_method=method) for i in range(len(x))])
    torch.testing.assert_close(tq.expval(c, [tq.Z(0)], weights=w, inputs=x, diff_method=method), ref)
