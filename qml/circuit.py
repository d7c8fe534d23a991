"""Immutable circuit description: operations, parameter references, JSON.

A circuit is a tuple of :class:`Op` (gate, wires, parameter references) on a fixed
number of wires. A :class:`Param` is a constant, a trainable weight index or an
input-feature reference, so the same circuit object is reused for every batch.

>>> import tinyqml.qml as tq
>>> b = tq.CircuitBuilder(2)
>>> b.h(0).cx(0, 1).ry(1, tq.weight(0))
CircuitBuilder(2 wires, 3 ops)
>>> c = b.build()
>>> c.depth, c.two_qubit_count, c.n_weights
(3, 1, 1)
>>> tq.Circuit.from_json(c.to_json()) == c
True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np

from tinyqml.qml import gates as G
from tinyqml.qml.errors import CircuitFormatError, NotUnitaryError, ParameterError, WireError

JSON_VERSION = 1


@dataclass(frozen=True)
class Param:
    """A reference to a gate parameter's value.

    ``angle = scale * base + offset`` where ``base`` is

    - ``kind="const"``: ``value``;
    - ``kind="weight"``: ``weights[index[0]]``;
    - ``kind="feature"``: ``prod(inputs[:, i] + feature_shift for i in index)``
      (one index is plain angle encoding; two give the IQP products).
    """

    kind: str
    index: tuple[int, ...] = ()
    value: float = 0.0
    scale: float = 1.0
    offset: float = 0.0
    feature_shift: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("const", "weight", "feature"):
            raise ParameterError(f"Param kind must be 'const', 'weight' or 'feature', got {self.kind!r}")
        if self.kind == "weight" and len(self.index) != 1:
            raise ParameterError(f"a weight reference needs exactly one index, got {self.index!r}")
        if self.kind == "feature" and not self.index:
            raise ParameterError("a feature reference needs at least one input index")
        if any((not isinstance(i, (int, np.integer))) or i < 0 for i in self.index):
            raise ParameterError(f"parameter indices must be non-negative integers, got {self.index!r}")
        # plain int / float fields (numpy scalars would break to_json and turn inverses' offsets into float32)
        object.__setattr__(self, "index", tuple(int(i) for i in self.index))
        for name in ("value", "scale", "offset", "feature_shift"):
            v = getattr(self, name)
            try:
                if isinstance(v, (str, bytes)):
                    raise TypeError
                f = float(v)
            except (TypeError, ValueError):
                raise ParameterError(f"Param.{name} must be a real number, got {v!r}") from None
            if not math.isfinite(f):
                raise ParameterError(f"Param.{name} must be finite, got {v!r}")
            object.__setattr__(self, name, f)

    @property
    def is_trainable(self) -> bool:
        return self.kind == "weight"

    def negated(self, offset: float = 0.0) -> "Param":
        """The reference to ``-angle + offset`` (used by inverses)."""
        return replace(self, scale=-self.scale, offset=-self.offset + offset, value=self.value)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "const":
            d["value"] = self.value
        else:
            d["index"] = list(self.index)
        for name, default in (("scale", 1.0), ("offset", 0.0), ("feature_shift", 0.0)):
            if getattr(self, name) != default:
                d[name] = getattr(self, name)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Param":
        try:
            return cls(
                kind=d["kind"], index=tuple(int(i) for i in d.get("index", ())), value=float(d.get("value", 0.0)),
                scale=float(d.get("scale", 1.0)), offset=float(d.get("offset", 0.0)),
                feature_shift=float(d.get("feature_shift", 0.0)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(inf) of an index
            raise CircuitFormatError(f"bad parameter entry {d!r}: {exc}") from None


def const(value: float) -> Param:
    """A fixed angle. ``const(0.5)``"""
    return Param("const", value=float(value))


def weight(index: int, scale: float = 1.0, offset: float = 0.0) -> Param:
    """Trainable weight ``weights[index]`` (times ``scale``, plus ``offset``)."""
    return Param("weight", index=(int(index),), scale=scale, offset=offset)


def feature(index: int | Sequence[int], scale: float = 1.0, offset: float = 0.0, shift: float = 0.0) -> Param:
    """Input feature ``inputs[:, index]``; a sequence of indices multiplies the (shifted) features."""
    idx = (int(index),) if isinstance(index, (int, np.integer)) else tuple(int(i) for i in index)
    return Param("feature", index=idx, scale=scale, offset=offset, feature_shift=shift)


def _as_param(p: Any) -> Param:
    if isinstance(p, Param):
        return p
    if isinstance(p, (int, float, np.floating, np.integer)) and not isinstance(p, bool):
        return const(float(p))
    raise ParameterError(f"gate parameters must be Param references or numbers, got {type(p).__name__}")


def _check_unitary(m: np.ndarray, k: int) -> np.ndarray:
    d = 2**k
    if m.shape != (d, d):
        raise NotUnitaryError(f"QubitUnitary on {k} wires needs a {d}x{d} matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise NotUnitaryError("QubitUnitary matrix contains NaN or inf")
    err = np.abs(m.conj().T @ m - np.eye(d)).max()
    if err > 1e-8:
        raise NotUnitaryError(f"QubitUnitary matrix is not unitary: max |U^dagger U - I| = {err:.2e} (tolerance 1e-8)")
    return m


@dataclass(frozen=True)
class Op:
    """One gate application: ``gate`` on ``wires`` with parameter references ``params``.

    ``matrix`` holds the (checked) unitary of a ``QubitUnitary`` and is ``None`` otherwise.
    """

    gate: G.Gate
    wires: tuple[int, ...]
    params: tuple[Param, ...] = ()
    matrix: tuple[tuple[complex, ...], ...] | None = field(default=None, compare=True)

    def __post_init__(self) -> None:
        if not isinstance(self.gate, G.Gate):
            object.__setattr__(self, "gate", G.get_gate(self.gate))
        wires = tuple(self.wires)
        if any(not isinstance(w, (int, np.integer)) or isinstance(w, bool) for w in wires):
            raise WireError(f"{self.gate.name}: wires must be integers, got {wires!r}")
        wires = tuple(int(w) for w in wires)
        object.__setattr__(self, "wires", wires)
        if len(set(wires)) != len(wires):
            raise WireError(f"{self.gate.name}: duplicated wire in {wires}")
        if any(w < 0 for w in wires):
            raise WireError(f"{self.gate.name}: negative wire in {wires}")
        if not self.gate.check_wires(len(wires)):
            need = self.gate.num_wires or f"at least {self.gate.min_wires}"
            raise WireError(f"{self.gate.name} acts on {need} wires, got {len(wires)}: {wires}")
        params = tuple(_as_param(p) for p in self.params)
        object.__setattr__(self, "params", params)
        if len(params) != self.gate.num_params:
            raise ParameterError(f"{self.gate.name} takes {self.gate.num_params} parameters, got {len(params)}")
        if self.gate is G.QubitUnitary:
            if self.matrix is None:
                raise NotUnitaryError("QubitUnitary needs a matrix")
            m = _check_unitary(np.asarray(self.matrix, dtype=np.complex128), len(wires))
            object.__setattr__(self, "matrix", tuple(tuple(complex(v) for v in row) for row in m))
        elif self.matrix is not None:
            raise ParameterError(f"only QubitUnitary takes a matrix, not {self.gate.name}")

    @property
    def name(self) -> str:
        return self.gate.name

    def unitary_array(self) -> np.ndarray:
        """The QubitUnitary matrix as a numpy array."""
        assert self.matrix is not None
        return np.asarray(self.matrix, dtype=np.complex128)

    def inverse(self) -> "Op":
        g = self.gate
        if g is G.QubitUnitary:
            return Op(g, self.wires, (), _tuple_matrix(self.unitary_array().conj().T))
        if g.inverse_name is None:  # no inverse gate in the set: a fixed unitary
            import torch

            m = g.matrix(torch.zeros(1, 0, dtype=torch.float64), len(self.wires), torch.complex128)[0].numpy()
            return Op(G.QubitUnitary, self.wires, (), _tuple_matrix(m.conj().T))
        params = tuple(
            replace(self.params[src], scale=sign * self.params[src].scale,
                    offset=sign * self.params[src].offset + off)
            for src, sign, off in g.inverse
        )
        return Op(G.get_gate(g.inverse_name), self.wires, params)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"gate": self.gate.name, "wires": list(self.wires)}
        if self.params:
            d["params"] = [p.to_dict() for p in self.params]
        if self.matrix is not None:
            d["matrix"] = [[[v.real, v.imag] for v in row] for row in self.matrix]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Op":
        if not isinstance(d, dict) or "gate" not in d or "wires" not in d:
            raise CircuitFormatError(f"an operation needs 'gate' and 'wires', got {d!r}")
        if not isinstance(d["wires"], list) or not isinstance(d.get("params", []), list):
            raise CircuitFormatError(f"an operation's 'wires' and 'params' must be lists, got {d!r}")
        matrix = None
        if "matrix" in d:
            try:
                matrix = tuple(tuple(complex(re, im) for re, im in row) for row in d["matrix"])
            except (TypeError, ValueError) as exc:
                raise CircuitFormatError(f"bad matrix in {d['gate']!r}: {exc}") from None
        params = tuple(Param.from_dict(p) for p in d.get("params", ()))
        return cls(G.get_gate(d["gate"]), tuple(d["wires"]), params, matrix)


def _tuple_matrix(m: np.ndarray) -> tuple[tuple[complex, ...], ...]:
    return tuple(tuple(complex(v) for v in row) for row in m)


@dataclass(frozen=True)
class Circuit:
    """An immutable quantum circuit on ``n_wires`` wires.

    Build one with :class:`CircuitBuilder`, or directly from operations::

        Circuit(2, (Op(G.H, (0,)), Op(G.CX, (0, 1))))
    """

    n_wires: int
    ops: tuple[Op, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.n_wires, (int, np.integer)) or self.n_wires < 1:
            raise WireError(f"a circuit needs n_wires >= 1, got {self.n_wires!r}")
        object.__setattr__(self, "n_wires", int(self.n_wires))  # a numpy integer would not serialize
        ops = tuple(self.ops)
        for op in ops:
            if not isinstance(op, Op):
                raise CircuitFormatError(f"circuit operations must be Op, got {type(op).__name__}")
            bad = [w for w in op.wires if w >= self.n_wires]
            if bad:
                raise WireError(
                    f"{op.name} on wires {op.wires}: wire {bad[0]} out of range for a {self.n_wires}-wire circuit "
                    f"(valid: 0..{self.n_wires - 1})"
                )
        object.__setattr__(self, "ops", ops)

    # ------------------------------------------------------------------ structure
    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.ops)

    @property
    def n_weights(self) -> int:
        """Number of trainable weights: one more than the largest weight index used."""
        idx = [p.index[0] for op in self.ops for p in op.params if p.kind == "weight"]
        return max(idx) + 1 if idx else 0

    @property
    def n_inputs(self) -> int:
        """Number of input features: one more than the largest feature index used."""
        idx = [i for op in self.ops for p in op.params if p.kind == "feature" for i in p.index]
        return max(idx) + 1 if idx else 0

    @property
    def depth(self) -> int:
        """Circuit depth (layers of gates, each wire busy once per layer)."""
        level = [0] * self.n_wires
        for op in self.ops:
            d = max(level[w] for w in op.wires) + 1
            for w in op.wires:
                level[w] = d
        return max(level, default=0)

    @property
    def gate_counts(self) -> dict[str, int]:
        """Number of operations per gate name."""
        return dict(Counter(op.name for op in self.ops))

    @property
    def two_qubit_count(self) -> int:
        """Number of operations acting on two or more wires."""
        return sum(1 for op in self.ops if len(op.wires) >= 2)

    # ------------------------------------------------------------------ algebra
    def compose(self, other: "Circuit") -> "Circuit":
        """This circuit followed by ``other`` (wire counts are widened to the larger)."""
        return Circuit(max(self.n_wires, other.n_wires), self.ops + other.ops)

    def __add__(self, other: "Circuit") -> "Circuit":
        return self.compose(other)

    def inverse(self) -> "Circuit":
        """The adjoint circuit: reversed order, each operation replaced by its inverse.

        Parameters stay symbolic: a weight or feature reference keeps its index and gets its
        ``scale`` and ``offset`` negated (plus the gate's fixed shift: ``U(t, p, l)^-1 = U(-t, -l, -p)``,
        ``U2(p, l)^-1 = U2(-l - pi, -p + pi)``), so one inverse serves every weight and batch.
        Gates without an inverse in the set (ISWAP) become a ``QubitUnitary`` of the adjoint matrix.

        >>> import torch, tinyqml.qml as tq
        >>> c = tq.CircuitBuilder(2).h(0).crx(0, 1, tq.weight(0, scale=2.0, offset=0.5)).iswap(0, 1).build()
        >>> inv = c.inverse()
        >>> p = inv.ops[1].params[0]
        >>> [op.name for op in inv.ops], (p.kind, p.index, p.scale, p.offset)
        (['QubitUnitary', 'CRX', 'H'], ('weight', (0,), -2.0, -0.5))
        >>> psi = tq.statevector(c + inv, weights=torch.tensor([0.3], dtype=torch.float64))
        >>> round(abs(complex(psi[0, 0])), 12)
        1.0
        """
        return Circuit(self.n_wires, tuple(op.inverse() for op in reversed(self.ops)))

    def with_ops(self, ops: Iterable[Op]) -> "Circuit":
        """A circuit on the same wires with other operations (for passes that rewrite)."""
        return Circuit(self.n_wires, tuple(ops))

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        return {"format": "tinyqml.circuit", "version": JSON_VERSION, "n_wires": self.n_wires,
                "ops": [op.to_dict() for op in self.ops]}

    def to_json(self, **kwargs: Any) -> str:
        """JSON text; ``Circuit.from_json`` reads it back to an equal circuit."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Circuit":
        if not isinstance(d, dict) or d.get("format") != "tinyqml.circuit":
            raise CircuitFormatError("not a tinyqml circuit: expected an object with format 'tinyqml.circuit'")
        if d.get("version") != JSON_VERSION:
            raise CircuitFormatError(f"unsupported circuit format version {d.get('version')!r} (supported: 1)")
        ops = d.get("ops")
        if not isinstance(ops, list):
            raise CircuitFormatError("'ops' must be a list of operations")
        if not isinstance(d.get("n_wires"), int) or isinstance(d.get("n_wires"), bool):
            raise CircuitFormatError(f"'n_wires' must be an integer, got {d.get('n_wires')!r}")
        return cls(d.get("n_wires"), tuple(Op.from_dict(o) for o in ops))  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, text: str) -> "Circuit":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CircuitFormatError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        return cls.from_dict(d)

    def fingerprint(self) -> str:
        """A stable content hash (hex SHA-256 of the canonical JSON)."""
        return hashlib.sha256(self.to_json(sort_keys=True).encode()).hexdigest()

    def __repr__(self) -> str:
        return f"Circuit({self.n_wires} wires, {len(self.ops)} ops, depth {self.depth})"


