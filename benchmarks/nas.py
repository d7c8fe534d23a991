"""Once-for-all NAS for an MCU on the 8x8 digits (issue 8), with its anchors measured in the same run.

Setup:

- data: scikit-learn's 10-class digits (``DigitsConfig(val=0.3, test=0.2)``, seed 0: 898 train / 539
  validation / 360 test images; a larger validation split than the compression benchmarks use, since
  the sub-networks' accuracies differ by a few images), bilinearly upsampled to each sub-network's resolution;
- space: ``SupernetConfig()``: stem 16, fixed first block 8, stages 16/24/32 (stride 2 each), depth
  1-3 per stage, expand 2/3/4 and kernel 3/5/7 per block, resolution 12/16/20/24 (4.2e10 networks);
- supernet: ``OFAMobileNetV2`` trained ``--epochs`` (30) epochs with the sandwich rule (largest,
  smallest, 2 random; one resolution per step) and in-place distillation (``train_supernet``), Adam
  3e-3 cosine, batch 64;
- efficiency predictors: ``peak_sram`` (shapes only) against the code generator's
  ``peak_sram_bytes`` of the real pipeline (``TinyMobileNetV2`` -> ``quantize_model`` -> ``to_tflite``
  -> ``generate``) on ``--sram-archs`` random sub-networks, and the time per call of each; the
  latency table of all distinct layers of the space (host C, gcc -O2), checked on ``--latency-archs``
  whole sub-networks timed the same way: the plain sum, and the table times one scale factor
  (``LatencyTable.calibrated``) fitted on half of them and tested on the other half. Anchor: an
  analytic MACs-proportional latency model (``LatencyModel``, MACs / throughput), its throughput
  fitted and tested the same way;
- accuracy predictor: ``--samples`` (200) random sub-networks measured on the validation split with
  the shared weights (BatchNorm re-estimated on 512 training images), an MLP (64 hidden) fitted on 75%,
  Spearman / Kendall on the held-out 25%. Anchors: MACs and parameter count as accuracy proxies;
- search: evolution (``DEFAULT_STRATEGY``) against random search (``RANDOM_STRATEGY``, the same
  constraint-aware redrawing), ``--trials`` (200) evaluations each, seeds 0/1/2, the predictor as the
  score, under two constraint sets; the best of each run is then *measured* (shared weights, validation);
- deployment: the best evolution pick and the best random pick fine-tuned ``--ft-epochs`` (15) epochs
  (distilled from the largest sub-network), int8, TFLite, C; test accuracy in int8. Anchor: a
  hand-scaled MobileNetV2 of the same space (uniform depth/kernel/expand, the largest uniform choice
  under the constraints) trained from scratch for ``--epochs`` + ``--ft-epochs`` epochs, deployed the
  same way. The evolution pick's C is timed against the TFLite Micro interpreter (``benchmarks/mcu.py``'s
  harness) and its peak SRAM compared with TFLite Micro's arena.

    .venv/bin/python benchmarks/nas.py            # full run (~15 min on 2 shared cores)
    .venv/bin/python benchmarks/nas.py --quick    # smoke run (a few minutes)

Prints markdown tables and writes ``benchmarks/results/nas.md``, ``.json`` and ``nas_pareto.png``
(``--quick``: ``nas_quick.*``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mcu as mcu_bench  # noqa: E402  (benchmarks/mcu.py: the C-vs-TFLM timing harness)
from machine import cpu_model, load_average  # noqa: E402

from tinyqml.classical.acc_predictor import AccuracyPredictorConfig, rank_correlation, split_rank_correlation  # noqa: E402
from tinyqml.classical.arch import Arch, SupernetConfig, macs, params, sample_arch  # noqa: E402
from tinyqml.classical.codegen import generate  # noqa: E402
from tinyqml.classical.data import DigitsConfig, load_digits_data  # noqa: E402
from tinyqml.classical.efficiency import efficiency_costs, peak_sram  # noqa: E402
from tinyqml.classical.latency_table import (  # noqa: E402
    LatencyOptions,
    LatencyValidation,
    measure_latency_table,
    subnet_tflite,
    validate_latency,
)
from tinyqml.classical.nas import compare_strategies, plot_pareto_nas  # noqa: E402
from tinyqml.classical import efficiency  # noqa: E402
from tinyqml.classical.nas_deploy import DeployConfig, deploy_arch  # noqa: E402
from tinyqml.classical.nas_pipeline import measure_subnets  # noqa: E402
from tinyqml.classical.ofa_train import OFATrainConfig, evaluate_arch, train_supernet  # noqa: E402
from tinyqml.classical.supernet import OFAMobileNetV2  # noqa: E402
from tinyqml.classical.tflite_export import TFLMRunner  # noqa: E402
from tinyqml.classical.train import TrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONSTRAINT_SETS = (("macs<=400k", "peak_sram<=20k"), ("macs<=250k", "peak_sram<=12k"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: short training, few samples and trials")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--ft-epochs", type=int, default=15)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--sram-archs", type=int, default=20)
    p.add_argument("--latency-archs", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    return p


def _median_time(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def sram_check(cfg: SupernetConfig, n: int, workdir: Path) -> dict[str, Any]:
    """The shape-only peak SRAM against the code generator's on the real pipeline's model."""
    g = torch.Generator().manual_seed(11)
    archs = [cfg.smallest(), cfg.largest()] + [sample_arch(cfg, g) for _ in range(n - 2)]
    rows, t_pipe = [], []
    for i, a in enumerate(archs):
        t = time.perf_counter()
        gen = generate(subnet_tflite(a, cfg), workdir / f"sram{i}")
        t_pipe.append(time.perf_counter() - t)
        rows.append((peak_sram(a, cfg), gen.peak_sram_bytes))
    def uncached() -> None:
        for a in archs[:5]:
            efficiency._cached_plan.cache_clear()
            peak_sram(a, cfg)

    t_pred = _median_time(uncached, 3) / 5
    return {"n": len(archs), "exact": sum(p == c for p, c in rows), "rows": rows,
            "pipeline_ms": 1e3 * statistics.median(t_pipe), "predictor_ms": 1e3 * t_pred}


def latency_check(cfg: SupernetConfig, n: int, quick: bool, workdir: Path) -> dict[str, Any]:
    g = torch.Generator().manual_seed(12)
    archs = [sample_arch(cfg, g) for _ in range(n)]
    options = LatencyOptions(repeats=3 if quick else 5)
    t = time.perf_counter()
    table = measure_latency_table(cfg, archs if quick else None, options, workdir / "lut")
    t_table = time.perf_counter() - t
    check = validate_latency(table, archs, cfg, options, workdir / "whole")
    half = len(archs) // 2  # scales are fitted on the first half, errors measured on the second
    measured = np.array([c.measured_ms for c in check.checks])
    pred = np.array([c.predicted_ms for c in check.checks])
    m = np.array([macs(a, cfg) for a in archs], dtype=np.float64)

    def held_out(model: np.ndarray) -> tuple[float, float]:
        scale = float((model[:half] @ measured[:half]) / (model[:half] @ model[:half]))
        err = float(np.mean(np.abs(scale * model[half:] - measured[half:]) / measured[half:]))
        return err, rank_correlation(list(model[half:]), list(measured[half:])).spearman

    calibrated = table.calibrated(LatencyValidation(check.checks[:half]))
    (fit_err, fit_rho), (mac_err, mac_rho) = held_out(pred), held_out(m)
    return {"layers": len(table), "table_s": t_table, "table_err": check.mean_abs_relative_error,
            "table_spearman": check.spearman, "fitted_err": fit_err, "fitted_spearman": fit_rho,
            "scale": calibrated.scale, "macs_err": mac_err, "macs_spearman": mac_rho, "half": half,
            "rows": [(c.arch.describe(cfg), c.predicted_ms, c.measured_ms) for c in check.checks],
            "table": calibrated}


def uniform_baseline(cfg: SupernetConfig, costs: Any, constraints: tuple[str, ...]) -> Arch | None:
    """The largest hand-scaled network: one depth, kernel and expand everywhere, the best resolution."""
    from tinyqml.classical.nas import parse_constraints

    limits = parse_constraints(constraints)
    best = None
    for r in cfg.resolutions:
        for d in cfg.depths:
            for k in cfg.kernels:
                for e in cfg.expands:
                    a = Arch(r, (d,) * cfg.n_stages, (k,) * cfg.n_positions, (e,) * cfg.n_positions)
                    if costs.feasible(a, limits) and (best is None or macs(a, cfg) > macs(best, cfg)):
                        best = a
    return best


def deploy_row(net: OFAMobileNetV2, arch: Arch, data: Any, out: Path, ft_epochs: int, verify: int) -> dict[str, Any]:
    res = deploy_arch(net, arch, data, out, DeployConfig(finetune=TrainConfig(epochs=ft_epochs, lr=1e-3),
                                                         verify_images=verify))
    return {"arch": arch.describe(net.config), "macs": res.macs, "params": res.params,
            "peak_sram": res.codegen.peak_sram_bytes, "shared": res.shared_accuracy, "finetuned": res.finetuned_accuracy,
            "int8": res.int8_accuracy, "bit_exact": res.bit_exact, "result": res}


def scratch_row(cfg: SupernetConfig, arch: Arch, data: Any, out: Path, epochs: int) -> dict[str, Any]:
    """The anchor: the hand-scaled network trained from scratch (no supernet), deployed the same way."""
    net = OFAMobileNetV2(cfg, seed=5)  # fresh weights; only the architecture is used
    res = deploy_arch(net, arch, data, out, DeployConfig(finetune=TrainConfig(epochs=epochs, lr=3e-3), distill=False,
                                                         verify_images=0))
    return {"arch": arch.describe(cfg), "macs": res.macs, "params": res.params, "peak_sram": res.codegen.peak_sram_bytes,
            "finetuned": res.finetuned_accuracy, "int8": res.int8_accuracy}


def c_vs_tflm(res: Any, workdir: Path, quick: bool) -> dict[str, Any]:
    blob = res.tflite_path.read_bytes()
    x = mcu_bench.random_inputs(res.codegen, 1, 0)[0]
    lat = mcu_bench.latency(res.codegen, blob, x, workdir, 3 if quick else 7, 3, 0.02 if quick else 0.05,
                            mcu_bench.trivial_model())
    alloc = mcu_bench.tflm_allocations(TFLMRunner(blob))
    return {"c_ns": lat["ns"]["C -O2"]["median"], "tflm_ns": lat["tflm_ns"], "speedup": mcu_bench.speedup(lat),
            "sram": res.codegen.peak_sram_bytes, "tflm_arena": alloc["total"], "tflm_head": alloc["head"]}


def render(r: dict[str, Any]) -> str:
    s, lt, pr = r["sram"], r["latency"], r["predictor"]
    lines = ["# Once-for-all NAS for an MCU (issue 8)", "",
             f"machine: {r['meta']['cpu']}, torch threads {r['meta']['threads']}, load {r['meta']['load']}; "
             f"{r['meta']['seconds']:.0f} s", "",
             "## Supernet", "",
             f"{r['supernet']['epochs']} epochs ({r['supernet']['seconds']:.0f} s): validation accuracy largest "
             f"{r['supernet']['largest']:.1f}%, smallest {r['supernet']['smallest']:.1f}%", "",
             "## Efficiency predictors", "",
             "| predictor | anchor | agreement | time per call | anchor time | ratio |", "|---|---|---|---|---|---|",
             f"| peak SRAM from shapes | codegen on the real pipeline's model | {s['exact']}/{s['n']} exact | "
             f"{s['predictor_ms']:.2f} ms | {s['pipeline_ms']:.0f} ms | {s['pipeline_ms'] / s['predictor_ms']:.0f}x faster |",
             "", f"latency table: {lt['layers']} layers measured in {lt['table_s']:.0f} s; whole networks:", "",
             "| latency model | mean abs. relative error | Spearman |", "|---|---|---|",
             f"| measured table, plain sum (all {2 * lt['half']}) | {100 * lt['table_err']:.1f}% | "
             f"{lt['table_spearman']:.3f} |",
             f"| measured table x scale {lt['scale']:.2f} fitted on {lt['half']}, tested on the other {lt['half']} | "
             f"{100 * lt['fitted_err']:.1f}% | {lt['fitted_spearman']:.3f} |",
             f"| anchor: MACs / throughput, fitted and tested the same way | {100 * lt['macs_err']:.1f}% | "
             f"{lt['macs_spearman']:.3f} |", "",
             "## Accuracy predictor", "",
             f"{pr['n']} sub-networks, validation accuracy {pr['min']:.1f}-{pr['max']:.1f}%; held-out {pr['n_test']}:",
             "", "| score | Spearman | Kendall |", "|---|---|---|",
             f"| MLP predictor | {pr['spearman']:.3f} | {pr['kendall']:.3f} |",
             f"| MACs (anchor) | {pr['macs_spearman']:.3f} | {pr['macs_kendall']:.3f} |",
             f"| parameters (anchor) | {pr['params_spearman']:.3f} | {pr['params_kendall']:.3f} |", "",
             "## Search: evolution vs random, same budget and constraints, seeds 0/1/2", ""]
    for c in r["search"]:
        lines += [f"### {', '.join(c['constraints'])} ({c['trials']} trials per run)", "", c["table"], "",
                  "| strategy | measured val. accuracy of each run's best (shared weights) | mean |", "|---|---|---|"]
        for name, accs in c["measured"].items():
            lines.append(f"| {name} | {', '.join(f'{a:.1f}' for a in accs)} | {statistics.mean(accs):.2f} |")
        lines.append("")
    dep = r["deploy"]
    lines += [f"## Deployment under {', '.join(CONSTRAINT_SETS[0])}", "",
              "| model | arch | MACs | peak SRAM (C) | test acc. fp32 | test acc. int8 | int8 vs anchor |",
              "|---|---|---|---|---|---|---|"]
    anchor = dep["scratch"]["int8"]
    for name in ("evolution", "random", "scratch"):
        d = dep[name]
        lines.append(f"| {name} | {d['arch']} | {d['macs']:,} | {d['peak_sram']:,} B | {d['finetuned']:.2f}% | "
                     f"{d['int8']:.2f}% | {d['int8'] - anchor:+.2f} |")
    t = dep["c_vs_tflm"]
    lines += ["", f"evolution pick: host C {t['c_ns'] / 1e3:.1f} us vs TFLite Micro {t['tflm_ns'] / 1e3:.1f} us "
              f"({t['speedup']:.2f}x faster); peak SRAM {t['sram']:,} B vs TFLM arena {t['tflm_arena']:,} B "
              f"({t['sram'] / t['tflm_arena']:.2f}x); host C bit-exact with TFLM: {dep['evolution']['bit_exact']}", ""]
    return "\n".join(lines)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cfg = SupernetConfig()
    data = load_digits_data(DigitsConfig(val=0.3, test=0.2))
    t0 = time.perf_counter()
    net = OFAMobileNetV2(cfg, seed=0)
    hist = train_supernet(net, data, OFATrainConfig(epochs=args.epochs, seed=0))
    out: dict[str, Any] = {"supernet": {"epochs": args.epochs, "seconds": time.perf_counter() - t0,
                                        "largest": hist.largest_accuracy[-1], "smallest": hist.smallest_accuracy[-1]}}
    out["sram"] = sram_check(cfg, args.sram_archs, work)
    out["latency"] = latency_check(cfg, args.latency_archs, args.quick, work)
    samples = measure_subnets(net, data, args.samples, seed=0)
    archs, accs = [a for a, _ in samples], [acc for _, acc in samples]
    pcfg = AccuracyPredictorConfig(hidden=(64,), epochs=300)
    split = split_rank_correlation(archs, accs, cfg, pcfg, seed=0)
    test_idx = torch.randperm(len(archs), generator=torch.Generator().manual_seed(0)).tolist()[:split.n_test]
    held = [archs[i] for i in test_idx], [accs[i] for i in test_idx]
    mc = rank_correlation([macs(a, cfg) for a in held[0]], held[1])
    pc = rank_correlation([params(a, cfg) for a in held[0]], held[1])
    out["predictor"] = {"n": len(samples), "n_test": split.n_test, "min": min(accs), "max": max(accs),
                        "spearman": split.test.spearman, "kendall": split.test.kendall, "macs_spearman": mc.spearman,
                        "macs_kendall": mc.kendall, "params_spearman": pc.spearman, "params_kendall": pc.kendall}
    predictor = split.predictor.fit(archs, accs)
    costs = efficiency_costs(cfg, out["latency"]["table"] if not args.quick else None)
    out["search"], comparisons = [], []
    for cons in CONSTRAINT_SETS:
        cmp = compare_strategies(predictor, cfg, costs, cons, args.trials)
        measured = {name: [evaluate_arch(net, run.best_arch, data) for run in runs] for name, runs in cmp.runs.items()}
        out["search"].append({"constraints": cons, "trials": args.trials, "table": cmp.table(), "measured": measured,
                              "best": {n: [run.best_arch.params() for run in runs] for n, runs in cmp.runs.items()}})
        comparisons.append(cmp)
    first = comparisons[0]
    plot_pareto_nas({n: max(runs, key=lambda r: r.best_score) for n, runs in first.runs.items()},
                    args.results_dir / f"{'nas_quick' if args.quick else 'nas'}_pareto.png", cost="macs")
    picks = {n: max(runs, key=lambda r: r.best_score).best_arch for n, runs in first.runs.items()}
    dep = {n: deploy_row(net, a, data, work / f"deploy_{n}", args.ft_epochs, 64) for n, a in picks.items()}
    base = uniform_baseline(cfg, costs, CONSTRAINT_SETS[0])
    dep["scratch"] = scratch_row(cfg, base, data, work / "deploy_scratch", args.epochs + args.ft_epochs)
    dep["c_vs_tflm"] = c_vs_tflm(dep["evolution"]["result"], work / "timing", args.quick)
    for n in ("evolution", "random"):
        dep[n].pop("result")
    out["deploy"] = dep
    out["latency"].pop("table")
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.epochs, args.ft_epochs, args.samples, args.trials, args.sram_archs, args.latency_archs = 3, 2, 40, 40, 6, 4
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    load = load_average()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tinyqml-nas-") as tmp:
        result = run(args, Path(tmp))
    result["meta"] = {"cpu": cpu_model(), "threads": args.threads, "load": load, "seconds": time.perf_counter() - start,
                      "args": {k: str(v) for k, v in vars(args).items()}}
    text = render(result)
    print(text)
    stem = "nas_quick" if args.quick else "nas"
    (args.results_dir / f"{stem}.md").write_text(text)
    (args.results_dir / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
