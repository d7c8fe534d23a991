"""Noise models: which error follows which gate on which qubits, and readout errors.

A :class:`NoiseModel` is plain, immutable data: a tuple of :class:`NoiseRule` (gate
name, qubits or ``None`` for every application, an :mod:`~tinyqml.noise.specs` error)
and per-qubit :class:`~tinyqml.noise.channels.ReadoutError`. It round-trips through
JSON, reads a Qiskit backend's calibration offline (:meth:`NoiseModel.from_backend`,
Aer's recipe), converts to a ``qiskit_aer.noise.NoiseModel`` (:meth:`NoiseModel.to_aer`)
and rescales every error rate (:meth:`NoiseModel.scaled`).

Semantics follow Aer: after each gate, the rules for that gate *on exactly those
qubits* apply if there are any; otherwise the rules for that gate on every qubit
(``qubits=None``) apply. Several matching rules apply in the order given. An ``MCX``
with one or two controls counts as ``CX`` / ``CCX`` (Qiskit exports it as ``cx`` /
``ccx``, so Aer attaches those gates' errors to it); rules on ``MCX`` apply from three
controls on.

>>> import tinyqml.qml as tq
>>> from tinyqml.noise import NoiseModel, Depolarizing, BitFlip
>>> nm = NoiseModel().add("CX", Depolarizing(0.02, 2)).add("H", BitFlip(0.01), qubits=(0,))
>>> noisy = nm.apply(tq.CircuitBuilder(2).h(0).h(1).cx(0, 1).build())
>>> [s if isinstance(s, int) else s.channel.name for s in noisy.steps]
[0, 'bit_flip(0.01)', 1, 2, 'depolarizing(0.02)']
>>> NoiseModel.from_json(nm.to_json()) == nm
True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from tinyqml.noise import channels as C
from tinyqml.noise import specs as S
from tinyqml.noise.errors import NoiseModelError
from tinyqml.qml import gates as G
from tinyqml.qml.circuit import Circuit
from tinyqml.qml.errors import InteropError, UnknownGateError, WireError

__all__ = ["ChannelOp", "NoisyCircuit", "NoiseRule", "NoiseModel", "JSON_VERSION"]

JSON_VERSION = 1


# --------------------------------------------------------------------------- noisy circuits


@dataclass(frozen=True, eq=False)
class ChannelOp:
    """A channel applied to ``wires`` (the channel's first wire is ``wires[0]``)."""

    channel: C.Channel
    wires: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.channel, C.Channel):
            raise NoiseModelError(f"ChannelOp needs a Channel, got {type(self.channel).__name__}")
        wires = tuple(int(w) for w in self.wires)
        if len(wires) != self.channel.n_wires:
            raise WireError(f"channel {self.channel.name!r} acts on {self.channel.n_wires} wire(s), "
                            f"got wires={wires}")
        if len(set(wires)) != len(wires) or any(w < 0 for w in wires):
            raise WireError(f"channel wires {wires} must be distinct non-negative integers")
        object.__setattr__(self, "wires", wires)


@dataclass(frozen=True, eq=False)
class NoisyCircuit:
    """A circuit with channels between its gates.

    ``steps`` lists, in order, the index of each operation of ``circuit`` (every index
    once, increasing) and the :class:`ChannelOp` applied at that point.

    >>> import tinyqml.qml as tq
    >>> from tinyqml.noise.channels import bit_flip
    >>> c = tq.CircuitBuilder(1).h(0).build()
    >>> NoisyCircuit(c, (0, ChannelOp(bit_flip(0.1), (0,)))).n_channels
    1
    """

    circuit: Circuit
    steps: tuple[int | ChannelOp, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.circuit, Circuit):
            raise NoiseModelError(f"NoisyCircuit needs a tinyqml Circuit, got {type(self.circuit).__name__}")
        steps = tuple(self.steps)
        seen = [s for s in steps if not isinstance(s, ChannelOp)]
        if seen != list(range(len(self.circuit.ops))):
            raise NoiseModelError("NoisyCircuit.steps must list every operation index of the circuit once, in "
                                  f"increasing order, between the channels; got {seen[:12]}")
        n = self.circuit.n_wires
        for s in steps:
            if isinstance(s, ChannelOp) and any(w >= n for w in s.wires):
                raise WireError(f"channel {s.channel.name!r} on wires {s.wires}, but the circuit has {n} wires "
                                f"(0..{n - 1})")
        object.__setattr__(self, "steps", steps)

    @classmethod
    def plain(cls, circuit: Circuit) -> "NoisyCircuit":
        """The circuit without any channel."""
        return cls(circuit, tuple(range(len(circuit.ops))))

    @property
    def n_wires(self) -> int:
        return self.circuit.n_wires

    @property
    def n_channels(self) -> int:
        return sum(isinstance(s, ChannelOp) for s in self.steps)


