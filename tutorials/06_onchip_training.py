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
# # Tutorial 6: on-chip-style training with parameter shift and gradient pruning
#
# On a real quantum computer there is no backprop: every number the optimizer sees
# is a **finite-shot measurement** of a **noisy** device, and gradients come from the
# **parameter-shift rule**, two more circuit runs per trainable angle and input.
# QOC (Wang et al., DAC 2022) trains this way and saves circuit runs with
# **probabilistic gradient pruning**: in an *accumulation window* every gradient is
# evaluated and `|g|` is summed; in the following *pruning window* only a fraction
# of the parameters, drawn with probability proportional to those sums, get their
# gradient evaluated, the others are skipped.
#
# This tutorial plays the device with tinyqml's calibrated density-matrix simulator:
#
# 1. the digits classifier circuit **transpiled** onto `FakeManilaV2`, under
#    `NoiseModel.from_backend` (gate errors, T1/T2, readout);
# 2. `tinyqml.noise.qoc.OnChipClassifier`: `<Z>` estimated from `shots` samples
#    drawn with a seeded generator; its backward is the batched parameter shift
#    under the same shot noise, with every circuit execution counted;
# 3. shot-noisy gradients against the exact noisy gradient (`tinyqml.noise.expval`
#    with backprop): the error shrinks like `1/sqrt(shots)`;
# 4. `tinyqml.search.gradient_pruning.GradientPruner`: the accumulation/pruning
#    windows on the shared pruning engine (magnitude importance, group scores,
#    granularities, including whole gates via `tinyqml.qml.prune.gate_groups`);
# 5. training with and without pruning, accuracy against circuit executions.
#
# Set `TINYQML_FAST=1` for a small run; files go to `TINYQML_TUTORIAL_OUT`
# (default `runs/tutorials`).

# %%
import json
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, never open windows
import matplotlib.pyplot as plt
import torch
from qiskit_ibm_runtime.fake_provider import FakeManilaV2

import tinyqml.qml as tq
from tinyqml.classifier import encoder_4x4_ryzxy
from tinyqml.noise import NoiseModel
from tinyqml.noise import expval as noisy_expval
from tinyqml.noise.qoc import OnChipClassifier, QOCConfig, gradient_executions, train_qoc
from tinyqml.qml.datasets import digits4
from tinyqml.qml.prune import gate_groups
from tinyqml.search import Groups
from tinyqml.search.gradient_pruning import GradientPruner, GradientPruningConfig

