"""Circuit structure, algebra, JSON serialization and input validation."""

from __future__ import annotations

import copy
import json
import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyqml.qml as tq
from tinyqml.qml import gates as G
from tinyqml.qml.circuit import Op, Param

ALL_GATES = sorted(G.GATES)


def _unitary(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d)))
    return q * (np.diag(r) / np.abs(np.diag(r)))


def every_gate_circuit(seed: int = 0, n: int = 4) -> tq.Circuit:
    """One operation of every gate, with all parameter kinds and options."""
    rng = np.random.default_rng(seed)
    b = tq.CircuitBuilder(n)
    refs = [
        tq.const(0.37), tq.weight(0), tq.weight(1, scale=-2.0, offset=0.25), tq.feature(0),
        tq.feature([0, 1], scale=0.5, offset=-0.1, shift=math.pi / 2), tq.feature(2, shift=1.0),
        Param("const", value=1.5, scale=-1.0, offset=0.2),
    ]
    for i, name in enumerate(ALL_GATES):
        g = G.GATES[name]
        k = g.num_wires or 3
        wires = [int(w) for w in rng.permutation(n)[:k]]
        params = [refs[(i + j) % len(refs)] for j in range(g.num_params)]
        b.append(name, wires, *params, matrix=_unitary(rng, 2**k) if name == "QubitUnitary" else None)
    return b.build()


def _values(c: tq.Circuit, seed: int = 0, batch: int = 2):
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(c.n_weights, generator=gen, dtype=torch.float64) * 6 - 3
    x = torch.rand(batch, c.n_inputs, generator=gen, dtype=torch.float64) * 2 - 1 if c.n_inputs else None
    return w, x


# --------------------------------------------------------------------------- structure


def test_depth_counts_and_sizes() -> None:
    c = (tq.CircuitBuilder(4).h(0).h(1).cx(0, 1).rz(2, tq.weight(3)).ccx(1, 2, 3).ry(0, tq.feature(4))
         .swap(0, 3).h(1).build())
    # layers: {H0, H1, RZ2} {CX01} {CCX123, RY0} {SWAP03, H1}
    assert c.depth == 4
    assert c.gate_counts == {"H": 3, "CX": 1, "RZ": 1, "CCX": 1, "RY": 1, "SWAP": 1}
    assert c.two_qubit_count == 3  # CX, CCX (>= 2 wires), SWAP
    assert c.n_weights == 4  # largest weight index is 3
    assert c.n_inputs == 5
    assert len(c) == 8 and list(c) == list(c.ops)
    empty = tq.Circuit(3)
    assert (empty.depth, empty.gate_counts, empty.two_qubit_count, empty.n_weights, empty.n_inputs) == (0, {}, 0, 0, 0)
    prod = tq.CircuitBuilder(2).rx(0, tq.feature([1, 6])).build()
    assert prod.n_inputs == 7 and prod.n_weights == 0
    assert repr(c) == "Circuit(4 wires, 8 ops, depth 4)"
    assert "CircuitBuilder(2 wires, 1 ops)" == repr(tq.CircuitBuilder(2).h(0))


def test_every_builder_method() -> None:
    rng = np.random.default_rng(0)
    b = tq.CircuitBuilder(4)
    b.i(0).h(0).x(1).y(2).z(3).s(0).sdg(1).t(2).tdg(3).sx(0).sxdg(1)
    b.rx(0, 0.1).ry(1, 0.2).rz(2, 0.3).p(3, 0.4).u(0, 0.1, 0.2, 0.3).u2(1, 0.4, 0.5)
    b.cx(0, 1).cy(1, 2).cz(2, 3).ch(3, 0).swap(0, 2).iswap(1, 3).ecr(2, 0)
    b.crx(0, 1, 0.1).cry(1, 2, 0.2).crz(2, 3, 0.3).cp(3, 0, 0.4).cu(0, 2, 0.1, 0.2, 0.3)
    b.rxx(0, 1, 0.1).ryy(1, 2, 0.2).rzz(2, 3, 0.3).rzx(3, 0, 0.4)
    b.ccx(0, 1, 2).ccz(1, 2, 3).cswap(3, 0, 1).multirz([0, 1, 3], 0.5).mcx([0, 1, 2], 3).unitary([2, 1], _unitary(rng, 4))
    c = b.build()
    assert set(c.gate_counts) == set(G.GATES)
    assert c.ops[-2].wires == (0, 1, 2, 3)  # mcx: controls then target
    assert c.ops[-1].wires == (2, 1)