# --------------------------------------------------------------------------- rules


def _gate_name(name: str) -> str:
    if not isinstance(name, str):
        raise NoiseModelError(f"a noise rule's gate must be a tinyqml gate name (e.g. 'CX'), got {name!r}")
    try:
        return G.get_gate(name).name
    except UnknownGateError as exc:
        raise NoiseModelError(f"noise rule for unknown gate {name!r}: {exc}") from None


def _no_constant(name: str) -> float:
    raise NoiseModelError(f"noise model JSON holds {name}; accepted: finite numbers (an infinite T1 or T2 is "
                          "written as the string \"inf\")")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise NoiseModelError(f"noise model JSON holds the number {text}, which overflows to {v}; accepted: finite "
                              "numbers (an infinite T1 or T2 is written as the string \"inf\")")
    return v


@dataclass(frozen=True)
class NoiseRule:
    """``error`` after every ``gate`` on ``qubits`` (``None``: on any qubits)."""

    gate: str
    error: S.ErrorSpec
    qubits: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "gate", _gate_name(self.gate))
        if not isinstance(self.error, S.ErrorSpec):
            raise NoiseModelError(f"a noise rule's error must be an ErrorSpec (Depolarizing, ThermalRelaxation, "
                                  f"...), got {type(self.error).__name__}")
        gate = G.get_gate(self.gate)
        k = self.error.n_wires
        if gate.num_wires and gate.num_wires != k:
            raise NoiseModelError(f"{self.gate} acts on {gate.num_wires} qubit(s) but its error acts on {k}; "
                                  "accepted: an error on as many qubits as the gate")
        if self.qubits is not None:
            q = tuple(self.qubits)
            if (any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in q)
                    or len(set(q)) != len(q) or len(q) != k):
                raise NoiseModelError(f"noise rule for {self.gate}: qubits must be {k} distinct non-negative "
                                      f"integers, got {self.qubits!r}")
            object.__setattr__(self, "qubits", q)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"gate": self.gate, "error": self.error.to_dict()}
        if self.qubits is not None:
            d["qubits"] = list(self.qubits)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NoiseRule":
        if not isinstance(d, dict) or "gate" not in d or "error" not in d:
            raise NoiseModelError(f"a noise rule needs 'gate' and 'error' entries, got {d!r}")
        q = d.get("qubits")
        return cls(d["gate"], S.spec_from_dict(d["error"]), None if q is None else tuple(int(v) for v in q))


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class NoiseModel:
    """Gate errors and readout errors, as data.

    Attributes:
        rules: the gate errors (see the module docstring for which rules apply).
        readout: ``(qubit, ReadoutError)`` pairs, at most one per qubit.
        name: a label (e.g. the backend the model was read from).
    """

    rules: tuple[NoiseRule, ...] = ()
    readout: tuple[tuple[int, C.ReadoutError], ...] = ()
    name: str = ""
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        rules = tuple(self.rules)
        if any(not isinstance(r, NoiseRule) for r in rules):
            raise NoiseModelError("NoiseModel.rules must be NoiseRule objects")
        object.__setattr__(self, "rules", rules)
        ro = tuple((int(q), e) for q, e in self.readout)
        qs = [q for q, _ in ro]
        if len(set(qs)) != len(qs) or any(q < 0 for q in qs):
            raise NoiseModelError(f"readout errors need distinct non-negative qubits, got {qs}")
        if any(not isinstance(e, C.ReadoutError) for _, e in ro):
            raise NoiseModelError("readout entries must be (qubit, ReadoutError) pairs")
        object.__setattr__(self, "readout", tuple(sorted(ro)))
        local: dict[tuple[str, tuple[int, ...]], list[S.ErrorSpec]] = {}
        every: dict[str, list[S.ErrorSpec]] = {}
        for r in rules:
            if r.qubits is None:
                every.setdefault(r.gate, []).append(r.error)
            else:
                local.setdefault((r.gate, r.qubits), []).append(r.error)
        self._index.update(local=local, every=every)

    # ------------------------------------------------------------- building

    def add(self, gate: str, error: S.ErrorSpec, qubits: Sequence[int] | None = None) -> "NoiseModel":
        """A new model with one more rule (``qubits=None``: on every application of ``gate``)."""
        rule = NoiseRule(gate, error, None if qubits is None else tuple(qubits))
        return NoiseModel(self.rules + (rule,), self.readout, self.name)

    def with_readout(self, qubit: int, error: C.ReadoutError) -> "NoiseModel":
        """A new model whose readout error on ``qubit`` is ``error`` (replacing any previous one)."""
        ro = tuple((q, e) for q, e in self.readout if q != qubit) + ((int(qubit), error),)
        return NoiseModel(self.rules, ro, self.name)

    def readout_errors(self, wires: Sequence[int]) -> list[C.ReadoutError | None]:
        """The readout error of each of ``wires`` (``None`` where it has none)."""
        table = dict(self.readout)
        return [table.get(int(w)) for w in wires]

    def errors_for(self, gate: str, wires: Sequence[int]) -> list[S.ErrorSpec]:
        """The errors that follow ``gate`` on ``wires`` (local rules take precedence, as in Aer)."""
        key = (gate, tuple(wires))
        local = self._index["local"].get(key)
        if local is not None:
            return local
        return self._index["every"].get(gate, [])

    def apply(self, circuit: Circuit) -> NoisyCircuit:
        """The circuit with this model's channels inserted after its gates."""
        if not isinstance(circuit, Circuit):
            raise NoiseModelError(f"apply needs a tinyqml Circuit, got {type(circuit).__name__}")
        steps: list[int | ChannelOp] = []
        for i, op in enumerate(circuit.ops):
            steps.append(i)
            for spec in self.errors_for(_rule_gate(op.gate.name, len(op.wires)), op.wires):
                ch = spec.channel()
                if ch.n_wires != len(op.wires):
                    raise NoiseModelError(f"error {ch.name!r} on {ch.n_wires} qubit(s) after {op.gate.name} on "
                                          f"{len(op.wires)} wires {op.wires}")
                steps.append(ChannelOp(ch, op.wires))
        return NoisyCircuit(circuit, tuple(steps))

    def scaled(self, factor: float) -> "NoiseModel":
        """Every error rate multiplied by ``factor``: gate errors, ``1/T1`` and ``1/T2``,
        damping rates, Pauli probabilities and readout flip probabilities.

        >>> from tinyqml.noise import NoiseModel, BitFlip, ReadoutError
        >>> nm = NoiseModel().add("X", BitFlip(0.01)).with_readout(0, ReadoutError(0.02, 0.01))
        >>> s = nm.scaled(4)
        >>> s.rules[0].error.p, s.readout[0][1].p0_given_1
        (0.04, 0.08)
        """
        f = S._check_factor(factor)
        rules = tuple(replace(r, error=r.error.scaled(f)) for r in self.rules)
        readout = tuple(
            (q, C.ReadoutError(S.scale_probability(f"P(0|1) of qubit {q}", e.p0_given_1, f),
                               S.scale_probability(f"P(1|0) of qubit {q}", e.p1_given_0, f)))
            for q, e in self.readout)
        label = f"{self.name} x{f:g}" if self.name else ""
        return NoiseModel(rules, readout, label)

    # ------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "tinyqml_noise_model": JSON_VERSION,
            "name": self.name,
            "rules": [r.to_dict() for r in self.rules],
            "readout": [{"qubit": q, "p0_given_1": e.p0_given_1, "p1_given_0": e.p1_given_0}
                        for q, e in self.readout],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NoiseModel":
        if not isinstance(d, dict) or d.get("tinyqml_noise_model") != JSON_VERSION:
            raise NoiseModelError("not a tinyqml noise model: expected a JSON object with "
                                  f"\"tinyqml_noise_model\": {JSON_VERSION}")
        try:
            rules = tuple(NoiseRule.from_dict(r) for r in d.get("rules", []))
            readout = tuple((int(r["qubit"]), C.ReadoutError(r["p0_given_1"], r["p1_given_0"]))
                            for r in d.get("readout", []))
        except NoiseModelError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # ValueError: also NoiseParameterError, ...
            raise NoiseModelError(f"bad noise model entry: {exc!r}") from None
        return cls(rules, readout, str(d.get("name", "")))

    @classmethod
    def from_json(cls, text: str) -> "NoiseModel":
        try:
            d = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
        except (json.JSONDecodeError, TypeError) as exc:
            raise NoiseModelError(f"noise model JSON does not parse: {exc}") from None
        return cls.from_dict(d)

    # ------------------------------------------------------------- Qiskit

    @classmethod
    def from_backend(cls, backend: Any, *, gate_error: bool = True, thermal_relaxation: bool = True,
                     readout_error: bool = True, asymmetric_readout: bool = True) -> "NoiseModel":
        """A model from a Qiskit ``BackendV2``'s calibration (works offline on the fake backends).

        Gate errors follow Qiskit Aer's ``NoiseModel.from_backend`` (temperature 0):
        for every calibrated gate and qubit tuple, thermal relaxation from T1, T2 and the
        gate's duration, preceded by a depolarizing error that brings the average gate
        infidelity to the reported error (:class:`~tinyqml.noise.specs.DeviceGateError`).
        Measure, reset and delay carry no gate error. Readout errors use the calibrated
        asymmetric ``P(0|1)`` and ``P(1|0)`` from ``backend.properties()`` when the backend has
        them; with ``asymmetric_readout=False`` (or without properties) both equal the
        measure error, which is what Aer's ``from_backend`` does.
        """
        target = getattr(backend, "target", None)
        if target is None or not hasattr(target, "qubit_properties"):
            raise NoiseModelError(f"from_backend needs a Qiskit BackendV2 with a target, got "
                                  f"{type(backend).__name__}")
        names = _qiskit_to_tinyqml()
        qprops = target.qubit_properties or [None] * target.num_qubits
        rules: list[NoiseRule] = []
        skipped: set[str] = set()
        for op_name in target.operation_names:
            props = target[op_name]
            if op_name in ("measure", "reset", "delay") or not props:
                continue
            tq_name = names.get(op_name)
            if tq_name is None:
                skipped.add(op_name)
                continue
            for qargs, ip in props.items():
                if ip is None or qargs is None:
                    continue
                spec = _device_spec(ip, qargs, qprops, gate_error, thermal_relaxation)
                if spec is not None:
                    rules.append(NoiseRule(tq_name, spec, tuple(int(q) for q in qargs)))
        readout = _backend_readout(backend, target, asymmetric_readout) if readout_error else ()
        return cls(tuple(rules), readout, str(getattr(backend, "name", type(backend).__name__)))

    def to_aer(self) -> Any:
        """The equivalent ``qiskit_aer.noise.NoiseModel`` (errors as Kraus channels).

        Multi-qubit Kraus matrices are reordered into Qiskit's little-endian convention,
        readout confusion matrices are transposed into Aer's rows-are-true-states form.
        """
        try:
            from qiskit.quantum_info import Kraus
            from qiskit_aer import noise as aer_noise
        except ImportError as exc:  # pragma: no cover - the interop extra is installed in tests
            raise InteropError("to_aer needs qiskit-aer: pip install 'tinyqml[interop]'") from exc
        qnames = _tinyqml_to_qiskit()
        missing = sorted({r.gate for r in self.rules} - set(qnames))
        if missing:
            raise InteropError(f"to_aer: no Qiskit gate name for {', '.join(missing)}; Aer attaches errors to "
                               "named gates (rules on these gates cannot be converted)")
        basis = sorted({qnames[r.gate] for r in self.rules} | {"rz", "sx", "x", "cx"})
        nm = aer_noise.NoiseModel(basis_gates=basis)
        grouped: dict[tuple[str, tuple[int, ...] | None], list[C.Channel]] = {}
        for r in self.rules:
            grouped.setdefault((r.gate, r.qubits), []).append(r.error.channel())
        for (gate, qubits), chans in grouped.items():
            ch = C.compose(*chans) if len(chans) > 1 else chans[0]
            err = aer_noise.QuantumError(Kraus([_little_endian(k, ch.n_wires) for k in ch.kraus]))
            if qubits is None:
                nm.add_all_qubit_quantum_error(err, [qnames[gate]], warnings=False)
            else:
                nm.add_quantum_error(err, [qnames[gate]], list(qubits), warnings=False)
        for q, e in self.readout:
            probs = [[1 - e.p1_given_0, e.p1_given_0], [e.p0_given_1, 1 - e.p0_given_1]]
            nm.add_readout_error(aer_noise.ReadoutError(probs), [q], warnings=False)
        return nm


