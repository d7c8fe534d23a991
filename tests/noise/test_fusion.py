"""The fused superoperator program equals a naive density-matrix simulation.

The reference is written here in the plain ``[B, 2**n, 2**n]`` form: each gate as
``U rho U^dagger`` (``U`` embedded by an explicit permutation of ``U (x) I``), each
channel with :func:`tinyqml.noise.channels.apply_channel`. Every block kind (dense,
perm, diag) on 1, 2 and 3+ wires, batched (feature-dependent) and shared superoperators
are exercised, by hand-made circuits with a known block structure and by seeded random
noisy circuits over the whole gate set.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tinyqml.qml as tq
from tinyqml.noise import channels as C
from tinyqml.noise import fusion as F
from tinyqml.noise import kernels as K
from tinyqml.noise.model import ChannelOp, NoisyCircuit
from tinyqml.qml.params import resolve

DT = torch.complex128
ALL_GATES = sorted(tq.GATES)
TOL = 1e-12


# --------------------------------------------------------------------------- the naive reference


def _embed(op: torch.Tensor, wires, n: int) -> torch.Tensor:
    """Full ``[2**n, 2**n]`` matrix of ``op`` on ``wires`` (first listed wire = op's MSB)."""
    k = len(wires)
    full = torch.kron(op.contiguous(), torch.eye(2 ** (n - k), dtype=op.dtype))
    order = list(wires) + [w for w in range(n) if w not in wires]
    inv = [order.index(w) for w in range(n)]
    return full.reshape([2] * (2 * n)).permute(inv + [n + i for i in inv]).reshape(2 ** n, 2 ** n)


def naive_dm(noisy: NoisyCircuit, weights=None, inputs=None) -> torch.Tensor:
    """Gate by gate, channel by channel, in the plain matrix form."""
    c, n = noisy.circuit, noisy.n_wires
    d = 2 ** n
    angles, _ = resolve(c, weights, inputs)
    b = angles.shape[0]
    rho = torch.zeros(b, d, d, dtype=DT)
    rho[:, 0, 0] = 1
    offsets = np.cumsum([0] + [op.gate.num_params for op in c.ops])
    for step in noisy.steps:
        if isinstance(step, ChannelOp):
            rho = C.apply_channel(rho, step.channel, list(step.wires), n)
            continue
        op = c.ops[step]
        k = len(op.wires)
        if op.gate is tq.gates.QubitUnitary:
            u = torch.tensor(op.unitary_array(), dtype=DT).expand(b, -1, -1)
        else:
            u = op.gate.matrix(angles[:, offsets[step]:offsets[step + 1]], k, DT).expand(b, -1, -1)
        full = torch.stack([_embed(u[i], op.wires, n) for i in range(b)])
        rho = full @ rho @ full.conj().transpose(-1, -2)
    return rho


def fused_dm(noisy: NoisyCircuit, weights=None, inputs=None, dtype=DT) -> torch.Tensor:
    angles, batched = resolve(noisy.circuit, weights, inputs, dtype)
    return K.to_matrix(F.run(F.compile_noisy(noisy), angles, batched, dtype), noisy.n_wires)


def check(noisy: NoisyCircuit, weights=None, inputs=None, tol: float = TOL) -> torch.Tensor:
    want = naive_dm(noisy, weights, inputs)
    got = fused_dm(noisy, weights, inputs)
    assert got.shape == want.shape, (got.shape, want.shape)
    err = float((got - want).abs().max())
    assert err <= tol, f"max |fused - naive| = {err:.2e}\n{_describe(noisy)}"
    return got


def _describe(noisy: NoisyCircuit) -> str:
    out = []
    for s in noisy.steps:
        if isinstance(s, ChannelOp):
            out.append(f"  {s.channel.name} on {s.wires}")
        else:
            op = noisy.circuit.ops[s]
            out.append(f"  {op.name} on {op.wires}")
    return "\n".join(out)


def build(n: int, items: list) -> NoisyCircuit:
    """``items``: ``(gate name, wires, *params)`` or ``(Channel, wires)``; ``matrix=`` via a dict last."""
    b = tq.CircuitBuilder(n)
    steps: list = []
    n_ops = 0
    for it in items:
        if isinstance(it[0], C.Channel):
            steps.append(ChannelOp(it[0], tuple(it[1])))
            continue
        name, wires, *rest = it
        matrix = rest.pop()["matrix"] if rest and isinstance(rest[-1], dict) else None
        b.append(name, wires, *rest, matrix=matrix)
        steps.append(n_ops)
        n_ops += 1
    return NoisyCircuit(b.build(), tuple(steps))


def signature(noisy: NoisyCircuit) -> list[tuple[str, tuple[int, ...]]]:
    return [(blk.kind, blk.wires) for blk in F.compile_noisy(noisy).blocks]


def _unitary(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d)))
    return q * (np.diag(r) / np.abs(np.diag(r)))


