"""OpenQASM 2 / 3 import and export (tinyqml.qml.qasm)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("qiskit")
pytest.importorskip("qiskit_qasm3_import")
from scipy.stats import unitary_group  # noqa: E402

import tinyqml.qml as tq  # noqa: E402
from tinyqml.qml.circuit import Param  # noqa: E402
from tinyqml.qml.errors import InteropError, ParameterError, QasmError, TinyQMLError  # noqa: E402
from tinyqml.qml.qasm import from_qasm, qasm_version, to_qasm  # noqa: E402
from tinyqml.qml.qiskit_convert import ParameterMap  # noqa: E402

TOL = 1e-10
ALL_GATES = sorted(tq.GATES)
pytestmark = pytest.mark.filterwarnings("ignore::scipy.sparse.SparseEfficiencyWarning")


def random_circuit(rng: np.random.Generator, n: int, n_ops: int, forced: tuple[str, ...] = ()) -> tq.Circuit:
    """Every gate kind, with constant / weight / feature (product) references."""

    def param() -> Param:
        r = rng.random()
        scale, offset = float(rng.uniform(-2, 2)), float(rng.uniform(-1, 1))
        if r < 0.3:
            return tq.const(float(rng.uniform(-6, 6)))
        if r < 0.65:
            return tq.weight(int(rng.integers(3)), scale=scale, offset=offset)
        idx = [int(i) for i in rng.integers(0, 3, size=int(rng.integers(1, 3)))]
        return tq.feature(idx, scale=scale, offset=offset, shift=float(rng.uniform(-1, 1)))

    b = tq.CircuitBuilder(n)
    for name in list(forced) + [ALL_GATES[int(i)] for i in rng.integers(0, len(ALL_GATES), size=n_ops)]:
        g = tq.GATES[name]
        k = {"MultiRZ": int(rng.integers(1, n + 1)), "MCX": int(rng.integers(2, n + 1)) if n > 1 else 0,
             "QubitUnitary": int(rng.integers(1, min(n, 3) + 1))}.get(name, g.num_wires if g.num_wires <= n else 0)
        if not k:
            continue
        m = unitary_group.rvs(2**k, random_state=rng) if name == "QubitUnitary" else None
        b.append(name, [int(w) for w in rng.permutation(n)[:k]], *[param() for _ in range(g.num_params)], matrix=m)
    return b.build()


def phase_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - e^{iφ} b| over batch rows, φ aligning each row's largest amplitude."""
    worst = 0.0
    for ra, rb in zip(a.numpy(), b.numpy()):
        k = int(np.argmax(np.abs(ra)))
        worst = max(worst, float(np.abs(ra - ra[k] / rb[k] * rb).max()))
    return worst


def _cases() -> list[tq.Circuit]:
    rng = np.random.default_rng(777)
    return [random_circuit(rng, 1 + i % 4, int(rng.integers(4, 12)),
                           (ALL_GATES[(3 * i) % len(ALL_GATES)], ALL_GATES[(3 * i + 1) % len(ALL_GATES)],
                            ALL_GATES[(3 * i + 2) % len(ALL_GATES)], "MultiRZ"))
            for i in range(24)]


CASES = _cases()


def test_cases_cover_the_gate_set() -> None:
    assert {op.name for c in CASES for op in c.ops} == set(tq.GATES)


@pytest.mark.parametrize("version", [2, 3])
def test_round_trip_keeps_the_state(version: int) -> None:
    rng = np.random.default_rng(version)
    for i, c in enumerate(CASES):
        w = torch.tensor(rng.uniform(-math.pi, math.pi, c.n_weights))
        x = torch.tensor(rng.uniform(-1.5, 1.5, (1, c.n_inputs))) if c.n_inputs else None
        want = tq.statevector(c, w, x)
        if version == 2:
            text = to_qasm(c, 2, weights=w, inputs=x)
            assert text.startswith("OPENQASM 2.0;")
            back, pm = from_qasm(text)
            assert len(pm) == 0 and back.n_weights == 0
            got = tq.statevector(back)
        else:
            text = to_qasm(c)
            assert text.startswith("OPENQASM 3.0;")
            back, pm = from_qasm(text, ParameterMap.default(c, flat=True))
            assert back.n_weights == c.n_weights and back.n_inputs == c.n_inputs
            got = tq.statevector(back, w, x)
        assert back.n_wires == c.n_wires
        # gate definitions in the file drop global phases (QubitUnitary, ECR, ...)
        assert phase_error(want, got) <= TOL, f"circuit {i}:\n{text}"