# --------------------------------------------------------------------------- helpers


def _rule_gate(name: str, k: int) -> str:
    """The gate name rules are looked up under: MCX on 2 / 3 wires is CX / CCX (as in Qiskit)."""
    if name == "MCX" and k <= 3:
        return "CX" if k == 2 else "CCX"
    return name


def _little_endian(k: Any, n: int) -> Any:
    """A matrix on ``n`` wires (first wire most significant) in Qiskit's qubit order."""
    m = k.numpy().reshape([2] * (2 * n))
    rev = list(range(n - 1, -1, -1))
    return m.transpose(rev + [n + r for r in rev]).reshape(2 ** n, 2 ** n)


def _qiskit_to_tinyqml() -> dict[str, str]:
    from qiskit.circuit.library import get_standard_gate_name_mapping

    from tinyqml.qml.qiskit_convert import _tables

    from_cls, _ = _tables()
    out = {}
    for name, inst in get_standard_gate_name_mapping().items():
        tq_name = from_cls.get(getattr(inst, "base_class", type(inst)))
        if tq_name is not None:
            out[name] = tq_name
    return out


def _tinyqml_to_qiskit() -> dict[str, str]:
    out: dict[str, str] = {}
    for qname, tname in _qiskit_to_tinyqml().items():
        out.setdefault(tname, qname)
    return out


