"""Tests of the ``tinyqml`` command line as a whole: the subcommand list, --version, errors."""

from __future__ import annotations

import doctest

import pytest

import tinyqml
from tinyqml import cli
from tinyqml.cli import main
from tinyqml.commands import train
from tinyqml.qml.errors import ParameterError

#: what the issue asks ``tinyqml --help`` to list
COMMANDS = ("demo", "train", "search", "prune", "quantize", "codegen", "bench", "noise")


def test_help_lists_every_command(cli_run) -> None:
    proc = cli_run("--help")
    assert proc.returncode == 0
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("    ") and line.split()]
    for name in COMMANDS:
        assert name in listed, (name, proc.stdout)
    assert "example" in proc.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_help_has_an_example(cli_run, name: str) -> None:
    proc = cli_run(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "example" in proc.stdout and f"tinyqml {name}" in proc.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"tinyqml {tinyqml.__version__}"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: tinyqml" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["train", "qnn", "--epochs", "0"], ["train", "qnn", "--seed", "x"], ["train"],
                                  ["nope"]])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_tinyqml_error_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import tinyqml.classifier

    def broken(config, on_epoch=None, data=None):  # type: ignore[no-untyped-def]
        raise ParameterError("bad thing\nsecond line")

    monkeypatch.setattr(tinyqml.classifier, "train_classifier", broken)
    assert main(["train", "qnn", "--fast"]) == 1
    err = capsys.readouterr().err
    assert err == "tinyqml: error: bad thing second line\n"


@pytest.mark.parametrize("module", [cli, train])
def test_docstring_examples(module) -> None:  # type: ignore[no-untyped-def]
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
