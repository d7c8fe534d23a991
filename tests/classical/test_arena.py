"""Tests of tinyqml.classical.arena: lifetimes, in-place merging, placement strategies, bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyqml.classical.arena import (
    STRATEGIES,
    ArenaPlan,
    Buffer,
    FirstUse,
    GreedyBySize,
    InPlace,
    NoReuse,
    best_plan,
    buffers_from_graph,
    lower_bound,
    plan_with_scratch,
)
from tinyqml.classical.errors import CompressionError
from tinyqml.classical.graph import Add, AvgPool2D, Conv2D, DepthwiseConv2D, FullyConnected, Graph, Reshape
from tinyqml.classical.models import TinyMobileNetV2
from tinyqml.classical.trace import trace

PLACERS = (GreedyBySize(), FirstUse())


def _aligned_sum(buffers, alignment=16):
    return sum(-(-b.size // alignment) * alignment for b in buffers)


# -- hand-built cases with known answers -------------------------------------------------------

def test_chain_reuses_two_regions():
    bufs = [Buffer("a", 100, 0, 1), Buffer("b", 200, 1, 2), Buffer("c", 100, 2, 3), Buffer("d", 200, 3, 4)]
    assert lower_bound(bufs, alignment=1) == 300
    for s in PLACERS:
        plan = s.plan(bufs, alignment=1).check()
        assert plan.size == 300 and plan.strategy == s.name
    assert NoReuse().plan(bufs, alignment=1).offsets == {"a": 0, "b": 100, "c": 300, "d": 400}


def test_tflm_greedy_medium_offsets_and_first_use_reaching_the_bound():
    # TFLM's greedy_memory_planner_test TestGreedyMedium: offsets 50, 70, 40, 0, 0 and 90 bytes
    bufs = [Buffer("0", 10, 0, 1), Buffer("1", 20, 1, 2), Buffer("2", 30, 2, 3), Buffer("3", 40, 3, 4),
            Buffer("4", 50, 0, 1)]
    greedy = GreedyBySize().plan(bufs, alignment=1).check()
    assert [greedy.offsets[b.name] for b in bufs] == [50, 70, 40, 0, 0] and greedy.size == 90
    assert lower_bound(bufs, alignment=1) == 80
    first_use = FirstUse().plan(bufs, alignment=1).check()
    assert first_use.size == 80
    best = best_plan(bufs, alignment=1)
    assert (best.size, best.strategy) == (80, "first-use")


def test_tflm_overlap_case_and_ties_keep_the_given_order():
    bufs = [Buffer("a", 100, 0, 1), Buffer("b", 50, 2, 3), Buffer("c", 20, 1, 2)]
    assert GreedyBySize().plan(bufs, alignment=1).check().size == 120 == lower_bound(bufs, alignment=1)
    same = [Buffer("p", 16, 0, 0), Buffer("q", 16, 0, 0)]
    assert GreedyBySize().plan(same).offsets == {"p": 0, "q": 16}


def test_tflm_person_detection_lifetimes():
    # the buffer sizes and lifetimes of TFLM's person-detection MobileNet test, in its order
    spec = [(9216, 0, 29), (3, 28, 29), (256, 27, 28), (2304, 26, 27), (2304, 25, 26), (2304, 24, 25),
            (1152, 23, 24), *[(4608, t, t + 1) for t in range(22, 11, -1)], (2304, 11, 12), (9216, 10, 11),
            (9216, 9, 10), (9216, 8, 9), (4608, 7, 8), (18432, 6, 7), (18432, 5, 6), (18432, 4, 5),
            (9216, 3, 4), (36864, 2, 3), (18432, 1, 2), (18432, 0, 1)]
    bufs = [Buffer(f"t{i}", *s) for i, s in enumerate(spec)]
    assert sum(b.size for b in bufs) == 241027
    bound = lower_bound(bufs, alignment=1)
    for s in PLACERS:
        assert bound <= s.plan(bufs, alignment=1).check().size < 241027
    assert best_plan(bufs, alignment=1).size == bound == 9216 + 36864 + 18432


def test_empty_and_zero_sized_buffers():
    assert best_plan([]).size == 0 and lower_bound([]) == 0
    plan = GreedyBySize().plan([Buffer("z", 0, 0, 3), Buffer("a", 5, 0, 3)]).check()
    assert plan.size == 16


# -- in-place pairs -----------------------------------------------------------------------------

def _depthwise_block():
    # expand (a) -> depthwise in place (b over a) -> project (c); the input x dies at op 0
    bufs = [Buffer("x", 64, 0, 0), Buffer("a", 256, 0, 1), Buffer("b", 256, 1, 2), Buffer("c", 64, 2, 3)]
    return bufs, [InPlace("a", "b")]


def test_inplace_pair_shares_memory_and_lowers_the_bound():
    bufs, pairs = _depthwise_block()
    assert lower_bound(bufs) == 512 and lower_bound(bufs, pairs) == 320
    for s in PLACERS:
        plan = s.plan(bufs, pairs).check()
        assert plan.offsets["a"] == plan.offsets["b"] and plan.size == 320 and plan.inplace == tuple(pairs)
    assert NoReuse().plan(bufs, pairs).size == 640  # each buffer its own region


def test_check_needs_the_pair_declared_and_the_same_offset():
    bufs, pairs = _depthwise_block()
    plan = GreedyBySize().plan(bufs, pairs)
    with pytest.raises(CompressionError, match="'a' and 'b'"):
        ArenaPlan(plan.offsets, plan.size, "undeclared", 16, plan.buffers).check()
    shifted = dict(plan.offsets, b=plan.offsets["a"] + 16)
    with pytest.raises(CompressionError, match="overlap"):
        ArenaPlan(shifted, plan.size + 16, "shifted", 16, plan.buffers, plan.inplace).check()


def test_inplace_chain_and_unequal_sizes():
    # a depthwise with stride 2 (out smaller) then a reshape aliasing it: one region of 256 bytes
    bufs = [Buffer("a", 256, 0, 1), Buffer("b", 64, 1, 2), Buffer("r", 64, 2, 4), Buffer("y", 16, 3, 5)]
    pairs = [InPlace("a", "b"), InPlace("b", "r")]
    plan = FirstUse().plan(bufs, pairs).check()
    assert plan.offsets["a"] == plan.offsets["b"] == plan.offsets["r"]
    assert lower_bound(bufs, pairs) == 256 + 16 == plan.size


def test_best_plan_drops_inplace_pairs_that_cost_memory():
    # merging a (100 B) and b (10 B) keeps 112 bytes busy while c (208 B) lives: worse than no merging
    bufs = [Buffer("a", 100, 0, 1), Buffer("b", 10, 1, 5), Buffer("c", 200, 2, 5)]
    pairs = [InPlace("a", "b")]
    assert lower_bound(bufs, pairs) == 320 > lower_bound(bufs) == 224
    best = best_plan(bufs, pairs).check()
    assert best.size == 224 and best.inplace == () and best.strategy.endswith("(no in-place)")



def test_plan_with_scratch_weighs_the_pairs_scratch_against_the_arena():
    # the pair saves 48 arena bytes (128 -> 80); a ring of 80 bytes outside the arena costs more than that
    bufs = [Buffer("a", 64, 0, 1), Buffer("b", 64, 1, 2), Buffer("c", 16, 2, 3)]
    pairs = [InPlace("a", "b")]
    calls = []

    def ring(used):
        calls.append(used)
        return 80 * len(used)

    plan = plan_with_scratch(bufs, pairs, ring)
    assert plan.inplace == () and plan.size == 128 and calls == [tuple(pairs), ()]
    cheap = plan_with_scratch(bufs, pairs, lambda used: 32 * len(used))
    assert cheap.inplace == tuple(pairs) and cheap.size == 80
    tie = plan_with_scratch(bufs, pairs, lambda used: 48 * len(used))  # equal totals: the pairs win
    assert tie.inplace == tuple(pairs)
    assert plan_with_scratch(bufs, [], ring, check=False).size == best_plan(bufs).size


# -- check() and bad input ----------------------------------------------------------------------

def test_check_catches_a_deliberately_bad_plan():
    bufs = [Buffer("a", 32, 0, 2), Buffer("b", 32, 1, 3), Buffer("c", 32, 3, 4)]
    assert ArenaPlan({"a": 0, "b": 32, "c": 0}, 64, "hand", 16, bufs).check().size == 64
    with pytest.raises(CompressionError, match="'a' and 'b'"):
        ArenaPlan({"a": 0, "b": 16, "c": 0}, 64, "bad", 16, bufs).check()
    with pytest.raises(CompressionError, match="past the arena"):
        ArenaPlan({"a": 0, "b": 32, "c": 0}, 48, "bad", 16, bufs).check()
    with pytest.raises(CompressionError, match="multiple of 16"):
        ArenaPlan({"a": 0, "b": 40, "c": 0}, 96, "bad", 16, bufs).check()
    with pytest.raises(CompressionError, match="places"):
        ArenaPlan({"a": 0, "b": 32}, 64, "bad", 16, bufs).check()


@pytest.mark.parametrize("make, match", [
    (lambda: Buffer("a", -1, 0, 1), "negative size"),
    (lambda: Buffer("a", 4, 3, 2), "before it is first"),
    (lambda: Buffer("a", 4.0, 0, 1), "must be an int"),
    (lambda: Buffer("", 4, 0, 1), "non-empty"),
    (lambda: GreedyBySize().plan([Buffer("a", 4, 0, 1)], [InPlace("a", "nope")]), "unknown buffers"),
    (lambda: GreedyBySize().plan([Buffer("a", 4, 0, 2), Buffer("b", 4, 1, 3)], [InPlace("a", "b")]), "still read"),
    (lambda: GreedyBySize().plan([Buffer("a", 4, 0, 1), Buffer("b", 4, 1, 2), Buffer("c", 4, 1, 2)],
                                 [InPlace("a", "b"), InPlace("a", "c")]), "once"),
    (lambda: GreedyBySize().plan([Buffer("a", 4, 0, 1), Buffer("a", 4, 1, 2)]), "two buffers"),
    (lambda: FirstUse().plan([Buffer("a", 4, 0, 1)], alignment=0), "alignment"),
    (lambda: FirstUse().plan([("a", 4, 0, 1)]), "Buffer objects"),
    (lambda: best_plan([Buffer("a", 4, 0, 1)], strategies=()), "at least one"),
    (lambda: ArenaPlan({"a": 0}, 16, "bad", 0, [Buffer("a", 4, 0, 1)]).check(), "alignment"),
])
def test_bad_input_raises_compression_error(make, match):
    with pytest.raises(CompressionError, match=match):
        make()


def test_table_and_layout_text():
    bufs, pairs = _depthwise_block()
    plan = best_plan(bufs, pairs)
    table = plan.table()
    assert all(b.name in table for b in bufs) and "arena: 320 bytes (greedy-by-size, 16-byte aligned)" in table
    rows = plan.layout(width=32).splitlines()
    assert len(rows) == 4 and "!" not in plan.layout() and rows[1].split()[-1] == "256"
    assert ArenaPlan({}, 0, "none", 16).layout() == ""
    bad = ArenaPlan({"a": 0, "b": 0}, 16, "bad", 16, [Buffer("a", 16, 0, 1), Buffer("b", 16, 1, 2)])
    assert bad.layout(width=8).splitlines()[1] == "   1: !!!!!!!!       32"


# -- random property tests ----------------------------------------------------------------------

@st.composite
def _problems(draw):
    n = draw(st.integers(0, 10))
    bufs = []
    for k in range(n):
        first = draw(st.integers(-1, 8))
        bufs.append(Buffer(f"t{k}", draw(st.integers(0, 300)), first, first + draw(st.integers(0, 4))))
    candidates = [(a.name, b.name) for a in bufs for b in bufs if a is not b and a.last <= b.first]
    chosen = draw(st.lists(st.sampled_from(candidates), unique=True, max_size=4)) if candidates else []
    pairs, srcs, dsts = [], set(), set()
    for s, d in chosen:
        if s not in srcs and d not in dsts:
            pairs.append(InPlace(s, d))
            srcs.add(s)
            dsts.add(d)
    return bufs, pairs, draw(st.sampled_from([1, 4, 16]))


@settings(max_examples=150, deadline=None)
@given(_problems())
def test_every_strategy_gives_a_valid_plan_within_the_bounds(problem):
    bufs, pairs, alignment = problem
    total = _aligned_sum(bufs, alignment)
    none = NoReuse().plan(bufs, pairs, alignment).check()
    assert none.size == total and none.size >= lower_bound(bufs, (), alignment)
    sizes = []
    for s in PLACERS:
        plan = s.plan(bufs, pairs, alignment).check()
        assert lower_bound(bufs, pairs, alignment) <= plan.size <= total
        assert all(plan.offsets[p.src] == plan.offsets[p.dst] for p in pairs)
        sizes.append(plan.size)
    best = best_plan(bufs, pairs, alignment).check()
    assert best.size <= min(sizes) and best.size >= min(lower_bound(bufs, pairs, alignment),
                                                          lower_bound(bufs, (), alignment))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), max_size=8))
def test_first_use_is_optimal_for_equal_sizes(spec):
    # all buffers of one size: gap-fitting in order of first use is interval colouring, hence optimal
    bufs = [Buffer(f"b{i}", 16, first, first + length) for i, (first, length) in enumerate(spec)]
    assert FirstUse().plan(bufs).check().size == lower_bound(bufs)


# -- graphs ---------------------------------------------------------------------------------------

def _zeros(*shape):
    return np.zeros(shape, np.float32)


def test_buffers_from_graph_lifetimes_and_pairs():
    shapes = {"x": (1, 4, 4, 8), "dw": (1, 4, 4, 8), "pw": (1, 4, 4, 8), "add": (1, 4, 4, 8),
              "pool": (1, 1, 1, 8), "flat": (1, 8), "y": (1, 3)}
    nodes = (DepthwiseConv2D("x", "dw", _zeros(1, 3, 3, 8), _zeros(8), padding=(1, 1, 1, 1)),
             Conv2D("dw", "pw", _zeros(8, 1, 1, 8), _zeros(8)),
             Add("x", "pw", "add"),
             AvgPool2D("add", "pool", (4, 4), (4, 4)),
             Reshape("pool", "flat", (1, 8)),
             FullyConnected("flat", "y", _zeros(3, 8), _zeros(3)))
    graph = Graph(("x",), ("y",), shapes, nodes)
    bufs, pairs = buffers_from_graph(graph)
    assert [(b.name, b.size, b.first, b.last) for b in bufs] == [
        ("x", 128, 0, 2), ("dw", 128, 0, 1), ("pw", 128, 1, 2), ("add", 128, 2, 3), ("pool", 8, 3, 4),
        ("flat", 8, 4, 5), ("y", 3, 5, 6)]
    assert pairs == [InPlace("pool", "flat")]  # x is read again by the add: no in-place depthwise
    assert buffers_from_graph(graph, itemsize=4)[0][0].size == 512


def test_traced_tiny_mobilenetv2():
    graph = trace(TinyMobileNetV2().eval(), torch.zeros(1, 1, 8, 8))
    bufs, pairs = buffers_from_graph(graph)
    plain, reshape_only = buffers_from_graph(graph, inplace_depthwise=False)
    assert len(pairs) == 5 and len(reshape_only) == 1  # four depthwise convs whose input dies there, a reshape
    measured = {s.name: s.plan(bufs, pairs).check().size for s in STRATEGIES}
    # measured: no reuse 16912 B, greedy-by-size 5120 B = the bound, first-use 6144 B (with or without
    # in-place: the peak is the 8x8x64 expansion next to the 8x8x16 residual sum, which nothing aliases)
    assert measured == {"no-reuse": 16912, "greedy-by-size": 5120, "first-use": 6144}
    assert lower_bound(bufs, pairs) == lower_bound(plain) == 5120 == best_plan(bufs, pairs).size


#: MobileNetV2's inverted residual settings (expansion, channels, stride, repeats)
_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 3), (6, 64, 2, 4), (6, 96, 1, 3), (6, 160, 2, 3), (6, 320, 1, 1))


def _mobilenetv2(side: int, channels: int, alpha: float) -> Graph:
    """A MobileNetV2 (stride-2 3x3 stem, width ``alpha``) as a Graph with zero weights."""
    width = lambda c: max(8, int(c * alpha) // 8 * 8)  # noqa: E731
    h, c = side // 2, width(32)
    shapes, nodes = {"x": (1, side, side, channels), "stem": (1, h, h, c)}, []
    nodes.append(Conv2D("x", "stem", _zeros(c, 3, 3, channels), _zeros(c), (2, 2), (0, 1, 0, 1)))
    cur, k = "stem", 0
    for expand, out, stride, repeats in _V2:
        for j in range(repeats):
            s, x, hidden, o = (stride if j == 0 else 1), cur, c * expand, width(out)
            if expand != 1:
                shapes[f"e{k}"] = (1, h, h, hidden)
                nodes.append(Conv2D(cur, f"e{k}", _zeros(hidden, 1, 1, c), _zeros(hidden)))
                cur = f"e{k}"
            h2 = -(-h // s)
            shapes[f"d{k}"], shapes[f"p{k}"] = (1, h2, h2, hidden), (1, h2, h2, o)
            nodes += [DepthwiseConv2D(cur, f"d{k}", _zeros(1, 3, 3, hidden), _zeros(hidden), (s, s), (1, 1, 1, 1)),
                      Conv2D(f"d{k}", f"p{k}", _zeros(o, 1, 1, hidden), _zeros(o))]
            cur = f"p{k}"
            if s == 1 and c == o:
                shapes[f"a{k}"] = (1, h2, h2, o)
                nodes.append(Add(x, cur, f"a{k}"))
                cur = f"a{k}"
            h, c, k = h2, o, k + 1
    shapes.update(pool=(1, 1, 1, c), flat=(1, c), y=(1, 10))
    nodes += [AvgPool2D(cur, "pool", (h, h), (h, h)), Reshape("pool", "flat", (1, c)),
              FullyConnected("flat", "y", _zeros(10, c), _zeros(10))]
    return Graph(("x",), ("y",), shapes, tuple(nodes))


def test_mobilenetv2_96x96_issue_claim():
    # the issue: "no reuse 80.7 KB, TFLM-style greedy 28.7 KB, with in-place depthwise the bound is
    # 20.5 KB, which greedy-by-size misses (24.6 KB) and first-use ordering reaches". Measured here on
    # a 96x96x3 MobileNetV2-0.35 (stem 48x48x8): first-use with in-place reaches the bound, but so does
    # greedy-by-size; without in-place greedy-by-size reaches the bound and first-use misses it.
    graph = _mobilenetv2(96, 3, 0.35)
    bufs, pairs = buffers_from_graph(graph)
    plain, no_pairs = buffers_from_graph(graph, inplace_depthwise=False)
    bound, plain_bound = lower_bound(bufs, pairs), lower_bound(plain, no_pairs)
    with_pairs = {s.name: s.plan(bufs, pairs).check().size for s in STRATEGIES}
    without = {s.name: s.plan(plain, no_pairs).check().size for s in STRATEGIES}
    assert without == {"no-reuse": 481024, "greedy-by-size": 138240, "first-use": 156672}
    assert plain_bound == 138240 and bound == 129024 < plain_bound
    assert with_pairs["first-use"] == bound == with_pairs["greedy-by-size"]
    best = best_plan(bufs, pairs)
    assert best.size == bound and best.inplace == tuple(pairs)