# --------------------------------------------------------------------------- algebra


def test_compose_and_add() -> None:
    a = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
    b = tq.CircuitBuilder(3).ry(2, tq.weight(0)).build()
    ab = a.compose(b)
    assert ab == a + b
    assert ab.n_wires == 3 and ab.ops == a.ops + b.ops
    assert (b + a).n_wires == 3
    assert tq.statevector(ab, torch.tensor([0.0], dtype=torch.float64)).shape == (1, 8)
    ext = tq.CircuitBuilder(3).extend(a).extend(b).build()
    assert ext == ab
    with pytest.raises(tq.WireError, match="out of range"):
        tq.CircuitBuilder(2).extend(b)


@pytest.mark.parametrize("seed", range(4))
def test_circuit_then_inverse_is_identity(seed: int) -> None:
    c = every_gate_circuit(seed)
    w, x = _values(c, seed, batch=3)
    for circuit in (c.compose(c.inverse()), c.inverse().compose(c)):
        psi = tq.statevector(circuit, w, x)
        assert psi.shape == (3, 16)
        basis0 = torch.zeros(16, dtype=torch.complex128)
        basis0[0] = 1
        # the inverse is exact (ISWAP's inverse is a fixed QubitUnitary): no global phase either
        assert (psi - basis0).abs().max() < 1e-10
    inv = c.inverse()
    assert len(inv) == len(c) and inv.n_weights == c.n_weights and inv.n_inputs == c.n_inputs
    assert [op.wires for op in inv.ops] == [op.wires for op in reversed(c.ops)]
    assert inv.inverse().gate_counts.keys() <= set(G.GATES)


def test_inverse_state_matches_adjoint_of_unitary() -> None:
    """<0|C^-1 ... : applying the inverse to C|0> returns |0> for random weights too."""
    rng = np.random.default_rng(1)
    b = tq.CircuitBuilder(3)
    for _ in range(20):
        q = int(rng.integers(3))
        b.u(q, tq.weight(int(rng.integers(5))), float(rng.uniform(-3, 3)), tq.weight(int(rng.integers(5)), offset=0.3))
        b.crx(q, (q + 1) % 3, tq.weight(int(rng.integers(5)), scale=-1.5))
    c = b.build()
    w = torch.tensor(rng.uniform(-3, 3, c.n_weights))
    psi = tq.statevector(c + c.inverse(), w)
    assert abs(psi[0, 0] - 1) < 1e-12


# --------------------------------------------------------------------------- JSON, hashing


@pytest.mark.parametrize("seed", range(3))
def test_json_round_trip_every_gate(seed: int) -> None:
    c = every_gate_circuit(seed)
    text = c.to_json()
    back = tq.Circuit.from_json(text)
    assert back == c
    assert hash(back) == hash(c)
    assert back.fingerprint() == c.fingerprint()
    assert back.to_json() == text
    assert {op.name for op in back.ops} == set(G.GATES)
    # the QubitUnitary matrix survives exactly
    u = [op for op in c.ops if op.name == "QubitUnitary"][0]
    ub = [op for op in back.ops if op.name == "QubitUnitary"][0]
    assert np.array_equal(u.unitary_array(), ub.unitary_array())
    # and the round-tripped circuit simulates identically
    w, x = _values(c, seed)
    assert torch.equal(tq.statevector(back, w, x), tq.statevector(c, w, x))
    d = json.loads(text)
    assert d["format"] == "tinyqml.circuit" and d["version"] == 1 and d["n_wires"] == 4


