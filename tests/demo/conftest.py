"""One fast run of the main job, shared by the demo tests (about 20 s on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fast_demo(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``(DemoResult, progress calls)`` of ``run_demo`` with :data:`tinyqml.demo.DEMO_FAST`."""
    pytest.importorskip("qiskit_aer")
    pytest.importorskip("matplotlib")
    from tinyqml.demo import DEMO_FAST, run_demo

    calls: list[tuple[str, int, int]] = []
    root: Path = tmp_path_factory.mktemp("demo-runs")
    result = run_demo(root, DEMO_FAST, progress=lambda *a: calls.append(a), command="tinyqml demo --fast")
    return result, calls
