"""The ``tinyqml.mixed`` PennyLane device (tinyqml.noise.pennylane_device).

PennyLane's own device test suite must pass with zero failures, analytic and with shots.
Beyond it, the device is compared with ``default.mixed``: seeded random noisy circuits
with every channel kind (expvals, variances, probabilities, density matrices and
entropies to 1e-10), broadcasting, backprop gradients under torch (gate angles, channel
parameters, Kraus matrices, unitaries) and autograd, sampling statistics, and the
named errors raised on bad input.

Circuits for gradient comparisons start with rotations on every wire: ``default.mixed``
(PennyLane 0.45) returns NaN gradients for ``probs``/``expval(Z)`` when a probability is
exactly zero, which would make the reference useless.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

qml = pytest.importorskip("pennylane")
pnp = pytest.importorskip("pennylane.numpy")
unitary_group = pytest.importorskip("scipy.stats").unitary_group

from tinyqml.noise import pennylane_device as ND  # noqa: E402
from tinyqml.noise.pennylane_device import DeviceWireError, TinyQMLMixed  # noqa: E402
from tinyqml.qml.errors import DeviceError, TinyQMLError, WireError  # noqa: E402

F64 = torch.float64
HERM = np.array([[1.0, 2j], [-2j, 0.5]])
HAM = qml.Hamiltonian([0.5, -1.2, 0.3, 0.25], [qml.X(0) @ qml.Y(2), qml.Z(1), qml.Y(0) @ qml.X(1), qml.Identity(0)])
KINDS = ["DepolarizingChannel", "AmplitudeDamping", "GeneralizedAmplitudeDamping", "PhaseDamping", "BitFlip",
         "PhaseFlip", "ThermalRelaxationError", "PauliError", "ResetError", "QubitChannel", "QubitChannel2",
         "QubitDensityMatrix"]


def _devices(wires=3, **kw):
    return qml.device("tinyqml.mixed", wires=wires, **kw), qml.device("default.mixed", wires=wires)


def _close(a, b, atol=1e-10):
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)


# --------------------------------------------------------------------------- random noisy circuits


def _kraus(rng, wires):
    """Kraus matrices of a random channel: blocks of a random isometry."""
    d = 2 ** wires
    v = unitary_group.rvs(3 * d, random_state=rng)[:, :d]
    return [v[i * d:(i + 1) * d] for i in range(3)]


def _channel(kind, rng, wires):
    """A random instance of channel ``kind`` on (random choices among) ``wires``."""
    w = [int(x) for x in rng.permutation(wires)]
    p = float(rng.uniform(0.05, 0.4))
    if kind == "GeneralizedAmplitudeDamping":
        return qml.GeneralizedAmplitudeDamping(p, float(rng.uniform()), w[0])
    if kind == "ThermalRelaxationError":
        t1 = float(rng.uniform(1, 3))
        return qml.ThermalRelaxationError(float(rng.uniform(0, 0.5)), t1, float(rng.uniform(0.2, 2 * t1)),
                                          float(rng.uniform(0.05, 1)), w[0])
    if kind == "PauliError":
        return qml.PauliError("".join(rng.choice(list("XYZ"), 2)), p, w[:2])
    if kind == "ResetError":
        return qml.ResetError(p, float(rng.uniform(0, 1 - p)), w[0])
    if kind in ("QubitChannel", "QubitChannel2"):
        k = 2 if kind == "QubitChannel2" else 1
        return qml.QubitChannel(_kraus(rng, k), wires=w[:k])
    if kind == "QubitDensityMatrix":
        a = rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2))
        return qml.QubitDensityMatrix(a @ a.conj().T / np.trace(a @ a.conj().T), wires=w[0])
    return getattr(qml, kind)(p, w[0])


def _gate(rng, n):
    w = [int(x) for x in rng.permutation(n)]
    a = [float(v) for v in rng.uniform(-np.pi, np.pi, 3)]
    return [qml.RX(a[0], w[0]), qml.RY(a[0], w[0]), qml.Rot(*a, wires=w[0]), qml.CNOT(w[:2]),
            qml.CRY(a[1], w[:2]), qml.IsingXY(a[2], w[:2]), qml.H(w[0]), qml.S(w[1])][rng.integers(8)]


def random_ops(kind, seed, n=3, depth=8):
    """Rotations on every wire, then ``depth`` rounds of a random gate and a ``kind`` channel."""
    rng = np.random.default_rng(seed)
    ops = [qml.RY(float(rng.uniform(0.3, 2.8)), w) for w in range(n)]
    for _ in range(depth):
        ops += [_gate(rng, n), _channel(kind, rng, range(n))]
    return ops


def _measure_all():
    return (qml.expval(HAM), qml.expval(qml.Hermitian(HERM, 1)), qml.var(qml.X(0) @ qml.Z(2)),
            qml.var(qml.Hermitian(HERM, 2)), qml.var(0.5 * qml.X(1) + qml.Z(0)), qml.probs(wires=[2, 0]),
            qml.probs(op=qml.Y(1)), qml.probs(), qml.state(), qml.density_matrix(wires=[2, 1]),
            qml.purity(wires=[0, 1]), qml.vn_entropy(wires=[1]), qml.mutual_info([0], [2]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_noisy_circuits_match_default_mixed(kind, seed):
    ops = random_ops(kind, seed)

    def circuit():
        for op in ops:
            qml.apply(op)
        return _measure_all()

    tq, dm = _devices()
    _close(qml.QNode(circuit, tq)(), qml.QNode(circuit, dm)())


def test_channels_become_channel_ops_with_pennylane_kraus():
    ops = [qml.RX(0.3, 0), qml.ThermalRelaxationError(0.2, 1.0, 0.7, 0.4, 1), qml.CNOT([0, 1]),
           qml.PauliError("XZ", 0.1, [1, 0])]
    t = ND.translate(ops, [0, 1], None)
    steps = t.noisy.steps
    assert [s if isinstance(s, int) else (s.channel.name, s.wires) for s in steps] == [
        0, ("ThermalRelaxationError", (1,)), 1, ("PauliError", (1, 0))]
    for step, op in zip(steps[1::2], ops[1::2]):
        for ours, theirs in zip(step.channel.kraus, op.kraus_matrices()):
            np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-15)


def test_labels_wire_order_state_prep_and_mid_circuit_measurements():
    def labelled():
        qml.RX(0.4, "a")
        qml.CNOT(["a", 3])
        qml.BitFlip(0.1, 3)
        qml.RY(0.2, "b")
        qml.AmplitudeDamping(0.3, "a")
        return qml.probs(wires=[3, "a"]), qml.expval(qml.X("b") @ qml.Z(3)), qml.state()

    for wires in (["a", "b", 3], None):
        tq, dm = _devices(wires)
        _close(qml.QNode(labelled, tq)(), qml.QNode(labelled, dm)())

    def prepared(x):
        qml.StatePrep(np.array([1, 1j, 0, 1, 0, 0, 1, -1]) / np.sqrt(5), wires=[0, 1, 2])
        qml.DepolarizingChannel(0.2, 1)
        qml.RX(x, 0)
        m = qml.measure(0)
        qml.cond(m, qml.RY)(0.7, 2)
        qml.PhaseDamping(0.3, 2)
        return qml.expval(qml.Z(2)), qml.probs(op=m), qml.density_matrix(wires=[2])

    tq, dm = _devices(4)  # deferring the measurement takes one more wire
    _close(qml.QNode(prepared, tq)(0.9), qml.QNode(prepared, dm)(0.9))


def test_constant_channels_reuse_the_compiled_noisy_circuit():
    ops = [qml.RX(0.3, 0), qml.DepolarizingChannel(0.1, 0), qml.CNOT([0, 1])]
    a = ND.translate(ops, [0, 1], None)
    b = ND.translate([qml.RX(1.3, 0)] + ops[1:], [0, 1], None)
    assert a.noisy is b.noisy
    p = torch.tensor(0.1, dtype=F64, requires_grad=True)
    c = ND.translate([ops[0], qml.DepolarizingChannel(p, 0), ops[2]], [0, 1], None)
    assert c.noisy is not a.noisy  # trainable channels are never cached


# --------------------------------------------------------------------------- broadcasting


def test_broadcasting_runs_as_one_batch():
    def circuit(x, w):
        qml.RX(x, 0)
        qml.RY(w, 1)
        qml.DepolarizingChannel(0.2, 0)
        qml.CNOT([0, 1])
        qml.AmplitudeDamping(0.3, 1)
        return qml.expval(qml.Z(1)), qml.probs(wires=[0]), qml.state(), qml.purity([1])

    tq, dm = _devices(2)
    x = np.linspace(0, 2, 7)
    with mock.patch.object(ND, "translate", wraps=ND.translate) as spy, \
            mock.patch.object(qml.transforms, "broadcast_expand", wraps=qml.transforms.broadcast_expand) as expand:
        res = qml.QNode(circuit, tq)(x, 0.3)
    assert spy.call_count == 1 and expand.call_count == 0 and spy.call_args.args[2] == 7
    _close(res, qml.QNode(circuit, dm)(x, 0.3))


def test_broadcast_unitaries_are_split_into_one_tape_per_row():
    u = np.stack([unitary_group.rvs(4, random_state=s) for s in range(3)])

    def circuit(u, x):
        qml.H(0)
        qml.RX(x, 1)
        qml.BitFlip(0.1, 1)
        qml.QubitUnitary(u, wires=[1, 2])
        return qml.expval(qml.Z(0) @ qml.X(1)), qml.probs(wires=[1, 2])

    tq, dm = _devices()
    with mock.patch.object(ND, "translate", wraps=ND.translate) as spy:
        res = qml.QNode(circuit, tq)(u, 0.4)
    assert spy.call_count == 3
    _close(res, qml.QNode(circuit, dm)(u, 0.4))


# --------------------------------------------------------------------------- derivatives


U2 = unitary_group.rvs(4, random_state=7)
K1 = _kraus(np.random.default_rng(3), 1)


def _grad_circuit(x, w, p, u, k):
    qml.RX(x, 0)
    qml.Rot(w[0], w[1], w[2], wires=1)
    qml.RY(0.8, 2)
    qml.DepolarizingChannel(p[0], 0)
    qml.CNOT([0, 2])
    qml.AmplitudeDamping(p[1], 2)
    qml.GeneralizedAmplitudeDamping(p[2], p[3], 1)
    qml.QubitUnitary(u, wires=[1, 2])
    qml.ThermalRelaxationError(0.05, 1.0, 0.9, 0.3, 1)
    qml.PauliError("XY", p[1], [0, 2])
    qml.IsingXY(w[1], [1, 2])
    qml.PhaseDamping(p[2], 1)
    qml.BitFlip(p[0], 0)
    qml.PhaseFlip(p[3], 2)
    qml.ResetError(p[0], p[1], 1)
    qml.QubitChannel(k, wires=0)
    return (qml.expval(HAM), qml.probs(wires=[1]), qml.var(qml.X(2)), qml.purity(wires=[0, 1]),
            qml.var(qml.Hermitian(HERM, 0)))


def _leaves(x):
    return (torch.tensor(x, dtype=F64, requires_grad=True), torch.tensor([0.3, -0.4, 0.9], dtype=F64, requires_grad=True),
            torch.tensor([0.1, 0.2, 0.15, 0.3], dtype=F64, requires_grad=True), torch.tensor(U2, requires_grad=True),
            torch.tensor(np.stack(K1), requires_grad=True))


def _loss(out):
    return (out[0].sum() + (out[1] * torch.tensor([0.3, -0.7], dtype=F64)).sum() - out[2].sum() + out[3].sum()
            + 0.5 * out[4].sum())


def _torch_grads(dev, x, diff_method="backprop"):
    leaves = _leaves(x)
    loss = _loss(qml.QNode(_grad_circuit, dev, diff_method=diff_method)(*leaves))
    loss.backward()
    return [loss.detach().numpy()] + [t.grad.numpy() for t in leaves]


@pytest.mark.parametrize("x", [0.4, [0.1, 0.5, 1.2]], ids=["scalar", "broadcast"])
@pytest.mark.parametrize("diff_method", ["backprop", "best"])
def test_torch_backprop_gradients_match_default_mixed(x, diff_method):
    tq, dm = _devices()
    _close(_torch_grads(tq, x, diff_method), _torch_grads(dm, x))


def test_autograd_backprop_matches_torch_reference():
    def circuit(x, p):
        qml.RX(x, 0)
        qml.RY(0.7, 1)
        qml.DepolarizingChannel(p, 0)
        qml.CNOT([0, 1])
        qml.AmplitudeDamping(p, 1)
        return qml.expval(qml.Z(1)), qml.probs(wires=[0])

    tq, dm = _devices(2)
    f = qml.QNode(circuit, tq, diff_method="best")
    grads = qml.grad(lambda x, p: f(x, p)[0] + f(x, p)[1][1])(pnp.array(0.4, requires_grad=True),
                                                             pnp.array(0.2, requires_grad=True))
    x, p = (torch.tensor(v, dtype=F64, requires_grad=True) for v in (0.4, 0.2))
    e, pr = qml.QNode(circuit, dm, diff_method="backprop")(x, p)
    (e + pr[1]).backward()
    np.testing.assert_allclose(grads, [x.grad.item(), p.grad.item()], atol=1e-10)


def test_hessian_by_backprop():
    def circuit(x):
        qml.RY(x[0], 0)
        qml.AmplitudeDamping(x[2], 0)
        qml.RX(x[1], 0)
        return qml.expval(qml.Z(0) + 0.5 * qml.X(0))

    x = torch.tensor([1.0, 2.0, 0.3], dtype=F64, requires_grad=True)
    f, g = (qml.QNode(circuit, d, diff_method="backprop", max_diff=2) for d in _devices(1))
    np.testing.assert_allclose(torch.autograd.functional.hessian(f, x), torch.autograd.functional.hessian(g, x),
                               atol=1e-10)


def test_supported_derivatives():
    dev = qml.device("tinyqml.mixed", wires=1)
    cfg = qml.devices.ExecutionConfig
    assert dev.supports_derivatives(cfg(gradient_method="backprop"))
    assert dev.supports_derivatives(cfg(gradient_method="best"))
    assert not dev.supports_derivatives(cfg(gradient_method="adjoint"))
    shots = qml.tape.QuantumScript([qml.RX(0.1, 0)], [qml.expval(qml.Z(0))], shots=10)
    assert not dev.supports_derivatives(cfg(gradient_method="backprop"), shots)
    resolved = dev.setup_execution_config(cfg(gradient_method="best"))
    assert resolved.gradient_method == "backprop" and resolved.use_device_gradient


def test_parameter_shift_with_shots_is_left_to_pennylane():
    dev = qml.device("tinyqml.mixed", wires=1, seed=5)

    @qml.set_shots(shots=20000)
    @qml.qnode(dev, diff_method="best")
    def circuit(x):
        qml.RX(x, 0)
        qml.PhaseFlip(0.1, 0)
        return qml.expval(qml.Z(0))

    x = torch.tensor(0.6, dtype=F64, requires_grad=True)
    circuit(x).backward()
    assert abs(x.grad.item() + np.sin(0.6)) < 0.03


# --------------------------------------------------------------------------- finite shots


def _shots_circuit(x, samples=True):
    for op in random_ops("DepolarizingChannel", 4, depth=4):
        qml.apply(op)
    qml.RX(x, 0)
    qml.AmplitudeDamping(0.3, 2)
    exact = (qml.expval(HAM), qml.var(qml.X(0) @ qml.Y(2)), qml.expval(qml.Hermitian(HERM, 1)),
             qml.probs(wires=[2, 0]), qml.probs(op=qml.X(1)))
    return exact + (qml.sample(qml.X(0) @ qml.Z(1)), qml.counts(wires=[0, 1])) if samples else exact


def test_sampled_measurements_agree_with_default_mixed_statistically():
    tq, dm = _devices(seed=11)
    exact = qml.QNode(_shots_circuit, dm)(0.4, samples=False)
    got = qml.set_shots(qml.QNode(_shots_circuit, tq), shots=40000)(0.4)
    _close(got[:5], exact, atol=0.03)
    assert got[5].shape == (40000,) and set(np.unique(got[5])) <= {-1.0, 1.0}
    assert sum(got[6].values()) == 40000


def test_shot_vectors_and_broadcasting_shapes():
    tq, _ = _devices(seed=3)
    res = qml.set_shots(qml.QNode(_shots_circuit, tq), shots=[100, (50, 2)])(np.array([0.1, 0.7]))
    assert len(res) == 3
    assert [np.shape(r) for r in res[0][:5]] == [(2,), (2,), (2,), (2, 4), (2, 2)]
    assert np.shape(res[1][5]) == (2, 50)


def test_seeded_sampling_is_reproducible():
    def draw(seed):
        @qml.set_shots(shots=64)
        @qml.qnode(qml.device("tinyqml.mixed", wires=2, seed=seed))
        def circuit():
            qml.H(0)
            qml.DepolarizingChannel(0.5, 1)
            return qml.sample()

        return circuit()

    assert np.array_equal(draw(7), draw(7))
    assert not np.array_equal(draw(7), draw(8))


# --------------------------------------------------------------------------- errors


class _Leaky(qml.operation.Channel):
    """A user channel whose Kraus matrices are not trace preserving."""

    num_params = 1
    num_wires = 1

    @staticmethod
    def compute_kraus_matrices(p):
        return [np.sqrt(1 - p) * np.eye(2)]


def _run(dev, body, *args):
    def circuit(*a):
        body(*a)
        return qml.expval(qml.Z(0))

    return qml.QNode(circuit, dev)(*args)


@pytest.mark.parametrize("body, args, error, match", [
    (lambda: qml.BitFlip(0.1, 5), (), DeviceWireError, r"BitFlip acts on wire\(s\) \[5\].*device wires \[0, 1\]"),
    (lambda p: qml.DepolarizingChannel(p, 0), (np.array([0.1, 0.2]),), DeviceError, "broadcast parameters"),
    (lambda t: qml.ThermalRelaxationError(0.1, 1.0, 0.9, t, 0), (torch.tensor(0.3, dtype=F64, requires_grad=True),),
     DeviceError, "ThermalRelaxationError with trainable parameters.*accepted: constant"),
    (lambda r: qml.QubitDensityMatrix(r, wires=0), (torch.eye(2, dtype=torch.complex128, requires_grad=True) / 2,),
     DeviceError, "trainable density matrix"),
    (lambda: _Leaky(0.2, wires=0), (), DeviceError, "_Leaky on wires \\[0\\] is not a channel.*trace preserving"),
], ids=["wire", "broadcast-channel", "trainable-thermal", "trainable-density", "not-cptp"])
def test_bad_input_raises_named_errors(body, args, error, match):
    with pytest.raises(error, match=match):
        _run(qml.device("tinyqml.mixed", wires=2), body, *args)


def test_error_classes_and_configuration_errors():
    assert issubclass(DeviceWireError, WireError) and issubclass(DeviceWireError, qml.wires.WireError)
    assert issubclass(DeviceWireError, qml.exceptions.DeviceError)
    with pytest.raises(DeviceError, match="at most 4 wires"):
        _run(qml.device("tinyqml.mixed", wires=5), lambda: qml.QubitDensityMatrix(np.eye(32) / 32, range(5)))
    dev = qml.device("tinyqml.mixed", wires=1)
    with pytest.raises(qml.exceptions.DeviceError, match="mcm_method 'one-shot'"):
        dev.setup_execution_config(qml.devices.ExecutionConfig(mcm_config=qml.devices.MCMConfig("one-shot")))
    with pytest.raises(TinyQMLError, match="device option"):
        dev.setup_execution_config(qml.devices.ExecutionConfig(device_options={"max_workers": 2}))
    with pytest.raises(qml.exceptions.QuantumFunctionError, match="does not support adjoint"):
        qml.QNode(lambda x: (qml.RX(x, 0), qml.expval(qml.Z(0)))[1], dev, diff_method="adjoint")(
            pnp.array(0.1, requires_grad=True))
    with pytest.raises(qml.exceptions.DeviceError, match="finite shots"):
        qml.set_shots(qml.QNode(lambda: qml.state(), dev), shots=10)()


# --------------------------------------------------------------------------- registration and the device suite


def test_registered_under_pennylane_plugins():
    (ep,) = [e for e in entry_points(group="pennylane.plugins") if e.name == "tinyqml.mixed"]
    assert ep.load() is TinyQMLMixed
    dev = qml.device("tinyqml.mixed", wires=2)
    assert isinstance(dev, TinyQMLMixed) and dev.name == "tinyqml.mixed"


def test_importing_tinyqml_noise_does_not_import_pennylane():
    code = "import sys, tinyqml.noise; assert 'pennylane' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("shots", [None, 10000], ids=["analytic", "shots"])
def test_pennylane_device_suite_passes(shots):
    exe = Path(sys.executable).parent / "pl-device-test"
    if not exe.exists():
        pytest.skip("pl-device-test is not installed")
    env = dict(os.environ, PATH=f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(exe), "--device", "tinyqml.mixed", "-q", "-p", "no:cacheprovider", "-W", "ignore"]
    if shots:
        cmd += ["--shots", str(shots)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " failed" not in proc.stdout and "passed" in proc.stdout
