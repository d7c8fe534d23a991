"""Compile a noisy circuit into fused superoperator blocks, and run them.

Gates and channels are grouped into blocks of at most :data:`MAX_BLOCK_WIRES` wires
(a wider gate forms a block of its own): consecutive items whose wires fit in one
block are multiplied into one ``4**m x 4**m`` superoperator, so a noisy CNOT with the
single-qubit gates around it is one pass over the state. Blocks made only of basis
permutations (noiseless CX, SWAP, ...) are marked ``perm``, blocks made only of
diagonal gates and dephasing channels ``diag``.

:func:`run` executes the blocks as real Pauli transfer matrices on the Pauli
coefficients of the state (see the "Pauli transfer engine" section below: product-state
factors, cache-sized chunks of the batch over the CPU threads, one GEMM per block) and
returns the ququart layout; :func:`run_pauli` stops at the Pauli coefficients, which is
all that expectation values need. :func:`run_reference` applies the complex
superoperators to the whole ququart state, block by block (the reference, and the path
for blocks wider than :data:`MAX_TRANSFER_WIRES`).

Everything is differentiable by backpropagation w.r.t. weights and inputs.

>>> import torch, tinyqml.qml as tq
>>> from tinyqml.noise import NoiseModel, Depolarizing
>>> from tinyqml.qml.params import resolve
>>> c = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
>>> prog = compile_noisy(NoiseModel().add("CX", Depolarizing(0.1, 2)).apply(c))
>>> angles, batched = resolve(c, None, None)
>>> r = run_pauli(prog, angles, batched, torch.complex128)     # Tr(P rho), digits I X Y Z per wire
>>> [round(float(r[0, i]), 6) for i in (0, 5, 10, 15)]       # II, XX, YY, ZZ of a noisy Bell state
[1.0, 0.9, -0.9, 0.9]
>>> torch.allclose(run(prog, angles, batched, torch.complex128), run_reference(prog, angles, batched, torch.complex128))
True
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Iterator, Sequence

import torch

from tinyqml.noise import kernels as K
from tinyqml.noise.model import ChannelOp, NoisyCircuit
from tinyqml.qml import fusion as QF
from tinyqml.qml.circuit import Circuit

Tensor = torch.Tensor

#: blocks grow up to this many wires (a gate on more wires is a block of its own)
MAX_BLOCK_WIRES = 2


@dataclass(frozen=True)
class Block:
    """Items (op indices or channels) fused on ``wires``; ``kind`` is dense, perm or diag."""

    wires: tuple[int, ...]
    items: tuple[int | ChannelOp, ...]
    kind: str


@dataclass
class Program:
    n: int
    circuit: Circuit
    blocks: list[Block]
    _cache: dict = field(default_factory=dict)


def _item_wires(circuit: Circuit, item: int | ChannelOp) -> tuple[int, ...]:
    return item.wires if isinstance(item, ChannelOp) else circuit.ops[item].wires


def _item_kind(circuit: Circuit, item: int | ChannelOp) -> str:
    if isinstance(item, ChannelOp):
        s = item.channel.superoperator()
        off = s - torch.diag(torch.diagonal(s))
        return "diag" if float(off.abs().max()) < 1e-15 else "dense"
    gate = circuit.ops[item].gate
    if gate.structure == "permutation":
        return "perm"
    if gate.structure == "diagonal":
        return "diag"
    return "dense"


def _kind(kinds: Sequence[str]) -> str:
    if all(k == "perm" for k in kinds):
        return "perm"
    if all(k == "diag" for k in kinds):
        return "diag"
    return "dense"


def compile_noisy(noisy: NoisyCircuit) -> Program:
    """Fuse the steps of ``noisy`` into blocks (cached on the noisy circuit)."""
    cached = noisy.__dict__.get("_tinyqml_dm_program")
    if cached is not None:
        return cached
    circuit = noisy.circuit
    open_blocks: list[list] = []  # [wires(list), items(list)], in creation order
    owner: dict[int, list] = {}
    out: list[Block] = []

    def emit(blk: list) -> None:
        open_blocks.remove(blk)
        for w in blk[0]:
            owner.pop(w, None)
        kinds = [_item_kind(circuit, it) for it in blk[1]]
        out.append(Block(tuple(blk[0]), tuple(blk[1]), _kind(kinds)))

    for item in noisy.steps:
        wires = _item_wires(circuit, item)
        touched = []
        for w in wires:
            b = owner.get(w)
            if b is not None and b not in touched:
                touched.append(b)
        union = sorted({w for b in touched for w in b[0]} | set(wires))
        if len(touched) == 1 and set(wires) <= set(touched[0][0]):
            touched[0][1].append(item)
            continue
        if len(union) <= MAX_BLOCK_WIRES and touched:
            merged = [sorted(union), [it for b in sorted(touched, key=open_blocks.index) for it in b[1]]]
            for b in touched:
                open_blocks.remove(b)
            merged[1].append(item)
            open_blocks.append(merged)
            for w in merged[0]:
                owner[w] = merged
            continue
        for b in sorted(touched, key=open_blocks.index):
            emit(b)
        blk = [sorted(wires), [item]]
        open_blocks.append(blk)
        for w in wires:
            owner[w] = blk
    while open_blocks:
        emit(open_blocks[0])
    prog = Program(circuit.n_wires, circuit, out)
    object.__setattr__(noisy, "_tinyqml_dm_program", prog)
    return prog


# --------------------------------------------------------------------------- materialize


def _op_data(prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype) -> dict[int, Tensor]:
    """Matrices of every circuit op (diagonals for multi-wire diagonal gates)."""
    qprog = QF.compile_circuit(prog.circuit)
    return QF.op_matrices(qprog, angles, batched, dtype, range(len(prog.circuit.ops)))


def _item_superop(prog: Program, item: int | ChannelOp, data: dict[int, Tensor], dtype: torch.dtype) -> Tensor:
    """The item's superoperator ``[Bs, 4**k, 4**k]`` in ququart order."""
    if isinstance(item, ChannelOp):
        key = ("channel", id(item), dtype)
        if key not in prog._cache:
            s = item.channel.superoperator().to(dtype).unsqueeze(0)
            prog._cache[key] = (item, K.interleave(s, item.channel.n_wires))
        return prog._cache[key][1]
    op = prog.circuit.ops[item]
    k = len(op.wires)
    m = data[item]
    if m.dim() == 2:  # a multi-wire diagonal
        m = torch.diag_embed(m)
    return K.unitary_superop(m, k)


