"""``tinyqml.mixed``: a PennyLane device (new ``pennylane.devices.Device`` API) on tinyqml's
density-matrix simulator, a drop-in for ``default.mixed``.

Registered under the ``pennylane.plugins`` entry point, so after installing tinyqml:

>>> import pennylane as qml
>>> dev = qml.device("tinyqml.mixed", wires=2, seed=1234)
>>> @qml.qnode(dev)
... def circuit(gamma):
...     qml.X(0)
...     qml.AmplitudeDamping(gamma, wires=0)
...     qml.CNOT([0, 1])
...     return qml.expval(qml.Z(1)), qml.probs(wires=[0])
>>> e, p = circuit(0.25)
>>> round(float(e), 6), p.round(6).tolist()
(-0.5, [0.25, 0.75])

What it does:

- Gates are translated into a tinyqml circuit as for ``tinyqml.qubit``
  (:mod:`tinyqml.qml.pennylane_ops`); PennyLane's channels (``DepolarizingChannel``,
  ``AmplitudeDamping``, ``GeneralizedAmplitudeDamping``, ``PhaseDamping``, ``BitFlip``,
  ``PhaseFlip``, ``ThermalRelaxationError``, ``PauliError``, ``ResetError``,
  ``QubitChannel``, any other ``qml.operation.Channel``) become
  :class:`~tinyqml.noise.model.ChannelOp` steps built from PennyLane's own Kraus
  matrices, so conventions are PennyLane's by construction. ``QubitDensityMatrix``
  replaces the state of its wires (on at most :data:`MAX_DENSITY_WIRES` wires).
  The whole tape is one :class:`~tinyqml.noise.model.NoisyCircuit`, fused and run by
  :func:`tinyqml.noise.simulate.vectorized_state`.
- Parameter broadcasting runs as one batch (broadcast gate angles become tinyqml
  ``feature`` references); only a tape whose *channels* or *matrices* (QubitUnitary)
  are broadcast is split into one tape per row.
- Measurements on the density matrix: expval/var of any observable with a Pauli
  representation or a matrix, probs, ``qml.state()`` (the density matrix, as
  ``default.mixed``), density_matrix, purity, vn_entropy, mutual_info and other state
  measurements analytically; expval/var/probs/sample/counts with finite shots (and shot
  vectors), sampled with a seeded ``torch.Generator``.
- Derivatives by backprop (``diff_method="backprop"`` or ``"best"``) under torch (torch
  tensors in and out, trainable channel parameters and trainable unitaries included) and,
  through one autograd primitive, under autograd. With shots ``"best"`` means parameter
  shift, done by PennyLane.

Mid-circuit measurements run through ``mcm_method="deferred"``. This module imports
PennyLane; ``import tinyqml.noise`` does not.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pennylane as qml
import torch
from pennylane.devices import Device, ExecutionConfig
from pennylane.devices.modifiers import simulator_tracking, single_tape_support
from pennylane.devices.preprocess import (
    decompose,
    device_resolve_dynamic_wires,
    no_sampling,
    validate_device_wires,
    validate_measurements,
    validate_observables,
)
from pennylane.math import Interface
from pennylane.measurements import (
    DensityMatrixMP,
    ExpectationMP,
    MeasurementProcess,
    ProbabilityMP,
    StateMP,
    VarianceMP,
)
from pennylane.ops.channel import __qubit_channels__ as PL_CHANNELS
from pennylane.tape import QuantumScript
from pennylane.transforms import defer_measurements
from pennylane.transforms.core import CompilePipeline, transform
from pennylane.wires import Wires

from tinyqml.noise import channels as C
from tinyqml.noise import kernels as K
from tinyqml.noise import measure as NM
from tinyqml.noise.errors import NotCPTPError
from tinyqml.noise.model import ChannelOp, NoisyCircuit
from tinyqml.noise.simulate import vectorized_state
from tinyqml.qml import measure as QM
from tinyqml.qml import pennylane_derivatives as PD
from tinyqml.qml import pennylane_measure as PM
from tinyqml.qml import pennylane_ops as PO
from tinyqml.qml.errors import WireError
from tinyqml.qml.pennylane_device import (
    _analytic_measurement,
    _obs_analytic,
    _obs_sampled,
    _sample_measurement,
    backprop_ok,
)
from tinyqml.qml.pennylane_ops import TinyQMLDeviceError, as_real_tensor

__all__ = ["TinyQMLMixed", "DeviceWireError", "translate", "analytic", "sampled", "channel_of"]

Tensor = torch.Tensor

DEVICE_NAME = "tinyqml.mixed"

#: ``QubitDensityMatrix`` becomes a replacement channel with up to ``4**k`` Kraus operators
MAX_DENSITY_WIRES = 4

#: noisy circuits (and channels) kept so that repeated runs reuse their compiled programs
CACHE_SIZE = 256

#: PennyLane names the device runs natively (the target set of graph decompositions)
GATE_NAMES = frozenset(PO.GATE_NAMES) | frozenset(PL_CHANNELS) | {"QubitDensityMatrix"}

#: PennyLane channels whose parameters are scalars (all but QubitChannel's Kraus matrices)
SCALAR_CHANNELS = frozenset(PL_CHANNELS) - {"QubitChannel"}


class DeviceWireError(TinyQMLDeviceError, WireError, qml.wires.WireError):
    """An operation on a wire the device does not have (tinyqml's and PennyLane's WireError)."""


# --------------------------------------------------------------------------- support checks


def _trainable(op: qml.operation.Operator) -> bool:
    return any(qml.math.requires_grad(d) for d in op.data)


def _dense_unitary(op: qml.operation.Operator) -> bool:
    """A trainable or broadcast matrix (``QubitUnitary``, ...): run as a one-Kraus channel."""
    special = op.name in PO.DIRECT or op.name in PO.BUILDERS or op.name in PO.IGNORED
    constant = op.batch_size is None and not _trainable(op)
    return not special and not constant and PO.is_supported(op)


def becomes_channel(op: qml.operation.Operator) -> bool:
    """Whether ``op`` runs as a :class:`~tinyqml.noise.model.ChannelOp` (channels,
    ``QubitDensityMatrix``, trainable or broadcast unitaries)."""
    return isinstance(op, (qml.operation.Channel, qml.QubitDensityMatrix)) or _dense_unitary(op)


def is_supported(op: qml.operation.Operator) -> bool:
    """Whether the device runs ``op`` itself (otherwise PennyLane decomposes it)."""
    return isinstance(op, (qml.operation.Channel, qml.QubitDensityMatrix)) or PO.is_supported(op)


@transform
def expand_broadcast_channels(tape: QuantumScript) -> tuple[Sequence[QuantumScript], Any]:
    """Split a broadcast tape into one tape per row when a matrix (``QubitUnitary``) is
    broadcast (tinyqml channels hold one set of Kraus operators); broadcast gate angles
    stay one batch."""
    if tape.batch_size is None or not any(becomes_channel(op) and op.batch_size is not None
                                          for op in tape.operations):
        return (tape,), lambda results: results[0]
    return qml.transforms.broadcast_expand(tape)


@transform
def validate_operation_wires(tape: QuantumScript, wires: Wires | None, name: str) -> tuple[Sequence[QuantumScript], Any]:
    """Raise :class:`DeviceWireError` naming the operation (a channel, a gate) that acts on a
    wire the device lacks."""
    if wires is not None:
        for op in tape.operations:
            extra = [w for w in op.wires if w not in wires]
            if extra:
                raise DeviceWireError(f"{op.name} acts on wire(s) {extra}, which {name} does not have; "
                                      f"accepted: the device wires {wires.tolist()}")
    return (tape,), lambda results: results[0]


# --------------------------------------------------------------------------- channels


def _kraus_tensor(k: Any) -> Tensor:
    """A Kraus matrix as ``complex128`` torch (torch tensors keep their autograd graph)."""
    if isinstance(k, Tensor):
        return k.to(torch.complex128)
    return torch.as_tensor(np.asarray(qml.math.unwrap(k), dtype=np.complex128))


def _replacement_kraus(op: qml.QubitDensityMatrix) -> list[Tensor]:
    """Kraus operators ``sqrt(l_i) |v_i><j|`` of ``rho -> Tr(rho) sigma`` on the op's wires."""
    k = len(op.wires)
    if k > MAX_DENSITY_WIRES:
        raise TinyQMLDeviceError(f"QubitDensityMatrix on {k} wires is not supported by {DEVICE_NAME}; "
                                 f"accepted: at most {MAX_DENSITY_WIRES} wires")
    if _trainable(op):
        raise TinyQMLDeviceError(f"QubitDensityMatrix with a trainable density matrix is not supported by "
                                 f"{DEVICE_NAME}; accepted: constant density matrices (train gates or channels)")
    sigma = torch.as_tensor(np.asarray(qml.math.unwrap(op.data[0]), dtype=np.complex128))
    evals, evecs = torch.linalg.eigh((sigma + sigma.conj().T) / 2)
    eye = torch.eye(2**k, dtype=torch.complex128)
    return [float(lam) ** 0.5 * torch.outer(evecs[:, i], eye[j])
            for i, lam in enumerate(evals.tolist()) if lam > 1e-14 for j in range(2**k)]


