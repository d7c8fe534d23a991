"""The activation memory planner: every activation tensor of a model in one static arena.

A :class:`Buffer` is one tensor: its size in bytes and its lifetime, the op indices where it
is first written and last read, both **inclusive** (a graph input has ``first = 0`` or
``-1``; a graph output has ``last = number of ops``, alive after the last op). Two buffers
whose lifetimes intersect must not overlap in the arena, except an :class:`InPlace` pair:
a declared permission that ``dst`` (written by the op where ``src`` dies) may take ``src``'s
memory: a depthwise convolution computed in place, or a RESHAPE that aliases its input.
Such a pair is merged into one buffer over the union of the lifetimes (size: the larger),
placed once; both tensors then start at the same offset.

A strategy (:class:`NoReuse`, :class:`GreedyBySize`, :class:`FirstUse`) has
``plan(buffers, inplace=(), alignment=16) -> ArenaPlan``; :func:`best_plan` runs them all and
keeps the smallest (its ``strategy`` says which won); :func:`plan_with_scratch` picks between the
best plans with and without the in-place pairs by arena + kernel scratch (what the code generator and
the SRAM predictor of :mod:`~tinyqml.classical.efficiency` use). Sizes are rounded up to ``alignment``
(TFLite Micro aligns to 16 bytes), so all offsets are multiples of it. :func:`lower_bound`
is the liveness bound: no placement of the (merged) buffers is smaller. A plan's ``inplace``
lists the pairs it uses: a kernel computes ``dst`` over ``src`` exactly for those.
:func:`buffers_from_graph` builds the buffers of a :class:`~tinyqml.classical.graph.Graph`
(int8 activations: one byte per element). A C emitter builds its own ``Buffer`` s from the
tensors of a TFLite model and calls the same functions.

>>> bufs = [Buffer("x", 100, 0, 0), Buffer("a", 100, 0, 1), Buffer("b", 60, 1, 2), Buffer("y", 10, 2, 3)]
>>> plan = best_plan(bufs, [InPlace("a", "b")])
>>> plan.offsets, plan.size, lower_bound(bufs, [InPlace("a", "b")])
({'x': 0, 'a': 112, 'b': 112, 'y': 0}, 224, 224)
>>> NoReuse().plan(bufs).size
304
>>> plan.check().strategy
'greedy-by-size'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from math import prod
from typing import TYPE_CHECKING, Protocol

from tinyqml.classical.errors import CompressionError

if TYPE_CHECKING:
    from tinyqml.classical.graph import Graph

__all__ = ["Buffer", "InPlace", "ArenaPlan", "Strategy", "NoReuse", "GreedyBySize", "FirstUse", "STRATEGIES",
           "best_plan", "plan_with_scratch", "lower_bound", "buffers_from_graph"]


@dataclass(frozen=True)
class Buffer:
    """One tensor: ``size`` bytes, alive from op ``first`` to op ``last`` (both inclusive)."""

    name: str
    size: int
    first: int
    last: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise CompressionError(f"a buffer name must be a non-empty string, got {self.name!r}")
        for key in ("size", "first", "last"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise CompressionError(f"buffer {self.name!r}: {key} must be an int, got {value!r}")
        if self.size < 0:
            raise CompressionError(f"buffer {self.name!r} has a negative size {self.size}")
        if self.last < self.first:
            raise CompressionError(f"buffer {self.name!r} is last read (op {self.last}) before it is first "
                                   f"written (op {self.first})")

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class InPlace:
    """Permission for ``dst`` (an op's output) to share ``src``'s memory; ``src`` must die no later
    than the op that first writes ``dst`` (``src.last <= dst.first``)."""

    src: str
    dst: str


def _aligned(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


def _check_alignment(alignment: int) -> None:
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment < 1:
        raise CompressionError(f"alignment must be a positive int, got {alignment!r}")


def _by_name(buffers: Iterable[Buffer]) -> dict[str, Buffer]:
    named: dict[str, Buffer] = {}
    for b in buffers:
        if not isinstance(b, Buffer):
            raise CompressionError(f"expected Buffer objects, got {type(b).__name__}")
        if b.name in named:
            raise CompressionError(f"two buffers are named {b.name!r}")
        named[b.name] = b
    return named


def _check_inplace(named: dict[str, Buffer], inplace: Sequence[InPlace]) -> None:
    srcs: set[str] = set()
    dsts: set[str] = set()
    for pair in inplace:
        if not isinstance(pair, InPlace):
            raise CompressionError(f"expected InPlace objects, got {type(pair).__name__}")
        unknown = [n for n in (pair.src, pair.dst) if n not in named]
        if unknown:
            raise CompressionError(f"{pair} names unknown buffers {unknown}")
        if pair.src == pair.dst or pair.src in srcs or pair.dst in dsts:
            raise CompressionError(f"{pair}: a buffer may hand its memory over once and take it over once")
        src, dst = named[pair.src], named[pair.dst]
        if src.last > dst.first:
            raise CompressionError(f"{pair}: {src.name!r} is still read at op {src.last}, after {dst.name!r} "
                                   f"is written at op {dst.first}")
        srcs.add(pair.src)
        dsts.add(pair.dst)


def _groups(named: dict[str, Buffer], inplace: Sequence[InPlace]) -> dict[str, str]:
    """Each buffer's group (the name of the group's first buffer), through the in-place pairs."""
    parent = {n: n for n in named}
    index = {n: i for i, n in enumerate(named)}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for pair in inplace:
        a, b = root(pair.src), root(pair.dst)
        if a != b:
            parent[max(a, b, key=index.get)] = min(a, b, key=index.get)
    return {n: root(n) for n in named}


def _merged(buffers: Sequence[Buffer], inplace: Sequence[InPlace],
            alignment: int) -> tuple[list[Buffer], dict[str, str]]:
    """The buffers to place (in-place groups merged, sizes aligned) and each buffer's group."""
    _check_alignment(alignment)
    named = _by_name(buffers)
    inplace = tuple(inplace)
    _check_inplace(named, inplace)
    group = _groups(named, inplace)
    members: dict[str, list[Buffer]] = {}
    for b in named.values():
        members.setdefault(group[b.name], []).append(b)
    merged = [Buffer(g, max(_aligned(b.size, alignment) for b in bs), min(b.first for b in bs),
                     max(b.last for b in bs)) for g, bs in members.items()]
    return merged, group