def _device_spec(ip: Any, qargs: Sequence[int], qprops: Sequence[Any], gate_error: bool,
                 thermal: bool) -> S.DeviceGateError | None:
    duration = ip.duration if thermal else None
    error = ip.error if gate_error else None
    if not duration and not error:
        return None
    t1, t2 = [], []
    for q in qargs:
        qp = qprops[q] if q < len(qprops) else None
        a = getattr(qp, "t1", None)
        b = getattr(qp, "t2", None)
        t1.append(math.inf if a is None else float(a))
        t2.append((2 * t1[-1]) if b is None else float(b))
    return S.DeviceGateError(error=error, duration=duration, t1=tuple(t1), t2=tuple(t2), relaxation=thermal)


def _backend_readout(backend: Any, target: Any, asymmetric: bool) -> tuple[tuple[int, C.ReadoutError], ...]:
    if "measure" not in target.operation_names:
        return ()
    props = None
    if asymmetric and callable(getattr(backend, "properties", None)):
        try:
            props = backend.properties()
        except Exception:  # noqa: BLE001 - a backend without properties: fall back to the target
            props = None
    out = []
    for qargs, ip in (target["measure"] or {}).items():
        if ip is None or qargs is None:
            continue
        q = int(qargs[0])
        p01 = p10 = None
        if props is not None:
            try:
                qp = props.qubit_property(q)
                p01 = float(qp["prob_meas0_prep1"][0])
                p10 = float(qp["prob_meas1_prep0"][0])
            except (KeyError, TypeError, IndexError, AttributeError):
                p01 = p10 = None
        if p01 is None or p10 is None:
            if ip.error is None:
                continue
            p01 = p10 = float(ip.error)
        out.append((q, C.ReadoutError(p0_given_1=p01, p1_given_0=p10)))
    return tuple(out)


def as_noisy(circuit: Circuit | NoisyCircuit, noise_model: NoiseModel | None) -> NoisyCircuit:
    """A :class:`NoisyCircuit` from a circuit and an optional model (or a ready noisy circuit)."""
    if isinstance(circuit, NoisyCircuit):
        if noise_model is not None:
            raise NoiseModelError("give either a NoisyCircuit or a Circuit with a noise_model, not both")
        return circuit
    if not isinstance(circuit, Circuit):
        raise NoiseModelError(f"expected a tinyqml Circuit or NoisyCircuit, got {type(circuit).__name__}")
    if noise_model is None:
        return NoisyCircuit.plain(circuit)
    if not isinstance(noise_model, NoiseModel):
        raise NoiseModelError(f"noise_model must be a tinyqml.noise.NoiseModel, got {type(noise_model).__name__}")
    return noise_model.apply(circuit)