def test_json_param_fields() -> None:
    c = tq.CircuitBuilder(2).rx(0, tq.feature([0, 1], scale=2.0, offset=0.5, shift=0.25)).ry(1, 0.3).rz(0, tq.weight(2)).build()
    ops = json.loads(c.to_json())["ops"]
    assert ops[0]["params"] == [{"kind": "feature", "index": [0, 1], "scale": 2.0, "offset": 0.5, "feature_shift": 0.25}]
    assert ops[1]["params"] == [{"kind": "const", "value": 0.3}]
    assert ops[2]["params"] == [{"kind": "weight", "index": [2]}]
    assert tq.Circuit.from_json(c.to_json(indent=2)) == c


def test_fingerprint_stable_and_sensitive() -> None:
    c1 = every_gate_circuit(0)
    c2 = every_gate_circuit(0)
    assert c1 is not c2 and c1 == c2 and hash(c1) == hash(c2)
    fp = c1.fingerprint()
    assert fp == c2.fingerprint() and len(fp) == 64 and int(fp, 16) >= 0
    assert fp == c1.fingerprint()  # repeated calls, after caching compile data on the circuit
    tq.statevector(c1, *_values(c1))
    assert c1.fingerprint() == fp and c1 == c2
    # a known value pins the canonical JSON format (changing it invalidates stored fingerprints)
    bell = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
    assert bell.fingerprint() == tq.Circuit.from_json(bell.to_json()).fingerprint()
    import hashlib
    canon = json.dumps({"format": "tinyqml.circuit", "version": 1, "n_wires": 2,
                        "ops": [{"gate": "H", "wires": [0]}, {"gate": "CX", "wires": [0, 1]}]}, sort_keys=True)
    assert bell.fingerprint() == hashlib.sha256(canon.encode()).hexdigest()
    # any change changes it
    others = [
        tq.CircuitBuilder(2).h(1).cx(0, 1).build(),
        tq.CircuitBuilder(3).h(0).cx(0, 1).build(),
        tq.CircuitBuilder(2).h(0).cx(1, 0).build(),
        tq.CircuitBuilder(2).h(0).cx(0, 1).rz(0, 0.0).build(),
    ]
    fps = {bell.fingerprint()} | {o.fingerprint() for o in others}
    assert len(fps) == 5
    assert tq.CircuitBuilder(1).rx(0, 0.1).build().fingerprint() != tq.CircuitBuilder(1).rx(0, 0.2).build().fingerprint()


def test_hash_eq() -> None:
    a = tq.CircuitBuilder(2).rx(0, tq.weight(0)).cz(0, 1).build()
    b = tq.CircuitBuilder(2).rx(0, tq.weight(0)).cz(0, 1).build()
    c = tq.CircuitBuilder(2).rx(0, tq.weight(1)).cz(0, 1).build()
    d = tq.CircuitBuilder(2).rx(0, tq.weight(0, scale=2.0)).cz(0, 1).build()
    assert a == b and hash(a) == hash(b)
    assert a != c and a != d
    assert len({a, b, c, d}) == 3
    assert Op("cnot", (0, 1)) == Op(G.CX, (0, 1))  # gate names resolve to the same Gate
    rng = np.random.default_rng(0)
    u = _unitary(rng, 2)
    assert Op(G.QubitUnitary, (0,), (), u) == Op(G.QubitUnitary, (0,), (), u.copy())
    assert Op(G.QubitUnitary, (0,), (), u) != Op(G.QubitUnitary, (0,), (), u @ np.diag([1, 1j]))


# --------------------------------------------------------------------------- validation


def test_copy_and_pickle_keep_registry_gates() -> None:
    """Gates are singletons compared by identity: copies and pickles must map back to them."""
    c = every_gate_circuit(1)
    w, x = _values(c)
    before = tq.statevector(c, w, x)  # caches compiled data on the circuit
    for clone in (copy.deepcopy(c), pickle.loads(pickle.dumps(c)), copy.copy(c)):
        assert clone == c and hash(clone) == hash(c)
        assert all(op.gate is G.GATES[op.name] for op in clone.ops)
        assert torch.equal(tq.statevector(clone, w, x), before)
    layer = tq.QuantumLayer(c, [tq.Z(0)])
    assert copy.deepcopy(layer).circuit == c


