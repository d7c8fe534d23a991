"""Tests of the main job's report (:mod:`tinyqml.demo.report`)."""

from __future__ import annotations

from tinyqml.demo.quantum import HEA, PRUNED
from tinyqml.demo.report import SUMMARY_HEADER, format_table, summary_rows


def test_summary_compares_each_result_with_its_anchor(fast_demo) -> None:  # type: ignore[no-untyped-def]
    result, _ = fast_demo
    rows = summary_rows(result.quantum, result.classical)
    assert all(len(r) == len(SUMMARY_HEADER) for r in rows)
    q, c = result.quantum, result.classical
    first = rows[0]
    assert first[2] == f"QuantumNAS {100 * q.row(PRUNED).aer[q.config.scales[0]]:.1f}%"
    assert first[3] == f"HEA {100 * q.row(HEA).aer[q.config.scales[0]]:.1f}%"
    latency = next(r for r in rows if r[1].startswith("latency"))
    assert latency[4] == f"{c.tflm_latency_us / c.c_latency_us:.2f}x faster"
    assert summary_rows(None, c)[0][0] == "classical" and summary_rows(q, None)[-1][0] == "quantum"


def test_format_table_aligns_and_writes_markdown() -> None:
    text = format_table(("x", "long header"), [("value", "1"), ("v", "22")])
    lines = text.splitlines()
    assert lines[0].index("long") == lines[2].index("1") == lines[3].index("22")
    md = format_table(("a", "b"), [("1", "2")], markdown=True)
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]