def channel_of(op: qml.operation.Operator) -> C.Channel:
    """The tinyqml channel of a PennyLane channel, ``QubitDensityMatrix`` or (trainable) unitary.

    Kraus matrices come from PennyLane itself (``op.kraus_matrices()``, ``qml.matrix``), so
    torch parameters that require grad give a differentiable channel.

    >>> ch = channel_of(qml.AmplitudeDamping(0.36, wires=0))
    >>> ch.n_wires, ch.kraus[1].real
    (1, tensor([[0.0000, 0.6000],
            [0.0000, 0.0000]], dtype=torch.float64))
    """
    _check_unbroadcast(op)
    if isinstance(op, qml.QubitDensityMatrix):
        ops = _replacement_kraus(op)
    elif isinstance(op, qml.operation.Channel):
        ops = [_kraus_tensor(k) for k in _pennylane_kraus(op)]
    else:
        ops = [_kraus_tensor(qml.matrix(op, wire_order=op.wires))]
    try:
        with warnings.catch_warnings():  # the CPTP check reads floats off tensors that may require grad
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
            return C.Channel(op.name, tuple(ops), len(op.wires))
    except NotCPTPError as exc:
        raise TinyQMLDeviceError(f"{op.name} on wires {op.wires.tolist()} is not a channel: {exc}") from exc


