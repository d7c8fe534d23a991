"""Tests of tinyqml.noise.trajectories: per-row independent draws that converge to the density matrix."""

from __future__ import annotations

import pytest
import torch

import tinyqml.qml as tq
from tinyqml.noise import (
    AmplitudeDamping,
    BitFlip,
    Depolarizing,
    NoiseModel,
    PauliError,
    ThermalRelaxation,
    density_matrix,
    expval,
    probs,
)
from tinyqml.noise.channels import amplitude_damping, pauli_twirl
from tinyqml.noise.model import ChannelOp, NoisyCircuit
from tinyqml.noise.trajectories import trajectory_expval, trajectory_probs, trajectory_states
from tinyqml.qml.errors import ShapeError

CIRCUIT = (tq.CircuitBuilder(3).ry(0, tq.feature(0)).h(1).cx(0, 1).rx(2, tq.weight(0)).cx(1, 2)
           .ry(0, tq.weight(1)).build())
MODEL = (NoiseModel().add("CX", Depolarizing(0.1, 2)).add("RY", AmplitudeDamping(0.2))
         .add("H", ThermalRelaxation(50.0, 40.0, 10.0)).add("RX", PauliError((("X", 0.1), ("Y", 0.05)))))
X = torch.tensor([[0.3], [1.2]], dtype=torch.float64)
W = torch.tensor([0.4, 0.9], dtype=torch.float64)
OBS = [tq.Z(0), tq.Z(1) @ tq.Z(2), tq.X(0), tq.Y(2), tq.X(1) @ tq.Z(2)]


def test_expectations_within_4_sigma_of_density_matrix():
    exact = expval(CIRCUIT, OBS, MODEL, W, X)
    t = 8000
    tr = trajectory_expval(CIRCUIT, OBS, MODEL, W, X, n_trajectories=t, generator=torch.Generator().manual_seed(3))
    assert tr.shape == (2, t, len(OBS))
    mean, sem = tr.mean(1), tr.std(1) / t ** 0.5
    assert bool(((mean - exact).abs() <= 4 * sem + 1e-12).all()), (mean - exact) / sem


def test_average_state_converges_to_density_matrix():
    t = 6000
    psi = trajectory_states(CIRCUIT, MODEL, W, X, n_trajectories=t, generator=torch.Generator().manual_seed(5))
    rho_est = torch.einsum("bti,btj->bij", psi, psi.conj()) / t
    rho = density_matrix(CIRCUIT, MODEL, W, X)
    # each entry is a mean of bounded (|.| <= 1) terms: 4 / sqrt(t) bounds 4 sigma
    assert float((rho_est - rho).abs().max()) < 4 / t ** 0.5
    assert float((rho_est - rho).abs().max()) > 0  # genuinely sampled


def test_probs_converge_and_are_normalised():
    t = 6000
    p = trajectory_probs(CIRCUIT, MODEL, W, X, wires=[2, 0], n_trajectories=t,
                         generator=torch.Generator().manual_seed(7))
    assert torch.allclose(p.sum(-1), torch.ones(2, t, dtype=torch.float64), atol=1e-12)
    exact = probs(CIRCUIT, MODEL, W, X, wires=[2, 0])
    sem = p.std(1) / t ** 0.5
    assert bool(((p.mean(1) - exact).abs() <= 4 * sem + 1e-9).all())


def test_every_row_draws_its_own_errors():
    c = tq.CircuitBuilder(1).x(0).build()
    nm = NoiseModel().add("X", BitFlip(0.5))
    z = trajectory_expval(c, [tq.Z(0)], nm, n_trajectories=1, inputs=None,
                          generator=torch.Generator().manual_seed(0))
    assert z.shape == (1, 1, 1)
    zs = trajectory_expval(c, [tq.Z(0)], nm, n_trajectories=400, generator=torch.Generator().manual_seed(0))
    values = set(zs.flatten().round().tolist())
    assert values == {-1.0, 1.0}  # both branches occur across the trajectories of one row
    # batched inputs: rows differ in their draws, not one draw shared by the batch
    cb = tq.CircuitBuilder(1).rx(0, tq.feature(0)).x(0).build()
    xb = torch.zeros(400, 1, dtype=torch.float64)
    zb = trajectory_expval(cb, [tq.Z(0)], nm, inputs=xb, generator=torch.Generator().manual_seed(1))
    assert set(zb.flatten().round().tolist()) == {-1.0, 1.0}


def test_seeded_generator_repeats_and_differs():
    a = trajectory_expval(CIRCUIT, OBS, MODEL, W, X, n_trajectories=50, generator=torch.Generator().manual_seed(9))
    b = trajectory_expval(CIRCUIT, OBS, MODEL, W, X, n_trajectories=50, generator=torch.Generator().manual_seed(9))
    c = trajectory_expval(CIRCUIT, OBS, MODEL, W, X, n_trajectories=50, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_noiseless_trajectory_is_the_statevector():
    psi = trajectory_states(CIRCUIT, None, W, X, n_trajectories=2)
    want = tq.statevector(CIRCUIT, W, X)
    assert torch.allclose(psi[:, 0], want, atol=1e-12) and torch.allclose(psi[:, 1], want, atol=1e-12)


def test_unitary_mixture_gradients_flow_to_weights():
    nm = NoiseModel().add("CX", Depolarizing(0.2, 2))
    w = W.clone().requires_grad_(True)
    z = trajectory_expval(CIRCUIT, [tq.Z(0)], nm, w, X, n_trajectories=3, generator=torch.Generator().manual_seed(2))
    z.sum().backward()
    assert w.grad is not None and bool(torch.isfinite(w.grad).all()) and float(w.grad.abs().sum()) > 0


def test_explicit_noisy_circuit_steps():
    c = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
    noisy = NoisyCircuit(c, (0, ChannelOp(amplitude_damping(0.3), (0,)), 1))
    t = 6000
    tr = trajectory_expval(noisy, [tq.Z(0), tq.Z(1)], n_trajectories=t, generator=torch.Generator().manual_seed(4))
    exact = expval(noisy, [tq.Z(0), tq.Z(1)])
    assert bool(((tr.mean(1) - exact).abs() <= 4 * tr.std(1) / t ** 0.5 + 1e-12).all())


def test_pauli_twirl_keeps_the_pauli_transfer_diagonal():
    ch = amplitude_damping(0.2)
    tw = pauli_twirl(ch)
    assert tw.is_unitary_mixture and not ch.is_unitary_mixture
    rho = torch.tensor([[[0.5, 0.5], [0.5, 0.5]]], dtype=torch.complex128)
    from tinyqml.noise.channels import apply_channel
    a, b = apply_channel(rho, ch, [0], 1), apply_channel(rho, tw, [0], 1)
    # <X> is on the Pauli-transfer diagonal: sqrt(1 - gamma) for both channels
    assert torch.allclose((a[0, 0, 1] + a[0, 1, 0]).real, (b[0, 0, 1] + b[0, 1, 0]).real, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_trajectory_count(bad):
    with pytest.raises(ShapeError, match="n_trajectories must be a positive integer"):
        trajectory_states(CIRCUIT, MODEL, W, X, n_trajectories=bad)
