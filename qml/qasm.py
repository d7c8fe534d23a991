"""OpenQASM 2 and 3 import and export through Qiskit's ``qasm2`` / ``qasm3`` modules.

:func:`from_qasm` picks the reader from the version header (``OPENQASM 2.0;`` or
``OPENQASM 3``; a program without a header is read as OpenQASM 3, whose header is
optional), loads the text with Qiskit and converts the circuit with
:func:`~tinyqml.qml.qiskit_convert.from_qiskit`; gates the program defines itself
are expanded through their bodies. Text that does not parse raises
:class:`~tinyqml.qml.errors.QasmError` carrying the parser's ``line``, ``column``
and ``parser_message`` when the parser reports them.

:func:`to_qasm` writes a circuit with Qiskit's exporters. OpenQASM 2 has no free
parameters, so weights and inputs must be bound (``weights=``, ``inputs=``); in
OpenQASM 3 unbound references become ``input float[64]`` declarations named
``w_<i>`` and ``x_<i>`` (see :meth:`ParameterMap.default <tinyqml.qml.qiskit_convert.ParameterMap.default>`
with ``flat=True``; pass that map to :func:`from_qasm` to read the file back with
the same indices). Gates outside the OpenQASM standard library are written as
``gate`` definitions, which drop global phases: a round trip keeps the state up
to a global phase.

>>> import tinyqml.qml as tq
>>> from tinyqml.qml.qiskit_convert import ParameterMap
>>> c = tq.CircuitBuilder(2).h(0).cx(0, 1).rz(1, tq.weight(0, scale=0.5)).build()
>>> text = to_qasm(c)
>>> print(text.strip())
OPENQASM 3.0;
include "stdgates.inc";
input float[64] w_0;
qubit[2] q;
h q[0];
cx q[0], q[1];
rz(0.5*w_0) q[1];
>>> back, pm = from_qasm(text, ParameterMap.default(c, flat=True))
>>> back == c, pm.as_dict()
(True, {'w_0': ('weight', 0)})
>>> print(to_qasm(c, version=2, weights=[1.0]).splitlines()[-1])
rz(0.5) q[1];
>>> from_qasm('OPENQASM 2.0;\\ninclude "qelib1.inc";\\nqreg q[1];\\nh q[0]\\nx q[0];')
Traceback (most recent call last):
...
tinyqml.qml.errors.QasmError: invalid OpenQASM 2 at line 5, column 0: needed ';', but instead saw an identifier
    x q[0];
"""

from __future__ import annotations

import re
from typing import Any

from tinyqml.qml import gates as G
from tinyqml.qml.circuit import Circuit, Op
from tinyqml.qml.errors import InteropError, ParameterError, QasmError
from tinyqml.qml.qiskit_convert import ParameterMap, ParametersArg, _qiskit, bind, from_qiskit, to_qiskit

#: leading whitespace and comments, then the version statement (its ';' is left to the parser)
_HEADER = re.compile(r"\A(?:\s+|//[^\n]*(?:\n|\Z)|/\*.*?\*/)*OPENQASM\s+(\d+)(?:\.(\d+))?", re.S)
_BLANK = re.compile(r"\A(?:\s+|//[^\n]*(?:\n|\Z)|/\*.*?\*/)*\Z", re.S)
#: "<input>:3,5: message" (qasm2) and "3,5: message" (qasm3 importer)
_LOCATED = re.compile(r"\A\s*(?:<input>:)?(\d+),(\d+):\s*(.*)\Z", re.S)


def qasm_version(text: str) -> int:
    """The major OpenQASM version of ``text``: 2 or 3 (3 when the header is missing).

    >>> qasm_version("// a comment\\nOPENQASM 2.0;\\nqreg q[1];"), qasm_version("qubit q;")
    (2, 3)
    """
    text = _as_text(text)
    if _BLANK.match(text):
        raise QasmError("empty OpenQASM program: no statements found", parser_message="empty program")
    m = _HEADER.match(text)
    if m is None:
        return 3
    major = int(m.group(1))
    if major not in (2, 3):
        line = text[: m.start(1)].count("\n") + 1
        raise QasmError(f"unsupported OpenQASM version {m.group(1)}{'.' + m.group(2) if m.group(2) else ''} "
                        "(tinyqml reads versions 2 and 3)", line=line, parser_message="unsupported version")
    return major


