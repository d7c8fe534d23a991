"""Noise channels as plain data: each kind of error is a small frozen dataclass.

A spec holds the *parameters* of an error (a probability, T1/T2 and a duration, a
device's calibration), so a :class:`~tinyqml.noise.model.NoiseModel` stays JSON data
and can be rescaled (:meth:`ErrorSpec.scaled`) before its channels are built.
``spec.channel()`` gives the :class:`~tinyqml.noise.channels.Channel`.

>>> spec = Depolarizing(0.01, n_wires=2)
>>> spec.channel().n_wires, spec.scaled(2.0).p
(2, 0.02)
>>> spec_from_dict(spec.to_dict()) == spec
True
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch

from tinyqml.noise import channels as C
from tinyqml.noise.errors import NoiseParameterError

__all__ = [
    "ErrorSpec", "Depolarizing", "BitFlip", "PhaseFlip", "PauliError", "AmplitudeDamping", "PhaseDamping",
    "ThermalRelaxation", "KrausError", "DeviceGateError", "SPEC_KINDS", "spec_from_dict", "scale_probability",
]


def scale_probability(name: str, p: float, factor: float) -> float:
    """``p * factor``, refused with :class:`NoiseParameterError` when it leaves ``[0, 1]``."""
    out = p * factor
    if out > 1 + 1e-12:
        raise NoiseParameterError(f"scaling {name}={p:g} by {factor:g} gives {out:g}, above 1; "
                                  f"accepted: scale factors up to {1 / p:g} for this error")
    return min(out, 1.0)


def _rate_scaled(p: float, factor: float) -> float:
    """A decay probability ``1 - exp(-t r)`` with its rate ``r`` multiplied by ``factor``."""
    if p >= 1:
        return 1.0 if factor > 0 else 0.0
    return 1.0 - (1.0 - p) ** factor


def _check_factor(factor: float) -> float:
    try:
        f = float(factor)
    except (TypeError, ValueError):
        raise NoiseParameterError(f"the noise scale must be a real number >= 0, got {factor!r}") from None
    if not math.isfinite(f) or f < 0:
        raise NoiseParameterError(f"the noise scale must be finite and >= 0, got {factor!r}")
    return f


@dataclass(frozen=True)
class ErrorSpec:
    """Base of every error kind: ``channel()``, ``scaled(factor)``, ``to_dict()``."""

    kind: ClassVar[str] = ""

    @property
    def n_wires(self) -> int:
        return self.channel().n_wires

    def channel(self) -> C.Channel:
        return _build(self)

    def _make(self) -> C.Channel:  # pragma: no cover - every subclass overrides it
        raise TypeError(f"{type(self).__name__} does not define a channel")

    def scaled(self, factor: float) -> "ErrorSpec":
        """The same error with every rate multiplied by ``factor`` (see each kind)."""
        return self._scaled(_check_factor(factor))

    def _scaled(self, factor: float) -> "ErrorSpec":  # pragma: no cover - overridden
        raise NoiseParameterError(f"{type(self).__name__} cannot be scaled")

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind}
        d.update({k: _jsonable(v) for k, v in asdict(self).items()})
        return d


@functools.lru_cache(maxsize=4096)
def _build(spec: ErrorSpec) -> C.Channel:
    return spec._make()


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, complex):
        return [v.real, v.imag]
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return v


@dataclass(frozen=True)
class Depolarizing(ErrorSpec):
    """``rho -> (1 - p) rho + p I/d`` (Aer's ``depolarizing_error(p, n_wires)``); scales ``p``."""

    p: float
    n_wires: int = 1  # type: ignore[assignment]
    kind: ClassVar[str] = "depolarizing"

    def _make(self) -> C.Channel:
        return C.depolarizing(self.p, self.n_wires)

    def _scaled(self, factor: float) -> "Depolarizing":
        top = 4 ** self.n_wires / (4 ** self.n_wires - 1)
        out = self.p * factor
        if out > top + 1e-12:
            raise NoiseParameterError(f"scaling depolarizing p={self.p:g} by {factor:g} gives {out:g}, above "
                                      f"its maximum {top:g}")
        return Depolarizing(min(out, top), self.n_wires)


@dataclass(frozen=True)
class BitFlip(ErrorSpec):
    """X with probability ``p``; scales ``p``."""

    p: float
    kind: ClassVar[str] = "bit_flip"

    def _make(self) -> C.Channel:
        return C.bit_flip(self.p)

    def _scaled(self, factor: float) -> "BitFlip":
        return BitFlip(scale_probability("p", self.p, factor))


@dataclass(frozen=True)
class PhaseFlip(ErrorSpec):
    """Z with probability ``p``; scales ``p``."""

    p: float
    kind: ClassVar[str] = "phase_flip"

    def _make(self) -> C.Channel:
        return C.phase_flip(self.p)

    def _scaled(self, factor: float) -> "PhaseFlip":
        return PhaseFlip(scale_probability("p", self.p, factor))


@dataclass(frozen=True)
class PauliError(ErrorSpec):
    """Pauli strings with probabilities, ``(("X", 0.1), ("Z", 0.2))``; scales every probability."""

    probs: tuple[tuple[str, float], ...]
    kind: ClassVar[str] = "pauli"

    def __post_init__(self) -> None:
        object.__setattr__(self, "probs", tuple((str(k), float(v)) for k, v in self.probs))

    def _make(self) -> C.Channel:
        return C.pauli(dict(self.probs))

    def _scaled(self, factor: float) -> "PauliError":
        out = tuple((k, v * factor) for k, v in self.probs if k.strip("I"))
        if not out and self.probs:  # only identity labels: keep one, so the channel keeps its wires
            out = ((self.probs[0][0], 0.0),)
        total = sum(v for _, v in out)
        if total > 1 + 1e-12:
            raise NoiseParameterError(f"scaling the Pauli error {dict(self.probs)} by {factor:g} gives error "
                                      f"probabilities summing to {total:g}, above 1")
        return PauliError(out)


@dataclass(frozen=True)
class AmplitudeDamping(ErrorSpec):
    """Decay with probability ``gamma``; scaling multiplies the decay rate: ``1 - (1 - gamma)**s``."""

    gamma: float
    kind: ClassVar[str] = "amplitude_damping"

    def _make(self) -> C.Channel:
        return C.amplitude_damping(self.gamma)

    def _scaled(self, factor: float) -> "AmplitudeDamping":
        return AmplitudeDamping(_rate_scaled(self.gamma, factor))


@dataclass(frozen=True)
class PhaseDamping(ErrorSpec):
    """Dephasing with parameter ``lam``; scaling multiplies its rate: ``1 - (1 - lam)**s``."""

    lam: float
    kind: ClassVar[str] = "phase_damping"

    def _make(self) -> C.Channel:
        return C.phase_damping(self.lam)

    def _scaled(self, factor: float) -> "PhaseDamping":
        return PhaseDamping(_rate_scaled(self.lam, factor))


def _float(v: Any) -> float:
    return math.inf if v == "inf" else float(v)


@dataclass(frozen=True)
class ThermalRelaxation(ErrorSpec):
    """T1/T2 relaxation over ``time`` (Aer's ``thermal_relaxation_error``); scaling divides T1, T2."""

    t1: float
    t2: float
    time: float
    excited_population: float = 0.0
    kind: ClassVar[str] = "thermal_relaxation"

    def __post_init__(self) -> None:
        for f in ("t1", "t2", "time", "excited_population"):
            object.__setattr__(self, f, _float(getattr(self, f)))

    def _make(self) -> C.Channel:
        return C.thermal_relaxation(self.t1, self.t2, self.time, self.excited_population)

    def _scaled(self, factor: float) -> "ThermalRelaxation":
        if factor == 0:
            return ThermalRelaxation(math.inf, math.inf, self.time, self.excited_population)
        return ThermalRelaxation(self.t1 / factor, self.t2 / factor, self.time, self.excited_population)


@dataclass(frozen=True)
class KrausError(ErrorSpec):
    """A generic channel given by its Kraus matrices (nested tuples of complex); cannot be scaled."""

    ops: tuple[tuple[tuple[complex, ...], ...], ...]
    name: str = "kraus"
    kind: ClassVar[str] = "kraus"

    def __post_init__(self) -> None:
        def cx(v: Any) -> complex:
            return complex(v[0], v[1]) if isinstance(v, (list, tuple)) else complex(v)

        try:
            ops = tuple(tuple(tuple(cx(v) for v in row) for row in op) for op in self.ops)
        except (TypeError, ValueError) as exc:
            raise NoiseParameterError(f"Kraus operators must be matrices of numbers: {exc}") from None
        object.__setattr__(self, "ops", ops)

    @classmethod
    def from_channel(cls, channel: C.Channel) -> "KrausError":
        ops = tuple(tuple(tuple(complex(v) for v in row) for row in k.tolist()) for k in channel.kraus)
        return cls(ops, channel.name)

    def _make(self) -> C.Channel:
        return C.kraus([torch.tensor(op, dtype=torch.complex128) for op in self.ops], name=self.name)

    def _scaled(self, factor: float) -> "KrausError":
        if factor == 1:
            return self
        raise NoiseParameterError(f"the generic Kraus channel {self.name!r} has no error rate to scale; "
                                  "use a named error kind (depolarizing, thermal_relaxation, ...) to scale it")


@dataclass(frozen=True)
class DeviceGateError(ErrorSpec):
    """A calibrated gate error built the way Qiskit Aer's ``NoiseModel.from_backend`` does.

    Thermal relaxation of every qubit over the gate's ``duration`` (T2 truncated to
    ``2 * T1``; a missing T1/T2 is ``inf``), tensored over the gate's qubits (first qubit
    on the first wire), *preceded* by a depolarizing error whose parameter makes the
    combined average gate infidelity equal ``error`` (no depolarizing part when the
    relaxation alone already exceeds it). Scaling multiplies ``error`` and divides
    every T1 and T2.

    >>> e = DeviceGateError(error=1e-3, duration=3.5e-8, t1=(1e-4,), t2=(8e-5,))
    >>> from tinyqml.noise.channels import average_gate_fidelity
    >>> round(1 - average_gate_fidelity(e.channel()), 9)
    0.001
    """

    error: float | None
    duration: float | None
    t1: tuple[float, ...]
    t2: tuple[float, ...]
    excited_population: tuple[float, ...] = ()
    relaxation: bool = True
    kind: ClassVar[str] = "device_gate"

    def __post_init__(self) -> None:
        t1 = tuple(_float(v) if v is not None else math.inf for v in self.t1)
        t2 = tuple(_float(v) if v is not None else math.inf for v in self.t2)
        if len(t1) != len(t2) or not t1:
            raise NoiseParameterError(f"DeviceGateError needs one T1 and one T2 per qubit, got t1={self.t1}, "
                                      f"t2={self.t2}")
        pops = tuple(float(v) for v in self.excited_population) or (0.0,) * len(t1)
        if len(pops) != len(t1):
            raise NoiseParameterError("DeviceGateError needs one excited_population per qubit")
        if self.error is not None:
            err = float(self.error)
            if not math.isfinite(err) or err < 0:
                raise NoiseParameterError(f"DeviceGateError.error must be >= 0, got {self.error!r}")
            object.__setattr__(self, "error", err)
        if self.duration is not None:
            dur = float(self.duration)
            if not math.isfinite(dur) or dur < 0:
                raise NoiseParameterError(f"DeviceGateError.duration must be finite and >= 0, got {self.duration!r}")
            object.__setattr__(self, "duration", dur)
        object.__setattr__(self, "t1", t1)
        object.__setattr__(self, "t2", t2)
        object.__setattr__(self, "excited_population", pops)

    @property
    def n_wires(self) -> int:
        return len(self.t1)

    def relaxation_channel(self) -> C.Channel | None:
        if not self.relaxation or not self.duration:
            return None
        parts = []
        for t1, t2, pop in zip(self.t1, self.t2, self.excited_population):
            t2 = min(t2, 2 * t1)
            parts.append(C.thermal_relaxation(t1, t2, self.duration, pop))
        return C.tensor(*parts) if len(parts) > 1 else parts[0]

    def depolarizing_parameter(self, relax: C.Channel | None) -> float | None:
        """Aer's ``_device_depolarizing_error`` parameter (``None``: no depolarizing part)."""
        relax_fid = C.average_gate_fidelity(relax) if relax is not None else 1.0
        relax_infid = 1.0 - relax_fid
        if self.error is None or self.error <= relax_infid:
            return None
        dim = 2 ** self.n_wires
        err = min(self.error, dim / (dim + 1))
        p = dim * (err - relax_infid) / (dim * relax_fid - 1)
        return min(p, 4 ** self.n_wires / (4 ** self.n_wires - 1))

    def _make(self) -> C.Channel:
        relax = self.relaxation_channel()
        p = self.depolarizing_parameter(relax)
        parts = []
        if p is not None:
            if self.n_wires > 2:
                raise NoiseParameterError(f"a calibrated gate error on {self.n_wires} qubits is not supported "
                                          "(depolarizing errors are built for 1 and 2 qubits)")
            parts.append(C.depolarizing(p, self.n_wires))
        if relax is not None:
            parts.append(relax)
        if not parts:
            d = 2 ** self.n_wires
            return C.Channel("identity", (torch.eye(d, dtype=torch.complex128),), self.n_wires)
        return C.compose(*parts) if len(parts) > 1 else parts[0]

    def _scaled(self, factor: float) -> "DeviceGateError":
        err = None if self.error is None else self.error * factor
        if factor == 0:
            inf = (math.inf,) * self.n_wires
            return DeviceGateError(err, self.duration, inf, inf, self.excited_population, self.relaxation)
        return DeviceGateError(err, self.duration, tuple(t / factor for t in self.t1),
                               tuple(t / factor for t in self.t2), self.excited_population, self.relaxation)


#: kind name -> spec class (used to read specs back from JSON)
SPEC_KINDS: dict[str, type[ErrorSpec]] = {
    cls.kind: cls for cls in (Depolarizing, BitFlip, PhaseFlip, PauliError, AmplitudeDamping, PhaseDamping,
                              ThermalRelaxation, KrausError, DeviceGateError)
}


def spec_from_dict(d: dict[str, Any]) -> ErrorSpec:
    """Read a spec written by :meth:`ErrorSpec.to_dict`."""
    if not isinstance(d, dict) or d.get("kind") not in SPEC_KINDS:
        kind = d.get("kind") if isinstance(d, dict) else d
        raise NoiseParameterError(f"unknown error kind {kind!r}; accepted: {', '.join(sorted(SPEC_KINDS))}")
    cls = SPEC_KINDS[d["kind"]]
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names - {"kind"}
    if unknown:
        raise NoiseParameterError(f"unknown field(s) {sorted(unknown)} for error kind {d['kind']!r}; "
                                  f"accepted: {sorted(names)}")
    args = {}
    for k, v in d.items():
        if k == "kind":
            continue
        args[k] = _tuples(v)
    try:
        return cls(**args)
    except TypeError as exc:
        raise NoiseParameterError(f"bad fields for error kind {d['kind']!r}: {exc}") from None


def _tuples(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    return v
