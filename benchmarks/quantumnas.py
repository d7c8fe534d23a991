"""QuantumNAS on the 4-class digits: searched + mapped + pruned circuit vs a hardware-efficient ansatz.

Setup (GitHub issue 5):

- data: ``digits4`` (scikit-learn digits 0-3, 4×4 average pooling, angles in [0, π],
  stratified 70/30 split, 504 train / 216 test); per seed a quarter of the training
  set (126 images, seeded permutation) is the validation set of the search and of the
  pruning, the other 378 train every model (SuperCircuit, winner, baselines); the
  216 test images are only used for the table;
- device: the 5-qubit ``FakeQuitoV2`` (T-shaped coupling map 0-1, 1-2, 1-3, 3-4; the
  machine QuantumNAS reports MNIST-4 on) and its calibrated noise model
  (``NoiseModel.from_backend``: depolarizing + thermal relaxation per gate, readout);
- SuperCircuit: the ``4x4_ryzxy`` encoder, then ``--blocks`` (default 4) weight-shared
  blocks of U3 on every wire + CU3 on the ring (0,1), (1,2), (2,3), (3,0), elastic depth
  and width (front sampling); trained noise-free for ``--super-epochs`` (150) epochs (+2 on the
  largest circuit), one sub-circuit per step, at most 2 choices away from the previous
  one (restricted sampling); Adam lr 0.05, cosine decay, batch 32;
- co-search: the SuperCircuit's choices + the physical qubit of each of the 4 logical
  qubits (distinct, the sampler's feasibility predicate, which also skips candidates
  already scored), ``--trials`` (250) trials of the constraint-aware evolutionary
  sampler (population 16, 4 parents); each candidate keeps
  its inherited weights, is transpiled with that initial layout (Qiskit level 1) and
  scored by the validation accuracy of the exact noisy ``<Z>`` (density matrices under
  the 1× calibration, readout errors included);
- the winner is re-initialised and trained from scratch (``--epochs`` epochs, default
  40, Adam lr 0.05, batch 32), then gates are pruned iteratively with fine-tuning: one
  group per gate, identity-distance importance, an iterative schedule to ``--sparsity``
  (default 0.5) in 4 equal steps, 3 fine-tuning epochs each, + 3 settling epochs (lr
  0.02; ``--schedule agp`` for AGP); after every epoch the pruned circuit is
  squashed, mapped and scored on the validation set under the noise model, and the
  sparsest state within ``--max-drop`` (default 0.02) of the unpruned score is kept;
  pruned gates are compiled away (``squash_circuit``) and the result re-transpiled with
  the searched mapping;
- baselines, trained exactly like the winner: a hardware-efficient ansatz (RY and RZ
  layers + a CX ring, ``templates.hardware_efficient``, cut to the winner's number of
  parameters before pruning) and the same with a CX chain, both on Qiskit's default
  layout (level 1); the searched circuit on the default layout isolates the mapping;
- evaluation: the trained weights on Qiskit Aer (density-matrix method) with Quito's
  noise model at 1× and 4× (``NoiseModel.scaled``: gate errors ×s, T1/T2 ÷s, readout
  ×s), 1024 shots per test image, readout errors on; noiseless: exact statevector.
  Gates, 2-qubit gates and depth are those of the whole transpiled circuit (encoder
  included; ``rz`` counts as a gate though it is virtual on IBM hardware).

    .venv/bin/python benchmarks/quantumnas.py            # full run (~8-15 min on 2 shared cores)
    .venv/bin/python benchmarks/quantumnas.py --fast     # smoke run: 1 seed, tiny everything

Prints a markdown table and writes ``benchmarks/results/quantumnas.md``, ``.json`` and
``.png`` (validation accuracy against 2-qubit gates of every trial); ``--fast`` writes
``quantumnas_fast.*``. ``--secondary gates`` makes the search two-objective and adds the
engine's Pareto plot (``quantumnas_pareto.png``).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from machine import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"

SEEDS = (0, 1, 2)
SCALES = (1.0, 4.0)
SHOTS = 1024
BLOCKS = 4
SUPER_EPOCHS = 150
TRIALS = 250
EPOCHS = 40
SPARSITY = 0.5
#: pruning keeps the sparsest state whose noisy validation accuracy is within this of the unpruned one
MAX_DROP = 0.02
BACKEND = "FakeQuitoV2"
METHODS = (
    ("hea-ring", "HEA (RY, RZ + CX ring), default layout"),
    ("hea-chain", "HEA (RY, RZ + CX chain), default layout"),
    ("searched-default", "searched, default layout"),
    ("searched-mapped", "searched + mapped"),
    ("searched-mapped-pruned", "searched + mapped + pruned"),
)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _backend(name: str):
    from qiskit_ibm_runtime import fake_provider

    return getattr(fake_provider, name)()


def evaluate(layer, mapped, data, nm, scales, shots: int, aer_seed: int, n_test: int) -> dict[str, Any]:
    """Noiseless, exact-noisy (1×) and Aer accuracies of a trained layer on its mapped circuit."""
    from tinyqml.noise.quantumnas import accuracy, aer_accuracy, noisy_accuracy

    x, y = data.x_test[:n_test], data.y_test[:n_test]
    with torch.no_grad():
        noiseless = accuracy(layer(x), y)
    w = layer.weights.detach()
    out: dict[str, Any] = {
        "noiseless": noiseless,
        "exact_1x": noisy_accuracy(mapped, w, x, y, nm, 4),
        "aer": {},
        "params": mapped.params, "gates": mapped.gates, "two_qubit": mapped.two_qubit, "depth": mapped.depth,
        "initial_layout": list(mapped.layout.initial), "final_layout": list(mapped.layout.final),
    }
    for k, s in enumerate(scales):
        out["aer"][f"{s:g}"] = aer_accuracy(mapped, w, x, y, nm.scaled(s), 4, shots=shots, seed=aer_seed + k,
                                            options={"max_parallel_threads": 1})
    return out


def run_seed(seed: int, args, backend, nm, data) -> tuple[dict[str, Any], Any]:
    import tinyqml.qml as tq
    from tinyqml.classifier import encoder_4x4_ryzxy
    from tinyqml.noise.quantumnas import (
        CoSearch, PruneConfig, SearchSettings, SuperTrainConfig, TrainConfig, fit, hea_with_budget, map_circuit,
        noisy_validator, prune_gates, scratch_layer, train_supercircuit,
    )
    from tinyqml.qml.supercircuit import SuperCircuit, SuperCircuitConfig, SuperLayer
    from tinyqml.search import Evolution, EvolutionConfig

    t0 = time.perf_counter()
    times: dict[str, float] = {}
    enc = encoder_4x4_ryzxy()
    obs = [tq.Z(i) for i in range(4)]
    perm = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed))
    n_val = len(perm) // 4
    xv, yv = data.x_train[perm[:n_val]], data.y_train[perm[:n_val]]
    xs, ys = data.x_train[perm[n_val:]], data.y_train[perm[n_val:]]

    sc = SuperCircuit(SuperCircuitConfig(n_wires=4, n_blocks=args.blocks))
    super_layer = SuperLayer(enc, sc, obs, seed=seed)
    train_supercircuit(super_layer, xs, ys, SuperTrainConfig(epochs=args.super_epochs, warmup_epochs=2, restrict=2,
                                                             seed=seed))
    times["supercircuit"] = time.perf_counter() - t0

    t = time.perf_counter()
    strategy = Evolution(EvolutionConfig(population=args.population, parents=4))
    settings = SearchSettings(n_trials=args.trials, strategy=strategy, seed=seed, storage=args.storage,
                              study_name=f"quantumnas-{BACKEND}-seed{seed}", secondary=args.secondary,
                              transpile_seed=seed)
    search = CoSearch(super_layer, backend, nm, xv, yv, 4, settings)
    found = search.run()
    times["search"] = time.perf_counter() - t
    _log(f"  seed {seed}: search done in {times['search']:.0f}s, val {found.score:.3f}, "
         f"sub-circuit {sc.key(found.sub_config)}, mapping {found.mapping}")

    t = time.perf_counter()
    cfg = TrainConfig(epochs=args.epochs, lr=0.05, seed=seed)
    winner = scratch_layer(super_layer, found.config, seed=seed)
    fit(winner, xs, ys, cfg)
    budget = winner.circuit.n_weights
    validate = noisy_validator(backend, nm, found.mapping, xv, yv, 4, seed=seed)
    pruned = prune_gates(copy.deepcopy(winner), xs, ys,
                         PruneConfig(sparsity=args.sparsity, schedule=args.schedule, stages=args.stages,
                                     prune_epochs=args.prune_epochs, settle_epochs=args.settle_epochs,
                                     max_drop=args.max_drop, seed=seed), validate)
    baselines = {}
    for name, ent in (("hea-ring", "ring"), ("hea-chain", "linear")):
        layer = tq.QuantumLayer(enc + hea_with_budget(4, budget, entangler=ent), obs, seed=seed)
        fit(layer, xs, ys, cfg)
        baselines[name] = layer
    times["training"] = time.perf_counter() - t

    t = time.perf_counter()
    rows = {
        "hea-ring": (baselines["hea-ring"], map_circuit(baselines["hea-ring"].circuit, backend, None, seed=seed)),
        "hea-chain": (baselines["hea-chain"], map_circuit(baselines["hea-chain"].circuit, backend, None, seed=seed)),
        "searched-default": (winner, map_circuit(winner.circuit, backend, None, seed=seed)),
        "searched-mapped": (winner, map_circuit(winner.circuit, backend, found.mapping, seed=seed)),
        "searched-mapped-pruned": (pruned.layer, map_circuit(pruned.layer.circuit, backend, found.mapping,
                                                             seed=seed)),
    }
    results = {}
    for k, (name, (layer, mapped)) in enumerate(rows.items()):
        results[name] = evaluate(layer, mapped, data, nm, args.scales, args.shots, 100_000 * seed + 100 * k,
                                 args.n_test)
    times["evaluation"] = time.perf_counter() - t
    trials = [{"number": tr.number, "values": list(tr.values), "costs": tr.user_attrs.get("costs", {}),
               "mapping": tr.user_attrs.get("mapping"), "key": list(map(list, _key(sc, tr.params)))}
              for tr in found.study.trials if tr.values is not None]
    return {
        "seed": seed, "methods": results, "times": {k: round(v, 1) for k, v in times.items()},
        "winner": {"config": found.config, "key": list(map(list, _key(sc, found.config))),
                   "mapping": list(found.mapping), "val_score": found.score, "costs": found.costs,
                   "params": budget, "ansatz_gates": len(winner.circuit.ops) - len(enc.ops),
                   "pruned_sparsity": pruned.sparsity, "pruned_ansatz_gates": pruned.gates_after - len(enc.ops),
                   "pruning_val_before": pruned.val_before, "pruning_val": pruned.val_accuracies,
                   "pruning_sparsities": pruned.sparsities, "pruning_kept_epoch": pruned.kept_epoch},
        "trials": trials,
    }, found.study


def _key(sc, config) -> tuple:
    from tinyqml.noise.quantumnas import sub_config

    k = sc.key(sub_config(sc, config))
    return ((k[0],),) + tuple(k[1:])


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def pct(values: list[float]) -> str:
    m, s = _ms(values)
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def num(values: list[float]) -> str:
    m, s = _ms(values)
    return f"{m:.0f} ± {s:.0f}" if len(values) > 1 else f"{m:.0f}"


def table(runs: list[dict], scales) -> list[str]:
    heads = ["circuit", "noiseless"] + [f"Aer {s:g}×" for s in scales] + ["params", "gates", "2q gates", "depth"]
    lines = ["| " + " | ".join(heads) + " |", "|---|" + "---:|" * (len(heads) - 1)]
    for key, label in METHODS:
        rs = [r["methods"][key] for r in runs]
        row = [label, pct([r["noiseless"] for r in rs])] + [pct([r["aer"][f"{s:g}"] for r in rs]) for s in scales]
        row += [num([r[c] for r in rs]) for c in ("params", "gates", "two_qubit", "depth")]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def seed_table(runs: list[dict]) -> list[str]:
    lines = ["| seed | sub-circuit (blocks; U3, CU3 per block) | mapping (logical→physical) | val acc (inherited, "
             "noisy) | params | ansatz gates → pruned | time (super / search / train / eval) |",
             "|---|---|---|---:|---:|---|---|"]
    for r in runs:
        w = r["winner"]
        key = w["key"]
        sub = f"{key[0][0]}; " + ", ".join(f"({u}, {c})" for u, c in key[1:])
        t = r["times"]
        lines.append(f"| {r['seed']} | {sub} | {w['mapping']} | {100 * w['val_score']:.1f} | {w['params']} | "
                     f"{w['ansatz_gates']} → {w['pruned_ansatz_gates']} (sparsity {w['pruned_sparsity']:.2f}) | "
                     f"{t['supercircuit']:.0f} / {t['search']:.0f} / {t['training']:.0f} / {t['evaluation']:.0f} s |")
    return lines


def notes(runs: list[dict], meta: dict) -> list[str]:
    """Facts the table does not show by itself."""
    removed = sum(r["winner"]["ansatz_gates"] - r["winner"]["pruned_ansatz_gates"] for r in runs)
    total = sum(r["winner"]["ansatz_gates"] for r in runs)
    out = [f"Pruning removed {removed} of {total} ansatz gates over the seeds."]
    same = [r["seed"] for r in runs if r["winner"]["pruned_ansatz_gates"] == r["winner"]["ansatz_gates"]]
    if same:
        out.append(f"Seeds {', '.join(map(str, same))}: no pruned state stayed within the noisy validation tolerance, "
                   "so '+ pruned' runs the same circuit as 'searched + mapped' (the rows differ by shot noise only).")
    share = 100 * meta.get("majority_share", 0.0)
    out.append(f"An accuracy of {share:.1f}% is one class predicted for every test image (the largest class's share "
               "of the test set).")
    return [" ".join(out)]


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r, color in zip(runs, ("C0", "C1", "C2", "C3", "C4")):
        xs = [t["costs"].get("two_qubit", 0) for t in r["trials"]]
        ys = [100 * t["values"][0] for t in r["trials"]]
        ax.scatter(xs, ys, s=12, c=color, alpha=0.5, label=f"seed {r['seed']} trials")
        w = r["winner"]
        ax.scatter([w["costs"].get("two_qubit", 0)], [100 * w["val_score"]], s=120, c=color, marker="*",
                   edgecolors="k", label=f"seed {r['seed']} winner")
    ax.set_xlabel(f"2-qubit gates after transpiling onto {BACKEND}")
    ax.set_ylabel("validation accuracy, inherited weights, noisy (%)")
    ax.set_title("QuantumNAS co-search (sub-circuit + mapping)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def meta_info(args, elapsed: float) -> dict[str, Any]:
    import qiskit
    import qiskit_aer

    cpu = cpu_model()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "qiskit": qiskit.__version__,
        "qiskit_aer": qiskit_aer.__version__, "threads": torch.get_num_threads(), "backend": BACKEND,
        "blocks": args.blocks, "super_epochs": args.super_epochs, "trials": args.trials,
        "population": args.population, "epochs": args.epochs, "sparsity": args.sparsity,
        "schedule": args.schedule, "stages": args.stages, "prune_epochs": args.prune_epochs,
        "settle_epochs": args.settle_epochs, "max_drop": args.max_drop,
        "shots": args.shots,
        "scales": list(args.scales), "seeds": list(args.seeds), "n_test": args.n_test,
        "secondary": args.secondary, "wall_seconds": round(elapsed, 1),
        "load_avg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def render(runs: list[dict], args, meta: dict) -> str:
    lines = [
        f"# QuantumNAS on 4-class digits ({BACKEND} noise on Aer)",
        "",
        f"digits 0-3 (4×4 pooled, 504 train / {args.n_test} test images), 4 logical qubits on the 5-qubit {BACKEND}. "
        f"SuperCircuit: `4x4_ryzxy` encoder + {args.blocks} weight-shared U3 + CU3 (ring) blocks, "
        f"{args.super_epochs} + 2 epochs with restricted sampling; co-search of sub-circuit and qubit mapping: "
        f"{args.trials} trials of the evolutionary sampler (population {args.population}), scored by the exact "
        f"noisy validation accuracy with inherited weights (1× calibration, readout); winner trained from scratch "
        f"({args.epochs} epochs) and pruned towards {args.sparsity:g} of its gates ({args.schedule} schedule"
        + (f" in {args.stages} steps" if args.schedule == "iterative" else "")
        + f", identity distance, {args.prune_epochs} + {args.settle_epochs} fine-tuning epochs; the sparsest state within "
        f"{args.max_drop:g} of the unpruned noisy validation accuracy is kept). All models train on the same 378 "
        f"images (126 more are the validation set). Baselines: hardware-efficient ansatz with "
        f"the winner's parameter count (before pruning), trained the same way, Qiskit's default layout. Evaluated on "
        f"Qiskit Aer {meta['qiskit_aer']} (density matrix) with {BACKEND}'s noise model ×s, {args.shots} shots per "
        f"image, readout errors on. Accuracy in % (mean ± std over seeds {', '.join(map(str, args.seeds))}); gates, "
        f"2q gates and depth of the whole transpiled circuit (encoder included, level 1), mean ± std over seeds.",
        "",
        "## Accuracy and cost",
        "",
        *table(runs, args.scales),
        "",
        "## Per seed",
        "",
        *seed_table(runs),
        "",
        *notes(runs, meta),
        "",
        f"Run: {meta['wall_seconds']:.0f} s on {meta['cpu']} ({meta['cores']} cores, torch threads {meta['threads']}), "
        f"torch {meta['torch']}, qiskit {meta['qiskit']}.",
        "",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fast", "--quick", action="store_true", dest="fast",
                   help="smoke run: seed 0, 2 blocks, 2 SuperCircuit epochs, 6 trials, 2 epochs, 64 test images, "
                        "256 shots")
    p.add_argument("--seeds", type=lambda t: tuple(int(v) for v in t.split(",")), default=SEEDS)
    p.add_argument("--scales", type=lambda t: tuple(float(v) for v in t.split(",")), default=SCALES)
    p.add_argument("--blocks", type=int, default=BLOCKS)
    p.add_argument("--super-epochs", type=int, default=SUPER_EPOCHS)
    p.add_argument("--trials", type=int, default=TRIALS)
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--sparsity", type=float, default=SPARSITY)
    p.add_argument("--schedule", default="iterative", choices=("iterative", "agp"))
    p.add_argument("--stages", type=int, default=4, help="steps of the iterative schedule")
    p.add_argument("--prune-epochs", type=int, default=12)
    p.add_argument("--settle-epochs", type=int, default=3)
    p.add_argument("--max-drop", type=float, default=MAX_DROP,
                   help="keep the sparsest pruning state within this noisy validation accuracy drop")
    p.add_argument("--shots", type=int, default=SHOTS)
    p.add_argument("--n-test", type=int, default=216, help="test images evaluated (default all 216)")
    p.add_argument("--secondary", default=None, help="second search objective (gates, two_qubit, depth, esp)")
    p.add_argument("--storage", default=":memory:", help="optuna storage of the studies (default in memory)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.fast:
        args.seeds, args.blocks, args.super_epochs, args.trials, args.population = (0,), 2, 2, 6, 4
        args.epochs, args.prune_epochs, args.settle_epochs, args.n_test, args.shots = 2, 2, 1, 64, 256
        args.stages = 2
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from tinyqml.noise import NoiseModel
    from tinyqml.qml.datasets import digits4

    start = time.perf_counter()
    backend = _backend(BACKEND)
    nm = NoiseModel.from_backend(backend)
    data = digits4((0, 1, 2, 3), seed=0)
    runs, studies = [], []
    for seed in args.seeds:
        r, study = run_seed(seed, args, backend, nm, data)
        runs.append(r)
        studies.append(study)
        _log(f"[{time.perf_counter() - start:6.0f}s] seed {seed}: "
             + "; ".join(f"{k} {v['noiseless']:.3f}/" + "/".join(f"{a:.3f}" for a in v['aer'].values())
                         + f" {v['two_qubit']}cx" for k, v in r["methods"].items()))
    meta = meta_info(args, time.perf_counter() - start)
    meta["majority_share"] = float(data.y_test[: args.n_test].bincount().max()) / len(data.y_test[: args.n_test])
    report = render(runs, args, meta)
    print(report)
    stem = "quantumnas_fast" if args.fast else "quantumnas"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{stem}.md").write_text(report)
    (args.results_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    plot(runs, args.results_dir / f"{stem}.png")
    if args.secondary:
        from tinyqml.search import plot_pareto

        plot_pareto(studies[0], args.results_dir / f"{stem}_pareto.png",
                    names=("validation accuracy (noisy, inherited)", args.secondary))
    _log(f"wrote {args.results_dir / stem}.md, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