def _check_unbroadcast(op: qml.operation.Operator) -> None:
    """Raise for broadcast channel parameters (PennyLane's channels do not broadcast; a
    broadcast unitary reaches the device split into one tape per row by its preprocessing)."""
    if isinstance(op, qml.QubitDensityMatrix):
        broadcast = qml.math.ndim(op.data[0]) != 2
    elif op.name in SCALAR_CHANNELS:
        broadcast = any(qml.math.ndim(d) for d in op.data)
    else:
        broadcast = op.batch_size is not None
    if broadcast:
        raise TinyQMLDeviceError(f"{op.name} with broadcast parameters is not supported by {DEVICE_NAME} "
                                 "(PennyLane's channels do not broadcast); accepted: one value per channel "
                                 "parameter (broadcast gate angles instead, or run one circuit per value)")


def _pennylane_kraus(op: qml.operation.Channel) -> list:
    """``op.kraus_matrices()``; a trainable channel whose Kraus matrices PennyLane cannot
    build in torch (``ThermalRelaxationError``) raises :class:`TinyQMLDeviceError`."""
    if not _trainable(op):
        return op.kraus_matrices()
    try:
        return op.kraus_matrices()
    except (RuntimeError, TypeError, ValueError) as exc:
        raise TinyQMLDeviceError(
            f"{op.name} with trainable parameters cannot be differentiated by {DEVICE_NAME}: PennyLane does not "
            f"build its Kraus matrices from torch tensors that require grad ({type(exc).__name__}: {exc}); "
            f"accepted: constant {op.name} parameters, or trainable parameters of DepolarizingChannel, "
            "AmplitudeDamping, GeneralizedAmplitudeDamping, PhaseDamping, BitFlip, PhaseFlip, PauliError, "
            "ResetError or QubitChannel") from exc


