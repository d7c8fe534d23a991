"""Tests of ``tinyqml noise show BACKEND``: the printed calibration and noise model, --json, errors, aliases."""

from __future__ import annotations

import json
import re
import sys

import pytest

from tinyqml.cli import main

fake = pytest.importorskip("qiskit_ibm_runtime.fake_provider")


@pytest.fixture(scope="module")
def manila():  # type: ignore[no-untyped-def]
    return fake.FakeManilaV2()


def _show(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["noise", "show", *args]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    return out.out


def _line(out: str, pattern: str) -> str:
    lines = [ln for ln in out.splitlines() if re.match(pattern, ln)]
    assert len(lines) == 1, (pattern, lines)
    return lines[0]


def test_noise_help_has_examples(cli_run) -> None:
    for args in (("noise", "--help"), ("noise", "show", "--help")):
        proc = cli_run(*args)
        assert proc.returncode == 0, proc.stderr
        assert "examples:" in proc.stdout and "tinyqml noise show FakeManilaV2" in proc.stdout
    assert "--json" in proc.stdout and "--scale" in proc.stdout and "--qubits" in proc.stdout


def test_noise_without_action_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["noise"])
    assert exc.value.code == 2
    assert "ACTION" in capsys.readouterr().err


def test_show_prints_the_calibration(capsys: pytest.CaptureFixture[str], manila) -> None:  # type: ignore[no-untyped-def]
    out = _show(capsys, "FakeManilaV2")
    t, props = manila.target, manila.properties()
    assert out.startswith("FakeManilaV2 (fake_manila): 5 qubits, calibrated 2024-05-27")
    assert "basis gates: cx, id, rz, sx, x" in out and "coupling map: 0<->1, 1<->2, 2<->3, 3<->4" in out
    qp, qprops = t.qubit_properties[2], props.qubit_property(2)
    row = _line(out, r"^\s+2\s+\d+\.\d\d\s").split()
    assert row == ["2", f"{qp.t1 * 1e6:.2f}", f"{qp.t2 * 1e6:.2f}", f"{qp.frequency * 1e-9:.4f}",
                   f"{t['measure'][(2,)].error:.4g}", f"{qprops['prob_meas1_prep0'][0]:.4g}",
                   f"{qprops['prob_meas0_prep1'][0]:.4g}", f"{t['measure'][(2,)].duration * 1e9:.1f}"]
    cx = t["cx"][(1, 2)]
    assert _line(out, r"^cx\s+1,2\s").split() == ["cx", "1,2", f"{cx.error:.3e}", f"{cx.duration * 1e9:.1f}"]
    sx = t["sx"][(4,)]
    assert _line(out, r"^sx\s+4\s").split() == ["sx", "4", f"{sx.error:.3e}", f"{sx.duration * 1e9:.1f}"]
    assert _line(out, r"^rz\s+0\s").split() == ["rz", "0", "0", "(virtual)", "0.0"]
    assert "delay" not in out and "if_else" not in out


def test_show_prints_the_derived_noise_model(capsys: pytest.CaptureFixture[str], manila) -> None:  # type: ignore[no-untyped-def]
    from tinyqml.noise import NoiseModel
    from tinyqml.noise.channels import average_gate_fidelity

    out = _show(capsys, "manila")
    model = NoiseModel.from_backend(manila)
    rule = next(r for r in model.rules if r.gate == "CX" and r.qubits == (1, 2))
    spec = rule.error
    relax = spec.relaxation_channel()
    p = spec.depolarizing_parameter(relax)
    assert p is not None  # on this pair the depolarizing part tops the relaxation up to the calibrated error
    t1 = ",".join(f"{v * 1e6:.2f}" for v in spec.t1)
    t2 = ",".join(f"{min(b, 2 * a) * 1e6:.2f}" for a, b in zip(spec.t1, spec.t2))
    assert _line(out, r"^CX\s+1,2\s").split() == [
        "CX", "1,2", f"{spec.error:.3e}", f"{p:.3e}", f"{spec.duration * 1e9:.1f}", t1, t2,
        f"{1 - average_gate_fidelity(relax):.3e}", f"{1 - average_gate_fidelity(spec.channel()):.3e}"]
    x0 = next(r for r in model.rules if r.gate == "X" and r.qubits == (0,)).error
    assert _line(out, r"^X\s+0\s").split()[2:5] == [
        f"{x0.error:.3e}", "-" if x0.depolarizing_parameter(x0.relaxation_channel()) is None else
        f"{x0.depolarizing_parameter(x0.relaxation_channel()):.3e}", f"{x0.duration * 1e9:.1f}"]
    ro = dict(model.readout)[3]
    m = ro.matrix.tolist()
    assert _line(out, r"^\s+3\s+0\.0\d+\s+0\.0\d+\s+\[\[").split() == [
        "3", f"{ro.p0_given_1:.4g}", f"{ro.p1_given_0:.4g}", f"[[{m[0][0]:.4f}", f"{m[0][1]:.4f}]",
        f"[{m[1][0]:.4f}", f"{m[1][1]:.4f}]]"]
    infid = [1 - average_gate_fidelity(r.error.channel()) for r in model.rules]
    one = [v for r, v in zip(model.rules, infid) if len(r.error.t1) == 1]
    two = [v for r, v in zip(model.rules, infid) if len(r.error.t1) == 2]
    ro_mean = sum((e.p0_given_1 + e.p1_given_0) / 2 for _, e in model.readout) / len(model.readout)
    assert (f"summary: mean 1q error {sum(one) / len(one):.3e} ({len(one)} rules), mean 2q error "
            f"{sum(two) / len(two):.3e} ({len(two)} rules), mean readout error {ro_mean:.4g}") in out