def _embed_apply(acc: Tensor, s: Tensor, pos: Sequence[int], m: int) -> Tensor:
    """``S_embedded @ acc`` for a block superoperator ``acc [Ba, 4**m, 4**m]``."""
    ba, bs = acc.shape[0], s.shape[0]
    b, d = max(ba, bs), 4 ** m
    # acc^T as one state per batch row on 2m ququarts (input index first, output index last):
    # s acts on the output ququarts, row by row, with no copy of s per column
    cols = acc.expand(b, d, d).transpose(1, 2).reshape(b, d * d)
    out = K.apply_superop(cols, s, [m + p for p in pos], 2 * m)
    return out.reshape(b, d, d).transpose(1, 2)


def _block_dense(prog: Program, blk: Block, data: dict[int, Tensor], dtype: torch.dtype, dev) -> Tensor:
    m = len(blk.wires)
    acc = None
    for it in blk.items:
        s = _item_superop(prog, it, data, dtype).to(dev)
        pos = [blk.wires.index(w) for w in _item_wires(prog.circuit, it)]
        if acc is None and pos == list(range(m)):
            acc = s
            continue
        if acc is None:
            acc = torch.eye(4 ** m, dtype=dtype, device=dev).unsqueeze(0)
        acc = _embed_apply(acc, s, pos, m)
    assert acc is not None
    return acc


