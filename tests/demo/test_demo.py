"""Tests of the main job as a whole (:mod:`tinyqml.demo`): files, the report's numbers, progress."""

from __future__ import annotations

import json
import re

import pytest

from tinyqml.demo import DEMO_FAST, DemoConfig, DemoConfigError, run_dir


def test_the_run_writes_the_report_plots_and_results(fast_demo) -> None:  # type: ignore[no-untyped-def]
    result, _ = fast_demo
    out = result.out_dir
    assert re.fullmatch(r"\d{8}-\d{6}(-\d+)?", out.name)
    for name in ("report.md", "results.json", "quantum_accuracy.png", "quantum_search.png", "classical_pipeline.png",
                 "classical_c_vs_tflm.png", "quantumnas.db", "quantum_pruned_circuit.json", "classical/model.tflite",
                 "classical/c/model.c"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = result.report.read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / link).is_file(), link


def test_report_numbers_are_the_results(fast_demo) -> None:  # type: ignore[no-untyped-def]
    result, _ = fast_demo
    report = result.report.read_text()
    data = json.loads((result.out_dir / "results.json").read_text())
    for row in result.quantum.rows:
        line = next(line for line in report.splitlines() if line.startswith(f"| {row.name} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == f"{100 * row.noiseless:.1f}%"
        assert cells[2:2 + len(row.aer)] == [f"{100 * v:.1f}%" for v in row.aer.values()]
        assert cells[-4:] == [str(row.params), str(row.gates), str(row.two_qubit), str(row.depth)]
    c = result.classical
    assert f"| int8 outputs equal | {c.bit_exact:,}/{c.compared:,} |" in report
    assert data["classical"]["bit_exact"] == c.bit_exact and data["meta"]["fast"] is True
    assert [s["name"] for s in data["classical"]["stages"]] == [s.name for s in c.stages]
    assert "tinyqml demo --fast" in report


def test_progress_stages_run_from_zero_to_their_total(fast_demo) -> None:  # type: ignore[no-untyped-def]
    _, calls = fast_demo
    stages: dict[str, list[tuple[int, int]]] = {}
    for stage, done, total in calls:
        stages.setdefault(stage, []).append((done, total))
    assert any(s.startswith("quantum:") for s in stages) and any(s.startswith("classical:") for s in stages)
    for stage, seen in stages.items():
        assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1], stage
        assert [d for d, _ in seen] == sorted(d for d, _ in seen), stage
    assert len(stages["quantum: co-search circuit + mapping"]) == DEMO_FAST.quantum.trials + 1


def test_run_dir_never_reuses_a_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime

    now = datetime(2026, 1, 2, 3, 4, 5)
    made = [run_dir(tmp_path, now) for _ in range(3)]
    assert [p.name for p in made] == ["20260102-030405", "20260102-030405-2", "20260102-030405-3"]


@pytest.mark.parametrize("parts", [(), ("quantum", "quantum"), ("optics",)])
def test_config_rejects_bad_parts(parts) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DemoConfigError, match="parts must be a non-empty subset"):
        DemoConfig(parts=parts)


def test_preflight_refuses_a_backend_whose_noise_cannot_be_scaled() -> None:
    pytest.importorskip("qiskit_aer")
    import dataclasses

    from tinyqml.demo import preflight

    lagos = dataclasses.replace(DEMO_FAST.quantum, backend="FakeLagosV2")  # readout error too large for x4
    with pytest.raises(DemoConfigError, match="fake_lagos's noise model cannot be scaled by 4"):
        preflight(dataclasses.replace(DEMO_FAST, quantum=lagos, parts=("quantum",)))


def test_run_dir_in_an_unwritable_place_says_what_to_do(tmp_path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DemoConfigError, match="cannot create the run folder .*give a writable folder with -o DIR"):
        run_dir(blocker / "runs")


def test_with_seed_sets_every_seed() -> None:
    config = DEMO_FAST.with_seed(7)
    assert config.quantum.seed == config.classical.seed == 7 and config.fast