def _channel_key(op: qml.operation.Operator) -> tuple | None:
    """A key that determines ``op``'s channel (``None``: trainable, never cached)."""
    if _trainable(op):
        return None
    data = tuple((a.dtype.str, a.shape, a.tobytes()) for a in (np.asarray(qml.math.unwrap(d)) for d in op.data))
    return (type(op).__qualname__, op.name, len(op.wires), repr(op.hyperparameters), data)


_CHANNELS: "OrderedDict[tuple, C.Channel]" = OrderedDict()
_NOISY: "OrderedDict[tuple, NoisyCircuit]" = OrderedDict()


def _remember(cache: OrderedDict, key: Any, value: Any) -> Any:
    cache[key] = value
    if len(cache) > CACHE_SIZE:
        cache.popitem(last=False)
    return value


def cached_channel(op: qml.operation.Operator) -> tuple[C.Channel, tuple | None]:
    """``(channel, key)``: a constant channel seen before is reused; trainable ones have key ``None``."""
    key = _channel_key(op)
    if key is None:
        return channel_of(op), None
    hit = _CHANNELS.get(key)
    if hit is not None:
        _CHANNELS.move_to_end(key)
        return hit, key
    return _remember(_CHANNELS, key, channel_of(op)), key


# --------------------------------------------------------------------------- translation


@dataclass(frozen=True)
class NoisyTranslation:
    """A tape's operations as a tinyqml noisy circuit plus the values its references read."""

    noisy: NoisyCircuit
    weights: Tensor | None
    inputs: Tensor | None


def _noisy_circuit(circuit: Any, steps: list, keys: list) -> NoisyCircuit:
    """The noisy circuit of ``steps``; with constant channels only, an equal one seen before
    (whose compiled program is cached on it) is returned."""
    if any(k is None for k in keys):
        return NoisyCircuit(circuit, tuple(steps))
    key = (circuit, tuple(keys))
    hit = _NOISY.get(key)
    if hit is not None:
        _NOISY.move_to_end(key)
        return hit
    return _remember(_NOISY, key, NoisyCircuit(circuit, tuple(steps)))


def translate(operations: Sequence[qml.operation.Operator], wire_order: Sequence[Any],
              batch_size: int | None, rdtype: torch.dtype = torch.float64) -> NoisyTranslation:
    """Translate a tape's operations (on ``wire_order``) into a tinyqml noisy circuit.

    >>> t = translate([qml.H(0), qml.BitFlip(0.1, 1), qml.CNOT([0, 1])], [0, 1], None)
    >>> [s if isinstance(s, int) else s.channel.name for s in t.noisy.steps]
    [0, 'BitFlip', 1]
    """
    wire_map = {w: i for i, w in enumerate(wire_order)}
    table = PO.ParamTable(batch_size)
    ops: list = []
    steps: list = []
    keys: list = []
    for i, op in enumerate(operations):
        wires = tuple(wire_map[w] for w in op.wires)
        if becomes_channel(op):
            channel, key = cached_channel(op)
            steps.append(ChannelOp(channel, wires))
            keys.append(None if key is None else (key, wires))
            continue
        if isinstance(op, qml.operation.StatePrepBase):
            if i:
                raise TinyQMLDeviceError(f"{op.name} is supported as the first operation only, found at position {i}")
            new = PO.state_prep_ops(op, wire_map, max(len(wire_map), 1), table)
        else:
            new = PO._ops_for(op, wires, table)
        for o in new:
            steps.append(len(ops))
            keys.append(len(ops))
            ops.append(o)
    circuit = PO.cached_circuit(max(len(wire_map), 1), ops)
    weights, inputs = table.tensors(rdtype)
    return NoisyTranslation(_noisy_circuit(circuit, steps, keys), weights, inputs)


# --------------------------------------------------------------------------- states


