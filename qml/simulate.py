"""Public simulation entry points: states, expectations, probabilities, samples.

The pipeline is a chain of small pure functions::

    resolve angles -> compile (cached) -> materialize matrices -> initial state
    -> apply blocks -> measure

Three differentiation methods give the same gradients (to 1e-8 in complex128):

- ``"backprop"``: plain autograd through the fused blocks;
- ``"adjoint"``: :class:`tinyqml.qml.fusion.AdjointRun`, memory independent of depth;
- ``"parameter-shift"``: batched shift rules, the method real hardware needs.

>>> import torch, tinyqml.qml as tq
>>> bell = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
>>> statevector(bell).real
tensor([[0.7071, 0.0000, 0.0000, 0.7071]], dtype=torch.float64)
>>> c = tq.CircuitBuilder(1).rx(0, tq.weight(0)).build()
>>> w = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
>>> e = expval(c, [tq.Z(0)], weights=w, diff_method="parameter-shift")
>>> e.sum().backward(); bool(torch.isclose(w.grad, -torch.sin(w.detach())))
True
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from tinyqml.qml import fusion as F
from tinyqml.qml import measure as M
from tinyqml.qml.circuit import Circuit
from tinyqml.qml.errors import DiffMethodError, ShapeError
from tinyqml.qml.params import resolve

Tensor = torch.Tensor
DIFF_METHODS = ("backprop", "adjoint", "parameter-shift")


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in (torch.complex64, torch.complex128):
        raise ShapeError(f"dtype must be torch.complex64 or torch.complex128, got {dtype}")


def _check_method(diff_method: str) -> None:
    if diff_method not in DIFF_METHODS:
        raise DiffMethodError(f"unknown diff_method {diff_method!r}; choose one of {', '.join(DIFF_METHODS)}")


def _device(weights: Any, inputs: Any, device: Any) -> torch.device | None:
    if device is not None:
        return torch.device(device)
    for t in (inputs, weights):
        if isinstance(t, torch.Tensor):
            return t.device
    return None


def state_from_angles(circuit: Circuit, angles: Tensor, batched: Sequence[bool], dtype: torch.dtype,
                      adjoint: bool) -> Tensor:
    """Final states ``[B, 2**n]`` for resolved angles (the heart of every entry point)."""
    prog = F.compile_circuit(circuit)
    init, tensors = F.materialize(prog, angles, batched, dtype)
    if not prog.blocks:
        return F.product_state(init)
    return F.execute(prog, init, tensors, adjoint)


def statevector(circuit: Circuit, weights: Any = None, inputs: Any = None, dtype: torch.dtype = torch.complex128,
                device: Any = None, diff_method: str = "backprop") -> Tensor:
    """The state ``[B, 2**n]`` after ``circuit`` (``B = 1`` without batched inputs)."""
    _check_dtype(dtype)
    _check_method(diff_method)
    if diff_method == "parameter-shift":
        raise DiffMethodError("parameter-shift differentiates expectations, not states; use expval")
    angles, batched = resolve(circuit, weights, inputs, dtype, _device(weights, inputs, device))
    return state_from_angles(circuit, angles, batched, dtype, diff_method == "adjoint")


def expval(circuit: Circuit, observables: Sequence[M.Observable], weights: Any = None, inputs: Any = None,
           dtype: torch.dtype = torch.complex128, device: Any = None, diff_method: str = "adjoint") -> Tensor:
    """Expectation values ``[B, n_obs]`` of Pauli strings or Hamiltonians."""
    _check_dtype(dtype)
    _check_method(diff_method)
    obs = list(observables)
    if not obs:
        raise ShapeError("expval needs at least one observable")
    dev = _device(weights, inputs, device)
    angles, batched = resolve(circuit, weights, inputs, dtype, dev)
    n = circuit.n_wires
    for ob in obs:  # validate wires before any work
        _check_obs(ob, n)
    if diff_method == "parameter-shift":
        return ShiftRule.apply(circuit, tuple(obs), dtype, batched, angles)
    psi = state_from_angles(circuit, angles, batched, dtype, diff_method == "adjoint")
    return M.expval(psi, obs, n)


def _check_obs(ob: M.Observable, n: int) -> None:
    terms = ob.terms if isinstance(ob, M.Hamiltonian) else (ob,)
    for t in terms:
        if not isinstance(t, M.PauliString):
            raise M.ObservableError(f"observables must be PauliString or Hamiltonian, got {type(t).__name__}")
        M._check_wires(t, n)


def probs(circuit: Circuit, weights: Any = None, inputs: Any = None, wires: Sequence[int] | None = None,
          dtype: torch.dtype = torch.complex128, device: Any = None) -> Tensor:
    """Marginal probabilities ``[B, 2**len(wires)]`` (differentiable by backprop)."""
    psi = statevector(circuit, weights, inputs, dtype, device)
    return M.probs(psi, circuit.n_wires, wires)


def sample(circuit: Circuit, shots: int, weights: Any = None, inputs: Any = None,
           generator: torch.Generator | None = None, wires: Sequence[int] | None = None,
           dtype: torch.dtype = torch.complex128, device: Any = None) -> Tensor:
    """Samples ``[B, shots, len(wires)]`` of bits, drawn with ``generator`` (seed it for repeatability)."""
    with torch.no_grad():
        psi = statevector(circuit, weights, inputs, dtype, device)
    return M.sample(psi, circuit.n_wires, shots, generator, wires)


def counts(circuit: Circuit, shots: int, weights: Any = None, inputs: Any = None,
           generator: torch.Generator | None = None, wires: Sequence[int] | None = None,
           dtype: torch.dtype = torch.complex128, device: Any = None) -> list[dict[str, int]]:
    """Bitstring counts per batch row, e.g. ``[{"00": 512, "11": 512}]``."""
    with torch.no_grad():
        psi = statevector(circuit, weights, inputs, dtype, device)
    return M.counts(psi, circuit.n_wires, shots, generator, wires)


# --------------------------------------------------------------------------- parameter shift

#: at most this many amplitudes are simulated at once while evaluating shifted circuits
SHIFT_CHUNK_AMPLITUDES = 1 << 24


def _forward_expval(circuit: Circuit, obs: Sequence[M.Observable], dtype: torch.dtype, angles: Tensor,
                    batched: Sequence[bool]) -> Tensor:
    with torch.no_grad():
        psi = state_from_angles(circuit, angles, batched, dtype, adjoint=False)
        return M.expval(psi, obs, circuit.n_wires)


class ShiftRule(torch.autograd.Function):
    """Expectations whose backward evaluates each gate's parameter-shift rule.

    All shifted circuits of a backward pass are stacked into the batch dimension and
    simulated together (in chunks that bound memory).
    """

    @staticmethod
    def forward(ctx, circuit: Circuit, obs: tuple, dtype: torch.dtype, batched: tuple[bool, ...],  # type: ignore[override]
                angles: Tensor) -> Tensor:
        ctx.circuit, ctx.obs, ctx.dtype = circuit, obs, dtype
        ctx.save_for_backward(angles)
        return _forward_expval(circuit, obs, dtype, angles, batched)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (angles,) = ctx.saved_tensors
        circuit, obs, dtype = ctx.circuit, ctx.obs, ctx.dtype
        prog = F.compile_circuit(circuit)
        rules = []  # (slot, coeff, shift)
        for i, op in enumerate(circuit.ops):
            for j, s in enumerate(prog.slots[i]):
                for c, sh in op.gate.shift_rules[j]:
                    rules.append((s, c, sh))
        ba, p = angles.shape
        grad = torch.zeros_like(angles)
        if not rules:
            return None, None, None, None, grad
        per_chunk = max(1, SHIFT_CHUNK_AMPLITUDES // (ba * 2**circuit.n_wires))
        all_b = (True,) * p
        for lo in range(0, len(rules), per_chunk):
            part = rules[lo : lo + per_chunk]
            shifted = angles.detach().unsqueeze(0).repeat(len(part), 1, 1)
            for t, (s, _, sh) in enumerate(part):
                shifted[t, :, s] += sh
            vals = _forward_expval(circuit, obs, dtype, shifted.reshape(-1, p), all_b)
            vals = vals.reshape(len(part), -1, vals.shape[-1])  # [T, B, n_obs]
            rows = vals.shape[1]
            contrib = (vals * g.expand(rows, -1).unsqueeze(0)).sum(-1)  # [T, B]
            for t, (s, c, _) in enumerate(part):
                if ba == 1:
                    grad[0, s] += c * contrib[t].sum()
                else:
                    grad[:, s] += c * contrib[t]
        return None, None, None, None, grad
