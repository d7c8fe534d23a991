"""Public density-matrix entry points: states, expectations, probabilities, samples.

The pipeline mirrors :mod:`tinyqml.qml.simulate`::

    resolve angles -> insert the noise model's channels -> compile (cached)
    -> |0><0| -> apply fused superoperator blocks -> measure (-> readout error)

Everything is batched over input rows and differentiable by backpropagation.

>>> import torch, tinyqml.qml as tq
>>> from tinyqml.noise import NoiseModel, Depolarizing, density_matrix, expval
>>> bell = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
>>> nm = NoiseModel().add("CX", Depolarizing(0.1, 2))
>>> density_matrix(bell, nm).shape
torch.Size([1, 4, 4])
>>> expval(bell, [tq.Z(0) @ tq.Z(1)], nm).round(decimals=6)      # 1 - p
tensor([[0.9000]], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from tinyqml.noise import fusion as F
from tinyqml.noise import kernels as K
from tinyqml.noise import measure as M
from tinyqml.noise.model import NoiseModel, NoisyCircuit, as_noisy
from tinyqml.qml import measure as QM
from tinyqml.qml.circuit import Circuit
from tinyqml.qml.errors import ShapeError, WireError
from tinyqml.qml.params import resolve
from tinyqml.qml.simulate import _check_dtype, _device

Tensor = torch.Tensor

#: density matrices keep 4**n amplitudes per row; beyond this many wires they are refused
MAX_WIRES = 14

CircuitLike = Circuit | NoisyCircuit


def _check_size(n: int) -> None:
    if n > MAX_WIRES:
        gib = 16 * 4 ** n / 2 ** 30
        raise WireError(f"a density matrix on {n} wires holds 4**{n} amplitudes ({gib:.0f} GiB per row in "
                        f"complex128); accepted: at most {MAX_WIRES} wires (use trajectories beyond)")


def vectorized_state(circuit: CircuitLike, noise_model: NoiseModel | None = None, weights: Any = None,
                     inputs: Any = None, dtype: torch.dtype = torch.complex128, device: Any = None) -> Tensor:
    """The final density matrices in the ququart layout ``[B, 4**n]`` (see :mod:`~tinyqml.noise.kernels`)."""
    _check_dtype(dtype)
    noisy = as_noisy(circuit, noise_model)
    _check_size(noisy.n_wires)
    angles, batched = resolve(noisy.circuit, weights, inputs, dtype, _device(weights, inputs, device))
    prog = F.compile_noisy(noisy)
    return F.run(prog, angles, batched, dtype)


def density_matrix(circuit: CircuitLike, noise_model: NoiseModel | None = None, weights: Any = None,
                   inputs: Any = None, dtype: torch.dtype = torch.complex128, device: Any = None) -> Tensor:
    """The density matrices ``[B, 2**n, 2**n]`` after ``circuit`` under ``noise_model``
    (``B = 1`` without batched inputs), wire 0 the most significant bit as in
    :func:`tinyqml.qml.statevector`. ``circuit`` may also be a :class:`NoisyCircuit`."""
    vec = vectorized_state(circuit, noise_model, weights, inputs, dtype, device)
    return K.to_matrix(vec, _n(circuit))


def _n(circuit: CircuitLike) -> int:
    return circuit.n_wires


def _readout_model(circuit: CircuitLike, noise_model: NoiseModel | None, readout: Any) -> NoiseModel | None:
    """The model whose readout errors apply: ``readout=True`` uses ``noise_model``'s,
    a NoiseModel uses its own, ``False``/``None`` none."""
    if isinstance(readout, NoiseModel):
        return readout
    if readout is True:
        return noise_model
    if readout is False or readout is None:
        return None
    raise ShapeError(f"readout must be True, False or a NoiseModel, got {readout!r}")


def _measured(p: Tensor, n: int, wires: Sequence[int] | None, model: NoiseModel | None) -> Tensor:
    wires = list(range(n)) if wires is None else [int(w) for w in wires]
    p = M.marginal(p, n, wires)
    if model is not None and model.readout:
        errs = model.readout_errors(wires)
        if any(e is not None for e in errs):
            p = M.apply_readout(p, errs)
    return p


def expval(circuit: CircuitLike, observables: Sequence[QM.Observable], noise_model: NoiseModel | None = None,
           weights: Any = None, inputs: Any = None, dtype: torch.dtype = torch.complex128, device: Any = None,
           readout: Any = False) -> Tensor:
    """Expectations ``Tr(O rho)`` ``[B, n_obs]``.

    ``readout=True`` gives instead what Z-basis measurements report through the model's
    readout errors (diagonal observables only).
    """
    obs = list(observables)
    if not obs:
        raise ShapeError("expval needs at least one observable")
    vec = vectorized_state(circuit, noise_model, weights, inputs, dtype, device)
    n = _n(circuit)
    model = _readout_model(circuit, noise_model, readout)
    if model is None or not model.readout:
        return M.expval(vec, obs, n)
    table = QM.diagonal_matrix(obs, n, vec.device, vec.real.dtype)
    if table is None:
        raise QM.ObservableError("readout errors apply to Z-basis measurements: with readout=True every "
                                 "observable must be a product of I and Z")
    return _measured(M.diagonal(vec, n), n, None, model) @ table


def probs(circuit: CircuitLike, noise_model: NoiseModel | None = None, weights: Any = None, inputs: Any = None,
          wires: Sequence[int] | None = None, dtype: torch.dtype = torch.complex128, device: Any = None,
          readout: Any = True) -> Tensor:
    """Measured probabilities ``[B, 2**len(wires)]``, through the model's readout errors
    unless ``readout=False``."""
    vec = vectorized_state(circuit, noise_model, weights, inputs, dtype, device)
    n = _n(circuit)
    return _measured(M.diagonal(vec, n), n, wires, _readout_model(circuit, noise_model, readout))


def sample(circuit: CircuitLike, shots: int, noise_model: NoiseModel | None = None, weights: Any = None,
           inputs: Any = None, generator: torch.Generator | None = None, wires: Sequence[int] | None = None,
           dtype: torch.dtype = torch.complex128, device: Any = None, readout: Any = True) -> Tensor:
    """Samples ``[B, shots, len(wires)]`` of measured bits, drawn with ``generator``."""
    with torch.no_grad():
        p = probs(circuit, noise_model, weights, inputs, wires, dtype, device, readout)
    return M.sample(p, shots, generator)


def counts(circuit: CircuitLike, shots: int, noise_model: NoiseModel | None = None, weights: Any = None,
           inputs: Any = None, generator: torch.Generator | None = None, wires: Sequence[int] | None = None,
           dtype: torch.dtype = torch.complex128, device: Any = None, readout: Any = True) -> list[dict[str, int]]:
    """Bitstring counts per row, first wire leftmost (as PennyLane; Qiskit's keys are reversed)."""
    s = sample(circuit, shots, noise_model, weights, inputs, generator, wires, dtype, device, readout).cpu()
    out = []
    k = s.shape[-1]
    weights_ = 2 ** torch.arange(k - 1, -1, -1)
    for b in range(s.shape[0]):
        idx = (s[b] * weights_).sum(-1)
        vals, cnt = torch.unique(idx, return_counts=True)
        out.append({format(int(v), f"0{k}b"): int(c) for v, c in zip(vals, cnt)})
    return out