def _block_diag(prog: Program, blk: Block, data: dict[int, Tensor], dtype: torch.dtype, dev) -> Tensor:
    m = len(blk.wires)
    acc = torch.ones(1, 4 ** m, dtype=dtype, device=dev)
    for it in blk.items:
        wires = _item_wires(prog.circuit, it)
        pos = [blk.wires.index(w) for w in wires]
        if isinstance(it, ChannelOp):
            s = _item_superop(prog, it, data, dtype).to(dev)
            d = torch.diagonal(s, dim1=1, dim2=2)
        else:
            x = data[it]
            diag = torch.diagonal(x, dim1=1, dim2=2) if x.dim() == 3 else x
            d = K.diagonal_superop(diag, len(wires))
        acc = K.apply_diagonal(acc, d, pos, m)
    return acc


def _block_perm(prog: Program, blk: Block, dev) -> Tensor:
    key = ("perm", blk, str(dev))
    if key not in prog._cache:
        m = len(blk.wires)
        src = torch.arange(4 ** m)
        for it in blk.items:
            op = prog.circuit.ops[it]  # type: ignore[index]
            assert op.gate.permutation is not None
            local = K.permutation_superop(op.gate.permutation(len(op.wires)), len(op.wires))
            pos = tuple(blk.wires.index(w) for w in op.wires)
            src = src[K.full_index(local, pos, m)]
        full = K.full_index(tuple(src.tolist()), blk.wires, prog.n)
        prog._cache[key] = full.to(dev)
    return prog._cache[key]


def run_reference(prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype) -> Tensor:
    """The final density matrices in the ququart layout, ``[B, 4**n]``: every block as a
    complex superoperator on the whole state (the reference for :func:`run`)."""
    dev = angles.device
    data = _op_data(prog, angles, batched, dtype) if prog.circuit.ops else {}
    state = K.initial_state(prog.n, dtype, dev)
    for blk in prog.blocks:
        if blk.kind == "perm":
            state = state.index_select(1, _block_perm(prog, blk, dev))
        elif blk.kind == "diag":
            state = K.apply_diagonal(state, _block_diag(prog, blk, data, dtype, dev), blk.wires, prog.n)
        else:
            state = K.apply_superop(state, _block_dense(prog, blk, data, dtype, dev), blk.wires, prog.n)
    return state


# --------------------------------------------------------------------------- Pauli transfer engine
#
# :func:`run` simulates in the real Pauli basis (:mod:`~tinyqml.noise.kernels`, "Pauli
# transfer form"): every block is a real ``4**m x 4**m`` PTM, a quarter of the complex
# arithmetic. On top of :func:`compile_noisy`'s blocks:
#
# - single-wire blocks are moved into the next (else the previous) block on their wire;
# - the register starts as a product of one-wire factors ``|0><0|``; a block merges the
#   factors it touches (Kronecker product) just before it acts, so early blocks run on
#   small states;
# - a block is applied as one GEMM on a view of its factor. One with one or two trailing
#   digits behind it (a slow GEMM shape) is widened to the end of the factor, and the
#   blocks right after it that fit inside are multiplied into it (a *unit*);
# - the batch is cut into chunks of about :data:`CHUNK_BYTES` that go through the whole
#   program while they stay in cache; factors shared by every row are computed once;
# - the real half of the change back to the ququart layout is multiplied into the last
#   unit on each wire, so only the ``X +- iY`` butterflies remain at the end.

#: blocks up to this many wires run as PTMs (a wider block sends the circuit to :func:`run_reference`)
MAX_TRANSFER_WIRES = 5
#: rows per chunk are chosen so that one chunk of the state is about this many bytes
CHUNK_BYTES = 2 * 2 ** 20
#: CPU chunks run on this many threads at once (None: ``torch.get_num_threads()``)
CHUNK_THREADS: int | None = None
#: a unit widened to the end of its factor holds at most this many wires
WIDEN_WIRES = 3
#: per wire, Pauli coefficients (I, X, Y, Z) -> (rho00, X/2, Y/2, rho11), the input of :func:`kernels.finish_ququart`
_OUTPUT_BASIS = ((0.5, 0, 0, 0.5), (0, 0.5, 0, 0), (0, 0, 0.5, 0), (0.5, 0, 0, -0.5))


@dataclass(frozen=True)
class Merge:
    """Slot ``dst`` <- Kronecker product of slots ``a`` (leading digits) and ``b``."""

    dst: int
    a: int
    b: int


