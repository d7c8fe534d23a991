"""Tests of tinyqml.noise.costs: ESP from a calibrated model."""

from __future__ import annotations

import math

import pytest

import tinyqml.qml as tq
from tinyqml.noise import Depolarizing, NoiseModel, ReadoutError
from tinyqml.noise.costs import esp, esp_costs
from tinyqml.qml.errors import CircuitFormatError
from tinyqml.search import Constraint


def test_esp_multiplies_gate_fidelities_and_readout():
    nm = (NoiseModel().add("H", Depolarizing(0.01)).add("CX", Depolarizing(0.04, 2))
          .add("CX", Depolarizing(0.2, 2), qubits=(1, 0)).with_readout(0, ReadoutError(0.02, 0.04)))
    c = tq.CircuitBuilder(2).h(0).cx(0, 1).cx(1, 0).build()
    want = (1 - 0.01 / 2) * (1 - 0.75 * 0.04) * (1 - 0.75 * 0.2) * (1 - 0.03)
    assert esp(c, nm) == pytest.approx(want, rel=1e-12)
    assert esp(c, nm, wires=[1]) == pytest.approx(want / (1 - 0.03), rel=1e-12)


def test_esp_of_a_backend_model_falls_with_depth():
    fake = pytest.importorskip("qiskit_ibm_runtime.fake_provider")
    backend = fake.FakeManilaV2()
    nm = NoiseModel.from_backend(backend)
    shallow, _ = tq.transpile(tq.templates.hardware_efficient(3, 1), backend, seed=0)
    deep, _ = tq.transpile(tq.templates.hardware_efficient(3, 4), backend, seed=0)
    a, b = esp(shallow, nm), esp(deep, nm)
    assert 0 < b < a < 1
    assert esp(shallow, nm.scaled(4)) < a
    costs = esp_costs(nm)
    assert costs.feasible(shallow, [Constraint("esp", min=b)]) and not costs.feasible(deep, [Constraint("esp", min=a)])
    assert math.isclose(costs.evaluate(deep)["esp"], b)


def test_esp_needs_a_circuit():
    with pytest.raises(CircuitFormatError, match="needs a tinyqml Circuit"):
        esp("h q[0];", NoiseModel())
