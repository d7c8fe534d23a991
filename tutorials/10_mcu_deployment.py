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
# # Tutorial 10: MCU deployment — from a trained CNN to C on an emulated Cortex-M4
#
# The last step of the compression pipeline (MIT 6.5940 Lab 5, TinyEngine's role): an
# int8 model becomes plain C99 for a microcontroller, with the weights in flash as
# `const` arrays and every activation in one static arena planned ahead of time. No
# interpreter, no allocator, no float arithmetic — and every output bit-identical to the
# TensorFlow Lite Micro interpreter's.
#
# 1. **train** a small CNN on the 8×8 digits;
# 2. **prune** whole channels (physically smaller convolutions);
# 3. **quantize** to int8 (TFLite's scheme);
# 4. **export** a fully-int8 `.tflite` flatbuffer;
# 5. **generate C** with `tinyqml.classical.codegen.generate` (or `tinyqml codegen MODEL.tflite -o DIR`);
# 6. **compile and run** it on the host (bit-exact with TFLM) and under QEMU as a Cortex-M4;
# 7. **report**: MACs per layer, the arena layout, flash and SRAM.
#
# Set `TINYQML_FAST=1` for a quick run; files go to `TINYQML_TUTORIAL_OUT` (default
# `runs/tutorials`). The measured comparison with TFLite Micro (latency, arena, planner,
# bit-exactness on several models) is `benchmarks/mcu.py`.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, never open windows
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from tinyqml.classical import mcu, prune_channels, quantize_model
from tinyqml.classical.channel_pruning import ChannelPruneConfig
from tinyqml.classical.codegen import CodegenOptions, Target, generate
from tinyqml.classical.convert import to_nhwc
from tinyqml.classical.data import DigitsConfig, load_digits_data
from tinyqml.classical.models import SmallCNN, SmallCNNConfig
from tinyqml.classical.tflite_export import TFLMRunner, export_tflite, operator_names
from tinyqml.classical.train import TrainConfig, evaluate, train

