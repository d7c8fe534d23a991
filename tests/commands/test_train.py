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
