"""Tests of the ``tinyqml`` command line and the shared demo classifier."""

from __future__ import annotations

import dataclasses
import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tinyqml
from tinyqml import cli, demo
from tinyqml.cli import main
from tinyqml.demo import FAST_CONFIG, ClassifierConfig, train_classifier
from tinyqml.qml.errors import ParameterError


def _command() -> list[str]:
    """The installed ``tinyqml`` console script next to this interpreter, else ``python -m tinyqml.cli``."""
    script = Path(sys.executable).parent / "tinyqml"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tinyqml.cli"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_command(), *args], capture_output=True, text=True, timeout=120)


def test_help_lists_demo() -> None:
    proc = _run("--help")
    assert proc.returncode == 0
    assert "demo" in proc.stdout and "example" in proc.stdout


def test_demo_help_has_an_example() -> None:
    proc = _run("demo", "--help")
    assert proc.returncode == 0
    assert "--fast" in proc.stdout and "--seed" in proc.stdout and "tinyqml demo --fast" in proc.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"tinyqml {tinyqml.__version__}"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: tinyqml" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["demo", "--epochs", "0"], ["demo", "--seed", "x"], ["nope"]])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_demo_fast_prints_progress_and_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--fast"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^epoch +\d+/3 ", out, flags=re.M)) == FAST_CONFIG.epochs
    m = re.search(r"final train accuracy (\d\.\d+) .* test accuracy (\d\.\d+)", out)
    assert m is not None, out
    assert 0.5 < float(m.group(2)) <= 1.0  # chance is 0.25


def test_tinyqml_error_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(config, on_epoch=None, data=None):  # type: ignore[no-untyped-def]
        raise ParameterError("bad thing\nsecond line")

    monkeypatch.setattr(demo, "train_classifier", broken)
    assert main(["demo", "--fast"]) == 1
    err = capsys.readouterr().err
    assert err == "tinyqml: error: bad thing second line\n"


def test_train_classifier_is_deterministic() -> None:
    config = dataclasses.replace(FAST_CONFIG, layers=2, epochs=1)
    a, b = train_classifier(config), train_classifier(config)
    assert a.history[0].loss == b.history[0].loss and a.test_accuracy == b.test_accuracy
    assert a.model.quantum.weights.detach().equal(b.model.quantum.weights.detach())


@pytest.mark.parametrize("kwargs", [{"layers": 0}, {"epochs": 0}, {"lr": 0.0}, {"classes": (0,)},
                                    {"classes": (0, 1, 2, 3, 4)}, {"diff_method": "magic"}])
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(tinyqml.qml.TinyQMLError):
        ClassifierConfig(**kwargs)


@pytest.mark.parametrize("module", [cli, demo])
def test_docstring_examples(module) -> None:  # type: ignore[no-untyped-def]
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


@pytest.mark.slow
def test_full_classifier_reaches_80_percent() -> None:
    result = train_classifier(ClassifierConfig())
    assert result.test_accuracy >= 0.80, result.history[-1]