def test_json_round_trips(capsys: pytest.CaptureFixture[str], manila) -> None:  # type: ignore[no-untyped-def]
    from tinyqml.noise import NoiseModel

    doc = json.loads(_show(capsys, "fake_manila", "--json"))
    model = NoiseModel.from_dict(doc["noise_model"])
    assert model == NoiseModel.from_backend(manila)
    assert NoiseModel.from_json(json.dumps(doc["noise_model"])) == model
    cal = doc["calibration"]
    assert cal["num_qubits"] == 5 and cal["backend_class"] == "FakeManilaV2" and doc["scale"] == 1.0
    q0 = cal["qubits"][0]
    assert (q0["t1"], q0["t2"]) == (manila.target.qubit_properties[0].t1, manila.target.qubit_properties[0].t2)
    cx = next(g for g in cal["gates"] if g["gate"] == "cx" and g["qubits"] == [0, 1])
    assert (cx["error"], cx["duration"]) == (manila.target["cx"][(0, 1)].error, manila.target["cx"][(0, 1)].duration)
    assert [e for e in cal["coupling_map"] if e[0] == 0] == [[0, 1]]
    summary = doc["noise_model_summary"]
    assert len(summary["rules"]) == len(model.rules) and summary["mean_error"]["2q"] > summary["mean_error"]["1q"]


def test_scale_and_qubits(capsys: pytest.CaptureFixture[str], manila) -> None:  # type: ignore[no-untyped-def]
    from tinyqml.noise import NoiseModel
    from tinyqml.noise.calibration import model_on_qubits

    doc = json.loads(_show(capsys, "manila", "--json", "--scale", "2", "--qubits", "1,0"))
    expected = model_on_qubits(NoiseModel.from_backend(manila).scaled(2), (0, 1))
    assert NoiseModel.from_dict(doc["noise_model"]) == expected
    assert doc["qubits"] == [0, 1] and doc["scale"] == 2.0
    assert [q["qubit"] for q in doc["calibration"]["qubits"]] == [0, 1]
    assert {tuple(g["qubits"]) for g in doc["calibration"]["gates"]} == {(0,), (1,), (0, 1), (1, 0)}
    out = _show(capsys, "manila", "--scale", "2", "--qubits", "0,1")
    assert "5 qubits (showing 0,1)" in out and "scaled(2)" in out and "'fake_manila x2'" in out
    x1 = next(r for r in expected.rules if r.gate == "X" and r.qubits == (1,)).error
    assert _line(out, r"^X\s+1\s").split()[5] == f"{x1.t1[0] * 1e6:.2f}"  # T1 halved by the scale
    assert not re.search(r"^cx\s+1,2", out, re.M)


def test_aliases_print_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    outs = {name: _show(capsys, name) for name in ("FakeManilaV2", "FakeManila", "manila", "fake_manila")}
    assert len(set(outs.values())) == 1


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith("tinyqml: error: ") and out.err.count("\n") == 1
    return out.err


def test_unknown_backend_lists_the_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["noise", "show", "FakeNowhere"]) == 1
    err = _one_line_error(capsys)
    assert "'FakeNowhere'" in err and "FakeManilaV2" in err and "FakeQuitoV2" in err and "FakeSherbrooke" in err


def test_qubit_out_of_range_and_bad_scale(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["noise", "show", "manila", "--qubits", "0,7"]) == 1
    assert "no qubit 7" in _one_line_error(capsys)
    assert main(["noise", "show", "manila", "--scale", "100"]) == 1  # a readout flip probability above 1
    assert "above 1" in _one_line_error(capsys)
    for bad in (["--qubits", "a,b"], ["--scale", "-1"]):
        with pytest.raises(SystemExit) as exc:
            main(["noise", "show", "manila", *bad])
        assert exc.value.code == 2


def test_without_qiskit_ibm_runtime(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "qiskit_ibm_runtime", None)
    assert main(["noise", "show", "manila"]) == 1
    assert "pip install 'tinyqml[interop]'" in _one_line_error(capsys)
