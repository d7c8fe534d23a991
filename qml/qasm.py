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

import functools
import re
from typing import Any

from tinyqml.qml import gates as G
from tinyqml.qml.circuit import Circuit, Op
from tinyqml.qml.errors import InteropError, ParameterError, QasmError
from tinyqml.qml.qiskit_convert import (
    ParameterMap,
    ParametersArg,
    _is_user_defined,
    _known,
    _qiskit,
    bind,
    from_qiskit,
    to_qiskit,
)

#: limits on what :func:`from_qasm` reads; larger programs raise :class:`QasmError` before any parser sees them
MAX_QUBITS = 1024  #: qubits a program may declare (registers, ``qubit`` declarations, physical ``$n``)
MAX_CLBITS = 1024  #: classical bits a program may declare
MAX_NESTING = 64  #: depth of nested brackets ``( [ {``
MAX_OPERATORS = 128  #: arithmetic operators in one statement
MAX_OPERATIONS = 100_000  #: gates after expanding the program's gate definitions
MAX_POW_QUBITS = 8  #: qubits of a gate under the OpenQASM 3 ``pow`` modifier (Qiskit builds its matrix)
#: the include files each version reads (built into the readers; no file is ever opened)
STANDARD_INCLUDES = {2: "qelib1.inc", 3: "stdgates.inc"}

#: one token at a position: line comment, string, number, name, operator, bracket, anything else
_TOKEN = re.compile(r"""(?P<space>\s+)|(?P<comment>//[^\n]*)|(?P<string>"[^"\n]*"|'[^'\n]*')
    |(?P<number>\d[\d_]*(?:\.[\d_]*)?(?:[eE][+-]?\d+)?|\.\d[\d_]*(?:[eE][+-]?\d+)?)
    |(?P<name>[^\W\d]\w*|\$\d+)|(?P<op>\*\*|<<|>>|&&|\|\||==|!=|<=|>=|->|[-+*/%^&|~!<>])
    |(?P<open>[(\[{])|(?P<close>[)\]}])|(?P<other>.)""", re.X | re.S)
#: "<input>:3,5: message" (qasm2) and "3,5: message" (qasm3 importer)
_LOCATED = re.compile(r"\A\s*(?:<input>:)?(\d+),(\d+):\s*(.*)\Z", re.S)


def _tokens(text: str, block_comments: bool) -> Any:
    """``(kind, value, line, column)`` of each token of ``text`` but spaces and comments, in one linear pass.

    ``/* ... */`` is a comment only with ``block_comments`` (OpenQASM 3); an unclosed
    one runs to the end of the text, as in the OpenQASM 3 grammar.
    """
    pos, line, line_start, n = 0, 1, 0, len(text)
    while pos < n:
        if block_comments and text.startswith("/*", pos):
            close = text.find("*/", pos + 2)
            end = n if close < 0 else close + 2
        else:
            m = _TOKEN.match(text, pos)
            end = m.end()
            kind = m.lastgroup
            if kind not in ("space", "comment"):
                yield kind, m.group(), line, pos - line_start
        newlines = text.count("\n", pos, end)
        if newlines:
            line += newlines
            line_start = text.rindex("\n", pos, end) + 1
        pos = end


def qasm_version(text: str) -> int:
    """The major OpenQASM version of ``text``: 2 or 3 (3 when the header is missing).

    >>> qasm_version("// a comment\\nOPENQASM 2.0;\\nqreg q[1];"), qasm_version("qubit q;")
    (2, 3)
    """
    text = _as_text(text)
    tokens = _tokens(text, block_comments=True)
    first = next(tokens, None)
    if first is None:
        raise QasmError("empty OpenQASM program: no statements found", parser_message="empty program")
    if first[:2] != ("name", "OPENQASM"):
        return 3
    number = next(tokens, None)
    if number is None or number[0] != "number":
        return 3  # the reader reports the malformed version statement
    major = number[1].split(".")[0]
    if major not in ("2", "3"):
        raise QasmError(f"unsupported OpenQASM version {number[1]} (tinyqml reads versions 2 and 3)",
                        line=number[2], column=number[3], parser_message="unsupported version")
    return int(major)


def _as_text(text: Any) -> str:
    if isinstance(text, (bytes, bytearray)):
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise QasmError(f"OpenQASM text must be UTF-8: {exc}", parser_message=str(exc)) from None
    if not isinstance(text, str):
        raise QasmError(f"OpenQASM text must be a string, got {type(text).__name__}")
    return text


