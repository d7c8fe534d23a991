"""Compile a noisy circuit into fused superoperator blocks, and run them.

Gates and channels are grouped into blocks of at most :data:`MAX_BLOCK_WIRES` wires
(a wider gate forms a block of its own): consecutive items whose wires fit in one
block are multiplied into one ``4**m x 4**m`` superoperator, so a noisy CNOT with the
single-qubit gates around it is one pass over the state. Blocks made only of basis
permutations (noiseless CX, SWAP, ...) become one gather, blocks made only of
diagonal gates and dephasing channels one elementwise product.

The result is differentiable by backpropagation w.r.t. weights and inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

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
    cols = acc.expand(b, d, d).transpose(1, 2).reshape(b * d, d)  # each row: one column of acc
    se = s if bs == 1 else s.repeat_interleave(d, dim=0)
    out = K.apply_superop(cols, se, pos, m)
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


def run(prog: Program, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype) -> Tensor:
    """The final density matrices in the ququart layout, ``[B, 4**n]``."""
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
