"""Tests of ``tinyqml quantize``, and of the whole classical flow train -> prune -> quantize -> codegen."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tinyqml.classical.convert import to_nhwc
from tinyqml.classical.data import DigitsConfig, load_digits_data
from tinyqml.classical.model_file import load_model_file
from tinyqml.classical.tflite_export import TFLMRunner, operator_names
from tinyqml.classical.tflite_reader import read_tflite
from tinyqml.classical.train import evaluate
from tinyqml.cli import build_parser, main
from tinyqml.commands.quantize import output_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model file (widths 4,8,8, 2 epochs, digits split seed 2)."""
    path = tmp_path_factory.mktemp("train") / "cnn.pt"
    assert main(["train", "cnn", "--widths", "4,8,8", "--epochs", "2", "--data-seed", "2", "-o", str(path)]) == 0
    return path


def _tflite_accuracy(path: Path, data_seed: int) -> tuple[float, np.ndarray]:
    """Test accuracy (%) of the .tflite file in TFLite Micro, and its int8 outputs; the input quantization
    is read from the file itself."""
    blob = path.read_bytes()
    model = read_tflite(blob)
    t = model.tensor(model.inputs[0])
    data = load_digits_data(DigitsConfig(seed=data_seed))
    v = to_nhwc(data.x_test).astype(np.float64) / np.float64(np.float32(t.scale))  # TFLite's QUANTIZE
    xq = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + t.zero_point, -128, 127).astype(np.int8)
    out = TFLMRunner(blob).run_all(xq)[0].reshape(len(xq), -1)
    return 100.0 * float((out.astype(np.int64).argmax(1) == data.y_test.numpy()).mean()), out


def _number(pattern: str, out: str) -> float:
    m = re.search(pattern, out, flags=re.M)
    assert m is not None, (pattern, out)
    return float(m.group(1).replace(",", ""))


