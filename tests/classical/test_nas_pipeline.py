"""One run from the supernet to verified C, and its early refusals."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from tinyqml.classical import mcu
from tinyqml.classical import nas_pipeline
from tinyqml.classical.arch import NASError, SupernetConfig
from tinyqml.classical.efficiency import peak_sram
from tinyqml.classical.nas import NASSearchConfig, NoFeasibleArchError
from tinyqml.classical.nas_pipeline import FAST, NASRunConfig, run_nas
from tinyqml.classical.ofa_train import OFATrainConfig
from tinyqml.search import Constraint, UnknownConstraintError

SMALL = SupernetConfig(stem=8, first=4, stages=((8, 2), (16, 2)), depths=(1, 2), resolutions=(8, 12))
CONFIG = replace(FAST, supernet=SMALL, train=OFATrainConfig(epochs=2), n_samples=16,
                 search=NASSearchConfig(n_trials=15), constraints=("macs<=60k", "peak_sram<=6k"))
HOST = pytest.mark.skipif(not mcu.tools_available()["gcc"] and not os.environ.get("TINYQML_REQUIRE_MCU_TOOLS"),
                          reason="needs gcc (`make mcu-tools`)")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_nas(CONFIG, tmp_path_factory.mktemp("nas"), on_stage=lambda m: None)


@HOST
def test_one_run_from_search_to_checked_c(run):
    best = run.search.best
    assert best.feasible and best.costs["macs"] <= 60_000 and best.costs["peak_sram"] <= 6_000
    dep = run.deployed
    assert dep.arch == best.arch and dep.bit_exact is True
    # the predictor's peak SRAM is the code generator's, for the network that was actually compiled
    assert dep.codegen.peak_sram_bytes == peak_sram(best.arch, SMALL) == best.costs["peak_sram"]
    assert dep.codegen.macs == best.costs["macs"]
    names = {p.name for p in run.out_dir.iterdir()}
    assert {"supernet.pt", "samples.json", "predictor.pt", "search.json", "pareto.png", "report.md",
            "report.json", "deploy"} <= names
    report = json.loads((run.out_dir / "report.json").read_text())
    assert report["chosen"]["costs"]["macs"] == best.costs["macs"]
    assert report["search"]["trials"] == 15 and report["predictor"]["samples"] == 16
    assert len(json.loads((run.out_dir / "samples.json").read_text())) == 16
    assert "chose" in run.summary() and "Spearman" in run.summary()
    assert all(isinstance(p, Path) and p.is_file() for p in run.files.values())


@HOST
def test_a_saved_supernet_is_reused_without_training(run, tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the supernet was trained again")

    monkeypatch.setattr(nas_pipeline, "train_supernet", no_training)
    again = run_nas(CONFIG, tmp_path, supernet=run.out_dir / "supernet.pt", on_stage=lambda m: None)
    assert again.samples == run.samples  # same weights, same sampled sub-networks, same accuracies
    assert again.files["supernet"] == run.out_dir / "supernet.pt" and not (tmp_path / "supernet.pt").exists()
    with pytest.raises(NASError, match="cannot load"):
        run_nas(CONFIG, tmp_path, supernet=tmp_path / "missing.pt", on_stage=lambda m: None)


def test_search_to_c_without_a_compiler_check(tmp_path):
    """The whole flow with the TFLite Micro check off: runs wherever the suite runs, compiler or not."""
    config = replace(CONFIG, deploy=replace(CONFIG.deploy, verify_images=0), n_samples=12,
                     search=NASSearchConfig(n_trials=8))
    result = run_nas(config, tmp_path, on_stage=lambda m: None)
    assert result.deployed.verified_equal is None and (result.deployed.c_dir / "model.c").is_file()
    assert result.deployed.codegen.peak_sram_bytes == result.search.best.costs["peak_sram"]


def test_bad_constraints_fail_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(nas_pipeline, "train_supernet", lambda *a, **k: pytest.fail("trained before checking"))
    with pytest.raises(UnknownConstraintError, match="'flash'.*accepted: macs, params, peak_sram"):
        run_nas(CONFIG, tmp_path, constraints=["macs<=60k", "flash<=1M"])
    with pytest.raises(UnknownConstraintError, match="latency"):
        run_nas(CONFIG, tmp_path, constraints=["latency<=1"])  # no latency table given
    with pytest.raises(NoFeasibleArchError, match=r"satisfies macs<=100 \(their range: macs [\d,]+\.\.[\d,]+\)"):
        run_nas(CONFIG, tmp_path, constraints=["macs<=100"])
    assert not (tmp_path / "supernet.pt").exists()


def test_config_checks():
    assert NASRunConfig(constraints=("macs<=1k",)).constraints == (Constraint("macs", max=1000),)
    with pytest.raises(NASError, match="n_samples"):
        NASRunConfig(n_samples=3)
    with pytest.raises(NASError, match="OFATrainConfig"):
        NASRunConfig(train=3)
    with pytest.raises(NASError, match="NASRunConfig"):
        run_nas("fast")