def random_kraus(rng: np.random.Generator, k: int, r: int | None = None) -> C.Channel:
    d = 2 ** k
    r = int(rng.integers(1, 5)) if r is None else r
    q, _ = np.linalg.qr(rng.normal(size=(r * d, d)) + 1j * rng.normal(size=(r * d, d)))
    return C.kraus([torch.tensor(q[i * d:(i + 1) * d]) for i in range(r)], name=f"kraus{k}x{r}")


def random_channel(rng: np.random.Generator, k: int) -> C.Channel:
    """A random channel on ``k`` wires, dephasing (diagonal) ones often."""
    u = rng.random()
    if k == 1:
        pool = [
            lambda: C.depolarizing(float(rng.uniform(0, 1))),
            lambda: C.bit_flip(float(rng.uniform(0, 1))),
            lambda: C.phase_flip(float(rng.uniform(0, 1))),
            lambda: C.amplitude_damping(float(rng.uniform(0, 1))),
            lambda: C.phase_damping(float(rng.uniform(0, 1))),
            lambda: C.thermal_relaxation(50.0, float(rng.uniform(5, 100)), float(rng.uniform(0, 30)),
                                         float(rng.uniform(0, 0.4))),
            lambda: C.pauli({"X": 0.1, "Y": float(rng.uniform(0, 0.3)), "Z": 0.2}),
            lambda: random_kraus(rng, 1),
        ]
        return pool[int(u * len(pool))]()
    if u < 0.25:
        return C.pauli({"Z" * k: float(rng.uniform(0, 0.5)), "I" * (k - 1) + "Z": float(rng.uniform(0, 0.5))})
    if u < 0.4 and k == 2:
        return C.depolarizing(float(rng.uniform(0, 1)), 2)
    if u < 0.6:
        return C.tensor(*[random_channel(rng, 1) for _ in range(k)])
    if u < 0.75:
        labels = ["".join(rng.choice(list("IXYZ"), size=k)) for _ in range(2)]
        return C.pauli({labels[0]: 0.2, labels[1]: 0.3} if labels[0] != labels[1] else {labels[0]: 0.4})
    return random_kraus(rng, k)


def _param(rng: np.random.Generator, n_w: int = 4, n_x: int = 3):
    r = rng.random()
    if r < 0.3:
        return tq.const(float(rng.uniform(-4, 4)))
    if r < 0.65:
        return tq.weight(int(rng.integers(n_w)), scale=float(rng.choice([1.0, -0.7])), offset=float(rng.choice([0, 0.4])))
    idx = int(rng.integers(n_x)) if rng.random() < 0.7 else [int(i) for i in rng.integers(0, n_x, 2)]
    return tq.feature(idx, scale=float(rng.choice([1.0, 0.8])), shift=float(rng.choice([0.0, 0.5])))


