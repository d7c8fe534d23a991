"""Plots of a study: the Pareto front of two objectives, saved to a file (matplotlib, Agg).

>>> import optuna, tempfile, os
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(0))
>>> study.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)), 20)
>>> path = os.path.join(tempfile.mkdtemp(), "pareto.png")
>>> front = plot_pareto(study, path, names=("accuracy", "gates"))
>>> os.path.getsize(path) > 0 and len(front) >= 1
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from tinyqml.search.errors import SearchError

__all__ = ["plot_pareto"]


def plot_pareto(study: optuna.Study, path: str | Path, names: Sequence[str] | None = None,
                title: str | None = None) -> list[FrozenTrial]:
    """Scatter every completed trial of a two-objective study, the Pareto front highlighted
    and joined; saves to ``path`` and returns the front's trials."""
    if len(study.directions) != 2:
        raise SearchError(f"plot_pareto needs a study with 2 objectives, this one has {len(study.directions)}")
    names = tuple(names) if names is not None else ("objective 0", "objective 1")
    if len(names) != 2:
        raise SearchError(f"names must give 2 axis labels, got {names!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = sorted(study.best_trials, key=lambda t: t.values[0])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([t.values[0] for t in done], [t.values[1] for t in done], s=14, c="0.6", label="trials")
    ax.plot([t.values[0] for t in front], [t.values[1] for t in front], "o-", c="C3", label="Pareto front")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(title or study.study_name)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return front