def test_wire_errors() -> None:
    with pytest.raises(tq.WireError, match=r"wire 5 out of range for a 3-wire circuit"):
        tq.CircuitBuilder(3).cx(0, 5)
    with pytest.raises(tq.WireError, match=r"out of range"):
        tq.Circuit(2, (Op(G.H, (2,)),))
    with pytest.raises(tq.WireError, match="duplicated wire"):
        tq.CircuitBuilder(3).cx(1, 1)
    with pytest.raises(tq.WireError, match="duplicated wire"):
        tq.CircuitBuilder(3).multirz([0, 2, 0], 0.1)
    with pytest.raises(tq.WireError, match="negative wire"):
        tq.CircuitBuilder(3).h(-1)
    with pytest.raises(tq.WireError, match="CX acts on 2 wires, got 3"):
        tq.CircuitBuilder(3).append("CX", (0, 1, 2))
    with pytest.raises(tq.WireError, match="MCX acts on at least 2 wires, got 1"):
        tq.CircuitBuilder(3).append("MCX", (0,))
    with pytest.raises(tq.WireError, match="wires must be integers"):
        tq.CircuitBuilder(3).append("H", (0.5,))
    with pytest.raises(tq.WireError, match="n_wires >= 1"):
        tq.Circuit(0)
    with pytest.raises(tq.WireError, match="n_wires >= 1"):
        tq.CircuitBuilder(-2)
    assert issubclass(tq.WireError, ValueError)


def test_parameter_errors() -> None:
    with pytest.raises(tq.ParameterError, match="RX takes 1 parameters, got 0"):
        tq.CircuitBuilder(1).append("RX", 0)
    with pytest.raises(tq.ParameterError, match="U takes 3 parameters, got 2"):
        tq.CircuitBuilder(1).append("U", 0, 0.1, 0.2)
    with pytest.raises(tq.ParameterError, match="H takes 0 parameters, got 1"):
        tq.CircuitBuilder(1).append("H", 0, 0.1)
    with pytest.raises(tq.ParameterError, match="Param references or numbers, got str"):
        tq.CircuitBuilder(1).rx(0, "0.1")
    with pytest.raises(tq.ParameterError, match="got bool"):
        tq.CircuitBuilder(1).rx(0, True)
    with pytest.raises(tq.ParameterError, match="kind must be"):
        Param("angle")
    with pytest.raises(tq.ParameterError, match="exactly one index"):
        Param("weight", index=(0, 1))
    with pytest.raises(tq.ParameterError, match="at least one input index"):
        Param("feature")
    with pytest.raises(tq.ParameterError, match="non-negative integers"):
        tq.weight(-1)
    with pytest.raises(tq.ParameterError, match=r"Param.scale must be finite"):
        tq.weight(0, scale=float("nan"))
    with pytest.raises(tq.ParameterError, match=r"Param.value must be finite"):
        tq.const(float("inf"))
    with pytest.raises(tq.ParameterError, match="only QubitUnitary takes a matrix"):
        Op(G.H, (0,), (), ((1, 0), (0, 1)))


def test_not_unitary_errors() -> None:
    with pytest.raises(tq.NotUnitaryError, match=r"not unitary: max \|U\^dagger U - I\|"):
        tq.CircuitBuilder(2).unitary([0], [[1, 1], [0, 1]])
    with pytest.raises(tq.NotUnitaryError, match=r"on 2 wires needs a 4x4 matrix, got shape \(2, 2\)"):
        tq.CircuitBuilder(2).unitary([0, 1], np.eye(2))
    with pytest.raises(tq.NotUnitaryError, match="NaN or inf"):
        tq.CircuitBuilder(1).unitary(0, [[np.nan, 0], [0, 1]])
    with pytest.raises(tq.NotUnitaryError, match="needs a matrix"):
        tq.CircuitBuilder(1).append("QubitUnitary", 0)
    # a unitary up to 1e-8 is accepted
    tq.CircuitBuilder(1).unitary(0, np.eye(2) * (1 + 1e-10))


