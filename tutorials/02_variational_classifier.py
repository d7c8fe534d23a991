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
# # Tutorial 2: a variational quantum classifier for handwritten digits
#
# We train a 4-qubit circuit to tell the digits 0, 1, 2 and 3 apart, using
# scikit-learn's bundled 8×8 digit images (no download). The pieces:
#
# 1. **data**: `tinyqml.qml.datasets.digits4` average-pools each image to 4×4
#    (16 features), maps pixel values `[0, 16]` to angles `[0, π]` and makes a
#    stratified 70/30 train/test split with a fixed seed;
# 2. **encoding** (`4x4_ryzxy`, as in QuantumNAS / TorchQuantum): RY on the 4
#    wires with features 0-3, then RZ with 4-7, RX with 8-11 and RY with 12-15;
# 3. **ansatz**: layers of a trainable U3 on every wire followed by a CNOT ring;
# 4. **readout**: `<Z_i>` on wire `i` is the logit of class `i` (times a fixed
#    scale), trained with cross-entropy and Adam; gradients by the adjoint method.
#
# The training code lives in `tinyqml.classifier` (the `tinyqml train qnn` command runs the
# same function). Set `TINYQML_FAST=1` for a quick run with a smaller model;
# the plot goes to `TINYQML_TUTORIAL_OUT` (default `runs/tutorials`).

# %%
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, never open windows
import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

import tinyqml.qml as tq
from tinyqml.classifier import (
    FAST_CONFIG,
    ClassifierConfig,
    DigitsClassifier,
    classifier_circuit,
    encoder_4x4_ryzxy,
    train_classifier,
)
from tinyqml.qml.datasets import digits4

FAST = os.environ.get("TINYQML_FAST", "") not in ("", "0")
OUT = Path(os.environ.get("TINYQML_TUTORIAL_OUT", "runs/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## The data
#
# Each sample is 16 angles; labels are `0..3`. The split is stratified, so each
# class has the same share in train and test.

# %%
data = digits4(classes=(0, 1, 2, 3), pool=2, test_size=0.3, seed=0)
print("train", tuple(data.x_train.shape), "test", tuple(data.x_test.shape))
print("train samples per class:", data.y_train.bincount().tolist())
print("test samples per class: ", data.y_test.bincount().tolist())
print("feature range: [%.3f, %.3f]" % (data.x_train.min(), data.x_train.max()))

# %%
fig, axes = plt.subplots(1, 4, figsize=(6, 1.8))
for digit, ax in enumerate(axes):
    first = int((data.y_train == digit).nonzero()[0])
    ax.imshow(data.x_train[first].reshape(4, 4), cmap="gray_r", vmin=0, vmax=torch.pi)
    ax.set_title(f"digit {digit}")
    ax.axis("off")
fig.tight_layout()
fig.savefig(OUT / "02_pooled_digits.png", dpi=100)
plt.close(fig)

# %% [markdown]
# ## The circuit
#
# The encoder reads the 16 features; the ansatz adds `3 × 4` weights per layer.

# %%
config = FAST_CONFIG if FAST else ClassifierConfig()
print(config)
encoder = encoder_4x4_ryzxy()
print("encoder:", encoder, [op.name for op in encoder.ops])
circuit = classifier_circuit(config.layers)
print("full circuit:", circuit, circuit.gate_counts, "weights:", circuit.n_weights)

# %% [markdown]
# Before training, the model is a `torch.nn.Module` wrapping a
# `tq.QuantumLayer` (weights drawn from a generator seeded by `config.seed`):

# %%
model = DigitsClassifier(config)
print(model)
print("logits of two training samples:\n", model(data.x_train[:2]).detach())

# %% [markdown]
# ## Training
#
# `train_classifier` shuffles with a seeded generator, runs Adam with a cosine
# learning-rate decay and records the loss and both accuracies after each epoch.

# %%
start = time.perf_counter()
result = train_classifier(
    config,
    on_epoch=lambda s: print(f"epoch {s.epoch:2d}  loss {s.loss:.3f}  train {s.train_accuracy:.3f}  "
                             f"test {s.test_accuracy:.3f}"),
    data=data,
)
print(f"train accuracy {result.train_accuracy:.3f}, test accuracy {result.test_accuracy:.3f}, "
      f"{time.perf_counter() - start:.1f}s")

# %% [markdown]
# ## Loss and accuracy curves

# %%
epochs = [s.epoch for s in result.history]
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(8, 3))
ax_loss.plot(epochs, [s.loss for s in result.history], marker="o")
ax_loss.set_xlabel("epoch")
ax_loss.set_ylabel("training cross-entropy")
ax_acc.plot(epochs, [s.train_accuracy for s in result.history], marker="o", label="train")
ax_acc.plot(epochs, [s.test_accuracy for s in result.history], marker="s", label="test")
ax_acc.set_xlabel("epoch")
ax_acc.set_ylabel("accuracy")
ax_acc.set_ylim(0, 1)
ax_acc.legend()
for ax in (ax_loss, ax_acc):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
fig.suptitle(f"4-qubit digits classifier, {config.layers} layers")
fig.tight_layout()
plot_path = OUT / "02_classifier_history.png"
fig.savefig(plot_path, dpi=100)
plt.close(fig)
print("saved", plot_path)

# %% [markdown]
# ## Looking at the predictions
#
# A confusion matrix on the test set: row = true digit, column = predicted digit.

# %%
with torch.no_grad():
    predicted = result.model(data.x_test).argmax(dim=1)
confusion = torch.zeros(4, 4, dtype=torch.int64)
for true, pred in zip(data.y_test.tolist(), predicted.tolist()):
    confusion[true, pred] += 1
print(confusion)

# %% [markdown]
# The trained circuit is an ordinary tinyqml circuit plus a weight vector, so it
# can be saved as JSON and evaluated again without the model object:

# %%
weights = result.model.quantum.weights.detach()
(OUT / "02_classifier_circuit.json").write_text(circuit.to_json())
again = tq.expval(tq.Circuit.from_json((OUT / "02_classifier_circuit.json").read_text()),
                  [tq.Z(i) for i in range(4)], weights=weights, inputs=data.x_test)
assert torch.equal(again.argmax(dim=1), predicted)
print("re-evaluated from JSON: same predictions")
