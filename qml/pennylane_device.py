"""``tinyqml.qubit``: a PennyLane device (new ``pennylane.devices.Device`` API) backed by tinyqml.

Registered under the ``pennylane.plugins`` entry point, so after installing tinyqml::

    import pennylane as qml
    dev = qml.device("tinyqml.qubit", wires=2, seed=1234, c_dtype="complex128")

What it does:

- Tapes are translated into tinyqml circuits (:mod:`tinyqml.qml.pennylane_ops`);
  operations without a tinyqml equivalent are decomposed by PennyLane in preprocessing.
  ``StatePrep``/``BasisState`` at the start of a circuit are prepared exactly.
- Parameter broadcasting runs natively: broadcast parameters become tinyqml ``feature``
  references, and the whole batch is one tinyqml call. (The one exception: device
  derivatives with respect to a *broadcast* parameter, which PennyLane's interfaces
  accept only per scalar parameter, so such tapes are split; broadcast data with
  trainable shared weights stays one batched tape.)
- Measurements (:mod:`tinyqml.qml.pennylane_measure`): expval/var of any observable with a
  Pauli representation or a matrix, probs, state, density matrix and other state
  measurements analytically; expval/var/probs/sample/counts with finite shots (and shot
  vectors), sampled with an explicit, seeded ``torch.Generator``.
- Derivatives: ``diff_method="backprop"`` under the torch interface (torch tensors in and
  out; second derivatives too) and, bridged through one autograd primitive, under
  autograd; device derivatives with ``diff_method="adjoint"``/``"device"`` (Jacobians and
  vector-Jacobian products) through tinyqml's adjoint method for expval, var and probs.
  ``"best"`` picks backprop for torch and adjoint for autograd.
- ``c_dtype="complex64"`` simulates in single precision.

Mid-circuit measurements are supported through ``mcm_method="deferred"`` (the default).
This module imports PennyLane; ``import tinyqml.qml`` does not.
"""

from __future__ import annotations

from dataclasses import replace
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
    ExpectationMP,
    MeasurementProcess,
    ProbabilityMP,
    SampleMeasurement,
    StateMeasurement,
    VarianceMP,
)
from pennylane.tape import QuantumScript
from pennylane.transforms import defer_measurements
from pennylane.transforms.core import CompilePipeline, transform

from tinyqml.qml import pennylane_derivatives as PD
from tinyqml.qml import pennylane_measure as PM
from tinyqml.qml import pennylane_ops as PO
from tinyqml.qml.pennylane_ops import TinyQMLDeviceError

Tensor = torch.Tensor

#: measurements whose results the device differentiates itself (real-valued)
DIFFERENTIABLE_MEASUREMENTS = (ExpectationMP, VarianceMP, ProbabilityMP)

_C_DTYPES = {"complex128": torch.complex128, "complex64": torch.complex64}


def _c_dtype(value: Any) -> torch.dtype:
    """``"complex128"``/``"complex64"`` (or the numpy/torch dtype) as a torch complex dtype."""
    if isinstance(value, torch.dtype):
        name = str(value).removeprefix("torch.")
    elif isinstance(value, str):
        name = value
    else:
        try:
            name = np.dtype(value).name
        except TypeError:
            name = repr(value)
    if name not in _C_DTYPES:
        raise TinyQMLDeviceError(f"c_dtype must be 'complex128' or 'complex64', got {value!r}")
    return _C_DTYPES[name]


# --------------------------------------------------------------------------- support checks


def _obs_analytic(obs: qml.operation.Operator) -> bool:
    """An observable the device can measure exactly: a Pauli representation or a matrix."""
    return obs.pauli_rep is not None or obs.has_matrix or obs.has_sparse_matrix


def _obs_sampled(obs: qml.operation.Operator) -> bool:
    """An observable the device can sample: a Pauli word, diagonalizing gates, or a sum of such."""
    if obs.pauli_rep is not None:
        return True
    if isinstance(obs, qml.ops.Sum):
        return all(_obs_sampled(t) for t in obs.terms()[1])
    return obs.has_diagonalizing_gates


def _analytic_measurement(mp: MeasurementProcess) -> bool:
    return isinstance(mp, StateMeasurement)


def _sample_measurement(mp: MeasurementProcess) -> bool:
    return isinstance(mp, SampleMeasurement)


def _circuit_interface(circuit: QuantumScript | None) -> str:
    if circuit is None:
        return "numpy"
    params = circuit.get_parameters(trainable_only=False)
    return qml.math.get_interface(*params) if params else "numpy"