def _complex(m: Any, like: Tensor) -> Tensor:
    if isinstance(m, Tensor):
        return m.to(device=like.device, dtype=like.dtype)
    return torch.as_tensor(np.asarray(qml.math.unwrap(m), dtype=np.complex128)).to(like.device, like.dtype)


def _matrix(op: qml.operation.Operator) -> Any:
    if op.has_matrix:
        return qml.matrix(op, wire_order=op.wires)
    return op.sparse_matrix(wire_order=op.wires).toarray()


def rotate(vec: Tensor, gates: Sequence[qml.operation.Operator], wire_map: dict, n: int) -> Tensor:
    """``U rho U^dagger`` for each PennyLane gate ``U`` (applied as its matrix), in the ququart layout."""
    for g in gates:
        u = _complex(qml.matrix(g, wire_order=g.wires), vec).unsqueeze(0)
        vec = K.apply_superop(vec, K.unitary_superop(u, len(g.wires)), [wire_map[w] for w in g.wires], n)
    return vec


def reduced(vec: Tensor, wires: Sequence[int], n: int) -> Tensor:
    """The reduced density matrices ``[B, 2**k, 2**k]`` on wire indices ``wires`` (in that order).

    >>> rho = torch.zeros(1, 4, 4, dtype=torch.complex128); rho[0, 3, 3] = 1      # |11><11|
    >>> reduced(K.to_vector(rho, 2), [1], 2)[0].real
    tensor([[0., 0.],
            [0., 1.]], dtype=torch.float64)
    """
    b = vec.shape[0]
    t = vec.reshape((b,) + (4,) * n)
    diag = torch.tensor([0, 3], device=vec.device)
    for w in sorted((w for w in range(n) if w not in wires), reverse=True):
        t = t.index_select(1 + w, diag).sum(1 + w)
    kept = sorted(wires)
    t = t.permute([0] + [1 + kept.index(w) for w in wires])
    return K.to_matrix(t.reshape(b, 4 ** len(wires)), len(wires))


# --------------------------------------------------------------------------- analytic measurements


def _trace(m: Tensor, rho: Tensor) -> Tensor:
    """``Re Tr(m rho)`` ``[B]`` for ``m [d, d]`` and ``rho [B, d, d]``."""
    return (m.unsqueeze(0) * rho.transpose(1, 2)).sum((1, 2)).real


def pauli_expvals(sentences: Sequence[Any], vec: Tensor, wire_map: dict, n: int) -> list[Tensor]:
    """``Tr(S rho)`` ``[B]`` of PennyLane PauliSentences, every term in one tinyqml call
    (coefficients may be torch tensors: trainable Hamiltonian coefficients)."""
    rdtype = vec.real.dtype
    words = [list(s) for s in sentences]
    strings = [QM.PauliString("".join(w.values()), tuple(wire_map[q] for q in w)) for ws in words for w in ws]
    vals = NM.expval(vec, strings, n) if strings else None
    out, pos = [], 0
    for s, ws in zip(sentences, words):
        if not ws:
            out.append(torch.zeros(vec.shape[0], dtype=rdtype, device=vec.device))
            continue
        coeffs = torch.stack([as_real_tensor(s[w], rdtype) for w in ws]).to(vec.device)
        out.append(vals[:, pos: pos + len(ws)] @ coeffs)  # type: ignore[index]
        pos += len(ws)
    return out


def expval(obs: qml.operation.Operator, vec: Tensor, wire_map: dict, n: int) -> Tensor:
    """``Tr(O rho)`` ``[B]``: Pauli sentences through tinyqml, anything else by its matrix
    on the reduced density matrix of its wires."""
    if obs.pauli_rep is not None:
        return pauli_expvals([obs.pauli_rep], vec, wire_map, n)[0]
    rho = reduced(vec, [wire_map[w] for w in obs.wires], n)
    return _trace(_complex(_matrix(obs), rho), rho)