@dataclass(frozen=True)
class Reorder:
    """Reorder the digits of slot ``slot``: new digit ``j`` is old ``perm[j]``."""

    slot: int
    perm: tuple[int, ...]


@dataclass(frozen=True)
class ApplyUnit:
    """Apply unit ``unit``'s PTM to digits ``pos ..`` of slot ``slot`` (``digits`` in all)."""

    slot: int
    unit: int
    pos: int
    digits: int


@dataclass(frozen=True)
class Unit:
    """One GEMM: ``wires`` in digit order; ``parts``: (block index, its wires' positions in ``wires``)."""

    wires: tuple[int, ...]
    parts: tuple[tuple[int, tuple[int, ...]], ...]


@dataclass(frozen=True)
class Schedule:
    """Instructions over factor slots (slot ``w`` starts as wire ``w``); ``final`` holds the register."""

    blocks: tuple[Block, ...]
    units: tuple[Unit, ...]
    instrs: tuple[Merge | Reorder | ApplyUnit, ...]
    final: int


def transfer_blocks(prog: Program) -> list[Block]:
    """``prog.blocks`` with each single-wire block moved into the next block on its wire,
    or the previous one when none follows (it commutes with everything in between)."""
    items = [list(b.items) for b in prog.blocks]
    wires = [b.wires for b in prog.blocks]
    alive = [True] * len(items)
    for i, w in enumerate(wires):
        if len(w) != 1:
            continue
        nxt = [j for j in range(i + 1, len(items)) if alive[j] and w[0] in wires[j]]
        prv = [j for j in range(i) if alive[j] and w[0] in wires[j]]
        if nxt:
            items[nxt[0]] = items[i] + items[nxt[0]]
        elif prv:
            items[prv[-1]] = items[prv[-1]] + items[i]
        else:
            continue
        alive[i] = False
    return [Block(wires[i], tuple(items[i]), "dense") for i in range(len(items)) if alive[i]]


def build_schedule(prog: Program) -> Schedule:
    """Which factor holds each wire, in which digit order, and the units (once per program)."""
    cached = prog._cache.get("schedule")
    if cached is None:
        builder = _ScheduleBuilder(prog.n)
        blocks = transfer_blocks(prog)
        for bi, blk in enumerate(blocks):
            builder.add(bi, blk.wires)
        cached = prog._cache["schedule"] = builder.finish(blocks)
    return cached


