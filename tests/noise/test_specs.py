"""Tests of tinyqml.noise.specs: error kinds as data (channels, scaling, JSON, validation)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tinyqml.noise import channels as C
from tinyqml.noise import specs as S
from tinyqml.noise.errors import NoiseParameterError, NotCPTPError

aer_noise = pytest.importorskip("qiskit_aer.noise")
qi = pytest.importorskip("qiskit.quantum_info")


def _random_kraus_spec(seed: int, k: int, r: int) -> S.KrausError:
    rng = np.random.default_rng(seed)
    d = 2 ** k
    q, _ = np.linalg.qr(rng.normal(size=(r * d, d)) + 1j * rng.normal(size=(r * d, d)))
    return S.KrausError.from_channel(C.kraus([torch.tensor(q[i * d:(i + 1) * d]) for i in range(r)], name=f"r{seed}"))


def _superop(ch: C.Channel, little_endian: bool = False) -> np.ndarray:
    """Qiskit SuperOp of our Kraus matrices (optionally with the wire order reversed, to
    compare with an Aer error on ``qargs = our wires``)."""
    ops = [k.numpy() for k in ch.kraus]
    if little_endian and ch.n_wires > 1:
        n = ch.n_wires
        rev = list(range(n - 1, -1, -1))
        ops = [m.reshape([2] * (2 * n)).transpose(rev + [n + r for r in rev]).reshape(2 ** n, 2 ** n) for m in ops]
    return qi.SuperOp(qi.Kraus(ops)).data


def _identity_superop(n: int) -> np.ndarray:
    return np.eye(4 ** n)


ALL_SPECS = [
    S.Depolarizing(0.1),
    S.Depolarizing(0.05, n_wires=2),
    S.BitFlip(0.2),
    S.PhaseFlip(0.3),
    S.PauliError((("X", 0.1), ("Z", 0.25))),
    S.PauliError((("XZ", 0.1), ("YY", 0.2), ("IZ", 0.05))),
    S.AmplitudeDamping(0.3),
    S.PhaseDamping(0.4),
    S.ThermalRelaxation(50.0, 70.0, 10.0),
    S.ThermalRelaxation(50.0, 30.0, 10.0, excited_population=0.2),
    S.ThermalRelaxation(math.inf, math.inf, 5.0),
    _random_kraus_spec(1, 1, 3),
    _random_kraus_spec(2, 2, 2),
    S.DeviceGateError(error=1e-3, duration=3.5e-8, t1=(1e-4,), t2=(8e-5,)),
    S.DeviceGateError(error=2e-2, duration=4e-7, t1=(1e-4, 9e-5), t2=(5e-5, 1.2e-4), excited_population=(0.01, 0.0)),
    S.DeviceGateError(error=None, duration=3e-7, t1=(1e-4, math.inf, 8e-5), t2=(5e-5, math.inf, 1e-4)),
    S.DeviceGateError(error=5e-3, duration=None, t1=(1e-4,), t2=(1e-4,)),
]


SPEC_IDS = [f"{i}-{s.kind}" for i, s in enumerate(ALL_SPECS)]


def _aer_equivalent(spec: S.ErrorSpec):
    if isinstance(spec, S.Depolarizing):
        return aer_noise.depolarizing_error(spec.p, spec.n_wires)
    if isinstance(spec, S.BitFlip):
        return aer_noise.pauli_error([("X", spec.p), ("I", 1 - spec.p)])
    if isinstance(spec, S.PhaseFlip):
        return aer_noise.pauli_error([("Z", spec.p), ("I", 1 - spec.p)])
    if isinstance(spec, S.PauliError):
        k = len(spec.probs[0][0])
        return aer_noise.pauli_error(list(spec.probs) + [("I" * k, 1 - sum(p for _, p in spec.probs))])
    if isinstance(spec, S.AmplitudeDamping):
        return aer_noise.amplitude_damping_error(spec.gamma)
    if isinstance(spec, S.PhaseDamping):
        return aer_noise.phase_damping_error(spec.lam)
    if isinstance(spec, S.ThermalRelaxation):
        return aer_noise.thermal_relaxation_error(spec.t1, spec.t2, spec.time, spec.excited_population)
    return None


@pytest.mark.parametrize("spec", [s for s in ALL_SPECS if _aer_equivalent(s) is not None],
                         ids=[i for i, s in zip(SPEC_IDS, ALL_SPECS) if _aer_equivalent(s) is not None])
def test_channel_matches_aer(spec):
    ch = spec.channel()
    assert ch.n_wires == spec.n_wires
    np.testing.assert_allclose(_superop(ch), qi.SuperOp(_aer_equivalent(spec)).data, atol=1e-12)


def test_kraus_error_channel_is_its_matrices():
    spec = _random_kraus_spec(3, 2, 3)
    ch = spec.channel()
    assert ch.n_wires == 2 and len(ch.kraus) == 3 and ch.name == "r3"
    for k, op in zip(ch.kraus, spec.ops):
        assert torch.equal(k, torch.tensor(op, dtype=torch.complex128))


def test_channel_is_cached_and_specs_hashable():
    a, b = S.AmplitudeDamping(0.3), S.AmplitudeDamping(0.3)
    assert a == b and hash(a) == hash(b)
    assert a.channel() is b.channel()
    assert S.BitFlip(0.1) != S.PhaseFlip(0.1)
    assert S.BitFlip(0.1).channel().superoperator()[1, 1] != S.PhaseFlip(0.1).channel().superoperator()[1, 1]
    with pytest.raises(Exception):
        a.gamma = 0.5  # type: ignore[misc]


# --------------------------------------------------------------------------- DeviceGateError vs Aer


@pytest.fixture(scope="module", params=["FakeManilaV2", "FakeLagosV2"])
def backend(request):
    fake = pytest.importorskip("qiskit_ibm_runtime.fake_provider")
    return getattr(fake, request.param)()


def _spec_from_target(backend, name, qargs, gate_error=True, thermal=True) -> S.DeviceGateError:
    ip = backend.target[name][qargs]
    props = backend.target.qubit_properties
    return S.DeviceGateError(error=ip.error if gate_error else None, duration=ip.duration if thermal else None,
                             t1=tuple(props[q].t1 for q in qargs), t2=tuple(props[q].t2 for q in qargs),
                             relaxation=thermal)


@pytest.mark.parametrize("gate_error,thermal", [(True, True), (True, False), (False, True)])
def test_device_gate_error_matches_aer_device_model(backend, gate_error, thermal):
    from qiskit_aer.noise.device import basic_device_gate_errors

    errors = basic_device_gate_errors(target=backend.target, gate_error=gate_error, thermal_relaxation=thermal)
    checked = 0
    worst = 0.0
    for name, qargs, err in errors:
        if name == "reset":
            continue
        spec = _spec_from_target(backend, name, tuple(qargs), gate_error, thermal)
        got = _superop(spec.channel(), little_endian=True)
        worst = max(worst, float(np.abs(got - qi.SuperOp(err).data).max()))
        checked += 1
    assert checked >= 3 * backend.num_qubits
    assert worst <= 1e-12, worst


def test_device_gate_error_infidelity_is_the_reported_error():
    for err, n in ((1e-3, 1), (3e-2, 2), (0.4, 1)):
        spec = S.DeviceGateError(error=err, duration=5e-8 * n, t1=(1e-4,) * n, t2=(7e-5,) * n)
        ch = spec.channel()
        assert 1 - C.average_gate_fidelity(ch) == pytest.approx(err, abs=1e-12)
        relax = spec.relaxation_channel()
        assert relax is not None and 1 - C.average_gate_fidelity(relax) < err


def test_device_gate_error_parts():
    relax_only = S.DeviceGateError(error=1e-9, duration=1e-6, t1=(1e-5,), t2=(1e-5,))   # relaxation exceeds error
    assert relax_only.depolarizing_parameter(relax_only.relaxation_channel()) is None
    np.testing.assert_allclose(_superop(relax_only.channel()),
                               _superop(C.thermal_relaxation(1e-5, 1e-5, 1e-6)), atol=1e-14)
    depol_only = S.DeviceGateError(error=0.01, duration=1e-7, t1=(1e-4, 1e-4), t2=(1e-4, 1e-4), relaxation=False)
    # F = 1 - p (d - 1) / d for depolarizing(p) on dimension d: p = d e / (d - 1)
    np.testing.assert_allclose(_superop(depol_only.channel()), _superop(C.depolarizing(4 * 0.01 / 3, 2)), atol=1e-14)
    nothing = S.DeviceGateError(error=None, duration=None, t1=(1e-4,), t2=(1e-4,))
    np.testing.assert_allclose(_superop(nothing.channel()), _identity_superop(1), atol=1e-15)
    # T2 above 2 T1 is truncated to 2 T1, as Aer does
    trunc = S.DeviceGateError(error=None, duration=1e-6, t1=(1e-5,), t2=(5e-5,))
    np.testing.assert_allclose(_superop(trunc.channel()), _superop(C.thermal_relaxation(1e-5, 2e-5, 1e-6)), atol=1e-14)
    # a missing T1/T2 (None) is infinite: no relaxation
    free = S.DeviceGateError(error=None, duration=1e-6, t1=(None,), t2=(None,))
    assert free.t1 == (math.inf,) and free.t2 == (math.inf,)
    np.testing.assert_allclose(_superop(free.channel()), _identity_superop(1), atol=1e-15)
    # depolarizing first, then relaxation (these do not commute)
    spec = S.DeviceGateError(error=0.2, duration=2e-7, t1=(1e-6,), t2=(1e-6,))
    relax = spec.relaxation_channel()
    dep = C.depolarizing(spec.depolarizing_parameter(relax))
    np.testing.assert_allclose(_superop(spec.channel()), _superop(C.compose(dep, relax)), atol=1e-12)
    assert not np.allclose(_superop(spec.channel()), _superop(C.compose(relax, dep)), atol=1e-6)


def test_device_gate_error_clips_unphysical_errors():
    spec = S.DeviceGateError(error=0.9, duration=None, t1=(1e-4,), t2=(1e-4,))   # above d / (d + 1) = 2/3
    assert 1 - C.average_gate_fidelity(spec.channel()) == pytest.approx(2 / 3, abs=1e-12)
    aer = aer_noise.depolarizing_error(4 / 3, 1)
    np.testing.assert_allclose(_superop(spec.channel()), qi.SuperOp(aer).data, atol=1e-12)


# --------------------------------------------------------------------------- scaling


@pytest.mark.parametrize("spec,factor,check", [
    (S.Depolarizing(0.1), 3.0, lambda s: s == S.Depolarizing(0.1 * 3.0)),
    (S.Depolarizing(0.05, 2), 2.0, lambda s: s == S.Depolarizing(0.1, 2)),
    (S.Depolarizing(0.5), 8 / 3, lambda s: s.p == pytest.approx(4 / 3)),
    (S.BitFlip(0.2), 2.5, lambda s: s == S.BitFlip(0.2 * 2.5)),
    (S.PhaseFlip(0.3), 0.5, lambda s: s == S.PhaseFlip(0.15)),
    (S.PauliError((("X", 0.1), ("Z", 0.2))), 2.0, lambda s: s == S.PauliError((("X", 0.2), ("Z", 0.4)))),
    (S.PauliError((("I", 0.5), ("X", 0.1))), 3.0, lambda s: dict(s.probs) == {"X": pytest.approx(0.3)}),
    (S.ThermalRelaxation(50.0, 70.0, 10.0, 0.1), 2.0, lambda s: s == S.ThermalRelaxation(25.0, 35.0, 10.0, 0.1)),
    (S.DeviceGateError(1e-3, 3e-8, (1e-4, 2e-4), (8e-5, 1e-4)), 4.0,
     lambda s: s == S.DeviceGateError(4e-3, 3e-8, (2.5e-5, 5e-5), (2e-5, 2.5e-5))),
    (S.DeviceGateError(None, 3e-8, (1e-4,), (8e-5,)), 2.0, lambda s: s.error is None and s.t1 == (5e-5,)),
])
def test_scaled_parameters(spec, factor, check):
    out = spec.scaled(factor)
    assert type(out) is type(spec)
    assert check(out), out


def test_scaled_damping_multiplies_the_rate():
    t1, t = 40.0, 7.0
    for factor in (0.0, 0.5, 1.0, 3.0):
        g = S.AmplitudeDamping(1 - math.exp(-t / t1)).scaled(factor).gamma
        assert g == pytest.approx(1 - math.exp(-factor * t / t1), abs=1e-14)
        lam = S.PhaseDamping(1 - math.exp(-t / t1)).scaled(factor).lam
        assert lam == pytest.approx(1 - math.exp(-factor * t / t1), abs=1e-14)
    assert S.AmplitudeDamping(1.0).scaled(2.0).gamma == 1.0


def test_scaled_thermal_relaxation_equals_a_longer_time():
    """Dividing T1 and T2 by s is the same channel as multiplying the duration by s."""
    spec = S.ThermalRelaxation(30.0, 45.0, 4.0, 0.15)
    for factor in (0.5, 2.0, 5.0):
        want = C.thermal_relaxation(30.0, 45.0, 4.0 * factor, 0.15)
        np.testing.assert_allclose(_superop(spec.scaled(factor).channel()), _superop(want), atol=1e-12)


def test_scaled_device_gate_error_recomputes_the_depolarizing_part():
    spec = S.DeviceGateError(1e-2, 4e-7, (1e-4, 9e-5), (5e-5, 1.2e-4))
    for factor in (0.5, 2.0):
        out = spec.scaled(factor)
        assert 1 - C.average_gate_fidelity(out.channel()) == pytest.approx(1e-2 * factor, abs=1e-12)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=SPEC_IDS)
def test_scaled_by_zero_is_the_identity_and_by_one_the_same(spec):
    n = spec.n_wires
    if isinstance(spec, S.KrausError):
        with pytest.raises(NoiseParameterError):
            spec.scaled(0.0)
        assert spec.scaled(1) is spec
        return
    zero = spec.scaled(0.0)
    np.testing.assert_allclose(_superop(zero.channel()), _identity_superop(n), atol=1e-14)
    np.testing.assert_allclose(_superop(spec.scaled(1.0).channel()), _superop(spec.channel()), atol=1e-14)


@pytest.mark.parametrize("spec,factor,fragment", [
    (S.Depolarizing(0.9), 2.0, "above its maximum 1.33333"),
    (S.Depolarizing(0.6, 2), 2.0, "above its maximum 1.06667"),
    (S.BitFlip(0.4), 3.0, "above 1"),
    (S.PhaseFlip(0.6), 2.0, "accepted: scale factors up to 1.66667"),
    (S.PauliError((("X", 0.3), ("Y", 0.3))), 2.0, "summing to 1.2, above 1"),
    (_random_kraus_spec(5, 1, 2), 2.0, "no error rate to scale"),
    (S.BitFlip(0.1), -1.0, "finite and >= 0"),
    (S.BitFlip(0.1), float("nan"), "finite and >= 0"),
    (S.BitFlip(0.1), float("inf"), "finite and >= 0"),
    (S.BitFlip(0.1), "two", "real number"),
])
def test_scaled_out_of_range(spec, factor, fragment):
    with pytest.raises(NoiseParameterError) as info:
        spec.scaled(factor)
    assert fragment in str(info.value)


def test_pauli_identity_only_can_be_scaled():
    spec = S.PauliError((("II", 1.0),))
    for factor in (0.0, 1.0, 2.0):
        out = spec.scaled(factor)
        assert out.n_wires == 2
        np.testing.assert_allclose(_superop(out.channel()), _identity_superop(2), atol=1e-15)


# --------------------------------------------------------------------------- dicts and JSON


@pytest.mark.parametrize("spec", ALL_SPECS, ids=SPEC_IDS)
def test_json_round_trip(spec):
    d = spec.to_dict()
    assert d["kind"] == spec.kind
    text = json.dumps(d, allow_nan=False)        # plain JSON: inf is written as "inf"
    back = S.spec_from_dict(json.loads(text))
    assert back == spec
    assert type(back) is type(spec)
    np.testing.assert_allclose(_superop(back.channel()), _superop(spec.channel()), atol=0)


def test_every_kind_is_registered():
    assert set(S.SPEC_KINDS) == {"depolarizing", "bit_flip", "phase_flip", "pauli", "amplitude_damping",
                                 "phase_damping", "thermal_relaxation", "kraus", "device_gate"}
    assert {type(s).kind for s in ALL_SPECS} == set(S.SPEC_KINDS)


@pytest.mark.parametrize("d,fragment", [
    ({"kind": "nope", "p": 0.1}, "unknown error kind 'nope'"),
    ({"p": 0.1}, "unknown error kind None"),
    ([1, 2], "unknown error kind [1, 2]"),
    ({"kind": "bit_flip", "p": 0.1, "q": 2}, "unknown field(s) ['q'] for error kind 'bit_flip'"),
    ({"kind": "bit_flip"}, "bad fields for error kind 'bit_flip'"),
    ({"kind": "kraus", "ops": [[["a", 0]]]}, "Kraus operators must be matrices of numbers"),
])
def test_spec_from_dict_invalid(d, fragment):
    with pytest.raises(NoiseParameterError) as info:
        S.spec_from_dict(d)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- invalid parameters


@pytest.mark.parametrize("make,err,fragment", [
    (lambda: S.Depolarizing(1.5).channel(), NoiseParameterError, "p must be in [0, 1.33333]"),
    (lambda: S.Depolarizing(-0.1, 2).channel(), NoiseParameterError, "p must be in [0, 1.06667]"),
    (lambda: S.Depolarizing(0.1, 3).channel(), NoiseParameterError, "n_wires must be 1 or 2"),
    (lambda: S.BitFlip(1.01).channel(), NoiseParameterError, "p must be in [0, 1]"),
    (lambda: S.PhaseFlip(-0.5).channel(), NoiseParameterError, "p must be in [0, 1]"),
    (lambda: S.AmplitudeDamping(2.0).channel(), NoiseParameterError, "gamma must be in [0, 1]"),
    (lambda: S.PhaseDamping(-1.0).channel(), NoiseParameterError, "lam must be in [0, 1]"),
    (lambda: S.PauliError((("X", 0.7), ("Y", 0.6))).channel(), NoiseParameterError, "sum to 1.3"),
    (lambda: S.PauliError((("Q", 0.1),)).channel(), NoiseParameterError, "over 'IXYZ'"),
    (lambda: S.ThermalRelaxation(10.0, 25.0, 1.0).channel(), NoiseParameterError, "t2 must be <= 2 * t1 = 20"),
    (lambda: S.ThermalRelaxation(-1.0, 1.0, 1.0).channel(), NoiseParameterError, "t1 must be > 0"),
    (lambda: S.ThermalRelaxation(10.0, 10.0, -2.0).channel(), NoiseParameterError, "time must be finite and >= 0"),
    (lambda: S.ThermalRelaxation(10.0, 10.0, 1.0, 1.5).channel(), NoiseParameterError, "excited_population"),
    (lambda: S.KrausError(((( 0.5, 0), (0, 0.5)),)).channel(), NotCPTPError, "not trace preserving"),
    (lambda: S.KrausError(((((1, 0), (0, 0)), ((0, 0), (1, 0))),)).n_wires, None, None),
    (lambda: S.KrausError((((1, 0, 0), (0, 1, 0), (0, 0, 1)),)).channel(), NotCPTPError, "size 2**k"),
    (lambda: S.DeviceGateError(1e-3, 1e-8, (1e-4,), (1e-4, 1e-4)), NoiseParameterError, "one T1 and one T2 per qubit"),
    (lambda: S.DeviceGateError(1e-3, 1e-8, (), ()), NoiseParameterError, "one T1 and one T2 per qubit"),
    (lambda: S.DeviceGateError(-1e-3, 1e-8, (1e-4,), (1e-4,)), NoiseParameterError, "error must be >= 0"),
    (lambda: S.DeviceGateError(1e-3, -1e-8, (1e-4,), (1e-4,)), NoiseParameterError, "duration must be finite"),
    (lambda: S.DeviceGateError(1e-3, 1e-8, (1e-4,), (1e-4,), (0.1, 0.2)), NoiseParameterError,
     "one excited_population per qubit"),
    (lambda: S.DeviceGateError(1e-3, 1e-8, (1e-4,) * 3, (1e-4,) * 3).channel(), NoiseParameterError,
     "3 qubits is not supported"),
    (lambda: S.DeviceGateError(None, 1e-8, (1e-5,), (3e-5,), relaxation=True).channel(), None, None),
])
def test_invalid_parameters(make, err, fragment):
    if err is None:   # accepted: a control case
        make()
        return
    with pytest.raises(err) as info:
        make()
    assert fragment in str(info.value)


def test_errors_are_value_errors():
    assert issubclass(NoiseParameterError, ValueError) and issubclass(NotCPTPError, ValueError)