def var(obs: qml.operation.Operator, vec: Tensor, wire_map: dict, n: int) -> Tensor:
    """``Tr(O^2 rho) - Tr(O rho)^2`` ``[B]``; a Pauli word needs no matrix: ``c^2 (Tr(rho) - <P>^2)``
    (``Tr(rho)``, not 1, so that gradients w.r.t. unconstrained trainable matrices match
    ``default.mixed``'s)."""
    sentence = obs.pauli_rep
    if sentence is not None and len(sentence) == 1:
        (word, c), = sentence.items()
        if not word:
            return torch.zeros(vec.shape[0], dtype=vec.real.dtype, device=vec.device)
        e = pauli_expvals([qml.pauli.PauliSentence({word: 1.0})], vec, wire_map, n)[0]
        trace = NM.diagonal(vec, n).sum(1)
        return as_real_tensor(c, vec.real.dtype).to(vec.device) ** 2 * (trace - e**2)
    rho = reduced(vec, [wire_map[w] for w in obs.wires], n)
    m = _complex(_matrix(obs), rho)
    return _trace(m @ m, rho) - _trace(m, rho) ** 2


def probs(mp: ProbabilityMP, vec: Tensor, wire_map: dict, n: int) -> Tensor:
    """Marginal probabilities ``[B, 2**k]`` (in the eigenbasis of ``mp.obs`` when it has one)."""
    if mp.obs is not None:
        vec = rotate(vec, mp.obs.diagonalizing_gates(), wire_map, n)
    wires = [wire_map[w] for w in mp.wires] if len(mp.wires) else None
    return NM.marginal(NM.diagonal(vec, n), n, wires)


def _measure(mp: MeasurementProcess, vec: Tensor, wire_map: dict, n: int) -> Tensor | None:
    """Expval/var/probs ``[B, ...]`` (``None``: not one of these)."""
    if isinstance(mp, ExpectationMP) and mp.obs is not None:
        return expval(mp.obs, vec, wire_map, n)
    if isinstance(mp, VarianceMP) and mp.obs is not None:
        return var(mp.obs, vec, wire_map, n)
    if isinstance(mp, ProbabilityMP) and mp.mv is None:
        return probs(mp, vec, wire_map, n)
    return None


def _state_measurement(mp: MeasurementProcess, vec: Tensor, wire_order: Wires, batched: bool) -> Any:
    """Any other measurement from the density matrix; ``qml.state()`` is the density matrix
    of its wires (all device wires by default), as on ``default.mixed``."""
    if isinstance(mp, StateMP) and not isinstance(mp, DensityMatrixMP):
        mp = DensityMatrixMP(wires=mp.wires if len(mp.wires) else wire_order)
    rho = K.to_matrix(vec, len(wire_order))
    return mp.process_density_matrix(rho if batched else rho[0], wire_order)


def analytic(measurements: Sequence[MeasurementProcess], vec: Tensor, wire_order: Wires,
             batched: bool) -> list[Any]:
    """Every measurement's exact result from ``vec [B, 4**n]`` (torch, differentiable).

    >>> vec = K.to_vector(torch.eye(2, dtype=torch.complex128).unsqueeze(0) / 2, 1)   # I/2
    >>> [r.tolist() for r in analytic([qml.expval(qml.X(0)), qml.probs(wires=[0])], vec, Wires([0]), False)]
    [0.0, [0.5, 0.5]]
    """
    wire_map = {w: i for i, w in enumerate(wire_order)}
    n = len(wire_order)
    out: list[Any] = [None] * len(measurements)
    pauli = [i for i, mp in enumerate(measurements)
             if isinstance(mp, ExpectationMP) and mp.obs is not None and mp.obs.pauli_rep is not None]
    for i, val in zip(pauli, pauli_expvals([measurements[i].obs.pauli_rep for i in pauli], vec, wire_map, n)):
        out[i] = val
    for i, mp in enumerate(measurements):
        if out[i] is None:
            out[i] = _measure(mp, vec, wire_map, n)
        if out[i] is None:
            out[i] = _state_measurement(mp, vec, wire_order, batched)
        elif not batched:
            out[i] = out[i][0]
    return out


# --------------------------------------------------------------------------- finite shots


