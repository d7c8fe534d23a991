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
# # Tutorial 7: pruning a small CNN — fine-grained, 2:4, channels, distillation
#
# A trained CNN has many weights it barely uses. Pruning removes them, in two ways:
#
# 1. **fine-grained** pruning zeroes individual weights (the smallest ones): the
#    tensors keep their shape, so it saves storage (with a sparse format) but no time
#    on a CPU; **2:4** sparsity (at most 2 nonzeros in every 4 consecutive inputs) is
#    the structured variant sparse tensor cores run faster;
# 2. **channel** pruning removes whole output channels of a conv, *and* everything
#    tied to them: its BatchNorm, the matching input channels of the next layers, the
#    channels of a depthwise conv on them, every layer on the same residual stream.
#    The result is a smaller dense network: fewer MACs, measurably faster.
#
# After pruning, **fine-tuning** recovers accuracy, optionally with **knowledge
# distillation** from the dense model. Everything runs on the one pruning engine of
# `tinyqml.search` (mask parametrizations, granularities, importances, schedules,
# `Pruner`, `sensitivity_scan`), wrapped for nets by `tinyqml.classical.pruning`
# (weights) and `tinyqml.classical.channel_pruning` (fx-traced channel groups,
# physical removal). Set `TINYQML_FAST=1` for a quick run; figures go to
# `TINYQML_TUTORIAL_OUT` (default `runs/tutorials`). The full experiment (3 seeds,
# anchors `torch.nn.utils.prune` and `torch_pruning`, latency) is `benchmarks/pruning.py`.

# %%
import copy
import math
import os
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, never open windows
import matplotlib.pyplot as plt
import torch

from tinyqml.classical.bn_fold import fold_batchnorm
from tinyqml.classical.channel_pruning import (
    ChannelPruneConfig,
    channel_groups,
    mask_plan,
    prune_channels,
    ratio_for_macs,
)
from tinyqml.classical.data import load_digits_data
from tinyqml.classical.distill import KDConfig, KDLoss
from tinyqml.classical.models import SmallCNN, SmallCNNConfig, TinyMobileNetV2
from tinyqml.classical.pruning import (
    FineGrainedConfig,
    FineGrainedPruner,
    NMPattern,
    layer_sensitivity,
    plot_sensitivity,
    plot_sparsity,
    satisfies_nm,
    sparsity_report,
)
from tinyqml.classical.train import TrainConfig, evaluate, load_checkpoint, save_checkpoint, train
from tinyqml.search import AGP

