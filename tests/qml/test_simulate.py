"""Property tests of tinyqml.qml.simulate: states stay normalized for any circuit, angle and batch.

Hypothesis draws circuits over the whole gate registry (1..5 wires, every parameter kind,
angles from tiny to the largest finite float), weights and batches of inputs, and checks
that ``statevector`` returns rows of norm 1 — or, when a resolved angle does not fit the
simulation's real dtype, refuses it with :class:`~tinyqml.qml.errors.NonFiniteError`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinyqml.qml as tq
from tinyqml.qml import gates as G
from tinyqml.qml.errors import NonFiniteError
from testkit import load_test_module

ALL_GATES = sorted(G.GATES)
F32_MAX = float(np.finfo(np.float32).max)

#: angles and parameter values: ordinary ones, large ones, and the extremes of float64
ANGLES = st.one_of(
    st.floats(-2 * math.pi, 2 * math.pi),
    st.floats(-1e6, 1e6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, math.pi, -math.pi, 2 * math.pi, 4 * math.pi, 1e15, -1e30, 3e38, 1e300]),
)
SMALL = st.floats(-3.0, 3.0)


#: tests/qml/test_circuit.py as a module: one circuit strategy (every gate, every parameter kind) for both
_STRATEGIES = load_test_module(Path(__file__).with_name("test_circuit.py"), "tinyqml_tests_circuit_strategies")


def circuits(max_wires: int = 5, max_ops: int = 10, angles=ANGLES):
    """Random circuits over the whole gate registry, angles drawn from this module's ``ANGLES``."""
    return _STRATEGIES.circuits(max_wires=max_wires, max_ops=max_ops, angles=angles)


@st.composite
def values(draw, c: tq.Circuit, big: bool = True):
    """Weights ``[n_weights]`` and a batch of inputs ``[B, n_inputs]`` (``None`` without features)."""
    v = st.one_of(SMALL, ANGLES) if big else SMALL
    w = torch.tensor(draw(st.lists(v, min_size=c.n_weights, max_size=c.n_weights)), dtype=torch.float64)
    x = None
    if c.n_inputs:
        rows = draw(st.integers(1, 4))
        x = torch.tensor(draw(st.lists(st.lists(v, min_size=c.n_inputs, max_size=c.n_inputs),
                                       min_size=rows, max_size=rows)), dtype=torch.float64)
    return w, x


def angles64(c: tq.Circuit, w: torch.Tensor, x: torch.Tensor | None) -> np.ndarray:
    """Every resolved angle in float64, restated from Param's docstring (inf where it overflows)."""
    rows = 1 if x is None else x.shape[0]
    out = []
    with np.errstate(all="ignore"):
        for op in c.ops:
            for p in op.params:
                if p.kind == "const":
                    base = np.full(rows, p.value)
                elif p.kind == "weight":
                    base = np.full(rows, float(w[p.index[0]]))
                else:
                    base = np.prod([x.numpy()[:, i] + p.feature_shift for i in p.index], axis=0)
                out.append(np.float64(p.scale) * base + np.float64(p.offset))
    return np.stack(out, -1) if out else np.zeros((rows, 0))


def _check_normalized(c, w, x, dtype, tol, diff_method):
    limit = F32_MAX if dtype == torch.complex64 else float(np.finfo(np.float64).max)
    # the weights and inputs that parameters read are cast to the real dtype before the angles are formed
    used_w = sorted({p.index[0] for op in c.ops for p in op.params if p.kind == "weight"})
    used_x = sorted({i for op in c.ops for p in op.params if p.kind == "feature" for i in p.index})
    # and a product of features is formed before its scale is applied (inf * 0 is NaN: refused too)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow here is what the check looks for
        bases = [np.prod([x.numpy()[:, i] + p.feature_shift for i in p.index], axis=0) * np.array([1.0, p.scale])[:, None]
                 for op in c.ops for p in op.params if p.kind == "feature"]
    products = [np.abs(b) for b in bases]
    # a weight's or feature's scale, offset and shift are cast to the real dtype too (a scale past float32's
    # range is inf, and inf * 0 NaN); a constant's angle is folded in float64 first (it is in angles64)
    products.append(np.abs([v for op in c.ops for p in op.params if p.kind != "const"
                            for v in (p.scale, p.offset, p.feature_shift)], dtype=np.float64))
    a = np.concatenate([np.abs(angles64(c, w, x)).ravel(), w[used_w].abs().numpy(),
                        np.zeros(0) if x is None else x[:, used_x].abs().numpy().ravel()] +
                       [v.ravel() for v in products])
    big = float(a.max(initial=0.0)) if np.all(np.isfinite(a)) else math.inf
    assume(not 0.5 * limit < big < 2 * limit)  # float32 rounding of the last step decides there
    if big > limit:
        with pytest.raises(NonFiniteError, match="angle"):
            tq.statevector(c, w, x, dtype=dtype, diff_method=diff_method)
        return
    psi = tq.statevector(c, w, x, dtype=dtype, diff_method=diff_method)
    rows = 1 if x is None or not any(p.kind == "feature" for op in c.ops for p in op.params) else x.shape[0]
    assert psi.shape == (rows, 2**c.n_wires) and psi.dtype == dtype
    norms = psi.abs().double().pow(2).sum(-1)
    assert torch.isfinite(norms).all(), f"non-finite state for {c.to_json()}"
    assert (norms - 1).abs().max() <= tol, f"norms {norms.tolist()} for {c.to_json()}"


@settings(derandomize=True, deadline=None, max_examples=250)
@given(st.data(), st.sampled_from(["backprop", "adjoint"]))
def test_statevector_is_normalized_complex128(data, diff_method) -> None:
    c = data.draw(circuits())
    w, x = data.draw(values(c))
    _check_normalized(c, w, x, torch.complex128, 1e-10, diff_method)


@settings(derandomize=True, deadline=None, max_examples=150)
@given(st.data())
def test_statevector_is_normalized_complex64(data) -> None:
    c = data.draw(circuits())
    w, x = data.draw(values(c))
    _check_normalized(c, w, x, torch.complex64, 1e-5, "backprop")


def test_angles_beyond_the_real_dtype_are_refused() -> None:
    """Counterexamples found by the properties: these gave NaN states silently."""
    c = tq.CircuitBuilder(1).rx(0, 1e300).build()
    with pytest.raises(NonFiniteError, match="float32"):
        tq.statevector(c, dtype=torch.complex64)
    assert abs(float(tq.statevector(c).abs().pow(2).sum()) - 1) < 1e-12  # float64 holds 1e300
    big_weight = tq.CircuitBuilder(1).ry(0, tq.weight(0, scale=1e30)).build()
    with pytest.raises(NonFiniteError, match="angle"):
        tq.statevector(big_weight, torch.tensor([1e10]), dtype=torch.complex64)
    product = tq.CircuitBuilder(1).rz(0, tq.feature([0, 1])).build()
    with pytest.raises(NonFiniteError, match="angle"):
        tq.statevector(product, inputs=torch.tensor([[1.0, 2.0], [1e200, 1e200]], dtype=torch.float64))
