"""Tests of ``tinyqml nas``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyqml.cli import build_parser, main
from tinyqml.commands import nas


def test_nas_help_lists_costs_and_examples(cli_run) -> None:
    proc = cli_run("nas", "--help")
    assert proc.returncode == 0
    for text in ("--constraint", "peak_sram", "tinyqml nas --fast", "--latency-table", "--supernet"):
        assert text in proc.stdout


def test_nas_arguments_make_the_run_config() -> None:
    args = build_parser().parse_args(["nas", "--fast", "-c", "macs<=100k", "--trials", "7", "--samples", "9",
                                          "--epochs", "2", "--strategy", "random", "--seed", "4"])
    config = nas.run_config(args)
    assert config.search.n_trials == 7 and config.n_samples == 9 and config.train.epochs == 2
    assert config.seed == config.search.seed == config.train.seed == 4
    assert type(config.search.strategy).__name__ == "RandomSearch"
    assert [c.cost for c in config.constraints] == ["macs"] and config.constraints[0].max == 100_000


@pytest.mark.parametrize("constraint, message", [("flash<=1k", "unknown cost 'flash'"),
                                                 ("macs<300k", "cannot read the constraint"),
                                                 ("macs<=10", "random architectures satisfies macs<=10")])
def test_nas_bad_constraints_fail_fast(constraint: str, message: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nas", "--fast", "-o", str(tmp_path), "-c", constraint]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyqml: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "supernet.pt").exists()


def test_nas_unreadable_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    table = tmp_path / "table.json"
    table.write_text('{"format": "tinyqml-latency-lut", "version": 1, "entries": 3}')
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(256)))
    for argv, message in ((["--supernet", str(garbage)], "cannot load a supernet"),
                          (["--latency-table", str(table)], "not a latency table"),
                          (["--latency-table", str(binary)], "cannot read a latency table")):
        assert main(["nas", "--fast", "-o", str(tmp_path / "out"), *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("tinyqml: error: ") and message in err and err.count("\n") == 1
        assert "Traceback" not in err and "weights_only=False" not in err
    with pytest.raises(SystemExit):
        main(["nas", "--seed", str(2 ** 64)])