class _ScheduleBuilder:
    """Tracks the factors (slot -> digit order) while the blocks are placed in order."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.orders: dict[int, list[int]] = {w: [w] for w in range(n)}
        self.instrs: list = []
        self.units: list[tuple[tuple[int, ...], list]] = []
        self.recent: dict[int, list[int]] = {}  # slot -> its units since its last merge or reorder

    def add(self, bi: int, wires: tuple[int, ...]) -> None:
        """Place block ``bi``: merge its factors, make its digits adjacent, fold or apply it."""
        slot = _merge_all(self.orders, self.instrs, wires)
        order = self.orders[slot]
        if _adjacent(order, wires) is None:
            new = [w for w in order if w not in wires] + list(wires)
            self.instrs.append(Reorder(slot, tuple(order.index(w) for w in new)))
            self.orders[slot] = order = new
            self.recent.pop(slot, None)
        u = _host_unit(self.units, self.recent.get(slot, []), wires)
        if u is None:
            lo, hi = _unit_span(order, wires)
            u = len(self.units)
            self.units.append((tuple(order[lo:hi]), []))
            self.instrs.append(ApplyUnit(slot, u, lo, len(order)))
            self.recent.setdefault(slot, []).append(u)
        uw, parts = self.units[u]
        parts.append((bi, tuple(uw.index(w) for w in wires)))

    def finish(self, blocks: Sequence[Block]) -> Schedule:
        """Merge the remaining factors and put the register in wire order."""
        final = _merge_all(self.orders, self.instrs, range(self.n))
        order = self.orders[final]
        if order != list(range(self.n)):
            self.instrs.append(Reorder(final, tuple(order.index(w) for w in range(self.n))))
        units = tuple(Unit(w, tuple(p)) for w, p in self.units)
        return Schedule(tuple(blocks), units, tuple(self.instrs), final)


def _host_unit(units: Sequence[tuple[tuple[int, ...], list]], recent: Sequence[int], wires: Sequence[int]) -> int | None:
    """The latest of ``recent`` units holding all of ``wires`` with only units on other
    wires after it (a block there can be multiplied into it), else None."""
    for u in reversed(recent):
        if set(wires) <= set(units[u][0]):
            return u
        if set(wires) & set(units[u][0]):
            return None
    return None


def _adjacent(order: Sequence[int], wires: Sequence[int]) -> int | None:
    """The first digit of ``wires`` in ``order`` if they are adjacent there, else None."""
    at = sorted(order.index(w) for w in wires)
    return at[0] if at[-1] - at[0] + 1 == len(at) else None


def _unit_span(order: Sequence[int], wires: Sequence[int]) -> tuple[int, int]:
    """Digits ``lo:hi`` of the unit for a block on ``wires``: widened over 1 or 2 trailing digits
    (up to :data:`WIDEN_WIRES`), a slow GEMM shape, so that it ends the digits; a lone last
    digit takes the one before it."""
    lo = _adjacent(order, wires)
    assert lo is not None
    hi = lo + len(wires)
    trail = len(order) - hi
    if 1 <= trail <= 2 and len(wires) + trail <= WIDEN_WIRES:
        return lo, len(order)
    if trail == 0 and len(wires) == 1 and lo > 0:  # [N, 4] @ [4, 4] is slower than [N/4, 16] @ [16, 16]
        return lo - 1, hi
    return lo, hi


def _merge_all(orders: dict[int, list[int]], instrs: list, wires: Sequence[int]) -> int:
    """Merge the factors holding ``wires`` (by their lowest wire); returns the slot."""
    slots = sorted({s for s, o in orders.items() if set(o) & set(wires)}, key=lambda s: min(orders[s]))
    dst = slots[0]
    for other in slots[1:]:
        new = max(orders) + 1
        instrs.append(Merge(new, dst, other))
        orders[new] = orders.pop(dst) + orders.pop(other)
        dst = new
    return dst


# ----------------------------------------------------------------- block PTMs


def _real(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype == torch.complex64 else torch.float64


def _is_param(prog: Program, item: int | ChannelOp) -> bool:
    return not isinstance(item, ChannelOp) and bool(prog.circuit.ops[item].params)


def _fixed_unitary(op) -> Tensor:
    """The matrix of a parameterless op, complex128."""
    if op.matrix is not None:
        return torch.tensor(op.unitary_array())
    return op.gate.matrix(torch.zeros(1, 0, dtype=torch.float64), len(op.wires), torch.complex128)[0]


def _const_transfer(prog: Program, item: int | ChannelOp) -> Tensor:
    """The PTM ``[1, 4**k, 4**k]`` (float64) of a channel or a parameterless gate (cached)."""
    key = ("ptm", id(item) if isinstance(item, ChannelOp) else item)
    if key not in prog._cache:
        k = len(_item_wires(prog.circuit, item))
        if isinstance(item, ChannelOp):
            s = K.interleave(item.channel.superoperator().to(torch.complex128).unsqueeze(0), k)
        else:
            s = K.unitary_superop(_fixed_unitary(prog.circuit.ops[item]).unsqueeze(0), k)
        prog._cache[key] = (item, K.pauli_transfer(s, k))
    return prog._cache[key][1]


def _param_transfers(prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype) -> dict[int, Tensor]:
    """PTMs of every parameterised gate, ``[Bi, 4**k, 4**k]``, built in one call per (wires, batch)."""
    wanted = [i for i, op in enumerate(prog.circuit.ops) if op.params]
    if not wanted:
        return {}
    mats = QF.op_matrices(QF.compile_circuit(prog.circuit), angles, batched, dtype, wanted)
    groups: dict[tuple[int, int], list[int]] = {}
    for i in wanted:
        m = mats[i]
        if m.dim() == 2:  # a multi-wire diagonal
            mats[i] = m = torch.diag_embed(m)
        groups.setdefault((len(prog.circuit.ops[i].wires), m.shape[0]), []).append(i)
    out = {}
    for (k, bi), idx in groups.items():
        ptm = K.pauli_transfer(K.unitary_superop(torch.cat([mats[i] for i in idx]), k), k)
        for j, i in enumerate(idx):
            out[i] = ptm[j * bi:(j + 1) * bi]
    return out


def _embed(p: Tensor, pos: Sequence[int], m: int) -> Tensor:
    """A PTM on the digits ``pos`` (in that order) as a ``[Bp, 4**m, 4**m]`` matrix on ``m`` digits."""
    k = len(pos)
    if k == m and list(pos) == list(range(m)):
        return p
    if k < m:
        e = 4 ** (m - k)
        eye = torch.eye(e, dtype=p.dtype, device=p.device)
        d = p.shape[-1]
        p = (p[:, :, None, :, None] * eye[None, None, :, None, :]).reshape(p.shape[0], d * e, d * e)
    placed = list(pos) + [j for j in range(m) if j not in pos]  # digit j of p sits at placed[j]
    return K.permute_transfer(p, [placed.index(j) for j in range(m)])


def _segments(prog: Program, sched: Schedule, bi: int, rdtype: torch.dtype, dev) -> list:
    """Block ``bi`` as constant embedded PTMs (runs of constant items multiplied out) and
    ``(op index, digit positions)`` of its parameterised gates (cached)."""
    key = ("segments", bi, rdtype, str(dev))
    if key in prog._cache:
        return prog._cache[key]
    blk = sched.blocks[bi]
    m = len(blk.wires)
    out: list = []
    for it in blk.items:
        pos = [blk.wires.index(w) for w in _item_wires(prog.circuit, it)]
        if _is_param(prog, it):
            out.append((it, pos))
            continue
        e = _embed(_const_transfer(prog, it), pos, m)
        if out and isinstance(out[-1], Tensor):
            out[-1] = e @ out[-1]
        else:
            out.append(e)
    out = [s.to(rdtype).to(dev) if isinstance(s, Tensor) else s for s in out]
    prog._cache[key] = out
    return out


def _block_transfer(prog: Program, sched: Schedule, bi: int, params: dict[int, Tensor], rdtype, dev) -> Tensor:
    """Block ``bi``'s PTM ``[Bm, 4**m, 4**m]`` on its (sorted) wires."""
    m = len(sched.blocks[bi].wires)
    acc = None
    for seg in _segments(prog, sched, bi, rdtype, dev):
        e = seg if isinstance(seg, Tensor) else _embed(params[seg[0]], seg[1], m)
        acc = e if acc is None else e @ acc
    assert acc is not None
    return acc