def test_quantize_writes_a_tflite_whose_numbers_match_the_printout(trained: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "out" / "cnn.tflite"
    assert main(["quantize", str(trained), "-o", str(path), "--calibration", "128"]) == 0
    out = capsys.readouterr().out
    assert path.is_file()
    assert f"wrote {path}: {path.stat().st_size:,} bytes, operators {' '.join(operator_names(path.read_bytes()))}" \
        in out
    assert "calibrated on 128 training images (minmax)" in out
    model, _, _ = load_model_file(trained)
    data = load_digits_data(DigitsConfig(seed=2))
    fp32 = _number(r"^test accuracy: fp32 (\d+\.\d+)%", out)
    assert abs(fp32 - evaluate(model, data.x_test, data.y_test)) < 0.006
    int8 = _number(r"^test accuracy: fp32 \d+\.\d+%, int8 (\d+\.\d+)%", out)
    recomputed, _ = _tflite_accuracy(path, 2)
    assert abs(int8 - recomputed) < 0.006
    assert abs(_number(r"TFLite Micro test accuracy (\d+\.\d+)%$", out) - recomputed) < 0.006
    assert "TFLite Micro vs tinyqml's int8 engine: 3,600/3,600 int8 outputs equal on 360 test images (bit-exact)" \
        in out
    assert f"next: tinyqml codegen {path} -o build/cnn" in out


def test_the_calibrator_is_used(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", str(trained), "-o", str(tmp_path / "p.tflite"), "--calibrator", "percentile"]) == 0
    out = capsys.readouterr().out
    assert "calibrated on 256 training images (percentile)" in out and "(bit-exact)" in out
    assert main(["quantize", str(trained), "-o", str(tmp_path / "m.tflite")]) == 0
    capsys.readouterr()
    assert (tmp_path / "p.tflite").read_bytes() != (tmp_path / "m.tflite").read_bytes()  # other ranges


@pytest.mark.parametrize("argv", [["quantize"], ["prune"], ["train", "cnn"]])
def test_help_shows_the_examples(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"tinyqml {' '.join(argv)} " in out and "runs/cnn.pt" in out


def test_default_output_and_options() -> None:
    args = build_parser().parse_args(["quantize", "runs/cnn_pruned.pt"])
    assert (str(output_path(args)), args.calibration, args.calibrator) == ("runs/cnn_pruned.tflite", 256, "minmax")


@pytest.mark.parametrize("argv", [["--calibration", "0"], ["--calibration", "1.5"], ["--calibrator", "kl"], []])
def test_bad_numbers_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["quantize", *(argv and ["runs/cnn.pt"]), *argv])
    assert exc.value.code == 2


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("tinyqml: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_errors_name_the_file_and_what_to_do(trained: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", str(tmp_path / "nope.pt")]) == 1
    assert f"no model file at {tmp_path / 'nope.pt'}; make one with `tinyqml train cnn" in _one_line_error(capsys)
    tflite = tmp_path / "m.tflite"
    assert main(["quantize", str(trained), "-o", str(tflite)]) == 0
    capsys.readouterr()
    assert main(["quantize", str(tflite)]) == 1
    assert f"{tflite} is a TFLite flatbuffer, not a tinyqml model file" in _one_line_error(capsys)
    assert main(["quantize", str(trained), "--calibration", "5000", "-o", str(tmp_path / "c.tflite")]) == 1
    assert "--calibration 5000 is more than the 1167 images" in _one_line_error(capsys)
    assert main(["quantize", str(trained), "-o", str(tmp_path)]) == 1
    assert f"{tmp_path} is a directory" in _one_line_error(capsys)
    assert not (tmp_path / "c.tflite").exists()


def test_the_classical_flow_train_prune_quantize_codegen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs, build = tmp_path / "runs", tmp_path / "build" / "cnn"
    cnn, pruned, tflite = runs / "cnn.pt", runs / "cnn_pruned.pt", runs / "cnn.tflite"
    assert main(["train", "cnn", "--widths", "8,16,16", "--epochs", "2", "-o", str(cnn)]) == 0
    trained_acc = _number(r"^test accuracy (\d+\.\d+)% \(360 images\)$", capsys.readouterr().out)
    assert main(["prune", str(cnn), "-o", str(pruned), "--ratio", "0.5", "--finetune", "2"]) == 0
    out = capsys.readouterr().out
    assert abs(_number(r"^test accuracy: before (\d+\.\d+)%", out) - trained_acc) < 1e-9
    pruned_acc = _number(r"after fine-tuning (\d+\.\d+)% \(2 epochs\)$", out)
    dense_model, _, _ = load_model_file(cnn)
    small_model, small_config, _ = load_model_file(pruned)
    n_dense = sum(p.numel() for p in dense_model.parameters())
    n_small = sum(p.numel() for p in small_model.parameters())
    assert small_config.widths == (4, 8, 8) and n_small < n_dense
    assert f"params {n_dense:,} -> {n_small:,}" in out
    pruned_macs = _number(r"^MACs [\d,]+ -> ([\d,]+) ", out)

    assert main(["quantize", str(pruned), "-o", str(tflite)]) == 0
    out = capsys.readouterr().out
    assert abs(_number(r"^test accuracy: fp32 (\d+\.\d+)%", out) - pruned_acc) < 1e-9
    int8_acc = _number(r"int8 (\d+\.\d+)% \(", out)
    recomputed, tflm_out = _tflite_accuracy(tflite, 0)
    assert abs(int8_acc - recomputed) < 0.006 and "(bit-exact)" in out
    assert abs(int8_acc - pruned_acc) < 5  # int8 stays close to fp32

    assert main(["codegen", str(tflite), "-o", str(build)]) == 0
    out = capsys.readouterr().out
    report = json.loads((build / "report.json").read_text())
    assert f"{int(pruned_macs):,} MACs" in out  # codegen counts the same MACs as prune printed
    assert report["macs"] == pruned_macs and report["output_bytes"] == tflm_out.shape[1] == 10
    assert (build / "model.c").is_file()


def test_unwritable_output_fails_before_calibrating(trained: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    out_path = tmp_path / "file" / "cnn.tflite"
    assert main(["quantize", str(trained), "-o", str(out_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"tinyqml: error: cannot write to the folder {out_path.parent}: ")
    assert captured.err.count("\n") == 1
    assert "calibrated" not in captured.out and "fp32" not in captured.out  # failed before the work


def test_int8_accuracy_is_the_argmax_accuracy() -> None:
    from tinyqml.commands.quantize import int8_accuracy

    logits = np.array([[-128, 127, 0], [5, 5, -3], [1, 2, 3], [-128, -128, -127]], np.int8)
    assert int8_accuracy(logits, np.array([1, 0, 2, 0])) == 75.0  # ties go to the first class, as argmax
