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
# # Tutorial 1: quantum-circuit basics with tinyqml
#
# This tutorial builds small circuits with `tinyqml.qml` and looks at what the
# simulator returns: state vectors, expectation values, probabilities, samples,
# gradients (three ways) and the JSON form of a circuit.
#
# Run it as a script (`.venv/bin/python tutorials/01_quantum_basics.py`) or open
# it as a notebook with jupytext. Files are written to the folder named by
# `TINYQML_TUTORIAL_OUT` (default `runs/tutorials`).

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, never open windows
import matplotlib.pyplot as plt
import torch

import tinyqml.qml as tq

OUT = Path(os.environ.get("TINYQML_TUTORIAL_OUT", "runs/tutorials"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## Building a circuit
#
# A `CircuitBuilder` collects gates; every method returns the builder, so calls
# chain. `build()` gives an immutable `Circuit`. Here is a Bell-state circuit:
# a Hadamard on wire 0, then a CNOT with control 0 and target 1.

# %%
bell = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
print(bell, bell.gate_counts)

# %% [markdown]
# ## The wire convention
#
# Wire 0 is the **most significant** bit of a basis-state index, as in PennyLane
# (Qiskit uses the reverse order). On two wires the amplitudes are ordered
# `|00>, |01>, |10>, |11>` with the left digit being wire 0. So an X on wire 0
# moves all amplitude to index 2 (`|10>`):

# %%
flip0 = tq.CircuitBuilder(2).x(0).build()
state = tq.statevector(flip0)
print(state.real)
assert int(state.abs().argmax()) == 0b10

# %% [markdown]
# ## State vectors
#
# `statevector` returns a complex tensor of shape `[batch, 2**n_wires]`. Without
# batched inputs the batch has one row. The Bell state has weight `1/sqrt(2)` on
# `|00>` and `|11>`:

# %%
psi = tq.statevector(bell)
print(psi)

# %% [markdown]
# ## Expectation values
#
# Observables are Pauli strings: `tq.Z(0)`, `tq.X(1)`, products with `@`, and
# weighted sums (Hamiltonians) with `+` and `*`. `expval` returns `[batch, n_obs]`.

# %%
observables = [tq.Z(0), tq.Z(0) @ tq.Z(1), tq.X(0) @ tq.X(1), 0.5 * tq.Z(0) + 0.5 * tq.Z(1)]
print(tq.expval(bell, observables))

# %% [markdown]
# ## Parameters: weights and input features
#
# Gate angles can be constants, trainable **weights** (`tq.weight(k)` reads
# `weights[k]`) or input **features** (`tq.feature(i)` reads column `i` of the
# input batch). The same circuit object then serves every batch.

# %%
circuit = (
    tq.CircuitBuilder(2)
    .ry(0, tq.feature(0))
    .ry(1, tq.feature(1))
    .cx(0, 1)
    .rx(0, tq.weight(0))
    .rz(1, tq.weight(1))
    .build()
)
print(circuit, "inputs:", circuit.n_inputs, "weights:", circuit.n_weights)
x = torch.tensor([[0.1, 0.2], [1.0, 2.0], [3.0, 0.5]], dtype=torch.float64)
w = torch.tensor([0.3, -0.7], dtype=torch.float64)
print(tq.expval(circuit, [tq.Z(0), tq.Z(1)], weights=w, inputs=x))

# %% [markdown]
# ## Probabilities and sampling
#
# `probs` gives the probability of every basis state (or of a subset of wires,
# marginalised). `sample` and `counts` draw measurement outcomes; pass a seeded
# `torch.Generator` so that the draws repeat exactly.

# %%
print("P(basis states):", tq.probs(bell))
print("P(wire 1):", tq.probs(bell, wires=[1]))
gen = torch.Generator().manual_seed(7)
shots = tq.sample(bell, shots=8, generator=gen)  # [batch, shots, wires]
print("8 shots (one row per shot, wire 0 first):", shots[0].tolist())
bell_counts = tq.counts(bell, shots=1000, generator=torch.Generator().manual_seed(1234))[0]
print("counts:", bell_counts)
again = tq.counts(bell, shots=1000, generator=torch.Generator().manual_seed(1234))[0]
assert again == bell_counts  # same seed, same counts

# %%
fig, ax = plt.subplots(figsize=(4, 3))
ax.bar(list(bell_counts), list(bell_counts.values()), color="tab:blue")
ax.set_xlabel("outcome (wire 0 first)")
ax.set_ylabel("counts of 1000 shots")
ax.set_title("Bell state")
fig.tight_layout()
fig.savefig(OUT / "01_bell_counts.png", dpi=100)
plt.close(fig)
print("saved", OUT / "01_bell_counts.png")

# %% [markdown]
# ## Gradients, three ways
#
# Expectations are differentiable with respect to weights (and inputs). The
# `diff_method` argument picks how:
#
# - `"backprop"`: ordinary autograd through the simulation;
# - `"adjoint"`: the adjoint method, memory independent of circuit depth (default);
# - `"parameter-shift"`: shifted circuit evaluations, the rule real hardware uses.
#
# All three agree to numerical precision. The observable here is the
# Hamiltonian `Z0 + X1`, so both weights matter.

# %%
hamiltonian = tq.Z(0) + tq.X(1)
grads = {}
for method in tq.DIFF_METHODS:
    weights = w.clone().requires_grad_(True)
    loss = tq.expval(circuit, [hamiltonian], weights=weights, inputs=x, diff_method=method).sum()
    loss.backward()
    grads[method] = weights.grad
    print(f"{method:>15}: {weights.grad}")
assert all(torch.allclose(g, grads["backprop"], atol=1e-8) for g in grads.values())

# %% [markdown]
# The same machinery is wrapped as a `torch.nn.Module`: `QuantumLayer` owns the
# weights as an `nn.Parameter` (initialised from a seeded generator) and maps an
# input batch to expectations, so it drops into any PyTorch model.

# %%
layer = tq.QuantumLayer(circuit, [tq.Z(0), tq.X(1)], diff_method="adjoint", seed=0)
out = layer(x)
out.sum().backward()
print(out.shape, layer.weights.grad)

# %% [markdown]
# ## JSON round-trip
#
# A circuit serialises to JSON (gates, wires and parameter references) and reads
# back to an equal circuit, with the same content fingerprint.

# %%
text = circuit.to_json(indent=1)
(OUT / "01_circuit.json").write_text(text)
restored = tq.Circuit.from_json((OUT / "01_circuit.json").read_text())
assert restored == circuit and restored.fingerprint() == circuit.fingerprint()
print("first operation:", circuit.to_dict()["ops"][0])
print("round-trip ok, fingerprint", circuit.fingerprint()[:16])