def _output_basis(unit: Unit, mine: Sequence[int], rdtype: torch.dtype, dev) -> Tensor:
    """The output basis change on the unit's digits ``mine``, as a matrix on all its digits."""
    b = torch.tensor(_OUTPUT_BASIS, dtype=rdtype, device=dev)
    full = b
    for _ in mine[1:]:
        full = torch.kron(full, b)
    return _embed(full.unsqueeze(0), mine, len(unit.wires))


def unit_transfers(prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype,
                   fold_output: bool) -> list[Tensor]:
    """Every unit's PTM ``[Bm, 4**m, 4**m]`` (``Bm`` 1 or the batch) on its digits; with
    ``fold_output`` times the output basis change of the wires it is the last unit of."""
    rdtype, dev = _real(dtype), angles.device
    sched = build_schedule(prog)
    params = _param_transfers(prog, angles, batched, dtype)
    blocks = [_block_transfer(prog, sched, bi, params, rdtype, dev) for bi in range(len(sched.blocks))]
    last = {w: ui for ui, unit in enumerate(sched.units) for w in unit.wires}
    out = []
    for ui, unit in enumerate(sched.units):
        acc = None
        for bi, pos in unit.parts:
            e = _embed(blocks[bi], pos, len(unit.wires))
            acc = e if acc is None else e @ acc
        assert acc is not None
        mine = [j for j, w in enumerate(unit.wires) if last[w] == ui] if fold_output else []
        if mine:
            acc = _output_basis(unit, mine, rdtype, dev) @ acc
        out.append(acc.contiguous())
    return out


