"""Compile a circuit into fused blocks, and run them (forward and adjoint).

The reference pipeline applies one gate at a time. For speed the circuit is first
*compiled* (once per circuit, cached on it) into a short list of blocks:

- ``ProductInit``: the single-wire gates that open each wire act on ``|0>``; their
  product state is built directly as a Kronecker product of ``[B, 2]`` vectors.
- ``KronLayer``: pending single-wire gates on most wires, fused per wire into one
  ``2x2`` and per group of ``k`` consecutive wires into one ``2**k`` matrix. Each group
  is one batched GEMM on the leading axes whose output puts those axes last, so after
  all groups the axis order is back where it started (no transposes).
  When every gate of the layer is real (RY, H, X, ...) once leading and trailing
  diagonal gates (RZ, P, S, ...) are split off into ``Diag`` blocks, the layer is
  *real*: real GEMMs on the real view of the state, about half the work.
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
    real: bool = False  # every gate real: real GEMMs on the real view of the state


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
            self._perm_cache[key] = (src.to(device, torch.int32), inv.to(device, torch.int32))
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

    def add_diag(idx: tuple[int, ...]) -> None:
        last = prog.blocks[-1] if prog.blocks else None
        if isinstance(last, Diag):
            prog.blocks[-1] = Diag(last.ops + idx)
        else:
            prog.blocks.append(Diag(idx))

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
            maybe = [_split_real(r, ops) for r in pending]
            split = [sp for sp in maybe if sp is not None]
            if len(split) == len(maybe):
                pre = tuple(i for sp in split for i in sp[0])
                post = tuple(i for sp in split for i in sp[2])
                if pre:
                    add_diag(pre)
                prog.blocks.append(KronLayer(tuple(tuple(sp[1]) for sp in split), groups, real=True))
                if post:
                    add_diag(post)
            else:
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
            add_diag((i,))
        else:
            prog.blocks.append(Dense(i))
    flush(range(n))
    object.__setattr__(circuit, "_tinyqml_program", prog)
    return prog


def _split_real(run: Sequence[int], ops: Sequence[Op]) -> tuple[list[int], list[int], list[int]] | None:
    """Split a run into (leading diagonal, real middle, trailing diagonal) gates, or None."""
    diag = [ops[i].gate.structure == "diagonal" for i in run]
    real = [ops[i].gate.real for i in run]
    a = 0
    while a < len(run) and diag[a] and not real[a]:
        a += 1
    b = len(run)
    while b > a and diag[b - 1] and not real[b - 1]:
        b -= 1
    if not all(real[a:b]):
        return None
    return list(run[:a]), list(run[a:b]), list(run[b:])


# --------------------------------------------------------------------------- materialize


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


class WireMatrices:
    """All single-wire gate matrices of a circuit in two stacked tensors.

    ``shared [1, N+1, 2, 2]`` holds the gates that do not read inputs, ``per_row
    [B, M+1, 2, 2]`` those that do; the last entry of each is the identity. Runs of
    gates per wire are then multiplied for all wires of a block at once.
    """

    def __init__(self, prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype) -> None:
        singles = [i for i, op in enumerate(prog.ops) if len(op.wires) == 1]
        self.is_b = {i: any(batched[s] for s in prog.slots[i]) for i in singles}
        mats = op_matrices(prog, angles, batched, dtype, singles)
        eye = torch.eye(2, dtype=dtype, device=angles.device)
        self.ba = angles.shape[0]
        self.slot: dict[int, int] = {}
        parts: dict[bool, list[Tensor]] = {False: [], True: []}
        for i in singles:
            self.slot[i] = len(parts[self.is_b[i]])
            parts[self.is_b[i]].append(mats[i].expand(1 if not self.is_b[i] else self.ba, 2, 2))
        self.shared = torch.stack(parts[False] + [eye.unsqueeze(0)], 1)
        self.per_row = torch.stack(parts[True] + [eye.expand(self.ba, 2, 2)], 1) if parts[True] else None
        self._both: Tensor | None = None

    def runs_product(self, runs: Sequence[Sequence[int]]) -> Tensor:
        """``[Bm, len(runs), 2, 2]``: per run, the product of its gates (identity for empty runs)."""
        ops = [i for r in runs for i in r]
        any_b = any(self.is_b[i] for i in ops)
        if any_b:
            src, n_shared = self._combined(), self.shared.shape[1]
            ident = n_shared - 1

            def index(i: int) -> int:
                return n_shared + self.slot[i] if self.is_b[i] else self.slot[i]
        else:
            src, ident = self.shared, self.shared.shape[1] - 1

            def index(i: int) -> int:
                return self.slot[i]
        depth = max((len(r) for r in runs), default=0)
        acc = None
        for j in range(depth):
            idx = [index(r[j]) if j < len(r) else ident for r in runs]
            m = src[:, idx]
            acc = m if acc is None else m @ acc
        if acc is None:
            acc = self.shared[:, [ident] * len(runs)]
        return acc

    def _combined(self) -> Tensor:
        if self._both is None:
            assert self.per_row is not None
            self._both = torch.cat([self.shared.expand(self.ba, -1, -1, -1), self.per_row], 1)
        return self._both


def _kron_groups(w: Tensor, groups: Sequence[tuple[int, int]]) -> list[Tensor]:
    """Kronecker products of consecutive wire matrices ``w [Bm, n, 2, 2]`` per group.

    Groups of equal size are built together; the result keeps the order of ``groups``.
    """
    by_start: dict[int, Tensor] = {}
    bm = w.shape[0]
    for k in {k for _, k in groups}:
        starts = [a for a, kk in groups if kk == k]
        sel = w[:, [a + t for a in starts for t in range(k)]].reshape(bm, len(starts), k, 2, 2)
        m = sel[:, :, 0]
        for t in range(1, k):
            d = m.shape[-1]
            m = (m[..., :, None, :, None] * sel[:, :, t, None, :, None, :]).reshape(bm, len(starts), 2 * d, 2 * d)
        for j, a in enumerate(starts):
            by_start[a] = m[:, j]
    return [by_start[a] for a, _ in groups]


def _kron_eye2(m: Tensor) -> Tensor:
    """``kron(m, I2)`` for ``[Bm, d, d]``: acts on the group's wires and leaves (re, im) alone."""
    eye = torch.eye(2, dtype=m.dtype, device=m.device)
    d = m.shape[-1]
    return (m[:, :, None, :, None] * eye[None, None, :, None, :]).reshape(m.shape[0], 2 * d, 2 * d)