def backprop_ok(config: ExecutionConfig, circuit: QuantumScript | None) -> bool:
    """Backprop: analytic, with torch (native) or autograd (bridged) parameters."""
    if circuit is not None and circuit.shots:
        return False
    if config.interface in (Interface.TORCH, Interface.AUTOGRAD, Interface.NUMPY):
        return True
    return config.interface == Interface.AUTO and _circuit_interface(circuit) in ("torch", "autograd", "numpy")


def _prefers_adjoint(config: ExecutionConfig, circuit: QuantumScript | None) -> bool:
    """``"best"`` under autograd: the adjoint method's VJPs beat the autograd bridge."""
    autograd = config.interface == Interface.AUTOGRAD or (
        config.interface == Interface.AUTO and _circuit_interface(circuit) == "autograd")
    return autograd and adjoint_ok(config, circuit)


def adjoint_ok(config: ExecutionConfig, circuit: QuantumScript | None) -> bool:
    """Device derivatives: first order, analytic, real-valued measurements (expval, var, probs)."""
    if config.derivative_order != 1:
        return False
    if circuit is None:
        return True
    complex_trainable = any(qml.math.requires_grad(p) and np.iscomplexobj(qml.math.unwrap(p))
                            for p in circuit.get_parameters())
    return (not circuit.shots and not complex_trainable
            and all(isinstance(m, DIFFERENTIABLE_MEASUREMENTS) for m in circuit.measurements))


@transform
def validate_adjoint_measurements(tape: QuantumScript) -> tuple[Sequence[QuantumScript], Any]:
    """Raise for measurements whose results the device does not differentiate."""
    for m in tape.measurements:
        if not isinstance(m, DIFFERENTIABLE_MEASUREMENTS):
            raise TinyQMLDeviceError(
                f"tinyqml.qubit differentiates expval, var and probs with diff_method='adjoint', not {m}"
            )
    return (tape,), lambda results: results[0]


def _trainable_broadcast(tape: QuantumScript) -> bool:
    """Whether a trainable operation parameter carries the broadcast dimension."""
    for op in tape.operations:
        if op.batch_size is None:
            continue
        ndims = op.ndim_params
        if any(qml.math.requires_grad(d) and qml.math.ndim(d) > nd for d, nd in zip(op.data, ndims)):
            return True
    return False


@transform
def expand_trainable_broadcast(tape: QuantumScript) -> tuple[Sequence[QuantumScript], Any]:
    """Split a broadcast tape only when a broadcast parameter is trainable under device derivatives.

    PennyLane's interfaces expect one Jacobian/VJP entry per scalar parameter, so device
    derivatives w.r.t. a broadcast parameter need one tape per batch row. Broadcast data
    with trainable shared weights (the usual case) stays one natively batched tape.
    """
    if tape.batch_size is None or not _trainable_broadcast(tape):
        return (tape,), lambda results: results[0]
    return qml.transforms.broadcast_expand(tape)


# --------------------------------------------------------------------------- the device


