"""tinyqml.search: one search and pruning engine for circuits and nets (generic; imports no other area).

Search: a :class:`SearchSpace` of choices, :func:`run_search` on optuna (define-by-run,
SQLite by default, resumable), named constraints (:class:`CostModel`, :class:`Constraint`),
the constraint-aware :class:`EvolutionSampler`, :func:`plot_pareto`. Pruning: one
:class:`Mask` parametrization on any parameter, granularities, importances, schedules,
:class:`Pruner`, :func:`sensitivity_scan`, :func:`squash`.

>>> from tinyqml.search import SearchSpace, IntRange, Constraint, CostModel
>>> CostModel({"depth": lambda c: c["d"]}).feasible({"d": 3}, [Constraint("depth", max=4)])
True
"""

from tinyqml.search.constraints import Constraint, CostModel
from tinyqml.search.errors import (
    ConstraintError,
    InfeasibleError,
    PruningError,
    SearchError,
    SearchSpaceError,
    UnknownConstraintError,
)
from tinyqml.search.evolution import EvolutionConfig, EvolutionSampler, rank_trials
from tinyqml.search.gradient_pruning import GradientPruner, GradientPruningConfig
from tinyqml.search.granularity import Block, Channel, Element, Granularity, Groups
from tinyqml.search.importance import FunctionImportance, Importance, Magnitude, Taylor
from tinyqml.search.masks import Mask, attach_mask, get_mask, has_mask, squash
from tinyqml.search.nm import NMPattern, NMPruner, nm_mask, satisfies_nm
from tinyqml.search.plots import plot_pareto
from tinyqml.search.pruner import Pruner, Target, sensitivity_scan
from tinyqml.search.schedules import AGP, Iterative, OneShot, Schedule
from tinyqml.search.space import Choice, IntRange, SearchSpace, per_block
from tinyqml.search.strategies import NSGAII, TPE, Evolution, RandomSearch, Strategy
from tinyqml.search.study import SearchConfig, run_search

__all__ = [
    "Constraint", "CostModel", "ConstraintError", "PruningError", "SearchError", "SearchSpaceError",
    "UnknownConstraintError", "EvolutionConfig", "EvolutionSampler", "rank_trials", "Block", "Channel",
    "Element", "Granularity", "Groups", "FunctionImportance", "Importance", "Magnitude", "Taylor", "Mask",
    "attach_mask", "get_mask", "has_mask", "squash", "plot_pareto", "Pruner", "Target", "sensitivity_scan",
    "AGP", "Iterative", "OneShot", "Schedule", "Choice", "IntRange", "SearchSpace", "per_block",
    "SearchConfig", "run_search", "GradientPruner", "GradientPruningConfig", "Strategy", "Evolution", "RandomSearch", "TPE", "NSGAII",
    "NMPattern", "NMPruner", "nm_mask", "satisfies_nm", "InfeasibleError",
]