def random_noisy(rng: np.random.Generator, n: int, n_ops: int, p_channel: float = 0.4,
                 gates: list[str] | None = None) -> NoisyCircuit:
    pool = gates or ALL_GATES
    items: list = []
    for _ in range(n_ops):
        name = pool[int(rng.integers(len(pool)))]
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
        params = [_param(rng) for _ in range(g.num_params)]
        extra = [{"matrix": _unitary(rng, 2 ** k)}] if name == "QubitUnitary" else []
        items.append((name, wires, *params, *extra))
        while rng.random() < p_channel:
            kc = int(rng.integers(1, min(n, 3) + 1))
            items.append((random_channel(rng, kc), [int(w) for w in rng.permutation(n)[:kc]]))
    return build(n, items)


def _values(c: tq.Circuit, seed: int, batch: int, grad: bool = False):
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(c.n_weights, generator=gen, dtype=torch.float64) * 6 - 3
    x = torch.rand(batch, c.n_inputs, generator=gen, dtype=torch.float64) * 3 - 1.5 if c.n_inputs else None
    if grad:
        w.requires_grad_(True)
        if x is not None:
            x.requires_grad_(True)
    return w, x


# --------------------------------------------------------------------------- the naive reference itself


def test_naive_reference_against_statevector():
    rng = np.random.default_rng(3)
    for n in (1, 2, 4):
        noisy = random_noisy(rng, n, 14, p_channel=0.0)
        w, x = _values(noisy.circuit, n, 3)
        psi = tq.statevector(noisy.circuit, w, x)
        want = psi.unsqueeze(-1) * psi.conj().unsqueeze(-2)
        got = naive_dm(noisy, w, x)
        assert torch.allclose(got.expand_as(want), want, atol=1e-12)


def test_naive_reference_channel_order_matters():
    """The reference (and the test) can tell X-then-damping from damping-then-X."""
    a = build(1, [("X", [0]), (C.amplitude_damping(0.3), [0])])
    b = build(1, [(C.amplitude_damping(0.3), [0]), ("X", [0])])
    assert not torch.allclose(naive_dm(a), naive_dm(b))
    assert torch.allclose(naive_dm(a)[0].diagonal().real, torch.tensor([0.3, 0.7], dtype=torch.float64))


# --------------------------------------------------------------------------- hand-made block structures

W = tq.weight
X = tq.feature
RNG = np.random.default_rng(77)
U3 = _unitary(RNG, 8)
KRAUS3 = random_kraus(RNG, 3, 3)

