"""Tests of tinyqml.noise.channels: CPTP checks, agreement with Qiskit Aer, apply_channel."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyqml.noise import channels as C
from tinyqml.noise import specs as S
from tinyqml.noise.errors import NoiseParameterError, NotCPTPError
from tinyqml.qml.errors import ShapeError, TinyQMLError, WireError

aer_noise = pytest.importorskip("qiskit_aer.noise")
qi = pytest.importorskip("qiskit.quantum_info")


def _superop(ch: C.Channel) -> np.ndarray:
    """Qiskit SuperOp of our channel's Kraus matrices, taken as they are: our first wire is
    the most significant bit, which is Qiskit's highest qubit of the operator, so a 2-wire
    Pauli label like 'XZ' means the same matrix in both (see the reverse test below)."""
    return qi.SuperOp(qi.Kraus([k.numpy() for k in ch.kraus])).data


def _aer_superop(err) -> np.ndarray:
    return qi.SuperOp(err).data


def _assert_cptp(ch: C.Channel) -> None:
    d = 2 ** ch.n_wires
    total = sum(k.conj().T @ k for k in ch.kraus)
    assert torch.allclose(total, torch.eye(d, dtype=torch.complex128), atol=1e-12)
    for k in ch.kraus:
        assert k.dtype == torch.complex128 and tuple(k.shape) == (d, d)


# ------------------------------------------------------------- agreement with Aer

@pytest.mark.parametrize("p", [0.0, 0.01, 0.3, 0.75, 1.0, 4 / 3])
def test_depolarizing_1q_matches_aer(p):
    ch = C.depolarizing(p)
    _assert_cptp(ch)
    np.testing.assert_allclose(_superop(ch), _aer_superop(aer_noise.depolarizing_error(p, 1)), atol=1e-12)


@pytest.mark.parametrize("p", [0.0, 0.05, 0.5, 1.0, 16 / 15])
def test_depolarizing_2q_matches_aer(p):
    ch = C.depolarizing(p, n_wires=2)
    _assert_cptp(ch)
    np.testing.assert_allclose(_superop(ch), _aer_superop(aer_noise.depolarizing_error(p, 2)), atol=1e-12)


def test_depolarizing_action_is_mix_with_identity():
    rho = _random_rho(3, 2, seed=1)
    p = 0.37
    out = C.apply_channel(rho, C.depolarizing(p, 2), [0, 1], 2)
    want = (1 - p) * rho + p * torch.eye(4, dtype=rho.dtype) / 4
    assert torch.allclose(out, want, atol=1e-12)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_bit_and_phase_flip_match_aer(p):
    for ch, label in ((C.bit_flip(p), "X"), (C.phase_flip(p), "Z")):
        _assert_cptp(ch)
        aer = aer_noise.pauli_error([(label, p), ("I", 1 - p)])
        np.testing.assert_allclose(_superop(ch), _aer_superop(aer), atol=1e-12)


@pytest.mark.parametrize("probs", [
    {"X": 0.1, "Z": 0.2},
    {"Y": 0.3},
    {"X": 0.25, "Y": 0.25, "Z": 0.5},
    {"XZ": 0.1, "ZI": 0.2, "YY": 0.05},
    {"IX": 0.3, "XI": 0.1},
])
def test_pauli_matches_aer(probs):
    ch = C.pauli(probs)
    _assert_cptp(ch)
    k = len(next(iter(probs)))
    rest = 1 - sum(probs.values())
    aer = aer_noise.pauli_error(list(probs.items()) + ([("I" * k, rest)] if rest > 0 else []))
    np.testing.assert_allclose(_superop(ch), _aer_superop(aer), atol=1e-12)


def test_pauli_two_wire_label_order_against_qiskit_evolution():
    """'XZ' puts X on wires[0]; checked against Qiskit evolving with reversed qargs."""
    ch = C.pauli({"XZ": 0.3, "YI": 0.2})
    rho = _random_rho(1, 3, seed=5)[0]
    wires = [2, 0]
    ours = C.apply_channel(rho, ch, wires, 3).numpy()
    # Qiskit: qubit q is our wire n-1-q, and a qargs list is little-endian (first = least significant)
    qiskit_rho = qi.DensityMatrix(rho.numpy())
    qargs = [3 - 1 - w for w in reversed(wires)]
    aer = aer_noise.pauli_error([("XZ", 0.3), ("YI", 0.2), ("II", 0.5)])
    theirs = qiskit_rho.evolve(qi.SuperOp(aer), qargs=qargs).data
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.2, 0.9, 1.0])
def test_amplitude_damping_matches_aer(gamma):
    ch = C.amplitude_damping(gamma)
    _assert_cptp(ch)
    np.testing.assert_allclose(_superop(ch), _aer_superop(aer_noise.amplitude_damping_error(gamma)), atol=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.8, 1.0])
def test_phase_damping_matches_aer(lam):
    ch = C.phase_damping(lam)
    _assert_cptp(ch)
    np.testing.assert_allclose(_superop(ch), _aer_superop(aer_noise.phase_damping_error(lam)), atol=1e-12)


@pytest.mark.parametrize("t1,t2,time,pop", [
    (50.0, 70.0, 10.0, 0.0),     # T1 < T2 <= 2 T1: Kraus branch in Aer
    (50.0, 30.0, 10.0, 0.0),     # T2 <= T1: mixed reset / Z branch in Aer
    (50.0, 100.0, 25.0, 0.1),    # T2 = 2 T1, excited population
    (40.0, 40.0, 5.0, 0.3),
    (50.0, 20.0, 0.0, 0.2),      # zero time: identity
    (math.inf, math.inf, 3.0, 0.0),
    (30.0, 45.0, 1e4, 0.5),      # long time: fully relaxed
])
def test_thermal_relaxation_matches_aer(t1, t2, time, pop):
    ch = C.thermal_relaxation(t1, t2, time, excited_population=pop)
    _assert_cptp(ch)
    aer = aer_noise.thermal_relaxation_error(t1, t2, time, excited_state_population=pop)
    np.testing.assert_allclose(_superop(ch), _aer_superop(aer), atol=1e-10)


def test_generic_kraus_matches_qiskit_and_reverse_qargs():
    # a non-symmetric 2-wire channel: amplitude damping on wire 0, identity on wire 1
    ad = C.amplitude_damping(0.4)
    ops = [torch.kron(k, torch.eye(2, dtype=torch.complex128)) for k in ad.kraus]
    ch = C.kraus(ops, name="ad_on_first")
    assert ch.n_wires == 2 and ch.name == "ad_on_first"
    _assert_cptp(ch)
    # Qiskit: the same error on qubit 1 (tensor(other) puts `other` on the low qubit)
    aer = aer_noise.amplitude_damping_error(0.4).tensor(aer_noise.pauli_error([("I", 1.0)]))
    np.testing.assert_allclose(_superop(ch), _aer_superop(aer), atol=1e-12)
    # ... which is *not* the channel on Qiskit's qubit 0, unless the qargs are reversed
    aer_low = aer_noise.pauli_error([("I", 1.0)]).tensor(aer_noise.amplitude_damping_error(0.4))
    assert not np.allclose(_superop(ch), _aer_superop(aer_low))
    # (Qiskit 2.x channels have no reverse_qargs; reverse the bit order of our matrices)
    swap = np.eye(4)[[0, 2, 1, 3]]
    rev = qi.Kraus([swap @ k.numpy() @ swap for k in ch.kraus])
    np.testing.assert_allclose(qi.SuperOp(rev).data, _aer_superop(aer_low), atol=1e-12)


def test_superoperator_matches_qiskit_up_to_vec_convention():
    ch = C.thermal_relaxation(20.0, 30.0, 4.0, 0.2)
    # Qiskit vectorises column-major: S_qiskit = sum conj(K) (x) K; ours is row-major
    want = sum(np.kron(k.numpy().conj(), k.numpy()) for k in ch.kraus)
    np.testing.assert_allclose(want, _superop(ch), atol=1e-12)
    ours = ch.superoperator().numpy()
    assert np.allclose(ours, sum(np.kron(k.numpy(), k.numpy().conj()) for k in ch.kraus))


# ------------------------------------------------------------- readout

@pytest.mark.parametrize("p01,p10", [(0.0, 0.0), (0.1, 0.02), (0.5, 0.3), (1.0, 1.0)])
def test_readout_matrix_is_aer_probabilities_transposed(p01, p10):
    ro = C.ReadoutError(p0_given_1=p01, p1_given_0=p10)
    aer = aer_noise.ReadoutError([[1 - p10, p10], [p01, 1 - p01]])
    np.testing.assert_allclose(ro.matrix.numpy(), aer.probabilities.T, atol=1e-15)
    assert torch.allclose(ro.matrix.sum(0), torch.ones(2, dtype=torch.float64))
    with pytest.raises(Exception):  # frozen
        ro.p0_given_1 = 0.3  # type: ignore[misc]


@pytest.mark.parametrize("kwargs,fragment", [
    ({"p0_given_1": -0.1, "p1_given_0": 0.0}, "p0_given_1 must be in [0, 1]"),
    ({"p0_given_1": 0.0, "p1_given_0": 1.5}, "p1_given_0 must be in [0, 1]"),
    ({"p0_given_1": float("nan"), "p1_given_0": 0.0}, "p0_given_1"),
    ({"p0_given_1": "x", "p1_given_0": 0.0}, "real number"),
])
def test_readout_invalid(kwargs, fragment):
    with pytest.raises(NoiseParameterError) as info:
        C.ReadoutError(**kwargs)
    assert fragment in str(info.value)


# ------------------------------------------------------------- apply_channel

def _random_rho(batch: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = 2 ** n
    a = torch.randn(batch, d, d, generator=g, dtype=torch.float64) + 1j * torch.randn(batch, d, d, generator=g, dtype=torch.float64)
    rho = a @ a.conj().transpose(-1, -2)
    return rho / rho.diagonal(dim1=-2, dim2=-1).sum(-1).real[:, None, None]


def _embed(op: torch.Tensor, wires: list[int], n: int) -> torch.Tensor:
    """Explicit full matrix of `op` on `wires` (first listed wire = op's MSB), by permuting
    op (x) I to the right wires."""
    k = len(wires)
    full = torch.kron(op, torch.eye(2 ** (n - k), dtype=op.dtype))
    # full acts on wire order: wires + remaining wires; permute to 0..n-1
    order = wires + [w for w in range(n) if w not in wires]
    t = full.reshape([2] * (2 * n))
    inv = [order.index(w) for w in range(n)]
    t = t.permute(inv + [n + i for i in inv])
    return t.reshape(2 ** n, 2 ** n)


ALL_CHANNELS = [
    C.depolarizing(0.2), C.depolarizing(0.4, 2), C.bit_flip(0.3), C.phase_flip(0.1),
    C.pauli({"XY": 0.2, "ZZ": 0.1}), C.amplitude_damping(0.3), C.phase_damping(0.6),
    C.thermal_relaxation(10.0, 15.0, 3.0, 0.25), C.thermal_relaxation(10.0, 5.0, 3.0),
]


@pytest.mark.parametrize("ch", ALL_CHANNELS, ids=lambda c: c.name)
@pytest.mark.parametrize("wires_by_k", [{1: [2], 2: [3, 1]}, {1: [0], 2: [0, 2]}, {1: [3], 2: [2, 0]}])
def test_apply_channel_physical_and_matches_embedding(ch, wires_by_k):
    n = 4
    wires = wires_by_k[ch.n_wires]
    rho = _random_rho(3, n, seed=len(wires) + wires[0])
    before = rho.clone()
    out = C.apply_channel(rho, ch, wires, n)
    assert torch.equal(rho, before)  # pure
    assert out.shape == rho.shape
    assert torch.allclose(out, out.conj().transpose(-1, -2), atol=1e-12)
    assert torch.allclose(out.diagonal(dim1=-2, dim2=-1).sum(-1), torch.ones(3, dtype=out.dtype), atol=1e-12)
    assert (torch.linalg.eigvalsh(out) > -1e-12).all()
    want = sum(_embed(k, wires, n) @ rho @ _embed(k, wires, n).conj().T for k in ch.kraus)
    assert torch.allclose(out, want, atol=1e-12)


def test_embed_helper_sanity():
    x = torch.tensor([[0, 1], [1, 0]], dtype=torch.complex128)
    assert torch.equal(_embed(x, [1], 2), torch.kron(torch.eye(2, dtype=x.dtype), x))
    cnot = torch.eye(4, dtype=torch.complex128)[[0, 1, 3, 2]]
    swapped = _embed(cnot, [1, 0], 2)  # control on wire 1, target wire 0
    assert torch.equal(swapped @ torch.eye(4, dtype=x.dtype)[:, 1], torch.eye(4, dtype=x.dtype)[:, 3])


def test_apply_channel_unbatched_and_real_input():
    rho = torch.zeros(2, 2, dtype=torch.float64)
    rho[1, 1] = 1
    out = C.apply_channel(rho, C.amplitude_damping(0.25), [0], 1)
    assert out.shape == (2, 2) and out.dtype == torch.complex128
    assert torch.allclose(out.real, torch.tensor([[0.25, 0.0], [0.0, 0.75]], dtype=torch.float64))


@pytest.mark.parametrize("wires,n,shape,err,fragment", [
    ([0, 1], 2, (1, 4, 4), WireError, "acts on 1 wire"),
    ([2], 2, (1, 4, 4), WireError, "in range(0, 2)"),
    ([-1], 2, (1, 4, 4), WireError, "in range(0, 2)"),
    ([0], 2, (1, 2, 2), ShapeError, "[B, 4, 4]"),
    ([0], 0, (1, 1, 1), WireError, "positive number of wires"),
])
def test_apply_channel_invalid(wires, n, shape, err, fragment):
    with pytest.raises(err) as info:
        C.apply_channel(torch.zeros(shape, dtype=torch.complex128), C.bit_flip(0.1), wires, n)
    assert fragment in str(info.value)


def test_apply_channel_duplicate_wires():
    with pytest.raises(WireError, match="distinct"):
        C.apply_channel(torch.zeros(1, 8, 8, dtype=torch.complex128), C.depolarizing(0.1, 2), [1, 1], 3)


# ------------------------------------------------------------- validation

def test_error_classes():
    for cls in (NotCPTPError, NoiseParameterError):
        assert issubclass(cls, TinyQMLError) and issubclass(cls, ValueError)


@pytest.mark.parametrize("make,fragment", [
    (lambda: C.Channel("c", (0.9 * torch.eye(2),), 1), "not trace preserving"),
    (lambda: C.Channel("c", (torch.eye(4),), 1), "needs shape (2, 2)"),
    (lambda: C.Channel("c", (), 1), "no Kraus operators"),
    (lambda: C.Channel("c", (torch.full((2, 2), float("nan")),), 1), "NaN or infinite"),
    (lambda: C.Channel("c", (torch.eye(2),), 0), "n_wires must be a positive integer"),
    (lambda: C.kraus([]), "no Kraus operators"),
    (lambda: C.kraus([torch.eye(3)]), "size 2**k"),
    (lambda: C.kraus([torch.ones(2)]), "size 2**k"),
    (lambda: C.kraus([torch.eye(2), torch.eye(2)]), "not trace preserving"),
    (lambda: C.kraus([torch.eye(2), torch.eye(4)]), "needs shape (2, 2)"),
])
def test_not_cptp(make, fragment):
    with pytest.raises(NotCPTPError) as info:
        make()
    assert fragment in str(info.value)


@pytest.mark.parametrize("make,fragment", [
    (lambda: C.depolarizing(-0.1), "p must be in [0, 1.33333]"),
    (lambda: C.depolarizing(1.4), "p must be in [0, 1.33333]"),
    (lambda: C.depolarizing(1.1, 2), "p must be in [0, 1.06667]"),
    (lambda: C.depolarizing(0.1, 3), "n_wires must be 1 or 2"),
    (lambda: C.bit_flip(1.5), "p must be in [0, 1]"),
    (lambda: C.phase_flip(-1e-3), "p must be in [0, 1]"),
    (lambda: C.bit_flip(float("nan")), "p must be in [0, 1]"),
    (lambda: C.bit_flip(None), "real number"),
    (lambda: C.amplitude_damping(2.0), "gamma must be in [0, 1]"),
    (lambda: C.phase_damping(-0.5), "lam must be in [0, 1]"),
    (lambda: C.pauli({"X": 0.7, "Z": 0.4}), "accepted: a total in [0, 1]"),
    (lambda: C.pauli({"X": -0.1}), "must be in [0, 1]"),
    (lambda: C.pauli({"Q": 0.1}), "over 'IXYZ'"),
    (lambda: C.pauli({"": 0.1}), "over 'IXYZ'"),
    (lambda: C.pauli({"X": 0.1, "XZ": 0.1}), "same length"),
    (lambda: C.pauli({}), "non-empty dict"),
    (lambda: C.thermal_relaxation(10.0, 25.0, 1.0), "t2 must be <= 2 * t1 = 20"),
    (lambda: C.thermal_relaxation(0.0, 1.0, 1.0), "t1 must be > 0"),
    (lambda: C.thermal_relaxation(-5.0, 1.0, 1.0), "t1 must be > 0"),
    (lambda: C.thermal_relaxation(10.0, 0.0, 1.0), "t2 must be > 0"),
    (lambda: C.thermal_relaxation(10.0, 10.0, -1.0), "time must be finite and >= 0"),
    (lambda: C.thermal_relaxation(10.0, 10.0, 1.0, 1.2), "excited_population must be in [0, 1]"),
    (lambda: C.thermal_relaxation(float("nan"), 10.0, 1.0), "t1 must be a real number"),
])
def test_invalid_parameters(make, fragment):
    with pytest.raises(NoiseParameterError) as info:
        make()
    assert fragment in str(info.value)


def test_channel_is_frozen_and_normalises_dtype():
    ch = C.Channel("id", (torch.eye(2, dtype=torch.float32),), 1)
    assert ch.kraus[0].dtype == torch.complex128
    with pytest.raises(Exception):
        ch.name = "other"  # type: ignore[misc]


def test_pauli_explicit_identity_label():
    ch = C.pauli({"I": 0.5, "X": 0.2})
    weights = sorted(float((k.conj().T @ k)[0, 0].real) for k in ch.kraus)
    assert weights == pytest.approx([0.2, 0.8])


# ------------------------------------------------------------- tensor, compose, fidelity

def _random_kraus(rng: np.random.Generator, n: int, r: int) -> C.Channel:
    """A random CPTP map with ``r`` Kraus operators: the blocks of a random isometry."""
    d = 2 ** n
    a = rng.normal(size=(r * d, d)) + 1j * rng.normal(size=(r * d, d))
    q, _ = np.linalg.qr(a)
    return C.kraus([torch.tensor(q[i * d:(i + 1) * d]) for i in range(r)], name=f"random{n}x{r}")


def _qsuper(ch: C.Channel):
    return qi.SuperOp(qi.Kraus([k.numpy() for k in ch.kraus]))


@pytest.mark.parametrize("parts", [
    (C.amplitude_damping(0.3), C.phase_flip(0.2)),
    (C.thermal_relaxation(10.0, 15.0, 2.0, 0.1), C.depolarizing(0.3, 2)),
    (C.pauli({"XZ": 0.1}), C.bit_flip(0.4), C.phase_damping(0.7)),
], ids=["ad_pf", "tr_dep2", "three"])
def test_tensor_matches_qiskit_tensor(parts):
    ch = C.tensor(*parts)
    assert ch.n_wires == sum(p.n_wires for p in parts)
    _assert_cptp(ch)
    want = _qsuper(parts[0])
    for p in parts[1:]:
        want = want.tensor(_qsuper(p))  # Qiskit's a.tensor(b): a on the high (first) qubits
    np.testing.assert_allclose(_superop(ch), want.data, atol=1e-12)
    # the first channel acts on the first (most significant) wire
    rho = _random_rho(2, ch.n_wires, seed=3)
    step = rho
    w = 0
    for p in parts:
        step = C.apply_channel(step, p, list(range(w, w + p.n_wires)), ch.n_wires)
        w += p.n_wires
    assert torch.allclose(C.apply_channel(rho, ch, list(range(ch.n_wires)), ch.n_wires), step, atol=1e-12)


def test_tensor_not_commutative():
    a, b = C.amplitude_damping(0.5), C.phase_flip(0.3)
    assert not np.allclose(_superop(C.tensor(a, b)), _superop(C.tensor(b, a)))


def test_tensor_reduces_kraus_count():
    rng = np.random.default_rng(4)
    a, b = _random_kraus(rng, 1, 5), _random_kraus(rng, 1, 6)   # 30 products > 4**2
    ch = C.tensor(a, b)
    assert len(ch.kraus) <= 16
    _assert_cptp(ch)
    np.testing.assert_allclose(_superop(ch), _qsuper(a).tensor(_qsuper(b)).data, atol=1e-11)


@pytest.mark.parametrize("parts", [
    (C.amplitude_damping(0.3), C.phase_flip(0.2)),
    (C.bit_flip(0.1), C.amplitude_damping(0.6), C.thermal_relaxation(5.0, 8.0, 1.0, 0.3)),
    (C.depolarizing(0.2, 2), C.pauli({"XY": 0.3, "ZI": 0.1})),
], ids=["two", "three", "2q"])
def test_compose_matches_qiskit_compose(parts):
    ch = C.compose(*parts)
    _assert_cptp(ch)
    assert len(ch.kraus) <= 4 ** ch.n_wires
    want = _qsuper(parts[0])
    for p in parts[1:]:
        want = want.compose(_qsuper(p))   # Qiskit's a.compose(b): a first, then b
    np.testing.assert_allclose(_superop(ch), want.data, atol=1e-12)
    rho = _random_rho(2, ch.n_wires, seed=7)
    step = rho
    for p in parts:
        step = C.apply_channel(step, p, list(range(ch.n_wires)), ch.n_wires)
    assert torch.allclose(C.apply_channel(rho, ch, list(range(ch.n_wires)), ch.n_wires), step, atol=1e-12)


def test_compose_order_matters_and_single_is_identity():
    a, b = C.amplitude_damping(0.7), C.bit_flip(0.4)   # these do not commute
    assert not np.allclose(_superop(C.compose(a, b)), _superop(C.compose(b, a)), atol=1e-6)
    assert C.compose(a) is a


def test_compose_random_three_wire():
    rng = np.random.default_rng(9)
    a, b = _random_kraus(rng, 3, 4), _random_kraus(rng, 3, 3)
    ch = C.compose(a, b)
    _assert_cptp(ch)
    np.testing.assert_allclose(_superop(ch), _qsuper(a).compose(_qsuper(b)).data, atol=1e-11)


@pytest.mark.parametrize("make,fragment", [
    (lambda: C.compose(C.bit_flip(0.1), C.depolarizing(0.1, 2)), "same number of wires"),
])
def test_compose_invalid(make, fragment):
    with pytest.raises(NotCPTPError) as info:
        make()
    assert fragment in str(info.value)


@pytest.mark.parametrize("fn", [C.tensor, C.compose])
def test_tensor_compose_need_channels(fn):
    with pytest.raises(TypeError, match="Channel"):
        fn()
    with pytest.raises(TypeError, match="Channel"):
        fn(C.bit_flip(0.1), "not a channel")


@pytest.mark.parametrize("ch", ALL_CHANNELS + [
    C.tensor(C.amplitude_damping(0.2), C.thermal_relaxation(3.0, 4.0, 1.0)),
    C.kraus([torch.eye(4)]),
    _random_kraus(np.random.default_rng(2), 2, 3),
    _random_kraus(np.random.default_rng(3), 3, 2),
], ids=lambda c: c.name)
def test_average_gate_fidelity_matches_qiskit(ch):
    want = qi.average_gate_fidelity(qi.Kraus([k.numpy() for k in ch.kraus]))
    assert C.average_gate_fidelity(ch) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0, 4 / 3])
def test_average_gate_fidelity_of_depolarizing(p):
    assert C.average_gate_fidelity(C.depolarizing(p)) == pytest.approx(1 - p / 2, abs=1e-12)
    # two wires: F = 1 - p (d^2 - 1) / (d (d + 1)) with d = 4, i.e. 1 - 3p/4
    q = min(p, 16 / 15)
    assert C.average_gate_fidelity(C.depolarizing(q, 2)) == pytest.approx(1 - 3 * q / 4, abs=1e-12)


@pytest.mark.parametrize("ch,expected", [
    (C.depolarizing(0.3), True),
    (C.depolarizing(0.0, 2), True),
    (C.bit_flip(0.2), True),
    (C.phase_flip(1.0), True),
    (C.pauli({"XY": 0.2, "ZZ": 0.1}), True),
    (C.kraus([torch.tensor([[0, 1], [1j, 0]], dtype=torch.complex128)]), True),          # one unitary
    (C.kraus([math.sqrt(0.5) * torch.eye(2, dtype=torch.float64),
              math.sqrt(0.5) * torch.tensor([[1, 0], [0, 1j]], dtype=torch.complex128)]), True),
    (C.amplitude_damping(0.3), False),
    (C.amplitude_damping(0.0), True),                             # K1 = 0 is 0 * a unitary
    (C.phase_damping(0.4), False),                                # as given: diag(1, sqrt(1-l)) is no unitary multiple
    (C.thermal_relaxation(10.0, 12.0, 2.0), False),
    (C.tensor(C.bit_flip(0.1), C.amplitude_damping(0.2)), False),
    (C.tensor(C.bit_flip(0.1), C.phase_flip(0.2)), True),
], ids=lambda v: v.name if isinstance(v, C.Channel) else str(v))
def test_is_unitary_mixture(ch, expected):
    assert ch.is_unitary_mixture is expected


# ------------------------------------------------------------- properties (hypothesis)

PROB = st.floats(0.0, 1.0)
#: numbers that are not a probability: below 0, above 1, NaN, +-inf
NOT_PROB = st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1 + 1e-9), st.just(math.nan),
                     st.just(math.inf), st.just(-math.inf))


def _isometry(seed: int, k: int, r: int) -> list[np.ndarray]:
    d = 2 ** k
    rng = np.random.default_rng(seed)
    v, _ = np.linalg.qr(rng.normal(size=(r * d, d)) + 1j * rng.normal(size=(r * d, d)))
    return [v[i * d:(i + 1) * d] for i in range(r)]


def _rho(seed: int, k: int) -> np.ndarray:
    d = 2 ** k
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d))
    rho = a @ a.conj().T
    return rho / np.trace(rho)


def _act(ch: C.Channel, rho: np.ndarray) -> np.ndarray:
    return sum(k @ rho @ k.conj().T for k in (op.numpy() for op in ch.kraus))


def _paulis(k: int) -> dict[str, np.ndarray]:
    one = {"I": np.eye(2), "X": np.array([[0, 1], [1, 0]]), "Y": np.array([[0, -1j], [1j, 0]]),
           "Z": np.diag([1.0, -1.0])}
    out = {}
    for label in itertools.product("IXYZ", repeat=k):
        m = np.ones((1, 1))
        for letter in label:
            m = np.kron(m, one[letter])
        out["".join(label)] = m
    return out


@st.composite
def thermal_params(draw):
    t1 = draw(st.one_of(st.floats(1e-9, 1e6), st.just(math.inf)))
    t2 = (2 * t1 * draw(st.floats(1e-6, 1.0))) if math.isfinite(t1) else draw(st.one_of(st.floats(1e-9, 1e6),
                                                                                        st.just(math.inf)))
    return t1, t2, draw(st.floats(0.0, 1e4)), draw(PROB)


@st.composite
def channels_with_action(draw):
    """A channel from a random constructor with random valid parameters, and its documented action
    ``rho -> E(rho)`` restated independently of the Kraus matrices (``None`` where there is none)."""
    kind = draw(st.sampled_from(["depolarizing", "bit_flip", "phase_flip", "pauli", "amplitude_damping",
                                 "phase_damping", "thermal", "kraus", "tensor", "compose", "twirl"]))
    if kind == "depolarizing":
        k = draw(st.integers(1, 2))
        p = draw(st.floats(0.0, 4**k / (4**k - 1)))
        return C.depolarizing(p, k), lambda r: (1 - p) * r + p * np.trace(r) * np.eye(2**k) / 2**k
    if kind in ("bit_flip", "phase_flip"):
        p = draw(PROB)
        m = np.array([[0, 1], [1, 0]]) if kind == "bit_flip" else np.diag([1.0, -1.0])
        return getattr(C, kind)(p), lambda r: (1 - p) * r + p * m @ r @ m
    if kind == "pauli":
        k = draw(st.integers(1, 3))
        labels = draw(st.lists(st.text("IXYZ", min_size=k, max_size=k), min_size=1, max_size=5, unique=True))
        raw = [draw(PROB) for _ in labels]
        probs = {label: v / max(1.0, sum(raw)) for label, v in zip(labels, raw)}
        ps = _paulis(k)
        rest = 1 - sum(probs.values())
        return C.pauli(probs), lambda r: max(rest, 0.0) * r + sum(v * ps[lb] @ r @ ps[lb] for lb, v in probs.items())
    if kind == "amplitude_damping":
        g = draw(PROB)
        return C.amplitude_damping(g), lambda r: np.array(
            [[r[0, 0] + g * r[1, 1], math.sqrt(1 - g) * r[0, 1]], [math.sqrt(1 - g) * r[1, 0], (1 - g) * r[1, 1]]])
    if kind == "phase_damping":
        lam = draw(PROB)
        return C.phase_damping(lam), lambda r: np.array(
            [[r[0, 0], math.sqrt(1 - lam) * r[0, 1]], [math.sqrt(1 - lam) * r[1, 0], r[1, 1]]])
    if kind == "thermal":
        t1, t2, time, pop = draw(thermal_params())
        reset = 0.0 if math.isinf(t1) else 1 - math.exp(-time / t1)
        coh = 1.0 if math.isinf(t2) else math.exp(-time / t2)

        def relax(r):  # populations relax towards (1 - pop, pop), coherences decay by exp(-time / t2)
            p11 = r[1, 1] * (1 - reset) + pop * reset * np.trace(r)
            return np.array([[np.trace(r) - p11, coh * r[0, 1]], [coh * r[1, 0], p11]])

        return C.thermal_relaxation(t1, t2, time, pop), relax
    if kind == "kraus":
        ops = _isometry(draw(st.integers(0, 2**32 - 1)), draw(st.integers(1, 3)), draw(st.integers(1, 5)))
        return C.kraus(ops), lambda r: sum(m @ r @ m.conj().T for m in ops)
    parts = [draw(channels_with_action()) for _ in range(2)]
    if kind == "tensor" and sum(ch.n_wires for ch, _ in parts) <= 3:
        return C.tensor(*(ch for ch, _ in parts)), None
    if kind == "compose" and parts[0][0].n_wires == parts[1][0].n_wires:
        (a, fa), (b, fb) = parts
        return C.compose(a, b), (lambda r: fb(fa(r))) if fa and fb else None
    return C.pauli_twirl(parts[0][0]), None


@settings(derandomize=True, deadline=None, max_examples=300)
@given(channels_with_action(), st.integers(0, 2**32 - 1))
def test_valid_parameters_give_cptp_kraus_operators(case, seed) -> None:
    """sum_k K^dagger K = I (to 1e-12, recomputed here) and the documented action, for every constructor."""
    ch, action = case
    d = 2 ** ch.n_wires
    ks = [k.numpy() for k in ch.kraus]
    assert all(k.shape == (d, d) and k.dtype == np.complex128 and np.isfinite(k).all() for k in ks)
    total = sum(k.conj().T @ k for k in ks)
    assert np.abs(total - np.eye(d)).max() <= 1e-12, f"{ch.name}: |sum K^dagger K - I| too large"
    if action is not None:
        rho = _rho(seed, ch.n_wires)
        assert np.abs(_act(ch, rho) - action(rho)).max() <= 1e-12, ch.name


@st.composite
def invalid_constructions(draw):
    """A constructor call with one invalid parameter, and the error (and message fragment) it must raise."""
    kind = draw(st.sampled_from(["prob", "depolarizing", "pauli_sum", "thermal_t2", "thermal_t1", "thermal_time",
                                 "thermal_nan", "kraus_scaled", "kraus_nan", "kraus_random", "spec"]))
    if kind == "prob":
        name, arg = draw(st.sampled_from([("bit_flip", "p"), ("phase_flip", "p"), ("amplitude_damping", "gamma"),
                                          ("phase_damping", "lam")]))
        v = draw(NOT_PROB)
        return (lambda: getattr(C, name)(v)), NoiseParameterError, arg
    if kind == "depolarizing":
        k = draw(st.integers(1, 2))
        top = 4**k / (4**k - 1)
        v = draw(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=top + 1e-9), st.just(math.nan)))
        return (lambda: C.depolarizing(v, k)), NoiseParameterError, "p must be in"
    if kind == "pauli_sum":
        labels = draw(st.lists(st.sampled_from("XYZ"), min_size=2, max_size=3, unique=True))
        bad = draw(st.one_of(NOT_PROB.map(lambda v: ("one", v)), st.floats(1 + 1e-6, 3).map(lambda v: ("sum", v))))
        if bad[0] == "one":
            probs = {labels[0]: bad[1], **{lb: 0.1 for lb in labels[1:]}}
            return (lambda: C.pauli(probs)), NoiseParameterError, "must be in [0, 1]"
        probs = {lb: bad[1] / len(labels) for lb in labels}
        return (lambda: C.pauli(probs)), NoiseParameterError, "sum to"
    if kind.startswith("thermal"):
        t1, t2, time, pop = draw(thermal_params())
        if kind == "thermal_t2":
            t1 = draw(st.floats(1e-9, 1e6))
            t2 = 2 * t1 * draw(st.floats(1 + 1e-9, 1e3))
            return (lambda: C.thermal_relaxation(t1, t2, time, pop)), NoiseParameterError, "t2 must be <= 2 * t1"
        if kind == "thermal_t1":
            t1 = draw(st.one_of(st.floats(max_value=0.0), st.just(-math.inf)))
            return (lambda: C.thermal_relaxation(t1, t2, time, pop)), NoiseParameterError, "t1 must be > 0"
        if kind == "thermal_time":
            time = draw(st.one_of(st.floats(max_value=-1e-300), st.just(math.inf)))
            return (lambda: C.thermal_relaxation(t1, t2, time, pop)), NoiseParameterError, "time must be"
        args = [t1, t2, time, pop]
        args[draw(st.integers(0, 3))] = math.nan
        return (lambda: C.thermal_relaxation(*args)), NoiseParameterError, "NaN" if args[3] == args[3] else "in [0, 1]"
    k, r = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    ops = _isometry(draw(st.integers(0, 2**32 - 1)), k, r)
    if kind == "kraus_scaled":  # sum K^dagger K = c^2 I with c^2 clearly off 1
        c = draw(st.one_of(st.floats(0.0, 1 - 1e-9), st.floats(1 + 1e-9, 1e3)))
        return (lambda: C.kraus([c * m for m in ops])), NotCPTPError, "not trace preserving"
    if kind == "kraus_nan":
        i, row, col = draw(st.integers(0, r - 1)), draw(st.integers(0, 2**k - 1)), draw(st.integers(0, 2**k - 1))
        ops[i] = ops[i].copy()
        ops[i][row, col] = draw(st.sampled_from([complex(math.nan, 0), complex(0, math.inf), complex(-math.inf, 1)]))
        return (lambda: C.kraus(ops)), NotCPTPError, "NaN or infinite"
    if kind == "kraus_random":  # arbitrary matrices are almost never trace preserving
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        mats = [rng.normal(size=(2**k, 2**k)) + 1j * rng.normal(size=(2**k, 2**k)) for _ in range(r)]
        return (lambda: C.kraus(mats)), NotCPTPError, "not trace preserving"
    # the error specs of a noise model refuse the same parameters when their channel is built
    v = draw(NOT_PROB)
    spec = draw(st.sampled_from([S.BitFlip(v), S.PhaseFlip(v), S.AmplitudeDamping(v), S.PhaseDamping(v),
                                 S.Depolarizing(v if v == v and v < 0 else 2.0), S.PauliError((("X", v),)),
                                 S.ThermalRelaxation(1.0, 3.0, 1.0),
                                 S.KrausError(tuple(tuple(tuple(complex(z) for z in row) for row in 2 * m)
                                                    for m in ops))]))
    err = NotCPTPError if isinstance(spec, S.KrausError) else NoiseParameterError
    return spec.channel, err, ""


@settings(derandomize=True, deadline=None, max_examples=300)
@given(invalid_constructions())
def test_invalid_parameters_raise_the_named_errors(case) -> None:
    make, err, fragment = case
    with pytest.raises(err) as info:
        make()
    msg = str(info.value)
    assert type(info.value) is err and isinstance(info.value, TinyQMLError)
    assert fragment in msg and ("accepted" in msg or "must be" in msg or "NaN or infinite" in msg), msg