FAST = os.environ.get("TINYQML_FAST", "") not in ("", "0")
OUT = Path(os.environ.get("TINYQML_TUTORIAL_OUT", "runs/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)
LAYERS = 1 if FAST else 2
TRAIN, EPOCHS, SHOTS = (24, 2, 256) if FAST else (100, 6, 1024)
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## 1. The classifier on the device's qubits
#
# The demo's `4x4_ryzxy` encoder (16 pooled pixels as RY, RZ, RX, RY rotations) is
# followed by hardware-efficient layers: a U3 on every wire and a CX chain, which
# fits Manila's line of qubits without SWAPs. `tq.transpile` writes it in Manila's
# basis (rz, sx, cx): every U3 angle becomes one `rz`, so a weight still is one
# gate parameter with a two-term shift rule.

# %%
def hea_ansatz(n_wires: int, layers: int) -> tq.Circuit:
    b = tq.CircuitBuilder(n_wires)
    k = 0
    for _ in range(layers):
        for w in range(n_wires):
            b.u(w, tq.weight(k), tq.weight(k + 1), tq.weight(k + 2))
            k += 3
        for w in range(n_wires - 1):
            b.cx(w, w + 1)
    return b.build()


backend = FakeManilaV2()
logical = encoder_4x4_ryzxy(4) + hea_ansatz(4, LAYERS)
physical, layout = tq.transpile(logical, backend, initial_layout=[0, 1, 2, 3], seed=0)
noise_model = NoiseModel.from_backend(backend)
print("logical :", logical, logical.gate_counts, "weights:", logical.n_weights)
print("physical:", physical, physical.gate_counts, "measured on", layout.final)

data = digits4()
per_class = TRAIN // 4
idx = torch.cat([torch.nonzero(data.y_train == c).flatten()[:per_class] for c in range(4)])
x_train, y_train = data.x_train[idx], data.y_train[idx]
x_test, y_test = (data.x_test[:48], data.y_test[:48]) if FAST else (data.x_test, data.y_test)
print("train", tuple(x_train.shape), "test", tuple(x_test.shape))

# %% [markdown]
# ## 2. Shot-noisy expectations and their parameter-shift gradient
#
# `OnChipClassifier(physical, wires, noise_model, shots)` returns `5 * <Z_w>` on the
# measured qubits. Each row of a batch is one circuit execution of `shots` shots; the
# backward pass stacks every shifted circuit (inputs x weights x 2 shifts) into one
# batch of the density-matrix simulator. `model.counter` keeps count.

# %%
model = OnChipClassifier(physical, layout.final, noise_model=noise_model, shots=SHOTS, seed=0)
xb, yb = x_train[:8], y_train[:8]
loss = torch.nn.functional.cross_entropy(model(xb), yb)
loss.backward()
print(f"loss {loss.item():.3f}; executions {model.counter.as_dict()}")
assert model.counter.forward == 8
assert model.counter.gradient == gradient_executions(model.estimator, 8) == 8 * 2 * logical.n_weights

# %% [markdown]
# The exact noisy gradient (density matrix, readout errors, no shots) by backprop
# through `tinyqml.noise.expval`, against the shot-based parameter shift at several
# shot counts (same weights, same inputs, same upstream gradient):

# %%
w = model.weights.detach().clone().requires_grad_(True)
cot = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
ref = noisy_expval(physical, [tq.Z(q) for q in layout.final], noise_model, weights=w, inputs=xb, readout=True)
(ref * cot).sum().backward()
exact_grad = w.grad.clone()


def shift_grad(shots):
    m = OnChipClassifier(physical, layout.final, noise_model=noise_model, shots=shots, seed=1)
    with torch.no_grad():
        m.weights.copy_(w.detach())
    (m.expectations(xb) * cot).sum().backward()
    return m.weights.grad


err0 = (shift_grad(None) - exact_grad).abs().max().item()
print(f"shots=None (exact): max |shift - backprop| = {err0:.1e}")
assert err0 < 1e-8
shot_list = [64, 256, 1024] if FAST else [64, 256, 1024, 4096, 16384]
errors = [(shift_grad(s) - exact_grad).norm().item() / exact_grad.norm().item() for s in shot_list]
for s, e in zip(shot_list, errors):
    print(f"shots {s:6d}: relative gradient error {e:.3f}")

fig, ax = plt.subplots(figsize=(4.5, 3.2))
ax.loglog(shot_list, errors, "o-", label="shot-based parameter shift")
ax.loglog(shot_list, [errors[0] * math.sqrt(shot_list[0] / s) for s in shot_list], "k--", label="1/sqrt(shots)")
ax.set_xlabel("shots per circuit")
ax.set_ylabel("relative error vs exact noisy gradient")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "06_gradient_error.png", dpi=120)
plt.close(fig)

# %% [markdown]
# ## 3. Gradient pruning on the search engine
#
# `GradientPruner(weights, GradientPruningConfig(ratio, accumulation_window,
# pruning_window, probabilistic, seed))` gives, per step, a boolean mask of the
# gradients to evaluate. It groups entries with the engine's granularities and
# ranks groups with its importance (`Magnitude` of the accumulated gradient) and
# `group_scores`. With QOC's settings (ratio 0.5, windows 1 and 2) two thirds of
# the gradient circuits are run on average.

# %%
cfg = GradientPruningConfig(ratio=0.5, accumulation_window=1, pruning_window=2, seed=0)
demo = GradientPruner(model.weights, cfg)
fake_grads = torch.randn(9, logical.n_weights, generator=torch.Generator().manual_seed(1)) \
    * torch.linspace(0.1, 2.0, logical.n_weights)
masks = []
for step in range(9):
    masks.append(demo.mask(step))
    demo.observe(step, fake_grads[step])
print("accumulation steps:", [t for t in range(9) if demo.in_accumulation(t)])
print("evaluated per step:", [int(m.sum()) for m in masks], "of", logical.n_weights,
      f"(expected fraction {cfg.expected_fraction():.3f})")

# one group per U3 gate of the *logical* circuit: its three angles are kept or skipped together
by_gate = GradientPruner(model.weights, cfg, granularity=Groups(gate_groups(logical)))
by_gate.observe(0, fake_grads[0])
gate_mask = by_gate.mask(1)
print("gate groups:", gate_groups(logical).tolist())
print("evaluated  :", gate_mask.int().tolist())
assert all(len(set(gate_mask[gate_groups(logical) == g].tolist())) == 1 for g in gate_groups(logical).unique())

fig, ax = plt.subplots(figsize=(6, 2.6))
ax.imshow(torch.stack(masks).T.float(), aspect="auto", cmap="Greys", interpolation="nearest")
ax.set_xlabel("training step (accumulation: 0, 3, 6)")
ax.set_ylabel("weight")
ax.set_title("gradients evaluated (black)")
fig.tight_layout()
fig.savefig(OUT / "06_pruning_masks.png", dpi=120)
plt.close(fig)

# %% [markdown]
# ## 4. Training with and without gradient pruning
#
# `train_qoc` runs Adam on the shot-noisy parameter-shift gradients; with
# `QOCConfig(pruning=...)` the pruner decides which gradients are evaluated each
# step. After each epoch the test accuracy is read from the exact noisy
# expectations (a simulator-only number); at the end also from one shot-based
# evaluation. Both runs take the same number of steps; the pruned one runs fewer
# circuits.

# %%
runs = {}
for name, pruning in (("full", None), ("pruned", cfg)):
    m = OnChipClassifier(physical, layout.final, noise_model=noise_model, shots=SHOTS, seed=0)
    res = train_qoc(m, x_train, y_train, QOCConfig(epochs=EPOCHS, batch_size=20, lr=0.1, seed=0, pruning=pruning,
                                                   eval_shots=SHOTS), x_test=x_test, y_test=y_test)
    runs[name] = res
    print(f"{name:6s}: test acc exact {res.test_accuracy:.3f}, {SHOTS} shots {res.test_accuracy_shots:.3f}; "
          f"training circuits {res.executions['training']:,} ({res.executions['total_shots']:,} shots); "
          f"{res.seconds:.1f} s")
saving = 1 - runs["pruned"].executions["gradient"] / runs["full"].executions["gradient"]
print(f"gradient circuits saved by pruning: {saving:.1%}")
assert runs["pruned"].executions["gradient"] < runs["full"].executions["gradient"]

fig, ax = plt.subplots(figsize=(5, 3.4))
for name, res in runs.items():
    ax.plot([e.training_executions for e in res.history], [e.test_accuracy for e in res.history], "o-", label=name)
ax.set_xlabel("training circuit executions")
ax.set_ylabel("test accuracy (exact noisy)")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "06_accuracy_vs_circuits.png", dpi=120)
plt.close(fig)
(OUT / "06_qoc_runs.json").write_text(json.dumps({k: r.summary() for k, r in runs.items()}, indent=2) + "\n")

# %% [markdown]
# ## What to take away
#
# - Shot noise makes each parameter-shift gradient noisy (error `~ 1/sqrt(shots)`),
#   on top of the bias that device noise puts into the expectations themselves;
#   with `shots=None` the shift rule reproduces the backprop gradient of the noisy
#   simulator exactly.
# - Gradient pruning cuts the gradient circuits by `ratio * w_p / (w_a + w_p)` (a
#   third with QOC's settings) at the same number of steps; `benchmarks/qoc.py`
#   compares both over three seeds, including the accuracy at equal circuit budget.
# - The selector is the search engine's: any `Granularity` and `Importance` work,
#   e.g. whole gates with `Groups(gate_groups(circuit))`.