def test_unknown_gate_name() -> None:
    with pytest.raises(tq.UnknownGateError, match="unknown gate 'FOO'"):
        tq.CircuitBuilder(1).append("FOO", 0)
    with pytest.raises(tq.UnknownGateError, match="unknown gate 'NOPE'"):
        tq.Circuit.from_json(json.dumps({"format": "tinyqml.circuit", "version": 1, "n_wires": 1,
                                         "ops": [{"gate": "NOPE", "wires": [0]}]}))


def _doc(**kw):
    d = {"format": "tinyqml.circuit", "version": 1, "n_wires": 2, "ops": [{"gate": "H", "wires": [0]}]}
    d.update(kw)
    return json.dumps(d)


@pytest.mark.parametrize(("text", "fragment"), [
    ("{not json", "invalid JSON at line 1"),
    ("", "invalid JSON"),
    ("[1, 2]", "not a tinyqml circuit"),
    ('{"format": "qasm", "version": 1, "n_wires": 1, "ops": []}', "not a tinyqml circuit"),
    (_doc(version=2), "unsupported circuit format version 2"),
    (_doc(ops={"gate": "H"}), "'ops' must be a list"),
    (_doc(ops=[5]), "an operation needs 'gate' and 'wires'"),
    (_doc(ops=[{"gate": "H"}]), "an operation needs 'gate' and 'wires'"),
    (_doc(ops=[{"gate": "RX", "wires": [0], "params": [{"kind": "weight"}]}]), "bad parameter entry"),
    (_doc(ops=[{"gate": "RX", "wires": [0], "params": [{"value": 1.0}]}]), "bad parameter entry"),
    (_doc(ops=[{"gate": "RX", "wires": [0], "params": [{"kind": "const", "value": "abc"}]}]), "bad parameter entry"),
    (_doc(ops=[{"gate": "RX", "wires": [0], "params": [7]}]), "bad parameter entry"),
    (_doc(ops=[{"gate": "QubitUnitary", "wires": [0], "matrix": [[1, 0], [0, 1]]}]), "bad matrix"),
    (_doc(ops=[{"gate": "H", "wires": 0}]), "wires"),
    (_doc(ops=[{"gate": "RX", "wires": [0], "params": 5}]), "params"),
    (json.dumps({"format": "tinyqml.circuit", "version": 1, "ops": []}), "n_wires"),
])
def test_malformed_json(text: str, fragment: str) -> None:
    with pytest.raises(tq.CircuitFormatError) as info:
        tq.Circuit.from_json(text)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_json_semantic_errors_use_the_named_errors() -> None:
    with pytest.raises(tq.WireError, match="out of range"):
        tq.Circuit.from_json(_doc(ops=[{"gate": "H", "wires": [4]}]))
    with pytest.raises(tq.ParameterError, match="takes 1 parameters"):
        tq.Circuit.from_json(_doc(ops=[{"gate": "RX", "wires": [0]}]))
    with pytest.raises(tq.NotUnitaryError, match="not unitary"):
        tq.Circuit.from_json(_doc(ops=[{"gate": "QubitUnitary", "wires": [0], "matrix": [[[1, 0], [1, 0]], [[0, 0], [1, 0]]]}]))


def test_circuit_rejects_non_ops() -> None:
    with pytest.raises(tq.CircuitFormatError, match="must be Op, got tuple"):
        tq.Circuit(1, (("H", (0,)),))


# --------------------------------------------------------------------------- properties (hypothesis)