def _refuse(version: int, text: str, line: int | None, column: int | None, message: str) -> QasmError:
    return _error(version, ValueError(message), text, line, column, message)


def _check_limits(text: str, version: int) -> None:
    """Refuse, before parsing, what the readers would take unbounded time, memory or stack for.

    Includes other than the version's standard library (no file is read), brackets
    nested deeper than :data:`MAX_NESTING`, statements with more than
    :data:`MAX_OPERATORS` operators and, in OpenQASM 2, registers and indices
    beyond :data:`MAX_QUBITS` / :data:`MAX_CLBITS` (OpenQASM 3 sizes may be
    constant expressions; the importer checks those).
    """
    depth, operators = 0, 0
    totals = {"qreg": 0, "creg": 0}
    recent: list[tuple[str, str, int, int]] = []  # the last tokens, for "include STRING" and "qreg NAME [ INT ]"
    for token in _tokens(text, block_comments=version == 3):
        kind, value, line, column = token
        recent = recent[-4:] + [token]
        if kind == "open":
            depth += 1
            if depth > MAX_NESTING:
                raise _refuse(version, text, line, column,
                              f"brackets nested more than {MAX_NESTING} deep (tinyqml reads at most {MAX_NESTING})")
        elif kind == "close":
            depth = max(depth - 1, 0)
        if kind == "op":
            operators += 1
            if operators > MAX_OPERATORS:
                raise _refuse(version, text, line, column,
                              f"more than {MAX_OPERATORS} operators in one statement (tinyqml reads at most "
                              f"{MAX_OPERATORS} per statement)")
        elif value in (";", "{", "}"):
            operators = 0
        if kind == "string" and len(recent) >= 2 and recent[-2][:2] == ("name", "include"):
            name = value[1:-1]
            if name != STANDARD_INCLUDES[version]:
                raise _refuse(version, text, line, column,
                              f"include {value} refused: tinyqml reads no files; OpenQASM {version} programs may "
                              f"include only \"{STANDARD_INCLUDES[version]}\"")
        if kind == "name" and value.startswith("$") and (len(value) > 8 or int(value[1:]) >= MAX_QUBITS):
            raise _refuse(version, text, line, column,
                          f"physical qubit {_short(value)} refused: tinyqml reads programs of at most {MAX_QUBITS} "
                          f"qubits ($0 to ${MAX_QUBITS - 1})")
        if version == 2 and kind == "number" and value.isdigit() and len(recent) >= 2 and recent[-2][1] == "[":
            _check_qasm2_size(text, recent, totals)


def _check_qasm2_size(text: str, recent: list[tuple[str, str, int, int]], totals: dict[str, int]) -> None:
    """An OpenQASM 2 integer in brackets: a ``qreg`` / ``creg`` size within the totals, or a bounded index."""
    _, value, line, column = recent[-1]
    shown = value if len(value) <= 24 else value[:24] + "..."
    size = int(value) if len(value) <= 12 else 10**12  # longer ones overflow the reader's integers
    declared = recent[-4][1] if len(recent) >= 4 and recent[-3][0] == "name" else None
    if declared in totals:
        totals[declared] += size
        limit, bits = (MAX_QUBITS, "qubits") if declared == "qreg" else (MAX_CLBITS, "classical bits")
        if totals[declared] > limit:
            raise _refuse(2, text, line, column,
                          f"{declared} of size {shown} refused: tinyqml reads programs of at most {limit} {bits} "
                          f"(the registers so far declare {totals[declared] if size < 10**12 else 'more'})")
    elif size >= MAX_QUBITS + MAX_CLBITS:
        raise _refuse(2, text, line, column,
                      f"index {shown} is out of range of every register (tinyqml reads programs of at most "
                      f"{MAX_QUBITS} qubits and {MAX_CLBITS} classical bits)")


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
    if len(message) > 300:  # readers quote whole tokens (a 10,000-character name)
        message = message[:300] + "..."
    where = f" at line {line}, column {column}" if line is not None else ""
    lines = text.split("\n")  # the readers count lines at '\n' only
    snippet = lines[line - 1] if line is not None and 0 < line <= len(lines) else ""
    if len(snippet) > 120:  # a long line: the part around the column
        start = max(0, min((column or 0) - 40, len(snippet) - 120))
        snippet = ("..." if start else "") + snippet[start:start + 120] + ("..." if start + 120 < len(snippet) else "")
    snippet = snippet.strip()
    source = "\n    " + "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in snippet) if snippet else ""
    return QasmError(f"invalid OpenQASM {version}{where}: {message}{source}", line=line, column=column,
                     parser_message=message)


