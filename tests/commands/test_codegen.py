"""Tests of ``tinyqml codegen``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyqml.cli import main


def _tflite_model(path: Path) -> Path:
    """A small conv net exported to ``path``; its weights drawn under ``fork_rng``, its calibration images
    from an explicit generator: the global RNG is left as it was."""
    import torch

    from tinyqml.classical import export_tflite

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(4 * 6 * 6, 10))
    return export_tflite(net, torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(0)), path)


def test_the_model_helper_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    import torch

    state = torch.get_rng_state()
    first = _tflite_model(tmp_path / "a.tflite").read_bytes()
    assert torch.equal(torch.get_rng_state(), state)
    assert _tflite_model(tmp_path / "b.tflite").read_bytes() == first  # and is still reproducible


def test_codegen_help_has_an_example(cli_run) -> None:
    proc = cli_run("codegen", "--help")
    assert proc.returncode == 0
    assert "--target" in proc.stdout and "cortex-m4" in proc.stdout and "tinyqml codegen model.tflite" in proc.stdout


def test_codegen_writes_the_sources_and_prints_the_summary(cli_run, tmp_path: Path) -> None:
    model = _tflite_model(tmp_path / "m.tflite")
    proc = cli_run("codegen", str(model), "-o", str(tmp_path / "out"), "--target", "cortex-m4")
    assert proc.returncode == 0, proc.stderr
    assert "MACs" in proc.stdout and "arena" in proc.stdout and "flash" in proc.stdout
    for name in ("model.h", "model.c", "tinyqml_rt.h", "tinyqml_rt.c", "report.md", "report.json"):
        assert (tmp_path / "out" / name).is_file(), name
    assert "cortex-m4" in (tmp_path / "out" / "model.c").read_text()


@pytest.mark.parametrize("content", [None, b"garbage, not a flatbuffer"])
def test_codegen_bad_model_is_one_line_and_exit_1(tmp_path: Path, content: bytes | None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.tflite"
    if content is not None:
        path.write_bytes(content)
    assert main(["codegen", str(path), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyqml: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_codegen_unsupported_operator_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tinyqml.classical.tflite_builder import Op, Quant, TFLiteBuilder

    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), quant=Quant.per_tensor(0.1, 0))
    y = b.tensor("y", (1, 4), quant=Quant.per_tensor(0.1, 0))
    b.op(Op.SOFTMAX, [x], [y], beta=1.0)  # an int8 SOFTMAX output must be 1/256, -128
    path = tmp_path / "softmax.tflite"
    path.write_bytes(b.build([x], [y]))
    assert main(["codegen", str(path), "-o", str(tmp_path / "out")]) == 1
    assert "operator 0 (SOFTMAX)" in capsys.readouterr().err
