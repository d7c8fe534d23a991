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


@pytest.mark.parametrize("value", [str(2 ** 32), "-1"])
def test_nas_seed_outside_0_to_2_32_exits_2(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["nas", "--seed", value])
    assert exc.value.code == 2
    assert "expected an integer seed in 0..4294967295 (2**32-1)" in capsys.readouterr().err


def test_nas_quiets_logging_with_the_shared_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    import optuna

    from tinyqml.commands import common

    assert nas.quiet_logging is common.quiet_logging  # the shared helper, not a copy
    calls: list[str] = []
    monkeypatch.setattr(nas, "quiet_logging", lambda: calls.append("quiet"))
    assert main(["nas", "--fast", "-o", str(tmp_path), "-c", "flash<=1k"]) == 1  # fails fast, after quieting
    capsys.readouterr()
    assert calls == ["quiet"]
    level, tinyqml_level = optuna.logging.get_verbosity(), logging.getLogger("tinyqml").level
    try:
        optuna.logging.set_verbosity(optuna.logging.INFO)
        logging.getLogger("tinyqml").setLevel(logging.DEBUG)
        common.quiet_logging()
        assert optuna.logging.get_verbosity() == optuna.logging.WARNING
        assert logging.getLogger("tinyqml").level == logging.WARNING
    finally:
        optuna.logging.set_verbosity(level)
        logging.getLogger("tinyqml").setLevel(tinyqml_level)
