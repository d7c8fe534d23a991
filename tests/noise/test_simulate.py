"""End-to-end checks of tinyqml.noise.simulate against Qiskit Aer's density-matrix simulator.

* Circuits transpiled (``tinyqml.qml.transpile``) onto FakeManilaV2 / FakeLagosV2 with
  ``NoiseModel.from_backend``: equal to Aer with Aer's own ``NoiseModel.from_backend``
  (every gate_error / thermal_relaxation flag combination) and with ``to_aer()``.
* Seeded random circuits over the whole gate set (1-5 wires) with random rules of every
  error kind (local and all-qubit) and explicit channel steps, against Aer with
  ``noise_model.to_aer()`` and the explicit steps as Kraus instructions.
* Noiseless circuits against ``tinyqml.qml.statevector``, complex64, batching, gradients
  (``torch.autograd.gradcheck``), readout against Aer's measured counts, sampling, errors.

The Aer circuit is built op by op from ``tq.to_qiskit``: a gate Aer's density-matrix
method simulates natively is kept; any other becomes a ``UnitaryGate`` of Qiskit's own
matrix for it, labelled with the Qiskit gate name (Aer attaches noise by label), so the
noise model's errors land on the same instructions. Aer is little-endian: its density
matrix is compared after ``reverse_qargs()``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

import tinyqml.qml as tq
from tinyqml.noise import channels as C
from tinyqml.noise import specs as S
from tinyqml.noise import counts, density_matrix, expval, probs, sample
from tinyqml.noise import measure as M
from tinyqml.noise.errors import NoiseModelError
from tinyqml.noise.model import ChannelOp, NoiseModel, NoisyCircuit, _tinyqml_to_qiskit
from tinyqml.noise.simulate import MAX_WIRES
from tinyqml.qml.errors import ObservableError, ShapeError, WireError

qiskit = pytest.importorskip("qiskit")
aer = pytest.importorskip("qiskit_aer")
fake = pytest.importorskip("qiskit_ibm_runtime.fake_provider")
from qiskit import QuantumCircuit  # noqa: E402
from qiskit.circuit.library import UnitaryGate  # noqa: E402
from qiskit.quantum_info import DensityMatrix, Kraus, Operator  # noqa: E402
from qiskit_aer import AerSimulator  # noqa: E402
from qiskit_aer.backends.backend_utils import BASIS_GATES  # noqa: E402
from qiskit_aer.noise import NoiseModel as AerNoiseModel  # noqa: E402

logging.getLogger("qiskit_aer").setLevel(logging.ERROR)
# Qiskit's Operator of some gates goes through scipy.sparse, which warns about formats
pytestmark = pytest.mark.filterwarnings("ignore::scipy.sparse.SparseEfficiencyWarning")

DT = torch.complex128
ALL_GATES = sorted(tq.GATES)
QNAMES = _tinyqml_to_qiskit()                 # tinyqml gate -> the Qiskit name noise is attached to
AER_NATIVE = set(BASIS_GATES["density_matrix"])
RULE_GATES = sorted(QNAMES)                   # gates a rule converted by to_aer can name
DEVIATIONS: dict[str, float] = {}             # the largest deviations seen (reported by the last test)


def _note(key: str, err: float) -> None:
    DEVIATIONS[key] = max(DEVIATIONS.get(key, 0.0), err)


# --------------------------------------------------------------------------- Aer side


def aer_circuit(noisy: NoisyCircuit, weights=None, x_row=None) -> QuantumCircuit:
    """The noisy circuit for Aer: gates in order, explicit channels as Kraus instructions."""
    c = noisy.circuit
    qc_full, pmap = tq.to_qiskit(c)
    w = None if weights is None else np.asarray(weights, dtype=float)
    x = None if x_row is None else np.asarray(x_row, dtype=float)
    if qc_full.parameters:
        qc_full = qc_full.assign_parameters(pmap.values(w, x))
    assert len(qc_full.data) == len(c.ops)
    qc = QuantumCircuit(c.n_wires)
    for step in noisy.steps:
        if isinstance(step, ChannelOp):
            ops = [k.numpy() for k in step.channel.kraus]   # first wire most significant = last qarg
            qc.append(Kraus(ops).to_instruction(), list(reversed(step.wires)))
            continue
        inst = qc_full.data[step]
        name = c.ops[step].name
        if inst.operation.name in AER_NATIVE:
            qc.append(inst.operation, inst.qubits)
        else:
            qc.append(UnitaryGate(Operator(inst.operation).data, label=QNAMES.get(name)), inst.qubits)
    return qc


def aer_dm(qc: QuantumCircuit, noise_model=None) -> np.ndarray:
    qc = qc.copy()
    qc.save_density_matrix()
    result = AerSimulator(method="density_matrix", noise_model=noise_model).run(qc).result()
    return DensityMatrix(result.data()["density_matrix"]).reverse_qargs().data


def aer_counts(qc: QuantumCircuit, noise_model, shots: int, seed: int) -> dict[str, int]:
    """Measured counts, keys in tinyqml's order (first wire leftmost)."""
    qc = qc.copy()
    qc.measure_all()
    sim = AerSimulator(method="density_matrix", noise_model=noise_model, seed_simulator=seed)
    got = sim.run(qc, shots=shots).result().get_counts()
    return {k.replace(" ", "")[::-1]: v for k, v in got.items()}