# ----------------------------------------------------------------- execution


def _rows(t: Tensor, lo: int, hi: int) -> Tensor:
    return t if t.shape[0] == 1 else t[lo:hi]


def _initial(sched: Schedule, n: int, rdtype, dev, fold_output: bool) -> list[Tensor]:
    """Per wire ``|0><0|`` in Pauli form, in the output basis for wires no unit touches."""
    init = K.pauli_initial(rdtype, dev)
    if not fold_output:
        return [init] * n
    touched = {w for u in sched.units for w in u.wires}
    done = init @ torch.tensor(_OUTPUT_BASIS, dtype=rdtype, device=dev).T
    return [init if w in touched else done for w in range(n)]


def _shared(sched: Schedule, mats: list[Tensor]) -> list[bool]:
    """Per instruction: whether its output is the same for every row (so computed once)."""
    slot_shared: dict[int, bool] = {}  # slots not listed still hold |0><0|
    out = []
    for ins in sched.instrs:
        if isinstance(ins, Merge):
            same = slot_shared.get(ins.a, True) and slot_shared.get(ins.b, True)
            slot_shared[ins.dst] = same
        elif isinstance(ins, Reorder):
            same = slot_shared.get(ins.slot, True)
        else:
            same = slot_shared.get(ins.slot, True) and mats[ins.unit].shape[0] == 1
            slot_shared[ins.slot] = same
        out.append(same)
    return out


def _prefill(sched: Schedule, mats: list[Tensor], init: list[Tensor], shared: list[bool]) -> dict[int, Tensor]:
    """The outputs of the instructions every row shares, computed once (by instruction index)."""
    memo: dict[int, Tensor] = {}
    slots = dict(enumerate(init))
    for j, ins in enumerate(sched.instrs):
        if not shared[j]:
            continue
        memo[j] = out = _step(ins, slots, mats, 0, 1)
        _store(ins, slots, out)
    return memo


def _step(ins: Merge | Reorder | ApplyUnit, slots: dict[int, Tensor], mats: list[Tensor], lo: int, hi: int) -> Tensor:
    if isinstance(ins, Merge):
        return K.kron_states(slots[ins.a], slots[ins.b])
    if isinstance(ins, Reorder):
        return K.permute_digits(slots[ins.slot], ins.perm)
    return K.apply_transfer(slots[ins.slot], _rows(mats[ins.unit], lo, hi), ins.pos, ins.digits)


def _store(ins: Merge | Reorder | ApplyUnit, slots: dict[int, Tensor], out: Tensor) -> None:
    if isinstance(ins, Merge):
        del slots[ins.a], slots[ins.b]
        slots[ins.dst] = out
    else:
        slots[ins.slot] = out


def _execute(sched: Schedule, mats: list[Tensor], init: list[Tensor], lo: int, hi: int,
             memo: dict[int, Tensor]) -> Tensor:
    """Run the schedule for rows ``lo:hi``, taking the shared outputs from ``memo``."""
    slots = dict(enumerate(init))
    for j, ins in enumerate(sched.instrs):
        out = memo.get(j)
        _store(ins, slots, _step(ins, slots, mats, lo, hi) if out is None else out)
    return slots[sched.final]


