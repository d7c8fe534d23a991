"""QuantumNAT on the 4-class digits: noise-aware training vs plain training on a noisy fake device.

Setup (GitHub issue 4):

- data: ``digits4`` (scikit-learn digits 0-3, 4×4 average pooling, angles in [0, π],
  stratified 70/30 split, 504 train / 216 test);
- model: the ``4x4_ryzxy`` encoder and ``L`` layers of U3 on every wire + a CNOT ring
  (``tinyqml.classifier.classifier_circuit``), ``L`` in 2, 4, 8, transpiled once per depth onto
  the 5-qubit ``FakeManilaV2`` (optimization level 1, seed 0); ``<Z>`` of the 4 virtual
  qubits, read where the layout ends them, are the class logits;
- training (every configuration alike): cross-entropy, Adam (lr 0.05, cosine decay),
  batch 32, ``--epochs`` epochs (default 20), seeds 0, 1, 2 (initial weights, batch
  order, injected noise);
- configurations (``tinyqml.noise.quantumnat.PRESETS``): plain; noise injection (Pauli
  errors sampled from the Pauli-twirled FakeManilaV2 calibration at 1×, readout included);
  post-measurement normalization; post-measurement quantization (5 levels); all three;
  and injection + normalization;
- evaluation: the trained weights on Qiskit Aer (density-matrix method) with
  FakeManilaV2's noise model (``NoiseModel.from_backend(...).scaled(s).to_aer()``: gate
  errors ×s, T1/T2 ÷s, readout ×s) for s = 1, 2, 4, 8, 1024 shots per test image, readout
  errors on; normalization uses the statistics of the noisy test batch. Accuracy splits
  ties evenly (quantized logits tie). The noiseless accuracy is the exact statevector one.
  The exact noisy expectations (no shots) are recorded too.
- extra ("where it should bite"): at depth 8 and s = 2, 4, 8 (``--extra-scales``), models
  trained *with the noise they are evaluated under*, all with normalization: the shot
  noise of ``--shots`` shots alone (noiseless circuit), sampled injection at s + shot
  noise, the exact density-matrix expectation at s (``injection_method="exact"``), and
  the exact expectation at s + shot noise; same seeds, ``--extra-epochs`` (default 10)
  epochs, each evaluated on Aer at its training scale. ``--reuse-main FILE`` takes the
  main grid from an earlier run's JSON (same settings) and runs only the extra part.

    .venv/bin/python benchmarks/quantumnat.py            # full run (~20 min on 2 cores)
    .venv/bin/python benchmarks/quantumnat.py --fast     # smoke run: depth 2, 1 seed, 1 epoch

Prints markdown tables and writes ``benchmarks/results/quantumnat.md``, ``.json`` and
``.png`` (accuracy against noise scale); ``--fast`` writes ``quantumnat_fast.*`` instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from machine import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"

DEPTHS = (2, 4, 8)
SCALES = (1.0, 2.0, 4.0, 8.0)
SEEDS = (0, 1, 2)
CONFIGS = ("plain", "injection", "normalization", "quantization", "all", "injection+normalization")
#: the extra runs: (name, injected noise method or None, shot noise in training)
EXTRA_CONFIGS = (
    ("normalization+shots", None, True),
    ("injection+normalization+shots", "sampled", True),
    ("exact-noise+normalization", "exact", False),
    ("exact-noise+normalization+shots", "exact", True),
)
SHOTS = 1024
BATCH, LR, EPOCHS = 32, 0.05, 20
#: epochs of the extra runs (density-matrix training costs ~3x a noiseless step at 8 layers)
EXTRA_EPOCHS = 10
BACKEND = "FakeManilaV2"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def extra_config(method: str | None, with_shots: bool, scale: float, shots: int):
    """An extra run's configuration: normalization, noise injected at ``scale`` by ``method``
    (``None``: no injection) and, with ``with_shots``, the shot noise of ``shots`` shots."""
    from tinyqml.noise.quantumnat import PRESETS

    base = PRESETS["injection+normalization" if method else "normalization"]
    return dataclasses.replace(base, injection_method=method or "sampled", injection_scale=scale if method else 1.0,
                               shots=shots if with_shots else None)


def run_model(circuit, layout, config, nm, data, seed: int, epochs: int, scales, shots: int,
              aer_seed: int) -> dict[str, Any]:
    """Train one model and evaluate it noiselessly, exactly under noise and on Aer with shots."""
    import tinyqml.qml as tq
    from tinyqml.noise import expval
    from tinyqml.noise.aer import aer_expectations
    from tinyqml.noise.quantumnat import QuantumNATClassifier, accuracy, fit

    model = QuantumNATClassifier(circuit, layout.final, config, nm, seed=seed)
    start = time.perf_counter()
    losses = fit(model, data.x_train, data.y_train, epochs=epochs, batch_size=BATCH, lr=LR, seed=seed)
    train_s = time.perf_counter() - start
    w = model.weights.detach()
    obs = [tq.Z(q) for q in layout.final]
    out: dict[str, Any] = {"train_seconds": round(train_s, 2), "final_loss": losses[-1], "aer": {}, "exact": {}}
    with torch.no_grad():
        out["noiseless"] = accuracy(model(data.x_test), data.y_test)
        start = time.perf_counter()
        for k, s in enumerate(scales):
            scaled = nm.scaled(s)
            z = aer_expectations(circuit, w, data.x_test, scaled, shots=shots, seed=aer_seed + k,
                                 wires=layout.final, options={"max_parallel_threads": 1})
            out["aer"][f"{s:g}"] = accuracy(model.head(z), data.y_test)
            ze = expval(circuit, obs, scaled, w, data.x_test, readout=True)
            out["exact"][f"{s:g}"] = accuracy(model.head(ze), data.y_test)
        out["eval_seconds"] = round(time.perf_counter() - start, 2)
    return out


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cell(values: list[float], ref: list[float] | None = None) -> str:
    m, s = _ms(values)
    text = f"{100 * m:.1f} ± {100 * s:.1f}"
    if ref is not None:
        d = 100 * (m - statistics.fmean(ref))
        text += f" ({d:+.1f})"
    return text


def _vals(runs: list[dict], depth: int, config: str, key: str, scale: str | None = None) -> list[float]:
    out = []
    for r in runs:
        if r["depth"] == depth and r["config"] == config:
            out.append(r[key] if scale is None else r[key][scale])
    return out


def table(runs: list[dict], depths, configs, scales, key: str, deltas: bool) -> list[str]:
    heads = ["depth", "config", "noiseless"] + [f"{s:g}×" for s in scales]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for d in depths:
        for c in configs:
            if not _vals(runs, d, c, "noiseless"):
                continue
            ref = (lambda sc: _vals(runs, d, "plain", key, sc)) if deltas and c != "plain" else (lambda sc: None)
            row = [str(d), c, cell(_vals(runs, d, c, "noiseless"),
                                   _vals(runs, d, "plain", "noiseless") if deltas and c != "plain" else None)]
            row += [cell(_vals(runs, d, c, key, f"{s:g}"), ref(f"{s:g}")) for s in scales]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _extra_vals(extra: list[dict], config: str, scale: float) -> list[float]:
    return [r["aer"][f"{scale:g}"] for r in extra if r["config"] == config and f"{scale:g}" in r["aer"]
            and (r["trained_scale"] in (None, scale))]


def extra_table(runs: list[dict], extra: list[dict], depth: int, scales) -> list[str]:
    lines = ["| config | trained with | " + " | ".join(f"Aer {s:g}×" for s in scales) + " |",
             "|---|---|" + "---|" * len(scales)]
    main = (("plain", "no noise"), ("normalization", "no noise"),
            ("injection+normalization", "sampled noise at 1×"))
    for c, how in main:
        if not all(_vals(runs, depth, c, "aer", f"{s:g}") for s in scales):
            continue
        vals = [cell(_vals(runs, depth, c, "aer", f"{s:g}"), _vals(runs, depth, "plain", "aer", f"{s:g}")
                     if c != "plain" else None) for s in scales]
        lines.append(f"| {c} | {how} | " + " | ".join(vals) + " |")
    hows = {None: "no circuit noise", "sampled": "sampled noise at s", "exact": "exact noise at s"}
    for name, method, with_shots in EXTRA_CONFIGS:
        vals = []
        for s in scales:
            v = _extra_vals(extra, name, s)
            vals.append(cell(v, _vals(runs, depth, "plain", "aer", f"{s:g}")) if v else "–")
        how = hows[method] + (" + shot noise" if with_shots else "")
        lines.append(f"| {name} | {how} | " + " | ".join(vals) + " |")
    return lines


def plot(runs: list[dict], extra: list[dict], depths, configs, scales, shots: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(depths), figsize=(4.2 * len(depths), 3.6), sharey=True, squeeze=False)
    markers = dict(zip(CONFIGS, "osD^vP"))
    for ax, d in zip(axes[0], depths):
        for c in configs:
            pts = [(s, _vals(runs, d, c, "aer", f"{s:g}")) for s in scales]
            pts = [(s, v) for s, v in pts if v]
            if not pts:
                continue
            m = [100 * _ms(v)[0] for _, v in pts]
            e = [100 * _ms(v)[1] for _, v in pts]
            ax.errorbar([s for s, _ in pts], m, yerr=e, marker=markers.get(c, "o"), capsize=3, label=c)
        if d == max(depths):
            for (c, _, _), style in zip(EXTRA_CONFIGS, ("x", "*", "d", "p")):
                pts = [(s, _extra_vals(extra, c, s)) for s in scales]
                pts = [(s, v) for s, v in pts if v]
                if not pts:
                    continue
                ax.errorbar([s for s, _ in pts], [100 * _ms(v)[0] for _, v in pts],
                            yerr=[100 * _ms(v)[1] for _, v in pts], marker=style, markersize=8, linestyle=":",
                            capsize=3, label=f"{c} (extra)")
        ax.axhline(25, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(scales), [f"{s:g}×" for s in scales])
        ax.set_xlabel(f"{BACKEND} noise scale")
        ax.set_title(f"{d} layers")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"test accuracy on Aer, {shots} shots (%)")
    axes[0][0].set_ylim(0, 100)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("QuantumNAT, 4-class digits (mean ± std over seeds; dashed: chance)", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: settings that must match for --reuse-main
REUSE_KEYS = ("epochs", "batch", "lr", "shots", "seeds", "depths", "scales")


def _reused(args) -> dict:
    """The main grid of an earlier run (``--reuse-main``), checked against these settings."""
    payload = json.loads(Path(args.reuse_main).read_text())
    meta = payload["meta"]
    mine = {"epochs": args.epochs, "batch": BATCH, "lr": LR, "shots": args.shots, "seeds": list(args.seeds),
            "depths": list(args.depths), "scales": list(args.scales)}
    diff = [k for k in REUSE_KEYS if meta.get(k) != mine[k]]
    configs = sorted({r["config"] for r in payload["runs"]})
    if diff or configs != sorted(args.configs):
        raise SystemExit(f"--reuse-main: {args.reuse_main} was run with other settings ({diff or 'configs'})")
    return payload


def meta_info(args, elapsed: float) -> dict[str, Any]:
    import qiskit
    import qiskit_aer

    cpu = cpu_model()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "qiskit": qiskit.__version__,
        "qiskit_aer": qiskit_aer.__version__, "threads": torch.get_num_threads(), "epochs": args.epochs,
        "extra_epochs": args.extra_epochs, "batch": BATCH, "lr": LR, "shots": args.shots, "seeds": list(args.seeds),
        "depths": list(args.depths), "scales": list(args.scales), "backend": BACKEND,
        "wall_seconds": round(elapsed, 1),
        "load_avg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def render(runs, extra, layouts, args, meta) -> str:
    lines = [
        "# QuantumNAT on 4-class digits (FakeManilaV2 noise on Aer)",
        "",
        f"digits 0-3 (4×4 pooled, 504 train / 216 test), 4 qubits, `4x4_ryzxy` encoder + L layers of U3 + CNOT ring, "
        f"transpiled onto {BACKEND} (5 qubits, level 1, seed 0). Every configuration: {args.epochs} epochs, batch "
        f"{BATCH}, Adam lr {LR} with cosine decay, seeds {', '.join(map(str, args.seeds))}. Evaluated on Qiskit Aer "
        f"{meta['qiskit_aer']} (density matrix) with {BACKEND}'s noise model scaled s× (gate errors ×s, T1/T2 ÷s, "
        f"readout ×s), {args.shots} shots per test image, readout errors on. Injection samples Pauli-twirled errors "
        "of the 1× calibration (readout included). Accuracy in % (mean ± std over seeds; ties split evenly), in "
        "brackets the difference to plain training. Noiseless: exact statevector.",
        "",
        "Transpiled circuits: " + "; ".join(f"{d} layers: {c['ops']} ops, {c['cx']} CX, depth {c['depth']}, "
                                          f"measured on qubits {c['final']}" for d, c in layouts.items()),
        "",
        f"## Accuracy on Aer ({args.shots} shots, readout errors)",
        "",
        *table(runs, args.depths, args.configs, args.scales, "aer", deltas=True),
        "",
        "## The same models, exact noisy expectations (density matrix, readout, no shot noise)",
        "",
        *table(runs, args.depths, args.configs, args.scales, "exact", deltas=True),
    ]
    if extra:
        d = max(args.depths)
        lines += [
            "",
            f"## Where it should bite: training with the noise of the evaluation ({d} layers)",
            "",
            "Rows 1-3 repeat the main table. The other rows are trained for "
            f"{args.extra_epochs} epochs with normalization and the noise they are evaluated under, at each scale s: "
            f"the shot noise of {args.shots} shots alone (`shots=`, Gaussian with the binomial variance), sampled "
            "injection at s (Pauli-twirled, one draw per row) + shot noise, the exact density-matrix expectation under "
            "the full model at s (`injection_method=\"exact\"`), and that + shot noise. Each is evaluated on Aer at "
            "its training scale (the noiseless-circuit one at every scale). Brackets: difference to plain.",
            "",
            *extra_table(runs, extra, d, args.extra_scales),
        ]
    where = (f"on {meta['cpu']} ({meta['cores']} cores, torch threads {meta['threads']}, load average at the end "
             f"{meta['load_avg_end'][0]:.1f}), torch {meta['torch']}, qiskit {meta['qiskit']}")
    if meta.get("reused_main"):
        run = (f"Run: main grid {meta['main_wall_seconds']:.0f} s (an earlier run of this script, reused), extra "
               f"{meta['wall_seconds']:.0f} s, {where}.")
    else:
        run = f"Run: {meta['wall_seconds']:.0f} s {where}."
        if meta.get("main_wall_seconds") is not None:
            run = (f"Run: {meta['wall_seconds']:.0f} s (main grid {meta['main_wall_seconds']:.0f} s, extra "
                   f"{meta['wall_seconds'] - meta['main_wall_seconds']:.0f} s) {where}.")
    lines += ["", run, ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fast", "--quick", action="store_true", dest="fast",
                   help="smoke run: depth 2, seed 0, 1 epoch, scales 1 and 8, 256 shots")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--extra-epochs", type=int, default=EXTRA_EPOCHS, help="epochs of the extra runs")
    p.add_argument("--seeds", type=lambda t: tuple(int(v) for v in t.split(",")), default=SEEDS)
    p.add_argument("--depths", type=lambda t: tuple(int(v) for v in t.split(",")), default=DEPTHS)
    p.add_argument("--scales", type=lambda t: tuple(float(v) for v in t.split(",")), default=SCALES)
    p.add_argument("--reuse-main", type=Path, help="take the main grid from this earlier JSON (same settings)")
    p.add_argument("--extra-scales", type=lambda t: tuple(float(v) for v in t.split(",") if v),
                   default=(2.0, 4.0, 8.0),
                   help="scales of the trained-at-that-scale runs at the largest depth ('' to skip)")
    p.add_argument("--configs", type=lambda t: tuple(t.split(",")), default=CONFIGS)
    p.add_argument("--shots", type=int, default=SHOTS)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.fast:
        args.depths, args.seeds, args.epochs, args.scales, args.shots = (2,), (0,), 1, (1.0, 8.0), 256
        args.extra_scales = (8.0,)
        args.reuse_main = None
    if args.fast:
        args.extra_epochs = 1
    args.depths = tuple(sorted(args.depths))   # the extra runs follow the largest depth
    torch.set_num_threads(args.threads)

    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    import tinyqml.qml as tq
    from tinyqml.classifier import classifier_circuit
    from tinyqml.noise import NoiseModel
    from tinyqml.noise.quantumnat import PRESETS
    from tinyqml.qml.datasets import digits4

    unknown = [c for c in args.configs if c not in PRESETS]
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; known: {', '.join(PRESETS)}")
    start = time.perf_counter()
    backend = FakeManilaV2()
    nm = NoiseModel.from_backend(backend)
    data = digits4((0, 1, 2, 3), seed=0)
    runs: list[dict] = []
    extra: list[dict] = []
    layouts: dict[int, dict] = {}
    reused = _reused(args) if args.reuse_main else None
    for depth in args.depths:
        pc, layout = tq.transpile(classifier_circuit(depth), backend, optimization_level=1, seed=0)
        layouts[depth] = {"ops": len(pc.ops), "cx": pc.gate_counts.get("CX", 0), "depth": pc.depth,
                          "final": list(layout.final)}
        if reused is not None:
            runs += [r for r in reused["runs"] if r["depth"] == depth]
        else:
            for seed in args.seeds:
                for k, name in enumerate(args.configs):
                    r = run_model(pc, layout, PRESETS[name], nm, data, seed, args.epochs, args.scales, args.shots,
                                  aer_seed=100_000 * seed + 1000 * depth + 10 * k)
                    runs.append({"depth": depth, "config": name, "seed": seed, **r})
                    _log(f"[{time.perf_counter() - start:6.0f}s] L={depth} seed={seed} {name:24s} "
                         f"train {r['train_seconds']:5.1f}s noiseless {r['noiseless']:.3f} aer "
                         + " ".join(f"{v:.3f}" for v in r["aer"].values()))
        if depth == max(args.depths) and args.extra_scales:
            main_done = time.perf_counter() - start
            for seed in args.seeds:
                for k, (name, method, with_shots) in enumerate(EXTRA_CONFIGS):
                    trained = list(args.extra_scales) if method else [None]
                    for s in trained:
                        cfg = extra_config(method, with_shots, s or 1.0, args.shots)
                        evals = [s] if s is not None else list(args.extra_scales)
                        r = run_model(pc, layout, cfg, nm, data, seed, args.extra_epochs, evals, args.shots,
                                      aer_seed=100_000 * seed + 1000 * depth + 500 + 10 * k)
                        extra.append({"depth": depth, "config": name, "seed": seed, "trained_scale": s, **r})
                        _log(f"[{time.perf_counter() - start:6.0f}s] L={depth} seed={seed} {name}"
                             f"{'' if s is None else f'@{s:g}x'} train {r['train_seconds']:5.1f}s aer "
                             + " ".join(f"{v:.3f}" for v in r["aer"].values()))
    meta = meta_info(args, time.perf_counter() - start)
    if reused is not None:
        meta["main_wall_seconds"] = reused["meta"].get("main_wall_seconds") or reused["meta"]["wall_seconds"]
        meta["reused_main"] = True
    elif args.extra_scales:
        meta["main_wall_seconds"] = round(main_done, 1)
    report = render(runs, extra, layouts, args, meta)
    print(report)
    stem = "quantumnat_fast" if args.fast else "quantumnat"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{stem}.md").write_text(report)
    payload = {"meta": meta, "layouts": {str(k): v for k, v in layouts.items()}, "runs": runs, "extra": extra}
    (args.results_dir / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(runs, extra, args.depths, args.configs, args.scales, args.shots, args.results_dir / f"{stem}.png")
    _log(f"wrote {args.results_dir / stem}.md, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