def _full_diag(prog: Program, block: Diag, mats: dict[int, Tensor], wm: "WireMatrices") -> Tensor:
    """The block's full diagonal ``[Bm, 2**n]``: single-wire factors as one Kronecker product."""
    n = prog.n
    singles = [i for i in block.ops if len(prog.ops[i].wires) == 1]
    d = None
    if singles:
        runs: list[list[int]] = [[] for _ in range(n)]
        for i in singles:
            runs[prog.ops[i].wires[0]].append(i)
        d = product_state(torch.diagonal(wm.runs_product(runs), dim1=-2, dim2=-1))
    for i in block.ops:
        if len(prog.ops[i].wires) > 1:
            lifted = K.lift_diagonal(mats[i], prog.ops[i].wires, n)
            d = lifted if d is None else d * lifted
    assert d is not None
    return d


def product_state(vecs: Tensor) -> Tensor:
    """``[Bm, 2**n]`` Kronecker product of per-wire vectors ``vecs [Bm, n, 2]`` (wire 0 first).

    Built as a balanced tree of batched outer products, so the full-size tensor is
    written once and autograd's backward is two batched GEMMs at that size.
    """
    n = vecs.shape[1]
    if n == 1:
        return vecs[:, 0]
    h = n // 2
    a, b = product_state(vecs[:, :h]), product_state(vecs[:, h:])
    return torch.bmm(a.unsqueeze(2), b.unsqueeze(1)).reshape(vecs.shape[0], -1)


def materialize(prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype
                ) -> tuple[Tensor, list[list[Tensor]]]:
    """The opening per-wire vectors ``[Ba, n, 2]`` and each block's tensors, built with autograd.

    The opening state is their Kronecker product (:func:`product_state`); it is built
    chunk by chunk when the circuit runs, never as a whole batch up front.
    """
    n = prog.n
    wm = WireMatrices(prog, angles, batched, dtype)
    multi = [i for i, op in enumerate(prog.ops) if len(op.wires) > 1]
    mats = op_matrices(prog, angles, batched, dtype, multi)
    init_runs = prog.init.runs if prog.init is not None else ((),) * n
    vecs = wm.runs_product(init_runs)[..., 0]
    tensors: list[list[Tensor]] = []
    for blk in prog.blocks:
        if isinstance(blk, KronLayer):
            w = wm.runs_product(blk.runs)
            if blk.real:
                gm = _kron_groups(w.real, blk.groups)
                gm[-1] = _kron_eye2(gm[-1])
                tensors.append(gm)
            else:
                tensors.append(_kron_groups(w, blk.groups))
        elif isinstance(blk, Single):
            tensors.append([wm.runs_product([blk.run])[:, 0]])
        elif isinstance(blk, Diag):
            tensors.append([_full_diag(prog, blk, mats, wm)])
        elif isinstance(blk, Dense):
            tensors.append([mats[blk.op]])
        else:
            tensors.append([])
    return vecs, tensors