def _assert_counts_match(p: np.ndarray, cnt: dict[str, int], shots: int, n: int) -> float:
    """Every outcome's frequency within 4 sigma of ``p``; returns the largest |z|."""
    freq = np.zeros(2 ** n)
    for k, v in cnt.items():
        freq[int(k, 2)] = v / shots
    sigma = np.sqrt(np.maximum(p * (1 - p), 1.0 / shots) / shots)
    z = np.abs(freq - p) / sigma
    assert z.max() < 4, (z.max(), int(z.argmax()), freq[z.argmax()], p[z.argmax()])
    return float(z.max())


# --------------------------------------------------------------------------- random circuits and noise


def _unitary(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d)))
    return q * (np.diag(r) / np.abs(np.diag(r)))


def _param(rng: np.random.Generator):
    r = rng.random()
    if r < 0.3:
        return tq.const(float(rng.uniform(-4, 4)))
    if r < 0.65:
        return tq.weight(int(rng.integers(4)), scale=float(rng.choice([1.0, -0.7])), offset=float(rng.choice([0, 0.4])))
    idx = int(rng.integers(3)) if rng.random() < 0.7 else [int(i) for i in rng.integers(0, 3, 2)]
    return tq.feature(idx, scale=float(rng.choice([1.0, 0.8])), shift=float(rng.choice([0.0, 0.5])))


def random_circuit(rng: np.random.Generator, n: int, n_ops: int, forced: tuple = ()) -> tq.Circuit:
    b = tq.CircuitBuilder(n)
    names = list(forced) + [ALL_GATES[int(i)] for i in rng.integers(len(ALL_GATES), size=n_ops)]
    for name in (names[int(j)] for j in rng.permutation(len(names))):
        g = tq.GATES[name]
        if g.num_wires:
            k = g.num_wires
        elif name == "MCX":
            k = int(rng.integers(2, n + 1)) if n >= 2 else 0
        elif name == "QubitUnitary":
            k = int(rng.integers(1, min(n, 3) + 1))
        else:
            k = int(rng.integers(1, n + 1))
        if not k or k > n:
            continue
        wires = [int(w) for w in rng.permutation(n)[:k]]
        b.append(name, wires, *[_param(rng) for _ in range(g.num_params)],
                 matrix=_unitary(rng, 2 ** k) if name == "QubitUnitary" else None)
    return b.build()


def _random_kraus(rng: np.random.Generator, k: int, r: int | None = None) -> C.Channel:
    d = 2 ** k
    r = int(rng.integers(1, 4)) if r is None else r
    q, _ = np.linalg.qr(rng.normal(size=(r * d, d)) + 1j * rng.normal(size=(r * d, d)))
    return C.kraus([torch.tensor(q[i * d:(i + 1) * d]) for i in range(r)], name=f"kraus{k}x{r}")


def _pauli_probs(rng: np.random.Generator, k: int) -> tuple:
    labels = {"".join(rng.choice(list("IXYZ"), size=k)) for _ in range(3)} - {"I" * k} or {"X" * k}
    return tuple((lab, float(rng.uniform(0, 0.25))) for lab in sorted(labels))


def _t1t2(rng: np.random.Generator) -> tuple[float, float]:
    t1 = float(rng.uniform(20, 100))
    return t1, float(rng.uniform(0.2, 2.0)) * t1


def random_spec(rng: np.random.Generator, k: int) -> S.ErrorSpec:
    """A random error of a random kind on ``k`` qubits (every kind available for ``k``)."""
    def device(error):
        t = [_t1t2(rng) for _ in range(k)]
        pops = tuple(float(rng.uniform(0, 0.1)) for _ in range(k)) if rng.random() < 0.3 else ()
        return S.DeviceGateError(error=error, duration=float(rng.uniform(0.5, 10)), t1=tuple(a for a, _ in t),
                                 t2=tuple(b for _, b in t), excited_population=pops)

    if k == 1:
        t1, t2 = _t1t2(rng)
        makers = [
            lambda: S.Depolarizing(float(rng.uniform(0, 0.3))),
            lambda: S.BitFlip(float(rng.uniform(0, 0.3))),
            lambda: S.PhaseFlip(float(rng.uniform(0, 0.3))),
            lambda: S.PauliError(_pauli_probs(rng, 1)),
            lambda: S.AmplitudeDamping(float(rng.uniform(0, 0.5))),
            lambda: S.PhaseDamping(float(rng.uniform(0, 0.5))),
            lambda: S.ThermalRelaxation(t1, t2, float(rng.uniform(0, 20)), float(rng.uniform(0, 0.2))),
            lambda: S.KrausError.from_channel(_random_kraus(rng, 1)),
            lambda: device(float(rng.uniform(1e-3, 0.1))),
        ]
    elif k == 2:
        makers = [
            lambda: S.Depolarizing(float(rng.uniform(0, 0.3)), 2),
            lambda: S.PauliError(_pauli_probs(rng, 2)),
            lambda: S.KrausError.from_channel(_random_kraus(rng, 2)),
            lambda: device(float(rng.uniform(1e-3, 0.1))),
        ]
    else:
        makers = [
            lambda: S.PauliError(_pauli_probs(rng, k)),
            lambda: S.KrausError.from_channel(_random_kraus(rng, k, 2)),
            lambda: device(None),
        ]
    return makers[int(rng.integers(len(makers)))]()


