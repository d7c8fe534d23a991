"""A backend's calibration and a noise model's channels, as plain data (what ``tinyqml noise show`` prints).

:func:`fake_backend` finds one of the calibrated offline fake backends of
``qiskit_ibm_runtime.fake_provider`` by name (``FakeManilaV2``, ``FakeManila``,
``manila`` and ``fake_manila`` are the same backend). :func:`backend_calibration` reads
a Qiskit ``BackendV2``'s calibration into a :class:`BackendCalibration`: per qubit T1,
T2, frequency and readout errors, per gate and qubits the error and duration (SI units,
as Qiskit reports them: seconds and hertz). :func:`noise_model_summary` describes what
each rule of a :class:`~tinyqml.noise.NoiseModel` does: its depolarizing parameter, the
infidelity of its thermal relaxation and of the whole channel, and the readout confusion
matrices. Everything is frozen dataclasses with ``to_dict()``; formatting is left to the
caller. Qiskit is imported only by :func:`fake_backend` and :func:`fake_backend_names`.

>>> backend = fake_backend("manila")
>>> cal = backend_calibration(backend)
>>> cal.name, cal.num_qubits, cal.qubit(0).t1 == backend.target.qubit_properties[0].t1
('fake_manila', 5, True)
>>> cal.gate("cx", (0, 1)).error == backend.target["cx"][(0, 1)].error
True
>>> from tinyqml.noise import NoiseModel
>>> summary = noise_model_summary(NoiseModel.from_backend(backend))
>>> rule = summary.rule("CX", (0, 1))
>>> round(rule.infidelity, 12) == round(rule.calibrated_error, 12)   # depolarizing tops up the relaxation
True
>>> summary.readout_for(0).p0_given_1 == backend.properties().qubit_property(0)["prob_meas0_prep1"][0]
True
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from tinyqml.noise import channels as C
from tinyqml.noise import specs as S
from tinyqml.noise.errors import NoiseModelError
from tinyqml.noise.model import NoiseModel
from tinyqml.qml.errors import InteropError

__all__ = [
    "QubitCalibration", "GateCalibration", "BackendCalibration", "RuleSummary", "ReadoutSummary",
    "NoiseModelSummary", "fake_backend_names", "fake_backend", "backend_calibration", "noise_model_summary",
    "model_on_qubits", "NON_GATES",
]

#: target operations that are not gates: their calibration is listed, but they carry no gate error
NON_GATES = ("measure", "reset", "delay")


# --------------------------------------------------------------------------- fake backends


def _fake_provider() -> Any:
    try:
        from qiskit_ibm_runtime import fake_provider
    except ModuleNotFoundError as exc:
        raise InteropError(f"the calibrated fake backends need qiskit-ibm-runtime ({exc.name} is missing): "
                           "pip install 'tinyqml[interop]'") from None
    return fake_provider


def _backend_classes() -> dict[str, type]:
    fp = _fake_provider()
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    out = {}
    for name in dir(fp):
        obj = getattr(fp, name)
        if (name.startswith("Fake") and inspect.isclass(obj) and issubclass(obj, FakeBackendV2)
                and obj is not FakeBackendV2 and not inspect.isabstract(obj)):
            out[name] = obj
    return out


def _key(name: str) -> str:
    """``FakeManilaV2``, ``FakeManila``, ``fake_manila``, ``manila`` -> ``manila``."""
    k = "".join(ch for ch in name.lower() if ch.isalnum())
    if k.startswith("fake"):
        k = k[4:]
    if k.endswith("v2"):
        k = k[:-2]
    return k


def fake_backend_names() -> tuple[str, ...]:
    """The class names of the calibrated fake backends of ``qiskit_ibm_runtime.fake_provider``, sorted."""
    return tuple(sorted(_backend_classes()))


def fake_backend(name: str) -> Any:
    """A calibrated offline fake backend by name; its class name, or without ``Fake``/``V2``, any case, with
    underscores (``FakeQuitoV2``, ``FakeQuito``, ``quito``, ``fake_quito``).

    Raises :class:`~tinyqml.noise.errors.NoiseModelError` (listing the names) for an unknown name and
    :class:`~tinyqml.qml.errors.InteropError` without qiskit-ibm-runtime.
    """
    classes = _backend_classes()
    if not isinstance(name, str) or not name.strip():
        raise NoiseModelError(f"a fake backend name is needed; available: {', '.join(sorted(classes))}")
    cls = classes.get(name.strip())
    if cls is None:
        by_key: dict[str, type] = {}
        for cname in sorted(classes, key=lambda n: not n.endswith("V2")):  # FakeXV2 wins over FakeX
            by_key.setdefault(_key(cname), classes[cname])
        cls = by_key.get(_key(name))
    if cls is None:
        raise NoiseModelError(f"no fake backend {name!r} in qiskit_ibm_runtime.fake_provider; available: "
                              f"{', '.join(sorted(classes))}")
    return cls()


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class QubitCalibration:
    """One qubit's calibration (``None`` where the backend reports nothing).

    Times in seconds, ``frequency`` in hertz; ``readout_error`` is the measure error of the
    target, ``p1_given_0`` / ``p0_given_1`` the asymmetric ``prob_meas1_prep0`` /
    ``prob_meas0_prep1`` of ``backend.properties()``.
    """

    qubit: int
    t1: float | None = None
    t2: float | None = None
    frequency: float | None = None
    readout_error: float | None = None
    p1_given_0: float | None = None
    p0_given_1: float | None = None
    readout_length: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateCalibration:
    """The calibration of Qiskit operation ``gate`` on ``qubits``: ``error`` and ``duration`` (seconds)."""

    gate: str
    qubits: tuple[int, ...]
    error: float | None
    duration: float | None

    @property
    def virtual(self) -> bool:
        """A gate done in software (``rz``: zero error, zero duration)."""
        return self.error == 0 and self.duration == 0

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "qubits": list(self.qubits), "error": self.error, "duration": self.duration}


def _mean(values: Iterable[float]) -> float | None:
    vs = list(values)
    return sum(vs) / len(vs) if vs else None


@dataclass(frozen=True)
class BackendCalibration:
    """What a backend reports: qubits, coupling map, basis gates, per-qubit and per-gate calibration."""

    name: str
    backend_class: str
    num_qubits: int
    coupling_map: tuple[tuple[int, int], ...]
    basis_gates: tuple[str, ...]
    qubits: tuple[QubitCalibration, ...]
    gates: tuple[GateCalibration, ...]
    last_update: str | None = None

    def qubit(self, q: int) -> QubitCalibration:
        for qc in self.qubits:
            if qc.qubit == q:
                return qc
        raise NoiseModelError(f"{self.name} has no calibration for qubit {q} (qubits: "
                              f"{', '.join(str(c.qubit) for c in self.qubits)})")

    def gate(self, gate: str, qubits: Sequence[int]) -> GateCalibration:
        key = (gate, tuple(qubits))
        for g in self.gates:
            if (g.gate, g.qubits) == key:
                return g
        raise NoiseModelError(f"{self.name} has no calibration for {gate} on qubits {tuple(qubits)}")

    def mean_gate_error(self, n_qubits: int) -> float | None:
        """Mean error of the calibrated ``n_qubits``-qubit gates (virtual gates, measure and reset left out)."""
        return _mean(g.error for g in self.gates
                     if len(g.qubits) == n_qubits and g.gate not in NON_GATES and not g.virtual
                     and g.error is not None)

    @property
    def mean_readout_error(self) -> float | None:
        return _mean(q.readout_error for q in self.qubits if q.readout_error is not None)

    def on_qubits(self, qubits: Iterable[int]) -> "BackendCalibration":
        """The same calibration restricted to ``qubits`` (gates and couplings among them only)."""
        keep = _check_qubits(qubits, self.num_qubits, self.name)
        return BackendCalibration(
            self.name, self.backend_class, self.num_qubits,
            tuple(e for e in self.coupling_map if set(e) <= keep), self.basis_gates,
            tuple(q for q in self.qubits if q.qubit in keep), tuple(g for g in self.gates if set(g.qubits) <= keep),
            self.last_update)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "backend_class": self.backend_class, "num_qubits": self.num_qubits,
            "last_update": self.last_update, "basis_gates": list(self.basis_gates),
            "coupling_map": [list(e) for e in self.coupling_map],
            "qubits": [q.to_dict() for q in self.qubits], "gates": [g.to_dict() for g in self.gates],
            "mean_error": {"1q": self.mean_gate_error(1), "2q": self.mean_gate_error(2),
                           "readout": self.mean_readout_error},
        }


def _check_qubits(qubits: Iterable[int], n: int, name: str) -> set[int]:
    keep = {int(q) for q in qubits}
    bad = sorted(q for q in keep if not 0 <= q < n)
    if bad:
        raise NoiseModelError(f"{name} has {n} qubits (0..{n - 1}); no qubit {', '.join(map(str, bad))}")
    return keep


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _properties(backend: Any) -> Any:
    if not callable(getattr(backend, "properties", None)):
        return None
    try:
        return backend.properties()
    except Exception:  # noqa: BLE001 - a backend without properties: the target alone
        return None


def _prop(props: Any, q: int, key: str) -> float | None:
    if props is None:
        return None
    try:
        return float(props.qubit_property(q)[key][0])
    except (KeyError, TypeError, IndexError, AttributeError, ValueError):
        return None
    except Exception:  # noqa: BLE001 - BackendPropertyError: the qubit has no such property
        return None


def backend_calibration(backend: Any) -> BackendCalibration:
    """The calibration of a Qiskit ``BackendV2`` (read from ``backend.target`` and ``backend.properties()``).

    Numbers are Qiskit's, unconverted (seconds, hertz). ``gates`` lists every
    calibrated operation of the target (control flow and delay have none): the gates by number
    of qubits, name and qubits, then measure and reset.
    """
    target = getattr(backend, "target", None)
    if target is None or not hasattr(target, "qubit_properties"):
        raise NoiseModelError(f"backend_calibration needs a Qiskit BackendV2 with a target, got "
                              f"{type(backend).__name__}")
    n = int(target.num_qubits)
    props = _properties(backend)
    qprops = target.qubit_properties or [None] * n
    measure = target["measure"] if "measure" in target.operation_names else {}
    qubits = []
    for q in range(n):
        qp = qprops[q] if q < len(qprops) else None
        mp = (measure or {}).get((q,))
        qubits.append(QubitCalibration(
            qubit=q, t1=_float(getattr(qp, "t1", None)), t2=_float(getattr(qp, "t2", None)),
            frequency=_float(getattr(qp, "frequency", None)),
            readout_error=_float(getattr(mp, "error", None)) if mp is not None else _prop(props, q, "readout_error"),
            p1_given_0=_prop(props, q, "prob_meas1_prep0"), p0_given_1=_prop(props, q, "prob_meas0_prep1"),
            readout_length=(_float(getattr(mp, "duration", None)) if mp is not None
                            else _prop(props, q, "readout_length"))))
    gates = []
    for op in target.operation_names:
        table = target[op]
        if not table:
            continue
        for qargs, ip in table.items():
            if qargs is None or (getattr(ip, "error", None) is None and getattr(ip, "duration", None) is None):
                continue  # control flow, or an uncalibrated operation (delay)
            gates.append(GateCalibration(op, tuple(int(v) for v in qargs), _float(getattr(ip, "error", None)),
                                         _float(getattr(ip, "duration", None))))
    gates.sort(key=lambda g: (g.gate in NON_GATES, len(g.qubits), g.gate, g.qubits))
    coupling = getattr(backend, "coupling_map", None)
    edges = tuple(sorted((int(a), int(b)) for a, b in coupling.get_edges())) if coupling is not None else ()
    basis = tuple(sorted(op for op in target.operation_names
                         if op not in NON_GATES and target[op] and None not in target[op]))
    when = getattr(props, "last_update_date", None) if props is not None else None
    return BackendCalibration(
        name=str(getattr(backend, "name", type(backend).__name__)), backend_class=type(backend).__name__,
        num_qubits=n, coupling_map=edges, basis_gates=basis, qubits=tuple(qubits), gates=tuple(gates),
        last_update=None if when is None else str(when))


# --------------------------------------------------------------------------- noise models


@dataclass(frozen=True)
class RuleSummary:
    """What one :class:`~tinyqml.noise.NoiseRule` does.

    ``n_qubits`` is the number of qubits the error acts on, ``kind`` the spec's kind (``device_gate`` for a calibrated gate, ``depolarizing``, ...),
    ``channel`` the name of its channel, ``infidelity`` ``1 - average_gate_fidelity`` of the whole
    channel. For a calibrated gate (:class:`~tinyqml.noise.specs.DeviceGateError`):
    ``calibrated_error`` and ``duration`` (seconds) are the calibration's, ``t1`` / ``t2`` the
    times the relaxation uses (T2 truncated to ``2 T1``), ``relaxation_infidelity`` that of the
    thermal relaxation alone and ``depolarizing`` the parameter of the depolarizing error that
    tops it up to the calibrated error (``None``: none needed).
    """

    gate: str
    qubits: tuple[int, ...] | None
    n_qubits: int
    kind: str
    channel: str
    infidelity: float
    depolarizing: float | None = None
    calibrated_error: float | None = None
    duration: float | None = None
    t1: tuple[float, ...] = ()
    t2: tuple[float, ...] = ()
    relaxation_infidelity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["qubits"] = None if self.qubits is None else list(self.qubits)
        d["t1"], d["t2"] = list(self.t1), list(self.t2)
        return d


@dataclass(frozen=True)
class ReadoutSummary:
    """One qubit's readout error: ``P(0|1)``, ``P(1|0)`` and the confusion matrix (columns = true state)."""

    qubit: int
    p0_given_1: float
    p1_given_0: float

    @property
    def error(self) -> float:
        """The mean flip probability ``(P(0|1) + P(1|0)) / 2``."""
        return (self.p0_given_1 + self.p1_given_0) / 2

    @property
    def matrix(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``matrix[m][t] = P(measured m | true t)``, as :attr:`tinyqml.noise.ReadoutError.matrix`."""
        a, b = self.p1_given_0, self.p0_given_1
        return ((1 - a, b), (a, 1 - b))

    def to_dict(self) -> dict[str, Any]:
        return {"qubit": self.qubit, "p0_given_1": self.p0_given_1, "p1_given_0": self.p1_given_0,
                "matrix": [list(r) for r in self.matrix]}


@dataclass(frozen=True)
class NoiseModelSummary:
    """Every rule and readout error of a noise model, described (see :class:`RuleSummary`)."""

    name: str
    rules: tuple[RuleSummary, ...]
    readout: tuple[ReadoutSummary, ...]

    def rule(self, gate: str, qubits: Sequence[int] | None) -> RuleSummary:
        key = None if qubits is None else tuple(qubits)
        for r in self.rules:
            if r.gate == gate and r.qubits == key:
                return r
        raise NoiseModelError(f"the noise model {self.name!r} has no rule for {gate} on qubits {key}")

    def readout_for(self, qubit: int) -> ReadoutSummary:
        for r in self.readout:
            if r.qubit == qubit:
                return r
        raise NoiseModelError(f"the noise model {self.name!r} has no readout error on qubit {qubit}")

    def mean_error(self, n_qubits: int) -> float | None:
        """Mean infidelity of the rules on ``n_qubits`` qubits."""
        return _mean(r.infidelity for r in self.rules if r.n_qubits == n_qubits)

    def count(self, n_qubits: int) -> int:
        return sum(r.n_qubits == n_qubits for r in self.rules)

    @property
    def mean_readout_error(self) -> float | None:
        return _mean(r.error for r in self.readout)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rules": [r.to_dict() for r in self.rules],
                "readout": [r.to_dict() for r in self.readout],
                "mean_error": {"1q": self.mean_error(1), "2q": self.mean_error(2), "readout": self.mean_readout_error}}


def _rule_summary(gate: str, qubits: tuple[int, ...] | None, spec: S.ErrorSpec) -> RuleSummary:
    channel = spec.channel()
    infid = max(0.0, 1.0 - C.average_gate_fidelity(channel))
    if isinstance(spec, S.DeviceGateError):
        relax = spec.relaxation_channel()
        return RuleSummary(
            gate=gate, qubits=qubits, n_qubits=channel.n_wires, kind=spec.kind, channel=channel.name, infidelity=infid,
            depolarizing=spec.depolarizing_parameter(relax), calibrated_error=spec.error, duration=spec.duration,
            t1=spec.t1, t2=tuple(min(b, 2 * a) for a, b in zip(spec.t1, spec.t2)),
            relaxation_infidelity=None if relax is None else max(0.0, 1.0 - C.average_gate_fidelity(relax)))
    depol = spec.p if isinstance(spec, S.Depolarizing) else None
    return RuleSummary(gate=gate, qubits=qubits, n_qubits=channel.n_wires, kind=spec.kind, channel=channel.name,
                       infidelity=infid, depolarizing=depol)


def noise_model_summary(model: NoiseModel) -> NoiseModelSummary:
    """Describe every rule of ``model`` (building its channels) and its readout errors.

    >>> from tinyqml.noise import NoiseModel, Depolarizing, ReadoutError
    >>> nm = NoiseModel().add("CX", Depolarizing(0.02, 2)).with_readout(1, ReadoutError(0.04, 0.02))
    >>> s = noise_model_summary(nm)
    >>> r = s.rules[0]
    >>> r.gate, r.qubits, r.depolarizing, round(r.infidelity, 6), s.count(2)
    ('CX', None, 0.02, 0.015, 1)
    >>> s.readout_for(1).matrix, s.mean_readout_error
    (((0.98, 0.04), (0.02, 0.96)), 0.03)
    """
    if not isinstance(model, NoiseModel):
        raise NoiseModelError(f"noise_model_summary needs a tinyqml NoiseModel, got {type(model).__name__}")
    rules = tuple(_rule_summary(r.gate, r.qubits, r.error) for r in model.rules)
    readout = tuple(ReadoutSummary(q, e.p0_given_1, e.p1_given_0) for q, e in model.readout)
    return NoiseModelSummary(model.name, rules, readout)


def model_on_qubits(model: NoiseModel, qubits: Iterable[int]) -> NoiseModel:
    """``model`` with only the rules on ``qubits`` (and those on every qubit) and their readout errors.

    >>> from tinyqml.noise import NoiseModel, BitFlip
    >>> nm = NoiseModel().add("X", BitFlip(0.1), qubits=(0,)).add("X", BitFlip(0.2), qubits=(3,))
    >>> [r.qubits for r in model_on_qubits(nm, [3]).rules]
    [(3,)]
    """
    keep = {int(q) for q in qubits}
    rules = tuple(r for r in model.rules if r.qubits is None or set(r.qubits) <= keep)
    return NoiseModel(rules, tuple((q, e) for q, e in model.readout if q in keep), model.name)
