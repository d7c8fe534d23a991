# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 09: Neural architecture search for a microcontroller — once-for-all on the digits
#
# MIT 6.5940 Lab 3 (MCUNet / Once-for-All) on tinyqml's shared search engine: train **one**
# supernet whose weights serve every sub-network, then search the sub-networks under a
# microcontroller's budget without training any of them again.
#
# 1. **the space**: MobileNetV2 blocks with elastic depth, expand ratio, kernel size (3/5/7) and
#    input resolution — billions of sub-networks;
# 2. **train the supernet** with the sandwich rule and in-place distillation;
# 3. **efficiency predictors**: analytic MACs and parameters, peak SRAM from the code generator's
#    memory planner, a measured latency table of the generated C;
# 4. **accuracy predictor**: an MLP over the architecture encoding, fitted on measured sub-networks,
#    judged by rank correlation on held-out ones;
# 5. **constrained search**: evolution against random search at the same budget, three seeds,
#    and the Pareto front;
# 6. **deploy** the winner: fine-tune, int8, TFLite, C, checked against TFLite Micro;
# 7. **one command**: `tinyqml nas -c "macs<=300k" -c "peak_sram<=16k"`.
#
# Set `TINYQML_FAST=1` for a quick run (far shorter training: accuracies are low, the flow is the
# same); files go to `TINYQML_TUTORIAL_OUT` (default `runs/tutorials`). The measured comparison is
# `benchmarks/nas.py`.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, never open windows
import matplotlib.pyplot as plt
import optuna
import torch

from tinyqml.classical import mcu
from tinyqml.classical.acc_predictor import AccuracyPredictor, AccuracyPredictorConfig, split_rank_correlation
from tinyqml.classical.arch import SupernetConfig, arch_space, layers, macs, params, sample_arch
from tinyqml.classical.data import DigitsConfig, load_digits_data
from tinyqml.classical.efficiency import efficiency_costs, peak_sram
from tinyqml.classical.latency_table import LatencyOptions, measure_latency_table, validate_latency
from tinyqml.classical.nas import compare_strategies, plot_pareto_nas
from tinyqml.classical.nas_deploy import DeployConfig, deploy_arch
from tinyqml.classical.nas_pipeline import measure_subnets
from tinyqml.classical.ofa_train import OFATrainConfig, train_supernet
from tinyqml.classical.supernet import OFAMobileNetV2
from tinyqml.classical.train import TrainConfig

