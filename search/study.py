"""Running a search: an optuna study with named constraints, resumable storage, progress.

:func:`run_search` asks the :class:`~tinyqml.search.space.SearchSpace` for a configuration
on every trial (define-by-run), records the constraint violations of the candidate
built from it, and calls the objective. Trial bookkeeping, samplers, pruners and
storages are optuna's. The default storage is a SQLite file; any optuna storage URL
works (``"postgresql://..."`` for many workers) and ``":memory:"`` keeps the study in
memory. Rerunning with the same storage and study name continues the study up to
``n_trials`` completed trials.

>>> from tinyqml.search import Choice, IntRange, SearchSpace, SearchConfig, run_search
>>> space = SearchSpace.of(IntRange("depth", 1, 6), Choice(("ry", "rx"), name="gate"))
>>> def score(cfg, trial):
...     return cfg["depth"] + (cfg["gate"] == "ry")
>>> study = run_search(score, space, SearchConfig(n_trials=12, storage=":memory:", seed=0, progress=False))
>>> study.best_params
{'depth': 6, 'gate': 'ry'}
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import optuna
from optuna.trial import TrialState

from tinyqml.search.constraints import Constraint, CostModel
from tinyqml.search.errors import SearchError
from tinyqml.search.evolution import VIOLATIONS_ATTR
from tinyqml.search.space import SearchSpace
from tinyqml.search.storage import DEFAULT_STORAGE, HeartbeatConfig, open_storage, redact_url, storage_url
from tinyqml.search.strategies import Evolution, Strategy
from tinyqml.search.workers import WORKER_ATTR, optimize_until, worker_id

__all__ = ["SearchConfig", "run_search", "storage_url", "DEFAULT_STORAGE"]

log = logging.getLogger(__name__)

Objective = Callable[[dict[str, Any], optuna.Trial], "float | Sequence[float]"]


@dataclass(frozen=True)
class SearchConfig:
    """How to run a study.

    Attributes:
        n_trials: completed trials wanted in the study (a rerun only adds the missing ones).
        directions: ``"maximize"`` / ``"minimize"`` per objective.
        storage: an optuna storage URL, a path to a SQLite file, or ``":memory:"``.
        study_name: the study's name in the storage.
        seed: seed of the default sampler.
        progress: show optuna's progress bar.
        strategy: how to search (:class:`~tinyqml.search.strategies.Evolution` by default;
            ``RandomSearch``, ``TPE``, ``NSGAII``); one strategy object serves any space.
        heartbeat: the heartbeat and retry of crashed trials for file and server storages
            (:class:`~tinyqml.search.storage.HeartbeatConfig`; ``None``: off).
        fingerprint: a digest of what the trials' values depend on (the score, constraints, space);
            stored with a new study, and a stored study with another fingerprint is refused, so a rerun
            with other settings never mixes its trials with the old ones (``None``: not checked).
    """

    n_trials: int
    directions: tuple[str, ...] = ("maximize",)
    storage: str = DEFAULT_STORAGE
    study_name: str = "tinyqml"
    seed: int | None = None
    progress: bool = True
    strategy: Strategy = Evolution()
    heartbeat: HeartbeatConfig | None = HeartbeatConfig()
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.n_trials, int) or isinstance(self.n_trials, bool) or self.n_trials < 1:
            raise SearchError(f"n_trials must be a positive integer, got {self.n_trials!r}")
        dirs = tuple(self.directions)
        if not dirs or any(d not in ("maximize", "minimize") for d in dirs):
            raise SearchError(f"directions must be 'maximize' or 'minimize' each, got {self.directions!r}")
        object.__setattr__(self, "directions", dirs)
        if not isinstance(self.strategy, Strategy):
            raise SearchError(f"strategy must be a tinyqml.search Strategy (Evolution, RandomSearch, TPE, NSGAII), "
                              f"got {type(self.strategy).__name__}")
        if self.heartbeat is not None and not isinstance(self.heartbeat, HeartbeatConfig):
            raise SearchError(f"heartbeat must be a HeartbeatConfig or None, got {type(self.heartbeat).__name__}")


def _values(raw: Any, n: int) -> list[float]:
    vals = [raw] if n == 1 and not isinstance(raw, (list, tuple)) else list(raw)
    if len(vals) != n:
        raise SearchError(f"the objective returned {len(vals)} value(s) for {n} direction(s)")
    out = []
    for v in vals:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise SearchError(f"the objective returned {v!r}, not a number") from None
        if math.isnan(f):
            raise SearchError("the objective returned NaN")
        out.append(f)
    return out


FINGERPRINT_ATTR = "tinyqml_fingerprint"


def _check_fingerprint(study: optuna.Study, config: SearchConfig) -> None:
    if config.fingerprint is None:
        return
    stored = study.user_attrs.get(FINGERPRINT_ATTR)
    if stored is None and not study.trials:
        study.set_user_attr(FINGERPRINT_ATTR, config.fingerprint)
    elif stored != config.fingerprint:
        raise SearchError(f"the study {config.study_name!r} in {redact_url(config.storage)!r} was run with other "
                          f"settings (fingerprint {stored!r}, now {config.fingerprint!r}); rerun with the same settings "
                          f"to continue it, or give another study name")


def run_search(objective: Objective, space: SearchSpace, config: SearchConfig,
               sampler: optuna.samplers.BaseSampler | None = None, costs: CostModel | None = None,
               constraints: Sequence[Constraint] = (), build: Callable[[Mapping[str, Any]], Any] | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Run (or continue) a study; returns the optuna ``Study``.

    ``objective(config, trial)`` scores one configuration (``trial`` is optuna's, for
    ``trial.report``/pruning or extra define-by-run choices). ``build(config)`` makes the
    candidate that ``costs`` measure (default: the configuration itself). Constraints are
    checked against ``costs`` before anything runs; without ``sampler`` the config's
    strategy makes one (constraint-aware evolution by default).
    """
    if not isinstance(space, SearchSpace):
        raise SearchError(f"run_search needs a SearchSpace, got {type(space).__name__}")
    constraints = tuple(constraints)
    if constraints and costs is None:
        raise SearchError("constraints need a CostModel (costs=...) that defines the costs they name")
    if costs is not None:
        costs.check(constraints)
    make = build or (lambda cfg: cfg)

    def feasible(cfg: Mapping[str, Any]) -> bool:
        return costs is None or not constraints or costs.feasible(make(cfg), constraints)

    if sampler is None:
        sampler = config.strategy.sampler(space, feasible if constraints else None, config.seed)
    study = optuna.create_study(storage=open_storage(config.storage, config.heartbeat), study_name=config.study_name,
                                directions=list(config.directions), sampler=sampler, pruner=pruner,
                                load_if_exists=True)
    _check_fingerprint(study, config)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    remaining = config.n_trials - done
    if remaining <= 0:
        log.info("study %r already has %d completed trials", config.study_name, done)
        return study

    def run_trial(trial: optuna.Trial) -> Any:
        trial.set_user_attr(WORKER_ATTR, worker_id())
        cfg = space.suggest(trial)
        if costs is not None:
            cand = make(cfg)
            if constraints:
                viol = costs.violations(cand, constraints)
                trial.set_user_attr(VIOLATIONS_ATTR, list(viol))
                if hasattr(trial, "set_constraint"):  # optuna >= 5: samplers read named constraints
                    for i, (c, v) in enumerate(zip(constraints, viol)):
                        trial.set_constraint(f"{i}:{c.cost}", v)
            trial.set_user_attr("costs", costs.evaluate(cand))
        vals = _values(objective(cfg, trial), len(config.directions))
        return vals[0] if len(vals) == 1 else vals

    log.info("study %r: %d completed, running until %d", config.study_name, done, config.n_trials)
    optimize_until(study, run_trial, config.n_trials, show_progress_bar=config.progress)
    return study