def sampled(measurements: Sequence[MeasurementProcess], vec: Tensor, wire_order: Wires, shots: Any,
            batched: bool, generator: torch.Generator) -> list[list[Any]]:
    """Per shot bin, every measurement's result estimated from samples.

    Measurements are grouped by measurement basis as on ``tinyqml.qubit``
    (:func:`tinyqml.qml.pennylane_measure.group_units`); each group rotates the density
    matrix with its diagonalizing gates and draws all shots once from its diagonal.
    """
    wire_map = {w: i for i, w in enumerate(wire_order)}
    n = len(wire_order)
    bins = list(shots.bins())
    out: list[list[Any]] = [[None] * len(measurements) for _ in bins]
    vec = vec.detach()
    units = PM.split_units(measurements)
    ones = np.ones(vec.shape[0]) if batched else 1.0
    for b in range(len(bins)):
        for unit in units:
            if unit.mp is None:
                PM._accumulate(out[b], unit, ones)
    for group in PM.group_units(units, wire_order):
        rotated = rotate(vec, PM._group_gates(group), wire_map, n)
        samples = NM.sample(NM.diagonal(rotated, n), shots.total_shots, generator).cpu().numpy()
        if not batched:
            samples = samples[0]
        for b, (lo, hi) in enumerate(bins):
            part = samples[..., lo:hi, :]
            for unit in group.units:
                PM._accumulate(out[b], unit, unit.mp.process_samples(part, wire_order))
    return out


# --------------------------------------------------------------------------- the device


def _circuit_interface(circuit: QuantumScript | None) -> str:
    if circuit is None:
        return "numpy"
    params = circuit.get_parameters(trainable_only=False)
    return qml.math.get_interface(*params) if params else "numpy"