def chunk_rows(n: int, dtype: torch.dtype) -> int:
    """Rows per chunk: one chunk of real Pauli coefficients is about :data:`CHUNK_BYTES`."""
    item = 4 if dtype == torch.complex64 else 8
    return max(1, CHUNK_BYTES // (item * 4 ** n))


def _simulate(prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype, ququart: bool) -> Tensor:
    """Chunk by chunk: the ququart layout (``ququart``) or the Pauli coefficients ``Tr(P rho)``.

    The ops are small (a few hundred microseconds at most), so they run single-threaded:
    a fork-join per op costs more than it saves, and on a busy machine every one waits for
    a second core. The CPU threads torch was given work on separate chunks instead.
    """
    with _torch_threads(1) as threads:
        if angles.device.type != "cpu":
            threads = 1
        return _simulate_threads(prog, angles, batched, dtype, ququart, threads)


@contextmanager
def _torch_threads(n: int) -> Iterator[int]:
    """Run the block with ``n`` torch threads; yields how many there were."""
    before = torch.get_num_threads()
    if before == n:
        yield before
        return
    torch.set_num_threads(n)
    try:
        yield before
    finally:
        torch.set_num_threads(before)


def _simulate_threads(prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype, ququart: bool,
                      threads: int) -> Tensor:
    sched = build_schedule(prog)
    mats = unit_transfers(prog, angles, batched, dtype, fold_output=ququart)
    init = _initial(sched, prog.n, _real(dtype), angles.device, ququart)
    memo = _prefill(sched, mats, init, _shared(sched, mats))
    run_rows = partial(_execute, sched, mats, init, memo=memo)
    rows = max([m.shape[0] for m in mats] + [1])
    if torch.is_grad_enabled() and any(m.requires_grad for m in mats):
        return _graph_chunks(run_rows, rows, prog.n, dtype, ququart)
    return _buffer_chunks(run_rows, rows, prog.n, dtype, ququart, threads, angles.device)


def _graph_chunks(run_rows, rows: int, n: int, dtype: torch.dtype, ququart: bool) -> Tensor:
    """Chunks one after the other, concatenated (autograd records every op)."""
    spans = _spans(rows, chunk_rows(n, dtype), 1)
    state = torch.cat([run_rows(lo, hi).expand(hi - lo, -1) for lo, hi in spans])
    return K.finish_ququart(state, n, dtype) if ququart else state


def _buffer_chunks(run_rows, rows: int, n: int, dtype: torch.dtype, ququart: bool, threads: int,
                   device: torch.device) -> Tensor:
    """Chunks written into one output buffer, on ``threads`` threads when there is enough work."""
    out = K.empty_output((rows, 4 ** n), dtype if ququart else _real(dtype), device)

    def chunk(span: tuple[int, int]) -> None:
        lo, hi = span
        part = run_rows(lo, hi).expand(hi - lo, -1)
        if ququart:
            K.finish_ququart(part, n, dtype, out=out[lo:hi])
        else:
            out[lo:hi] = part

    step = chunk_rows(n, dtype)
    threads = min(CHUNK_THREADS or threads, -(-rows // step))  # a thread only for a full chunk of work
    _map_chunks(chunk, _spans(rows, step, threads), threads)
    return out


def _spans(rows: int, step: int, threads: int) -> list[tuple[int, int]]:
    """Row ranges of at most ``step`` rows, at least ``threads`` of them when there are as many rows."""
    step = max(1, min(step, -(-rows // threads)))
    return [(lo, min(lo + step, rows)) for lo in range(0, rows, step)]


def _map_chunks(fn, spans: Sequence[tuple[int, int]], threads: int) -> None:
    """``fn`` on every span, on ``threads`` threads (coarse-grained: a descheduled one stalls no one)."""
    threads = min(threads, len(spans))
    if threads <= 1:
        for span in spans:
            fn(span)
        return
    with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        list(pool.map(fn, spans))


def _too_wide(prog: Program) -> bool:
    return any(len(b.wires) > MAX_TRANSFER_WIRES for b in prog.blocks)


def run(prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype) -> Tensor:
    """The final density matrices in the ququart layout, ``[B, 4**n]``, by the Pauli transfer engine
    (circuits with blocks wider than :data:`MAX_TRANSFER_WIRES` go to :func:`run_reference`)."""
    if _too_wide(prog):
        return run_reference(prog, angles, batched, dtype)
    return _simulate(prog, angles, batched, dtype, ququart=True)


def run_pauli(prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype) -> Tensor:
    """The final Pauli coefficients ``Tr(P rho)``, real ``[B, 4**n]`` (digits I, X, Y, Z per wire,
    wire 0 most significant): what expectation values need, without the ququart layout."""
    if _too_wide(prog):
        vec = run_reference(prog, angles, batched, dtype)
        to_p, _ = K.pauli_change(prog.n, dtype, str(vec.device))
        return (vec @ to_p.T).real
    return _simulate(prog, angles, batched, dtype, ququart=False)