def random_model(rng: np.random.Generator, c: tq.Circuit) -> NoiseModel:
    nm = NoiseModel()
    present = sorted({op.name for op in c.ops if op.name in QNAMES})
    for name in present:
        if rng.random() < 0.5:   # an all-qubit rule (sometimes two, applied in order)
            k = tq.GATES[name].num_wires
            for _ in range(1 + int(rng.random() < 0.3)):
                nm = nm.add(name, random_spec(rng, k))
    for op in c.ops:
        if op.name in QNAMES and rng.random() < 0.35:   # a local rule on the very qubits of an op
            nm = nm.add(op.name, random_spec(rng, len(op.wires)), qubits=op.wires)
    for q in range(c.n_wires):
        if rng.random() < 0.5:
            nm = nm.with_readout(q, C.ReadoutError(float(rng.uniform(0, 0.2)), float(rng.uniform(0, 0.2))))
    return nm


def with_explicit_channels(rng: np.random.Generator, noisy: NoisyCircuit,
                           p: float = 0.3) -> tuple[NoisyCircuit, NoisyCircuit]:
    """Insert random channels right before gates (after the previous gate's own errors) and at the end.

    Returns the noisy circuit with them, and the plain circuit with only them (for Aer, whose
    noise model adds the rules' errors itself)."""
    n = noisy.n_wires
    steps: list = []
    explicit: list = []

    def maybe():
        if rng.random() < p:
            k = int(rng.integers(1, min(n, 3) + 1))
            wires = tuple(int(w) for w in rng.permutation(n)[:k])
            ch = random_spec(rng, k).channel() if rng.random() < 0.7 else C.compose(_random_kraus(rng, k), random_spec(rng, k).channel())
            steps.append(ChannelOp(ch, wires))
            explicit.append(steps[-1])

    for s in noisy.steps:
        if isinstance(s, int):
            maybe()
        steps.append(s)
    maybe()
    only = tuple(s for s in steps if isinstance(s, int) or any(s is e for e in explicit))
    return NoisyCircuit(noisy.circuit, tuple(steps)), NoisyCircuit(noisy.circuit, only)


def _values(c: tq.Circuit, seed: int, batch: int):
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(c.n_weights, generator=gen, dtype=torch.float64) * 6 - 3
    x = torch.rand(batch, c.n_inputs, generator=gen, dtype=torch.float64) * 3 - 1.5 if c.n_inputs else None
    return w, x


def _rows(x, batch):
    return [None] * batch if x is None else [x[b] for b in range(x.shape[0])]


# --------------------------------------------------------------------------- transpiled circuits, from_backend