def _as_text(text: Any) -> str:
    if isinstance(text, (bytes, bytearray)):
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise QasmError(f"OpenQASM text must be UTF-8: {exc}", parser_message=str(exc)) from None
    if not isinstance(text, str):
        raise QasmError(f"OpenQASM text must be a string, got {type(text).__name__}")
    return text


def _node_location(exc: BaseException) -> tuple[int | None, int | None]:
    """Line and column of the innermost OpenQASM 3 syntax node being converted when ``exc`` was raised.

    Qiskit's OpenQASM 3 importer locates most of its errors itself; errors raised
    deeper (a gate called with the wrong number of arguments reaches Qiskit's gate
    constructors) carry no location, so the importer's frames are searched for the
    statement it was visiting.
    """
    try:
        from openqasm3.ast import QASMNode
    except ImportError:  # pragma: no cover
        return None, None
    found: tuple[int | None, int | None] = (None, None)
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            span = getattr(value, "span", None) if isinstance(value, QASMNode) else None
            if span is not None:
                found = (span.start_line, span.start_column)
        tb = tb.tb_next
    return found


def _error(version: int, exc: BaseException, text: str, line: int | None = None, column: int | None = None,
           message: str | None = None) -> QasmError:
    """A :class:`QasmError` from a reader's exception, with its location when it can be found."""
    if message is None:
        message = str(getattr(exc, "message", None) or exc).strip().strip('"')
        m = _LOCATED.match(message)
        if m:
            line, column, message = int(m.group(1)), int(m.group(2)), m.group(3).strip()
        elif version == 3:
            line, column = _node_location(exc)
    message = message or type(exc).__name__
    where = f" at line {line}, column {column}" if line is not None else ""
    lines = text.splitlines()
    snippet = lines[line - 1].strip() if line is not None and 0 < line <= len(lines) else ""
    source = "\n    " + "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in snippet) if snippet else ""
    return QasmError(f"invalid OpenQASM {version}{where}: {message}{source}", line=line, column=column,
                     parser_message=message)


def _check_qasm3_syntax(text: str) -> None:
    """Run the OpenQASM 3 reference grammar with a raising listener (line, column, message; no stderr noise)."""
    try:
        from antlr4 import CommonTokenStream, InputStream
        from antlr4.error.ErrorListener import ErrorListener
        from openqasm3._antlr.qasm3Lexer import qasm3Lexer
        from openqasm3._antlr.qasm3Parser import qasm3Parser
    except ImportError:  # pragma: no cover - the Qiskit reader reports the error itself
        return

    class _Raise(ErrorListener):
        def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):  # noqa: N802, N803
            raise _error(3, SyntaxError(msg), text, line, column, msg)

    lexer = qasm3Lexer(InputStream(text))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Raise())
    parser = qasm3Parser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(_Raise())
    parser.program()


def _load(text: str, version: int) -> Any:
    """The Qiskit circuit of an OpenQASM program (any reader failure becomes a QasmError)."""
    _qiskit()  # a named error when Qiskit is missing
    if version == 2:
        from qiskit import qasm2

        try:
            return qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
        except Exception as exc:  # noqa: BLE001 - every reader failure is reported as a QasmError
            raise _error(2, exc, text) from exc
    _check_qasm3_syntax(text)
    try:
        from qiskit import qasm3

        return qasm3.loads(text)
    except QasmError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _error(3, exc, text) from exc


