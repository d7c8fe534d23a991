"""Tests of the quantum half of the main job (:mod:`tinyqml.demo.quantum`)."""

from __future__ import annotations

import pytest
import torch

from tinyqml.demo.errors import DemoConfigError
from tinyqml.demo.quantum import HEA, PRUNED, SEARCHED, QuantumDemoConfig, load_backend


def test_rows_are_the_trained_models_accuracies(fast_demo) -> None:  # type: ignore[no-untyped-def]
    from tinyqml.qml.datasets import digits4

    q = fast_demo[0].quantum
    assert [r.name for r in q.rows] == [HEA, SEARCHED, PRUNED]
    data = digits4((0, 1, 2, 3), seed=q.config.seed)
    x, y = data.x_test[:q.n_test], data.y_test[:q.n_test]
    for row in q.rows:
        with torch.no_grad():
            acc = float((q.layers[row.name](x).argmax(1) == y).double().mean())
        assert acc == pytest.approx(row.noiseless)
        assert set(row.aer) == set(q.config.scales) and all(0 <= v <= 1 for v in row.aer.values())
    hea, searched, pruned = (q.row(n) for n in (HEA, SEARCHED, PRUNED))
    assert hea.params == searched.params == q.winner["params"]  # the baseline gets the winner's budget
    assert pruned.params <= searched.params
    assert q.pruning["gates_after"] <= q.pruning["gates_before"]


def test_search_trials_and_winner(fast_demo) -> None:  # type: ignore[no-untyped-def]
    q = fast_demo[0].quantum
    assert len(q.trials) == q.config.trials
    assert q.winner["val_score"] == max(t["value"] for t in q.trials)
    mapping = q.winner["mapping"]
    assert len(mapping) == 4 and len(set(mapping)) == 4 and all(0 <= m < q.n_qubits for m in mapping)


def test_backends_by_name_and_size() -> None:
    pytest.importorskip("qiskit_ibm_runtime")
    from tinyqml.noise.errors import NoiseModelError

    assert load_backend("quito").num_qubits == 5
    with pytest.raises(NoiseModelError, match="no fake backend 'FakeNowhere'.*FakeManilaV2"):
        load_backend("FakeNowhere")
    with pytest.raises(DemoConfigError, match="has 27 qubits, pick one with 4..7"):
        load_backend("FakeMumbaiV2")  # 27 qubits: too large for the demo's density matrices


@pytest.mark.parametrize("kwargs, message", [({"trials": 0}, "trials must be an integer >= 1"),
                                             ({"sparsity": 1.0}, "sparsity must be in"),
                                             ({"scales": ()}, "scales must be noise scales"),
                                             ({"population": 1}, "population must be an integer >= 2"),
                                             ({"seed": 2 ** 32}, r"seed must be an integer in 0..4294967295")])
def test_config_rejects_bad_values(kwargs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DemoConfigError, match=message):
        QuantumDemoConfig(**kwargs)