def _parse_qasm3(text: str) -> Any:
    """The ``openqasm3`` AST of ``text``: the reference grammar with a raising listener (no stderr noise)."""
    try:
        from antlr4 import CommonTokenStream, InputStream
        from antlr4.error.ErrorListener import ErrorListener
        from openqasm3._antlr.qasm3Lexer import qasm3Lexer
        from openqasm3._antlr.qasm3Parser import qasm3Parser
        from openqasm3.parser import QASMNodeVisitor
    except ImportError as exc:  # pragma: no cover - installed with qiskit-qasm3-import
        raise InteropError("reading OpenQASM 3 needs qiskit-qasm3-import: pip install 'tinyqml[interop]'") from exc

    class _Raise(ErrorListener):
        def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):  # noqa: N802, N803
            raise _error(3, SyntaxError(msg), text, line, column, msg)

    lexer = qasm3Lexer(InputStream(text))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Raise())
    parser = qasm3Parser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(_Raise())
    return QASMNodeVisitor().visitProgram(parser.program())


def _short(value: Any) -> str:
    text = str(value) if not isinstance(value, int) or value.bit_length() < 200 else f"2**{value.bit_length() - 1} or more"
    return text if len(text) <= 40 else text[:40] + "..."


@functools.lru_cache(maxsize=1)
def _guarded_converter() -> type:
    """Qiskit's OpenQASM 3 converter with tinyqml's limits on sizes, modifiers and gate expansion."""
    from openqasm3 import ast
    from qiskit.circuit import Gate, QuantumRegister
    from qiskit_qasm3_import.converter import ConvertVisitor, GateBuilder
    from qiskit_qasm3_import.exceptions import ConversionError, raise_from_node
    from qiskit_qasm3_import.state import Scope

    class LazyGate(Gate):
        """A gate defined in the program; its definition is built from its template when first asked for."""

        def __init__(self, builder: "LazyBuilder", parameters: tuple[Any, ...]) -> None:
            super().__init__(builder.name, builder.template.num_qubits, list(parameters))
            self.builder = builder

        def _define(self) -> None:
            self._definition = self.builder.build(self.params)

    class LazyBuilder:
        """Replaces the importer's ``GateBuilder``, which deep-copies the whole nested definition per application
        (time exponential in the nesting of gate definitions); copies of a :class:`LazyGate` share the template."""

        def __init__(self, builder: GateBuilder) -> None:
            self.name, self.template, self.order = builder._name, builder._definition, builder._order

        def __call__(self, *parameters: Any) -> LazyGate:
            if len(parameters) != len(self.order):
                raise ConversionError(f"incorrect number of parameters in call to '{self.name}': expecting "
                                      f"{len(self.order)}, got {len(parameters)}.")
            return LazyGate(self, parameters)

        def build(self, parameters: list[Any]) -> Any:
            if not parameters:
                return self.template.copy()
            return self.template.assign_parameters(dict(zip(self.order, parameters)))

        def __deepcopy__(self, memo: dict) -> "LazyBuilder":
            return self

    class Guarded(ConvertVisitor):
        def _define_gate(self, name: str, definition: Any, *args: Any) -> Any:
            if isinstance(definition, GateBuilder):
                definition = LazyBuilder(definition)
            return super()._define_gate(name, definition, *args)

        def __init__(self) -> None:
            super().__init__()
            self.sizes: dict[str, int] = {}  # gate name -> gates after expanding its definition
            self.total = 0  # gates of the program after expansion

        def _resolve_constant_int(self, node: Any, context: Any) -> int:  # sizes, widths, ctrl counts
            value = super()._resolve_constant_int(node, context)
            if not 0 <= value <= MAX_QUBITS:
                raise_from_node(node, f"the constant {_short(value)} is out of range: register sizes, type widths "
                                      f"and control counts are 0..{MAX_QUBITS} in tinyqml")
            return value

        def visit_QubitDeclaration(self, node: Any, context: Any) -> Any:
            context = super().visit_QubitDeclaration(node, context)
            if context.circuit.num_qubits > MAX_QUBITS:
                raise_from_node(node, f"the program declares {context.circuit.num_qubits} qubits; tinyqml reads "
                                      f"programs of at most {MAX_QUBITS}")
            return context

        def visit_ClassicalDeclaration(self, node: Any, context: Any) -> Any:
            context = super().visit_ClassicalDeclaration(node, context)
            if context.circuit.num_clbits > MAX_CLBITS:
                raise_from_node(node, f"the program declares {context.circuit.num_clbits} classical bits; tinyqml "
                                      f"reads programs of at most {MAX_CLBITS}")
            return context

        def _apply_gate_modifier(self, modifier: Any, gate: Any, context: Any) -> Any:
            if modifier.modifier is ast.GateModifierName.pow and gate.num_qubits > MAX_POW_QUBITS:
                raise_from_node(modifier, f"'pow' of a {gate.num_qubits}-qubit gate refused (its matrix is built); "
                                          f"tinyqml allows 'pow' on gates of at most {MAX_POW_QUBITS} qubits")
            out = super()._apply_gate_modifier(modifier, gate, context)
            if out.num_qubits > MAX_QUBITS:
                raise_from_node(modifier, f"the modified gate acts on {out.num_qubits} qubits; tinyqml reads "
                                          f"programs of at most {MAX_QUBITS}")
            return out

        def visit_QuantumGateDefinition(self, node: Any, context: Any) -> Any:
            size = sum(self.sizes.get(s.name.name, 1) if isinstance(s, ast.QuantumGate) else 1 for s in node.body)
            if size > MAX_OPERATIONS:
                raise_from_node(node, f"gate '{node.name.name}' expands to more than {MAX_OPERATIONS} gates "
                                      f"({size}; tinyqml's limit after expanding gate definitions)")
            context = super().visit_QuantumGateDefinition(node, context)
            self.sizes[node.name.name] = max(size, 1)
            return context

        def visit_QuantumGate(self, node: Any, context: Any) -> Any:
            if context.scope is not Scope.GATE:  # applications inside definitions are counted by their gate
                size = self.sizes.get(node.name.name, 1)
                if size > 1:  # a broadcast over registers applies (and copies) the definition once per qubit
                    qargs = [self._resolve_qarg(q, context) for q in node.qubits]
                    size *= max((len(q) for q in qargs if isinstance(q, (list, QuantumRegister))), default=1)
                self.total += size
                if self.total > MAX_OPERATIONS:
                    raise_from_node(node, f"the program expands to more than {MAX_OPERATIONS} gates (tinyqml's "
                                          "limit after expanding gate definitions)")
            return super().visit_QuantumGate(node, context)

    return Guarded


