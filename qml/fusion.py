"""Compile a circuit into fused blocks, and run them (forward and adjoint).

The reference pipeline applies one gate at a time. For speed the circuit is first
*compiled* (once per circuit, cached on it) into a short list of blocks:

- ``ProductInit``: the single-wire gates that open each wire act on ``|0>``; their
  product state is built directly as a Kronecker product of ``[B, 2]`` vectors.
- ``KronLayer``: pending single-wire gates on most wires, fused per wire into one
  ``2x2`` and per group of ``k`` consecutive wires into one ``2**k`` matrix. Each group
  is one batched GEMM on the leading axes whose output puts those axes last, so after
  all groups the axis order is back where it started (no transposes).
- ``Single``: a fused ``2x2`` on one wire.
- ``Perm``: consecutive permutation gates (CX, SWAP, CCX, ...) composed into one gather.
- ``Diag``: consecutive diagonal multi-wire gates (CZ, RZZ, CP, ...) merged into one
  full diagonal.
- ``Dense``: any other multi-wire gate, as a matrix on its wires.

Every block knows ``apply`` and ``backward`` (un-apply ``U^H`` and the gradient of a
real loss w.r.t. its tensor), which gives an adjoint method whose memory does not
grow with the number of gates (:class:`AdjointRun`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from tinyqml.qml import gates as G
from tinyqml.qml import kernels as K
from tinyqml.qml.circuit import Circuit, Op

Tensor = torch.Tensor

#: rows per chunk are chosen so that one chunk of the state is about this many bytes
CHUNK_BYTES = 2 * 1024 * 1024


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class ProductInit:
    runs: tuple[tuple[int, ...], ...]  # per wire: op indices of its opening single-wire gates


@dataclass(frozen=True)
class KronLayer:
    runs: tuple[tuple[int, ...], ...]  # per wire: op indices (empty = identity)
    groups: tuple[tuple[int, int], ...]  # (first wire, size) partition of 0..n-1


@dataclass(frozen=True)
class Single:
    wire: int
    run: tuple[int, ...]


@dataclass(frozen=True)
class Perm:
    ops: tuple[int, ...]


@dataclass(frozen=True)
class Diag:
    ops: tuple[int, ...]


@dataclass(frozen=True)
class Dense:
    op: int


Block = KronLayer | Single | Perm | Diag | Dense


@dataclass
class Program:
    """A compiled circuit: optional product-state opening and a list of blocks."""

    n: int
    ops: tuple[Op, ...]
    slots: tuple[tuple[int, ...], ...]  # per op: its parameter slot indices
    init: ProductInit | None
    blocks: list[Block] = field(default_factory=list)
    _perm_cache: dict = field(default_factory=dict)

    def perm_index(self, block: Perm, device: torch.device) -> tuple[Tensor, Tensor]:
        key = (block.ops, str(device))
        if key not in self._perm_cache:
            src = torch.arange(2**self.n)
            for i in block.ops:
                op = self.ops[i]
                assert op.gate.permutation is not None
                step = K.full_permutation(op.gate.permutation(len(op.wires)), op.wires, self.n)
                src = src[step]
            inv = torch.empty_like(src)
            inv[src] = torch.arange(2**self.n)
            self._perm_cache[key] = (src.to(device), inv.to(device))
        return self._perm_cache[key]


# --------------------------------------------------------------------------- compile


def group_size(n: int) -> int:
    """Wires per Kronecker group: one group for small registers, 4 wires (16x16) beyond."""
    return n if n <= 5 else 4


def compile_circuit(circuit: Circuit) -> Program:
    """Compile (and cache on the circuit) the fused block program."""
    cached = circuit.__dict__.get("_tinyqml_program")
    if cached is not None:
        return cached
    n, ops = circuit.n_wires, circuit.ops
    slots, pos = [], 0
    for op in ops:
        slots.append(tuple(range(pos, pos + len(op.params))))
        pos += len(op.params)
    prog = Program(n=n, ops=ops, slots=tuple(slots), init=None)
    pending: list[list[int]] = [[] for _ in range(n)]
    started = False

    def flush(wires: Sequence[int]) -> None:
        nonlocal started
        if not started:
            prog.init = ProductInit(tuple(tuple(r) for r in pending))
            for r in pending:
                r.clear()
            started = True
            return
        busy = [w for w in range(n) if pending[w]]
        if not busy or not any(pending[w] for w in wires):
            return
        if len(busy) * 2 >= n and n > 1:
            k = group_size(n)
            groups = tuple((a, min(k, n - a)) for a in range(0, n, k))
            prog.blocks.append(KronLayer(tuple(tuple(r) for r in pending), groups))
            for r in pending:
                r.clear()
        else:
            for w in wires:
                if pending[w]:
                    prog.blocks.append(Single(w, tuple(pending[w])))
                    pending[w].clear()

    for i, op in enumerate(ops):
        if len(op.wires) == 1:
            pending[op.wires[0]].append(i)
            continue
        flush(op.wires)
        st = op.gate.structure
        last = prog.blocks[-1] if prog.blocks else None
        if st == "permutation":
            if isinstance(last, Perm):
                prog.blocks[-1] = Perm(last.ops + (i,))
            else:
                prog.blocks.append(Perm((i,)))
        elif st == "diagonal":
            if isinstance(last, Diag):
                prog.blocks[-1] = Diag(last.ops + (i,))
            else:
                prog.blocks.append(Diag((i,)))
        else:
            prog.blocks.append(Dense(i))
    flush(range(n))
    object.__setattr__(circuit, "_tinyqml_program", prog)
    return prog


# --------------------------------------------------------------------------- materialize


def _eye2(b: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.eye(2, dtype=dtype, device=device).expand(b, 2, 2)


def op_matrices(prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype,
                wanted: Sequence[int]) -> dict[int, Tensor]:
    """Matrices (or diagonals for diagonal multi-wire gates) of the ops in ``wanted``.

    Ops of one gate kind and batchedness are built in one vectorized call.
    """
    groups: dict[tuple, list[int]] = {}
    for i in wanted:
        op = prog.ops[i]
        is_b = any(batched[s] for s in prog.slots[i])
        groups.setdefault((op.gate.name, len(op.wires), is_b, op.matrix is not None and i), []).append(i)
    out: dict[int, Tensor] = {}
    dev = angles.device
    for (name, k, is_b, _), idx in groups.items():
        gate = prog.ops[idx[0]].gate
        if gate is G.QubitUnitary:
            m = torch.tensor(prog.ops[idx[0]].unitary_array(), dtype=dtype, device=dev).unsqueeze(0)
            out[idx[0]] = m
            continue
        rows = angles if is_b else angles[:1]
        ba = rows.shape[0]
        cols = [s for i in idx for s in prog.slots[i]]
        p = rows[:, cols].reshape(ba * len(idx), gate.num_params) if cols else rows.new_zeros(ba * len(idx), 0)
        diag = gate.structure == "diagonal" and k > 1
        fn = gate.diagonal if diag else gate.matrix
        assert fn is not None
        m = fn(p, k, dtype)
        m = m.reshape((ba, len(idx)) + m.shape[1:])
        for j, i in enumerate(idx):
            out[i] = m[:, j]
    return out


def _run_matrix(run: Sequence[int], mats: dict[int, Tensor], dtype: torch.dtype, device: torch.device) -> Tensor:
    acc = None
    for i in run:
        m = mats[i]
        acc = m if acc is None else m @ acc
    return _eye2(1, dtype, device) if acc is None else acc


def _kron(a: Tensor, b: Tensor) -> Tensor:
    ba = max(a.shape[0], b.shape[0])
    da, db = a.shape[-1], b.shape[-1]
    return (a[:, :, None, :, None] * b[:, None, :, None, :]).reshape(ba, da * db, da * db)


def _full_diag(prog: Program, block: Diag, mats: dict[int, Tensor]) -> Tensor:
    d = None
    for i in block.ops:
        lifted = K.lift_diagonal(mats[i], prog.ops[i].wires, prog.n)
        d = lifted if d is None else d * lifted
    assert d is not None
    return d


def materialize(prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype
                ) -> tuple[Tensor, list[list[Tensor]]]:
    """The opening product state ``[Ba, 2**n]`` and each block's tensors, built with autograd."""
    dev = angles.device
    # single-wire gates come back as [Ba, 2, 2] matrices, diagonal multi-wire gates as diagonals
    mats = op_matrices(prog, angles, batched, dtype, range(len(prog.ops)))
    n = prog.n
    if prog.init is not None:
        vecs = [_run_matrix(r, mats, dtype, dev)[:, :, 0] for r in prog.init.runs]
        psi0 = vecs[0]
        for v in vecs[1:]:
            psi0 = (psi0[:, :, None] * v[:, None, :]).reshape(max(psi0.shape[0], v.shape[0]), -1)
    else:
        psi0 = torch.zeros(1, 2**n, dtype=dtype, device=dev)
        psi0[0, 0] = 1
    tensors: list[list[Tensor]] = []
    for blk in prog.blocks:
        if isinstance(blk, KronLayer):
            wire_m = [_run_matrix(r, mats, dtype, dev) for r in blk.runs]
            gm = []
            for a, k in blk.groups:
                m = wire_m[a]
                for w in range(a + 1, a + k):
                    m = _kron(m, wire_m[w])
                gm.append(m)
            tensors.append(gm)
        elif isinstance(blk, Single):
            tensors.append([_run_matrix(blk.run, mats, dtype, dev)])
        elif isinstance(blk, Diag):
            tensors.append([_full_diag(prog, blk, mats)])
        elif isinstance(blk, Dense):
            op = prog.ops[blk.op]
            if op.gate.structure == "diagonal":
                tensors.append([torch.diag_embed(mats[blk.op])])
            else:
                tensors.append([mats[blk.op]])
        else:
            tensors.append([])
    return psi0, tensors