def test_qasm3_round_trip_of_standard_gates_is_exact_and_keeps_parameters() -> None:
    b = tq.CircuitBuilder(3).h(0).cx(0, 1).ry(2, tq.weight(1, scale=2.0, offset=0.5))
    b.crz(2, 0, tq.feature((0, 1), shift=0.25, scale=-1.5)).cu(1, 2, tq.weight(0), 0.3, tq.feature(2))
    b.u(0, 0.1, tq.weight(2), -0.3).swap(0, 2).ccx(0, 1, 2).cswap(2, 0, 1).cp(0, 1, tq.weight(0, offset=1.0))
    c = b.build()
    back, pm = from_qasm(to_qasm(c), ParameterMap.default(c, flat=True))
    assert [(op.name, op.wires) for op in back.ops] == [(op.name, op.wires) for op in c.ops]
    rng = np.random.default_rng(0)
    w, x = torch.tensor(rng.uniform(-3, 3, 3)), torch.tensor(rng.uniform(-1, 1, (4, 3)))
    assert torch.allclose(tq.statevector(back, w, x), tq.statevector(c, w, x), atol=TOL)


def test_batched_inputs_and_custom_names_in_qasm3() -> None:
    c = tq.CircuitBuilder(2).ry(0, tq.feature(0)).ry(1, tq.feature(1)).multirz([0, 1], tq.weight(0)).build()
    pm = ParameterMap.from_dict({"theta": ("weight", 0), "pix0": ("feature", 0), "pix1": ("feature", 1)})
    text = to_qasm(c, parameter_map=pm)
    assert "input float[64] theta;" in text and "input float[64] pix1;" in text
    back, out = from_qasm(text, {"pix0": ("feature", 0), "pix1": ("feature", 1)})
    assert out == pm
    w, x = torch.tensor([0.4]), torch.rand(5, 2, dtype=torch.float64)
    assert torch.allclose(tq.statevector(back, w, x), tq.statevector(c, w, x), atol=TOL)
    partly = to_qasm(c, weights=[0.4])  # weights bound, inputs stay free
    assert "theta" not in partly and "input float[64] x_1;" in partly


def test_qasm2_needs_bound_parameters() -> None:
    c = tq.CircuitBuilder(1).rx(0, tq.weight(0)).ry(0, tq.feature(0)).build()
    with pytest.raises(ParameterError, match="OpenQASM 2 has no free parameters"):
        to_qasm(c, 2)
    with pytest.raises(ParameterError, match="OpenQASM 2 has no free parameters"):
        to_qasm(c, 2, weights=[0.1])
    assert "ry(-0.2) q[0];" in to_qasm(c, 2, weights=[0.1], inputs=[-0.2])
    with pytest.raises(InteropError, match="version must be 2 or 3"):
        to_qasm(c, 4)
    with pytest.raises(InteropError):
        to_qasm("OPENQASM 2.0;")  # type: ignore[arg-type]


QASM2_PROGRAM = """// a hand-written program
OPENQASM 2.0;
include "qelib1.inc";
gate majority a, b, c { cx c, b; cx c, a; ccx a, b, c; }
gate twist(theta, phi) a, b { rzz(theta / 2) a, b; u(phi, 0, -phi) b; }
qreg q[3];
creg m[3];
u3(0.3, 0.2, 0.1) q[0];
h q[1];
cu1(pi/4) q[0], q[2];
majority q[2], q[0], q[1];
twist(0.8, -pi/3) q[1], q[2];
barrier q;
measure q -> m;
"""