def _expanded_size(qc: Any) -> int:
    """Gates of a Qiskit circuit after expanding the definitions :func:`from_qiskit` expands (each counted once)."""
    sizes: dict[str, int] = {}

    def size(circuit: Any, depth: int) -> int:
        total = 0
        for ins in circuit.data:
            op = ins.operation
            if depth < 64 and _is_user_defined(op) and _known(op, list(range(op.num_qubits))) is None:
                if op.name not in sizes:
                    definition = getattr(op, "definition", None)
                    sizes[op.name] = 1 if definition is None else max(size(definition, depth + 1), 1)
                total += sizes[op.name]
            else:
                total += 1
            if total > MAX_OPERATIONS:
                break
        return total

    return size(qc, 0)


def _reader_failure(version: int, exc: BaseException, text: str) -> QasmError:
    """A :class:`QasmError` for a reader's failure that is not a syntax error."""
    if isinstance(exc, RecursionError):
        return _error(version, exc, text, message="the program nests statements or expressions too deeply for "
                                                  "the reader (Python's recursion limit)")
    if isinstance(exc, MemoryError):
        return _error(version, exc, text, message="the reader ran out of memory on this program")
    return _error(version, exc, text)


def _load(text: str, version: int) -> Any:
    """The Qiskit circuit of an OpenQASM program (any reader failure becomes a QasmError)."""
    _qiskit()  # a named error when Qiskit is missing
    _check_limits(text, version)
    try:
        if version == 2:
            from qiskit import qasm2

            # include_path=(): qelib1.inc is built in, and no other file can be opened
            qc = qasm2.loads(text, include_path=(), custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
            if _expanded_size(qc) > MAX_OPERATIONS:
                raise _error(2, ValueError(), text, message=f"the program expands to more than {MAX_OPERATIONS} "
                             "gates (tinyqml's limit after expanding gate definitions)")
            return qc
        program = _parse_qasm3(text)
        return _guarded_converter()().convert(program, source=text).circuit
    except QasmError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader failure is reported as a QasmError
        raise _reader_failure(version, exc, text) from exc
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":  # pyo3: a panic in Qiskit's Rust reader
            raise _error(version, exc, text, message=f"Qiskit's reader failed on this program ({exc})") from None
        raise


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