FAST = os.environ.get("TINYQML_FAST", "") not in ("", "0")
OUT = Path(os.environ.get("TINYQML_TUTORIAL_OUT", "runs/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
WIDTHS = (16, 32, 32) if FAST else (32, 64, 64)
EPOCHS = 4 if FAST else 30
FINETUNE = 2 if FAST else 8
N_HOST = 120 if FAST else 360  # test images run through the generated C on the host
N_QEMU = 4 if FAST else 16    # ... and under QEMU

# %% [markdown]
# ## 1. Train
#
# scikit-learn's digits (8×8, 10 classes, stratified split, fixed seed) and the 3-conv
# `SmallCNN` (conv-BN-ReLU ×3, one 2×2 max pool, flatten, linear), trained in float32.

# %%
data = load_digits_data(DigitsConfig(seed=0))
dense = SmallCNN(SmallCNNConfig(widths=WIDTHS), seed=0)
train(dense, data, TrainConfig(epochs=EPOCHS, seed=0))
dense.eval()
dense_acc = evaluate(dense, data.x_test, data.y_test)
print(f"SmallCNN {WIDTHS}: fp32 test accuracy {dense_acc:.2f}%")

# %% [markdown]
# ## 2. Prune channels
#
# Channel pruning removes whole output channels (and the matching input channels of the
# next layer), so the pruned model is a smaller dense model: fewer MACs, fewer weights in
# flash and smaller activations in the arena. Half the channels of each group go (ranked by
# their L2 norm, kept at multiples of 8), then a short fine-tune recovers the accuracy.

# %%
example = data.x_train[:64]
pruned_result = prune_channels(dense, example, ChannelPruneConfig(ratio=0.5, round_to=8))
pruned = pruned_result.model
raw_acc = evaluate(pruned, data.x_test, data.y_test)
train(pruned, data, TrainConfig(epochs=FINETUNE, lr=1e-3, seed=0))
pruned.eval()
pruned_acc = evaluate(pruned, data.x_test, data.y_test)
print(f"widths {pruned_result.plan.widths()}")
print(f"MACs {pruned_result.before.macs:,} -> {pruned_result.after.macs:,} ({pruned_result.macs_ratio:.2f}x fewer); "
      f"accuracy {dense_acc:.2f}% -> {raw_acc:.2f}% pruned -> {pruned_acc:.2f}% fine-tuned")

# %% [markdown]
# ## 3. Quantize and 4. export
#
# `quantize_model` folds BatchNorm, fuses ReLU and calibrates int8 activations on 256
# training images: weights int8 per channel, biases int32, activations int8 per tensor.
# `export_tflite` writes the fully-int8 flatbuffer (int8 input and output) that TFLite
# Micro — and our code generator — read.

# %%
calib = data.x_train[:256]
int8_model = quantize_model(pruned, calib)
int8_acc = 100 * float((int8_model.predict(data.x_test) == data.y_test).float().mean())
tflite_path = export_tflite(int8_model, calib, OUT / "10_model.tflite")
blob = tflite_path.read_bytes()
print(f"int8 test accuracy {int8_acc:.2f}% (fp32 {pruned_acc:.2f}%)")
print(f"{tflite_path.name}: {len(blob):,} bytes, operators {operator_names(blob)}")

# %% [markdown]
# ## 5. Generate C
#
# `generate` reads the flatbuffer, lowers every operator to a call into a small
# hand-written runtime (`tinyqml_rt.c`) with the integer parameters TFLite Micro's
# `Prepare` would compute (fixed-point multipliers and shifts, activation clamps,
# padding), plans the arena, and writes `model.h` / `model.c`. The header is the whole
# API: one function and three sizes. From a shell the same is
# `tinyqml codegen 10_model.tflite -o DIR [--target cortex-m4]`.

# %%
c_dir = OUT / "10_c"
gen = generate(blob, c_dir, CodegenOptions(Target.HOST))
header = (c_dir / "model.h").read_text()
print("\n".join(line for line in header.splitlines()
                if line.startswith(("#define TINYQML_INPUT_SIZE ", "#define TINYQML_OUTPUT_SIZE ",
                                    "#define TINYQML_ARENA_BYTES ", "#define TINYQML_SCRATCH_BYTES ",
                                    "int tinyqml_invoke("))))
print(gen.summary())
print("files:", ", ".join(p.name for p in gen.files))

# %% [markdown]
# ## 6a. Compile and run on the host, bit-exact with TFLite Micro
#
# `tinyqml.classical.mcu.run_harness` writes a `main.c` that holds the int8 test images,
# compiles it with the model (`gcc -std=c99 -Wall -Wextra -Werror -O2`), runs it and
# parses the int8 outputs. TFLite Micro runs the same `.tflite` on the same images; every
# one of the int8 outputs must be equal — not close, equal.

# %%
xq = int8_model.qgraph.input.quantize(to_nhwc(data.x_test[:N_HOST]))
x_rows = np.ascontiguousarray(xq.reshape(len(xq), -1))
sources = [c_dir / "model.c", c_dir / "tinyqml_rt.c"]
host = mcu.run_harness(sources, [c_dir], x_rows, gen.output_size, OUT / "10_build" / "host", "host")
tflm = TFLMRunner(blob).run_all(xq)[0].reshape(len(xq), -1)
equal = int((host.outputs == tflm).sum())
c_acc = 100 * float((host.outputs.astype(np.int64).argmax(1) == data.y_test[:N_HOST].numpy()).mean())
print(f"host C vs TFLite Micro: {equal}/{tflm.size} int8 outputs equal "
      f"({'bit-exact' if equal == tflm.size else 'MISMATCH'}); accuracy of the C build on {N_HOST} images {c_acc:.2f}%")

# %% [markdown]
# ## 6b. Cross-compile for a Cortex-M4 and run it under QEMU
#
# The same C, compiled with `arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -mfloat-abi=hard`,
# linked with a start-up file and linker script for QEMU's `mps2-an386` board and newlib's
# semihosting (so `printf` reaches QEMU's stdout), runs on the emulated microcontroller.
# Its outputs must equal the host build's. `arm-none-eabi-size` gives flash and static
# SRAM. (`make mcu-tools` installs the toolchain and QEMU; without them this cell prints a
# note and moves on.)

# %%
m4_tools = ("arm-none-eabi-gcc", "arm-none-eabi-size", "rdimon.specs", "qemu-system-arm")
have = mcu.tools_available()
m4_size = model_size = None
if all(have[t] for t in m4_tools):
    m4_dir = OUT / "10_build" / "m4_src"
    gen_m4 = generate(blob, m4_dir, CodegenOptions(Target.CORTEX_M4))
    m4_sources = [m4_dir / "model.c", m4_dir / "tinyqml_rt.c"]
    m4 = mcu.run_harness(m4_sources, [m4_dir], x_rows[:N_QEMU], gen_m4.output_size, OUT / "10_build" / "m4",
                         "cortex-m4", timeout=300)
    same = bool(np.array_equal(m4.outputs, host.outputs[:N_QEMU]))
    m4_size = m4.size
    model_size = mcu.object_size(m4_sources, [m4_dir], OUT / "10_build" / "m4_obj")
    print(f"QEMU mps2-an386 (Cortex-M4): {N_QEMU} images, outputs {'equal to' if same else 'DIFFERENT from'} "
          f"the host build's")
    print(f"whole ELF (harness + newlib + start-up): flash {m4_size.flash:,} B, static SRAM {m4_size.sram:,} B")
    print(f"model alone (model.c + tinyqml_rt.c): flash {model_size.flash:,} B, static SRAM {model_size.sram:,} B")
else:
    missing = [t for t in m4_tools if not have[t]]
    print(f"note: skipping the Cortex-M4 / QEMU run, missing {', '.join(missing)} (run `make mcu-tools`)")

# %% [markdown]
# ## 7. Report: MACs per layer, the arena, flash and SRAM
#
# `CodegenResult.report()` is a markdown table per layer (shapes, MACs, constant bytes,
# where the output lives) and the arena layout. The plot below draws that layout: each
# activation tensor is a rectangle spanning the operators it is alive for (x) and the
# bytes it occupies in the arena (y). Rectangles that touch in time never overlap in
# memory — except an in-place pair, where an operator writes its output over its own
# input. The arena is as small as the liveness lower bound allows: the most bytes alive
# at any one operator.

# %%
print("| # | op | MACs | output bytes | const bytes |")
print("|---|----|-----:|-------------:|------------:|")
for layer in gen.layers:
    print(f"| {layer.index} | {layer.op} | {layer.macs:,} | {layer.output_bytes:,} | {layer.const_bytes:,} |")
print(f"arena {gen.arena_bytes:,} B (lower bound {gen.placement.lower_bound:,} B, {gen.placement.strategy}); "
      f"TFLite Micro's whole arena for the same model: {TFLMRunner(blob).arena_bytes():,} B")

extra = ["", "## Build", "",
         f"- host C vs TFLite Micro: {equal}/{tflm.size} int8 outputs equal on {N_HOST} test images",
         f"- int8 test accuracy {int8_acc:.2f}% (pruned fp32 {pruned_acc:.2f}%, dense fp32 {dense_acc:.2f}%)"]
if m4_size is not None:
    extra += [f"- Cortex-M4 ELF: flash {m4_size.flash:,} B, static SRAM {m4_size.sram:,} B",
              f"- model objects: flash {model_size.flash:,} B, static SRAM {model_size.sram:,} B"]
(OUT / "10_report.md").write_text(gen.report() + "\n".join(extra) + "\n")

arena_rows = gen.to_dict()["arena"]
fig, ax = plt.subplots(figsize=(7, 3.6))
colors = plt.get_cmap("tab20")
for k, a in enumerate(arena_rows):
    ax.add_patch(Rectangle((a["first"] - 0.4, a["offset"]), a["last"] - a["first"] + 0.8, a["bytes"],
                           facecolor=colors(k % 20), edgecolor="k", alpha=0.8))
    ax.text(a["first"] - 0.3, a["offset"] + a["bytes"] / 2, f"t{a['tensor']}", va="center", fontsize=7)
steps = [layer.op for layer in gen.layers]
ax.set_xlim(-0.6, len(steps) - 0.4)
ax.set_ylim(0, max(gen.arena_bytes, 1) * 1.2)
ax.axhline(gen.arena_bytes, color="k", ls="--", lw=1, label=f"arena {gen.arena_bytes:,} B")
ax.set_xticks(range(len(steps)))
ax.set_xticklabels([f"{i}:{s}" for i, s in enumerate(steps)], rotation=30, ha="right", fontsize=7)
ax.set_ylabel("arena offset (bytes)")
ax.set_title("activation arena: tensors over operator index x offset")
ax.legend(loc="upper right", fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "10_arena.png", dpi=120)
print(f"wrote {OUT / '10_report.md'} and {OUT / '10_arena.png'}")
