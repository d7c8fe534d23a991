"""``QuantumLayer``: a variational circuit as a ``torch.nn.Module``.

>>> import torch, tinyqml.qml as tq
>>> c = tq.CircuitBuilder(2).ry(0, tq.feature(0)).ry(1, tq.feature(1)).cx(0, 1).rx(1, tq.weight(0)).build()
>>> layer = QuantumLayer(c, [tq.Z(0), tq.Z(1)], seed=0)
>>> layer(torch.rand(5, 2)).shape
torch.Size([5, 2])
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from tinyqml.qml import measure as M
from tinyqml.qml.circuit import Circuit
from tinyqml.qml.simulate import DIFF_METHODS, _check_dtype, _check_method, expval


class QuantumLayer(nn.Module):
    """Circuit + observables; ``forward(x)`` returns ``[B, n_obs]`` expectations.

    Args:
        circuit: the circuit; its weight references become one ``nn.Parameter``.
        observables: Pauli strings / Hamiltonians measured at the end.
        diff_method: ``"adjoint"`` (default), ``"backprop"`` or ``"parameter-shift"``.
        dtype: ``torch.complex128`` (default) or ``torch.complex64``.
        init_scale: weights start uniform in ``[0, init_scale)`` (default 2π).
        seed: seed of the explicit generator used for the initial weights.
    """

    def __init__(self, circuit: Circuit, observables: Sequence[M.Observable], diff_method: str = "adjoint",
                 dtype: torch.dtype = torch.complex128, init_scale: float = 2 * math.pi, seed: int = 0) -> None:
        super().__init__()
        _check_dtype(dtype)
        _check_method(diff_method)
        if not isinstance(circuit, Circuit):
            raise TypeError(f"QuantumLayer needs a tinyqml Circuit, got {type(circuit).__name__}")
        self.circuit = circuit
        self.observables = tuple(observables)
        self.diff_method = diff_method
        rdtype = torch.float64 if dtype == torch.complex128 else torch.float32
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.Parameter(torch.rand(circuit.n_weights, generator=gen, dtype=rdtype) * init_scale)

    @property
    def dtype(self) -> torch.dtype:
        """Complex dtype of the simulation, following the weights (``.double()`` switches to complex128)."""
        return torch.complex128 if self.weights.dtype == torch.float64 else torch.complex64

    @property
    def n_outputs(self) -> int:
        return len(self.observables)

    def forward(self, x: torch.Tensor | None = None) -> torch.Tensor:
        if x is not None:
            x = x.to(self.weights.dtype)
        return expval(self.circuit, self.observables, weights=self.weights, inputs=x, dtype=self.dtype,
                      device=self.weights.device, diff_method=self.diff_method)

    def extra_repr(self) -> str:
        return (f"{self.circuit!r}, observables={len(self.observables)}, diff_method={self.diff_method!r}, "
                f"dtype={self.dtype}")


__all__ = ["QuantumLayer", "DIFF_METHODS"]