BACKENDS = ["FakeManilaV2", "FakeLagosV2"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return getattr(fake, request.param)()


def _device_circuit(seed: int) -> tq.Circuit:
    rng = np.random.default_rng(seed)
    b = tq.CircuitBuilder(3)
    b.ry(0, tq.feature(0)).ry(1, tq.feature(1)).h(2)
    b.cx(0, 1).rz(1, tq.weight(0)).cx(1, 2).rx(2, tq.weight(1)).cz(2, 0)
    b.u(0, tq.weight(2), float(rng.uniform(-3, 3)), tq.feature(0, scale=0.5)).cry(0, 2, tq.weight(3))
    b.swap(0, 2).ry(1, tq.feature([0, 1])).cx(2, 1).x(0).sx(1)
    return b.build()


@pytest.fixture(scope="module")
def transpiled(backend):
    c = _device_circuit(1)
    tc, layout = tq.transpile(c, backend, seed=3)
    return c, tc, layout


@pytest.mark.parametrize("gate_error,thermal", [(True, True), (True, False), (False, True), (False, False)])
def test_transpiled_circuit_matches_aer_from_backend(backend, transpiled, gate_error, thermal):
    _, tc, _ = transpiled
    ours_nm = NoiseModel.from_backend(backend, gate_error=gate_error, thermal_relaxation=thermal)
    aer_nm = AerNoiseModel.from_backend(backend, gate_error=gate_error, thermal_relaxation=thermal)
    assert tc.n_wires == backend.num_qubits and set(tc.gate_counts) <= {"RZ", "SX", "X", "CX"}
    w, x = _values(tc, 11, 2)
    rho = density_matrix(tc, ours_nm, w, x)
    assert rho.shape == (2, 2 ** tc.n_wires, 2 ** tc.n_wires)
    plain = density_matrix(tc, None, w, x)
    converted = ours_nm.to_aer()
    for b, xb in enumerate(_rows(x, 2)):
        qc = aer_circuit(NoisyCircuit.plain(tc), w, xb)
        a_own = aer_dm(qc, aer_nm)
        err_own = float(np.abs(rho[b].numpy() - a_own).max())
        err_conv = float(np.abs(rho[b].numpy() - aer_dm(qc, converted)).max())
        _note(f"from_backend vs Aer from_backend ({backend.name})", err_own)
        _note(f"from_backend.to_aer ({backend.name})", err_conv)
        assert err_own <= 1e-6 and err_conv <= 1e-8, (err_own, err_conv)
        if gate_error or thermal:   # the noise is really there
            assert float((rho[b] - plain[b]).abs().max()) > 1e-3
        else:
            assert float((rho[b] - plain[b]).abs().max()) <= 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transpiled_random_circuits_match_aer_from_backend(backend, seed):
    """Random circuits over the whole gate set (3 or 4 virtual qubits), transpiled with tinyqml."""
    rng = np.random.default_rng(500 + seed)
    c = random_circuit(rng, 3 + seed % 2, 12, forced=tuple(ALL_GATES[(7 * seed + j) % len(ALL_GATES)] for j in range(4)))
    tc, _ = tq.transpile(c, backend, seed=seed)
    nm = NoiseModel.from_backend(backend)
    w, x = _values(tc, seed, 2)
    rho = density_matrix(tc, nm, w, x)
    aer_nm = AerNoiseModel.from_backend(backend)
    for b, xb in enumerate(_rows(x, rho.shape[0])):
        qc = aer_circuit(NoisyCircuit.plain(tc), w, xb)
        err = float(np.abs(rho[b].numpy() - aer_dm(qc, aer_nm)).max())
        _note(f"from_backend vs Aer from_backend ({backend.name})", err)
        assert err <= 1e-6, err


def test_transpiled_circuit_probabilities_match_the_virtual_circuit_noiselessly(backend, transpiled):
    c, tc, layout = transpiled
    w, x = _values(c, 4, 3)
    got = probs(tc, None, w, x, wires=layout.final)
    assert torch.allclose(got, tq.probs(c, w, x), atol=1e-12)


# --------------------------------------------------------------------------- random noisy circuits vs Aer


N_RANDOM = 40


def _random_cases():
    rng = np.random.default_rng(20251126)
    out = []
    for i in range(N_RANDOM):
        n = 1 + i % 5
        forced = tuple(ALL_GATES[(3 * i + j) % len(ALL_GATES)] for j in range(3))
        c = random_circuit(rng, n, int(rng.integers(4, 14)), forced)
        nm = random_model(rng, c)
        # noisy: what tinyqml simulates; for_aer: the same without the rules' channels (Aer's model adds them)
        noisy, for_aer = with_explicit_channels(rng, nm.apply(c)) if i % 3 else (nm.apply(c), NoisyCircuit.plain(c))
        out.append((i, c, nm, noisy, for_aer))
    return out


CASES = _random_cases()


def test_random_cases_cover_gates_kinds_and_rule_types():
    gates = {op.name for _, c, _, _, _ in CASES for op in c.ops}
    assert gates == set(tq.GATES)
    kinds = {type(r.error).kind for _, _, nm, _, _ in CASES for r in nm.rules}
    assert kinds == set(S.SPEC_KINDS)
    local = sum(r.qubits is not None for _, _, nm, _, _ in CASES for r in nm.rules)
    every = sum(r.qubits is None for _, _, nm, _, _ in CASES for r in nm.rules)
    assert local > 20 and every > 20
    explicit = sum(noisy.n_channels - nm.apply(c).n_channels for _, c, nm, noisy, _ in CASES)
    assert explicit > 15
    assert {len(r.qubits or ()) for _, _, nm, _, _ in CASES for r in nm.rules} >= {0, 1, 2, 3}


@pytest.mark.parametrize("start", range(0, N_RANDOM, 10), ids=lambda i: f"block{i}")
def test_random_noisy_circuits_match_aer(start):
    for i, c, nm, noisy, for_aer in CASES[start:start + 10]:
        w, x = _values(c, i, 2)
        rho = density_matrix(noisy, None, w, x)
        converted = nm.to_aer()
        for b, xb in enumerate(_rows(x, rho.shape[0])):
            want = aer_dm(aer_circuit(for_aer, w, xb), converted)
            err = float(np.abs(rho[b].numpy() - want).max())
            _note("random circuits vs Aer to_aer", err)
            assert err <= 1e-8, f"case {i}: max |tinyqml - Aer| = {err:.2e}"
        if noisy.n_channels:   # a check that can fail: the noise does change the state
            plain = density_matrix(c, None, w, x)
            assert float((rho - plain).abs().max()) > 1e-6 or all(
                isinstance(s, int) or s.channel.is_unitary_mixture for s in noisy.steps)


def test_model_and_explicit_noisy_circuit_agree():
    """density_matrix(c, nm) is density_matrix(nm.apply(c))."""
    for i, c, nm, _, _ in CASES[:10]:
        w, x = _values(c, i, 2)
        assert torch.equal(density_matrix(c, nm, w, x), density_matrix(nm.apply(c), None, w, x))


# --------------------------------------------------------------------------- batching, pure states, dtypes


def test_batched_inputs_equal_separate_runs():
    checked = 0
    for i, c, nm, noisy, _ in CASES:
        if not c.n_inputs:
            continue
        w, x = _values(c, 100 + i, 4)
        rho = density_matrix(noisy, None, w, x)
        assert rho.shape[0] == 4
        for b in range(4):
            one = density_matrix(noisy, None, w, x[b])
            assert torch.allclose(rho[b:b + 1], one, atol=1e-13)
        ex = expval(noisy, [tq.Z(0), tq.X(0)], None, w, x)
        assert torch.allclose(ex[2], expval(noisy, [tq.Z(0), tq.X(0)], None, w, x[2:3])[0], atol=1e-13)
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("start", [0, 20])
def test_noiseless_density_matrix_is_the_pure_state(start):
    for i, c, _, _, _ in CASES[start:start + 20]:
        w, x = _values(c, i, 3)
        psi = tq.statevector(c, w, x)
        want = psi.unsqueeze(-1) * psi.conj().unsqueeze(-2)
        got = density_matrix(c, None, w, x)
        assert got.dtype == DT and got.shape == want.shape
        err = float((got - want).abs().max())
        _note("noiseless vs |psi><psi|", err)
        assert err <= 1e-12, (i, err)


def test_complex64_is_close():
    for i, c, _, noisy, _ in CASES[:20]:
        w, x = _values(c, i, 2)
        lo = density_matrix(noisy, None, w, x, dtype=torch.complex64)
        assert lo.dtype == torch.complex64
        err = float((lo.to(DT) - density_matrix(noisy, None, w, x)).abs().max())
        _note("complex64 vs complex128", err)
        assert err < 1e-5
        pl = probs(noisy, None, w, x, dtype=torch.complex64)
        assert pl.dtype == torch.float32


# --------------------------------------------------------------------------- gradients


def _small_noisy():
    c = (tq.CircuitBuilder(2).ry(0, tq.feature(0)).rx(1, tq.feature(1, scale=0.7))
         .cx(0, 1).u(0, tq.weight(0), tq.weight(1), 0.3).crz(1, 0, tq.weight(2)).ry(1, tq.feature([0, 1])).build())
    nm = (NoiseModel().add("CX", S.Depolarizing(0.05, 2)).add("RY", S.ThermalRelaxation(30.0, 40.0, 2.0, 0.1))
          .add("U", S.AmplitudeDamping(0.1), qubits=(0,)).add("CRZ", S.PauliError((("XZ", 0.05), ("YI", 0.02))))
          .with_readout(1, C.ReadoutError(0.05, 0.02)))
    return c, nm


def test_gradcheck_density_matrix_weights_and_inputs():
    c, nm = _small_noisy()
    g = torch.Generator().manual_seed(0)
    w = (torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    x = (torch.rand(2, 2, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)

    def fn(w_, x_):
        rho = density_matrix(c, nm, w_, x_)
        return torch.cat([rho.real.reshape(-1), rho.imag.reshape(-1)])

    assert torch.autograd.gradcheck(fn, (w, x), eps=1e-6, atol=1e-7)

    def measured(w_, x_):
        return torch.cat([probs(c, nm, w_, x_).reshape(-1),
                          expval(c, [tq.Z(0) @ tq.Z(1), tq.X(1), tq.Y(0)], nm, w_, x_).reshape(-1)])

    assert torch.autograd.gradcheck(measured, (w, x), eps=1e-6, atol=1e-7)


def test_gradient_is_not_trivially_zero():
    c, nm = _small_noisy()
    w = torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[0.4, -0.6]], dtype=torch.float64, requires_grad=True)
    expval(c, [tq.Z(1)], nm, w, x).sum().backward()
    assert float(w.grad.abs().max()) > 1e-3 and float(x.grad.abs().max()) > 1e-3


# --------------------------------------------------------------------------- readout


SHOTS = 20000


def test_readout_probs_match_aer_counts(backend, transpiled):
    """probs() through the model's (asymmetric) readout errors vs Aer's measured counts."""
    _, tc, _ = transpiled
    nm = NoiseModel.from_backend(backend)
    w, x = _values(tc, 5, 1)
    p = probs(tc, nm, w, x)[0].numpy()
    p_true = probs(tc, nm, w, x, readout=False)[0].numpy()
    qc = aer_circuit(NoisyCircuit.plain(tc), w, x[0])
    z = _assert_counts_match(p, aer_counts(qc, nm.to_aer(), SHOTS, seed=17), SHOTS, tc.n_wires)
    _note(f"readout counts vs probs, max |z| ({backend.name})", z)
    # ... and the readout really matters at this number of shots
    cnt = aer_counts(qc, nm.to_aer(), SHOTS, seed=18)
    freq = np.zeros(2 ** tc.n_wires)
    for k, v in cnt.items():
        freq[int(k, 2)] = v / SHOTS
    sigma = np.sqrt(np.maximum(p_true * (1 - p_true), 1.0 / SHOTS) / SHOTS)
    assert (np.abs(freq - p_true) / sigma).max() > 10


def test_symmetric_readout_matches_aer_own_from_backend_counts(backend, transpiled):
    _, tc, _ = transpiled
    nm = NoiseModel.from_backend(backend, asymmetric_readout=False)
    w, x = _values(tc, 6, 1)
    p = probs(tc, nm, w, x)[0].numpy()
    qc = aer_circuit(NoisyCircuit.plain(tc), w, x[0])
    z = _assert_counts_match(p, aer_counts(qc, AerNoiseModel.from_backend(backend), SHOTS, seed=23), SHOTS, tc.n_wires)
    _note(f"symmetric readout vs Aer from_backend counts, max |z| ({backend.name})", z)


def test_random_model_readout_matches_aer_counts():
    for i, c, nm, noisy, for_aer in CASES[:40:8]:
        if not nm.readout:
            continue
        w, x = _values(c, i, 1)
        p = probs(noisy, None, w, x, readout=nm)[0].numpy()
        qc = aer_circuit(for_aer, w, None if x is None else x[0])
        z = _assert_counts_match(p, aer_counts(qc, nm.to_aer(), SHOTS, seed=i), SHOTS, c.n_wires)
        _note("random models: readout counts, max |z|", z)


def test_mitigation_recovers_the_true_probabilities(transpiled, backend):
    _, tc, layout = transpiled
    nm = NoiseModel.from_backend(backend)
    w, x = _values(tc, 8, 2)
    wires = list(layout.final)
    measured = probs(tc, nm, w, x, wires=wires)
    true = probs(tc, nm, w, x, wires=wires, readout=False)
    assert float((measured - true).abs().max()) > 1e-3
    assert torch.allclose(M.mitigate_readout(measured, nm.readout_errors(wires)), true, atol=1e-12)
    assert torch.allclose(M.apply_readout(true, nm.readout_errors(wires)), measured, atol=1e-14)


def test_readout_arguments():
    c, nm = _small_noisy()
    w, x = _values(c, 0, 2)
    noisy = nm.apply(c)
    with_ro = probs(c, nm, w, x)
    without = probs(c, nm, w, x, readout=False)
    assert float((with_ro - without).abs().max()) > 1e-3
    assert torch.equal(probs(noisy, None, w, x), without)                    # no model: no readout
    assert torch.allclose(probs(noisy, None, w, x, readout=nm), with_ro, atol=1e-15)
    assert torch.allclose(probs(c, nm, w, x, readout=NoiseModel()), without, atol=1e-15)
    # expval with readout: what Z measurements report
    obs = [tq.Z(1), tq.Z(0) @ tq.Z(1), 2.0 * tq.Z(0) + tq.Z(1)]
    table = torch.tensor([[1, 1, 3], [-1, -1, 1], [1, -1, -1], [-1, 1, -3]], dtype=torch.float64)
    assert torch.allclose(expval(c, obs, nm, w, x, readout=True), with_ro @ table, atol=1e-13)
    assert torch.allclose(expval(c, obs, nm, w, x), without @ table, atol=1e-13)
    # marginals: readout on the kept wires only
    assert torch.allclose(probs(c, nm, w, x, wires=[1]),
                          M.apply_readout(probs(c, nm, w, x, wires=[1], readout=False), [nm.readout_errors([1])[0]]),
                          atol=1e-15)
    assert torch.allclose(probs(c, nm, w, x, wires=[0]), probs(c, nm, w, x, wires=[0], readout=False), atol=1e-15)


# --------------------------------------------------------------------------- sampling


def test_sample_and_counts():
    c, nm = _small_noisy()
    w, x = _values(c, 2, 2)
    s1 = sample(c, 50, nm, w, x, generator=torch.Generator().manual_seed(3))
    s2 = sample(c, 50, nm, w, x, generator=torch.Generator().manual_seed(3))
    assert s1.shape == (2, 50, 2) and torch.equal(s1, s2)
    cnt = counts(c, SHOTS, nm, w, x, generator=torch.Generator().manual_seed(4))
    assert len(cnt) == 2 and all(sum(d.values()) == SHOTS for d in cnt)
    assert all(len(k) == 2 and set(k) <= {"0", "1"} for d in cnt for k in d)
    p = probs(c, nm, w, x).numpy()
    for b in range(2):
        _assert_counts_match(p[b], cnt[b], SHOTS, 2)
    one = counts(c, 100, nm, w, x[:1], wires=[1], generator=torch.Generator().manual_seed(0))
    assert set(one[0]) <= {"0", "1"} and sum(one[0].values()) == 100


def test_counts_key_order_is_first_wire_leftmost():
    c = tq.CircuitBuilder(3).x(0).build()
    assert counts(c, 10, generator=torch.Generator().manual_seed(0)) == [{"100": 10}]
    assert counts(c, 10, wires=[2, 0], generator=torch.Generator().manual_seed(0)) == [{"01": 10}]
    nm = NoiseModel().with_readout(0, C.ReadoutError(1.0, 0.0))   # a 1 always reads as 0
    assert counts(c, 10, nm, generator=torch.Generator().manual_seed(0)) == [{"000": 10}]


# --------------------------------------------------------------------------- errors


def test_density_matrix_beyond_max_wires():
    assert MAX_WIRES == 14
    big = tq.CircuitBuilder(MAX_WIRES + 1).h(0).build()
    for fn in (density_matrix, probs):
        with pytest.raises(WireError) as info:
            fn(big)
        assert "15 wires" in str(info.value) and "at most 14 wires" in str(info.value)


@pytest.mark.parametrize("call,err,fragment", [
    (lambda c, nm: probs(c, nm, [0.1, 0.2, 0.3], [[0.1, 0.2]], readout="yes"), ShapeError,
     "readout must be True, False or a NoiseModel"),
    (lambda c, nm: expval(c, [tq.X(0)], nm, [0.1, 0.2, 0.3], [[0.1, 0.2]], readout=True), ObservableError,
     "every observable must be a product of I and Z"),
    (lambda c, nm: expval(c, [], nm, [0.1, 0.2, 0.3], [[0.1, 0.2]]), ShapeError, "at least one observable"),
    (lambda c, nm: expval(c, [tq.Z(5)], nm, [0.1, 0.2, 0.3], [[0.1, 0.2]]), ObservableError, "acts on wire 5"),
    (lambda c, nm: density_matrix(nm.apply(c), nm, [0.1, 0.2, 0.3], [[0.1, 0.2]]), NoiseModelError, "not both"),
    (lambda c, nm: density_matrix(c, "model", [0.1, 0.2, 0.3], [[0.1, 0.2]]), NoiseModelError, "must be a tinyqml.noise.NoiseModel"),
    (lambda c, nm: density_matrix(c, nm, [0.1, 0.2], [[0.1, 0.2]]), ShapeError, "weights must have shape [3]"),
    (lambda c, nm: density_matrix(c, nm, [0.1, 0.2, 0.3], None), ShapeError, "reads 2 input features"),
    (lambda c, nm: density_matrix(c, nm, [0.1, 0.2, 0.3], [[0.1, 0.2]], dtype=torch.float64), ShapeError,
     "dtype must be torch.complex64 or torch.complex128"),
    (lambda c, nm: probs(c, nm, [0.1, 0.2, 0.3], [[0.1, 0.2]], wires=[2]), WireError, "distinct and in 0..1"),
    (lambda c, nm: sample(c, 0, nm, [0.1, 0.2, 0.3], [[0.1, 0.2]]), ShapeError, "shots must be a positive integer"),
])
def test_invalid_calls(call, err, fragment):
    c, nm = _small_noisy()
    with pytest.raises(err) as info:
        call(c, nm)
    assert fragment in str(info.value)


def test_channel_on_a_missing_wire_is_refused_before_simulation():
    c = tq.CircuitBuilder(2).h(0).build()
    with pytest.raises(WireError, match="the circuit has 2 wires"):
        density_matrix(NoisyCircuit(c, (0, ChannelOp(C.bit_flip(0.1), (2,)))))


# --------------------------------------------------------------------------- properties (hypothesis)

PROB = st.floats(0.0, 1.0)
H_SMALL = st.floats(-3.0, 3.0)
H_ANGLES = st.one_of(st.floats(-2 * math.pi, 2 * math.pi), st.floats(-1e6, 1e6),
                     st.sampled_from([0.0, math.pi, 4 * math.pi, 1e12]))


def _h_unitary(seed: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d)))
    return q * (np.diag(r) / np.abs(np.diag(r)))


