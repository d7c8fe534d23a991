"""Tests of the main job's report (:mod:`tinyqml.demo.report`)."""

from __future__ import annotations

from tinyqml.demo.quantum import HEA, PRUNED
from tinyqml.demo.report import SUMMARY_HEADER, compare, format_table, summary_rows


def _expected_rows(q, c):  # type: ignore[no-untyped-def]
    """The summary rows written out from the result fields, independently of report.py's code."""
    best, hea = q.row(PRUNED), q.row(HEA)
    st = {s.name: s for s in c.stages}

    def better(ours, anchor, small, large):  # type: ignore[no-untyped-def]
        return f"{anchor / ours:.2f}x {small}" if ours <= anchor else f"{ours / anchor:.2f}x {large}"

    rows = [("quantum", f"test accuracy on Aer, {q.backend} noise x{s:g}", f"QuantumNAS {100 * best.aer[s]:.1f}%",
             f"HEA {100 * hea.aer[s]:.1f}%", f"{100 * (best.aer[s] - hea.aer[s]):+.1f} pts") for s in q.config.scales]
    rows += [("quantum", "noiseless test accuracy", f"QuantumNAS {100 * best.noiseless:.1f}%",
              f"HEA {100 * hea.noiseless:.1f}%", f"{100 * (best.noiseless - hea.noiseless):+.1f} pts"),
             ("quantum", "2-qubit gates on the device", str(best.two_qubit), str(hea.two_qubit),
              better(best.two_qubit, hea.two_qubit, "fewer", "more"))]
    cc, dense = st["generated C (host build)"], st["fp32 CNN"]
    rows += [("classical", "test accuracy (int8 C vs fp32 CNN)", f"{cc.accuracy:.1f}%", f"{dense.accuracy:.1f}%",
              f"{cc.accuracy - dense.accuracy:+.1f} pts"),
             ("classical", "MACs per image (pruned vs dense)", f"{cc.macs:,}", f"{dense.macs:,}",
              better(cc.macs, dense.macs, "fewer", "more")),
             ("classical", "latency per image on this host", f"C {c.c_latency_us:.1f} us",
              f"TFLM {c.tflm_latency_us:.1f} us", better(c.c_latency_us, c.tflm_latency_us, "faster", "slower")),
             ("classical", "RAM (C peak SRAM vs TFLM arena)", f"{c.c_peak_sram:,} B", f"{c.tflm_arena:,} B",
              better(c.c_peak_sram, c.tflm_arena, "less", "more")),
             ("classical", "int8 outputs equal to TFLite Micro", f"{c.bit_exact:,}/{c.compared:,}", "",
              "bit-exact" if c.bit_exact == c.compared else "MISMATCH")]
    return rows


def test_summary_rows_are_the_result_fields(fast_demo) -> None:  # type: ignore[no-untyped-def]
    result, _ = fast_demo
    q, c = result.quantum, result.classical
    rows = summary_rows(q, c)
    assert all(len(r) == len(SUMMARY_HEADER) for r in rows)
    assert rows == _expected_rows(q, c)
    assert summary_rows(None, c) == rows[len(q.config.scales) + 2:]
    assert summary_rows(q, None) == rows[:len(q.config.scales) + 2]


def test_report_tables_show_every_stage_and_comparison(fast_demo) -> None:  # type: ignore[no-untyped-def]
    result, _ = fast_demo
    report, c = result.report.read_text(), result.classical
    for s in c.stages:
        assert f"| {s.name} | {s.accuracy:.2f}% | {s.macs:,} | {s.params:,} | {s.size_bytes:,} |" in report
    assert f"| RAM: peak SRAM / arena | {c.c_peak_sram:,} B | {c.tflm_arena:,} B |" in report
    assert f"| latency per image (this host) | {c.c_latency_us:.1f} us | {c.tflm_latency_us:.1f} us |" in report
    for row in _expected_rows(result.quantum, c):
        assert "| " + " | ".join(row) + " |" in report


def test_compare_words_follow_the_direction() -> None:
    assert compare(1.0, 4.0, "faster", "slower") == "4.00x faster"
    assert compare(4.0, 1.0, "faster", "slower") == "4.00x slower"


def test_format_table_aligns_and_writes_markdown() -> None:
    text = format_table(("x", "long header"), [("value", "1"), ("v", "22")])
    lines = text.splitlines()
    assert lines[0].index("long") == lines[2].index("1") == lines[3].index("22")
    md = format_table(("a", "b"), [("1", "2")], markdown=True)
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]