@simulator_tracking
@single_tape_support
class TinyQMLMixed(Device):
    """A density-matrix simulator device running noisy PennyLane circuits on tinyqml.

    Args:
        wires: number of wires or an iterable of wire labels (``None``: the circuit's wires).
        shots: default shots (deprecated in PennyLane 0.45; prefer ``qml.set_shots``).
        seed: seed of the sampling generator: an int, ``None`` (fresh entropy) or
            ``"global"`` (drawn from NumPy's global generator, like ``default.mixed``).

    >>> dev = TinyQMLMixed(wires=1, seed=7)
    >>> tape = qml.tape.QuantumScript([qml.H(0), qml.PhaseFlip(0.25, 0)], [qml.expval(qml.X(0))])
    >>> round(float(dev.execute(tape)), 6)
    0.5
    """

    _device_options = ()

    def __init__(self, wires: Any = None, shots: Any = None, seed: Any = "global") -> None:
        super().__init__(wires=wires, shots=shots)
        self._generator = torch.Generator()
        if seed == "global":
            seed = int(np.random.randint(0, 2**31 - 1))
        elif seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self._generator.manual_seed(int(seed))

    @property
    def name(self) -> str:
        return DEVICE_NAME

    # ------------------------------------------------------------------ configuration

    def supports_derivatives(self, execution_config: ExecutionConfig | None = None,
                             circuit: QuantumScript | None = None) -> bool:
        """Backprop (torch, autograd), analytic circuits only; ``"best"`` means backprop."""
        if execution_config is None:
            return True
        if execution_config.gradient_method in ("backprop", "best"):
            return backprop_ok(execution_config, circuit)
        return False

    def setup_execution_config(self, config: ExecutionConfig | None = None,
                               circuit: QuantumScript | None = None) -> ExecutionConfig:
        """Resolve ``"best"``, the device-gradient flags, options and the MCM method."""
        config = config or ExecutionConfig()
        for option in config.device_options:
            if option not in self._device_options:
                raise TinyQMLDeviceError(f"device option {option!r} is not known to {self.name}; "
                                         "it takes none")
        method = "backprop" if config.gradient_method == "best" else config.gradient_method
        updates: dict[str, Any] = {"gradient_method": method, "grad_on_execution": False,
                                   "use_device_jacobian_product": False}
        if config.use_device_gradient is None:
            updates["use_device_gradient"] = method == "backprop"
        updates["mcm_config"] = self._mcm_config(config)
        return replace(config, **updates)

    def _mcm_config(self, config: ExecutionConfig) -> Any:
        mcm = config.mcm_config
        if mcm.mcm_method in (None, "deferred"):
            return replace(mcm, mcm_method="deferred")
        method = getattr(mcm.mcm_method, "value", mcm.mcm_method)
        raise TinyQMLDeviceError(f"mcm_method {method!r} is not supported by {self.name}; use 'deferred'")

    def preprocess_transforms(self, execution_config: ExecutionConfig | None = None) -> CompilePipeline:
        """Defer mid-circuit measurements, decompose to tinyqml gates and channels, validate,
        split tapes whose channels are broadcast."""
        config = execution_config or ExecutionConfig()
        program = CompilePipeline()
        program.add_transform(defer_measurements, allow_postselect=False,
                              num_wires=len(self.wires) if self.wires else None)
        program.add_transform(decompose, stopping_condition=is_supported, device_wires=self.wires,
                              target_gates=set(GATE_NAMES), name=self.name)
        program.add_transform(device_resolve_dynamic_wires, wires=self.wires, allow_resets=False)
        program.add_transform(validate_operation_wires, self.wires, self.name)
        program.add_transform(validate_device_wires, self.wires, name=self.name)
        program.add_transform(validate_measurements, analytic_measurements=_analytic_measurement,
                              sample_measurements=_sample_measurement, name=self.name)
        program.add_transform(validate_observables, stopping_condition=_obs_analytic,
                              stopping_condition_shots=_obs_sampled, name=self.name)
        if config.gradient_method == "backprop":
            program.add_transform(no_sampling, name=f"backprop + {self.name}")
        program.add_transform(expand_broadcast_channels)
        return program

    # ------------------------------------------------------------------ simulation

    def _wire_order(self, tape: QuantumScript) -> Wires:
        return self.wires if self.wires is not None else tape.wires

    def _state(self, tape: QuantumScript) -> Tensor:
        """The final density matrices ``[B, 4**n]`` of a tape (one tinyqml call per tape)."""
        t = translate(tape.operations, self._wire_order(tape), tape.batch_size)
        vec = vectorized_state(t.noisy, None, t.weights, t.inputs, torch.complex128)
        if tape.batch_size is not None and vec.shape[0] != tape.batch_size:
            vec = vec.expand(tape.batch_size, -1)
        if not self._wire_order(tape):  # no wires at all: tinyqml ran one idle wire
            vec = vec[:, :1]
        return vec

    def _forward(self, tape: QuantumScript) -> list[Any]:
        """The analytic forward pass ``tape -> [torch result per measurement]``."""
        return analytic(tape.measurements, self._state(tape), self._wire_order(tape), tape.batch_size is not None)

    def _simulate(self, tape: QuantumScript) -> Any:
        """One tape's result: torch tensors for torch parameters (backprop), autograd boxes for
        parameters autograd traces (backprop bridge), numpy otherwise."""
        if tape.shots:
            with torch.no_grad():
                return self._sampled_result(tape, self._state(tape))
        if PD.has_autograd_params(tape):
            return PD.autograd_backprop(tape, self._forward)
        keep_torch = _circuit_interface(tape) == "torch"
        with torch.set_grad_enabled(keep_torch):
            res = self._forward(tape)
        if not keep_torch:
            res = [PM.to_numpy(r) for r in res]
        return res[0] if len(res) == 1 else tuple(res)

    def _sampled_result(self, tape: QuantumScript, vec: Tensor) -> Any:
        per_bin = sampled(tape.measurements, vec, self._wire_order(tape), tape.shots,
                          tape.batch_size is not None, self._generator)
        packed = [r[0] if len(r) == 1 else tuple(r) for r in per_bin]
        return tuple(packed) if tape.shots.has_partitioned_shots else packed[0]

    def execute(self, circuits: Sequence[QuantumScript], execution_config: ExecutionConfig | None = None) -> tuple:
        """Run each tape (a broadcast tape is one tinyqml call)."""
        return tuple(self._simulate(c) for c in circuits)
