"""Tests of tinyqml.search.plots."""

from __future__ import annotations

import optuna
import pytest

from tinyqml.search.errors import SearchError
from tinyqml.search.plots import plot_pareto

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_pareto_plot_written_and_front_returned(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(1))
    study.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)), 30)
    front = plot_pareto(study, tmp_path / "sub" / "p.png", names=("acc", "gates"), title="t")
    assert (tmp_path / "sub" / "p.png").stat().st_size > 1000
    values = [t.values for t in front]
    assert values == sorted(values)
    for t in study.trials:  # nothing dominates a front member
        assert not any(t.values[0] > f[0] and t.values[1] < f[1] for f in values)


def test_pareto_plot_needs_two_objectives(tmp_path):
    study = optuna.create_study()
    with pytest.raises(SearchError, match="2 objectives"):
        plot_pareto(study, tmp_path / "p.png")
