"""Running a tinyqml circuit on Qiskit Aer under a tinyqml noise model, with shots.

:func:`aer_counts` converts the circuit with :func:`tinyqml.qml.to_qiskit`, measures
``wires`` (into classical bits ``0..k-1``), binds the weights and every input row in
one Aer job (``parameter_binds``) and runs it with
:meth:`NoiseModel.to_aer <tinyqml.noise.NoiseModel.to_aer>` — gate errors and, unless
``readout=False``, the model's readout errors. Counts come back in tinyqml's order:
``wires[0]`` is the *leftmost* bit of a key (Qiskit writes classical bit 0 rightmost).
:func:`aer_expectations` turns them into ``<Z>`` estimates per measured wire, what
a QuantumNAT classifier reads on a device. Qiskit is imported only when called;
without qiskit-aer both raise :class:`~tinyqml.qml.errors.InteropError`.

>>> import tinyqml.qml as tq
>>> from tinyqml.noise import NoiseModel, ReadoutError
>>> c = tq.CircuitBuilder(2).x(0).build()
>>> aer_counts(c, shots=100, seed=1)                   # wire 0 leftmost
[{'10': 100}]
>>> nm = NoiseModel().with_readout(0, ReadoutError(p0_given_1=1.0, p1_given_0=0.0))
>>> aer_expectations(c, noise_model=nm, shots=100, seed=1, wires=[0, 1])    # wire 0 always reads 0
tensor([[1., 1.]], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from tinyqml.noise.model import NoiseModel
from tinyqml.qml.circuit import Circuit
from tinyqml.qml.errors import InteropError, ShapeError, WireError

Tensor = torch.Tensor

__all__ = ["aer_counts", "aer_expectations"]


def _aer() -> Any:
    try:
        import qiskit_aer
    except ImportError as exc:
        raise InteropError("running on Qiskit Aer needs qiskit-aer: pip install 'tinyqml[interop]'") from exc
    return qiskit_aer


def _rows(inputs: Any, n_inputs: int) -> np.ndarray | None:
    if inputs is None:
        if n_inputs:
            raise ShapeError(f"the circuit reads {n_inputs} input feature(s); pass inputs [B, {n_inputs}]")
        return None
    x = np.asarray(inputs.detach().cpu() if isinstance(inputs, Tensor) else inputs, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] < n_inputs or x.shape[0] < 1:
        raise ShapeError(f"inputs must have shape [B >= 1, {n_inputs}], got {list(x.shape)}")
    return x


def aer_counts(circuit: Circuit, weights: Any = None, inputs: Any = None, noise_model: NoiseModel | None = None,
               shots: int = 1024, seed: int | None = None, wires: Sequence[int] | None = None,
               readout: bool = True, method: str = "density_matrix",
               options: Mapping[str, Any] | None = None) -> list[dict[str, int]]:
    """Counts per input row from Aer, keys with ``wires[0]`` leftmost (tinyqml order).

    Args:
        circuit: a tinyqml circuit (e.g. the output of :func:`tinyqml.qml.transpile`; wire
            ``i`` is Qiskit qubit ``i``, so a backend model's qubit numbers apply as they are).
        weights: the weight vector (``circuit.n_weights`` values).
        inputs: ``[B, n_inputs]`` feature rows (one experiment each) or ``None``.
        noise_model: a tinyqml :class:`~tinyqml.noise.NoiseModel` or ``None`` (ideal, shots only).
        shots: shots per row.
        seed: ``seed_simulator`` of Aer (same seed, same counts).
        wires: the measured wires (default all), in the order of the keys.
        readout: apply the model's readout errors.
        method: Aer's simulation method (``density_matrix`` suits few-qubit noisy circuits).
        options: further ``AerSimulator`` options (e.g. ``{"max_parallel_threads": 1}``).
    """
    aer = _aer()
    from tinyqml.qml.qiskit_convert import to_qiskit

    if not isinstance(circuit, Circuit):
        raise InteropError(f"aer_counts needs a tinyqml Circuit, got {type(circuit).__name__}")
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1:
        raise ShapeError(f"shots must be a positive integer, got {shots!r}")
    n = circuit.n_wires
    wires = list(range(n)) if wires is None else [int(w) for w in wires]
    if not wires or len(set(wires)) != len(wires) or any(not 0 <= w < n for w in wires):
        raise WireError(f"wires {wires} must be distinct wires of the {n}-wire circuit")
    if noise_model is not None and not isinstance(noise_model, NoiseModel):
        raise InteropError(f"noise_model must be a tinyqml NoiseModel, got {type(noise_model).__name__}")
    x = _rows(inputs, circuit.n_inputs)
    w = None
    if circuit.n_weights:
        if weights is None:
            raise ShapeError(f"the circuit has {circuit.n_weights} weight(s); pass weights")
        w = np.asarray(weights.detach().cpu() if isinstance(weights, Tensor) else weights,
                       dtype=np.float64).reshape(-1)
        if w.size < circuit.n_weights:
            raise ShapeError(f"the circuit has {circuit.n_weights} weights, got {w.size}")

    from qiskit import ClassicalRegister

    qc, pmap = to_qiskit(circuit)
    creg = ClassicalRegister(len(wires), "m")
    qc.add_register(creg)
    for j, q in enumerate(wires):
        qc.measure(q, creg[j])

    aer_model = None
    if noise_model is not None:
        model = noise_model if readout else NoiseModel(noise_model.rules, (), noise_model.name)
        if model.rules or model.readout:
            aer_model = model.to_aer()
    sim = aer.AerSimulator(noise_model=aer_model, method=method, seed_simulator=seed, **dict(options or {}))

    rows = 1 if x is None else x.shape[0]
    by_name = {p.name: p for p in qc.parameters}
    binds: dict[Any, list[float]] = {}
    for name, kind, index in pmap.entries:
        if kind == "weight":
            binds[by_name[name]] = [float(w[index])] * rows  # type: ignore[index]
        else:
            binds[by_name[name]] = x[:, index].tolist()  # type: ignore[index]
    if binds:
        result = sim.run(qc, shots=shots, parameter_binds=[binds]).result()
        raw = [result.get_counts(i) for i in range(rows)] if rows > 1 else [result.get_counts(0)]
    else:
        result = sim.run([qc] * rows, shots=shots).result()
        raw = [result.get_counts(i) for i in range(rows)]
    return [{key.replace(" ", "")[::-1]: int(v) for key, v in cnt.items()} for cnt in raw]


def aer_expectations(circuit: Circuit, weights: Any = None, inputs: Any = None,
                     noise_model: NoiseModel | None = None, shots: int = 1024, seed: int | None = None,
                     wires: Sequence[int] | None = None, readout: bool = True, method: str = "density_matrix",
                     options: Mapping[str, Any] | None = None) -> Tensor:
    """``<Z>`` estimates ``[B, len(wires)]`` (float64) from :func:`aer_counts`: on each
    measured wire the mean of ``+1`` (read 0) and ``-1`` (read 1) over the shots.

    >>> import tinyqml.qml as tq
    >>> c = tq.CircuitBuilder(1).ry(0, tq.feature(0)).build()
    >>> aer_expectations(c, inputs=[[0.0], [3.14159265]], shots=50, seed=0)
    tensor([[ 1.],
            [-1.]], dtype=torch.float64)
    """
    counts = aer_counts(circuit, weights, inputs, noise_model, shots, seed, wires, readout, method, options)
    k = len(next(iter(counts[0])))
    out = np.zeros((len(counts), k))
    for b, cnt in enumerate(counts):
        total = 0
        for key, v in cnt.items():
            bits = np.frombuffer(key.encode(), dtype=np.uint8).astype(np.int64) - ord("0")
            out[b] += v * (1 - 2 * bits)
            total += v
        out[b] /= total
    return torch.from_numpy(out)