@simulator_tracking
@single_tape_support
class TinyQMLQubit(Device):
    """A state-vector simulator device running PennyLane circuits on tinyqml.

    Args:
        wires: number of wires or an iterable of wire labels (``None``: the circuit's wires).
        shots: default shots (deprecated in PennyLane 0.45; prefer ``qml.set_shots``).
        seed: seed of the sampling generator: an int, ``None`` (fresh entropy) or
            ``"global"`` (drawn from NumPy's global generator, like ``default.qubit``).
        c_dtype: ``"complex128"`` (default) or ``"complex64"``.
    """

    _device_options = ("c_dtype",)

    def __init__(self, wires: Any = None, shots: Any = None, seed: Any = "global",
                 c_dtype: Any = "complex128") -> None:
        super().__init__(wires=wires, shots=shots)
        self._c_dtype = _c_dtype(c_dtype)
        self._generator = torch.Generator()
        if seed == "global":
            seed = int(np.random.randint(0, 2**31 - 1))
        elif seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self._generator.manual_seed(int(seed))

    @property
    def name(self) -> str:
        return "tinyqml.qubit"

    @property
    def c_dtype(self) -> torch.dtype:
        """The complex dtype of simulated states."""
        return self._c_dtype

    # ------------------------------------------------------------------ configuration

    def supports_derivatives(self, execution_config: ExecutionConfig | None = None,
                             circuit: QuantumScript | None = None) -> bool:
        """Backprop (torch interface) and adjoint/device derivatives (expval, var, probs)."""
        if execution_config is None:
            return True
        method = execution_config.gradient_method
        if method == "backprop":
            return backprop_ok(execution_config, circuit)
        if method in ("adjoint", "device"):
            return adjoint_ok(execution_config, circuit)
        if method == "best":
            return backprop_ok(execution_config, circuit) or adjoint_ok(execution_config, circuit)
        return False

    def supports_vjp(self, execution_config: ExecutionConfig | None = None,
                     circuit: QuantumScript | None = None) -> bool:
        """Vector-Jacobian products come with the adjoint method."""
        if execution_config is None:
            return True
        return execution_config.gradient_method in ("adjoint", "device") and adjoint_ok(execution_config, circuit)

    def setup_execution_config(self, config: ExecutionConfig | None = None,
                               circuit: QuantumScript | None = None) -> ExecutionConfig:
        """Resolve ``"best"``/``"device"``, the device-gradient flags, options and the MCM method."""
        config = config or ExecutionConfig()
        for option in config.device_options:
            if option not in self._device_options:
                raise TinyQMLDeviceError(f"device option {option!r} is not known to {self.name}")
        method = config.gradient_method
        if method == "best":
            method = "adjoint" if _prefers_adjoint(config, circuit) or not backprop_ok(config, circuit) else "backprop"
        elif method == "device":
            method = "adjoint"
        updates: dict[str, Any] = {"gradient_method": method}
        if config.use_device_gradient is None:
            updates["use_device_gradient"] = method in ("adjoint", "backprop")
        if config.use_device_jacobian_product is None:
            updates["use_device_jacobian_product"] = method == "adjoint"
        if config.grad_on_execution is None:
            updates["grad_on_execution"] = method == "adjoint"
        options = dict(config.device_options)
        options.setdefault("c_dtype", self._c_dtype)
        updates["device_options"] = options
        updates["mcm_config"] = self._mcm_config(config)
        return replace(config, **updates)

    def _mcm_config(self, config: ExecutionConfig) -> Any:
        mcm = config.mcm_config
        if mcm.mcm_method in (None, "deferred"):
            return replace(mcm, mcm_method="deferred")
        raise TinyQMLDeviceError(f"mcm_method {mcm.mcm_method!r} is not supported by {self.name}; use 'deferred'")

    def preprocess_transforms(self, execution_config: ExecutionConfig | None = None) -> CompilePipeline:
        """Defer mid-circuit measurements, decompose to the tinyqml gate set, validate."""
        config = execution_config or ExecutionConfig()
        program = CompilePipeline()
        program.add_transform(defer_measurements, allow_postselect=False,
                              num_wires=len(self.wires) if self.wires else None)
        program.add_transform(decompose, stopping_condition=PO.is_supported, device_wires=self.wires,
                              target_gates=set(PO.GATE_NAMES), name=self.name)
        program.add_transform(device_resolve_dynamic_wires, wires=self.wires, allow_resets=False)
        program.add_transform(validate_device_wires, self.wires, name=self.name)
        program.add_transform(validate_measurements, analytic_measurements=_analytic_measurement,
                              sample_measurements=_sample_measurement, name=self.name)
        program.add_transform(validate_observables, stopping_condition=_obs_analytic,
                              stopping_condition_shots=_obs_sampled, name=self.name)
        method = "adjoint" if config.gradient_method == "device" else config.gradient_method
        if method in ("backprop", "adjoint"):
            program.add_transform(no_sampling, name=f"{method} + {self.name}")
        if method == "adjoint":
            program.add_transform(validate_adjoint_measurements)
            program.add_transform(expand_trainable_broadcast)
        return program

    # ------------------------------------------------------------------ simulation

    def _dtype(self, config: ExecutionConfig | None) -> torch.dtype:
        if config is None or "c_dtype" not in config.device_options:
            return self._c_dtype
        return _c_dtype(config.device_options["c_dtype"])

    def _wire_order(self, tape: QuantumScript) -> qml.wires.Wires:
        return self.wires if self.wires is not None else tape.wires

    def _state(self, tape: QuantumScript, dtype: torch.dtype, adjoint: bool) -> Tensor:
        """The final state ``[B, 2**n]`` of a tape (one tinyqml call for the whole broadcast batch)."""
        rdtype = torch.float32 if dtype == torch.complex64 else torch.float64
        t = PO.translate(tape.operations, self._wire_order(tape), tape.batch_size, rdtype)
        psi = PO.run(t, dtype, adjoint)
        if tape.batch_size is not None and psi.shape[0] != tape.batch_size:
            psi = psi.expand(tape.batch_size, -1)
        if not self._wire_order(tape):  # no wires at all: tinyqml ran one idle wire
            psi = psi[:, :1]
        return psi

    def _analytic(self, tape: QuantumScript, psi: Tensor, higher_order: bool = False) -> list[Any]:
        wire_order = self._wire_order(tape)
        batched = tape.batch_size is not None
        return PM.analytic(tape.measurements, psi, wire_order, batched, higher_order)

    def _forward(self, dtype: torch.dtype, adjoint: bool, higher_order: bool = False) -> PD.Forward:
        """The analytic forward pass ``tape -> [torch result per measurement]``."""
        return lambda tape: self._analytic(tape, self._state(tape, dtype, adjoint), higher_order)

    def _simulate(self, tape: QuantumScript, dtype: torch.dtype, higher_order: bool) -> Any:
        """One tape's result in PennyLane's format: torch tensors for torch parameters (backprop),
        autograd boxes for parameters autograd traces (backprop bridge), numpy otherwise."""
        if tape.shots:
            with torch.no_grad():
                return self._sampled_result(tape, self._state(tape, dtype, adjoint=False))
        forward = self._forward(dtype, adjoint=False, higher_order=higher_order)
        if PD.has_autograd_params(tape):
            return PD.autograd_backprop(tape, forward)
        keep_torch = _circuit_interface(tape) == "torch"
        with torch.set_grad_enabled(keep_torch):
            res = forward(tape)
        if not keep_torch:
            res = [PM.to_numpy(r) for r in res]
        return res[0] if len(res) == 1 else tuple(res)

    def _sampled_result(self, tape: QuantumScript, psi: Tensor) -> Any:
        per_bin = PM.sampled(tape.measurements, psi, self._wire_order(tape), tape.shots,
                             tape.batch_size is not None, self._generator)
        packed = [r[0] if len(r) == 1 else tuple(r) for r in per_bin]
        return tuple(packed) if tape.shots.has_partitioned_shots else packed[0]

    def execute(self, circuits: Sequence[QuantumScript], execution_config: ExecutionConfig | None = None) -> tuple:
        """Run each tape (a broadcast tape is one tinyqml call)."""
        dtype = self._dtype(execution_config)
        higher_order = execution_config is not None and execution_config.derivative_order > 1
        return tuple(self._simulate(c, dtype, higher_order) for c in circuits)

    # ------------------------------------------------------------------ device derivatives

    def _jacobians(self, circuits: Sequence[QuantumScript], config: ExecutionConfig | None) -> tuple[tuple, tuple]:
        forward = self._forward(self._dtype(config), adjoint=True)
        pairs = [PD.jacobian(c, forward) for c in circuits]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)

    def _vjps(self, circuits: Sequence[QuantumScript], cotangents: Sequence[Any],
              config: ExecutionConfig | None) -> tuple[tuple, tuple]:
        forward = self._forward(self._dtype(config), adjoint=True)
        pairs = [PD.vjp(c, dy, forward) for c, dy in zip(circuits, cotangents)]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)

    def compute_derivatives(self, circuits: Sequence[QuantumScript],
                            execution_config: ExecutionConfig | None = None) -> tuple:
        """Jacobians by tinyqml's adjoint method, in PennyLane's nested-tuple format."""
        return self._jacobians(circuits, execution_config)[1]

    def execute_and_compute_derivatives(self, circuits: Sequence[QuantumScript],
                                        execution_config: ExecutionConfig | None = None) -> tuple:
        """Results and Jacobians from one forward pass per tape."""
        return self._jacobians(circuits, execution_config)

    def compute_vjp(self, circuits: Sequence[QuantumScript], cotangents: Sequence[Any],
                    execution_config: ExecutionConfig | None = None) -> tuple:
        """Vector-Jacobian products by tinyqml's adjoint method (one backward pass per tape)."""
        return self._vjps(circuits, cotangents, execution_config)[1]

    def execute_and_compute_vjp(self, circuits: Sequence[QuantumScript], cotangents: Sequence[Any],
                                execution_config: ExecutionConfig | None = None) -> tuple:
        """Results and vector-Jacobian products from one forward pass per tape."""
        return self._vjps(circuits, cotangents, execution_config)
