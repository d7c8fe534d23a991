"""Tests of :mod:`tinyqml.noise.calibration`: fake backends by name, a backend's calibration, noise model summaries."""

from __future__ import annotations

import math
import sys

import pytest

from tinyqml.noise import BitFlip, Depolarizing, NoiseModel, ReadoutError
from tinyqml.noise.calibration import (
    backend_calibration,
    fake_backend,
    fake_backend_names,
    model_on_qubits,
    noise_model_summary,
)
from tinyqml.noise.channels import average_gate_fidelity
from tinyqml.noise.errors import NoiseModelError
from tinyqml.qml.errors import InteropError

fake = pytest.importorskip("qiskit_ibm_runtime.fake_provider")


@pytest.fixture(scope="module")
def manila():  # type: ignore[no-untyped-def]
    return fake.FakeManilaV2()


@pytest.mark.parametrize("name", ["FakeManilaV2", "FakeManila", "manila", "fake_manila", "MANILA", "fake-manila-v2"])
def test_fake_backend_aliases(name: str) -> None:
    assert type(fake_backend(name)).__name__ == "FakeManilaV2"


def test_fake_backend_without_v2_suffix() -> None:
    assert type(fake_backend("sherbrooke")).__name__ == "FakeSherbrooke"


def test_fake_backend_names_are_the_fake_provider_backends() -> None:
    names = fake_backend_names()
    assert {"FakeManilaV2", "FakeQuitoV2", "FakeLagosV2", "FakeSherbrooke"} <= set(names)
    assert list(names) == sorted(names)
    assert "FakeProviderForBackendV2" not in names and "FakeBackendV2" not in names


@pytest.mark.parametrize("name", ["nope", "", "FakeNowhereV2"])
def test_unknown_backend_lists_the_names(name: str) -> None:
    with pytest.raises(NoiseModelError) as exc:
        fake_backend(name)
    assert "FakeManilaV2" in str(exc.value) and "FakeQuitoV2" in str(exc.value)


def test_missing_runtime_is_an_interop_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "qiskit_ibm_runtime", None)
    with pytest.raises(InteropError, match=r"pip install 'tinyqml\[interop\]'"):
        fake_backend("manila")


def test_calibration_equals_the_target_and_properties(manila) -> None:  # type: ignore[no-untyped-def]
    cal = backend_calibration(manila)
    target, props = manila.target, manila.properties()
    assert (cal.name, cal.backend_class, cal.num_qubits) == ("fake_manila", "FakeManilaV2", 5)
    assert cal.basis_gates == ("cx", "id", "rz", "sx", "x")
    assert set(cal.coupling_map) == set(manila.coupling_map.get_edges())
    for q in range(5):
        qc, qp = cal.qubit(q), target.qubit_properties[q]
        assert (qc.t1, qc.t2, qc.frequency) == (qp.t1, qp.t2, qp.frequency)
        assert qc.readout_error == target["measure"][(q,)].error
        assert qc.readout_length == target["measure"][(q,)].duration
        assert qc.p1_given_0 == props.qubit_property(q)["prob_meas1_prep0"][0]
        assert qc.p0_given_1 == props.qubit_property(q)["prob_meas0_prep1"][0]
    for op in ("sx", "x", "cx", "rz", "measure"):
        for qargs, ip in target[op].items():
            g = cal.gate(op, qargs)
            assert (g.error, g.duration) == (ip.error, ip.duration)
    assert cal.gate("rz", (0,)).virtual and not cal.gate("sx", (0,)).virtual
    assert not any(g.gate in ("delay", "if_else", "for_loop") for g in cal.gates)
    assert cal.last_update is not None and "2024" in cal.last_update


def test_calibration_means(manila) -> None:  # type: ignore[no-untyped-def]
    cal = backend_calibration(manila)
    t = manila.target
    one = [ip.error for op in ("id", "sx", "x") for ip in t[op].values()]
    two = [ip.error for ip in t["cx"].values()]
    assert cal.mean_gate_error(1) == pytest.approx(sum(one) / len(one))
    assert cal.mean_gate_error(2) == pytest.approx(sum(two) / len(two))
    assert cal.mean_readout_error == pytest.approx(sum(ip.error for ip in t["measure"].values()) / 5)


