"""Tests of ``tinyqml train``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import tinyqml.qml as tq
from tinyqml.classifier import FAST_CONFIG
from tinyqml.cli import main


def test_train_qnn_fast_prints_progress_and_accuracy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "qnn", "--fast", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^epoch +\d+/3 ", out, flags=re.M)) == FAST_CONFIG.epochs
    m = re.search(r"final train accuracy (\d\.\d+) .* test accuracy (\d\.\d+)", out)
    assert m is not None, out
    assert 0.5 < float(m.group(2)) <= 1.0  # chance is 0.25
    circuit = tq.Circuit.from_json((tmp_path / "circuit.json").read_text())
    weights = json.loads((tmp_path / "weights.json").read_text())
    assert circuit.n_weights == len(weights) == 12 * FAST_CONFIG.layers
    history = json.loads((tmp_path / "history.json").read_text())
    assert abs(history[-1]["test_accuracy"] - float(m.group(2))) < 1e-4
    assert tq.expval(circuit, [tq.Z(0)], weights=torch.tensor(weights), inputs=torch.zeros(1, 16)).shape == (1, 1)


# -- tinyqml train cnn ---------------------------------------------------------------------------------------

def test_train_cnn_prints_epochs_and_saves_a_model_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tinyqml.classical.data import DigitsConfig, load_digits_data
    from tinyqml.classical.model_file import load_model_file
    from tinyqml.classical.train import evaluate

    path = tmp_path / "runs" / "cnn.pt"
    assert main(["train", "cnn", "--widths", "4,8,8", "--epochs", "2", "--data-seed", "3", "--seed", "1",
                 "-o", str(path)]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^epoch [12]/2 loss \d+\.\d+ val \d+\.\d+%$", out, flags=re.M)) == 2, out
    assert "SmallCNN widths 4,8,8: 31,232 MACs, 2,230 params" in out and "split seed 3" in out
    m = re.search(r"^test accuracy (\d+\.\d+)% \(360 images\)$", out, flags=re.M)
    assert m is not None, out
    assert f"wrote {path}; next: tinyqml prune {path}" in out
    model, config, metadata = load_model_file(path)
    assert config.widths == (4, 8, 8) and metadata["data_seed"] == 3
    data = load_digits_data(DigitsConfig(seed=3))
    accuracy = evaluate(model, data.x_test, data.y_test)
    assert abs(accuracy - float(m.group(1))) < 0.006
    assert metadata["metrics"]["test_accuracy"] == pytest.approx(accuracy)
    assert metadata["metrics"]["params"] == 2230 and metadata["steps"][0]["command"] == "train cnn"
    assert accuracy > 20  # chance is 10%


def test_train_cnn_defaults_and_fast() -> None:
    from tinyqml.cli import build_parser
    from tinyqml.commands.train import cnn_epochs

    args = build_parser().parse_args(["train", "cnn"])
    assert (args.widths, cnn_epochs(args), args.output, args.seed, args.data_seed, args.lr) == \
        (None, 30, "runs/cnn.pt", 0, 0, 3e-3)
    fast = build_parser().parse_args(["train", "cnn", "--fast"])
    assert cnn_epochs(fast) == 3


@pytest.mark.parametrize("argv", [["--widths", "8,16"], ["--widths", "a,b,c"], ["--widths", "0,8,8"],
                                  ["--widths", "8,16,16,16"], ["--lr", "0"], ["--lr", "nan"], ["--epochs", "0"],
                                  ["--data-seed", "-1"]])
def test_train_cnn_bad_numbers_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "cnn", *argv])
    assert exc.value.code == 2
    assert "tinyqml train cnn: error: argument" in capsys.readouterr().err


def test_train_cnn_into_a_directory_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "cnn", "--widths", "4,8,8", "--epochs", "1", "-o", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"tinyqml: error: {tmp_path} is a directory; give the model file to write, e.g. -o " \
                           f"{tmp_path / 'cnn.pt'}\n"
    assert "epoch" not in captured.out and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["--seed", "--data-seed"])
def test_train_cnn_seeds_past_2_32_exit_2(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    # scikit-learn's random_state, numpy's RandomState and optuna take seeds < 2**32 only
    with pytest.raises(SystemExit) as exc:
        main(["train", "cnn", option, str(2 ** 33)])
    assert exc.value.code == 2
    assert f"argument {option}: expected an integer seed in 0..4294967295 (2**32-1), got '8589934592'" \
        in capsys.readouterr().err


def test_train_cnn_largest_seed_is_accepted() -> None:
    from tinyqml.cli import build_parser

    args = build_parser().parse_args(["train", "cnn", "--seed", str(2 ** 32 - 1), "--data-seed", str(2 ** 32 - 1)])
    assert args.seed == args.data_seed == 2 ** 32 - 1


def _not_writable(tmp_path: Path) -> Path:
    """A folder that cannot be created even by root: one below a regular file."""
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "out"


def test_train_qnn_unwritable_output_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _not_writable(tmp_path)
    assert main(["train", "qnn", "--fast", "-o", str(out)]) == 1  # was: FileNotFoundError after training
    captured = capsys.readouterr()
    assert captured.err.startswith(f"tinyqml: error: cannot write to the folder {out}: ") and \
        captured.err.count("\n") == 1, captured.err
    assert "epoch" not in captured.out


def test_train_qnn_output_that_is_a_file_fails_before_training(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").write_text("")
    assert main(["train", "qnn", "--fast", "-o", str(tmp_path / "taken")]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"tinyqml: error: cannot write to the folder {tmp_path / 'taken'}: it is a file\n"
    assert "epoch" not in captured.out


def test_train_qnn_write_failure_after_training_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from tinyqml.commands import train

    def full(out: Path, result: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train, "_save_qnn", full)
    assert main(["train", "qnn", "--fast", "--epochs", "1", "-o", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"tinyqml: error: cannot write the trained classifier to {tmp_path}: "
                                       f"No space left on device\n")


@pytest.mark.parametrize("name", ["out/cnn.pt", "/proc/tinyqml-no/cnn.pt"])
def test_train_cnn_unwritable_output_fails_before_training(name: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    if name.startswith("/proc/") and not Path("/proc/self").exists():
        pytest.skip("no /proc")
    path = _not_writable(tmp_path) / name if not name.startswith("/") else Path(name)
    assert main(["train", "cnn", "--widths", "4,8,8", "--epochs", "1", "-o", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("tinyqml: error: cannot write to the folder ") and captured.err.count("\n") == 1
    assert "epoch" not in captured.out and "SmallCNN" not in captured.out