def _isometry_kraus(seed: int, k: int, r: int) -> tuple:
    """``r`` Kraus matrices on ``k`` wires cut from a random ``[r d, d]`` isometry: sum K^dagger K = I."""
    d = 2 ** k
    rng = np.random.default_rng(seed)
    v, _ = np.linalg.qr(rng.normal(size=(r * d, d)) + 1j * rng.normal(size=(r * d, d)))
    return tuple(tuple(tuple(complex(z) for z in row) for row in v[i * d:(i + 1) * d]) for i in range(r))


@st.composite
def thermal_params(draw):
    t1 = draw(st.one_of(st.floats(1e-9, 1e3), st.just(math.inf)))
    t2 = 2 * t1 * draw(st.floats(1e-6, 1.0)) if math.isfinite(t1) else draw(st.one_of(st.floats(1e-9, 1e3),
                                                                                      st.just(math.inf)))
    return t1, t2, draw(st.floats(0.0, 1e4)), draw(PROB)


@st.composite
def pauli_probs(draw, k: int) -> tuple:
    labels = draw(st.lists(st.text("IXYZ", min_size=k, max_size=k), min_size=1, max_size=4, unique=True))
    raw = [draw(PROB) for _ in labels]
    total = max(1.0, sum(raw))
    return tuple((label, v / total) for label, v in zip(labels, raw))


