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
# # Tutorial 3: circuits from Qiskit and OpenQASM
#
# tinyqml reads and writes Qiskit circuits and OpenQASM 2 / 3 text, so a model
# designed elsewhere can be trained here and sent back:
#
# 1. **from Qiskit**: a `zz_feature_map` + `real_amplitudes` classifier built
#    with Qiskit's circuit library becomes a tinyqml circuit with `tq.from_qiskit`;
#    its `ParameterVector` `x` is declared as the input features;
# 2. **training**: a `tq.QuantumLayer` fits it to a toy data set (Adam, adjoint
#    gradients);
# 3. **back to Qiskit**: `tq.to_qiskit` + the trained weights give a Qiskit
#    circuit with the same state; `tq.to_qasm` writes OpenQASM 3;
# 4. **from OpenQASM**: a hand-written OpenQASM 3 program with `input`
#    parameters and a custom `gate`, trained the same way, exported to OpenQASM 2;
# 5. **onto hardware qubits**: `tq.transpile` maps the trained model onto the
#    5-qubit `FakeManilaV2` backend (offline), with a `Layout` that says where
#    each qubit ends up.
#
# Qiskit numbers qubits the other way round (little-endian): tinyqml's state
# equals `Statevector(qc).reverse_qargs()`. The conversion functions take care of
# it. Set `TINYQML_FAST=1` for fewer training steps; files go to
# `TINYQML_TUTORIAL_OUT` (default `runs/tutorials`).

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, never open windows
import matplotlib.pyplot as plt
import numpy as np
import torch
from qiskit.circuit.library import real_amplitudes, zz_feature_map
from qiskit.quantum_info import Statevector
from qiskit_ibm_runtime.fake_provider import FakeManilaV2

import tinyqml.qml as tq