STRUCTURES = {
    # name: (n, items, expected [(kind, wires)]); single-wire blocks are emitted (and the state made
    # non-trivial) by a later item whose wires span more than MAX_BLOCK_WIRES open wires
    "perm1": (3, [("H", [0]), ("H", [1]), ("CX", [0, 1]), ("RY", [2], X(0)), ("CZ", [1, 2]), ("X", [0])],
              [("dense", (0, 1)), ("dense", (2,)), ("diag", (1, 2)), ("perm", (0,))]),
    "perm2": (3, [("H", [0]), ("H", [1]), ("H", [2]), ("RXX", [0, 2], W(0)), ("CX", [0, 1]), ("SWAP", [1, 0]),
                  ("X", [1]), ("RY", [2], X(1))],
              [("dense", (1,)), ("dense", (0, 2)), ("perm", (0, 1)), ("dense", (2,))]),
    "perm3": (4, [("H", [0]), ("RY", [1], X(0)), ("H", [2]), ("CCX", [0, 1, 2]), ("X", [2]), ("CSWAP", [2, 0, 1]),
                  ("RX", [3], X(1))],
              [("dense", (0,)), ("dense", (1,)), ("dense", (2,)), ("perm", (0, 1, 2)), ("dense", (3,))]),
    "perm4_mcx": (4, [("H", [0]), ("H", [1]), ("RY", [2], X(2)), ("H", [3]), ("MCX", [3, 1, 2, 0]), ("X", [1])],
                  [("dense", (0,)), ("dense", (1,)), ("dense", (2,)), ("dense", (3,)), ("perm", (0, 1, 2, 3))]),
    "diag1": (3, [("H", [0]), ("H", [1]), ("CX", [0, 1]), ("H", [2]), ("CZ", [1, 2]), ("RZ", [0], X(0)),
                  (C.phase_flip(0.3), [0])],
              [("dense", (0, 1)), ("dense", (2,)), ("diag", (1, 2)), ("diag", (0,))]),
    "diag2": (3, [("H", [0]), ("RY", [1], X(2)), ("H", [2]), ("RXX", [0, 2], W(1)), ("CZ", [1, 0]),
                  ("CRZ", [0, 1], X(1)), (C.pauli({"ZZ": 0.2, "IZ": 0.1}), [1, 0]), (C.phase_damping(0.4), [1]),
                  ("RZZ", [0, 1], W(0))],
              [("dense", (1,)), ("dense", (0, 2)), ("diag", (0, 1))]),
    "diag3": (3, [("RX", [0], W(0)), ("H", [1]), ("RY", [2], X(1)), ("CCZ", [2, 0, 1]), ("MultiRZ", [2, 0, 1], X(0)),
                  ("T", [1]), (C.pauli({"ZIZ": 0.3}), [0, 1, 2]), (C.phase_damping(0.2), [2])],
              [("dense", (0,)), ("dense", (1,)), ("dense", (2,)), ("diag", (0, 1, 2))]),
    "dense1": (1, [("H", [0]), (C.amplitude_damping(0.4), [0]), ("RY", [0], X(2))], [("dense", (0,))]),
    "dense2": (2, [("RY", [0], X(0)), ("CX", [0, 1]), (C.depolarizing(0.3, 2), [1, 0]), ("RZ", [1], W(1))],
               [("dense", (0, 1))]),
    "dense3": (3, [("QubitUnitary", [2, 0, 1], {"matrix": U3}), (KRAUS3, [1, 2, 0]), ("RY", [1], X(0))],
               [("dense", (0, 1, 2))]),
    "perm3_then_channel": (3, [("CCX", [0, 1, 2]), (C.bit_flip(0.2), [1])], [("dense", (0, 1, 2))]),
    "diag_then_dense_channel": (2, [("CZ", [0, 1]), (C.amplitude_damping(0.5), [0]), ("H", [0])],
                                [("dense", (0, 1))]),
    "merge_two_singles": (2, [("H", [0]), ("RY", [1], X(0)), ("CX", [0, 1]), (C.bit_flip(0.3), [0])],
                          [("dense", (0, 1))]),
    "shared_after_batched": (3, [("RY", [0], X(0)), ("H", [1]), ("CX", [1, 2]), (C.amplitude_damping(0.3), [2]),
                                 ("CZ", [0, 2])],
                             [("dense", (0,)), ("dense", (1, 2)), ("diag", (0, 2))]),
    "wide_channel_splits": (3, [("H", [0]), ("H", [1]), (C.tensor(C.bit_flip(0.1), C.phase_flip(0.2), C.amplitude_damping(0.3)),
                                                         [2, 0, 1]), ("H", [2])],
                            [("dense", (0,)), ("dense", (1,)), ("dense", (0, 1, 2))]),
}


@pytest.mark.parametrize("name", sorted(STRUCTURES))
@pytest.mark.parametrize("batch", [1, 3])
def test_block_structures_equal_naive(name, batch):
    n, items, expected = STRUCTURES[name]
    noisy = build(n, items)
    assert signature(noisy) == expected
    w, x = _values(noisy.circuit, 5, batch)
    out = check(noisy, w, x)
    assert out.shape[0] == (batch if noisy.circuit.n_inputs else 1)


