"""Tests of tinyqml.noise.model: rules and their application, readout, scaling, JSON,
from_backend (against Qiskit Aer's device model) and to_aer, and input validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import tinyqml.qml as tq
from tinyqml.noise import channels as C
from tinyqml.noise import specs as S
from tinyqml.noise.errors import NoiseModelError, NoiseParameterError, NotCPTPError
from tinyqml.noise.model import ChannelOp, NoiseModel, NoiseRule, NoisyCircuit, as_noisy
from tinyqml.qml.errors import InteropError, WireError

qi = pytest.importorskip("qiskit.quantum_info")
aer_noise = pytest.importorskip("qiskit_aer.noise")
fake = pytest.importorskip("qiskit_ibm_runtime.fake_provider")


def _random_kraus_spec(seed: int, k: int, r: int) -> S.KrausError:
    rng = np.random.default_rng(seed)
    d = 2 ** k
    q, _ = np.linalg.qr(rng.normal(size=(r * d, d)) + 1j * rng.normal(size=(r * d, d)))
    return S.KrausError.from_channel(C.kraus([torch.tensor(q[i * d:(i + 1) * d]) for i in range(r)], name=f"r{seed}"))


def _superop_le(ch: C.Channel) -> np.ndarray:
    """Qiskit SuperOp of our channel with the wires reversed (our first wire = first qarg)."""
    n = ch.n_wires
    rev = list(range(n - 1, -1, -1))
    ops = [k.numpy().reshape([2] * (2 * n)).transpose(rev + [n + r for r in rev]).reshape(2 ** n, 2 ** n)
           for k in ch.kraus]
    return qi.SuperOp(qi.Kraus(ops)).data


def _names(noisy: NoisyCircuit) -> list:
    return [noisy.circuit.ops[s].name if isinstance(s, int) else (s.channel.name, s.wires) for s in noisy.steps]


EVERY_KIND = (
    NoiseModel(name="every kind")
    .add("X", S.BitFlip(0.01))
    .add("Z", S.PhaseFlip(0.02), qubits=(1,))
    .add("H", S.Depolarizing(0.03))
    .add("CX", S.Depolarizing(0.04, 2))
    .add("CZ", S.PauliError((("XZ", 0.01), ("YY", 0.02))), qubits=(0, 1))
    .add("RY", S.AmplitudeDamping(0.05))
    .add("RY", S.PhaseDamping(0.06))
    .add("SX", S.ThermalRelaxation(50.0, 70.0, 0.1, 0.01))
    .add("RZ", S.ThermalRelaxation(math.inf, math.inf, 1.0))
    .add("SWAP", _random_kraus_spec(4, 2, 3), qubits=(2, 0))
    .add("ECR", S.DeviceGateError(1e-2, 5e-7, (1e-4, 9e-5), (8e-5, 1e-4)), qubits=(1, 2))
    .add("CCX", S.DeviceGateError(None, 5e-7, (1e-4, 9e-5, math.inf), (8e-5, 1e-4, math.inf)))
    .with_readout(0, C.ReadoutError(0.05, 0.02))
    .with_readout(2, C.ReadoutError(0.1, 0.0))
)


# --------------------------------------------------------------------------- rules and apply


def test_apply_inserts_errors_after_each_gate_in_rule_order():
    nm = NoiseModel().add("H", S.BitFlip(0.1)).add("H", S.PhaseFlip(0.2)).add("CX", S.Depolarizing(0.1, 2))
    c = tq.CircuitBuilder(3).h(0).x(1).h(2).cx(2, 0).build()
    noisy = nm.apply(c)
    assert _names(noisy) == ["H", ("bit_flip(0.1)", (0,)), ("phase_flip(0.2)", (0,)), "X",
                             "H", ("bit_flip(0.1)", (2,)), ("phase_flip(0.2)", (2,)),
                             "CX", ("depolarizing(0.1)", (2, 0))]
    assert noisy.n_channels == 5 and noisy.n_wires == 3 and noisy.circuit is c


def test_local_rules_take_precedence_over_all_qubit_rules():
    nm = (NoiseModel().add("CX", S.Depolarizing(0.1, 2))
          .add("CX", S.Depolarizing(0.3, 2), qubits=(0, 1))
          .add("CX", S.PauliError((("ZZ", 0.2),)), qubits=(0, 1)))
    c = tq.CircuitBuilder(3).cx(0, 1).cx(1, 0).cx(1, 2).build()
    assert _names(nm.apply(c)) == [
        "CX", ("depolarizing(0.3)", (0, 1)), ("pauli(ZZ=0.2)", (0, 1)),   # local rules only, in order
        "CX", ("depolarizing(0.1)", (1, 0)),                              # qubit order matters (as in Aer)
        "CX", ("depolarizing(0.1)", (1, 2)),
    ]
    assert nm.errors_for("CX", (0, 1)) == [S.Depolarizing(0.3, 2), S.PauliError((("ZZ", 0.2),))]
    assert nm.errors_for("CZ", (0, 1)) == []


def test_local_rule_on_a_qubit_outside_the_circuit_never_applies():
    nm = NoiseModel().add("X", S.BitFlip(0.1), qubits=(7,))
    noisy = nm.apply(tq.CircuitBuilder(2).x(0).x(1).build())
    assert noisy.n_channels == 0


def test_gate_names_are_normalised():
    rule = NoiseRule("cx", S.Depolarizing(0.1, 2))
    assert rule.gate == "CX"
    assert NoiseModel().add("rz", S.PhaseFlip(0.1)).rules[0].gate == "RZ"


def test_rules_on_variadic_gates():
    nm = NoiseModel().add("MultiRZ", S.PauliError((("ZZ", 0.1),))).add("MCX", S.PauliError((("XXXX", 0.2),)), qubits=(2, 0, 1, 3))
    c = tq.CircuitBuilder(4).multirz([0, 2], 0.3).mcx([2, 0, 1], 3).mcx([0, 1, 2], 3).build()
    assert _names(nm.apply(c)) == ["MultiRZ", ("pauli(ZZ=0.1)", (0, 2)), "MCX", ("pauli(XXXX=0.2)", (2, 0, 1, 3)), "MCX"]
    bad = tq.CircuitBuilder(3).multirz([0, 1, 2], 0.3).build()
    with pytest.raises(NoiseModelError, match="on 2 qubit\\(s\\) after MultiRZ on 3 wires"):
        nm.apply(bad)


def test_mcx_with_one_or_two_controls_takes_the_cx_and_ccx_rules():
    """As in Qiskit, which exports them as cx / ccx (and Aer attaches those gates' errors)."""
    nm = (NoiseModel().add("CX", S.Depolarizing(0.1, 2)).add("CCX", S.PauliError((("XXX", 0.1),)))
          .add("MCX", S.PauliError((("ZZZZ", 0.3),))))
    c = tq.CircuitBuilder(4).mcx([1], 0).mcx([2, 0], 3).mcx([0, 1, 2], 3).build()
    assert _names(nm.apply(c)) == ["MCX", ("depolarizing(0.1)", (1, 0)), "MCX", ("pauli(XXX=0.1)", (2, 0, 3)),
                                   "MCX", ("pauli(ZZZZ=0.3)", (0, 1, 2, 3))]


@pytest.mark.parametrize("make,err,fragment", [
    (lambda: NoiseRule("FOO", S.BitFlip(0.1)), NoiseModelError, "unknown gate 'FOO'"),
    (lambda: NoiseRule(3, S.BitFlip(0.1)), NoiseModelError, "must be a tinyqml gate name"),
    (lambda: NoiseRule("CX", S.BitFlip(0.1)), NoiseModelError, "CX acts on 2 qubit(s) but its error acts on 1"),
    (lambda: NoiseRule("X", S.Depolarizing(0.1, 2)), NoiseModelError, "X acts on 1 qubit(s) but its error acts on 2"),
    (lambda: NoiseRule("CCX", S.Depolarizing(0.1, 2)), NoiseModelError, "CCX acts on 3 qubit(s)"),
    (lambda: NoiseRule("X", "bit_flip"), NoiseModelError, "must be an ErrorSpec"),
    (lambda: NoiseRule("CX", S.Depolarizing(0.1, 2), (0,)), NoiseModelError, "qubits must be 2 distinct"),
    (lambda: NoiseRule("CX", S.Depolarizing(0.1, 2), (1, 1)), NoiseModelError, "qubits must be 2 distinct"),
    (lambda: NoiseRule("X", S.BitFlip(0.1), (-1,)), NoiseModelError, "non-negative integers"),
    (lambda: NoiseRule("X", S.BitFlip(0.1), (True,)), NoiseModelError, "non-negative integers"),
    (lambda: NoiseRule("X", S.BitFlip(0.1), (0.5,)), NoiseModelError, "non-negative integers"),
    (lambda: NoiseRule("X", S.BitFlip(1.5)), NoiseParameterError, "p must be in [0, 1]"),
    (lambda: NoiseRule("X", S.ThermalRelaxation(1.0, 3.0, 0.1)), NoiseParameterError, "t2 must be <= 2 * t1"),
    (lambda: NoiseRule("X", S.KrausError((((0.9, 0), (0, 0.9)),))), NotCPTPError, "not trace preserving"),
    (lambda: NoiseModel(rules=("x",)), NoiseModelError, "must be NoiseRule objects"),
    (lambda: NoiseModel(readout=((0, C.ReadoutError(0.1, 0.1)), (0, C.ReadoutError(0.2, 0.1)))),
     NoiseModelError, "distinct non-negative qubits"),
    (lambda: NoiseModel(readout=((0, (0.1, 0.1)),)), NoiseModelError, "(qubit, ReadoutError) pairs"),
    (lambda: NoiseModel().apply("circuit"), NoiseModelError, "apply needs a tinyqml Circuit"),
])
def test_invalid_rules_and_models(make, err, fragment):
    with pytest.raises(err) as info:
        make()
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- noisy circuits


def test_noisy_circuit_plain_and_steps():
    c = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
    plain = NoisyCircuit.plain(c)
    assert plain.steps == (0, 1) and plain.n_channels == 0
    op = ChannelOp(C.depolarizing(0.1, 2), [1, 0])
    assert op.wires == (1, 0)
    noisy = NoisyCircuit(c, [op, 0, op, 1, op])
    assert noisy.n_channels == 3 and isinstance(noisy.steps, tuple)


@pytest.mark.parametrize("make,err,fragment", [
    (lambda c: ChannelOp(C.bit_flip(0.1), (0, 1)), WireError, "acts on 1 wire(s), got wires=(0, 1)"),
    (lambda c: ChannelOp(C.depolarizing(0.1, 2), (1, 1)), WireError, "must be distinct non-negative"),
    (lambda c: ChannelOp(C.bit_flip(0.1), (-1,)), WireError, "must be distinct non-negative"),
    (lambda c: ChannelOp("bit_flip", (0,)), NoiseModelError, "ChannelOp needs a Channel"),
    (lambda c: NoisyCircuit(c, (0, ChannelOp(C.bit_flip(0.1), (2,)), 1)), WireError,
     "on wires (2,), but the circuit has 2 wires (0..1)"),
    (lambda c: NoisyCircuit(c, (0, ChannelOp(C.depolarizing(0.1, 2), (1, 5)), 1)), WireError, "the circuit has 2 wires"),
    (lambda c: NoisyCircuit(c, (0,)), NoiseModelError, "every operation index of the circuit once"),
    (lambda c: NoisyCircuit(c, (1, 0)), NoiseModelError, "in increasing order"),
    (lambda c: NoisyCircuit(c, (0, 1, 1)), NoiseModelError, "got [0, 1, 1]"),
    (lambda c: NoisyCircuit("c", (0, 1)), NoiseModelError, "needs a tinyqml Circuit"),
    (lambda c: as_noisy(NoisyCircuit.plain(c), NoiseModel()), NoiseModelError, "not both"),
    (lambda c: as_noisy("c", None), NoiseModelError, "expected a tinyqml Circuit or NoisyCircuit"),
    (lambda c: as_noisy(c, "model"), NoiseModelError, "noise_model must be a tinyqml.noise.NoiseModel"),
])
def test_invalid_noisy_circuits(make, err, fragment):
    c = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
    with pytest.raises(err) as info:
        make(c)
    assert fragment in str(info.value)


def test_as_noisy():
    c = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
    assert as_noisy(c, None).steps == (0, 1)
    noisy = NoisyCircuit.plain(c)
    assert as_noisy(noisy, None) is noisy
    assert as_noisy(c, NoiseModel().add("H", S.BitFlip(0.1))).n_channels == 1


# --------------------------------------------------------------------------- readout


def test_readout_errors_and_replacement():
    nm = NoiseModel().with_readout(2, C.ReadoutError(0.1, 0.2)).with_readout(0, C.ReadoutError(0.3, 0.0))
    assert [q for q, _ in nm.readout] == [0, 2]          # kept sorted
    assert nm.readout_errors([2, 1, 0]) == [C.ReadoutError(0.1, 0.2), None, C.ReadoutError(0.3, 0.0)]
    nm2 = nm.with_readout(2, C.ReadoutError(0.05, 0.05))
    assert nm2.readout_errors([2]) == [C.ReadoutError(0.05, 0.05)] and len(nm2.readout) == 2
    assert nm.readout_errors([2]) == [C.ReadoutError(0.1, 0.2)]   # immutable


# --------------------------------------------------------------------------- scaling


def test_scaled_model():
    nm = (NoiseModel(name="dev").add("X", S.BitFlip(0.01)).add("CX", S.Depolarizing(0.02, 2), qubits=(0, 1))
          .add("SX", S.ThermalRelaxation(50.0, 60.0, 1.0)).add("RY", S.AmplitudeDamping(0.1))
          .add("H", S.DeviceGateError(1e-3, 3e-8, (1e-4,), (8e-5,)))
          .with_readout(0, C.ReadoutError(0.02, 0.01)).with_readout(3, C.ReadoutError(0.1, 0.05)))
    s = nm.scaled(3)
    assert [r.gate for r in s.rules] == [r.gate for r in nm.rules]
    assert [r.qubits for r in s.rules] == [r.qubits for r in nm.rules]
    assert s.rules[0].error == S.BitFlip(0.01 * 3)
    assert s.rules[1].error == S.Depolarizing(0.02 * 3, 2)
    assert s.rules[2].error == S.ThermalRelaxation(50.0 / 3, 60.0 / 3, 1.0)
    assert s.rules[3].error.gamma == pytest.approx(1 - 0.9 ** 3)
    assert s.rules[4].error == S.DeviceGateError(3e-3, 3e-8, (1e-4 / 3,), (8e-5 / 3,))
    assert s.readout_errors([0, 3]) == [C.ReadoutError(0.06, 0.03), C.ReadoutError(0.1 * 3, 0.05 * 3)]
    assert s.name == "dev x3"
    one = nm.scaled(1)
    assert one.readout == nm.readout and one.name == "dev x1"
    for a, b in zip(one.rules, nm.rules):
        if isinstance(a.error, S.AmplitudeDamping):   # 1 - (1 - g)**1 may differ from g by an ulp
            assert a.error.gamma == pytest.approx(b.error.gamma, abs=1e-15)
        else:
            assert a == b
    zero = nm.scaled(0)
    assert all(e.p0_given_1 == 0 and e.p1_given_0 == 0 for _, e in zero.readout)
    c = tq.CircuitBuilder(2).h(0).x(1).cx(0, 1).sx(0).ry(1, 0.4).build()
    from tinyqml.noise import density_matrix
    psi = tq.statevector(c)[0]
    assert torch.allclose(density_matrix(c, zero)[0], torch.outer(psi, psi.conj()), atol=1e-14)


@pytest.mark.parametrize("model,factor,err,fragment", [
    (NoiseModel().with_readout(1, C.ReadoutError(0.3, 0.1)), 4, NoiseParameterError,
     "scaling P(0|1) of qubit 1=0.3 by 4 gives 1.2, above 1"),
    (NoiseModel().with_readout(0, C.ReadoutError(0.1, 0.6)), 2, NoiseParameterError, "P(1|0) of qubit 0"),
    (NoiseModel().add("X", S.BitFlip(0.5)), 2.5, NoiseParameterError, "above 1"),
    (NoiseModel().add("CX", S.Depolarizing(0.9, 2)), 2, NoiseParameterError, "above its maximum"),
    (NoiseModel().add("X", _random_kraus_spec(1, 1, 2)), 2, NoiseParameterError, "no error rate to scale"),
    (NoiseModel().with_readout(0, C.ReadoutError(0.1, 0.1)), -1, NoiseParameterError, "finite and >= 0"),
    (NoiseModel().with_readout(0, C.ReadoutError(0.1, 0.1)), "x", NoiseParameterError, "real number"),
])
def test_scaled_out_of_range(model, factor, err, fragment):
    with pytest.raises(err) as info:
        model.scaled(factor)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- JSON


def test_json_round_trip_every_kind():
    text = EVERY_KIND.to_json()
    back = NoiseModel.from_json(text)
    assert back == EVERY_KIND
    assert {type(r.error).kind for r in back.rules} == set(S.SPEC_KINDS)
    assert NoiseModel.from_json(EVERY_KIND.to_json(indent=2)) == EVERY_KIND
    d = json.loads(text)
    assert d["tinyqml_noise_model"] == 1 and d["name"] == "every kind"
    assert d["readout"][0] == {"qubit": 0, "p0_given_1": 0.05, "p1_given_0": 0.02}
    # the channels after the round trip are the same
    c = tq.CircuitBuilder(3).h(0).cx(0, 1).swap(2, 0).ecr(1, 2).ccx(0, 1, 2).sx(1).rz(2, 0.3).ry(0, 0.2).build()
    a, b = EVERY_KIND.apply(c), back.apply(c)
    assert len(a.steps) == len(b.steps) == 8 + 9   # RY has two rules
    for x, y in zip(a.steps, b.steps):
        if isinstance(x, ChannelOp):
            assert x.wires == y.wires
            assert torch.equal(x.channel.superoperator(), y.channel.superoperator())


@pytest.mark.parametrize("backend_name", ["FakeManilaV2", "FakeLagosV2"])
def test_json_round_trip_from_backend(backend_name):
    nm = NoiseModel.from_backend(getattr(fake, backend_name)())
    back = NoiseModel.from_json(nm.to_json())
    assert back == nm and back.name == nm.name
    assert back.scaled(0.5) == nm.scaled(0.5)


def _rule(error: dict, gate: str = "X", **extra) -> str:
    return json.dumps({"tinyqml_noise_model": 1, "rules": [dict(gate=gate, error=error, **extra)]})


BITFLIP = {"kind": "bit_flip", "p": 0.1}


@pytest.mark.parametrize("text,fragment", [
    ("not json", "noise model JSON does not parse"),
    ("", "does not parse"),
    (None, "does not parse"),
    ("[1, 2]", "not a tinyqml noise model"),
    ('{"rules": []}', "not a tinyqml noise model"),
    ('{"tinyqml_noise_model": 2}', "not a tinyqml noise model"),
    ('{"tinyqml_noise_model": 1, "rules": 5}', "bad noise model entry"),
    ('{"tinyqml_noise_model": 1, "rules": [5]}', "a noise rule needs 'gate' and 'error'"),
    ('{"tinyqml_noise_model": 1, "rules": [{"gate": "X"}]}', "a noise rule needs 'gate' and 'error'"),
    (_rule(BITFLIP, gate="FOO"), "unknown gate 'FOO'"),
    (_rule(BITFLIP, gate="CX"), "CX acts on 2 qubit(s) but its error acts on 1"),
    (_rule(BITFLIP, qubits=[0, 1]), "qubits must be 1 distinct"),
    (_rule(BITFLIP, qubits=["a"]), "bad noise model entry"),
    (_rule({"kind": "zzz"}), "unknown error kind 'zzz'"),
    (_rule({"kind": "bit_flip", "p": 0.1, "extra": 1}), "unknown field(s) ['extra']"),
    (_rule({"kind": "bit_flip", "p": 2.0}), "p must be in [0, 1]"),
    (_rule({"kind": "kraus", "ops": [[[1, 0], [0, 0]]]}), "not trace preserving"),
    ('{"tinyqml_noise_model": 1, "readout": [{"qubit": 0}]}', "bad noise model entry"),
    ('{"tinyqml_noise_model": 1, "readout": [{"qubit": "a", "p0_given_1": 0, "p1_given_0": 0}]}',
     "bad noise model entry"),
    ('{"tinyqml_noise_model": 1, "readout": [{"qubit": 0, "p0_given_1": 1.5, "p1_given_0": 0}]}',
     "p0_given_1 must be in [0, 1]"),
    ('{"tinyqml_noise_model": 1, "readout": [{"qubit": 0, "p0_given_1": 0, "p1_given_0": 0}, '
     '{"qubit": 0, "p0_given_1": 0, "p1_given_0": 0}]}', "distinct non-negative qubits"),
])
def test_from_json_invalid(text, fragment):
    with pytest.raises(NoiseModelError) as info:
        NoiseModel.from_json(text)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- from_backend


@pytest.fixture(scope="module", params=["FakeManilaV2", "FakeLagosV2"])
def backend(request):
    return getattr(fake, request.param)()


@pytest.mark.parametrize("gate_error,thermal", [(True, True), (True, False), (False, True), (False, False)])
def test_from_backend_rules_equal_aer_device_errors(backend, gate_error, thermal):
    from qiskit_aer.noise.device import basic_device_gate_errors

    from tinyqml.noise.model import _qiskit_to_tinyqml

    nm = NoiseModel.from_backend(backend, gate_error=gate_error, thermal_relaxation=thermal)
    names = _qiskit_to_tinyqml()
    aer = {(names[name], tuple(q)): err for name, q, err in
           basic_device_gate_errors(target=backend.target, gate_error=gate_error, thermal_relaxation=thermal)
           if name != "reset"}
    ours = {(r.gate, r.qubits): r.error for r in nm.rules}
    assert set(ours) == set(aer)
    assert all(r.qubits is not None for r in nm.rules)
    worst = 0.0
    for key, spec in ours.items():
        assert isinstance(spec, S.DeviceGateError) and spec.relaxation is thermal
        worst = max(worst, float(np.abs(_superop_le(spec.channel()) - qi.SuperOp(aer[key]).data).max()))
    assert worst <= 1e-12
    if gate_error or thermal:
        assert {g for g, _ in ours} == {"CX", "I", "SX", "X"}   # rz is virtual: no error, no duration
    else:
        assert nm.rules == ()


def test_from_backend_readout(backend):
    props = backend.properties()
    nm = NoiseModel.from_backend(backend)
    assert [q for q, _ in nm.readout] == list(range(backend.num_qubits))
    asym = 0
    for q, e in nm.readout:
        assert e.p0_given_1 == props.qubit_property(q)["prob_meas0_prep1"][0]
        assert e.p1_given_0 == props.qubit_property(q)["prob_meas1_prep0"][0]
        asym += e.p0_given_1 != e.p1_given_0
    assert asym >= backend.num_qubits - 1
    # symmetric: the target's measure error, which is what Aer's from_backend uses
    from qiskit_aer.noise.device import basic_device_readout_errors

    sym = NoiseModel.from_backend(backend, asymmetric_readout=False)
    assert sym.rules == nm.rules
    aer = {tuple(q)[0]: err.probabilities for q, err in basic_device_readout_errors(target=backend.target)}
    for q, e in sym.readout:
        assert e.p0_given_1 == e.p1_given_0 == backend.target["measure"][(q,)].error
        np.testing.assert_allclose(e.matrix.numpy().T, aer[q], atol=1e-15)
    assert NoiseModel.from_backend(backend, readout_error=False).readout == ()
    assert nm.name == backend.name


def test_from_backend_without_properties_falls_back_to_the_target():
    generic = pytest.importorskip("qiskit.providers.fake_provider").GenericBackendV2(3, seed=11)
    nm = NoiseModel.from_backend(generic)
    assert len(nm.readout) == 3
    for q, e in nm.readout:
        assert e.p0_given_1 == e.p1_given_0 == generic.target["measure"][(q,)].error
    assert {r.gate for r in nm.rules} <= {"CX", "I", "SX", "X", "RZ"} and nm.rules


@pytest.mark.parametrize("thing", [object(), "FakeManila", None])
def test_from_backend_invalid(thing):
    with pytest.raises(NoiseModelError, match="needs a Qiskit BackendV2 with a target"):
        NoiseModel.from_backend(thing)


# --------------------------------------------------------------------------- to_aer


def test_to_aer_structure():
    aer = EVERY_KIND.to_aer()
    # the rz rule (T1 = T2 = inf) is the identity, which Aer drops
    assert set(aer.noise_instructions) == {"x", "z", "h", "cx", "cz", "ry", "sx", "swap", "ecr", "ccx", "measure"}
    d = aer.to_dict()
    ro = {tuple(e["gate_qubits"][0]): np.asarray(e["probabilities"]) for e in d["errors"] if e["type"] == "roerror"}
    assert set(ro) == {(0,), (2,)}
    np.testing.assert_allclose(ro[(0,)], C.ReadoutError(0.05, 0.02).matrix.numpy().T)
    np.testing.assert_allclose(ro[(2,)], [[1.0, 0.0], [0.1, 0.9]])


def test_to_aer_composes_rules_on_the_same_key_in_order():
    nm = NoiseModel().add("RY", S.AmplitudeDamping(0.3)).add("RY", S.BitFlip(0.2))
    d = nm.to_aer().to_dict()
    (err,) = [e for e in d["errors"] if e["type"] == "qerror"]
    assert err["operations"] == ["ry"]
    got = qi.SuperOp(aer_noise.QuantumError.from_dict(err)).data
    want = qi.SuperOp(aer_noise.amplitude_damping_error(0.3).compose(aer_noise.pauli_error([("X", 0.2), ("I", 0.8)])))
    np.testing.assert_allclose(got, want.data, atol=1e-12)


def test_to_aer_two_qubit_order_is_little_endian():
    ch = C.tensor(C.amplitude_damping(0.4), C.kraus([torch.eye(2, dtype=torch.float64)]))   # damping on the 1st wire
    nm = NoiseModel().add("CX", S.KrausError.from_channel(ch), qubits=(3, 1))
    (err,) = [e for e in nm.to_aer().to_dict()["errors"] if e["type"] == "qerror"]
    assert [list(q) for q in err["gate_qubits"]] == [[3, 1]]
    got = qi.SuperOp(aer_noise.QuantumError.from_dict(err)).data
    # Aer: qargs (3, 1), the first qarg (3) is the least significant qubit of the error
    want = qi.SuperOp(aer_noise.pauli_error([("I", 1.0)]).tensor(aer_noise.amplitude_damping_error(0.4))).data
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("gate,spec", [
    ("MCX", S.PauliError((("XXX", 0.1),))),
    ("MultiRZ", S.PhaseFlip(0.1)),
    ("QubitUnitary", S.BitFlip(0.1)),
])
def test_to_aer_refuses_gates_without_a_qiskit_name(gate, spec):
    nm = NoiseModel().add("X", S.BitFlip(0.1)).add(gate, spec)
    with pytest.raises(InteropError, match=f"no Qiskit gate name for {gate}"):
        nm.to_aer()
