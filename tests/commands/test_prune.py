"""Tests of ``tinyqml prune``: channel and magnitude pruning of a ``tinyqml train cnn`` model file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tinyqml.classical.costs import profile_net
from tinyqml.classical.data import DigitsConfig, load_digits_data
from tinyqml.classical.model_file import load_model_file
from tinyqml.classical.pruning import sparsity_report
from tinyqml.classical.train import evaluate
from tinyqml.cli import build_parser, main
from tinyqml.commands.prune import output_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model file (widths 8,16,16, 2 epochs, digits split seed 1)."""
    path = tmp_path_factory.mktemp("train") / "cnn.pt"
    assert main(["train", "cnn", "--widths", "8,16,16", "--epochs", "2", "--data-seed", "1", "-o", str(path)]) == 0
    return path


def _accuracies(out: str) -> tuple[float, float, float]:
    m = re.search(r"^test accuracy: before (\d+\.\d+)%, after pruning (\d+\.\d+)%, after fine-tuning "
                  r"(\d+\.\d+)% \(1 epoch\)$", out, flags=re.M)
    assert m is not None, out
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


def _macs(out: str) -> tuple[int, int]:
    m = re.search(r"^MACs ([\d,]+) -> ([\d,]+) ", out, flags=re.M)
    assert m is not None, out
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