def test_batched_and_shared_superops_are_both_exercised():
    """Feature gates give per-row superoperators; later blocks share one over the batch."""
    noisy = build(3, STRUCTURES["shared_after_batched"][1])
    prog = F.compile_noisy(noisy)
    assert [_block_is_batched(noisy, blk) for blk in prog.blocks] == [True, False, False]
    w, x = _values(noisy.circuit, 1, 4)
    # rows differ (the features do matter) and each equals a separate run
    out = check(noisy, w, x)
    assert float((out[0] - out[1]).abs().max()) > 1e-3
    for r in range(4):
        assert torch.allclose(out[r:r + 1], fused_dm(noisy, w, x[r:r + 1]), atol=TOL)


def test_batched_diagonal_block():
    noisy = build(3, [("H", [0]), ("H", [1]), ("CX", [0, 1]), ("H", [2]), ("CRZ", [1, 2], X(0)),
                      ("RZ", [2], X(1, scale=2.0)), (C.phase_flip(0.25), [1])])
    assert signature(noisy) == [("dense", (0, 1)), ("dense", (2,)), ("diag", (1, 2))]
    assert _block_is_batched(noisy, F.compile_noisy(noisy).blocks[-1])
    w, x = _values(noisy.circuit, 2, 5)
    out = check(noisy, w, x)
    assert float((out[0] - out[1]).abs().max()) > 1e-3


# --------------------------------------------------------------------------- random noisy circuits


def _wires(noisy: NoisyCircuit, item) -> tuple[int, ...]:
    return item.wires if isinstance(item, ChannelOp) else noisy.circuit.ops[item].wires


def _block_is_batched(noisy: NoisyCircuit, blk: F.Block) -> bool:
    for it in blk.items:
        if isinstance(it, int) and any(p.kind == "feature" for p in noisy.circuit.ops[it].params):
            return True
    return False


N_RANDOM = 60


def _random_cases():
    rng = np.random.default_rng(20251125)
    out = []
    for i in range(N_RANDOM):
        n = 1 + i % 5
        gates = None
        if i % 4 == 1:   # bias towards diagonal gates and dephasing channels
            gates = [g for g in ALL_GATES if tq.GATES[g].structure == "diagonal"] + ["H"]
        elif i % 4 == 2:  # towards permutations
            gates = [g for g in ALL_GATES if tq.GATES[g].structure == "permutation"] + ["RY"]
        out.append((i, random_noisy(rng, n, int(rng.integers(4, 16)), p_channel=0.35, gates=gates)))
    return out


CASES = _random_cases()


def test_random_cases_cover_every_block_kind():
    seen = set()
    for _, noisy in CASES:
        for blk in F.compile_noisy(noisy).blocks:
            seen.add((blk.kind, min(len(blk.wires), 3), _block_is_batched(noisy, blk)))
    for kind in ("dense", "diag"):
        for m in (1, 2, 3):
            assert (kind, m, False) in seen, (kind, m)
        assert (kind, 1, True) in seen and (kind, 2, True) in seen
    for m in (1, 2, 3):
        assert ("perm", m, False) in seen, m
    names = {noisy.circuit.ops[s].name for _, noisy in CASES for s in noisy.steps if isinstance(s, int)}
    assert names == set(tq.GATES)


@pytest.mark.parametrize("start", range(0, N_RANDOM, 10), ids=lambda i: f"block{i}")
def test_random_noisy_circuits_equal_naive(start):
    for i, noisy in CASES[start:start + 10]:
        w, x = _values(noisy.circuit, i, 3)
        out = check(noisy, w, x)
        # a density matrix: Hermitian, trace one, positive
        assert torch.allclose(out, out.conj().transpose(-1, -2), atol=1e-12)
        assert torch.allclose(out.diagonal(dim1=-2, dim2=-1).sum(-1).real,
                              torch.ones(out.shape[0], dtype=torch.float64), atol=1e-12)
        assert float(torch.linalg.eigvalsh(out).min()) > -1e-10