@st.composite
def error_specs(draw, k: int) -> S.ErrorSpec:
    """An error of every kind on ``k`` wires (readout excluded), with random valid parameters."""
    kinds = ["pauli", "kraus"] + (["depolarizing", "device"] if k <= 2 else []) + (
        ["bit_flip", "phase_flip", "amplitude_damping", "phase_damping", "thermal"] if k == 1 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "depolarizing":
        return S.Depolarizing(draw(st.floats(0.0, 4**k / (4**k - 1))), k)
    if kind == "bit_flip":
        return S.BitFlip(draw(PROB))
    if kind == "phase_flip":
        return S.PhaseFlip(draw(PROB))
    if kind == "amplitude_damping":
        return S.AmplitudeDamping(draw(PROB))
    if kind == "phase_damping":
        return S.PhaseDamping(draw(PROB))
    if kind == "thermal":
        return S.ThermalRelaxation(*draw(thermal_params()))
    if kind == "pauli":
        return S.PauliError(draw(pauli_probs(k)))
    if kind == "kraus":
        return S.KrausError(_isometry_kraus(draw(st.integers(0, 2**32 - 1)), k, draw(st.integers(1, 4))))
    t1 = tuple(draw(st.floats(1e-6, 1e-3)) for _ in range(k))
    t2 = tuple(2 * a * draw(st.floats(0.01, 1.0)) for a in t1)
    return S.DeviceGateError(error=draw(st.one_of(st.none(), st.floats(0.0, 0.5))),
                             duration=draw(st.one_of(st.none(), st.floats(0.0, 1e-6))), t1=t1, t2=t2,
                             excited_population=tuple(draw(st.floats(0.0, 0.2)) for _ in range(k)))


@st.composite
def noisy_cases(draw):
    """A random circuit (every gate, 1..4 wires, all parameter kinds), a noise model with a random
    rule (all-qubit or local) on some of its gates, and extra channels between the gates."""
    n = draw(st.integers(1, 4))
    names = [g for g in ALL_GATES if (tq.GATES[g].num_wires or tq.GATES[g].min_wires) <= n]
    b = tq.CircuitBuilder(n)
    for _ in range(draw(st.integers(0, 8))):
        name = draw(st.sampled_from(names))
        g = tq.GATES[name]
        k = g.num_wires or draw(st.integers(g.min_wires, min(n, 3)))
        wires = draw(st.permutations(range(n)))[:k]
        ps = [draw(st.one_of(H_ANGLES.map(tq.const), st.integers(0, 2).map(tq.weight),
                             st.integers(0, 1).map(lambda i: tq.feature(i, scale=2.0)),
                             st.just(tq.feature([0, 1], shift=0.5))))
              for _ in range(g.num_params)]
        matrix = _h_unitary(draw(st.integers(0, 2**32 - 1)), 2**k) if g is tq.GATES["QubitUnitary"] else None
        b.append(name, wires, *ps, matrix=matrix)
    c = b.build()
    nm = NoiseModel()
    for op in c.ops:
        if draw(st.booleans()):
            k = len(op.wires)
            every = bool(op.gate.num_wires) and draw(st.booleans())
            nm = nm.add(op.name, draw(error_specs(k)), None if every else op.wires)
    noisy = nm.apply(c)
    steps = list(noisy.steps)
    for _ in range(draw(st.integers(0, 3))):
        k = draw(st.integers(1, min(n, 2)))
        wires = tuple(draw(st.permutations(range(n)))[:k])
        steps.insert(draw(st.integers(0, len(steps))), ChannelOp(draw(error_specs(k)).channel(), wires))
    w = torch.tensor([draw(H_SMALL) for _ in range(c.n_weights)], dtype=torch.float64)
    rows = draw(st.integers(1, 3))
    x = (torch.tensor([[draw(H_SMALL) for _ in range(c.n_inputs)] for _ in range(rows)], dtype=torch.float64)
         if c.n_inputs else None)
    return c, nm, NoisyCircuit(c, tuple(steps)), w if c.n_weights else None, x


def _check_density_matrices(rho: torch.Tensor, tol: float) -> None:
    d = rho.shape[-1]
    assert torch.isfinite(torch.view_as_real(rho)).all()
    herm = float((rho - rho.conj().transpose(-1, -2)).abs().max())
    assert herm <= tol, f"not Hermitian: max |rho - rho^dagger| = {herm:.3g}"
    trace = rho.diagonal(dim1=-2, dim2=-1).sum(-1)
    assert float((trace - 1).abs().max()) <= tol, f"trace {trace.tolist()}"
    evals = torch.linalg.eigvalsh((rho + rho.conj().transpose(-1, -2)) / 2)
    assert float(evals.min()) >= -tol, f"not positive semidefinite: smallest eigenvalue {float(evals.min()):.3g}"
    assert float(evals.max()) <= 1 + tol and rho.shape[-2:] == (d, d)


@settings(derandomize=True, deadline=None, max_examples=150)
@given(noisy_cases())
def test_density_matrices_stay_physical_under_every_channel(case) -> None:
    """Hermitian, trace 1 and eigenvalues >= -1e-10 for random circuits, noise models and channels."""
    c, nm, noisy, w, x = case
    for s in noisy.steps:  # shown by --hypothesis-show-statistics: which error kinds were drawn
        if isinstance(s, ChannelOp):
            event(s.channel.name.split("(")[0])
    rho = density_matrix(c, nm, w, x)
    _check_density_matrices(rho, 1e-10)
    _check_density_matrices(density_matrix(noisy, None, w, x), 1e-10)
    if x is not None and any(p.kind == "feature" for op in c.ops for p in op.params):
        assert rho.shape[0] == x.shape[0]


def test_report_deviations():
    """Prints the largest deviations seen in this module (run with -s to see them)."""
    for key, val in sorted(DEVIATIONS.items()):
        print(f"{key}: {val:.3e}")
    assert all(math.isfinite(v) for v in DEVIATIONS.values())
