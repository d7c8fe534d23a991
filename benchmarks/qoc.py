"""QOC benchmark: on-chip-style training with and without probabilistic gradient pruning.

Workload (GitHub issue 5, QOC)
------------------------------
* Data: ``tinyqml.qml.datasets.digits4`` (digits 0-3, 4x4 pooled, angles in [0, pi],
  stratified 70/30 split, split seed 0); a class-balanced training subset of
  ``--train`` images (default 160, the first of each class in the split's order) and
  the full test set (216 images).
* Circuit: the ``4x4_ryzxy`` encoder of the demo (16 features as RY, RZ, RX, RY layers)
  followed by ``--layers`` (default 2) hardware-efficient layers: a trainable U3 on
  every wire, then a CX chain ``(0,1) (1,2) (2,3)``; transpiled with
  ``tinyqml.qml.transpile`` onto ``FakeManilaV2`` (a 5-qubit line; initial layout
  ``[0, 1, 2, 3]``, optimization level 1, seed 0): rz/sx/cx, each U3 angle one rz.
* Device: the density-matrix simulator under ``NoiseModel.from_backend(FakeManilaV2())``
  (calibrated gate errors, T1/T2 relaxation, readout errors), ``<Z>`` of the four
  measured qubits estimated from ``--shots`` samples (default 1024) drawn with a seeded
  generator; logits ``5 * <Z_i>``, cross-entropy.
* Training: Adam (lr 0.1, cosine decay), batch 20, ``--epochs`` epochs (default 8);
  every forward value and every gradient entry comes from shot-noisy circuit runs
  (parameter shift: two shifted circuits per weight and input).
* Variants: ``full`` (every gradient every step) and ``pruned`` (QOC probabilistic
  gradient pruning, ratio 0.5, accumulation window 1, pruning window 2, by
  ``tinyqml.search.gradient_pruning``), seeds 0, 1, 2 (weights, shots, batch order,
  pruning draws).
* Reported: test accuracy from the exact noisy expectations (what infinitely many shots
  on the simulated device would give) and from one 1024-shot evaluation; circuit
  executions (rows simulated: each is one circuit at one parameter setting on one input,
  run for ``shots`` shots) for gradients and in total; wall time of training.

    .venv/bin/python benchmarks/qoc.py [--fast] [--seeds 0,1,2] [--train 160] [--epochs 8]

Results are printed and written to ``benchmarks/results/qoc.md`` and ``.json``
(``--fast``: a smoke run, written only with ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import cpu_model

import tinyqml.qml as tq
from tinyqml.classifier import encoder_4x4_ryzxy
from tinyqml.noise import NoiseModel
from tinyqml.noise.qoc import OnChipClassifier, QOCConfig, train_qoc
from tinyqml.qml.datasets import digits4
from tinyqml.search.gradient_pruning import GradientPruningConfig

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
N_WIRES = 4
LAYOUT = (0, 1, 2, 3)


def hea_ansatz(n_wires: int, layers: int) -> tq.Circuit:
    """``layers`` x (U3 on every wire, CX chain); weights ``0 .. 3 * n_wires * layers - 1``."""
    b = tq.CircuitBuilder(n_wires)
    k = 0
    for _ in range(layers):
        for w in range(n_wires):
            b.u(w, tq.weight(k), tq.weight(k + 1), tq.weight(k + 2))
            k += 3
        for w in range(n_wires - 1):
            b.cx(w, w + 1)
    return b.build()


def balanced_subset(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    classes = sorted(set(y.tolist()))
    per = max(1, n // len(classes))
    idx = torch.cat([torch.nonzero(y == c).flatten()[:per] for c in classes])
    return x[idx], y[idx]


def build(layers: int, seed: int = 0):
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    backend = FakeManilaV2()
    logical = encoder_4x4_ryzxy(N_WIRES) + hea_ansatz(N_WIRES, layers)
    physical, layout = tq.transpile(logical, backend, initial_layout=list(LAYOUT), seed=seed)
    return backend, logical, physical, layout, NoiseModel.from_backend(backend)


def run_one(variant: str, seed: int, args, physical, layout, noise_model, data) -> dict:
    x_tr, y_tr, x_te, y_te = data
    pruning = GradientPruningConfig(ratio=args.ratio, accumulation_window=args.wa, pruning_window=args.wp,
                                    probabilistic=True, seed=seed) if variant == "pruned" else None
    cfg = QOCConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, seed=seed, pruning=pruning,
                    eval_shots=args.shots)
    model = OnChipClassifier(physical, layout.final, noise_model=noise_model, shots=args.shots, seed=seed)
    t0 = time.perf_counter()
    res = train_qoc(model, x_tr, y_tr, cfg, x_test=x_te, y_test=y_te,
                    on_epoch=lambda e: print(f"   {variant} seed {seed} epoch {e.epoch}: loss {e.loss:.3f} "
                                             f"train(shots) {e.train_accuracy:.3f} test(exact) "
                                             f"{e.test_accuracy:.3f} circuits {e.training_executions}",
                                             flush=True))
    out = {"variant": variant, "seed": seed, **res.summary(), "total_seconds": time.perf_counter() - t0,
           "history": [e.__dict__ for e in res.history]}
    return out


def _ms(vals: list[float], digits: int = 3) -> str:
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _epochs(e: list[int]) -> str:
    return f"epoch {e[0]}" if min(e) == max(e) else f"epochs {min(e)}-{max(e)}"


def _int(v: float) -> str:
    return f"{v:,.0f}"


def tables(runs: list[dict], shots: int) -> list[str]:
    lines = ["| variant | test acc (exact noisy) | test acc (" + str(shots) + " shots) | gradient circuits | "
             "training circuits | training shots | gradients evaluated | train wall s |",
             "|---|---|---|---|---|---|---|---|"]
    variants = [v for v in ("full", "pruned") if any(r["variant"] == v for r in runs)]
    base = None
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]
        grad = statistics.mean(r["executions"]["gradient"] for r in rs)
        train = statistics.mean(r["executions"]["training"] for r in rs)
        tshots = train * shots
        if base is None:
            base = train
        rel = f" ({train / base:.2f}x)" if v != variants[0] else ""
        lines.append(f"| {v} | {_ms([r['test_accuracy'] for r in rs])} | {_ms([r['test_accuracy_shots'] for r in rs])}"
                     f" | {_int(grad)} | {_int(train)}{rel} | {tshots:.3g} | "
                     f"{statistics.mean(r['evaluated_fraction'] for r in rs):.3f} | "
                     f"{_ms([r['seconds'] for r in rs], 1)} |")
    if {"full", "pruned"} <= set(variants):
        accs, epochs, budgets = [], [], []
        for r in (r for r in runs if r["variant"] == "pruned"):
            full = next((f for f in runs if f["variant"] == "full" and f["seed"] == r["seed"]), None)
            if full is None:
                continue
            budget = r["executions"]["training"]
            reached = [e for e in full["history"] if e["training_executions"] <= budget]
            if reached:
                accs.append(reached[-1]["test_accuracy"])
                epochs.append(reached[-1]["epoch"])
                budgets.append(budget)
        if accs:
            lines += ["", f"Equal circuit budget: with at most the pruned runs' training circuits "
                          f"({_int(statistics.mean(budgets))}), the full runs had finished "
                          f"{_epochs(epochs)} with test acc (exact noisy) {_ms(accs)} "
                          f"(pruned runs at the end: {_ms([r['test_accuracy'] for r in runs if r['variant'] == 'pruned'])})."]
    lines += ["", "Per seed:", "",
              "| variant | seed | test acc (exact noisy) | test acc (shots) | final train loss | training circuits "
              "| train wall s |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['variant']} | {r['seed']} | {r['test_accuracy']:.3f} | {r['test_accuracy_shots']:.3f} | "
                     f"{r['final_loss']:.3f} | {_int(r['executions']['training'])} | {r['seconds']:.1f} |")
    return lines


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", "--quick", action="store_true", help="smoke run (seconds); writes only with --out")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--train", type=int, default=160, help="class-balanced training subset size")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--shots", type=int, default=1024)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--wa", type=int, default=1, help="accumulation window")
    ap.add_argument("--wp", type=int, default=2, help="pruning window")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    if args.fast:
        args.seeds, args.layers, args.train, args.epochs, args.batch, args.shots = "0", 1, 8, 1, 4, 128
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out_dir = Path(args.out) if args.out else (None if args.fast else RESULTS)

    _, logical, physical, layout, nm = build(args.layers)
    data = digits4((0, 1, 2, 3), seed=0)
    x_tr, y_tr = balanced_subset(data.x_train, data.y_train, args.train)
    x_te, y_te = (data.x_test[:16], data.y_test[:16]) if args.fast else (data.x_test, data.y_test)
    print(f"QOC benchmark: {logical.n_weights} weights, transpiled {physical!r} {physical.gate_counts}, "
          f"measured {layout.final}; train {len(y_tr)}, test {len(y_te)}, shots {args.shots}, "
          f"epochs {args.epochs}, batch {args.batch}", flush=True)
    runs = []
    t_all = time.perf_counter()
    for seed in seeds:
        for variant in ("full", "pruned"):
            runs.append(run_one(variant, seed, args, physical, layout, nm, (x_tr, y_tr, x_te, y_te)))
    total = time.perf_counter() - t_all
    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "tinyqml": importlib.metadata.version("tinyqml"), "python": sys.version.split()[0],
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "threads": torch.get_num_threads(), "total_seconds": total,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "circuit": {"weights": logical.n_weights, "physical_gate_counts": physical.gate_counts,
                    "depth": physical.depth, "layout_final": list(layout.final), "backend": "FakeManilaV2"},
        "train_size": len(y_tr), "test_size": len(y_te),
    }
    lines = [
        "# QOC: on-chip-style training with probabilistic gradient pruning",
        "",
        f"digits4 (0-3), 4 qubits, encoder 4x4_ryzxy + {args.layers} x (U3 + CX chain) = "
        f"{logical.n_weights} weights, transpiled onto FakeManilaV2 ({physical.gate_counts}, depth "
        f"{physical.depth}); calibrated noise model + readout, {args.shots} shots per circuit; "
        f"train {len(y_tr)} (class-balanced subset), test {len(y_te)}; Adam lr {args.lr}, batch {args.batch}, "
        f"{args.epochs} epochs; pruning ratio {args.ratio}, w_a={args.wa}, w_p={args.wp}; seeds {seeds} "
        f"(mean ± std).",
        "",
        *tables(runs, args.shots),
        "",
        f"{meta['date']}, {meta['cpu']} ({meta['cpus']} cpus, load {meta['load_avg']}), torch {meta['torch']}, "
        f"{meta['threads']} threads; whole run {total:.0f} s.",
    ]
    text = "\n".join(lines)
    print(text)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "qoc.md").write_text(text + "\n")
        (out_dir / "qoc.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2, default=str) + "\n")
        print(f"wrote {out_dir / 'qoc.md'} and {out_dir / 'qoc.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
