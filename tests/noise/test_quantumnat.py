"""Tests of tinyqml.noise.quantumnat: normalization, quantization, noise injection, the classifier."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import tinyqml.qml as tq
from tinyqml.noise import (
    AmplitudeDamping,
    BitFlip,
    Depolarizing,
    NoiseModel,
    ReadoutError,
    ThermalRelaxation,
    expval,
)
from tinyqml.noise.model import ChannelOp
from tinyqml.noise.quantumnat import (
    PRESETS,
    NoiseInjection,
    PostMeasurementNorm,
    PostMeasurementQuant,
    QuantumNATClassifier,
    QuantumNATConfig,
    QuantumNATError,
    accuracy,
    fit,
    quantize,
    readout_affine,
    twirled_circuit,
)

CIRCUIT = (tq.CircuitBuilder(3).ry(0, tq.feature(0)).ry(1, tq.feature(1)).h(2).cx(0, 1).rx(2, tq.weight(0))
           .cx(1, 2).ry(0, tq.weight(1)).cx(2, 0).build())
MODEL = (NoiseModel().add("CX", Depolarizing(0.08, 2)).add("RY", AmplitudeDamping(0.15))
         .add("H", ThermalRelaxation(50.0, 40.0, 10.0)).add("RX", BitFlip(0.05))
         .with_readout(0, ReadoutError(0.1, 0.04)).with_readout(2, ReadoutError(0.03, 0.06)))
W = torch.tensor([0.4, 0.9], dtype=torch.float64)
X = torch.tensor([[0.3, 1.1], [1.2, 2.5]], dtype=torch.float64)
WIRES = (0, 2, 1)


def _zs(wires=WIRES):
    return [tq.Z(w) for w in wires]


# --------------------------------------------------------------------------- config


def test_config_validation_and_labels():
    assert QuantumNATConfig().label == "plain"
    assert PRESETS["all"].label == "injection+normalization+quantization"
    assert PRESETS["injection+normalization"].label == "injection+normalization"
    assert QuantumNATConfig().grid == (-1.0, 1.0)
    assert QuantumNATConfig(normalization=True).grid == (-2.0, 2.0)
    assert QuantumNATConfig(quant_range=(0, 3)).grid == (0.0, 3.0)
    for bad in ({"quant_levels": 1}, {"quant_levels": 2.5}, {"quant_range": (1.0, -1.0)},
                {"quant_range": (0.0, float("inf"))}, {"injection_scale": -1.0}, {"logit_scale": 0.0},
                {"norm_eps": float("nan")}):
        with pytest.raises(QuantumNATError):
            QuantumNATConfig(**bad)
    assert issubclass(QuantumNATError, ValueError)


# --------------------------------------------------------------------------- normalization


def test_normalization_standardises_each_column():
    z = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.2 + 0.3
    out = PostMeasurementNorm(eps=0.0)(z)
    assert torch.allclose(out.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-12)


def test_normalization_undoes_per_column_shrink_and_shift():
    # the mechanism QuantumNAT relies on: noise that scales and shifts each output is removed
    z = torch.randn(32, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gain = torch.tensor([0.3, 0.8, 0.5, 0.05], dtype=torch.float64)
    offset = torch.tensor([0.2, -0.1, 0.0, 0.6], dtype=torch.float64)
    norm = PostMeasurementNorm(eps=0.0)
    assert torch.allclose(norm(offset + gain * z), norm(z), atol=1e-10)


def test_normalization_gradient_and_errors():
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(PostMeasurementNorm(eps=1e-3), (z,))
    with pytest.raises(QuantumNATError, match="B >= 2"):
        PostMeasurementNorm()(torch.zeros(1, 3))
    with pytest.raises(QuantumNATError):
        PostMeasurementNorm(eps=-1.0)


# --------------------------------------------------------------------------- quantization


def test_quantization_grid_and_clamp():
    z = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64)
    q = quantize(z, levels=5)
    assert set(q.tolist()) == {-1.0, -0.5, 0.0, 0.5, 1.0}
    inside = z.abs() <= 1
    assert bool(((q - z).abs()[inside] <= 0.25 + 1e-12).all())      # nearest level: within half a step
    assert bool((q[z > 1] == 1).all()) and bool((q[z < -1] == -1).all())
    q2 = PostMeasurementQuant(2, 0.0, 1.0)(torch.tensor([0.2, 0.7, -3.0]))
    assert q2.tolist() == [0.0, 1.0, 0.0]
    q4 = quantize(torch.randn(100, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), 4, -2.0, 2.0)
    grid = torch.tensor([-2.0, -2 / 3, 2 / 3, 2.0], dtype=torch.float64)
    assert float((q4.unsqueeze(1) - grid).abs().min(1).values.max()) < 1e-12


def test_quantization_straight_through_gradient():
    z = torch.tensor([-2.0, -0.6, 0.1, 0.74, 1.5], dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    (quantize(z, 3) * weights).sum().backward()
    assert z.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 0.0]   # identity inside [-1, 1], zero where clamped


def test_quantization_errors():
    for levels in (0, 1, True, 2.0):
        with pytest.raises(QuantumNATError):
            quantize(torch.zeros(2), levels)
        with pytest.raises(QuantumNATError):
            PostMeasurementQuant(levels)
    with pytest.raises(QuantumNATError):
        quantize(torch.zeros(2), 3, 1.0, 1.0)


# --------------------------------------------------------------------------- twirl and readout


def test_twirled_circuit_keeps_pauli_channels_and_twirls_the_rest():
    noisy = twirled_circuit(CIRCUIT, MODEL)
    plain = MODEL.apply(CIRCUIT)
    chans = [s for s in noisy.steps if isinstance(s, ChannelOp)]
    assert len(chans) == plain.n_channels and all(c.channel.is_unitary_mixture for c in chans)
    # for a depolarizing-only model the twirl changes nothing
    dep = NoiseModel().add("CX", Depolarizing(0.1, 2))
    exact = expval(CIRCUIT, _zs(), dep, W, X)
    assert torch.allclose(expval(twirled_circuit(CIRCUIT, dep), _zs(), None, W, X), exact, atol=1e-12)
    # scale multiplies the rates before twirling
    s2 = twirled_circuit(CIRCUIT, dep, scale=2.0)
    assert torch.allclose(expval(s2, _zs(), None, W, X), expval(CIRCUIT, _zs(), dep.scaled(2.0), W, X), atol=1e-12)
    with pytest.raises(QuantumNATError):
        twirled_circuit(CIRCUIT, "not a model")


def test_readout_affine_matches_the_density_matrix_readout():
    off, gain = readout_affine(MODEL, WIRES)
    z = expval(CIRCUIT, _zs(), MODEL, W, X)
    z_ro = expval(CIRCUIT, _zs(), MODEL, W, X, readout=True)
    assert torch.allclose(z_ro, off + gain * z, atol=1e-12)
    off0, gain0 = readout_affine(None, WIRES)
    assert off0.tolist() == [0.0] * 3 and gain0.tolist() == [1.0] * 3


# --------------------------------------------------------------------------- injection


def _twirled_exact(model=MODEL, scale=1.0, inputs=X, readout=True):
    """Density-matrix <Z> under the twirled model, through the readout affine."""
    z = expval(twirled_circuit(CIRCUIT, model, scale), _zs(), None, W, inputs)
    off, gain = readout_affine(model.scaled(scale) if readout else None, WIRES)
    return off + gain * z


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_injection_mean_within_4_sigma_of_twirled_density_matrix(scale):
    t = 6000
    inj = NoiseInjection(CIRCUIT, WIRES, MODEL, scale=scale, generator=torch.Generator().manual_seed(11))
    rows = X.repeat_interleave(t, dim=0)            # t copies of each input row, each its own draw
    z = inj(W, rows).reshape(2, t, 3)
    exact = _twirled_exact(scale=scale)
    mean, sem = z.mean(1), z.std(1) / t ** 0.5
    assert bool(((mean - exact).abs() <= 4 * sem + 1e-12).all()), (mean - exact) / sem
    # the twirl is an approximation of the calibrated model, not the model itself
    full = expval(CIRCUIT, _zs(), MODEL.scaled(scale), W, X, readout=True)
    assert float((full - exact).abs().max()) > 1e-4


def test_injection_rows_are_independent_and_draws_fresh():
    nm = NoiseModel().add("X", BitFlip(0.5))
    c = tq.CircuitBuilder(1).ry(0, tq.feature(0)).x(0).build()
    inj = NoiseInjection(c, [0], nm, seed=3)
    z = inj(None, torch.zeros(4000, 1, dtype=torch.float64))[:, 0]
    assert set(z.round().tolist()) == {-1.0, 1.0}
    n = len(z) // 2
    corr = float((z[0::2] * z[1::2]).mean())          # independent fair ±1: mean 0, sd 1/sqrt(n)
    assert abs(corr) < 4 / n ** 0.5
    assert abs(float(z.mean())) < 4 / len(z) ** 0.5
    again = inj(None, torch.zeros(4000, 1, dtype=torch.float64))[:, 0]
    assert not torch.equal(z, again)                  # the generator advanced: fresh draws
    # rows= repeats a feature-less circuit with independent draws
    c0 = tq.CircuitBuilder(1).x(0).build()
    z0 = NoiseInjection(c0, [0], nm, seed=4)(None, rows=2000)
    assert z0.shape == (2000, 1) and abs(float(z0.mean())) < 4 / 2000 ** 0.5


def test_injection_seed_repeatability():
    a = NoiseInjection(CIRCUIT, WIRES, MODEL, seed=5)(W, X.repeat(50, 1))
    b = NoiseInjection(CIRCUIT, WIRES, MODEL, generator=torch.Generator().manual_seed(5))(W, X.repeat(50, 1))
    c = NoiseInjection(CIRCUIT, WIRES, MODEL, seed=6)(W, X.repeat(50, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_injection_gradient_matches_finite_differences_for_fixed_draws():
    gen = torch.Generator().manual_seed(9)
    inj = NoiseInjection(CIRCUIT, WIRES, MODEL, scale=4.0, generator=gen)
    rows = X.repeat(8, 1)
    state = gen.get_state()
    w = W.clone().requires_grad_(True)
    probe = torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64)
    (inj(w, rows) @ probe).sum().backward()
    fd = torch.zeros(2, dtype=torch.float64)
    h = 1e-6
    for i in range(2):
        vals = []
        for sign in (1, -1):
            gen.set_state(state)
            wp = W.clone()
            wp[i] += sign * h
            vals.append(float((inj(wp, rows) @ probe).sum()))
        fd[i] = (vals[0] - vals[1]) / (2 * h)
    assert torch.allclose(w.grad, fd, atol=1e-6), (w.grad, fd)


def test_injection_input_errors():
    with pytest.raises(QuantumNATError):
        NoiseInjection(CIRCUIT, [0, 3], MODEL)
    with pytest.raises(QuantumNATError):
        NoiseInjection(CIRCUIT, [1, 1], MODEL)
    with pytest.raises(QuantumNATError):
        NoiseInjection(CIRCUIT, [0], None)


# --------------------------------------------------------------------------- classifier, fit, accuracy


def test_classifier_injects_only_in_training_mode():
    model = QuantumNATClassifier(CIRCUIT, WIRES, PRESETS["injection"], MODEL, seed=0)
    x = X.repeat(20, 1)
    assert model.training
    a, b = model(x), model(x)
    assert not torch.equal(a, b)                      # fresh noise every call
    model.eval()
    ideal = 5.0 * tq.expval(CIRCUIT, _zs(), model.weights.detach(), x)
    assert torch.allclose(model(x).detach(), ideal, atol=1e-12)
    assert torch.equal(model(x), model(x))


def test_classifier_head_composes_norm_and_quant():
    cfg = PRESETS["all"]
    model = QuantumNATClassifier(CIRCUIT, WIRES, cfg, MODEL, seed=0)
    z = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = cfg.logit_scale * quantize(PostMeasurementNorm(cfg.norm_eps)(z), cfg.quant_levels, -2.0, 2.0)
    assert torch.equal(model.head(z), expected)
    plain = QuantumNATClassifier(CIRCUIT, WIRES, PRESETS["plain"], seed=0)
    assert torch.equal(plain.head(z), 5.0 * z)
    assert "plain" in repr(plain)


def test_classifier_errors():
    with pytest.raises(QuantumNATError, match="noise_model"):
        QuantumNATClassifier(CIRCUIT, WIRES, PRESETS["injection"])
    with pytest.raises(QuantumNATError):
        QuantumNATClassifier(CIRCUIT, [0, 5], PRESETS["plain"])
    with pytest.raises(QuantumNATError):
        QuantumNATClassifier(CIRCUIT, WIRES, {"injection": True})


def test_accuracy_splits_ties():
    logits = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 2.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([0, 1, 1, 2])
    assert accuracy(logits, y) == pytest.approx((0.5 + 0.0 + 1.0 + 1 / 3) / 4)
    with pytest.raises(QuantumNATError):
        accuracy(logits, y[:2])


def _toy_data():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(48, 2, generator=gen, dtype=torch.float64) * torch.pi
    y = (x[:, 0] > x[:, 1]).long()
    return x, y


TOY = (tq.CircuitBuilder(2).ry(0, tq.feature(0)).ry(1, tq.feature(1)).cx(0, 1)
       .ry(0, tq.weight(0)).ry(1, tq.weight(1)).cx(1, 0).ry(0, tq.weight(2)).ry(1, tq.weight(3)).build())
TOY_MODEL = NoiseModel().add("CX", Depolarizing(0.05, 2)).add("RY", AmplitudeDamping(0.02)).with_readout(
    0, ReadoutError(0.05, 0.02))


@pytest.mark.parametrize("name", ["plain", "normalization", "quantization", "all"])
def test_tiny_training_improves_loss(name):
    x, y = _toy_data()
    model = QuantumNATClassifier(TOY, [0, 1], PRESETS[name], TOY_MODEL, seed=1)
    with torch.no_grad():
        model.eval()
        before = float(torch.nn.functional.cross_entropy(model(x), y))
    losses = fit(model, x, y, epochs=6, batch_size=12, lr=0.1, seed=0)
    assert len(losses) == 6 and not model.training
    with torch.no_grad():
        after = float(torch.nn.functional.cross_entropy(model(x), y))
    assert after < before, (before, after, losses)


def test_fit_is_repeatable_and_checks_input():
    x, y = _toy_data()
    runs = []
    for _ in range(2):
        model = QuantumNATClassifier(TOY, [0, 1], PRESETS["injection"], TOY_MODEL, seed=2)
        runs.append((fit(model, x, y, epochs=2, batch_size=16, seed=4), model.weights.detach().clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    model = QuantumNATClassifier(TOY, [0, 1], seed=0)
    with pytest.raises(QuantumNATError):
        fit(model, x, y[:10])
    with pytest.raises(QuantumNATError):
        fit(model, x, y, epochs=0)


def test_fit_skips_a_single_row_batch_under_normalization():
    x, y = _toy_data()
    model = QuantumNATClassifier(TOY, [0, 1], PRESETS["normalization"], seed=0)
    assert len(fit(model, x[:17], y[:17], epochs=1, batch_size=8)) == 1     # 8 + 8 + 1


# --------------------------------------------------------------------------- on a transpiled device circuit


def test_injection_on_a_transpiled_fake_backend_circuit():
    fake = pytest.importorskip("qiskit_ibm_runtime.fake_provider")
    backend = fake.FakeManilaV2()
    nm = NoiseModel.from_backend(backend)
    logical = (tq.CircuitBuilder(3).ry(0, tq.feature(0)).ry(1, tq.feature(1)).cx(0, 1).cx(1, 2).cx(2, 0)
               .ry(2, tq.weight(0)).cx(0, 2).build())
    pc, layout = tq.transpile(logical, backend, seed=1)
    w = torch.tensor([0.7], dtype=torch.float64)
    x = torch.tensor([[0.4, 2.0]], dtype=torch.float64)
    t = 4000
    inj = NoiseInjection(pc, layout.final, nm, scale=4.0, seed=0)
    z = inj(w, x.expand(t, -1))
    exact = expval(twirled_circuit(pc, nm, 4.0), [tq.Z(q) for q in layout.final], None, w, x)
    off, gain = readout_affine(nm.scaled(4.0), layout.final)
    exact = off + gain * exact
    sem = z.std(0) / t ** 0.5
    assert bool(((z.mean(0) - exact[0]).abs() <= 4 * sem + 1e-12).all()), (z.mean(0) - exact[0]) / sem


def test_presets_are_frozen_configs():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["plain"].injection = True  # type: ignore[misc]


def test_exact_injection_trains_on_the_density_matrix_expectation():
    cfg = dataclasses.replace(PRESETS["injection"], injection_method="exact", injection_scale=2.0)
    assert cfg.label == "exact-noise"
    model = QuantumNATClassifier(CIRCUIT, WIRES, cfg, MODEL, seed=0)
    exact = expval(CIRCUIT, _zs(), MODEL.scaled(2.0), model.weights, X, readout=True)
    assert torch.allclose(model(X), 5.0 * exact, atol=1e-12)      # training mode, no sampling
    model(X).sum().backward()
    assert model.weights.grad is not None and bool(model.weights.grad.abs().sum() > 0)
    no_ro = dataclasses.replace(cfg, inject_readout=False)
    plain_dm = expval(CIRCUIT, _zs(), MODEL.scaled(2.0), W, X)
    m2 = QuantumNATClassifier(CIRCUIT, WIRES, no_ro, MODEL, seed=0)
    assert torch.allclose(m2.injection(W, X), plain_dm, atol=1e-12)
    with pytest.raises(QuantumNATError):
        QuantumNATConfig(injection_method="magic")


def test_training_shot_noise_has_the_binomial_variance():
    cfg = QuantumNATConfig(shots=100)
    assert cfg.label == "shots"
    model = QuantumNATClassifier(CIRCUIT, WIRES, cfg, seed=0)
    x = X[:1].expand(4000, -1)
    z = model.expectations(x).detach()
    exact = tq.expval(CIRCUIT, _zs(), model.weights.detach(), X[:1])
    sd = ((1 - exact ** 2) / 100).sqrt()
    assert bool(((z.mean(0) - exact[0]).abs() <= 4 * sd[0] / 4000 ** 0.5).all())
    assert torch.allclose(z.std(0), sd[0], rtol=0.1)
    model.eval()
    assert torch.allclose(model.expectations(X), tq.expval(CIRCUIT, _zs(), model.weights.detach(), X), atol=1e-12)
    both = QuantumNATClassifier(CIRCUIT, WIRES, dataclasses.replace(PRESETS["injection"], shots=64), MODEL, seed=0)
    assert both.config.label == "injection+shots" and both(X).shape == (2, 3)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(QuantumNATError):
            QuantumNATConfig(shots=bad)
