"""The main job's report: a summary table, ``report.md`` and its PNG plots, all from one run's results.

Nothing here measures anything: every number comes from the :class:`QuantumDemoResult` and
:class:`ClassicalDemoResult` it is given, so the report shows what that run computed.

>>> ratio(3.0, 1.5), pct(0.8125), signed_points(81.25, 29.2)
('2.00x', '81.2%', '+52.0 pts')
"""

from __future__ import annotations

import json
import platform
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Sequence

from tinyqml.demo.classical import ClassicalDemoResult
from tinyqml.demo.quantum import HEA, PRUNED, WARMUP_EPOCHS, QuantumDemoResult

__all__ = ["summary_rows", "format_table", "write_report", "ratio", "pct", "signed_points"]


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``'2.00x'``."""
    return f"{a / b:.2f}x" if b else "n/a"


def compare(ours: float, anchor: float, smaller: str, larger: str) -> str:
    """How ``ours`` compares with ``anchor`` when smaller is better: ``'2.00x fewer'`` (``anchor / ours``
    >= 1) or ``'1.50x more'`` (``ours / anchor`` > 1), with the given words.

    >>> compare(21, 57, "fewer", "more"), compare(30, 20, "fewer", "more"), compare(5, 5, "less", "more")
    ('2.71x fewer', '1.50x more', '1.00x less')
    """
    if ours <= anchor:
        return f"{ratio(anchor, ours)} {smaller}"
    return f"{ratio(ours, anchor)} {larger}"


def pct(fraction: float) -> str:
    """A fraction in [0, 1] as a percentage with one decimal."""
    return f"{100 * fraction:.1f}%"


def signed_points(a: float, b: float) -> str:
    """The difference of two percentages, ``'+52.0 pts'``."""
    return f"{a - b:+.1f} pts"


def summary_rows(quantum: QuantumDemoResult | None, classical: ClassicalDemoResult | None) -> list[tuple[str, ...]]:
    """``(area, measure, tinyqml, anchor, comparison)`` rows of the summary table."""
    rows: list[tuple[str, ...]] = []
    if quantum is not None:
        best, hea = quantum.row(PRUNED), quantum.row(HEA)
        for scale in quantum.config.scales:
            rows.append(("quantum", f"test accuracy on Aer, {quantum.backend} noise x{scale:g}",
                         f"QuantumNAS {pct(best.aer[scale])}", f"HEA {pct(hea.aer[scale])}",
                         signed_points(100 * best.aer[scale], 100 * hea.aer[scale])))
        rows.append(("quantum", "noiseless test accuracy", f"QuantumNAS {pct(best.noiseless)}",
                     f"HEA {pct(hea.noiseless)}", signed_points(100 * best.noiseless, 100 * hea.noiseless)))
        rows.append(("quantum", "2-qubit gates on the device", f"{best.two_qubit}", f"{hea.two_qubit}",
                     compare(best.two_qubit, hea.two_qubit, "fewer", "more")))
    if classical is not None:
        st = {s.name: s for s in classical.stages}
        dense, c = st["fp32 CNN"], st["generated C (host build)"]
        rows += [
            ("classical", "test accuracy (int8 C vs fp32 CNN)", f"{c.accuracy:.1f}%", f"{dense.accuracy:.1f}%",
             signed_points(c.accuracy, dense.accuracy)),
            ("classical", "MACs per image (pruned vs dense)", f"{c.macs:,}", f"{dense.macs:,}",
             compare(c.macs, dense.macs, "fewer", "more")),
            ("classical", "latency per image on this host", f"C {classical.c_latency_us:.1f} us",
             f"TFLM {classical.tflm_latency_us:.1f} us",
             compare(classical.c_latency_us, classical.tflm_latency_us, "faster", "slower")),
            ("classical", "RAM (C peak SRAM vs TFLM arena)", f"{classical.c_peak_sram:,} B",
             f"{classical.tflm_arena:,} B", compare(classical.c_peak_sram, classical.tflm_arena, "less", "more")),
            ("classical", "int8 outputs equal to TFLite Micro", f"{classical.bit_exact:,}/{classical.compared:,}",
             "", "bit-exact" if classical.bit_exact == classical.compared else "MISMATCH"),
        ]
    return rows


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """Columns aligned for a terminal, or a markdown table.

    >>> print(format_table(("a", "b"), [("1", "22")]))
    a  b
    -  --
    1  22
    """
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


SUMMARY_HEADER = ("area", "measure", "tinyqml", "anchor", "comparison")


def _quantum_md(q: QuantumDemoResult, plots: dict[str, str]) -> list[str]:
    c = q.config
    scales = [f"Aer {s:g}x" for s in c.scales]
    header = ("circuit", "noiseless", *scales, "params", "gates", "2q gates", "depth")
    rows = [(r.name, pct(r.noiseless), *(pct(r.aer[s]) for s in c.scales), str(r.params), str(r.gates),
             str(r.two_qubit), str(r.depth)) for r in q.rows]
    w, p = q.winner, q.pruning
    lines = [
        f"## Quantum: noise-aware QuantumNAS on {q.backend} ({q.n_qubits} qubits)", "",
        f"Digits 0-3 (4x4 pooled, {q.n_train} training / {q.n_val} validation / {q.n_test} test images). "
        f"SuperCircuit: `4x4_ryzxy` encoder + {c.blocks} weight-shared U3 + CU3 blocks, {WARMUP_EPOCHS} + {c.super_epochs} epochs "
        f"with restricted sampling; co-search of sub-circuit and qubit mapping: {c.trials} trials of the "
        f"evolutionary sampler (population {c.population}), scored by the exact noisy validation accuracy under "
        f"{q.backend}'s calibrated noise model; winner trained from scratch ({c.epochs} epochs) and gate-pruned "
        f"towards {c.sparsity:g} of its gates (the sparsest state within {c.max_drop:g} of the unpruned noisy "
        f"validation accuracy is kept). Baseline: a hardware-efficient ansatz with the winner's parameter count, "
        f"trained the same way, Qiskit's default layout. Evaluated on Qiskit Aer with the backend's noise model "
        f"(x scale), {c.shots} shots per image, readout errors on; gates and depth of the whole transpiled circuit.",
        "", format_table(header, rows, markdown=True), "",
        f"Winner: blocks {w['blocks']}, mapping (logical -> physical) {w['mapping']}, noisy validation accuracy "
        f"{pct(w['val_score'])} with inherited weights, {w['params']} parameters. Pruning: ansatz + encoder gates "
        f"{p['gates_before']} -> {p['gates_after']} (sparsity {p['sparsity']:.2f}; "
        f"{'the unpruned state was kept' if p['kept_epoch'] is None else 'state after epoch ' + str(p['kept_epoch']) + ' kept'}).",
        *(_pruning_note(p)),
        "", f"![accuracy]({plots['quantum_accuracy']})  ![search]({plots['quantum_search']})", "",
    ]
    return lines


def _pruning_note(p: dict[str, Any]) -> list[str]:
    if p["gates_after"] < p["gates_before"]:
        return []
    return ["", f"No pruned state stayed within the tolerance of the unpruned noisy validation accuracy "
                f"({pct(p['val_before'])} before pruning; after each fine-tuning epoch "
                f"{', '.join(pct(v) for v in p['val_accuracies'][:4])}, ...), so '+ pruned' runs the same circuit "
                f"as 'searched + mapped' and the two rows differ by shot noise only."]


def _classical_md(r: ClassicalDemoResult, plots: dict[str, str]) -> list[str]:
    c = r.config
    header = ("stage", "test accuracy", "MACs", "params", "bytes")
    rows = [(s.name, f"{s.accuracy:.2f}%", f"{s.macs:,}", f"{s.params:,}", f"{s.size_bytes:,}") for s in r.stages]
    tflite_bytes = next(st.size_bytes for st in r.stages if st.name == "TFLite Micro interpreter")
    cmp_rows = [
        ("latency per image (this host)", f"{r.c_latency_us:.1f} us", f"{r.tflm_latency_us:.1f} us",
         compare(r.c_latency_us, r.tflm_latency_us, "faster", "slower")),
        ("RAM: peak SRAM / arena", f"{r.c_peak_sram:,} B", f"{r.tflm_arena:,} B",
         compare(r.c_peak_sram, r.tflm_arena, "less", "more")),
        ("model data: C constant arrays / .tflite file", f"{r.c_const_bytes:,} B", f"{tflite_bytes:,} B",
         compare(r.c_const_bytes, tflite_bytes, "less", "more")),
        ("int8 outputs equal", f"{r.bit_exact:,}/{r.compared:,}", "reference",
         "bit-exact" if r.bit_exact == r.compared else "MISMATCH"),
    ]
    m4 = ("Cortex-M4 (QEMU mps2-an386): not run (install the tools with `make mcu-tools`)." if r.m4 is None else
          f"Cortex-M4 (QEMU mps2-an386): {r.m4['images']} images, outputs "
          f"{'equal to' if r.m4['equal_to_host'] else 'DIFFERENT from'} the host build's; model objects: flash "
          f"{r.m4['flash']:,} B, static SRAM {r.m4['sram']:,} B.")
    return [
        "## Classical: digits CNN -> pruned -> int8 -> TFLite -> C, against TFLite Micro", "",
        f"scikit-learn digits (8x8, 10 classes). SmallCNN widths {c.widths}, {c.epochs} epochs; channel pruning "
        f"ratio {c.prune_ratio:g} (multiples of {c.round_to}) -> widths {r.widths_after}, {c.finetune_epochs} "
        f"fine-tuning epochs; int8 calibrated on {c.calibration} training images; `model.tflite` operators "
        f"{', '.join(r.operators)}. The generated C and the TFLite Micro interpreter run the same file on every "
        f"test image; latency is the median of {c.timing_repeats} timed batches on this host (TFLM's includes "
        f"a Python call, well under a microsecond). The C's peak SRAM is its activation arena plus kernel scratch "
        f"(the caller's input and output buffers not counted); TFLM's arena holds its planned tensors, I/O "
        f"included, and its interpreter's persistent data. Neither model-data figure counts runtime code.", "",
        format_table(header, rows, markdown=True), "",
        format_table(("", "generated C", "TFLite Micro", "comparison"), cmp_rows, markdown=True), "",
        m4, "", f"![pipeline]({plots['classical_pipeline']})  ![C vs TFLM]({plots['classical_c_vs_tflm']})", "",
    ]


def _subplots(*grid: int, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A matplotlib ``Figure`` and its axes, without pyplot (no global backend or figure state touched)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_quantum(q: QuantumDemoResult, out: Path) -> dict[str, str]:
    import numpy as np

    fig, ax = _subplots(figsize=(7, 3.6))
    labels = ["noiseless", *(f"Aer {s:g}x" for s in q.config.scales)]
    x = np.arange(len(labels))
    for k, r in enumerate(q.rows):
        vals = [r.noiseless, *(r.aer[s] for s in q.config.scales)]
        ax.bar(x + (k - 1) * 0.27, [100 * v for v in vals], 0.27, label=r.name.replace("QuantumNAS: ", ""))
    ax.axhline(25, color="k", ls=":", lw=1, label="chance")
    ax.set_xticks(x, labels)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"digits 0-3 on {q.backend}")
    ax.legend(fontsize=7)
    _save(fig, out / "quantum_accuracy.png")
    fig, ax = _subplots(figsize=(5, 3.6))
    ax.scatter([t["two_qubit"] for t in q.trials], [100 * t["value"] for t in q.trials], s=14,
               c=[t["number"] for t in q.trials], cmap="viridis", label="trials (colour: trial number)")
    ax.scatter([q.winner["costs"].get("two_qubit")], [100 * q.winner["val_score"]], s=150, marker="*", c="C3",
               edgecolors="k", label="winner")
    ax.set_xlabel(f"2-qubit gates on {q.backend}")
    ax.set_ylabel("noisy validation accuracy (%)")
    ax.legend(fontsize=8)
    _save(fig, out / "quantum_search.png")
    return {"quantum_accuracy": "quantum_accuracy.png", "quantum_search": "quantum_search.png"}


def _plot_classical(r: ClassicalDemoResult, out: Path) -> dict[str, str]:
    fig, (a1, a2) = _subplots(1, 2, figsize=(9, 3.4))
    names = [s.name.replace(" (tinyqml engine)", "").replace(" interpreter", "").replace(" (host build)", "")
             for s in r.stages]
    a1.bar(names, [s.accuracy for s in r.stages], color="C0")
    a1.set_ylim(min(s.accuracy for s in r.stages) - 5, 100)
    a1.set_ylabel("test accuracy (%)")
    a1.tick_params(axis="x", rotation=30, labelsize=7)
    a2.bar(names, [s.size_bytes / 1024 for s in r.stages], color="C1")
    a2.set_ylabel("model size (KiB)")
    a2.tick_params(axis="x", rotation=30, labelsize=7)
    _save(fig, out / "classical_pipeline.png")
    fig, (b1, b2) = _subplots(1, 2, figsize=(7, 3.2))
    b1.bar(["generated C", "TFLite Micro"], [r.c_latency_us, r.tflm_latency_us], color=["C2", "C7"])
    b1.set_ylabel("latency per image (us)")
    b2.bar(["C peak SRAM", "TFLM arena"], [r.c_peak_sram / 1024, r.tflm_arena / 1024], color=["C2", "C7"])
    b2.set_ylabel("RAM (KiB)")
    _save(fig, out / "classical_c_vs_tflm.png")
    return {"classical_pipeline": "classical_pipeline.png", "classical_c_vs_tflm": "classical_c_vs_tflm.png"}


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value) if f.compare}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(out: Path, quantum: QuantumDemoResult | None, classical: ClassicalDemoResult | None,
                 meta: dict[str, Any]) -> Path:
    """Write ``report.md``, ``results.json`` and the plots into ``out``; returns the report's path."""
    plots: dict[str, str] = {}
    if quantum is not None:
        plots.update(_plot_quantum(quantum, out))
        pruned = quantum.layers.get(PRUNED)
        if pruned is not None:  # the deployable result: the pruned circuit and its trained weights
            (out / "quantum_pruned_circuit.json").write_text(pruned.circuit.to_json())
            (out / "quantum_pruned_weights.json").write_text(json.dumps(pruned.weights.detach().tolist()))
    if classical is not None:
        plots.update(_plot_classical(classical, out))
    lines = [f"# tinyqml demo, {meta['started']}", "",
             f"{meta['machine']}; torch {meta['torch']}, qiskit {meta.get('qiskit', 'n/a')}, Python "
             f"{platform.python_version()}; seed {meta['seed']}{', fast mode' if meta['fast'] else ''}; "
             f"{meta['seconds']:.0f} s in all. Every number below was computed in this run.", "",
             "## Summary", "", format_table(SUMMARY_HEADER, summary_rows(quantum, classical), markdown=True), ""]
    if quantum is not None:
        lines += _quantum_md(quantum, plots)
    if classical is not None:
        lines += _classical_md(classical, plots)
    lines += ["## Reproduce", "", f"    {meta['command']}", ""]
    (out / "results.json").write_text(json.dumps(_jsonable({"meta": meta, "quantum": quantum,
                                                              "classical": classical}), indent=1))
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