FAST = os.environ.get("TINYQML_FAST", "") not in ("", "0")
OUT = Path(os.environ.get("TINYQML_TUTORIAL_OUT", "runs/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)
STEPS = 15 if FAST else 80
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## A toy data set
#
# Two features in `[0, π]`; the label is `+1` inside a band around the diagonal
# and `-1` outside. The model's output `<Z0 Z1>` is trained towards the label.

# %%
gen = torch.Generator().manual_seed(0)
x_train = torch.rand(48, 2, generator=gen, dtype=torch.float64) * torch.pi
y_train = torch.where((x_train[:, 0] - x_train[:, 1]).abs() < 1.0, 1.0, -1.0).to(torch.float64)
print("samples:", tuple(x_train.shape), "labels +1 / -1:", int((y_train > 0).sum()), int((y_train < 0).sum()))

# %% [markdown]
# ## 1. A circuit from Qiskit
#
# `zz_feature_map` encodes `x` with phase gates whose angles are `2 x_i` and
# `2 (π - x_0)(π - x_1)`: a product of two features, which tinyqml stores as one
# feature reference with index `(0, 1)`, scale 2 and shift `-π`. Without
# `parameters=`, every Qiskit parameter would become a trainable weight;
# `{"x": "feature"}` maps element `x[i]` to input column `i`.

# %%
qc = zz_feature_map(2, reps=1).compose(real_amplitudes(2, reps=2))
print(qc.draw(fold=-1))
circuit, pmap = tq.from_qiskit(qc, parameters={"x": "feature"})
print(circuit, circuit.gate_counts)
print("parameter map:", pmap.as_dict())
print("the product reference:", next(p for op in circuit.ops for p in op.params if len(p.index) == 2))

# %% [markdown]
# The tinyqml state equals Qiskit's (bit-reversed) state for the same numbers:

# %%
w0 = torch.linspace(-1, 1, circuit.n_weights, dtype=torch.float64)
sample = x_train[:1]
bound = qc.assign_parameters(pmap.values(weights=w0, inputs=sample))
err = np.abs(Statevector(bound).reverse_qargs().data - tq.statevector(circuit, w0, sample)[0].numpy()).max()
print(f"max |tinyqml - Qiskit| = {err:.1e}")
assert err < 1e-10

# %% [markdown]
# ## 2. Training it in tinyqml


# %%
def train(circuit: tq.Circuit, observable: tq.PauliString, steps: int, seed: int) -> tuple[tq.QuantumLayer, list]:
    """Fit <observable> to the labels with Adam; returns the layer and the loss per step."""
    layer = tq.QuantumLayer(circuit, [observable], seed=seed)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((layer(x_train)[:, 0] - y_train) ** 2).mean()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return layer, history


model, qiskit_history = train(circuit, tq.Z(0) @ tq.Z(1), STEPS, seed=1)
print(f"loss {qiskit_history[0]:.3f} -> {qiskit_history[-1]:.3f} in {STEPS} steps")
assert qiskit_history[-1] < qiskit_history[0]

# %% [markdown]
# ## 3. Back to Qiskit and OpenQASM 3
#
# `to_qiskit` with the map from step 1 keeps the parameter names (`x[0]`,
# `θ[3]`, ...); binding the trained weights gives a Qiskit circuit that computes
# the same state. `to_qasm(..., weights=...)` writes OpenQASM 3 with the trained
# weights as numbers and the features as `input float[64]` declarations named
# `x_0`, `x_1` (OpenQASM names cannot contain brackets).

# %%
trained = model.weights.detach()
qc_back, names = tq.to_qiskit(circuit, pmap)
print("Qiskit parameters:", [p.name for p in qc_back.parameters])
check = qc_back.assign_parameters(names.values(weights=trained, inputs=sample))
err = np.abs(Statevector(check).reverse_qargs().data - tq.statevector(circuit, trained, sample)[0].numpy()).max()
print(f"trained model, max |tinyqml - Qiskit| = {err:.1e}")
assert err < 1e-10

qasm3_text = tq.to_qasm(circuit, 3, weights=trained)
(OUT / "03_qiskit_model.qasm").write_text(qasm3_text)
print("\n".join(qasm3_text.splitlines()[:8]), "\n...")

# reading the file back gives the same model
again, again_map = tq.from_qasm(qasm3_text, {"x_0": ("feature", 0), "x_1": ("feature", 1)})
same = torch.allclose(tq.expval(again, [tq.Z(0) @ tq.Z(1)], inputs=x_train), model(x_train).detach(), atol=1e-10)
print("OpenQASM 3 round trip gives the same outputs:", same)
assert same

# %% [markdown]
# ## 4. A circuit from OpenQASM
#
# The program below declares two features and three weights as `input`s and
# defines its own gate. `from_qasm` reads the version header, loads the text
# with Qiskit's OpenQASM 3 importer and expands `entangle` through its body.

# %%
PROGRAM = """OPENQASM 3.0;
include "stdgates.inc";
input float[64] px;
input float[64] py;
input float[64] t0;
input float[64] t1;
input float[64] t2;
gate entangle(a) u, v { cx u, v; rz(a) v; cx u, v; }
qubit[2] q;
ry(px) q[0];
ry(py) q[1];
entangle(2 * t0) q[0], q[1];
ry(t1) q[0];
ry(t2 - 0.5) q[1];
"""
qasm_circuit, qasm_map = tq.from_qasm(PROGRAM, {"px": ("feature", 0), "py": ("feature", 1)})
print(qasm_circuit, [op.name for op in qasm_circuit.ops])
print("parameter map:", qasm_map.as_dict())

# %% [markdown]
# Text that does not parse raises `tq.QasmError`, which carries the parser's
# line, column and message:

# %%
try:
    tq.from_qasm(PROGRAM.replace("ry(px) q[0];", "ry(px) q[0]"))
except tq.QasmError as exc:
    print(f"QasmError: line {exc.line}, column {exc.column}: {exc.parser_message}")

# %% [markdown]
# Train it, then write OpenQASM 2. OpenQASM 2 has no free parameters, so the
# trained weights *and* one input sample are bound to numbers.

# %%
qasm_model, qasm_history = train(qasm_circuit, tq.Z(0) @ tq.Z(1), STEPS, seed=2)
print(f"loss {qasm_history[0]:.3f} -> {qasm_history[-1]:.3f} in {STEPS} steps")
qasm2_text = tq.to_qasm(qasm_circuit, 2, weights=qasm_model.weights.detach(), inputs=sample)
(OUT / "03_qasm_model_sample0.qasm").write_text(qasm2_text)
print(qasm2_text)

# %% [markdown]
# ## 5. Onto a backend's qubits
#
# `tq.transpile` runs Qiskit's transpiler for `FakeManilaV2` (5 qubits on a line,
# basis `rz`, `sx`, `x`, `cx`). The result acts on the 5 physical qubits;
# `layout.final[v]` is where virtual qubit `v` ends up, and `layout.physical`
# moves an observable there. The trained weights drive the transpiled circuit
# unchanged.

# %%
physical, layout = tq.transpile(circuit, FakeManilaV2(), seed=0)
print(physical, physical.gate_counts)
print("initial layout", layout.initial, "final layout", layout.final)
obs = layout.physical(tq.Z(0) @ tq.Z(1))
out_physical = tq.expval(physical, [obs], weights=trained, inputs=x_train)
print("same outputs on the physical qubits:", torch.allclose(out_physical, model(x_train).detach(), atol=1e-9))

# %% [markdown]
# ## Loss curves

# %%
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(qiskit_history, label="Qiskit zz_feature_map + real_amplitudes")
ax.plot(qasm_history, label="OpenQASM 3 program")
ax.set_xlabel("Adam step")
ax.set_ylabel("mean squared error")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "03_interop_loss.png", dpi=100)
plt.close(fig)
print("saved", OUT / "03_interop_loss.png")
