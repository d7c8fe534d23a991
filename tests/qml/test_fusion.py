"""The fused block program equals gate-by-gate simulation; all diff methods agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tinyqml.qml as tq
from tinyqml.qml import fusion as F
from tinyqml.qml import simulate as S
from tinyqml.qml.circuit import Param
from tinyqml.qml.params import resolve

DT = torch.complex128
METHODS = ("reference", "backprop", "adjoint", "parameter-shift")
ALL_GATES = sorted(tq.GATES)


# --------------------------------------------------------------------------- helpers


def _unitary(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d)))
    return q * (np.diag(r) / np.abs(np.diag(r)))


def _param(rng: np.random.Generator, kinds: str = "cwf") -> Param:
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "c":
        return tq.const(float(rng.uniform(-4, 4)))
    if kind == "w":
        return tq.weight(int(rng.integers(4)), scale=float(rng.choice([1.0, -0.7, 1.9])), offset=float(rng.choice([0, 0.4])))
    idx = int(rng.integers(3)) if rng.random() < 0.7 else [int(i) for i in rng.integers(0, 3, 2)]
    return tq.feature(idx, scale=float(rng.choice([1.0, 0.8])), shift=float(rng.choice([0.0, 0.5])))


def random_circuit(rng: np.random.Generator, n: int, n_ops: int, gates: list[str] | None = None,
                   kinds: str = "cwf", p_single: float = 0.5) -> tq.Circuit:
    """Random circuit over ``gates`` (default: the whole set); ``p_single`` biases to 1-wire gates."""
    pool = gates or ALL_GATES
    singles = [g for g in pool if tq.GATES[g].num_wires == 1]
    multis = [g for g in pool if tq.GATES[g].num_wires != 1]
    b = tq.CircuitBuilder(n)
    for _ in range(n_ops):
        use_single = (rng.random() < p_single or n == 1 or not multis) and singles
        name = singles[int(rng.integers(len(singles)))] if use_single else multis[int(rng.integers(len(multis)))]
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
        params = [_param(rng, kinds) for _ in range(g.num_params)]
        b.append(name, wires, *params, matrix=_unitary(rng, 2**k) if name == "QubitUnitary" else None)
    return b.build()


def _values(c: tq.Circuit, seed: int, batch: int, dtype=torch.float64, grad: bool = False):
    gen = torch.Generator().manual_seed(seed)
    w = (torch.rand(c.n_weights, generator=gen, dtype=torch.float64) * 6 - 3).to(dtype)
    x = (torch.rand(batch, c.n_inputs, generator=gen, dtype=torch.float64) * 3 - 1.5).to(dtype) if c.n_inputs else None
    if grad:
        w.requires_grad_(True)
        if x is not None:
            x.requires_grad_(True)
    return w, x


def block_kinds(c: tq.Circuit) -> list[str]:
    return [type(b).__name__ for b in F.compile_circuit(c).blocks]


def check_fused_equals_reference(c: tq.Circuit, w, x, tol: float = 1e-11) -> torch.Tensor:
    angles, batched = resolve(c, w, x)
    ref = F.reference_run(c, angles, batched, DT, fast=False)
    ref_fast = F.reference_run(c, angles, batched, DT, fast=True)
    assert (ref - ref_fast).abs().max() <= tol
    for method in ("backprop", "adjoint"):
        got = tq.statevector(c, w, x, diff_method=method)
        assert got.shape == ref.shape, (method, got.shape, ref.shape)
        err = (got - ref).abs().max().item()
        assert err <= tol, f"{method}: max |fused - reference| = {err:.2e}\n{c.to_json()}"
    return ref


# --------------------------------------------------------------------------- structure cases


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_single_qubit_only_circuits_are_a_product_state(n: int) -> None:
    rng = np.random.default_rng(n)
    singles = [g for g in ALL_GATES if tq.GATES[g].num_wires == 1] + ["MultiRZ", "QubitUnitary"]
    for seed in range(5):
        c = tq.CircuitBuilder(n)
        for op in random_circuit(rng, n, 12, gates=singles).ops:
            if len(op.wires) == 1:
                c.extend(tq.Circuit(n, (op,)))
        c = c.build()
        prog = F.compile_circuit(c)
        assert prog.blocks == [] and prog.init is not None
        w, x = _values(c, seed, 3)
        check_fused_equals_reference(c, w, x)


def test_n1_circuits() -> None:
    rng = np.random.default_rng(11)
    for seed in range(10):
        c = random_circuit(rng, 1, 15)
        assert c.n_wires == 1 and block_kinds(c) == []
        w, x = _values(c, seed, 4)
        check_fused_equals_reference(c, w, x)
    empty = tq.Circuit(1)
    assert torch.equal(tq.statevector(empty), torch.tensor([[1, 0]], dtype=DT))


def test_circuit_starting_with_multi_qubit_gates() -> None:
    rng = np.random.default_rng(12)
    for seed, first in enumerate(["CX", "CZ", "CH", "ECR", "MultiRZ", "CSWAP", "QubitUnitary", "RZZ", "CRX"]):
        n = 4
        g = tq.GATES[first]
        k = g.num_wires or 3
        b = tq.CircuitBuilder(n).append(first, list(range(k))[::-1], *[tq.weight(0)] * g.num_params,
                                         matrix=_unitary(rng, 2**k) if first == "QubitUnitary" else None)
        b.h(0).h(2)  # H first: the opening gates must not be folded into the product state
        c = b.extend(random_circuit(rng, n, 15)).build()
        prog = F.compile_circuit(c)
        assert prog.init is not None and all(r == () for r in prog.init.runs)
        w, x = _values(c, seed, 3)
        check_fused_equals_reference(c, w, x)


@pytest.mark.parametrize("n", [2, 3, 5, 6, 7])
def test_data_reuploading(n: int) -> None:
    """Feature gates after entanglers: batched Kronecker layers."""
    b = tq.CircuitBuilder(n)
    for layer in range(3):
        for q in range(n):
            b.ry(q, tq.feature(q % 3, scale=1.0 + layer)).rz(q, tq.weight(q + n * layer))
        for q in range(n - 1):
            b.cx(q, q + 1)
        if n > 2:
            b.cz(n - 1, 0)
    c = b.build()
    kinds = block_kinds(c)
    assert "KronLayer" in kinds
    prog = F.compile_circuit(c)
    kron = [blk for blk in prog.blocks if isinstance(blk, F.KronLayer)]
    assert all(len(blk.runs) == n for blk in kron)
    w, x = _values(c, n, 5)
    ref = check_fused_equals_reference(c, w, x)
    assert ref.shape == (5, 2**n)


def test_sparse_single_qubit_layers_use_single_blocks() -> None:
    n = 6
    b = tq.CircuitBuilder(n)
    for q in range(n):
        b.h(q)
    b.cx(0, 1).rx(1, tq.weight(0)).cx(1, 2).ry(2, tq.feature(0)).crz(2, 3, tq.weight(1))
    b.u(4, tq.weight(2), 0.3, tq.feature(1)).cy(4, 5).rz(5, 0.2).ch(5, 0).sx(0).swap(0, 3)
    c = b.build()
    kinds = block_kinds(c)
    assert kinds.count("Single") >= 4, kinds
    w, x = _values(c, 0, 3)
    check_fused_equals_reference(c, w, x)


@pytest.mark.parametrize("n", [4, 5, 6, 7, 9, 10])
def test_kron_layer_groups(n: int) -> None:
    """Group size 4 beyond 5 wires: n not divisible by 4 leaves a smaller last group."""
    rng = np.random.default_rng(100 + n)
    b = tq.CircuitBuilder(n)
    for q in range(n):
        b.ry(q, tq.weight(q))
    for layer in range(2):
        for q in range(0, n - 1, 2):
            b.cx(q, q + 1)
        for q in range(n):
            if rng.random() < 0.8:  # some wires idle: identity in the layer
                b.u(q, tq.feature(q % 2), float(rng.uniform(-3, 3)), tq.weight(q))
        b.rzz(0, n - 1, tq.weight(n))
    c = b.build()
    kron = [blk for blk in F.compile_circuit(c).blocks if isinstance(blk, F.KronLayer)]
    assert kron
    k = F.group_size(n)
    for blk in kron:
        assert sum(size for _, size in blk.groups) == n
        assert [a for a, _ in blk.groups] == list(range(0, n, k))
        if n % k:
            assert blk.groups[-1][1] == n % k
    w, x = _values(c, n, 3)
    check_fused_equals_reference(c, w, x)


def test_diag_merging() -> None:
    n = 4
    b = tq.CircuitBuilder(n).h(0).h(1).h(2).h(3).rx(2, tq.feature(0))
    b.cz(0, 1).crz(2, 1, tq.weight(0)).rzz(3, 0, tq.feature(1)).cp(1, 3, 0.4).multirz([2, 0, 3], tq.weight(1))
    b.ccz(3, 1, 2).append("RZ", 1, tq.weight(2)).cz(2, 3)  # RZ pending on wire 1: CZ(2,3) still merges
    c = b.build()
    diags = [blk for blk in F.compile_circuit(c).blocks if isinstance(blk, F.Diag)]
    assert len(diags) == 1 and len(diags[0].ops) == 7, block_kinds(c)
    w, x = _values(c, 1, 3)
    check_fused_equals_reference(c, w, x)


def test_perm_merging() -> None:
    n = 5
    b = tq.CircuitBuilder(n)
    for q in range(n):
        b.ry(q, tq.feature(q % 2)).rz(q, tq.weight(q))
    b.cx(0, 1).swap(3, 1).ccx(4, 2, 0).cswap(1, 4, 3).mcx([3, 0, 2], 1).mcx([4], 2).cx(2, 4)
    c = b.build()
    perms = [blk for blk in F.compile_circuit(c).blocks if isinstance(blk, F.Perm)]
    assert len(perms) == 1 and len(perms[0].ops) == 7, block_kinds(c)
    w, x = _values(c, 2, 3)
    check_fused_equals_reference(c, w, x)


def test_dense_blocks() -> None:
    rng = np.random.default_rng(3)
    n = 4
    b = tq.CircuitBuilder(n).h(0).ry(1, tq.weight(0))
    b.ch(0, 2).ecr(3, 1).iswap(2, 0).cu(1, 3, tq.weight(1), tq.feature(0), 0.2).rxx(0, 3, tq.feature(1))
    b.ryy(2, 1, 0.3).rzx(3, 0, tq.weight(2)).cry(2, 3, tq.feature(0)).unitary([3, 0, 2], _unitary(rng, 8))
    c = b.build()
    assert block_kinds(c).count("Dense") == 9
    w, x = _values(c, 3, 3)
    check_fused_equals_reference(c, w, x)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8])
def test_random_circuits_fused_equal_reference(n: int) -> None:
    rng = np.random.default_rng(200 + n)
    for seed in range(12):
        p_single = [0.2, 0.5, 0.8][seed % 3]
        c = random_circuit(rng, n, int(rng.integers(5, 30)), p_single=p_single)
        batch = 1 + seed % 4
        w, x = _values(c, seed, batch)
        check_fused_equals_reference(c, w, x)


# --------------------------------------------------------------------------- unitary shortcut


def test_backprop_with_batched_opening_layer_on_small_register() -> None:
    """Regression: n <= 6, features only in the opening layer, B > 2**n / 2 (the circuit body is
    shared, so its unitary is built once). execute() used to call itself with the identity as
    the opening state, for which the shortcut applied again: infinite recursion."""
    c = tq.CircuitBuilder(2).ry(0, tq.feature(0)).ry(1, tq.feature(1)).cx(0, 1).rx(1, tq.weight(0)).build()
    w = torch.tensor([0.3], dtype=torch.float64)
    x = torch.rand(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    angles, batched = resolve(c, w, x)
    ref = F.reference_run(c, angles, batched, DT, fast=False)
    for method in ("backprop", "adjoint"):
        got = tq.statevector(c, w, x, diff_method=method)
        assert (got - ref).abs().max() <= 1e-12, method
    # probs/sample/counts run the backprop path too
    assert torch.allclose(tq.probs(c, w, x), ref.abs() ** 2, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_gradients_with_batched_opening_layer_and_shared_body(n: int) -> None:
    """Features only in the opening layer, B > 2**n / 2: all diff methods (the parameter-shift
    forward uses the backprop path) agree with autograd through the reference simulation."""
    b = tq.CircuitBuilder(n)
    for q in range(n):
        b.ry(q, tq.feature(q % 2)).rz(q, tq.weight(q))
    for q in range(n - 1):
        b.cx(q, q + 1).crx(q + 1, q, tq.weight(n + q))
    c = b.append("RX", n - 1, tq.weight(2 * n)).build()
    batch = 2**n // 2 + 3
    w, x = _values(c, n, batch, grad=True)
    obs = _observables(n)
    grads = {m: _grads(c, obs, w, x, m) for m in METHODS}
    assert grads["adjoint"]["x"].abs().max() > 1e-3
    _assert_grads_equal(grads, 1e-8)


# --------------------------------------------------------------------------- gradients


def _observables(n: int) -> list:
    obs = [tq.Z(0), tq.Y(n - 1)]
    if n >= 2:
        obs.append(tq.X(0) @ tq.Y(1))
        obs.append(0.7 * tq.Z(0) @ tq.Z(n - 1) + tq.X(n - 1) * -1.3 + tq.pauli(f"Y{n - 1} X0", 0.4))
    if n >= 3:
        obs.append(tq.Hamiltonian((tq.pauli("Z0 Z1 Z2"), tq.pauli("X2 Y0", -0.5), tq.PauliString("", (), 0.25))))
    return obs


def _grads(c: tq.Circuit, obs: list, w: torch.Tensor, x: torch.Tensor | None, method: str,
           dtype: torch.dtype = DT) -> dict[str, torch.Tensor]:
    """Expectations and the gradient of a fixed mix of them w.r.t. weights and inputs.

    ``method="reference"``: plain autograd through gate-by-gate dense simulation.
    """
    if method == "reference":
        from tinyqml.qml import measure as M

        angles, batched = resolve(c, w, x, dtype)
        e = M.expval(F.reference_run(c, angles, batched, dtype, fast=False), obs, c.n_wires)
    else:
        e = tq.expval(c, obs, weights=w, inputs=x, dtype=dtype, diff_method=method)
    coef = torch.linspace(-1.0, 1.5, e.numel(), dtype=e.dtype).reshape(e.shape)
    leaves = [t for t in (w, x) if t is not None and t.requires_grad and t.numel()]
    out = {"value": e.detach()}
    if not e.requires_grad:  # nothing in the circuit depends on weights or inputs
        assert not leaves or all(p.kind == "const" for op in c.ops for p in op.params)
        return out
    gs = torch.autograd.grad((e * coef).sum(), leaves, allow_unused=True)
    for t, g in zip(leaves, gs):
        out["w" if t is w else "x"] = torch.zeros_like(t) if g is None else g
    return out


def _assert_grads_equal(grads: dict[str, dict[str, torch.Tensor]], tol: float) -> None:
    methods = list(grads)
    base = grads[methods[0]]
    for m in methods[1:]:
        assert grads[m].keys() == base.keys()
        for key, ref in base.items():
            if not ref.numel():
                continue
            err = (grads[m][key] - ref).abs().max().item()
            assert err <= tol, f"{m} vs {methods[0]}: d/d{key} differs by {err:.2e}"


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_diff_methods_agree_on_random_circuits(n: int) -> None:
    rng = np.random.default_rng(300 + n)
    for seed in range(4):
        c = random_circuit(rng, n, 14, p_single=[0.3, 0.6][seed % 2])
        batch = [1, 3][seed % 2]
        w, x = _values(c, seed, batch, grad=True)
        grads = {m: _grads(c, _observables(n), w, x, m) for m in METHODS}
        _assert_grads_equal(grads, 1e-8)


def test_diff_methods_agree_on_reuploading_circuit_with_batch() -> None:
    n = 4
    b = tq.CircuitBuilder(n)
    for layer in range(3):
        for q in range(n):
            b.ry(q, tq.feature(q, shift=0.2)).u(q, tq.weight(3 * q), tq.weight(3 * q + 1), tq.weight(3 * q + 2, scale=2.0))
        b.crx(0, 1, tq.weight(12 + layer)).cu(2, 3, tq.feature([0, 1]), tq.weight(15), 0.1).rzz(1, 2, tq.feature(3))
        b.u2(0, tq.weight(16), tq.feature(2)).cp(3, 0, tq.weight(17)).multirz([0, 2, 3], tq.feature([1, 2]))
        b.rzx(1, 3, tq.weight(18)).ryy(0, 2, tq.weight(19)).ccx(0, 1, 2).ch(3, 1).cry(1, 0, tq.feature(0, scale=-1))
    c = b.build()
    w, x = _values(c, 9, 4, grad=True)
    grads = {m: _grads(c, _observables(n), w, x, m) for m in METHODS}
    assert grads["adjoint"]["x"].abs().max() > 1e-3  # inputs really get a gradient
    _assert_grads_equal(grads, 1e-8)


def test_parameter_shift_chunked_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shifted circuits evaluated in several chunks give the same gradient."""
    rng = np.random.default_rng(5)
    c = random_circuit(rng, 3, 20, kinds="wf")
    w, x = _values(c, 5, 2, grad=True)
    full = _grads(c, _observables(3), w, x, "parameter-shift")
    monkeypatch.setattr(S, "SHIFT_CHUNK_AMPLITUDES", 3 * 2 * 2**3)
    chunked = _grads(c, _observables(3), w, x, "parameter-shift")
    _assert_grads_equal({"full": full, "chunked": chunked}, 1e-12)