def test_block_structure_invariants():
    """Blocks stay within MAX_BLOCK_WIRES unless one item is wider; items keep their order per wire."""
    for _, noisy in CASES:
        prog = F.compile_noisy(noisy)
        flat = []
        for blk in prog.blocks:
            widest = max(len(_wires(noisy, it)) for it in blk.items)
            assert len(blk.wires) <= max(F.MAX_BLOCK_WIRES, widest)
            assert list(blk.wires) == sorted(set(blk.wires))
            for it in blk.items:
                assert set(_wires(noisy, it)) <= set(blk.wires)
            flat += list(blk.items)
        pos = {id(s): j for j, s in enumerate(noisy.steps) if isinstance(s, ChannelOp)}
        pos.update({("op", s): j for j, s in enumerate(noisy.steps) if isinstance(s, int)})
        key = (lambda it: pos[id(it)] if isinstance(it, ChannelOp) else pos[("op", it)])
        assert sorted(key(it) for it in flat) == list(range(len(noisy.steps)))   # every step exactly once
        # per wire, the items come in their original order
        for wire in range(noisy.n_wires):
            seq = [key(it) for it in flat if wire in _wires(noisy, it)]
            assert seq == sorted(seq)


def test_program_is_cached_on_the_noisy_circuit():
    _, noisy = CASES[7]
    p1 = F.compile_noisy(noisy)
    assert F.compile_noisy(noisy) is p1
    w, x = _values(noisy.circuit, 0, 2)
    a = fused_dm(noisy, w, x)
    b = fused_dm(noisy, w, x)
    assert torch.equal(a, b)
    w2, x2 = _values(noisy.circuit, 1, 2)
    assert torch.allclose(fused_dm(noisy, w2, x2), naive_dm(noisy, w2, x2), atol=TOL)


def test_complex64_close_to_naive():
    for i, noisy in CASES[:20]:
        w, x = _values(noisy.circuit, i, 2)
        got = fused_dm(noisy, w, x, dtype=torch.complex64)
        assert got.dtype == torch.complex64
        assert float((got.to(DT) - naive_dm(noisy, w, x)).abs().max()) < 1e-5


def test_gradients_equal_naive_gradients():
    """Backprop through the fused blocks equals backprop through the naive reference."""
    for i, noisy in CASES[20:30]:
        c = noisy.circuit
        if not c.n_weights and not c.n_inputs:
            continue
        g = torch.Generator().manual_seed(i)
        n = noisy.n_wires
        obs = torch.randn(2 ** n, 2 ** n, generator=g, dtype=torch.float64).to(DT)
        obs = obs + obs.conj().T
        grads = []
        for fn in (fused_dm, naive_dm):
            w, x = _values(c, i, 2, grad=True)
            out = torch.einsum("bij,ji->", fn(noisy, w, x), obs).real
            out.backward()
            grads.append((w.grad.clone() if c.n_weights else None, x.grad.clone() if x is not None else None))
        for a, b in zip(*grads):
            if a is not None:
                assert torch.allclose(a, b, atol=1e-10), (i, a, b)


def test_channels_only_and_empty_circuits():
    empty = NoisyCircuit.plain(tq.Circuit(2))
    want = torch.zeros(1, 4, 4, dtype=DT)
    want[0, 0, 0] = 1
    assert torch.equal(fused_dm(empty), want)
    only = NoisyCircuit(tq.Circuit(2), (ChannelOp(C.tensor(C.bit_flip(0.25), C.bit_flip(0.5)), (1, 0)),))
    assert torch.allclose(fused_dm(only)[0].diagonal().real,
                          torch.tensor([0.375, 0.125, 0.375, 0.125], dtype=torch.float64), atol=1e-15)
    check(only)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_variadic_gates_with_noise(k):
    """MultiRZ / MCX / QubitUnitary blocks of several widths, with channels on them."""
    rng = np.random.default_rng(k)
    n = 4
    items = [("H", [q]) for q in range(n)]
    wires = [int(w) for w in rng.permutation(n)[:k]]
    items += [("MultiRZ", wires, X(0)), (random_channel(rng, k), wires)]
    items += [("QubitUnitary", wires, {"matrix": _unitary(rng, 2 ** k)}), (random_channel(rng, k), wires[::-1])]
    if k >= 2:
        items += [("MCX", wires), (random_kraus(rng, k, 2), wires)]
    noisy = build(n, items)
    w, x = _values(noisy.circuit, k, 3)
    check(noisy, w, x)