# --------------------------------------------------------------------------- apply / backward


def _rows(t: Tensor, lo: int, hi: int) -> Tensor:
    return t if t.shape[0] == 1 else t[lo:hi]


def _kron_group_apply(x: Tensor, m: Tensor, k: int) -> Tensor:
    c = x.shape[0]
    d = 2**k
    v = x.reshape(c, d, -1).transpose(1, 2)
    out = v @ (m[0].transpose(0, 1) if m.shape[0] == 1 else m.transpose(1, 2))
    return out.reshape(c, -1)


def _kron_group_back(y: Tensor, g: Tensor, m: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    c = y.shape[0]
    d = 2**k
    mh = m.conj().transpose(-1, -2)
    yv = y.reshape(c, -1, d).transpose(1, 2)
    gv = g.reshape(c, -1, d).transpose(1, 2)
    x = (mh[0] @ yv if m.shape[0] == 1 else mh @ yv)
    gx = (mh[0] @ gv if m.shape[0] == 1 else mh @ gv)
    gm = gv @ x.conj().transpose(1, 2)
    if m.shape[0] == 1:
        gm = gm.sum(0, keepdim=True)
    return x.reshape(c, -1), gx.reshape(c, -1), gm


def apply_block(prog: Program, blk: Block, x: Tensor, ts: list[Tensor]) -> Tensor:
    n = prog.n
    if isinstance(blk, KronLayer):
        for (a, k), m in zip(blk.groups, ts):
            x = _kron_group_apply(x, m, k)
        return x
    if isinstance(blk, Single):
        return K.apply_single(x, ts[0], blk.wire, n)
    if isinstance(blk, Perm):
        src, _ = prog.perm_index(blk, x.device)
        return x.index_select(1, src)
    if isinstance(blk, Diag):
        return x * ts[0]
    assert isinstance(blk, Dense)
    return K.apply_dense(x, ts[0], prog.ops[blk.op].wires, n)


def backward_block(prog: Program, blk: Block, y: Tensor, g: Tensor, ts: list[Tensor]
                   ) -> tuple[Tensor, Tensor, list[Tensor | None]]:
    """Given the block's output state ``y`` and gradient ``g``: input state, input gradient, tensor grads."""
    n = prog.n
    if isinstance(blk, KronLayer):
        grads: list[Tensor | None] = [None] * len(ts)
        for j in range(len(ts) - 1, -1, -1):
            y, g, grads[j] = _kron_group_back(y, g, ts[j], blk.groups[j][1])
        return y, g, grads
    if isinstance(blk, Perm):
        _, inv = prog.perm_index(blk, y.device)
        return y.index_select(1, inv), g.index_select(1, inv), []
    if isinstance(blk, Diag):
        d = ts[0]
        x = y * d.conj()
        gd = g * x.conj()
        if d.shape[0] == 1:
            gd = gd.sum(0, keepdim=True)
        return x, g * d.conj(), [gd]
    m = ts[0]
    mh = m.conj().transpose(-1, -2)
    batched = m.shape[0] != 1
    if isinstance(blk, Single):
        x = K.apply_single(y, mh, blk.wire, n)
        return x, K.apply_single(g, mh, blk.wire, n), [K.single_grad(g, x, blk.wire, n, batched)]
    assert isinstance(blk, Dense)
    wires = prog.ops[blk.op].wires
    x = K.apply_dense(y, mh, wires, n)
    return x, K.apply_dense(g, mh, wires, n), [K.dense_grad(g, x, wires, n, batched)]


def run_blocks(prog: Program, psi: Tensor, tensors: list[list[Tensor]], lo: int = 0, hi: int | None = None) -> Tensor:
    """Apply every block to ``psi`` (rows ``lo:hi`` of the batched tensors)."""
    hi = psi.shape[0] if hi is None else hi
    for blk, ts in zip(prog.blocks, tensors):
        psi = apply_block(prog, blk, psi, [_rows(t, lo, hi) for t in ts])
    return psi


def chunk_rows(n: int, dtype: torch.dtype, device: torch.device) -> int:
    if device.type != "cpu":
        return 1 << 30
    item = 16 if dtype == torch.complex128 else 8
    return max(1, CHUNK_BYTES // ((2**n) * item))


def batch_of(psi0: Tensor, tensors: list[list[Tensor]]) -> int:
    b = psi0.shape[0]
    for ts in tensors:
        for t in ts:
            b = max(b, t.shape[0])
    return b


def run_chunked(prog: Program, psi0: Tensor, tensors: list[list[Tensor]]) -> Tensor:
    """Forward without autograd, chunk by chunk so each chunk's state stays in cache."""
    b = batch_of(psi0, tensors)
    step = chunk_rows(prog.n, psi0.dtype, psi0.device)
    if b <= step:
        return run_blocks(prog, psi0.expand(b, -1), tensors)
    out = torch.empty(b, 2**prog.n, dtype=psi0.dtype, device=psi0.device)
    for lo in range(0, b, step):
        hi = min(b, lo + step)
        out[lo:hi] = run_blocks(prog, _rows(psi0, lo, hi).expand(hi - lo, -1), tensors, lo, hi)
    return out


class AdjointRun(torch.autograd.Function):
    """``psi = U(tensors) psi0`` with the adjoint method as its backward.

    The backward keeps only the final state and walks the blocks in reverse,
    un-applying each (``U^H``) to the state and to the incoming gradient, so memory
    does not depend on the number of gates.
    """

    @staticmethod
    def forward(ctx, prog: Program, sizes: tuple[int, ...], psi0: Tensor, *flat: Tensor) -> Tensor:  # type: ignore[override]
        tensors = _unflatten(flat, sizes)
        with torch.no_grad():
            psi = run_chunked(prog, psi0, tensors)
        ctx.prog, ctx.sizes, ctx.psi0_rows = prog, sizes, psi0.shape[0]
        ctx.save_for_backward(psi, *flat)
        return psi

    @staticmethod
    def backward(ctx, g_out: Tensor):  # type: ignore[override]
        psi, *flat = ctx.saved_tensors
        prog, sizes = ctx.prog, ctx.sizes
        tensors = _unflatten(tuple(flat), sizes)
        grads = [torch.zeros_like(t) for t in flat]
        gtens = _unflatten(tuple(grads), sizes)
        b = psi.shape[0]
        step = chunk_rows(prog.n, psi.dtype, psi.device)
        g_psi0 = torch.empty_like(psi)
        with torch.no_grad():
            for lo in range(0, b, step):
                hi = min(b, lo + step)
                y, g = psi[lo:hi], g_out[lo:hi]
                for bi in range(len(prog.blocks) - 1, -1, -1):
                    ts = [_rows(t, lo, hi) for t in tensors[bi]]
                    y, g, gts = backward_block(prog, prog.blocks[bi], y, g, ts)
                    for t, acc, gt in zip(tensors[bi], gtens[bi], gts):
                        if gt is None:
                            continue
                        if t.shape[0] == 1:
                            acc += gt
                        else:
                            acc[lo:hi] += gt
                g_psi0[lo:hi] = g
        if ctx.psi0_rows == 1 and b > 1:
            g_psi0 = g_psi0.sum(0, keepdim=True)
        return (None, None, g_psi0, *grads)


def _flatten(tensors: list[list[Tensor]]) -> tuple[tuple[Tensor, ...], tuple[int, ...]]:
    return tuple(t for ts in tensors for t in ts), tuple(len(ts) for ts in tensors)


def _unflatten(flat: Sequence[Tensor], sizes: Sequence[int]) -> list[list[Tensor]]:
    out, pos = [], 0
    for s in sizes:
        out.append(list(flat[pos : pos + s]))
        pos += s
    return out


def use_unitary(prog: Program, psi0: Tensor, tensors: list[list[Tensor]]) -> bool:
    """Small registers with a shared (unbatched) circuit: build the circuit's unitary once."""
    if prog.n > 6 or not prog.blocks:
        return False
    if any(t.shape[0] != 1 for ts in tensors for t in ts):
        return False
    return psi0.shape[0] > 2**prog.n // 2


def execute(prog: Program, psi0: Tensor, tensors: list[list[Tensor]], adjoint: bool) -> Tensor:
    """Final states ``[B, 2**n]``: adjoint-method autograd or plain autograd through the blocks."""
    if use_unitary(prog, psi0, tensors):
        eye = torch.eye(2**prog.n, dtype=psi0.dtype, device=psi0.device)
        ut = execute(prog, eye, tensors, adjoint) if not adjoint else _adjoint(prog, eye, tensors)
        return psi0 @ ut
    if adjoint:
        return _adjoint(prog, psi0, tensors)
    return run_blocks(prog, psi0.expand(batch_of(psi0, tensors), -1), tensors)


def _adjoint(prog: Program, psi0: Tensor, tensors: list[list[Tensor]]) -> Tensor:
    flat, sizes = _flatten(tensors)
    return AdjointRun.apply(prog, sizes, psi0, *flat)


def reference_run(circuit: Circuit, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype,
                  fast: bool = True) -> Tensor:
    """Gate-by-gate simulation with the kernel registry (``fast=False``: dense fallback only)."""
    prog = compile_circuit(circuit)
    n = circuit.n_wires
    b = angles.shape[0] if any(batched) else 1
    psi = torch.zeros(b, 2**n, dtype=dtype, device=angles.device)
    psi[:, 0] = 1
    for i, op in enumerate(circuit.ops):
        cols = list(prog.slots[i])
        is_b = any(batched[s] for s in cols)
        p = (angles if is_b else angles[:1])[:, cols] if cols else angles.new_zeros(1, 0)
        u = torch.tensor(op.unitary_array(), dtype=dtype, device=angles.device) if op.matrix is not None else None
        psi = K.apply_gate(psi, op.gate, p, op.wires, n, unitary=u, fast=fast)
    return psi