@pytest.mark.parametrize("n", [9, 10])
def test_adjoint_chunked_path(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(F, "CHUNK_BYTES", 2 * (2**n) * 16)  # two rows per chunk in complex128
    batch = 5
    assert F.chunk_rows(n, DT, torch.device("cpu")) < batch
    rng = np.random.default_rng(400 + n)
    b = tq.CircuitBuilder(n)
    for q in range(n):
        b.ry(q, tq.feature(q % 3)).rz(q, tq.weight(q))
    c = b.extend(random_circuit(rng, n, 16, kinds="cw", p_single=0.4))
    for q in range(0, n, 3):  # features after entanglers too
        c.rx(q, tq.feature([q % 3, 2], shift=0.1))
    c = c.extend(random_circuit(rng, n, 8, kinds="wf", p_single=0.5)).build()
    w, x = _values(c, n, batch, grad=True)
    angles, batched = resolve(c, w.detach(), x.detach())
    ref = F.reference_run(c, angles, batched, DT, fast=False)
    assert (tq.statevector(c, w.detach(), x.detach(), diff_method="adjoint") - ref).abs().max() <= 1e-11
    obs = _observables(n)
    grads = {m: _grads(c, obs, w, x, m) for m in ("reference", "backprop", "adjoint")}
    _assert_grads_equal(grads, 1e-8)


def test_adjoint_chunked_path_with_shared_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batched product state, unbatched later blocks (n > 6: no unitary shortcut), chunked."""
    n = 9
    monkeypatch.setattr(F, "CHUNK_BYTES", 3 * (2**n) * 16)
    rng = np.random.default_rng(9)
    b = tq.CircuitBuilder(n)
    for q in range(n):
        b.ry(q, tq.feature(q % 4))
    c = b.extend(random_circuit(rng, n, 25, kinds="cw", p_single=0.5)).build()
    w, x = _values(c, 1, 7, grad=True)
    grads = {m: _grads(c, _observables(n), w, x, m) for m in ("reference", "backprop", "adjoint")}
    _assert_grads_equal(grads, 1e-8)


@pytest.mark.slow
def test_parameter_shift_agrees_on_large_register() -> None:
    n = 9
    rng = np.random.default_rng(10)
    c = random_circuit(rng, n, 20, kinds="wf", p_single=0.5)
    w, x = _values(c, 2, 2, grad=True)
    grads = {m: _grads(c, _observables(n), w, x, m) for m in METHODS}
    _assert_grads_equal(grads, 1e-8)


def test_complex64_agrees_with_complex128() -> None:
    rng = np.random.default_rng(17)
    n = 4
    for seed in range(3):
        c = random_circuit(rng, n, 20)
        w, x = _values(c, seed, 3, grad=True)
        ref = tq.statevector(c, w.detach(), None if x is None else x.detach())
        got = tq.statevector(c, w.detach().float(), None if x is None else x.detach().float(), dtype=torch.complex64)
        assert got.dtype == torch.complex64
        assert (got.to(DT) - ref).abs().max() < 1e-5
        g128 = _grads(c, _observables(n), w, x, "adjoint")
        for m in METHODS:
            w32 = w.detach().float().requires_grad_(True)
            x32 = None if x is None else x.detach().float().requires_grad_(True)
            g64 = _grads(c, _observables(n), w32, x32, m, dtype=torch.complex64)
            for key, ref_g in g128.items():
                assert (g64[key].double() - ref_g).abs().max() < 1e-4, (m, key)


def test_program_is_cached_on_the_circuit() -> None:
    c = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
    assert F.compile_circuit(c) is F.compile_circuit(c)
