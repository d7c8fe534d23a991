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
# # Tutorial 8: Quantization — from float weights to integer-only int8 inference
#
# A microcontroller has no float unit to spare and a few hundred kB of memory. This
# tutorial takes a small CNN trained on the 8×8 digits down to int8 (MIT 6.5940 Lab 2,
# as a library):
#
# 1. **linear quantization** of weights, per tensor and per channel;
# 2. **K-means quantization** (Deep Compression): 4-bit codebooks, fine-tuned;
# 3. **calibration** of activation ranges (MinMax, Percentile, MSE);
# 4. **integer-only int8 inference** that follows the TFLite int8 specification bit for
#    bit: the fixed-point multiplier and shift, the saturating rounding doubling high
#    multiply, the rounding right shift — and why a float shortcut is not acceptable;
# 5. **quantization-aware training** with the straight-through estimator;
# 6. **exports**: a fully-int8 `.tflite` file run in the real TFLite Micro interpreter
#    (bit-exact with tinyqml), and a QDQ ONNX model in onnxruntime.
#
# Set `TINYQML_FAST=1` for a quick run; figures and files go to `TINYQML_TUTORIAL_OUT`
# (default `runs/tutorials`). The full comparison (3 seeds, torch.ao, TFLM, ORT,
# latency) is `benchmarks/quantization.py`.

# %%
import copy
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, never open windows
import matplotlib.pyplot as plt
import numpy as np
import torch

from tinyqml.classical import kmeans as km
from tinyqml.classical import qat
from tinyqml.classical.calibration import MSE, MinMax, Percentile, RangeCollector
from tinyqml.classical.convert import quantize_model, to_nhwc
from tinyqml.classical.data import DigitsConfig, load_digits_data
from tinyqml.classical.fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier, round_half_away
from tinyqml.classical.linear_quant import INT8_WEIGHT, QuantSpec, dequantize, params_for, quantize
from tinyqml.classical.models import SmallCNN
from tinyqml.classical.onnx_export import export_onnx_qdq
from tinyqml.classical.quantize import QuantizeConfig
from tinyqml.classical.tflite_export import TFLMRunner, export_tflite
from tinyqml.classical.train import TrainConfig, evaluate, train

FAST = os.environ.get("TINYQML_FAST", "") not in ("", "0")
OUT = Path(os.environ.get("TINYQML_TUTORIAL_OUT", "runs/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
EPOCHS = 4 if FAST else 40
FINETUNE = 1 if FAST else 5

# %% [markdown]
# ## The float model
#
# scikit-learn's digits (8×8, 10 classes, stratified split, fixed seed) and the 3-conv
# `SmallCNN` (conv-BN-ReLU ×3, one max pool, a linear head), trained in float32.

# %%
data = load_digits_data(DigitsConfig(seed=0))
model = SmallCNN(seed=0)
train(model, data, TrainConfig(epochs=EPOCHS, seed=0))
model.eval()
fp32_acc = evaluate(model, data.x_test, data.y_test)
print(f"train {len(data.y_train)}, test {len(data.y_test)} images; fp32 test accuracy {fp32_acc:.2f}%")

# %% [markdown]
# ## 1. Linear quantization of a weight: per tensor vs per channel
#
# `q = clamp(round(w / scale) + zero_point)`. Symmetric int8 weights use `[-127, 127]`
# and zero point 0 (TFLite's rule). One scale for a whole conv weight wastes the range of
# its small channels; one scale per output channel does not.

# %%
w = model.features[0].weight.detach()
per_tensor = QuantSpec(bits=8, symmetric=True, narrow=True)
errors = {}
for name, spec in (("per tensor", per_tensor), ("per channel", INT8_WEIGHT)):
    qp = params_for(w, spec)
    err = (dequantize(quantize(w, qp), qp) - w).abs().reshape(w.shape[0], -1).mean(1)
    errors[name] = err
    print(f"{name}: mean |error| {float(err.mean()):.2e}")
fig, ax = plt.subplots(figsize=(6, 3))
for name, err in errors.items():
    ax.plot(err.numpy(), marker="o", ms=3, label=name)
ax.set_xlabel("output channel of conv 1")
ax.set_ylabel("mean |w - dequant(quant(w))|")
ax.set_yscale("log")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "08_weight_quant.png", dpi=120)

# %% [markdown]
# ## 2. K-means quantization with codebook fine-tuning
#
# Each layer's weights are clustered into `2**bits` centroids; the weight becomes a
# parametrization `codebook[labels]`, so training moves the centroids (each by the sum
# of its weights' gradients) while the labels stay fixed.

# %%
kmodel = copy.deepcopy(model)
km.kmeans_quantize(kmodel, km.KMeansConfig(bits=4, seed=0))
before = evaluate(kmodel, data.x_test, data.y_test)
train(kmodel, data, TrainConfig(epochs=FINETUNE, lr=1e-3, seed=0))
after = evaluate(kmodel, data.x_test, data.y_test)
report = km.kmeans_storage(kmodel)
print(f"4-bit k-means: {before:.2f}% -> {after:.2f}% after fine-tuning (fp32 {fp32_acc:.2f}%); "
      f"{report.bits_per_weight:.2f} bits/weight, {report.compression_ratio:.1f}x smaller")

# %% [markdown]
# ## 3. Calibrating activation ranges
#
# Activations are quantized per tensor, asymmetric, with a range measured on
# calibration images. MinMax keeps every value; Percentile clips the tails; MSE picks the
# clipping with the least quantize-dequantize error.

# %%
calib = data.x_train[:256]
feats = {}
hook = next(m for m in model.modules() if isinstance(m, torch.nn.ReLU)).register_forward_hook(
    lambda m, i, o: feats.setdefault("relu1", o.detach()))
with torch.no_grad():
    model(calib)
hook.remove()
collector = RangeCollector()
collector.update(feats["relu1"])
values = collector.values().numpy()
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(values, bins=100, log=True, color="0.6")
for cal, color in ((MinMax(), "C0"), (Percentile(99.9), "C1"), (MSE(), "C2")):
    lo, hi = collector.range(cal)
    ax.axvline(hi, color=color, label=f"{type(cal).__name__}: {hi:.2f}")
ax.set_xlabel("first ReLU output")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "08_calibration.png", dpi=120)