def test_hand_written_qasm2_with_a_gate_definition_and_measurements() -> None:
    with pytest.raises(TinyQMLError, match="measure"):
        from_qasm(QASM2_PROGRAM)
    c, pm = from_qasm(QASM2_PROGRAM, drop_final_measurements=True)
    assert [op.name for op in c.ops] == ["U", "H", "CP", "CX", "CX", "CCX", "RZZ", "U"]
    assert [op.wires for op in c.ops[3:]] == [(1, 0), (1, 2), (2, 0, 1), (1, 2), (2,)]
    assert c.ops[6].params[0].value == pytest.approx(0.4) and c.ops[7].params[2].value == pytest.approx(math.pi / 3)
    from qiskit import qasm2
    from qiskit.quantum_info import Statevector

    qc = qasm2.loads(QASM2_PROGRAM, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    want = Statevector(qc.remove_final_measurements(inplace=False)).reverse_qargs().data
    assert np.abs(tq.statevector(c)[0].numpy() - want).max() <= TOL
    assert from_qasm(QASM2_PROGRAM.encode(), drop_final_measurements=True)[0] == c  # bytes are accepted


def test_standard_gates_tinyqml_lacks_need_decompose() -> None:
    text = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\nh q[0];\nrccx q[0], q[1], q[2];\n'
    with pytest.raises(TinyQMLError, match="rccx.*decompose=True"):
        from_qasm(text)
    c, _ = from_qasm(text, decompose=True)
    assert c.ops[0].name == "H" and len(c.ops) > 2


def test_version_detection() -> None:
    assert qasm_version("OPENQASM 2.0;\nqreg q[1];") == 2
    assert qasm_version("/* block\n comment */ // line\n  OPENQASM 3.0;\nqubit q;") == 3
    assert qasm_version("OPENQASM 3;\nqubit q;") == 3
    assert qasm_version("qubit q;\nh q;") == 3  # the version statement is optional in OpenQASM 3
    c, _ = from_qasm('include "stdgates.inc";\nqubit[2] q;\nh q[1];')
    assert c.n_wires == 2 and c.ops[0].wires == (1,)
    with pytest.raises(QasmError, match="unsupported OpenQASM version 4.0") as info:
        qasm_version("// x\nOPENQASM 4.0;\n")
    assert info.value.line == 2


MALFORMED = {
    "missing_semicolon_2": ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nh q[0]\ncx q[0], q[1];\n', 5),
    "missing_semicolon_3": ('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nh q[0]\ncx q[0], q[1];\n', 5),
    "missing_semicolon_at_end_3": ('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit q;\nh q', 4),
    "unknown_gate_2": ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nfoo q[0];\n', 4),
    "unknown_gate_3": ('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\n\nfoo q[0];\n', 5),
    "wrong_parameter_count_2": ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nrx(0.1, 0.2) q[0];\n', 4),
    "wrong_parameter_count_3": ('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nrx(0.1, 0.2) q[0];\n', 4),
    "wrong_qubit_count_2": ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncx q[0];\n', 4),
    "wrong_qubit_count_3": ('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\ncx q[0];\n', 4),
    "index_out_of_range_3": ('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nh q[5];\n', 4),
    "garbage_2": ("OPENQASM 2.0;\n\x00\x13garbage$$\n", 2),
    "garbage_3": ("OPENQASM 3.0;\n\x00\x13garbage$$\n", 2),
    "garbage_no_header": ("\x13\x00 \x7f ~~ ))(( ;;", 1),
    "truncated_3": ("OPENQASM 3.0;\nqubit[2] q;\nh q[", 3),
    "bad_include_3": ('OPENQASM 3.0;\ninclude "nowhere.inc";\n', 2),
    "bad_header_2": ("OPENQASM 2.0\nqreg q[1];\n", 2),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_text_raises_qasm_error_with_location(name: str, capfd: pytest.CaptureFixture) -> None:
    text, line = MALFORMED[name]
    with pytest.raises(QasmError) as info:
        from_qasm(text)
    err = info.value
    assert isinstance(err, TinyQMLError) and isinstance(err, ValueError)
    assert err.parser_message and err.parser_message in str(err)
    if line is not None:
        assert err.line == line, str(err)
        assert isinstance(err.column, int) and f"line {line}" in str(err)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""  # the ANTLR console listener stays quiet


@pytest.mark.parametrize("text", ["", "   \n\t", "// only a comment\n/* and another */\n", b"", b"\xff\xfe\x00garbage"])
def test_empty_or_undecodable_text(text) -> None:
    with pytest.raises(QasmError) as info:
        from_qasm(text)
    assert info.value.line is None and info.value.parser_message


def test_non_text_input() -> None:
    with pytest.raises(QasmError, match="must be a string"):
        from_qasm(12)  # type: ignore[arg-type]