def test_channel_pruning_writes_a_smaller_model_and_prints_its_costs(trained: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "pruned.pt"
    assert main(["prune", str(trained), "-o", str(out_path), "--ratio", "0.5", "--finetune", "1"]) == 0
    out = capsys.readouterr().out
    dense, _, meta0 = load_model_file(trained)
    model, config, metadata = load_model_file(out_path)
    assert config.widths == (4, 8, 8) and "widths 8,16,16 -> 4,8,8" in out
    one = torch.zeros(1, 1, 8, 8)
    before, after = profile_net(dense, one), profile_net(model, one)
    assert after.params < before.params and after.macs < before.macs
    assert _macs(out) == (before.macs, after.macs)
    assert f"params {before.params:,} -> {after.params:,} " in out
    assert len(re.findall(r"^  epoch 1/1 loss ", out, flags=re.M)) == 1
    data = load_digits_data(DigitsConfig(seed=1))  # the split seed stored by train
    acc_before, _, acc_final = _accuracies(out)
    assert abs(acc_before - evaluate(dense, data.x_test, data.y_test)) < 0.006
    assert abs(acc_final - evaluate(model, data.x_test, data.y_test)) < 0.006
    assert metadata["data_seed"] == 1 and metadata["metrics"]["params"] == after.params
    assert [s["command"] for s in metadata["steps"]] == ["train cnn", "prune"]
    assert metadata["steps"][-1]["method"] == "channel" and metadata["steps"][-1]["ratio"] == 0.5
    assert meta0["steps"] == metadata["steps"][:1]
    assert f"next: tinyqml quantize {out_path}" in out


def test_round_to_keeps_multiples(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "r.pt"
    assert main(["prune", str(trained), "-o", str(out_path), "--ratio", "0.7", "--round-to", "4",
                 "--finetune", "0"]) == 0
    out = capsys.readouterr().out
    assert load_model_file(out_path)[1].widths == (4, 8, 8)  # 8 - round(5.6) = 2 -> 4; 16 - 11 = 5 -> 8
    m = re.search(r"after pruning (\d+\.\d+)%, no fine-tuning$", out, flags=re.M)
    assert m is not None, out


def test_magnitude_pruning_keeps_the_shapes_and_zeroes_weights(trained: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "sparse.pt"
    assert main(["prune", str(trained), "-o", str(out_path), "--method", "magnitude", "--sparsity", "0.8",
                 "--finetune", "1", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    dense, _, _ = load_model_file(trained)
    model, config, metadata = load_model_file(out_path)
    assert config.widths == (8, 16, 16)
    report = sparsity_report(model)
    assert abs(report.sparsity - 0.8) < 0.01  # masks held through fine-tuning, then baked in
    assert f"conv/linear weights {100 * report.sparsity:.1f}% zero" in out
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    assert f"nonzero {sum(p.numel() for p in dense.parameters()):,} -> {nonzero:,}" in out
    macs = profile_net(model, torch.zeros(1, 1, 8, 8)).macs
    assert _macs(out) == (macs, macs) and "unchanged" in out
    data = load_digits_data(DigitsConfig(seed=1))
    assert abs(_accuracies(out)[2] - evaluate(model, data.x_test, data.y_test)) < 0.006
    assert metadata["steps"][-1] == {**metadata["steps"][-1], "method": "magnitude", "sparsity": 0.8,
                                     "scope": "global", "seed": 2}
    assert metadata["metrics"]["nonzero_params"] == nonzero


def test_default_output_and_options() -> None:
    args = build_parser().parse_args(["prune", "runs/cnn.pt"])
    assert (str(output_path(args)), args.method, args.ratio, args.sparsity, args.finetune, args.lr) == \
        ("runs/cnn_pruned.pt", "channel", None, None, 3, 1e-3)


@pytest.mark.parametrize("argv", [["--ratio", "1"], ["--ratio", "-0.1"], ["--sparsity", "x"], ["--finetune", "-1"],
                                  ["--round-to", "0"], ["--method", "random"], ["--lr", "-1"], []])
def test_bad_numbers_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prune", *(argv and ["runs/cnn.pt"]), *argv])
    assert exc.value.code == 2


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("tinyqml: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_wrong_model_files_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tinyqml.classical.models import SmallCNN

    missing = tmp_path / "runs" / "cnn.pt"
    assert main(["prune", str(missing)]) == 1
    assert _one_line_error(capsys) == (f"tinyqml: error: no model file at {missing}; make one with "
                                       f"`tinyqml train cnn -o {missing}`\n")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model at all")
    assert main(["prune", str(garbage)]) == 1
    err = _one_line_error(capsys)
    assert f"{garbage} is not a tinyqml model file" in err and "make one with `tinyqml train cnn" in err
    assert "weights_only=False" not in err
    bare = tmp_path / "bare.pt"
    torch.save(SmallCNN().state_dict(), bare)
    assert main(["prune", str(bare)]) == 1
    assert "bare state dict" in _one_line_error(capsys)
    tflite = tmp_path / "cnn.tflite"
    tflite.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(40))
    assert main(["prune", str(tflite)]) == 1
    assert "is a TFLite flatbuffer" in _one_line_error(capsys)
    assert not (tmp_path / "cnn_pruned.pt").exists() and not (tmp_path / "garbage_pruned.pt").exists()


@pytest.mark.parametrize("argv, message", [
    (["--method", "magnitude", "--ratio", "0.3"], "--ratio is for --method channel, not --method magnitude"),
    (["--sparsity", "0.3", "--scope", "local"], "--sparsity and --scope are for --method magnitude"),
])
def test_options_of_the_other_method_are_refused(trained: Path, tmp_path: Path, argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", str(trained), "-o", str(tmp_path / "x.pt"), *argv]) == 1
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "x.pt").exists()


def test_output_into_a_directory_is_refused(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", str(trained), "-o", str(tmp_path)]) == 1
    assert f"{tmp_path} is a directory" in _one_line_error(capsys)


@pytest.mark.parametrize("argv, message", [
    (["--ratio", "0.5", "--round-to", "64"],
     "--ratio 0.5 with --round-to 64 removes no channel of the widths 8,16,16: rounded up to a multiple of 64, "
     "every conv keeps all its channels; pass a smaller --round-to 8 (widths 8,8,8)"),
    (["--ratio", "0"], "--ratio 0 removes no channel of the widths 8,16,16: 0 of a conv's channels rounds to none; "
                       "pass --ratio 0.032 or more"),
    (["--ratio", "0.01", "--round-to", "16"], "pass --ratio 0.032 or more with --round-to 1 (widths 8,15,15)"),
])
def test_a_plan_that_removes_no_channel_is_refused(trained: Path, tmp_path: Path, argv: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "same.pt"
    assert main(["prune", str(trained), "-o", str(out_path), *argv]) == 1  # was: "1.00x fewer", exit 0
    assert message in _one_line_error(capsys)
    assert not out_path.exists()


def test_the_suggested_round_to_removes_channels(trained: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", str(trained), "-o", str(tmp_path / "p.pt"), "--round-to", "8", "--finetune", "0"]) == 0
    assert "widths 8,16,16 -> 8,8,8" in capsys.readouterr().out


def test_unwritable_output_fails_before_pruning(trained: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    out_path = tmp_path / "file" / "sub" / "p.pt"
    assert main(["prune", str(trained), "-o", str(out_path), "--finetune", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"tinyqml: error: cannot write to the folder {out_path.parent}: ")
    assert captured.err.count("\n") == 1
    assert "pruning" not in captured.out and "epoch" not in captured.out  # failed before the work


def test_output_folders_are_created_but_not_for_a_missing_model(trained: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", str(tmp_path / "none" / "cnn.pt"), "-o", str(tmp_path / "new" / "p.pt")]) == 1
    capsys.readouterr()
    assert not (tmp_path / "new").exists()
    assert main(["prune", str(trained), "-o", str(tmp_path / "a" / "b" / "p.pt"), "--finetune", "0"]) == 0
    assert (tmp_path / "a" / "b" / "p.pt").is_file() and [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["p.pt"]


def test_a_split_seed_past_2_32_names_the_file(trained: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    payload = torch.load(trained, weights_only=True)
    payload["metadata"]["data_seed"] = 2 ** 32
    bad = tmp_path / "seed.pt"
    torch.save(payload, bad)
    assert main(["prune", str(bad), "-o", str(tmp_path / "p.pt")]) == 1  # was: scikit-learn's traceback
    assert _one_line_error(capsys) == (f"tinyqml: error: {bad} has the data_seed 4294967296; expected an integer "
                                       f"in 0..4294967295\n")


def test_seed_past_2_32_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prune", "runs/cnn.pt", "--seed", str(2 ** 32)])
    assert exc.value.code == 2


def test_run_prune_is_split_into_short_helpers() -> None:
    import inspect

    from tinyqml.commands import prune

    for name, func in inspect.getmembers(prune, inspect.isfunction):
        if func.__module__ == prune.__name__:
            assert len(inspect.getsource(func).splitlines()) <= 40, name