#: angles and parameter values: ordinary, large, and the extremes of float64 (-0.0 too)
ANGLES = st.one_of(
    st.floats(-2 * math.pi, 2 * math.pi),
    st.floats(-1e6, 1e6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, math.pi, -math.pi, 2 * math.pi, 4 * math.pi, 1e15, 1e300, 5e-324]),
)
#: angles for the inverse property, where every gate's matrix is evaluated at a large angle: up to 1e8
MODERATE = st.one_of(st.floats(-2 * math.pi, 2 * math.pi), st.floats(-1e8, 1e8), st.sampled_from([0.0, math.pi]))
SMALL = st.floats(-3.0, 3.0)


def _seeded_unitary(seed: int, d: int) -> np.ndarray:
    return _unitary(np.random.default_rng(seed), d)


@st.composite
def params(draw, angles=ANGLES) -> Param:
    """A parameter reference of any kind; numbers sometimes arrive as numpy scalars."""
    num = draw(st.sampled_from([float, np.float64, np.float32]))
    integer = draw(st.sampled_from([int, np.int64]))
    kind = draw(st.sampled_from(["const", "scaled_const", "weight", "feature", "product"]))
    if kind == "const":
        return tq.const(draw(angles))
    if kind == "scaled_const":
        v = draw(angles) if num is not np.float32 else draw(SMALL)
        return Param("const", value=num(v), scale=num(draw(SMALL)), offset=num(draw(SMALL)))
    if kind == "weight":
        return Param("weight", index=(integer(draw(st.integers(0, 3))),), scale=draw(st.one_of(SMALL, angles)),
                     offset=draw(angles))
    k = 1 if kind == "feature" else 2
    idx = tuple(integer(i) for i in draw(st.lists(st.integers(0, 2), min_size=k, max_size=k)))
    return Param("feature", index=idx, scale=draw(st.one_of(SMALL, angles)), offset=draw(angles),
                 feature_shift=draw(SMALL))


@st.composite
def circuits(draw, max_wires: int = 5, max_ops: int = 10, angles=ANGLES) -> tq.Circuit:
    """A random circuit over every gate of the registry that fits on its wires."""
    n = draw(st.integers(1, max_wires))
    names = [g for g in ALL_GATES if (G.GATES[g].num_wires or G.GATES[g].min_wires) <= n]
    b = tq.CircuitBuilder(draw(st.sampled_from([int, np.int64]))(n))
    for _ in range(draw(st.integers(0, max_ops))):
        name = draw(st.sampled_from(names))
        g = G.GATES[name]
        k = g.num_wires or draw(st.integers(g.min_wires, n))
        wires = draw(st.permutations(range(n)))[:k]
        ps = [draw(params(angles)) for _ in range(g.num_params)]
        matrix = _seeded_unitary(draw(st.integers(0, 2**32 - 1)), 2**k) if g is G.QubitUnitary else None
        b.append(name, wires, *ps, matrix=matrix)
    return b.build()


@st.composite
def values(draw, c: tq.Circuit, rows: int | None = None):
    """Weights ``[n_weights]`` and inputs ``[rows, n_inputs]`` (``None`` without features), all in [-3, 3]."""
    w = torch.tensor(draw(st.lists(SMALL, min_size=c.n_weights, max_size=c.n_weights)), dtype=torch.float64)
    if not c.n_inputs:
        return w, None
    rows = rows or draw(st.integers(1, 3))
    x = draw(st.lists(st.lists(SMALL, min_size=c.n_inputs, max_size=c.n_inputs), min_size=rows, max_size=rows))
    return w, torch.tensor(x, dtype=torch.float64)


def _angle_sum(c: tq.Circuit, w: torch.Tensor, x: torch.Tensor | None) -> float:
    """An upper bound of sum |angle| over the circuit's parameter slots (for rounding tolerances)."""
    xs = float(x.abs().max()) if x is not None and x.numel() else 0.0
    ws = float(w.abs().max()) if w.numel() else 0.0
    total = 0.0
    for op in c.ops:
        for p in op.params:
            base = {"const": abs(p.value), "weight": ws}.get(p.kind, (xs + abs(p.feature_shift)) ** len(p.index))
            total += abs(p.scale) * base + abs(p.offset)
    return total