FAST = os.environ.get("TINYQML_FAST", "") not in ("", "0")
OUT = Path(os.environ.get("TINYQML_TUTORIAL_OUT", "runs/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)
optuna.logging.set_verbosity(optuna.logging.WARNING)
torch.set_num_threads(2)
EPOCHS = 2 if FAST else 30
N_SAMPLES = 32 if FAST else 200
TRIALS = 30 if FAST else 150
SEEDS = (0, 1, 2)
CONSTRAINTS = ["macs<=400k", "peak_sram<=20k"]
HAVE_GCC = mcu.tools_available()["gcc"]

# %% [markdown]
# ## 1. The space
#
# `SupernetConfig` fixes what all sub-networks share — a 3×3 stem, a fixed first block, three
# stages of inverted residual blocks (widths 16/24/32, each starting with stride 2) — and the
# elastic choices. An `Arch` is one choice of everything: resolution, a depth per stage, a kernel
# and an expand ratio per block position. Costs are pure shape arithmetic on the sub-network's
# layer list, so they are exact without building anything.

# %%
cfg = SupernetConfig()
space = arch_space(cfg)
big, small = cfg.largest(), cfg.smallest()
print(f"{space.size():,} sub-networks; search-space dimensions: {len(space.names)}")
for name, a in (("largest", big), ("smallest", small)):
    print(f"{name:9s} {a.describe(cfg)}: {macs(a, cfg):,} MACs, {params(a, cfg):,} params, "
          f"peak SRAM {peak_sram(a, cfg):,} B, {len(layers(a, cfg))} int8 operators")

# %% [markdown]
# ## 2. Train the supernet: sandwich rule + in-place distillation
#
# `OFAMobileNetV2` holds the largest network. A sub-network uses the first `d` blocks of a stage,
# the first `c_in · e` hidden channels of a block, and a k×k depthwise kernel made from the centre
# of the 7×7 one through a learned kernel-transformation matrix. Every training step draws one input
# resolution and trains on the same batch the **largest** sub-network (on the labels), the
# **smallest** and two random ones (on the largest's soft predictions): their gradients add up
# in one optimizer step.

# %%
data = load_digits_data(DigitsConfig(val=0.3, test=0.2))  # a larger validation split: sub-networks differ by a few images
supernet = OFAMobileNetV2(cfg, seed=0)
history = train_supernet(supernet, data, OFATrainConfig(epochs=EPOCHS, seed=0))
print(f"{EPOCHS} epochs, {history.steps} steps: validation accuracy largest "
      f"{history.largest_accuracy[-1]:.1f}%, smallest {history.smallest_accuracy[-1]:.1f}%")

# %% [markdown]
# ## 3. Efficiency predictors
#
# `efficiency_costs(cfg)` is the cost model the search uses: `macs` and `params` (analytic),
# `peak_sram` — the code generator's own number (arena + kernel scratch, from the same memory
# planner) computed from the shapes in about a millisecond — and, given a measured table, `latency`.
# The latency table times the generated C of every distinct layer once (a few hundred for the
# whole space; in fast mode only the layers of a few sub-networks) and predicts a network as the sum of
# its layers; `validate_latency` times whole networks to check the sum.

# %%
costs = efficiency_costs(cfg)
g = torch.Generator().manual_seed(7)
probe = [sample_arch(cfg, g) for _ in range(3 if FAST else 8)]
if HAVE_GCC:
    options = LatencyOptions(repeats=3 if FAST else 5)
    table = measure_latency_table(cfg, probe if FAST else None, options)  # full: every layer of the space
    check = validate_latency(table, probe, cfg, options)
    table.save(OUT / "09_latency_table.json")
    for c in check.checks:
        print(f"{c.arch.describe(cfg)}: table {c.predicted_ms * 1000:.0f} us, measured {c.measured_ms * 1000:.0f} us "
              f"({100 * c.relative_error:+.1f}%)")
    print(f"{len(table)} layers timed; mean |error| {100 * check.mean_abs_relative_error:.1f}%, "
          f"Spearman {check.spearman:.2f}")
    if not FAST:
        costs = efficiency_costs(cfg, table)
else:
    print("note: no host C compiler; skipping the latency table (run `make mcu-tools`)")
print("costs the search can constrain:", ", ".join(costs.names))

# %% [markdown]
# ## 4. Accuracy predictor
#
# Measuring a sub-network costs a BatchNorm re-estimation and a pass over the validation images;
# a search wants thousands of scores. So, as in Once-for-All, we measure a few hundred random
# sub-networks and fit an MLP on their one-hot encodings. What matters for search is the *order*:
# Spearman's rank correlation on sub-networks the MLP never saw.

# %%
samples = measure_subnets(supernet, data, N_SAMPLES, seed=0)
archs, accs = [a for a, _ in samples], [acc for _, acc in samples]
pcfg = AccuracyPredictorConfig(hidden=(64,), epochs=100 if FAST else 300)
split = split_rank_correlation(archs, accs, cfg, pcfg, seed=0)
predictor = AccuracyPredictor(cfg, pcfg).fit(archs, accs)
print(f"{len(samples)} sub-networks measured: accuracy {min(accs):.1f}% .. {max(accs):.1f}%")
print(f"held-out Spearman {split.test.spearman:.3f}, Kendall {split.test.kendall:.3f} ({split.n_test} sub-networks)")

fig, ax = plt.subplots(figsize=(4.5, 4))
ax.scatter([macs(a, cfg) / 1e3 for a in archs], accs, s=12)
ax.set_xlabel("kMACs")
ax.set_ylabel("validation accuracy (%), shared weights")
ax.set_title(f"{len(samples)} sampled sub-networks")
fig.tight_layout()
fig.savefig(OUT / "09_predictor.png", dpi=120)
plt.close(fig)

# %% [markdown]
# ## 5. Search under constraints: evolution vs random, same budget, three seeds
#
# `compare_strategies` runs the shared engine (`tinyqml.search.run_search`) once per strategy and
# seed: the same budget of evaluated architectures, the same constraints, the same constraint-aware
# sampling (infeasible candidates are redrawn before they cost an evaluation). The score is the
# predictor; the constraint names are checked against the cost model before anything runs.

# %%
cmp = compare_strategies(predictor, cfg, costs, CONSTRAINTS, TRIALS, seeds=SEEDS)
print(cmp.table())
cmp.plot(OUT / "09_search_curves.png")
evo = cmp.runs["evolution"]
best_run = max(evo, key=lambda r: r.best_score)
plot_pareto_nas({"evolution": best_run, "random": max(cmp.runs["random"], key=lambda r: r.best_score)},
                OUT / "09_pareto.png", cost="macs")
chosen = best_run.best
assert all(run.best.feasible for runs in cmp.runs.values() for run in runs)
print(f"chosen: {chosen.arch.describe(cfg)} predicted {chosen.score:.2f}%, "
      + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(chosen.costs.items())))

# %% [markdown]
# ## 6. Deploy the winner: fine-tune, int8, TFLite, C, checked against TFLite Micro
#
# `deploy_arch` extracts the sub-network as a plain `TinyMobileNetV2` (identical outputs to the
# supernet's), re-estimates its BatchNorm statistics, fine-tunes it distilled from the largest
# sub-network, quantizes it to int8, writes the `.tflite` file, generates C and runs that C on test
# images next to the TFLite Micro interpreter. The peak SRAM the search constrained is the one the
# code generator reports for the compiled model.

# %%
deployed = deploy_arch(supernet, chosen.arch, data, OUT / "09_deploy",
                       DeployConfig(finetune=TrainConfig(epochs=2 if FAST else 15, lr=1e-3),
                                    verify_images=32 if HAVE_GCC else 0))
print(deployed.summary())
print(f"search said peak SRAM {chosen.costs['peak_sram']:,.0f} B; the generated C has "
      f"{deployed.codegen.peak_sram_bytes:,} B")
assert deployed.codegen.peak_sram_bytes == chosen.costs["peak_sram"] and deployed.codegen.macs == chosen.costs["macs"]
assert deployed.bit_exact is not False, "the generated C differs from TFLite Micro"
(OUT / "09_report.md").write_text("# Tutorial 09: NAS for an MCU\n\n" + cmp.table() + "\n\n" + deployed.summary() + "\n\n"
                                  + deployed.codegen.report())

# %% [markdown]
# ## 7. One command
#
# The whole flow — train, predict, search, deploy — is
# `tinyqml nas -c "macs<=400k" -c "peak_sram<=20k" -o runs/nas` (`--fast` for a smoke run,
# `--supernet runs/nas/supernet.pt` to reuse a trained supernet, `--latency-table` to constrain
# latency in milliseconds). An unknown cost name is an error before anything is trained:

# %%
from tinyqml.cli import main  # noqa: E402

status = main(["nas", "--fast", "-o", str(OUT / "09_cli"), "-c", "flash<=64k"])
print("exit status", status)
assert status == 1 and not (OUT / "09_cli" / "supernet.pt").exists()
