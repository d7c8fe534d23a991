"""The ``tinyqml.qubit`` PennyLane device (tinyqml.qml.pennylane_device).

PennyLane's own device test suite must pass with zero failures, analytic and with shots.
The suite never tests a device's own derivatives, so here the device's backprop, adjoint
Jacobians and VJPs are compared with ``default.qubit`` (torch and autograd interfaces,
with and without broadcasting), as are its measurements.
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

from tinyqml.qml import fusion  # noqa: E402
from tinyqml.qml import pennylane_ops as PO  # noqa: E402
from tinyqml.qml.errors import DeviceError, TinyQMLError  # noqa: E402
from tinyqml.qml.pennylane_device import TinyQMLQubit  # noqa: E402

F64 = torch.float64
HAM = qml.Hamiltonian([0.5, -1.2, 0.3, 0.25], [qml.X(0) @ qml.Y(2), qml.Z(1), qml.Y(0) @ qml.X(1), qml.Identity(0)])
HERM = np.array([[1.0, 2j], [-2j, 0.5]])


def _devices(wires=3, **kw):
    return qml.device("tinyqml.qubit", wires=wires, **kw), qml.device("default.qubit", wires=wires)


# --------------------------------------------------------------------------- PennyLane's device suite


@pytest.mark.parametrize("shots", [None, 10000], ids=["analytic", "shots"])
def test_pennylane_device_suite_passes(shots):
    exe = Path(sys.executable).parent / "pl-device-test"
    if not exe.exists():
        pytest.skip("pl-device-test is not installed")
    env = dict(os.environ, PATH=f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(exe), "--device", "tinyqml.qubit", "-q", "-p", "no:cacheprovider", "-W", "ignore"]
    if shots:
        cmd += ["--shots", str(shots)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " failed" not in proc.stdout and "passed" in proc.stdout


# --------------------------------------------------------------------------- registration, laziness


def test_registered_under_pennylane_plugins():
    (ep,) = [e for e in entry_points(group="pennylane.plugins") if e.name == "tinyqml.qubit"]
    assert ep.load() is TinyQMLQubit
    dev = qml.device("tinyqml.qubit", wires=2)
    assert isinstance(dev, TinyQMLQubit) and dev.name == "tinyqml.qubit"


def test_importing_tinyqml_qml_does_not_import_pennylane():
    code = "import sys, tinyqml.qml; assert 'pennylane' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- analytic measurements


def _rich_circuit(x, w):
    qml.StatePrep(np.array([1, 1j, 0, 1, 0, 0, 1, -1]) / np.sqrt(5), wires=[0, 1, 2])
    qml.RX(x, 0)
    qml.Rot(*w, wires=1)
    qml.CNOT([0, 2])
    qml.IsingXY(0.3, [1, 2])  # decomposed by PennyLane
    qml.CRot(0.1, 0.2, 0.3, [2, 0])
    qml.MultiControlledX(wires=[0, 1, 2], control_values=[0, 1])
    qml.GlobalPhase(0.7)
    return (qml.expval(HAM), qml.var(qml.X(0) @ qml.Y(2)), qml.expval(qml.Hermitian(HERM, 1)),
            qml.var(qml.Hermitian(HERM, 2)), qml.probs(wires=[2, 0]), qml.probs(op=qml.X(1)), qml.var(HAM),
            qml.expval(qml.Projector([1, 0], [0, 2])), qml.state(), qml.density_matrix(wires=[1]))


@pytest.mark.parametrize("x", [0.4, np.array([0.1, 0.5, 1.2])], ids=["scalar", "broadcast"])
def test_analytic_measurements_match_default_qubit(x):
    tq, dq = _devices()
    w = np.array([0.3, -0.4, 0.9])
    for a, b in zip(qml.QNode(_rich_circuit, tq)(x, w), qml.QNode(_rich_circuit, dq)(x, w)):
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_non_commuting_x_y_observables_are_not_misdiagonalized():
    tq, dq = _devices()

    def circuit():
        qml.RX(0.3, 0)
        qml.RY(-0.8, 1)
        qml.CNOT([0, 2])
        qml.RX(1.1, 2)
        qml.CZ([1, 2])
        return qml.expval(qml.X(0) @ qml.Y(2)), qml.expval(qml.Y(0)), qml.expval(qml.X(2)), qml.expval(qml.Z(0))

    np.testing.assert_allclose(qml.QNode(circuit, tq)(), qml.QNode(circuit, dq)(), atol=1e-12)


def test_sparse_hamiltonian_wire_labels_and_mid_circuit_measurements():
    sparse = qml.SparseHamiltonian(qml.Hamiltonian([0.5, -0.3], [qml.X(0) @ qml.Y(1), qml.Z(1)])
                                   .sparse_matrix(wire_order=[0, 1]), wires=[0, 1])

    def circuit(x):
        qml.RX(x, 0)
        qml.CNOT([0, 1])
        m = qml.measure(1)
        qml.cond(m, qml.RY)(0.7, 2)
        return qml.expval(sparse), qml.expval(qml.Z(2)), qml.probs(op=m)

    for wires in (4, None):  # deferring the measurement takes one more wire
        tq, dq = _devices(wires)
        np.testing.assert_allclose(np.hstack(qml.QNode(circuit, tq)(0.9)), np.hstack(qml.QNode(circuit, dq)(0.9)),
                                   atol=1e-12)

    def labelled():
        qml.RX(0.4, "a")
        qml.CNOT(["a", 3])
        qml.RY(0.2, "b")
        return qml.probs(wires=[3, "a"]), qml.expval(qml.X("b") @ qml.Z(3)), qml.state()

    tq, dq = _devices(["a", "b", 3])
    for a, b in zip(qml.QNode(labelled, tq)(), qml.QNode(labelled, dq)()):
        np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_broadcast_and_trainable_unitaries(k):
    from scipy.stats import unitary_group

    u = np.stack([unitary_group.rvs(2**k, random_state=s) for s in range(3)])

    def circuit(u, x):
        qml.H(0)
        qml.RX(x, 1)
        qml.QubitUnitary(u, wires=list(range(k)))
        qml.CNOT([2, 0])
        return qml.expval(qml.Z(0) @ qml.X(1)), qml.probs(wires=[0, 2])

    tq, dq = _devices()
    for a, b in zip(qml.QNode(circuit, tq)(u, 0.4), qml.QNode(circuit, dq)(u, 0.4)):
        np.testing.assert_allclose(a, b, atol=1e-12)
    grads = []
    for dev in (tq, dq):
        ut = torch.tensor(u[0], requires_grad=True)
        x = torch.tensor([0.1, 0.5], dtype=F64, requires_grad=True)
        e, p = qml.QNode(circuit, dev, diff_method="backprop")(ut, x)
        (e.sum() + p[:, 1].sum()).backward()
        grads.append(np.hstack([ut.grad.numpy().ravel(), x.grad.numpy()]))
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-12)


def test_complex64_option():
    dev = qml.device("tinyqml.qubit", wires=2, c_dtype="complex64")

    @qml.qnode(dev)
    def circuit(x):
        qml.RX(x, 0)
        qml.CNOT([0, 1])
        return qml.expval(qml.Z(1)), qml.state()

    e, psi = circuit(0.3)
    assert e.dtype == np.float32 and psi.dtype == np.complex64
    assert abs(e - np.cos(0.3)) < 1e-6


# --------------------------------------------------------------------------- broadcasting


def test_broadcasting_runs_as_one_tinyqml_call():
    tq, dq = _devices(2)

    def circuit(x, w):
        qml.RX(x, 0)
        qml.RY(w, 1)
        qml.CNOT([0, 1])
        return qml.expval(qml.Z(1)), qml.probs(wires=[0])

    x = np.linspace(0, 2, 7)
    with mock.patch.object(PO, "translate", wraps=PO.translate) as spy, \
            mock.patch.object(qml.transforms, "broadcast_expand", wraps=qml.transforms.broadcast_expand) as expand:
        res = qml.QNode(circuit, tq)(x, 0.3)
    assert spy.call_count == 1 and expand.call_count == 0
    assert spy.call_args.args[2] == 7
    for a, b in zip(res, qml.QNode(circuit, dq)(x, 0.3)):
        np.testing.assert_allclose(a, b, atol=1e-12)


# --------------------------------------------------------------------------- finite shots


def _shots_circuit(x, w, samples=True):
    qml.RX(x, 0)
    qml.Rot(*w, wires=1)
    qml.CNOT([0, 2])
    qml.IsingXY(0.3, [1, 2])
    exact = (qml.expval(HAM), qml.var(qml.X(0) @ qml.Y(2)), qml.expval(qml.Hermitian(HERM, 1)),
             qml.probs(wires=[2, 0]), qml.probs(op=qml.X(1)), qml.expval(qml.Projector([1, 0], [0, 2])))
    return exact + (qml.sample(qml.X(0) @ qml.Z(1)), qml.counts(wires=[0, 1])) if samples else exact


def test_sampled_measurements_agree_with_default_qubit_statistically():
    tq, dq = _devices(seed=11)
    w = np.array([0.3, -0.4, 0.9])
    exact = qml.QNode(_shots_circuit, dq)(0.4, w, samples=False)
    got = qml.set_shots(qml.QNode(_shots_circuit, tq), shots=40000)(0.4, w)
    for a, b in zip(got[:6], exact[:6]):
        np.testing.assert_allclose(a, b, atol=0.05)
    assert got[6].shape == (40000,) and set(np.unique(got[6])) <= {-1.0, 1.0}
    assert sum(got[7].values()) == 40000


def test_shot_vectors_and_broadcasting_shapes():
    tq, _ = _devices(seed=3)
    res = qml.set_shots(qml.QNode(_shots_circuit, tq), shots=[100, (50, 2)])(np.array([0.1, 0.7]), [0.3, -0.4, 0.9])
    assert len(res) == 3
    assert [np.shape(r) for r in res[0][:6]] == [(2,), (2,), (2,), (2, 4), (2, 2), (2,)]
    assert np.shape(res[1][6]) == (2, 50)


def test_seeded_sampling_is_reproducible():
    def draw(seed):
        dev = qml.device("tinyqml.qubit", wires=2, seed=seed)

        @qml.set_shots(shots=64)
        @qml.qnode(dev)
        def circuit():
            qml.H(0)
            qml.H(1)
            return qml.sample()

        return circuit()

    assert np.array_equal(draw(7), draw(7))
    assert not np.array_equal(draw(7), draw(8))


# --------------------------------------------------------------------------- derivatives


def _grad_circuit(x, w):
    qml.RX(x, 0)
    qml.Rot(w[0], w[1], w[2], wires=1)
    qml.CNOT([0, 2])
    qml.IsingXY(w[1], [1, 2])
    qml.CRot(w[0], 0.2, w[2], [2, 0])
    qml.U3(w[2], w[0], 0.4, wires=2)
    return qml.expval(HAM), qml.expval(qml.Z(0)), qml.probs(wires=[1]), qml.var(qml.X(2))


def _torch_loss_grads(dev, x, diff_method, **kw):
    x = torch.tensor(x, dtype=F64, requires_grad=True)
    w = torch.tensor([0.3, -0.4, 0.9], dtype=F64, requires_grad=True)
    out = qml.QNode(_grad_circuit, dev, diff_method=diff_method, interface="torch", **kw)(x, w)
    loss = out[0].sum() + 2 * out[1].sum() + (out[2] * torch.tensor([0.3, -0.7], dtype=F64)).sum() - out[3].sum()
    loss.backward()
    return loss.detach().numpy(), x.grad.numpy(), w.grad.numpy()


TORCH_METHODS = [("backprop", {}), ("adjoint", {}), ("device", {}), ("adjoint", {"device_vjp": True}),
                 ("adjoint", {"device_vjp": False}), ("best", {})]


@pytest.mark.parametrize("x", [0.4, [0.1, 0.5, 1.2]], ids=["scalar", "broadcast"])
@pytest.mark.parametrize("diff_method, kw", TORCH_METHODS, ids=lambda v: str(v))
def test_torch_gradients_match_default_qubit(x, diff_method, kw):
    tq, dq = _devices()
    ref = _torch_loss_grads(dq, x, "backprop")
    for a, b in zip(_torch_loss_grads(tq, x, diff_method, **kw), ref):
        np.testing.assert_allclose(a, b, atol=1e-10)


def _autograd_grads(dev, x, diff_method, **kw):
    f = qml.QNode(_grad_circuit, dev, diff_method=diff_method, **kw)

    def cost(x, w):
        out = f(x, w)
        return (qml.math.sum(out[0]) + 2 * qml.math.sum(out[1]) + qml.math.sum(out[2] * np.array([0.3, -0.7]))
                - qml.math.sum(out[3]))

    return qml.grad(cost)(pnp.array(x, requires_grad=True), pnp.array([0.3, -0.4, 0.9], requires_grad=True))


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")  # default.qubit's autograd backprop
@pytest.mark.parametrize("x", [0.4, [0.1, 0.5, 1.2]], ids=["scalar", "broadcast"])
@pytest.mark.parametrize("diff_method, kw", [("adjoint", {}), ("adjoint", {"device_vjp": True}),
                                             ("backprop", {}), ("best", {})], ids=lambda v: str(v))
def test_autograd_gradients_match_default_qubit(x, diff_method, kw):
    tq, dq = _devices()
    for a, b in zip(_autograd_grads(tq, x, diff_method, **kw), _autograd_grads(dq, x, "backprop")):
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_broadcast_data_with_trainable_weights_is_not_expanded_under_adjoint():
    tq, dq = _devices(2)

    def circuit(x, w):
        qml.RX(x, 0)
        qml.RY(w[0], 0)
        qml.CNOT([0, 1])
        qml.RX(w[1], 1)
        return qml.expval(qml.Z(1)), qml.probs(wires=[0])

    x = torch.tensor([0.1, 0.6, 1.1, 1.9], dtype=F64)
    grads = []
    for dev, method in ((tq, "adjoint"), (dq, "backprop")):
        w = torch.tensor([0.3, -0.5], dtype=F64, requires_grad=True)
        with mock.patch.object(qml.transforms, "broadcast_expand", wraps=qml.transforms.broadcast_expand) as expand:
            e, p = qml.QNode(circuit, dev, diff_method=method)(x, w)
            (e.sum() + p[:, 1].sum()).backward()
        if dev is tq:
            assert expand.call_count == 0
        grads.append(w.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-10)


def test_torch_jacobian_and_hessian_by_backprop():
    tq, dq = _devices(1)

    def circuit(x):
        qml.RY(x[0], 0)
        qml.RX(x[1], 0)
        return qml.expval(qml.Z(0))

    x = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    for method in ("backprop", "adjoint"):
        f, g = (qml.QNode(circuit, d, diff_method=method, max_diff=1) for d in (tq, dq))
        np.testing.assert_allclose(torch.autograd.functional.jacobian(f, x), torch.autograd.functional.jacobian(g, x),
                                   atol=1e-10)
    f, g = (qml.QNode(circuit, d, diff_method="backprop", max_diff=2) for d in (tq, dq))
    np.testing.assert_allclose(torch.autograd.functional.hessian(f, x), torch.autograd.functional.hessian(g, x),
                               atol=1e-10)
    xa = pnp.array([1.0, 2.0], requires_grad=True)
    fa, ga = (qml.QNode(circuit, d, diff_method="backprop", max_diff=2) for d in (tq, dq))
    np.testing.assert_allclose(qml.jacobian(qml.grad(fa))(xa), qml.jacobian(qml.grad(ga))(xa), atol=1e-10)


def test_trainable_hamiltonian_coefficients_by_backprop():
    grads = []
    for dev in _devices(2):
        c = torch.tensor([0.5, -0.3], dtype=F64, requires_grad=True)

        @qml.qnode(dev, diff_method="backprop")
        def circuit(c, x):
            qml.RX(x, 0)
            qml.CNOT([0, 1])
            qml.RY(2 * x, 1)
            return qml.expval(qml.Hamiltonian(c, [qml.X(0) @ qml.Y(1), qml.Z(1)]))

        circuit(c, torch.tensor(0.4, dtype=F64)).backward()
        grads.append(c.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-12)


def _tapes():
    ops = [qml.RX(0.3, 0), qml.RZ(0.1, 1), qml.RY(-0.7, 1), qml.CNOT([0, 1]), qml.RY(1.1, 1), qml.RX(0.4, 0)]
    mps = [qml.expval(qml.Z(0) @ qml.X(1)), qml.expval(qml.Y(1))]
    single = qml.tape.QuantumScript(ops, mps[:1], trainable_params=[0, 2])
    multi = qml.tape.QuantumScript(ops, mps, trainable_params=[0, 1, 4])
    data = [qml.RX(np.array([0.3, 0.9, -0.2]), 0)] + ops[1:]
    batched = qml.tape.QuantumScript(data, mps, trainable_params=[1, 4])
    return single, multi, batched


def _row(tape, b):
    """Row ``b`` of the broadcast tape from :func:`_tapes`, as its own tape."""
    ops = [qml.RX(tape.operations[0].data[0][b], 0)] + tape.operations[1:]
    return qml.tape.QuantumScript(ops, tape.measurements, trainable_params=tape.trainable_params)


def test_device_api_derivatives_match_default_qubit():
    tq, dq = _devices(2)
    single, multi, batched = _tapes()
    with mock.patch.object(fusion.AdjointRun, "apply", wraps=fusion.AdjointRun.apply) as adjoint_runs:
        for tape in (single, multi):
            np.testing.assert_allclose(tq.compute_derivatives(tape), dq.compute_derivatives(tape), atol=1e-10)
    assert adjoint_runs.call_count == 2  # one forward per tape, through tinyqml's adjoint method
    dy = (np.array(0.7), np.array(-1.3))
    np.testing.assert_allclose(tq.compute_vjp(multi, dy), dq.compute_vjp(multi, dy), atol=1e-10)
    # broadcast tape: row b of each Jacobian entry is d(result[b]) / d(parameter)
    res, jac = tq.execute_and_compute_derivatives(batched)
    np.testing.assert_allclose(res, dq.execute(batched), atol=1e-12)
    for b in range(3):
        ref = dq.compute_derivatives(_row(batched, b))
        np.testing.assert_allclose([[entry[b] for entry in m] for m in jac], ref, atol=1e-10)
    # ... and its VJP sums the rows' VJPs
    cots = (np.ones(3), np.array([0.5, -1.0, 2.0]))
    ref = sum(np.array(dq.compute_vjp(_row(batched, b), (cots[0][b], cots[1][b]))) for b in range(3))
    np.testing.assert_allclose(tq.compute_vjp(batched, cots), ref, atol=1e-10)


# --------------------------------------------------------------------------- configuration and errors


def test_supported_derivatives():
    dev = qml.device("tinyqml.qubit", wires=1)
    cfg = qml.devices.ExecutionConfig
    assert dev.supports_derivatives(cfg(gradient_method="backprop"))
    assert dev.supports_derivatives(cfg(gradient_method="adjoint"))
    assert not dev.supports_derivatives(cfg(gradient_method="adjoint", derivative_order=2))
    assert not dev.supports_derivatives(cfg(gradient_method="parameter-shift"))
    shots = qml.tape.QuantumScript([qml.RX(0.1, 0)], [qml.expval(qml.Z(0))], shots=10)
    assert not dev.supports_derivatives(cfg(gradient_method="backprop"), shots)
    state = qml.tape.QuantumScript([qml.RX(0.1, 0)], [qml.state()])
    assert not dev.supports_derivatives(cfg(gradient_method="adjoint"), state)
    resolved = dev.setup_execution_config(cfg(gradient_method="device"))
    assert resolved.gradient_method == "adjoint" and resolved.use_device_gradient


def test_errors_are_named_tinyqml_and_pennylane_device_errors():
    with pytest.raises(DeviceError, match="c_dtype"):
        qml.device("tinyqml.qubit", wires=1, c_dtype="float32")
    dev = qml.device("tinyqml.qubit", wires=1)
    with pytest.raises(qml.exceptions.DeviceError, match="mcm_method"):
        dev.setup_execution_config(qml.devices.ExecutionConfig(mcm_config=qml.devices.MCMConfig("one-shot")))
    with pytest.raises(TinyQMLError, match="device option"):
        dev.setup_execution_config(qml.devices.ExecutionConfig(device_options={"max_workers": 2}))

    @qml.set_shots(shots=10)
    @qml.qnode(dev)
    def state_with_shots():
        return qml.state()

    with pytest.raises(qml.exceptions.DeviceError, match="finite shots"):
        state_with_shots()