FAST = os.environ.get("TINYQML_FAST", "") not in ("", "0")
OUT = Path(os.environ.get("TINYQML_TUTORIAL_OUT", "runs/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)

WIDTHS = (8, 16, 16) if FAST else (32, 64, 64)
EPOCHS = 3 if FAST else 30
FT_EPOCHS = 2 if FAST else 15
SWEEP = (0.5, 0.75) if FAST else (0.25, 0.5, 0.75)  # MACs fractions of the channel sweep

# %% [markdown]
# ## The data and the dense model
#
# scikit-learn's 8×8 digits (no download): 10 classes, pixels scaled to [0, 1],
# stratified 65/15/20 train/validation/test split with a fixed seed. The model is
# `SmallCNN`: three conv-BN-ReLU layers (3×3, padding 1), a 2×2 max pool after the
# second, flatten, one linear layer. Construction and training are seeded.

# %%
data = load_digits_data()
print("train / val / test:", len(data.y_train), len(data.y_val), len(data.y_test), "images of", data.image_shape)
dense = SmallCNN(SmallCNNConfig(widths=WIDTHS), seed=0)
start = time.perf_counter()
history = train(dense, data, TrainConfig(epochs=EPOCHS, lr=3e-3, seed=0))
dense_acc = evaluate(dense, data.x_test, data.y_test)
print(f"dense: {dense_acc:.2f}% test accuracy after {EPOCHS} epochs ({time.perf_counter() - start:.1f} s)")
ft = TrainConfig(epochs=FT_EPOCHS, lr=1e-3, seed=0)  # the fine-tuning budget of every pruned model

# %% [markdown]
# ## 1. Which layers tolerate pruning? A sensitivity scan
#
# `layer_sensitivity` prunes one layer at a time (magnitude, through the engine's
# `sensitivity_scan`) to each sparsity, measures the validation accuracy, and puts
# the layer back. Small layers that every later layer depends on (the first conv)
# are usually the most sensitive.

# %%
scan = layer_sensitivity(dense, lambda: evaluate(dense, data.x_val, data.y_val), [0.0, 0.5, 0.7, 0.9, 0.95])
for name, rows in scan.items():
    print(f"{name:12s}", "  ".join(f"{s:.2f}:{acc:5.1f}" for s, acc in rows))
plot_sensitivity(scan, OUT / "07_sensitivity.png", ylabel="validation accuracy (%)")

# %% [markdown]
# ## 2. Fine-grained pruning to 90% with an AGP schedule
#
# `FineGrainedPruner` puts a mask on every Conv/Linear weight (`weight = original *
# mask`, a parametrization: the optimizer updates `original`, but a masked weight
# stays exactly zero) and ranks all weights together (`scope="global"`). The AGP
# schedule raises the sparsity along a cubic curve during fine-tuning:
# `train(..., on_step=pruner.on_step)` follows it after every optimizer step.
# `squash` bakes the masks in at the end.

# %%
fine = copy.deepcopy(dense)
steps = FT_EPOCHS * math.ceil(len(data.y_train) / ft.batch_size)
pruner = FineGrainedPruner(fine, FineGrainedConfig(sparsity=0.9, scope="global"),
                           AGP(final=0.9, start=0, end=int(0.6 * steps), frequency=max(1, steps // 8)))
train(fine, data, ft, on_step=pruner.on_step)
pruner.squash()
report = sparsity_report(fine)
print(report.table())
print(f"90% sparse: {evaluate(fine, data.x_test, data.y_test):.2f}% (dense {dense_acc:.2f}%)")
plot_sparsity(report, OUT / "07_sparsity.png", title="sparsity per layer after AGP to 90%")

# %% [markdown]
# The same pruner with an N:M pattern: every group of 4 consecutive input weights
# keeps its 2 largest. The first conv has a single input channel, so it cannot hold
# the pattern and is excluded.

# %%
two4 = copy.deepcopy(dense)
nm = FineGrainedPruner(two4, FineGrainedConfig(sparsity=0.5, pattern=NMPattern(2, 4), exclude=("features.0",)))
nm.apply()
print("2:4 right after pruning:", f"{evaluate(two4, data.x_test, data.y_test):.2f}%")
train(two4, data, ft, on_step=nm.on_step)
print("2:4 after fine-tuning:  ", f"{evaluate(two4, data.x_test, data.y_test):.2f}%",
      "pattern holds:", all(satisfies_nm(t.module.weight) for t in nm.targets))

# %% [markdown]
# ## 3. Channel pruning: coupled groups, physical removal
#
# `channel_groups` traces the model with `torch.fx` and lists which channels must
# go together. After the flatten, each channel of the last conv is a block of 16
# (4×4) input columns of the classifier. `ratio_for_macs` finds the uniform ratio
# that halves the MACs (widths rounded to multiples of 8); `prune_channels` ranks
# channels by the joint L2 norm of all their slices (through the engine's pruner)
# and rebuilds smaller `Conv2d`/`BatchNorm2d`/`Linear` modules. The rebuilt model
# computes exactly what the original computes with those channels zeroed.

# %%
example = data.x_train[:8]
for g in channel_groups(dense, example):
    print(f"{g.name:12s} {g.channels:3d} channels  {g.fixed or 'prunable':12s}",
          [(s.module, s.role.value, s.factor) for s in g.slices])
round_to = 2 if FAST else 8
ratio = ratio_for_macs(dense, example, 0.5, ChannelPruneConfig(round_to=round_to))
result = prune_channels(dense, example, ChannelPruneConfig(ratio=ratio, round_to=round_to))
print(f"ratio {ratio:.3f}: widths {result.plan.widths()}, MACs {result.before.macs:,} -> {result.after.macs:,} "
      f"({result.macs_ratio:.2f}x fewer)")
x = data.x_test[:32]
print("equal to the masked original:", torch.allclose(result.model(x), mask_plan(dense, result.plan)(x), atol=1e-5))


# %%
def median_ms(model, batch=256, runs=30):
    inp = torch.rand(batch, 1, 8, 8)
    with torch.inference_mode():
        for _ in range(5):
            model(inp)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(inp)
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


student = copy.deepcopy(result.model)
print(f"pruned, before fine-tuning: {evaluate(result.model, data.x_test, data.y_test):.2f}%")
train(result.model, data, ft)
print(f"pruned + fine-tuning:       {evaluate(result.model, data.x_test, data.y_test):.2f}%")
train(student, data, ft, loss=KDLoss(KDConfig(temperature=4.0, alpha=0.9)), teacher=dense)
print(f"pruned + fine-tuning + KD:  {evaluate(student, data.x_test, data.y_test):.2f}%")
print(f"latency at batch 256: dense {median_ms(dense):.2f} ms, pruned {median_ms(result.model.eval()):.2f} ms")

# %% [markdown]
# Accuracy against MACs for a few budgets, right after pruning and after the
# fine-tuning budget: fine-tuning recovers most of what the removal cost.

# %%
points = []
for fraction in SWEEP:
    r = ratio_for_macs(dense, example, fraction, ChannelPruneConfig(round_to=round_to))
    res = prune_channels(dense, example, ChannelPruneConfig(ratio=r, round_to=round_to))
    raw = evaluate(res.model, data.x_test, data.y_test)
    train(res.model, data, ft)
    points.append((res.after.macs, raw, evaluate(res.model, data.x_test, data.y_test)))
    print(f"<= {fraction:.2f} of the MACs: {res.after.macs:,} MACs, {raw:.1f}% -> {points[-1][2]:.1f}%")
fig, ax = plt.subplots(figsize=(5.5, 4))
ax.plot([p[0] for p in points], [p[1] for p in points], "o--", label="pruned")
ax.plot([p[0] for p in points], [p[2] for p in points], "o-", label="pruned + fine-tuning")
ax.scatter([result.before.macs], [dense_acc], c="k", marker="*", s=120, label="dense", zorder=3)
ax.set_xlabel("MACs per image")
ax.set_ylabel("test accuracy (%)")
ax.set_title("channel pruning of SmallCNN")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "07_channel_pruning.png", dpi=120)
plt.close(fig)

# %% [markdown]
# ## 4. Residual networks: one group per residual stream
#
# In `TinyMobileNetV2`, a block with stride 1 and equal widths computes
# `x + block(x)`: its input and output channels are one stream, shared by every block
# that reads or writes it. The tracer joins them into one group (with the depthwise
# convs on the way), so a removed channel disappears from the whole stream.

# %%
mb = TinyMobileNetV2(seed=0)
train(mb, data, TrainConfig(epochs=2 if FAST else 20, lr=3e-3, seed=0))
streams = [g for g in channel_groups(mb, example) if g.residual]
for g in streams:
    print(f"residual stream {g.name}: {g.channels} channels, written by {g.producers}")
mb_small = prune_channels(mb, example, ChannelPruneConfig(ratio=0.4, round_to=round_to))
print(f"MobileNetV2 MACs {mb_small.before.macs:,} -> {mb_small.after.macs:,}; equal to the masked original:",
      torch.allclose(mb_small.model(x), mask_plan(mb, mb_small.plan)(x), atol=1e-5))

# %% [markdown]
# ## 5. Deployment helpers
#
# `fold_batchnorm` merges each BatchNorm into the conv before it (same outputs in
# eval mode, one layer fewer at inference; the int8 path starts from here).
# Checkpoints are plain state dicts read back with `torch.load(weights_only=True)`;
# a channel-pruned model is loaded into a model of its own (smaller) shape.

# %%
folded = fold_batchnorm(result.model)
print("folded == unfolded:", torch.allclose(folded(x), result.model.eval()(x), atol=1e-5),
      "| BatchNorms left:", sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()))
path = save_checkpoint(result.model, OUT / "07_channel_pruned.pt")
again = load_checkpoint(copy.deepcopy(result.model), path)
print("checkpoint round trip:", torch.equal(again(x), result.model(x)))
