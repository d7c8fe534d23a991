"""Tests of tinyqml.noise.qoc: shot-noisy parameter shift, pruned gradients, execution counts, training."""

from __future__ import annotations

import math

import pytest
import torch

import tinyqml.qml as tq
from tinyqml.noise import Depolarizing, NoiseModel, ReadoutError, ThermalRelaxation
from tinyqml.noise import expval as noisy_expval
from tinyqml.noise.qoc import (
    ExecutionCounter,
    OnChipClassifier,
    QOCConfig,
    QOCError,
    ShotEstimator,
    gradient_executions,
    train_qoc,
)
from tinyqml.qml.prune import gate_groups
from tinyqml.search.gradient_pruning import GradientPruningConfig
from tinyqml.search.granularity import Groups


def _circuit():
    """Features, U3 (three angles), a CRX (four-term rule), a scaled/offset weight."""
    return (tq.CircuitBuilder(3)
            .ry(0, tq.feature(0)).ry(1, tq.feature(1)).rx(2, tq.feature(2))
            .u(0, tq.weight(0), tq.weight(1), tq.weight(2))
            .cx(0, 1).crx(1, 2, tq.weight(3))
            .rz(2, tq.weight(4, scale=2.0, offset=0.3)).ry(1, tq.weight(5))
            .cx(2, 0).rx(0, tq.weight(6))
            .build())


def _model():
    return NoiseModel().add("CX", Depolarizing(0.04, 2)).add("RY", ThermalRelaxation(50.0, 40.0, 0.5)) \
        .with_readout(0, ReadoutError(0.06, 0.03)).with_readout(2, ReadoutError(0.02, 0.05))


def _data(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, generator=g, dtype=torch.float64) * math.pi, torch.randn(b, 3, generator=g,
                                                                                     dtype=torch.float64)


def _shift_grad(model, x, cot, active=None):
    model.zero_grad()
    (model.expectations(x, active) * cot).sum().backward()
    return model.weights.grad.clone()


def test_exact_noiseless_shift_gradient_equals_backprop():
    c = _circuit()
    x, cot = _data()
    m = OnChipClassifier(c, wires=[0, 1, 2], shots=None, seed=3)
    w = m.weights.detach().clone().requires_grad_(True)
    ref = tq.expval(c, [tq.Z(0), tq.Z(1), tq.Z(2)], weights=w, inputs=x, diff_method="backprop")
    (ref * cot).sum().backward()
    assert torch.allclose(m.expectations(x), ref.detach(), atol=1e-10)
    assert torch.allclose(_shift_grad(m, x, cot), w.grad, atol=1e-8)


def test_exact_noisy_shift_gradient_equals_density_matrix_backprop_with_readout():
    c, nm = _circuit(), _model()
    x, cot = _data(4, seed=1)
    m = OnChipClassifier(c, wires=[2, 0], noise_model=nm, shots=None, seed=1)
    w = m.weights.detach().clone().requires_grad_(True)
    ref = noisy_expval(c, [tq.Z(2), tq.Z(0)], nm, weights=w, inputs=x, readout=True)
    (ref * cot[:, :2]).sum().backward()
    assert torch.allclose(m.expectations(x), ref.detach(), atol=1e-10)
    assert torch.allclose(_shift_grad(m, x, cot[:, :2]), w.grad, atol=1e-8)
    assert torch.allclose(m.evaluate(x), m.logit_scale * ref.detach(), atol=1e-10)


def test_many_shots_give_the_exact_gradient_within_statistics():
    c = _circuit()
    x, cot = _data(2, seed=2)
    exact = _shift_grad(OnChipClassifier(c, [0, 1, 2], shots=None, seed=0), x, cot)
    shots = 200_000
    noisy = _shift_grad(OnChipClassifier(c, [0, 1, 2], shots=shots, seed=0), x, cot)
    # each shifted <Z> has std <= 1/sqrt(shots); a gradient entry sums <= 4 terms x 2 rows x 3 outputs
    bound = 5 * float(cot.abs().sum()) * 2 / math.sqrt(shots)
    assert (noisy - exact).abs().max() < bound
    assert not torch.equal(noisy, exact)


def test_pruned_weights_get_zero_gradient_and_cost_no_executions():
    c, nm = _circuit(), _model()
    x, cot = _data(3)
    m = OnChipClassifier(c, [0, 1, 2], noise_model=nm, shots=64, seed=0)
    full = _shift_grad(OnChipClassifier(c, [0, 1, 2], noise_model=nm, shots=None, seed=0), x, cot)
    active = torch.tensor([True, False, True, False, False, True, False])
    before = m.counter.gradient
    g = _shift_grad(m, x, cot, active)
    assert g[~active].abs().max() == 0 and g[active].abs().min() > 0
    # U3's theta, lambda and RY: 2 terms each; rows = 3 inputs
    assert m.counter.gradient - before == 3 * 2 * 3 == gradient_executions(m.estimator, 3, active)
    assert gradient_executions(m.estimator, 3) == 3 * (6 * 2 + 4)  # six 2-term weights, one CRX
    assert m.counter.forward == 3 and m.counter.total_shots == 64 * (3 + 18)
    # exact shift gradient on the active weights equals the full one there
    m0 = OnChipClassifier(c, [0, 1, 2], noise_model=nm, shots=None, seed=0)
    g0 = _shift_grad(m0, x, cot, active)
    assert torch.allclose(g0[active], full[active], atol=1e-10) and g0[~active].abs().max() == 0


