"""Run every tutorial script in fast mode and check that each converts to a notebook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
#: files each tutorial must write to its output folder
OUTPUTS = {
    "01_quantum_basics.py": ("01_bell_counts.png", "01_circuit.json"),
    "02_variational_classifier.py": ("02_classifier_history.png", "02_pooled_digits.png",
                                     "02_classifier_circuit.json"),
    "03_interop.py": ("03_interop_loss.png", "03_qiskit_model.qasm", "03_qasm_model_sample0.qasm"),
    "04_noise_aware_training.py": ("04_noise_model.json", "04_trajectories.png", "04_quantumnat.png"),
    "05_quantumnas.py": ("05_search_trials.png", "05_pareto.png", "05_pruning.png", "05_pruned_circuit.json"),
    "06_onchip_training.py": ("06_gradient_error.png", "06_pruning_masks.png", "06_accuracy_vs_circuits.png",
                              "06_qoc_runs.json"),
    "07_pruning.py": ("07_sensitivity.png", "07_sparsity.png", "07_channel_pruning.png", "07_channel_pruned.pt"),
    "08_quantization.py": ("08_weight_quant.png", "08_calibration.png", "08_accuracy.png", "08_model.tflite",
                           "08_model_qdq.onnx"),
    "09_nas.py": ("09_predictor.png", "09_search_curves.png", "09_pareto.png", "09_report.md"),
    "10_mcu_deployment.py": ("10_model.tflite", "10_report.md", "10_arena.png"),
    "11_distributed_search.py": ("11_trials.png", "11_study.csv"),
}


def test_every_tutorial_is_covered() -> None:
    assert sorted(p.name for p in TUTORIALS.glob("[0-9]*.py")) == sorted(OUTPUTS)


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_tutorial_runs_in_fast_mode(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "TINYQML_FAST": "1", "TINYQML_TUTORIAL_OUT": str(out), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(TUTORIALS / name)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for produced in OUTPUTS[name]:
        path = out / produced
        assert path.is_file() and path.stat().st_size > 0, f"{name} did not write {produced}"


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_tutorial_converts_to_notebook(name: str) -> None:
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(TUTORIALS / name)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and kinds.count("code") >= 3 and kinds.count("markdown") >= 3
    assert notebook.cells[0].source.startswith("# Tutorial")


def test_readme_lists_every_tutorial() -> None:
    readme = (TUTORIALS / "README.md").read_text()
    for name in OUTPUTS:
        assert name in readme