def from_qasm(text: str | bytes, parameters: ParametersArg = None, *, decompose: bool = False,
              drop_final_measurements: bool = False) -> tuple[Circuit, ParameterMap]:
    """A tinyqml circuit and its parameter map from OpenQASM 2 or 3 text.

    The options are those of :func:`~tinyqml.qml.qiskit_convert.from_qiskit`:
    ``parameters`` maps OpenQASM 3 ``input`` names to weights / features (all
    weights by default), ``decompose`` rewrites standard gates tinyqml lacks,
    ``drop_final_measurements`` removes the closing measurements.

    >>> c, pm = from_qasm('''OPENQASM 3.0;
    ... include "stdgates.inc";
    ... input float[64] pixel;
    ... input float[64] theta;
    ... gate entangle(a) p, q { cx p, q; rz(a) q; cx p, q; }
    ... qubit[2] q;
    ... bit[2] c;
    ... ry(pixel) q[0];
    ... entangle(2 * theta) q[0], q[1];
    ... c = measure q;
    ... ''', {"pixel": ("feature", 0)}, drop_final_measurements=True)
    >>> [op.name for op in c.ops], pm.as_dict()
    (['RY', 'CX', 'RZ', 'CX'], {'theta': ('weight', 0), 'pixel': ('feature', 0)})
    """
    text = _as_text(text)
    version = qasm_version(text)
    qc = _load(text, version)
    return from_qiskit(qc, parameters, decompose=decompose, drop_final_measurements=drop_final_measurements)


def _lower_multirz(circuit: Circuit) -> Circuit:
    """MultiRZ as RZ / RZZ / a CX ladder around an RZ (exact), so exporters see standard gates only."""
    ops: list[Op] = []
    for op in circuit.ops:
        if op.gate is not G.MultiRZ:
            ops.append(op)
            continue
        w = op.wires
        if len(w) == 1:
            ops.append(Op(G.RZ, w, op.params))
        elif len(w) == 2:
            ops.append(Op(G.RZZ, w, op.params))
        else:
            ladder = [Op(G.CX, (a, b)) for a, b in zip(w[:-1], w[1:])]
            ops += ladder + [Op(G.RZ, (w[-1],), op.params)] + ladder[::-1]
    return circuit.with_ops(ops)


def to_qasm(circuit: Circuit, version: int = 3, *, weights: Any = None, inputs: Any = None,
            parameter_map: ParametersArg = None) -> str:
    """OpenQASM text of a circuit (``version`` 2 or 3), written by Qiskit's exporters.

    ``weights`` / ``inputs`` (one sample) bind references to numbers first;
    OpenQASM 2 needs every reference bound. ``parameter_map`` names the OpenQASM 3
    inputs (default ``w_<i>`` / ``x_<i>``; Qiskit's exporter rewrites names that are
    not OpenQASM identifiers, ``x[0]`` becomes ``_x_0_``). ``MultiRZ`` is written as
    a CX ladder around an RZ, the other gates as their Qiskit counterparts.
    """
    if version not in (2, 3):
        raise InteropError(f"OpenQASM version must be 2 or 3, got {version!r}")
    if not isinstance(circuit, Circuit):
        raise InteropError(f"to_qasm needs a tinyqml Circuit, got {type(circuit).__name__}")
    _qiskit()  # a named error when Qiskit is missing
    c = bind(circuit, weights, inputs) if weights is not None or inputs is not None else circuit
    if version == 2 and (c.n_weights or c.n_inputs):
        raise ParameterError("OpenQASM 2 has no free parameters: pass weights= (and inputs= for circuits that read "
                             "input features) to bind them, or export OpenQASM 3")
    pmap = ParameterMap.default(c, flat=True) if parameter_map is None else parameter_map
    qc, _ = to_qiskit(_lower_multirz(c), pmap)
    try:
        from qiskit import qasm2, qasm3

        return qasm2.dumps(qc) if version == 2 else qasm3.dumps(qc)
    except Exception as exc:  # noqa: BLE001 - name the failure as an interop error
        raise InteropError(f"Qiskit could not export the circuit as OpenQASM {version}: {exc}") from exc


__all__ = ["from_qasm", "qasm_version", "to_qasm"]