class CircuitBuilder:
    """Mutable helper that collects operations and builds an immutable :class:`Circuit`.

    Every gate method returns the builder, so calls chain:

    >>> import tinyqml.qml as tq
    >>> tq.CircuitBuilder(3).h(0).cx(0, 1).ccx(0, 1, 2).build().gate_counts
    {'H': 1, 'CX': 1, 'CCX': 1}
    """

    def __init__(self, n_wires: int) -> None:
        self.n_wires = Circuit(n_wires).n_wires  # validates n_wires (a plain int from here on)
        self._ops: list[Op] = []

    def __repr__(self) -> str:
        return f"CircuitBuilder({self.n_wires} wires, {len(self._ops)} ops)"

    def append(self, gate: G.Gate | str, wires: Sequence[int] | int, *params: Param | float,
               matrix: Any = None) -> "CircuitBuilder":
        """Append ``gate`` on ``wires`` (a name or a :class:`Gate`)."""
        ws = (wires,) if isinstance(wires, (int, np.integer)) else tuple(wires)
        op = Op(G.get_gate(gate) if isinstance(gate, str) else gate, ws, tuple(params),
                None if matrix is None else _tuple_matrix(np.asarray(matrix, dtype=np.complex128)))
        Circuit(self.n_wires, (op,))  # range check now, with the op's name in the message
        self._ops.append(op)
        return self

    def extend(self, circuit: Circuit) -> "CircuitBuilder":
        """Append every operation of ``circuit``."""
        for op in circuit.ops:
            Circuit(self.n_wires, (op,))
            self._ops.append(op)
        return self

    def build(self) -> Circuit:
        return Circuit(self.n_wires, tuple(self._ops))

    # one method per gate; names follow Qiskit's lower-case style
    def i(self, w: int) -> "CircuitBuilder": return self.append(G.I, w)
    def h(self, w: int) -> "CircuitBuilder": return self.append(G.H, w)
    def x(self, w: int) -> "CircuitBuilder": return self.append(G.X, w)
    def y(self, w: int) -> "CircuitBuilder": return self.append(G.Y, w)
    def z(self, w: int) -> "CircuitBuilder": return self.append(G.Z, w)
    def s(self, w: int) -> "CircuitBuilder": return self.append(G.S, w)
    def sdg(self, w: int) -> "CircuitBuilder": return self.append(G.Sdg, w)
    def t(self, w: int) -> "CircuitBuilder": return self.append(G.T, w)
    def tdg(self, w: int) -> "CircuitBuilder": return self.append(G.Tdg, w)
    def sx(self, w: int) -> "CircuitBuilder": return self.append(G.SX, w)
    def sxdg(self, w: int) -> "CircuitBuilder": return self.append(G.SXdg, w)
    def rx(self, w: int, p: Param | float) -> "CircuitBuilder": return self.append(G.RX, w, p)
    def ry(self, w: int, p: Param | float) -> "CircuitBuilder": return self.append(G.RY, w, p)
    def rz(self, w: int, p: Param | float) -> "CircuitBuilder": return self.append(G.RZ, w, p)
    def p(self, w: int, p: Param | float) -> "CircuitBuilder": return self.append(G.P, w, p)
    def u(self, w: int, theta: Param | float, phi: Param | float, lam: Param | float) -> "CircuitBuilder":
        return self.append(G.U, w, theta, phi, lam)
    def u2(self, w: int, phi: Param | float, lam: Param | float) -> "CircuitBuilder":
        return self.append(G.U2, w, phi, lam)
    def cx(self, c: int, t: int) -> "CircuitBuilder": return self.append(G.CX, (c, t))
    def cy(self, c: int, t: int) -> "CircuitBuilder": return self.append(G.CY, (c, t))
    def cz(self, c: int, t: int) -> "CircuitBuilder": return self.append(G.CZ, (c, t))
    def ch(self, c: int, t: int) -> "CircuitBuilder": return self.append(G.CH, (c, t))
    def swap(self, a: int, b: int) -> "CircuitBuilder": return self.append(G.SWAP, (a, b))
    def iswap(self, a: int, b: int) -> "CircuitBuilder": return self.append(G.ISWAP, (a, b))
    def ecr(self, a: int, b: int) -> "CircuitBuilder": return self.append(G.ECR, (a, b))
    def crx(self, c: int, t: int, p: Param | float) -> "CircuitBuilder": return self.append(G.CRX, (c, t), p)
    def cry(self, c: int, t: int, p: Param | float) -> "CircuitBuilder": return self.append(G.CRY, (c, t), p)
    def crz(self, c: int, t: int, p: Param | float) -> "CircuitBuilder": return self.append(G.CRZ, (c, t), p)
    def cp(self, c: int, t: int, p: Param | float) -> "CircuitBuilder": return self.append(G.CP, (c, t), p)
    def cu(self, c: int, t: int, theta: Param | float, phi: Param | float, lam: Param | float) -> "CircuitBuilder":
        return self.append(G.CU, (c, t), theta, phi, lam)
    def rxx(self, a: int, b: int, p: Param | float) -> "CircuitBuilder": return self.append(G.RXX, (a, b), p)
    def ryy(self, a: int, b: int, p: Param | float) -> "CircuitBuilder": return self.append(G.RYY, (a, b), p)
    def rzz(self, a: int, b: int, p: Param | float) -> "CircuitBuilder": return self.append(G.RZZ, (a, b), p)
    def rzx(self, a: int, b: int, p: Param | float) -> "CircuitBuilder": return self.append(G.RZX, (a, b), p)
    def ccx(self, a: int, b: int, t: int) -> "CircuitBuilder": return self.append(G.CCX, (a, b, t))
    def ccz(self, a: int, b: int, t: int) -> "CircuitBuilder": return self.append(G.CCZ, (a, b, t))
    def cswap(self, c: int, a: int, b: int) -> "CircuitBuilder": return self.append(G.CSWAP, (c, a, b))
    def multirz(self, wires: Sequence[int], p: Param | float) -> "CircuitBuilder":
        return self.append(G.MultiRZ, tuple(wires), p)
    def mcx(self, controls: Sequence[int], target: int) -> "CircuitBuilder":
        return self.append(G.MCX, tuple(controls) + (target,))
    def unitary(self, wires: Sequence[int] | int, matrix: Any) -> "CircuitBuilder":
        return self.append(G.QubitUnitary, wires, matrix=matrix)
