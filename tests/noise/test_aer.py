"""Tests of tinyqml.noise.aer: Aer counts and <Z> estimates agree with tinyqml's exact noisy simulation."""

from __future__ import annotations

import sys

import pytest
import torch

import tinyqml.qml as tq
from tinyqml.noise import (
    AmplitudeDamping,
    Depolarizing,
    NoiseModel,
    ReadoutError,
    ThermalRelaxation,
    expval,
    probs,
)
from tinyqml.qml.errors import InteropError, ShapeError, WireError

pytest.importorskip("qiskit_aer")

from tinyqml.noise.aer import aer_counts, aer_expectations  # noqa: E402

CIRCUIT = (tq.CircuitBuilder(3).ry(0, tq.feature(0)).ry(1, tq.feature(1)).h(2).cx(0, 1).rx(2, tq.weight(0))
           .cx(1, 2).ry(0, tq.weight(1)).cx(2, 0).build())
MODEL = (NoiseModel().add("CX", Depolarizing(0.08, 2)).add("RY", AmplitudeDamping(0.15))
         .add("H", ThermalRelaxation(50.0, 40.0, 10.0))
         .with_readout(0, ReadoutError(0.1, 0.04)).with_readout(2, ReadoutError(0.03, 0.06)))
W = torch.tensor([0.4, 0.9], dtype=torch.float64)
X = torch.tensor([[0.3, 1.1], [1.2, 2.5], [2.9, 0.2]], dtype=torch.float64)


def test_expectations_agree_with_exact_readout_within_shot_noise():
    shots = 4000
    wires = [2, 0, 1]
    z = aer_expectations(CIRCUIT, W, X, MODEL, shots=shots, seed=3, wires=wires)
    exact = expval(CIRCUIT, [tq.Z(w) for w in wires], MODEL, W, X, readout=True)
    sigma = ((1 - exact ** 2) / shots).sqrt()
    assert z.shape == (3, 3) and z.dtype == torch.float64
    assert bool(((z - exact).abs() <= 4 * sigma + 1e-9).all()), (z - exact) / sigma


def test_counts_agree_with_exact_probabilities_and_use_tinyqml_order():
    shots = 4000
    wires = [1, 2]
    counts = aer_counts(CIRCUIT, W, X, MODEL, shots=shots, seed=5, wires=wires)
    p = probs(CIRCUIT, MODEL, W, X, wires=wires)        # readout included; index = wires[0] most significant
    for b, cnt in enumerate(counts):
        assert sum(cnt.values()) == shots and all(len(k) == 2 for k in cnt)
        freq = torch.tensor([cnt.get(format(i, "02b"), 0) / shots for i in range(4)], dtype=torch.float64)
        sigma = (p[b] * (1 - p[b]) / shots).sqrt()
        assert bool(((freq - p[b]).abs() <= 4 * sigma + 2e-3).all()), (freq, p[b])


def test_key_order_and_readout_switch():
    c = tq.CircuitBuilder(3).x(0).x(1).build()          # |110>
    assert aer_counts(c, shots=10, seed=0) == [{"110": 10}]
    assert aer_counts(c, shots=10, seed=0, wires=[2, 0]) == [{"01": 10}]
    flip = NoiseModel().with_readout(1, ReadoutError(p0_given_1=1.0, p1_given_0=0.0))
    assert aer_counts(c, noise_model=flip, shots=10, seed=0) == [{"100": 10}]
    assert aer_counts(c, noise_model=flip, shots=10, seed=0, readout=False) == [{"110": 10}]
    assert aer_expectations(c, noise_model=flip, shots=10, seed=0).tolist() == [[-1.0, 1.0, 1.0]]


def test_seeded_runs_repeat():
    a = aer_counts(CIRCUIT, W, X, MODEL, shots=200, seed=11)
    b = aer_counts(CIRCUIT, W, X, MODEL, shots=200, seed=11)
    assert a == b
    one_row = aer_counts(CIRCUIT, W, X[0], MODEL, shots=200, seed=11)     # a single input vector
    assert len(one_row) == 1


def test_bad_input():
    with pytest.raises(ShapeError):
        aer_counts(CIRCUIT, W, X, shots=0)
    with pytest.raises(WireError):
        aer_counts(CIRCUIT, W, X, wires=[0, 0])
    with pytest.raises(WireError):
        aer_counts(CIRCUIT, W, X, wires=[3])
    with pytest.raises(ShapeError):
        aer_counts(CIRCUIT, W)                           # the circuit reads features
    with pytest.raises(ShapeError):
        aer_counts(CIRCUIT, None, X)                     # ... and has weights
    with pytest.raises(InteropError):
        aer_counts(CIRCUIT, W, X, noise_model="fake_manila")


def test_missing_aer_raises_interop_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "qiskit_aer", None)     # import qiskit_aer -> ImportError
    with pytest.raises(InteropError, match="qiskit-aer"):
        aer_counts(CIRCUIT, W, X)


def test_fake_backend_transpiled_circuit_agrees_with_density_matrix():
    fake = pytest.importorskip("qiskit_ibm_runtime.fake_provider")
    backend = fake.FakeManilaV2()
    nm = NoiseModel.from_backend(backend).scaled(2.0)
    logical = (tq.CircuitBuilder(4).ry(0, tq.feature(0)).ry(1, tq.feature(1)).ry(2, tq.feature(0))
               .cx(0, 1).cx(1, 2).cx(2, 3).cx(3, 0).ry(3, tq.weight(0)).rx(1, tq.weight(1)).build())
    pc, layout = tq.transpile(logical, backend, seed=0)
    x = torch.tensor([[0.3, 1.7], [2.2, 0.8]], dtype=torch.float64)
    w = torch.tensor([0.5, 1.3], dtype=torch.float64)
    shots = 2048
    z = aer_expectations(pc, w, x, nm, shots=shots, seed=2, wires=layout.final)
    exact = expval(pc, [tq.Z(q) for q in layout.final], nm, w, x, readout=True)
    sigma = ((1 - exact ** 2) / shots).sqrt()
    assert bool(((z - exact).abs() <= 4 * sigma + 1e-9).all()), (z - exact) / sigma