# --------------------------------------------------------------------------- apply / backward


def _rows(t: Tensor, lo: int, hi: int) -> Tensor:
    return t if t.shape[0] == 1 else t[lo:hi]


def _kron_group_apply(x: Tensor, m: Tensor, k: int) -> Tensor:
    c = x.shape[0]
    d = 2**k
    v = x.reshape(c, d, -1).transpose(1, 2)
    out = v @ (m[0].transpose(0, 1) if m.shape[0] == 1 else m.transpose(1, 2))
    return out.reshape(c, -1)


def _kron_group_back(yc: Tensor, g: Tensor, m: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Undo one Kronecker group on the conjugated state ``yc``; returns (conj input, input grad, matrix grad)."""
    c, d = yc.shape[0], 2**k
    mt = m.transpose(-1, -2).expand(c, d, d)
    mh = m.conj().transpose(-1, -2).resolve_conj().expand(c, d, d)
    yv = yc.reshape(c, -1, d).transpose(1, 2)
    gv = g.reshape(c, -1, d).transpose(1, 2)
    xc = torch.bmm(mt, yv)
    gx = torch.bmm(mh, gv)
    gm = torch.bmm(gv, xc.transpose(1, 2))
    if m.shape[0] == 1:
        gm = gm.sum(0, keepdim=True)
    return xc.reshape(c, -1), gx.reshape(c, -1), gm


def apply_block(prog: Program, blk: Block, x: Tensor, ts: list[Tensor]) -> Tensor:
    n = prog.n
    if isinstance(blk, KronLayer):
        if blk.real:
            return real_kron_apply(x, ts, blk)
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


def wants_conjugate(blk: Block) -> bool:
    """Whether a block's backward runs on the conjugated state (complex matrices) or the state itself."""
    return not (isinstance(blk, (Diag, Perm)) or (isinstance(blk, KronLayer) and blk.real))


def backward_block(prog: Program, blk: Block, yc: Tensor, g: Tensor, ts: list[Tensor]
                   ) -> tuple[Tensor, Tensor, list[Tensor | None]]:
    """One adjoint step.

    Takes the output state and gradient ``g``; returns the input state, the input
    gradient and the gradients of the block's tensors. Blocks with complex matrices take
    the *conjugated* state (``dL/dM = g x^H`` then needs no conjugation of a large operand);
    real layers, diagonals and permutations take the state itself
    (:func:`wants_conjugate`).
    """
    n = prog.n
    if isinstance(blk, KronLayer) and blk.real:
        return _real_kron_back(yc, g, ts)
    if isinstance(blk, KronLayer):
        grads: list[Tensor | None] = [None] * len(ts)
        for j in range(len(ts) - 1, -1, -1):
            yc, g, grads[j] = _kron_group_back(yc, g, ts[j], blk.groups[j][1])
        return yc, g, grads
    if isinstance(blk, Perm):
        _, inv = prog.perm_index(blk, yc.device)
        return yc.index_select(1, inv), g.index_select(1, inv), []
    if isinstance(blk, Diag):
        dc = ts[0].conj().resolve_conj()
        x = yc * dc
        gd = g * x.conj()
        if dc.shape[0] == 1:
            gd = gd.sum(0, keepdim=True)
        return x, g * dc, [gd]
    m = ts[0]
    mt = m.transpose(-1, -2)
    mh = m.conj().transpose(-1, -2)
    batched = m.shape[0] != 1
    if isinstance(blk, Single):
        xc = K.apply_single(yc, mt, blk.wire, n)
        return xc, K.apply_single(g, mh, blk.wire, n), [K.single_grad(g, xc, blk.wire, n, batched, x_is_conj=True)]
    assert isinstance(blk, Dense)
    wires = prog.ops[blk.op].wires
    xc = K.apply_dense(yc, mt, wires, n)
    return xc, K.apply_dense(g, mh, wires, n), [K.dense_grad(g, xc, wires, n, batched, x_is_conj=True)]


def run_blocks(prog: Program, psi: Tensor, tensors: list[list[Tensor]], lo: int = 0, hi: int | None = None) -> Tensor:
    """Apply every block to ``psi`` (rows ``lo:hi`` of the batched tensors)."""
    hi = psi.shape[0] if hi is None else hi
    for blk, ts in zip(prog.blocks, tensors):
        psi = apply_block(prog, blk, psi, [_rows(t, lo, hi) for t in ts])
    return psi


# --------------------------------------------------------------------------- real layers


def _row_matrices(m: Tensor, rows: int) -> Tensor:
    return m.expand(rows, -1, -1) if m.shape[0] == 1 else m


def real_kron_apply(x: Tensor, ms: list[Tensor], blk: KronLayer) -> Tensor:
    """Apply a real Kronecker layer to complex rows ``x [C, N]`` with real GEMMs.

    The complex state is viewed as real ``[C, N, 2]``: the (re, im) axis is one more
    trailing axis. The groups rotate through the wire axes as in the complex case;
    the last group's matrix is ``kron(M, I2)`` so the (re, im) axis ends up last again.
    """
    rows = x.shape[0]
    xr = torch.view_as_real(x).reshape(rows, -1)
    for m in ms:
        d = m.shape[-1]
        v = xr.reshape(rows, d, -1).transpose(1, 2)
        xr = torch.bmm(v, _row_matrices(m.transpose(-1, -2), rows)).reshape(rows, -1)
    return torch.view_as_complex(xr.reshape(rows, -1, 2))


def _real_kron_back(y: Tensor, g: Tensor, ms: list[Tensor]) -> tuple[Tensor, Tensor, list[Tensor | None]]:
    """Backward of :func:`real_kron_apply` on the (unconjugated) state ``y``.

    For a real orthogonal matrix the state and the gradient both un-apply with ``M^T``,
    and ``dL/dM = sum g x^T`` over the real views (no conjugation anywhere).
    """
    rows = y.shape[0]
    xr = torch.view_as_real(y).reshape(rows, -1)
    gr = torch.view_as_real(g).reshape(rows, -1)
    grads: list[Tensor | None] = [None] * len(ms)
    for j in range(len(ms) - 1, -1, -1):
        m = ms[j]
        d = m.shape[-1]
        mt = _row_matrices(m.transpose(-1, -2), rows)
        gv = gr.reshape(rows, -1, d).transpose(1, 2)
        xr = torch.bmm(mt, xr.reshape(rows, -1, d).transpose(1, 2))
        gm = torch.bmm(gv, xr.transpose(1, 2))
        grads[j] = gm.sum(0, keepdim=True) if m.shape[0] == 1 else gm
        gr = torch.bmm(mt, gv).reshape(rows, -1)
        xr = xr.reshape(rows, -1)
    return (torch.view_as_complex(xr.reshape(rows, -1, 2)), torch.view_as_complex(gr.reshape(rows, -1, 2)), grads)


def chunk_rows(n: int, dtype: torch.dtype, device: torch.device) -> int:
    if device.type != "cpu":
        return 1 << 30
    item = 16 if dtype == torch.complex128 else 8
    return max(1, CHUNK_BYTES // ((2**n) * item))


def batch_of(init: Tensor, tensors: list[list[Tensor]]) -> int:
    b = init.shape[0]
    for ts in tensors:
        for t in ts:
            b = max(b, t.shape[0])
    return b


def initial_rows(init: Tensor, lo: int, hi: int) -> Tensor:
    """Rows ``lo:hi`` of the opening state; ``init`` is per-wire vectors ``[Bm, n, 2]`` or a state ``[Bm, 2**n]``."""
    part = _rows(init, lo, hi)
    psi = product_state(part) if init.dim() == 3 else part
    return psi.expand(hi - lo, -1)


def run_chunked(prog: Program, init: Tensor, tensors: list[list[Tensor]]) -> Tensor:
    """Forward without autograd, chunk by chunk so each chunk's state stays in cache."""
    b = batch_of(init, tensors)
    step = chunk_rows(prog.n, tensors[0][0].dtype if prog.blocks and tensors[0] else init.dtype, init.device)
    if b <= step:
        return run_blocks(prog, initial_rows(init, 0, b), tensors)
    out = torch.empty(b, 2**prog.n, dtype=init.dtype, device=init.device)
    for lo in range(0, b, step):
        hi = min(b, lo + step)
        out[lo:hi] = run_blocks(prog, initial_rows(init, lo, hi), tensors, lo, hi)
    return out


class AdjointRun(torch.autograd.Function):
    """``psi = U(tensors) psi0`` with the adjoint method as its backward.

    The backward keeps only the final state and walks the blocks in reverse,
    un-applying each (``U^H``) to the state and to the incoming gradient, so memory
    does not depend on the number of gates. The opening product state is rebuilt per
    chunk, and its gradient taken there, so it never exists for the whole batch.
    """

    @staticmethod
    def forward(ctx, prog: Program, sizes: tuple[int, ...], init: Tensor, *flat: Tensor) -> Tensor:  # type: ignore[override]
        tensors = _unflatten(flat, sizes)
        with torch.no_grad():
            psi = run_chunked(prog, init, tensors)
        ctx.prog, ctx.sizes = prog, sizes
        ctx.save_for_backward(psi, init, *flat)
        return psi

    @staticmethod
    def backward(ctx, g_out: Tensor):  # type: ignore[override]
        psi, init, *flat = ctx.saved_tensors
        prog, sizes = ctx.prog, ctx.sizes
        tensors = _unflatten(tuple(flat), sizes)
        need = ctx.needs_input_grad[3:]
        grads = [torch.zeros_like(t) if nd else None for t, nd in zip(flat, need)]
        gtens = _unflatten(tuple(grads), sizes)
        g_init = torch.zeros_like(init) if ctx.needs_input_grad[2] else None
        b = psi.shape[0]
        step = chunk_rows(prog.n, psi.dtype, psi.device)
        with torch.no_grad():
            for lo in range(0, b, step):
                hi = min(b, lo + step)
                y, g, conj = psi[lo:hi], g_out[lo:hi], False
                for bi in range(len(prog.blocks) - 1, -1, -1):
                    ts = [_rows(t, lo, hi) for t in tensors[bi]]
                    if wants_conjugate(prog.blocks[bi]) != conj:
                        y, conj = torch.conj_physical(y), not conj
                    y, g, gts = backward_block(prog, prog.blocks[bi], y, g, ts)
                    for t, acc, gt in zip(tensors[bi], gtens[bi], gts):
                        if gt is None or acc is None:
                            continue
                        if t.shape[0] == 1:
                            acc += gt
                        else:
                            acc[lo:hi] += gt
                if g_init is not None:
                    _accumulate_init_grad(init, g_init, g, lo, hi)
        return (None, None, g_init, *grads)


def _accumulate_init_grad(init: Tensor, g_init: Tensor, g: Tensor, lo: int, hi: int) -> None:
    """Add the gradient of rows ``lo:hi`` of the opening state to ``g_init``."""
    if init.dim() == 3:
        with torch.enable_grad():
            v = _rows(init, lo, hi).detach().requires_grad_(True)
            (gv,) = torch.autograd.grad(product_state(v).expand(hi - lo, -1), v, g)
    else:
        gv = g.sum(0, keepdim=True) if init.shape[0] == 1 else g
    if init.shape[0] == 1:
        g_init += gv
    else:
        g_init[lo:hi] += gv


def _flatten(tensors: list[list[Tensor]]) -> tuple[tuple[Tensor, ...], tuple[int, ...]]:
    return tuple(t for ts in tensors for t in ts), tuple(len(ts) for ts in tensors)


def _unflatten(flat: Sequence[Tensor | None], sizes: Sequence[int]) -> list[list]:
    out, pos = [], 0
    for s in sizes:
        out.append(list(flat[pos : pos + s]))
        pos += s
    return out


#: registers up to this many wires may be simulated by building the circuit's unitary
UNITARY_MAX_WIRES = 6


def use_unitary(prog: Program, init: Tensor, tensors: list[list[Tensor]]) -> bool:
    """Small registers with a shared (unbatched) circuit body: build its unitary once."""
    if prog.n > UNITARY_MAX_WIRES or not prog.blocks:
        return False
    if any(t.shape[0] != 1 for ts in tensors for t in ts):
        return False
    return init.shape[0] > 2**prog.n // 2


def execute(prog: Program, init: Tensor, tensors: list[list[Tensor]], adjoint: bool) -> Tensor:
    """Final states ``[B, 2**n]``: adjoint-method autograd or plain autograd through the blocks.

    ``init`` is the opening per-wire vectors ``[Bm, n, 2]`` (or a full state ``[Bm, 2**n]``).
    """
    b = batch_of(init, tensors)
    if use_unitary(prog, init, tensors):
        eye = torch.eye(2**prog.n, dtype=init.dtype, device=init.device)
        ut = _adjoint(prog, eye, tensors) if adjoint else run_blocks(prog, eye, tensors)
        return initial_rows(init, 0, init.shape[0]) @ ut
    if adjoint:
        return _adjoint(prog, init, tensors)
    return run_blocks(prog, initial_rows(init, 0, b), tensors)


def _adjoint(prog: Program, init: Tensor, tensors: list[list[Tensor]]) -> Tensor:
    flat, sizes = _flatten(tensors)
    return AdjointRun.apply(prog, sizes, init, *flat)


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
