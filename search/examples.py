"""A small synthetic search for the engine's own examples, tests and benchmarks: no model, a known optimum.

:func:`quadratic_space` has two integer dimensions and one choice; :func:`quadratic_score` peaks at
``x = 7, y = 3, kind = "b"`` and can take ``seconds`` of wall time per evaluation (a stand-in for
training). :func:`quadratic_worker` is a module-level worker for
:func:`~tinyqml.search.workers.run_workers`: every process it runs joins the same study.

>>> from tinyqml.search import SearchConfig, run_search
>>> study = run_search(quadratic_score, quadratic_space(), SearchConfig(n_trials=60, storage=":memory:", seed=0,
...                                                                  progress=False))
>>> study.best_value >= -2
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

from tinyqml.search.space import Choice, IntRange, SearchSpace
from tinyqml.search.storage import HeartbeatConfig

__all__ = ["quadratic_space", "quadratic_score", "QuadraticJob", "quadratic_worker"]


def quadratic_space() -> SearchSpace:
    return SearchSpace.of(IntRange("x", 0, 20), IntRange("y", 0, 20), Choice(("a", "b", "c"), name="kind"))


def quadratic_score(config: Mapping[str, Any], trial: Any = None, seconds: float = 0.0) -> float:
    """``-(x - 7)^2 - (y - 3)^2 + (kind == "b")`` after ``seconds`` of sleep."""
    if seconds:
        time.sleep(seconds)
    return -float((config["x"] - 7) ** 2 + (config["y"] - 3) ** 2) + (config["kind"] == "b")


@dataclass(frozen=True)
class QuadraticJob:
    """One study of the quadratic search: storage, name, completed trials wanted, seed, seconds per trial,
    heartbeat."""

    storage: str
    study_name: str
    n_trials: int
    seed: int = 0
    seconds: float = 0.0
    heartbeat: HeartbeatConfig = HeartbeatConfig()


def quadratic_worker(index: int, job: QuadraticJob) -> None:
    """Run worker ``index`` of ``job`` until the study has ``job.n_trials`` completed trials."""
    from tinyqml.search.study import SearchConfig, run_search
    from tinyqml.search.workers import worker_seed

    config = SearchConfig(n_trials=job.n_trials, storage=job.storage, study_name=job.study_name,
                          seed=worker_seed(job.seed, index), progress=False, heartbeat=job.heartbeat)
    run_search(lambda cfg, trial: quadratic_score(cfg, trial, job.seconds), quadratic_space(), config)
