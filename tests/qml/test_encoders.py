"""Encoders: angle, IQP and amplitude encoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tinyqml.qml as tq
from tinyqml.qml import encoders as E
from tinyqml.qml import measure as M
from tinyqml.qml.errors import EncodingError, NonFiniteError, ShapeError, TinyQMLError, WireError

C128 = torch.complex128


def _ket0(n: int) -> torch.Tensor:
    psi = torch.zeros(2**n, dtype=C128)
    psi[0] = 1
    return psi


def _single(m: torch.Tensor, wire: int, n: int) -> torch.Tensor:
    """The 2**n x 2**n matrix of a one-wire gate (wire 0 most significant)."""
    out = torch.ones(1, 1, dtype=C128)
    for w in range(n):
        out = torch.kron(out, m if w == wire else torch.eye(2, dtype=C128))
    return out


def _rot(axis: str, a: float) -> torch.Tensor:
    c, s = math.cos(a / 2), math.sin(a / 2)
    return {
        "X": torch.tensor([[c, -1j * s], [-1j * s, c]], dtype=C128),
        "Y": torch.tensor([[c, -s], [s, c]], dtype=C128),
        "Z": torch.tensor([[complex(c, -s), 0], [0, complex(c, s)]], dtype=C128),
    }[axis]


# --------------------------------------------------------------------------- angle


@pytest.mark.parametrize("axis", ["X", "Y", "Z", "rx", E.Rotation.Y])
def test_angle_matches_explicit_rotations(axis) -> None:
    n = 3
    x = torch.tensor([[0.3, -1.2, 2.5], [1.0, 0.0, -0.7]], dtype=torch.float64)
    c = E.angle(n, rotation=axis)
    letter = E.Rotation.parse(axis).name
    assert c.gate_counts == {f"R{letter}": 3} and c.n_inputs == 3 and c.n_weights == 0
    psi = tq.statevector(c, inputs=x)
    for b in range(2):
        ref = _ket0(n)
        if letter == "Z":  # RZ on |0> is a phase; start from |+++> to make the test meaningful
            c2 = tq.CircuitBuilder(n).h(0).h(1).h(2).build() + c
            psi_b = tq.statevector(c2, inputs=x)[b]
            ref = torch.full((2**n,), 2 ** (-n / 2), dtype=C128)
        else:
            psi_b = psi[b]
        for w in range(n):
            ref = _single(_rot(letter, float(x[b, w])), w, n) @ ref
        torch.testing.assert_close(psi_b, ref, atol=1e-12, rtol=0)


def test_angle_wires_and_scale() -> None:
    c = E.angle(4, "Y", wires=[3, 1], scale=0.5)
    assert [op.wires for op in c.ops] == [(3,), (1,)]
    assert [op.params[0].index for op in c.ops] == [(0,), (1,)]
    assert c.n_inputs == 2 and c.n_wires == 4
    e = tq.expval(c, [tq.Z(3), tq.Z(1)], inputs=torch.tensor([[math.pi, 2 * math.pi]], dtype=torch.float64))
    torch.testing.assert_close(e, torch.tensor([[0.0, -1.0]], dtype=torch.float64), atol=1e-12, rtol=0)


def test_angle_bad_axis_lists_valid_ones() -> None:
    with pytest.raises(EncodingError, match="X, Y, Z"):
        E.angle(2, rotation="W")
    with pytest.raises(WireError):
        E.angle(2, wires=[0, 2])
    with pytest.raises(WireError):
        E.angle(2, wires=[1, 1])


# --------------------------------------------------------------------------- IQP


def test_iqp_structure_and_pairs() -> None:
    c = E.iqp(3)
    assert [op.name for op in c.ops] == ["H", "RZ"] * 3 + ["MultiRZ"] * 3
    assert [op.params[0].index for op in c.ops if op.name == "MultiRZ"] == [(0, 1), (0, 2), (1, 2)]
    assert E.iqp_pairs(4, "linear") == ((0, 1), (1, 2), (2, 3))
    assert E.iqp_pairs(2, "ring") == ((0, 1),)
    assert E.iqp(3, pairs=[(2, 0)]).ops[-1].params[0].index == (2, 0)
    with pytest.raises(EncodingError, match="all, linear, ring"):
        E.iqp(3, pairs="star")
    with pytest.raises(WireError):
        E.iqp(3, pairs=[(0, 0)])
    with pytest.raises(WireError):
        E.iqp(3, pairs=[(0, 5)])
    with pytest.raises(EncodingError):
        E.iqp(3, n_repeats=0)


@pytest.mark.parametrize("n_repeats, pattern", [(1, None), (2, None), (2, [(1, 2), (0, 2), (1, 0)])])
def test_iqp_matches_pennylane(n_repeats, pattern) -> None:
    qml = pytest.importorskip("pennylane")
    n = 3
    x = torch.tensor(np.random.default_rng(0).uniform(-1.5, 1.5, (4, n)), dtype=torch.float64)
    dev = qml.device("default.qubit", wires=n)

    @qml.qnode(dev, interface="torch")
    def circuit(feats):
        qml.IQPEmbedding(feats, wires=range(n), n_repeats=n_repeats, pattern=pattern)
        return qml.state()

    c = E.iqp(n, n_repeats=n_repeats, pairs="all" if pattern is None else pattern)
    torch.testing.assert_close(tq.statevector(c, inputs=x), circuit(x), atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- amplitude


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_amplitude_real_random_lengths(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    circ = E.amplitude_circuit(n)
    assert circ.n_inputs == E.amplitude_n_features(n) == 2**n - 1
    assert circ.gate_counts == ({"RY": 1} if n == 1 else {"RY": 2**n - 1, "CX": 2**n - 2})
    for length in range(1, 2**n + 1):
        x = torch.randn(3, length, generator=gen, dtype=torch.float64)
        x[1, 0] = -abs(x[1, 0])  # make sure negative leading amplitudes occur
        c, feats = E.amplitude(x, n)
        assert c == circ and feats.shape == (3, 2**n - 1)
        psi = tq.statevector(c, inputs=feats)
        ref = torch.zeros(3, 2**n, dtype=torch.float64)
        ref[:, :length] = x / x.norm(dim=1, keepdim=True)
        torch.testing.assert_close(psi, ref.to(C128), atol=1e-12, rtol=0)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_amplitude_complex_exact_including_global_phase(n: int) -> None:
    gen = torch.Generator().manual_seed(10 + n)
    for length in (1, 2**n - 1, 2**n):
        x = torch.randn(4, length, generator=gen, dtype=C128)
        c, feats = E.amplitude(x, n)
        assert feats.shape == (4, E.amplitude_n_features(n, phases=True)) and feats.dtype == torch.float64
        psi = tq.statevector(c, inputs=feats)
        ref = torch.zeros(4, 2**n, dtype=C128)
        ref[:, :length] = x / x.abs().square().sum(1, keepdim=True).sqrt()
        torch.testing.assert_close(psi, ref, atol=1e-12, rtol=0)


def test_amplitude_zero_entries_and_sign_patterns() -> None:
    rows = [[0.0, 0.0, 0.0, -1.0], [0.0, -2.0, 0.0, 0.0], [-1.0, -1.0, -1.0, -1.0], [0.0, 0.0, 3.0, -4.0],
            [1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 1.0]]
    x = torch.tensor(rows, dtype=torch.float64)
    c, feats = E.amplitude(x, 2)
    ref = (x / x.norm(dim=1, keepdim=True)).to(C128)
    torch.testing.assert_close(tq.statevector(c, inputs=feats), ref, atol=1e-12, rtol=0)


def test_amplitude_padding_and_normalize_flag() -> None:
    c, feats = E.amplitude([1.0, 1.0, 1.0], 2, pad_with=1.0)
    torch.testing.assert_close(tq.statevector(c, inputs=feats), torch.full((1, 4), 0.5, dtype=C128))
    unit = torch.tensor([[0.6, 0.0, -0.8]], dtype=torch.float64)
    c, feats = E.amplitude(unit, 2, normalize=False)
    torch.testing.assert_close(tq.statevector(c, inputs=feats)[0, :3].real, unit[0], atol=1e-12, rtol=0)
    with pytest.raises(EncodingError, match="normalize=True"):
        E.amplitude([[1.0, 1.0]], 1, normalize=False)


def test_amplitude_single_precision_and_list_input() -> None:
    x32 = torch.tensor([[1.0, 2.0, -2.0, 4.0]])
    assert E.amplitude_features(x32, 2).dtype == torch.float32
    assert E.amplitude_state(x32, 2).dtype == torch.complex64
    assert E.amplitude_features([[1, 2, -2, 4]], 2).dtype == torch.float64
    c, feats = E.amplitude(x32, 2)
    psi = tq.statevector(c, inputs=feats, dtype=torch.complex64)
    torch.testing.assert_close(psi.real, x32 / 5, atol=1e-6, rtol=0)


def test_amplitude_errors() -> None:
    with pytest.raises(EncodingError, match="all-zero vector \\(row 1\\)"):
        E.amplitude([[1.0, 0.0], [0.0, 0.0]], 1)
    with pytest.raises(EncodingError, match="all-zero"):
        E.amplitude_features(torch.zeros(3), 2)
    with pytest.raises(EncodingError, match="5 features do not fit in the 4 amplitudes"):
        E.amplitude(torch.ones(2, 5), 2)
    with pytest.raises(NonFiniteError):
        E.amplitude([[1.0, float("nan")]], 1)
    with pytest.raises(NonFiniteError):
        E.amplitude([[1.0, float("inf")]], 1)
    with pytest.raises(ShapeError):
        E.amplitude(torch.ones(2, 2, 2), 2)
    with pytest.raises(WireError):
        E.amplitude([1.0], 0)
    assert issubclass(EncodingError, TinyQMLError) and issubclass(EncodingError, ValueError)


def test_amplitude_gradients_reach_inputs() -> None:
    """d<obs>/dx through the state-preparation angles equals autograd through the exact state."""
    n = 3
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x[0, 1] = 0.0  # an exact zero must not produce NaN gradients
    obs = [tq.Z(0) @ tq.X(2), tq.Y(1) @ tq.Y(2) * 0.5 + tq.Z(1)]
    coef = torch.tensor([[1.0, -0.5]], dtype=torch.float64)

    xa = x.clone().requires_grad_(True)
    c, feats = E.amplitude(xa, n)
    (tq.expval(c, obs, inputs=feats, diff_method="backprop") * coef).sum().backward()

    xb = x.clone().requires_grad_(True)
    psi = E.amplitude_state(xb, n)
    (M.expval(psi, obs, n) * coef).sum().backward()
    assert torch.isfinite(xa.grad).all()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-10, rtol=0)


def test_amplitude_composes_with_a_template() -> None:
    from tinyqml.qml import templates as T

    c_enc, feats = E.amplitude(torch.rand(5, 8, dtype=torch.float64) + 0.1, 3)
    model = T.classifier_circuit(c_enc, T.hardware_efficient(3, 2))
    w = torch.rand(model.n_weights, dtype=torch.float64)
    e = tq.expval(model, [tq.Z(0), tq.Z(2)], weights=w, inputs=feats)
    assert e.shape == (5, 2) and torch.isfinite(e).all()