# %% [markdown]
# ## 4. Integer-only int8 inference, exactly as TFLite does it
#
# `quantize_model` traces the model (BatchNorm folded, ReLU fused), calibrates and
# quantizes it: weights int8 per channel, bias int32 at scale `s_in * s_w`, activations
# int8 per tensor. Inference then never touches a float: each accumulator is rescaled by
# `s_in * s_w / s_out` stored as an int32 mantissa and a shift.

# %%
results = {"fp32": fp32_acc}
for cal in (MinMax(), Percentile(99.99), MSE()):
    q = quantize_model(model, calib, QuantizeConfig(cal))
    acc = 100 * float((q.predict(data.x_test) == data.y_test).float().mean())
    agree = 100 * float((q.predict(data.x_test) == model(data.x_test).argmax(1)).float().mean())
    results[f"int8 {type(cal).__name__}"] = acc
    print(f"int8 ({type(cal).__name__}): {acc:.2f}% test, {agree:.2f}% top-1 agreement with fp32")
int8_model = quantize_model(model, calib)

real = 0.0123456
mantissa, shift = quantize_multiplier(real)
acc_values = np.random.default_rng(0).integers(-20000, 20000, size=100_000)
exact = multiply_by_quantized_multiplier(acc_values, mantissa, shift)
shortcut = round_half_away(acc_values * real).astype(np.int64)
print(f"multiplier {real} = {mantissa} * 2^({shift} - 31); the float shortcut round(acc * m) differs on "
      f"{100 * float((exact != shortcut).mean()):.2f}% of accumulators (by one step)")

# %% [markdown]
# ## 5. Quantization-aware training
#
# Fake quantization (quantize-dequantize in the forward pass, the straight-through
# estimator in the backward pass) on the BN-folded model lets training adapt the
# weights to the int8 grid; the result is converted exactly like above.

# %%
prepared = qat.prepare_qat(model, calib)
train(prepared, data, TrainConfig(epochs=FINETUNE, lr=5e-4, seed=0))
qat_int8 = quantize_model(qat.strip_qat(prepared.eval()), calib)
results["QAT int8"] = 100 * float((qat_int8.predict(data.x_test) == data.y_test).float().mean())
results["k-means 4-bit"] = after
print(f"QAT then int8: {results['QAT int8']:.2f}%")

fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(list(results), list(results.values()), color="C0")
ax.set_ylim(min(results.values()) - 5, 100)
ax.set_ylabel("test accuracy (%)")
ax.tick_params(axis="x", rotation=30)
fig.tight_layout()
fig.savefig(OUT / "08_accuracy.png", dpi=120)

# %% [markdown]
# ## 6. Exports: TFLite Micro, bit for bit, and ONNX
#
# `export_tflite` writes a fully-int8 flatbuffer (int8 input and output). The real
# TFLite Micro interpreter (pip `tflite-micro`) runs it; every int8 output equals
# tinyqml's. The QDQ ONNX model runs in onnxruntime.

# %%
path = export_tflite(int8_model, calib, OUT / "08_model.tflite")
xq = int8_model.qgraph.input.quantize(to_nhwc(data.x_test))
tflm = TFLMRunner(path.read_bytes()).run_all(xq)[0]
ours = int8_model.int8(data.x_test)
print(f"{path.name}: {path.stat().st_size} bytes; TFLite Micro equals tinyqml on "
      f"{int((tflm == ours).sum())}/{ours.size} int8 outputs")

import onnxruntime as ort  # noqa: E402

from tinyqml.classical.onnx_export import session_options  # noqa: E402

onnx_path = export_onnx_qdq(int8_model, OUT / "08_model_qdq.onnx")
# session_options(): exact int8 products on CPUs without VNNI (onnxruntime's default kernel there
# saturates pairs of products to int16)
sess = ort.InferenceSession(str(onnx_path), session_options(), providers=["CPUExecutionProvider"])
ort_pred = sess.run(None, {sess.get_inputs()[0].name: data.x_test.numpy()})[0].argmax(1)
print(f"onnxruntime QDQ: top-1 agreement with tinyqml int8 "
      f"{100 * float((torch.from_numpy(ort_pred) == int8_model.predict(data.x_test)).float().mean()):.2f}%")
