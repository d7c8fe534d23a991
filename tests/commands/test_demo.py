"""Tests of ``tinyqml demo``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyqml.cli import build_parser, main
from tinyqml.commands.demo import demo_config


def test_demo_classical_fast_prints_the_summary_and_writes_the_report(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--fast", "--only", "classical", "-o", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "... classical: train the CNN" in out
    assert "latency per image on this host" in out and "bit-exact" in out
    (run,) = tmp_path.iterdir()
    assert f"report: {run / 'report.md'}" in out
    report = (run / "report.md").read_text()
    assert "## Classical" in report and "## Quantum" not in report


def test_demo_arguments_make_the_config() -> None:
    config = demo_config(build_parser().parse_args(["demo", "--seed", "5", "--backend", "FakeManilaV2"]))
    assert config.parts == ("quantum", "classical") and not config.fast
    assert config.quantum.backend == "FakeManilaV2" and config.classical.seed == config.quantum.seed == 5


def test_demo_unknown_backend_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("qiskit_ibm_runtime")
    assert main(["demo", "--fast", "--only", "quantum", "--backend", "FakeNowhere", "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyqml: error: no fake backend 'FakeNowhere'") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["demo", "--only", "optics"], ["demo", "--seed", "-1"]])
def test_demo_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_demo_unwritable_output_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--fast", "--only", "classical", "-o", str(blocker / "runs")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyqml: error: cannot create the run folder") and err.count("\n") == 1
    assert "-o DIR" in err