def test_seeded_repeatability():
    c, nm = _circuit(), _model()
    x, cot = _data(3)

    def run(seed):
        m = OnChipClassifier(c, [0, 1, 2], noise_model=nm, shots=128, seed=seed)
        return m.expectations(x).detach(), _shift_grad(m, x, cot)

    (a1, g1), (a2, g2), (b1, h1) = run(4), run(4), run(5)
    assert torch.equal(a1, a2) and torch.equal(g1, g2)
    assert not torch.equal(g1, h1)
    # shot values are multiples of 2/shots
    assert torch.allclose(a1 * 64, (a1 * 64).round(), atol=1e-9)


def test_evaluate_counts_only_shot_runs():
    m = OnChipClassifier(_circuit(), [0, 1, 2], shots=32, seed=0)
    x, _ = _data(6)
    m.evaluate(x)
    assert m.counter.evaluation == 0
    out = m.evaluate(x, shots=100, generator=torch.Generator().manual_seed(0))
    assert m.counter.evaluation == 6 and m.counter.total_shots == 600 and out.shape == (6, 3)


def _toy(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g, dtype=torch.float64) * math.pi
    y = (x[:, 0] > math.pi / 2).long()
    return x, y


def test_train_qoc_with_and_without_pruning():
    c, nm = _circuit(), _model()
    x, y = _toy()
    cfg = QOCConfig(epochs=2, batch_size=8, lr=0.1, eval_shots=64)
    runs = {}
    for name, pr in (("full", None), ("pruned", GradientPruningConfig(0.5, 1, 2, seed=0))):
        m = OnChipClassifier(c, [0, 1], noise_model=nm, shots=64, seed=0)
        runs[name] = train_qoc(m, x, y, QOCConfig(**{**cfg.__dict__, "pruning": pr}), x_test=x, y_test=y)
    full, pruned = runs["full"], runs["pruned"]
    assert full.steps == pruned.steps == 6
    assert full.evaluated_fraction == 1.0
    per_step = 8 * (6 * 2 + 4)
    assert full.executions["gradient"] == 6 * per_step
    assert pruned.executions["gradient"] < full.executions["gradient"]
    assert full.executions["forward"] == pruned.executions["forward"] == 24 * 2
    assert pruned.evaluated_fraction == pytest.approx((1 + 3 / 7 * 2) / 3)  # 7 weights, 4 skipped
    for r in (full, pruned):
        assert len(r.history) == 2 and 0 <= r.test_accuracy <= 1 and 0 <= r.test_accuracy_shots <= 1
        assert r.executions["evaluation"] == 24 and r.summary()["steps"] == 6
    # repeatable from the seeds
    m = OnChipClassifier(c, [0, 1], noise_model=nm, shots=64, seed=0)
    again = train_qoc(m, x, y, QOCConfig(**{**cfg.__dict__, "pruning": GradientPruningConfig(0.5, 1, 2, seed=0)}),
                      x_test=x, y_test=y)
    assert torch.equal(again.model.weights, pruned.model.weights)
    assert again.executions == pruned.executions


def test_gate_granularity_skips_whole_gates():
    c = _circuit()
    x, y = _toy(8)
    m = OnChipClassifier(c, [0, 1], shots=None, seed=0)
    seen = []
    res = train_qoc(m, x, y, QOCConfig(epochs=3, batch_size=8, pruning=GradientPruningConfig(0.5, 1, 1)),
                    granularity=Groups(gate_groups(c)), on_epoch=seen.append)
    assert len(seen) == 3 and seen[-1].test_accuracy is None
    # 5 gate groups -> 2 kept (U3 counts as one gate: its three angles together)
    assert res.steps == 3 and m.counter.gradient > 0


def test_transpiled_circuit_on_a_calibrated_backend():
    fake = pytest.importorskip("qiskit_ibm_runtime.fake_provider")
    backend = fake.FakeManilaV2()
    c = (tq.CircuitBuilder(2).ry(0, tq.feature(0)).ry(1, tq.feature(1))
         .u(0, tq.weight(0), tq.weight(1), tq.weight(2)).cx(0, 1).ry(1, tq.weight(3)).build())
    pc, layout = tq.transpile(c, backend, initial_layout=[0, 1], seed=0)
    nm = NoiseModel.from_backend(backend)
    x, cot = _data(3)
    x, cot = x[:, :2], cot[:, :2]
    m = OnChipClassifier(pc, layout.final, noise_model=nm, shots=None, seed=2)
    w = m.weights.detach().clone().requires_grad_(True)
    ref = noisy_expval(pc, [tq.Z(q) for q in layout.final], nm, weights=w, inputs=x, readout=True)
    (ref * cot).sum().backward()
    assert torch.allclose(_shift_grad(m, x, cot), w.grad, atol=1e-8)


def test_bad_settings_raise():
    c = _circuit()
    with pytest.raises(QOCError, match="shots"):
        OnChipClassifier(c, [0], shots=0)
    with pytest.raises(QOCError, match="wires"):
        ShotEstimator(c, [0, 3])
    with pytest.raises(QOCError, match="wires"):
        ShotEstimator(c, [1, 1])
    m = OnChipClassifier(c, [0, 1], shots=None)
    with pytest.raises(QOCError, match="active"):
        m.expectations(_data()[0], active=torch.ones(3, dtype=torch.bool))
    with pytest.raises(QOCError, match="active"):
        m.expectations(_data()[0], active=torch.ones(7))
    with pytest.raises(QOCError):
        QOCConfig(epochs=0)
    with pytest.raises(QOCError):
        QOCConfig(pruning=0.5)  # type: ignore[arg-type]
    with pytest.raises(QOCError, match="labels"):
        train_qoc(m, *_toy(4)[:1], torch.tensor([0, 1, 2, 0]))
    with pytest.raises(QOCError):
        ExecutionCounter().add("other", 1, 1)