@settings(derandomize=True, deadline=None, max_examples=150)
@given(st.data())
def test_circuit_then_inverse_is_identity_on_random_states(data) -> None:
    """(prep + C + C^-1)|0> = prep|0> and (prep + C^-1 + C)|0> = prep|0> for random circuits over every gate,
    with weights and batched features left symbolic in the inverse (no global phase either)."""
    c = data.draw(circuits(angles=MODERATE))
    n = c.n_wires
    prep = tq.CircuitBuilder(n).unitary(list(range(n)), _seeded_unitary(data.draw(st.integers(0, 2**32 - 1)), 2**n))
    prep = prep.build()
    w, x = data.draw(values(c))
    inv = c.inverse()
    assert len(inv) == len(c) and inv.n_wires == n
    assert [op.wires for op in inv.ops] == [op.wires for op in reversed(c.ops)]
    assert inv.n_weights == c.n_weights and inv.n_inputs == c.n_inputs  # the same references
    target = tq.statevector(prep)
    tol = 1e-10 + 1e-15 * _angle_sum(c, w, x)
    for circuit in (prep + c + inv, prep + inv + c):
        psi = tq.statevector(circuit, w if c.n_weights else None, x)
        assert (psi - target).abs().max() <= tol, f"{c.to_json()}"
    # and the inverse of the inverse acts as the circuit
    if c.ops:
        a = tq.statevector(prep + c, w if c.n_weights else None, x)
        b = tq.statevector(prep + inv.inverse(), w if c.n_weights else None, x)
        assert (a - b).abs().max() <= tol


def _basis_unitary(c: tq.Circuit, w: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    """C applied to every basis state, in one batch: wire q of row k starts as RX(pi * bit_q(k))|0>."""
    n, ni = c.n_wires, c.n_inputs
    b = tq.CircuitBuilder(n)
    for q in range(n):
        b.rx(q, tq.feature(ni + q, scale=math.pi))
    bits = torch.tensor([[(k >> (n - 1 - q)) & 1 for q in range(n)] for k in range(2**n)], dtype=torch.float64)
    row = torch.zeros(1, ni, dtype=torch.float64) if x is None else x[:1]
    inputs = torch.cat([row.expand(2**n, -1), bits], 1)
    return tq.statevector(b.build() + c, w if c.n_weights else None, inputs)


@settings(derandomize=True, deadline=None, max_examples=150)
@given(st.data())
def test_json_round_trip_preserves_circuit_and_unitary(data) -> None:
    c = data.draw(circuits())
    text = c.to_json()
    back = tq.Circuit.from_json(text)
    assert back == c and hash(back) == hash(c)
    assert back.to_json() == text and back.fingerprint() == c.fingerprint()
    assert type(back.n_wires) is int and all(type(i) is int for op in back.ops for p in op.params for i in p.index)
    w, x = data.draw(values(c, rows=1))
    try:
        u = _basis_unitary(c, w, x)
    except tq.NonFiniteError:  # scale * value of a huge constant overflows float64: refused both times
        with pytest.raises(tq.NonFiniteError):
            _basis_unitary(back, w, x)
        return
    assert torch.equal(_basis_unitary(back, w, x), u)
    assert ((u.abs() ** 2).sum(-1) - 1).abs().max() < 1e-10


def test_numpy_numbers_serialize() -> None:
    """Counterexamples of the round-trip property: numpy wire counts, indices and values made
    valid circuits whose to_json() raised TypeError."""
    c = (tq.CircuitBuilder(np.int64(2)).rx(0, Param("weight", index=(np.int64(1),)))
         .ry(1, Param("const", value=np.float32(0.5), scale=np.float64(2.0))).build())
    back = tq.Circuit.from_json(c.to_json())
    assert back == c and back.n_wires == 2 and type(back.n_wires) is int
    assert back.ops[0].params[0].index == (1,) and back.ops[1].params[0].value == 0.5
    assert len(c.fingerprint()) == 64