def test_calibration_on_qubits(manila) -> None:  # type: ignore[no-untyped-def]
    sub = backend_calibration(manila).on_qubits([1, 2])
    assert [q.qubit for q in sub.qubits] == [1, 2]
    assert sub.coupling_map == ((1, 2), (2, 1))
    assert {g.qubits for g in sub.gates} == {(1,), (2,), (1, 2), (2, 1)}
    with pytest.raises(NoiseModelError, match="no qubit 9"):
        backend_calibration(manila).on_qubits([0, 9])


def test_calibration_needs_a_backend() -> None:
    with pytest.raises(NoiseModelError, match="BackendV2"):
        backend_calibration(object())


def test_summary_of_the_backend_model(manila) -> None:  # type: ignore[no-untyped-def]
    model = NoiseModel.from_backend(manila)
    s = noise_model_summary(model)
    assert len(s.rules) == len(model.rules) and s.name == "fake_manila"
    for rule in model.rules:
        r = s.rule(rule.gate, rule.qubits)
        spec = rule.error
        assert r.calibrated_error == spec.error and r.duration == spec.duration and r.t1 == spec.t1
        assert r.infidelity == pytest.approx(1 - average_gate_fidelity(spec.channel()), abs=1e-15)
        relax = spec.relaxation_channel()
        assert r.depolarizing == spec.depolarizing_parameter(relax)
        assert r.relaxation_infidelity == pytest.approx(1 - average_gate_fidelity(relax), abs=1e-15)
        # Aer's recipe: the whole channel's infidelity is the calibrated error unless relaxation alone exceeds it
        assert r.infidelity == pytest.approx(max(spec.error, r.relaxation_infidelity), rel=1e-9)
    cx = s.rule("CX", (0, 1))
    assert cx.n_qubits == 2 and cx.calibrated_error == manila.target["cx"][(0, 1)].error
    assert s.count(1) == 15 and s.count(2) == 8
    assert s.mean_error(2) == pytest.approx(sum(r.infidelity for r in s.rules if r.n_qubits == 2) / 8)
    ro = s.readout_for(0)
    assert ro.p0_given_1 == manila.properties().qubit_property(0)["prob_meas0_prep1"][0]
    assert ro.matrix == tuple(tuple(row) for row in dict(model.readout)[0].matrix.tolist())


def test_summary_of_a_hand_made_model() -> None:
    nm = NoiseModel().add("CX", Depolarizing(0.02, 2)).add("X", BitFlip(0.1), qubits=(1,))
    s = noise_model_summary(nm.with_readout(0, ReadoutError(0.1, 0.0)))
    cx = s.rule("CX", None)
    assert (cx.kind, cx.depolarizing, cx.n_qubits, cx.calibrated_error) == ("depolarizing", 0.02, 2, None)
    assert cx.infidelity == pytest.approx(0.02 * 15 / 16 * 4 / 5)  # 1 - F_avg of a 2-qubit depolarizing error
    x = s.rule("X", (1,))
    assert x.kind == "bit_flip" and x.depolarizing is None and x.infidelity == pytest.approx(2 * 0.1 / 3)
    assert s.readout_for(0).error == pytest.approx(0.05) and s.mean_readout_error == pytest.approx(0.05)
    d = s.to_dict()
    assert d["rules"][0]["qubits"] is None and d["mean_error"]["2q"] == pytest.approx(cx.infidelity)
    with pytest.raises(NoiseModelError):
        s.rule("CX", (0, 1))
    assert math.isclose(s.mean_error(1), x.infidelity)


def test_model_on_qubits(manila) -> None:  # type: ignore[no-untyped-def]
    model = NoiseModel.from_backend(manila)
    sub = model_on_qubits(model, (0, 1))
    assert {r.qubits for r in sub.rules} == {(0,), (1,), (0, 1), (1, 0)}
    assert [q for q, _ in sub.readout] == [0, 1] and sub.name == model.name
    assert NoiseModel.from_json(sub.to_json()) == sub