def _gap_fit(order: Sequence[Buffer]) -> dict[str, int]:
    """TFLite Micro's placement: each buffer, in ``order``, at the lowest offset that fits between
    the already placed buffers whose lifetimes intersect its own."""
    placed: list[tuple[int, Buffer]] = []
    offsets: dict[str, int] = {}
    for b in order:
        candidate = 0
        for offset, other in sorted(((o, p) for o, p in placed if p.overlaps_in_time(b)), key=lambda t: t[0]):
            if offset - candidate >= b.size:
                break
            candidate = max(candidate, offset + other.size)
        offsets[b.name] = candidate
        placed.append((candidate, b))
    return offsets


@dataclass(frozen=True)
class ArenaPlan:
    """Where each buffer lives (``offsets`` in bytes), the arena ``size``, the ``strategy`` that made
    it and the ``alignment``; ``buffers`` and ``inplace`` are what was planned (for :meth:`check`)."""

    offsets: dict[str, int]
    size: int
    strategy: str
    alignment: int
    buffers: tuple[Buffer, ...] = ()
    inplace: tuple[InPlace, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "offsets", dict(self.offsets))
        object.__setattr__(self, "buffers", tuple(self.buffers))
        object.__setattr__(self, "inplace", tuple(self.inplace))

    def check(self) -> ArenaPlan:
        """``self`` if the plan is valid, else :class:`CompressionError` naming the first fault: a
        buffer without an offset, a misaligned offset, a buffer past the arena's end, or two buffers
        alive at the same op that overlap in memory (a declared in-place pair may, at the op where
        one hands over to the other, when both start at the same offset)."""
        _check_alignment(self.alignment)
        named = _by_name(self.buffers)
        _check_inplace(named, self.inplace)
        if set(self.offsets) != set(named):
            raise CompressionError(f"the plan places {sorted(self.offsets)} but the buffers are {sorted(named)}")
        for b in self.buffers:
            offset = self.offsets[b.name]
            if offset < 0 or offset % self.alignment:
                raise CompressionError(f"buffer {b.name!r} at offset {offset}: not a multiple of {self.alignment} >= 0")
            if offset + b.size > self.size:
                raise CompressionError(f"buffer {b.name!r} ends at {offset + b.size}, past the arena ({self.size})")
        group = _groups(named, self.inplace)
        for i, a in enumerate(self.buffers):
            for b in self.buffers[i + 1:]:
                if a.overlaps_in_time(b) and self._collide(a, b, group):
                    raise CompressionError(f"buffers {a.name!r} and {b.name!r} are alive at the same op and overlap "
                                           f"in memory")
        return self

    def _collide(self, a: Buffer, b: Buffer, group: dict[str, str]) -> bool:
        oa, ob = self.offsets[a.name], self.offsets[b.name]
        if a.size == 0 or b.size == 0 or oa >= ob + b.size or ob >= oa + a.size:
            return False
        handover = group[a.name] == group[b.name] and oa == ob and max(a.first, b.first) == min(a.last, b.last)
        return not handover

    def table(self) -> str:
        """One line per buffer, by offset: name, offset, size, end, lifetime."""
        width = max([len("tensor"), *(len(b.name) for b in self.buffers)])
        lines = [f"{'tensor':<{width}}  {'offset':>8}  {'bytes':>8}  {'end':>8}  ops",
                 *(f"{b.name:<{width}}  {self.offsets[b.name]:>8}  {b.size:>8}  {self.offsets[b.name] + b.size:>8}  "
                   f"{b.first}..{b.last}"
                   for b in sorted(self.buffers, key=lambda b: (self.offsets[b.name], b.first)))]
        return "\n".join(lines + [f"arena: {self.size} bytes ({self.strategy}, {self.alignment}-byte aligned)"])

    def layout(self, width: int = 64) -> str:
        """An op-by-memory chart: one row per op, then the bytes in use. Buffer ``i`` is drawn as
        the ``i``-th symbol of ``0-9a-zA-Z`` (``*`` past 62), ``!`` where two buffers that are not an
        in-place pair share a cell (never, in a valid plan)."""
        if not self.buffers:
            return ""
        group = _groups(_by_name(self.buffers), self.inplace)
        ops = range(min(b.first for b in self.buffers), max(b.last for b in self.buffers) + 1)
        return "\n".join(self._row(t, width, group) for t in ops)

    def _row(self, t: int, width: int, group: dict[str, str]) -> str:
        symbols = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        line: list[str] = ["."] * width
        owner: list[str | None] = [None] * width
        used: dict[str, int] = {}
        for i, b in enumerate(self.buffers):
            if not b.first <= t <= b.last:
                continue
            used[group[b.name]] = max(used.get(group[b.name], 0), b.size)
            start = self.offsets[b.name] * width // max(self.size, 1)
            end = max(start + (b.size > 0), (self.offsets[b.name] + b.size) * width // max(self.size, 1))
            for c in range(start, min(end, width)):
                clash = owner[c] is not None and group[owner[c]] != group[b.name]
                line[c] = "!" if clash or line[c] == "!" else (symbols[i] if i < len(symbols) else "*")
                owner[c] = b.name
        return f"{t:>4}: {''.join(line)} {sum(used.values()):>8}"


class Strategy(Protocol):
    """A placement strategy: ``name`` and ``plan(buffers, inplace=(), alignment=16) -> ArenaPlan``."""

    name: str

    def plan(self, buffers: Sequence[Buffer], inplace: Sequence[InPlace] = (), alignment: int = 16) -> ArenaPlan:
        ...


def _finish(name: str, buffers: Sequence[Buffer], inplace: Sequence[InPlace], alignment: int,
            merged: Sequence[Buffer], group: dict[str, str], placed: dict[str, int]) -> ArenaPlan:
    size = max((placed[m.name] + m.size for m in merged), default=0)
    return ArenaPlan({b.name: placed[group[b.name]] for b in buffers}, size, name, alignment, tuple(buffers),
                     tuple(inplace))


@dataclass(frozen=True)
class NoReuse:
    """Every buffer in its own region, one after the other in the given order (in-place pairs
    ignored): the arena is the sum of the aligned sizes."""

    name: str = field(default="no-reuse", init=False)

    def plan(self, buffers: Sequence[Buffer], inplace: Sequence[InPlace] = (), alignment: int = 16) -> ArenaPlan:
        merged, group = _merged(buffers, (), alignment)
        offsets, end = {}, 0
        for m in merged:
            offsets[m.name], end = end, end + m.size
        return _finish(self.name, buffers, (), alignment, merged, group, offsets)


@dataclass(frozen=True)
class GreedyBySize:
    """TFLite Micro's ``GreedyMemoryPlanner``: largest first (ties in the given order), each at the
    lowest gap among the placed buffers alive at the same time."""

    name: str = field(default="greedy-by-size", init=False)

    def plan(self, buffers: Sequence[Buffer], inplace: Sequence[InPlace] = (), alignment: int = 16) -> ArenaPlan:
        merged, group = _merged(buffers, inplace, alignment)
        order = sorted(merged, key=lambda m: -m.size)  # stable, like TFLM's bubble sort
        return _finish(self.name, buffers, inplace, alignment, merged, group, _gap_fit(order))


@dataclass(frozen=True)
class FirstUse:
    """The same gap-finding, in order of first use (ties: larger first, then the given order)."""

    name: str = field(default="first-use", init=False)

    def plan(self, buffers: Sequence[Buffer], inplace: Sequence[InPlace] = (), alignment: int = 16) -> ArenaPlan:
        merged, group = _merged(buffers, inplace, alignment)
        order = sorted(merged, key=lambda m: (m.first, -m.size))
        return _finish(self.name, buffers, inplace, alignment, merged, group, _gap_fit(order))


#: what :func:`best_plan` tries, in this order (the first of equally small plans wins)
STRATEGIES: tuple[Strategy, ...] = (GreedyBySize(), FirstUse(), NoReuse())


def best_plan(buffers: Sequence[Buffer], inplace: Sequence[InPlace] = (), alignment: int = 16,
              strategies: Sequence[Strategy] = STRATEGIES) -> ArenaPlan:
    """The smallest plan of ``strategies``; its ``strategy`` names the winner. In-place pairs are
    permissions: each strategy also runs without them (the winner is then named
    ``"<strategy> (no in-place)"``, its ``inplace`` empty), since merging two buffers of unequal
    sizes can cost more than it saves. Ties go to the earlier strategy, with the pairs first."""
    if not strategies:
        raise CompressionError("best_plan needs at least one strategy")
    inplace = tuple(inplace)
    plans = [s.plan(buffers, inplace, alignment) for s in strategies]
    if inplace:
        plans += [replace(s.plan(buffers, (), alignment), strategy=f"{s.name} (no in-place)") for s in strategies]
    return min(plans, key=lambda p: p.size)


def plan_with_scratch(buffers: Sequence[Buffer], inplace: Sequence[InPlace],
                      scratch: Callable[[tuple[InPlace, ...]], int], alignment: int = 16,
                      check: bool = True) -> ArenaPlan:
    """The plan with the smallest arena + kernel scratch: :func:`best_plan` with the in-place pairs
    and, when there are any, without them; ``scratch(pairs)`` is the scratch in bytes when the plan
    computes ``pairs`` in place (an in-place depthwise convolution needs a ring buffer outside the
    arena, so a pair can cost more scratch than it saves arena). Ties go to the plan with the pairs;
    ``check``: validate the candidates (:meth:`ArenaPlan.check`).

    >>> bufs = [Buffer("a", 64, 0, 1), Buffer("b", 64, 1, 2)]
    >>> plan_with_scratch(bufs, [InPlace("a", "b")], lambda pairs: 100 * len(pairs)).size
    128
    >>> plan_with_scratch(bufs, [InPlace("a", "b")], lambda pairs: 0).size
    64
    """
    inplace = tuple(inplace)
    candidates = [best_plan(buffers, inplace, alignment)]
    if inplace:
        candidates.append(best_plan(buffers, (), alignment))
    if check:
        candidates = [c.check() for c in candidates]
    return min(candidates, key=lambda c: c.size + scratch(c.inplace))


def lower_bound(buffers: Sequence[Buffer], inplace: Sequence[InPlace] = (), alignment: int = 16) -> int:
    """The liveness bound: the most bytes (aligned, in-place groups merged) alive at any one op."""
    merged, _ = _merged(buffers, inplace, alignment)
    if not merged:
        return 0
    ops = range(min(m.first for m in merged), max(m.last for m in merged) + 1)
    return max(sum(m.size for m in merged if m.first <= t <= m.last) for t in ops)


def buffers_from_graph(graph: Graph, inplace_depthwise: bool = True,
                       itemsize: int = 1) -> tuple[list[Buffer], list[InPlace]]:
    """The activation buffers of ``graph`` (``itemsize`` bytes per element: 1 for int8) and the
    in-place pairs: every RESHAPE whose input dies there, and (``inplace_depthwise``) every
    depthwise convolution whose input dies there and whose output is no larger. Graph inputs
    are alive from op 0, graph outputs up to op ``len(graph.nodes)``; node ``i`` is op ``i``."""
    from tinyqml.classical.graph import DepthwiseConv2D, Reshape

    n = len(graph.nodes)
    first = {name: 0 for name in graph.inputs}
    last = dict(first)
    for i, node in enumerate(graph.nodes):
        first[node.output] = last[node.output] = i
        for t in node.inputs:
            last[t] = i
    for name in graph.outputs:
        last[name] = n
    buffers = [Buffer(t, prod(graph.shapes[t]) * itemsize, first[t], last[t]) for t in first]
    size = {b.name: b.size for b in buffers}
    inplace = []
    for i, node in enumerate(graph.nodes):
        aliasable = isinstance(node, Reshape) or (inplace_depthwise and isinstance(node, DepthwiseConv2D))
        if aliasable and last[node.input] == i and size[node.output] <= size[node.input]:
            inplace.append(InPlace(node.input, node.output))
    return buffers, inplace