def test_max_block_wires_is_two():
    assert F.MAX_BLOCK_WIRES == 2
    noisy = build(3, [("H", [0]), ("CX", [0, 1]), ("CX", [1, 2]), (C.bit_flip(0.1), [2])])
    assert signature(noisy) == [("dense", (0, 1)), ("dense", (1, 2))]
    check(noisy)


def test_rotations_periodicity_not_pruned_wrongly():
    """A 4*pi rotation is the identity up to a global phase that cancels in rho."""
    noisy = build(1, [("RX", [0], 4 * math.pi), (C.amplitude_damping(0.5), [0]), ("H", [0])])
    check(noisy)


# --------------------------------------------------------------------------- memory of wide batched blocks

# The dense block superoperator of a wide block, built by the fusion module's block
# builder (the path every block wider than the fast engine's limit takes). Run in a
# subprocess under a 4 GiB address-space limit, so that an oversized allocation fails
# at once instead of swapping.
_WIDE_BATCHED = """
import resource, sys
limit = 4 << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import torch, tinyqml.qml as tq
from tinyqml.noise import fusion as F
from tinyqml.noise.model import NoisyCircuit
from tinyqml.qml.params import resolve
batch = int(sys.argv[1])
b = tq.CircuitBuilder(5)
for q in range(5):
    b.h(q)
# one dense 5-wire block whose first item is a feature-dependent (batched) MultiRZ on all
# of the block's wires, in an order other than the block's sorted wire order
c = b.multirz([4, 3, 2, 1, 0], tq.feature(0)).rx(0, 0.3).build()
prog = F.compile_noisy(NoisyCircuit.plain(c))
(blk,) = [blk for blk in prog.blocks if len(blk.wires) == 5]
assert blk.kind == "dense", blk.kind
x = torch.linspace(-1, 1, batch, dtype=torch.float64).reshape(batch, 1)

def superop(rows):
    angles, batched = resolve(c, None, rows)
    data = F._op_data(prog, angles, batched, torch.complex128)
    return F._block_dense(prog, blk, data, torch.complex128, angles.device)

try:
    s = superop(x)
except RuntimeError as exc:
    if "can't allocate memory" in str(exc):
        print("OUT OF MEMORY:", str(exc)[-200:])
        sys.exit(3)
    raise
assert s.shape == (batch, 1024, 1024), s.shape
for r in range(batch):
    assert torch.allclose(s[r], superop(x[r:r + 1])[0], atol=1e-13)
print("ok")
"""


def _run_wide_batched(batch: int) -> None:
    import subprocess
    import sys

    pytest.importorskip("resource")
    out = subprocess.run([sys.executable, "-c", _WIDE_BATCHED, str(batch)], capture_output=True, text=True,
                         timeout=300)
    if out.returncode == 3:   # the memory blow-up this guards against
        raise AssertionError(out.stdout)
    if out.returncode != 0 or "ok" not in out.stdout:
        raise RuntimeError(f"the subprocess failed otherwise (rc={out.returncode}):\n{out.stderr[-3000:]}")


@pytest.mark.slow
def test_wide_block_unbatched_fits_in_memory():
    """Control for the test below: one row runs in well under the 4 GiB limit (~0.3 GiB)."""
    _run_wide_batched(1)


@pytest.mark.slow
def test_wide_block_batched_fits_in_memory():
    _run_wide_batched(2)
