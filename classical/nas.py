"""Constrained architecture search of once-for-all sub-networks, on the shared search engine.

Nothing here loops over candidates: :func:`search_architecture` hands the supernet's
:func:`~tinyqml.classical.arch.arch_space`, the cost model and the constraints to
:func:`tinyqml.search.run_search`, whose strategy samples, whose study records every trial
and whose constraint-aware samplers only propose architectures that satisfy the constraints.
This module adds what is specific to architectures:

- ``score(arch)`` (higher is better: an :class:`~tinyqml.classical.acc_predictor.AccuracyPredictor`,
  measured accuracy, ...) and the costs are cached by :meth:`Arch.canonical
  <tinyqml.classical.arch.Arch.canonical>` (one key per network), because the sampler evaluates
  the constraints of every candidate it redraws and differently-encoded copies of one network
  (inactive positions differ) are the same network;
- :class:`NASResult`: every evaluated trial in order (arch, score, costs, feasible), the best
  *feasible* one (an infeasible trial is never returned; none feasible is
  :class:`NoFeasibleArchError`) and the best-so-far curve;
- :func:`parse_constraint` / :func:`parse_constraints` (``"macs<=200k"``), for a command line;
- :func:`compare_strategies`: evolution against random search at the same budget, constraints
  and seeds (both are :class:`~tinyqml.search.EvolutionSampler` s with the same constraint-aware
  redrawing; :class:`~tinyqml.search.RandomSearch` is ``EvolutionSampler.random``, and with the
  same seed both start from the same random draws, so the comparison is paired);
- :func:`pareto_front` and :func:`plot_pareto_nas` (score against a cost, the constraint drawn).

>>> from tinyqml.classical.arch import SupernetConfig
>>> cfg = SupernetConfig()
>>> score = lambda arch: sum(arch.depths) + arch.resolution / 24  # stands in for an accuracy
>>> result = search_architecture(score, cfg, analytic_costs(cfg), ["macs<=400k"], NASSearchConfig(n_trials=30))
>>> result.best.feasible and result.best_costs["macs"] <= 400_000
True
>>> len(result.trials), result.best_so_far()[-1] == result.best_score
(30, True)
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from tinyqml.classical.arch import Arch, NASError, SupernetConfig, arch_space, macs, params
from tinyqml.classical.figures import save_figure
from tinyqml.search import (
    Constraint,
    CostModel,
    Evolution,
    EvolutionConfig,
    InfeasibleError,
    RandomSearch,
    SearchConfig,
    Strategy,
    run_search,
)

__all__ = ["NASSearchConfig", "NASTrial", "NASResult", "StrategyComparison", "NoFeasibleArchError",
           "ConstraintSyntaxError", "DEFAULT_STRATEGY", "RANDOM_STRATEGY", "analytic_costs", "cached_costs", "search_architecture",
           "parse_constraint", "parse_constraints", "compare_strategies", "pareto_front", "plot_pareto_nas"]

log = logging.getLogger(__name__)

#: evolution for budgets of 50-200 evaluations on a once-for-all space: a small population and
#: few mutations per child (0.1 of ~20 entries), 2000 draws per trial to find a feasible one under tight
#: constraints (costs are cached; a draw costs microseconds to a millisecond); at 60-80 trials it beat both search's default
#: ``Evolution()`` (mutation 0.3) and random search on synthetic scores
DEFAULT_STRATEGY = Evolution(EvolutionConfig(population=10, parents=3, mutation_prob=0.1, max_redraws=2000))
#: random search with the same redraw budget (tight constraints leave few feasible architectures)
RANDOM_STRATEGY = RandomSearch(max_redraws=2000)

Score = Callable[[Arch], float]


class NoFeasibleArchError(NASError):
    """The search found no architecture that satisfies the constraints."""


class ConstraintSyntaxError(NASError):
    """A constraint string that :func:`parse_constraint` cannot read (the message shows the accepted form)."""


@dataclass(frozen=True)
class NASSearchConfig:
    """How to search.

    Attributes:
        n_trials: the evaluation budget (completed trials; a rerun on a stored study adds the missing ones).
        strategy: a :class:`~tinyqml.search.Strategy` (:data:`DEFAULT_STRATEGY`, ``RandomSearch()``, ...).
        seed: the sampler's seed.
        storage: an optuna storage URL, a SQLite path, or ``":memory:"``.
        study_name: the study's name in ``storage``.
        progress: show optuna's progress bar.
    """

    n_trials: int = 100
    strategy: Strategy = DEFAULT_STRATEGY
    seed: int = 0
    storage: str = ":memory:"
    study_name: str = "nas"
    progress: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.n_trials, bool) or not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise NASError(f"n_trials must be a positive int (the evaluation budget), got {self.n_trials!r}")
        if not isinstance(self.strategy, Strategy):
            raise NASError(f"strategy must be a tinyqml.search Strategy (Evolution(...), RandomSearch(), TPE(), "
                           f"NSGAII()), got {type(self.strategy).__name__}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise NASError(f"seed must be an int, got {self.seed!r}")
        for name in ("storage", "study_name"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise NASError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")

    def search_config(self, fingerprint: str | None = None) -> SearchConfig:
        """The engine's :class:`~tinyqml.search.SearchConfig` (one objective, maximized)."""
        return SearchConfig(n_trials=self.n_trials, storage=self.storage, study_name=self.study_name,
                            seed=self.seed, progress=self.progress, strategy=self.strategy, fingerprint=fingerprint)


@dataclass(frozen=True)
class NASTrial:
    """One evaluated architecture: the trial ``number``, the canonical ``arch``, its ``score``, every cost of
    the cost model and whether it satisfies the constraints."""

    number: int
    arch: Arch
    score: float
    costs: Mapping[str, float]
    feasible: bool


@dataclass(frozen=True)
class NASResult:
    """The best feasible trial, every trial in order and the constraints searched under."""

    best: NASTrial
    trials: tuple[NASTrial, ...]
    constraints: tuple[Constraint, ...]

    @property
    def best_arch(self) -> Arch:
        return self.best.arch

    @property
    def best_score(self) -> float:
        return self.best.score

    @property
    def best_costs(self) -> Mapping[str, float]:
        return self.best.costs

    def feasible_trials(self) -> tuple[NASTrial, ...]:
        return tuple(t for t in self.trials if t.feasible)

    def best_so_far(self) -> list[float]:
        """After each trial, the best feasible score up to it (NaN until the first feasible trial)."""
        out, best = [], -math.inf
        for t in self.trials:
            if t.feasible:
                best = max(best, t.score)
            out.append(best if best > -math.inf else math.nan)
        return out

    def pareto(self, cost: str = "macs") -> list[NASTrial]:
        """The feasible trials on the score / ``cost`` Pareto front (see :func:`pareto_front`)."""
        return pareto_front(self.feasible_trials(), "score", cost)


def analytic_costs(config: SupernetConfig) -> CostModel:
    """``macs`` and ``params`` of an :class:`~tinyqml.classical.arch.Arch` of ``config`` (analytic, no torch).

    >>> from tinyqml.classical.arch import SupernetConfig
    >>> cfg = SupernetConfig()
    >>> analytic_costs(cfg).evaluate(cfg.smallest())
    {'macs': 139232.0, 'params': 6570.0}
    """
    if not isinstance(config, SupernetConfig):
        raise NASError(f"analytic_costs needs a SupernetConfig, got {type(config).__name__}")
    return CostModel({"macs": lambda arch: macs(arch, config), "params": lambda arch: params(arch, config)})


def cached_costs(costs: CostModel, config: SupernetConfig) -> CostModel:
    """``costs`` with every value cached by the canonical arch (the sampler re-evaluates redrawn candidates)."""
    cache: dict[tuple[str, Arch], float] = {}

    def cost_fn(name: str) -> Callable[[Arch], float]:
        def fn(arch: Arch) -> float:
            key = (name, _canonical(arch, config))
            if key not in cache:
                cache[key] = costs.cost(name, key[1])
            return cache[key]
        return fn

    return CostModel({name: cost_fn(name) for name in costs.names})


def _canonical(arch: Any, config: SupernetConfig) -> Arch:
    if not isinstance(arch, Arch):
        raise NASError(f"costs and scores are of an Arch, got {type(arch).__name__}")
    return arch.canonical(config)


def _cached_score(score: Score, config: SupernetConfig) -> Score:
    cache: dict[Arch, float] = {}

    def fn(arch: Arch) -> float:
        key = _canonical(arch, config)
        if key not in cache:
            value = score(key)
            try:
                f = float(value)
            except (TypeError, ValueError):
                raise NASError(f"score({key.describe(config)}) returned {value!r}; accepted: a finite number") from None
            if not math.isfinite(f):
                raise NASError(f"score({key.describe(config)}) returned {f}; accepted: a finite number")
            cache[key] = f
        return cache[key]

    fn.__wrapped__ = getattr(score, "__wrapped__", score)  # type: ignore[attr-defined]  # for the fingerprint
    return fn


def _checked(score: Any, config: Any, costs: Any, constraints: Any) -> tuple[Constraint, ...]:
    if not callable(score):
        raise NASError(f"score must be a callable arch -> float (higher is better), got {type(score).__name__}")
    if not isinstance(config, SupernetConfig):
        raise NASError(f"config must be a SupernetConfig, got {type(config).__name__}")
    if not isinstance(costs, CostModel):
        raise NASError(f"costs must be a tinyqml.search CostModel over Arch candidates, got {type(costs).__name__}")
    return costs.check(parse_constraints(constraints))  # an unknown cost: UnknownConstraintError, before any trial


def search_architecture(score: Score, config: SupernetConfig, costs: CostModel,
                        constraints: Iterable[Constraint | str] = (),
                        search: NASSearchConfig = NASSearchConfig()) -> NASResult:
    """Search ``config``'s architectures for the highest ``score(arch)`` under ``constraints`` on ``costs``.

    ``constraints`` are :class:`~tinyqml.search.Constraint` s or strings (:func:`parse_constraint`);
    each must name a cost of ``costs`` (else :class:`~tinyqml.search.UnknownConstraintError`, before any
    trial runs). Raises :class:`NoFeasibleArchError` when no feasible architecture was found.
    """
    limits = _checked(score, config, costs, constraints)
    if not isinstance(search, NASSearchConfig):
        raise NASError(f"search must be a NASSearchConfig, got {type(search).__name__}")
    cheap = cached_costs(costs, config)
    scorer = _cached_score(score, config)
    try:
        study = run_search(lambda cfg, trial: scorer(Arch.from_params(cfg, config)), arch_space(config),
                           search.search_config(_fingerprint(score, config, limits, search)), costs=cheap,
                           constraints=limits,
                           build=lambda cfg: Arch.from_params(cfg, config))
    except InfeasibleError as exc:
        raise NoFeasibleArchError(f"{exc} (constraints: {_describe(limits)})") from exc
    result = _result(study, config, cheap, limits)
    log.info("NAS %r: best feasible %s score %.4g of %d trials", search.study_name,
             result.best_arch.describe(config), result.best_score, len(result.trials))
    return result


def _fingerprint(score: Score, config: SupernetConfig, limits: tuple[Constraint, ...], search: NASSearchConfig) -> str:
    """What a stored study's values depend on: the space, the constraints, the strategy and the score's
    identity (its class and, for a fitted predictor, a digest of its weights)."""
    import hashlib

    score = getattr(score, "__wrapped__", score)
    h = hashlib.sha256("|".join([repr(config), repr(limits), repr(search.strategy),
                                 getattr(score, "__qualname__", type(score).__qualname__)]).encode())
    state = getattr(score, "state_dict", None)
    if callable(state):
        _digest(state(), h)
    return h.hexdigest()[:16]


def _digest(obj: Any, h: Any) -> None:
    """Feed ``obj`` (nested dicts / lists of tensors, numbers, strings) into the hash ``h``."""
    if hasattr(obj, "detach"):
        h.update(obj.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(obj, Mapping):
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _digest(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _digest(v, h)
    else:
        h.update(repr(obj).encode())


def _result(study: Any, config: SupernetConfig, costs: CostModel, limits: tuple[Constraint, ...]) -> NASResult:
    from optuna.trial import TrialState

    trials = []
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        arch = Arch.from_params(t.params, config).canonical(config)
        trials.append(NASTrial(t.number, arch, float(t.value), costs.evaluate(arch), costs.feasible(arch, limits)))
    feasible = [t for t in trials if t.feasible]
    if not feasible:
        raise NoFeasibleArchError(f"none of the {len(trials)} evaluated architectures satisfies "
                                  f"{_describe(limits)}; loosen the constraints or raise n_trials")
    best = max(feasible, key=lambda t: (t.score, -t.number))
    return NASResult(best, tuple(trials), limits)


def _describe(limits: Sequence[Constraint]) -> str:
    parts = []
    for c in limits:
        parts += [f"{c.cost}<={c.max:g}"] if c.max is not None else []
        parts += [f"{c.cost}>={c.min:g}"] if c.min is not None else []
    return ", ".join(parts) or "none"


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*"
                         r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([kKM]?)\s*$")
_SUFFIX = {"": 1, "k": 1000, "K": 1000, "M": 1000_000}
_FORM = ("accepted: NAME<=NUMBER or NAME>=NUMBER, NAME a cost name (letters, digits, _), NUMBER like "
         "200000, 2e5, 1.5 or with a suffix k/K (x1000) or M (x10^6): 200k, 1.5M")


def parse_constraint(text: str) -> Constraint:
    """A :class:`~tinyqml.search.Constraint` from ``"cost<=number"`` or ``"cost>=number"``.

    >>> parse_constraint("macs<=200k")
    Constraint(cost='macs', max=200000, min=None)
    >>> parse_constraint("params >= 1.5e3")
    Constraint(cost='params', max=None, min=1500)
    >>> parse_constraint("peak_sram<20KB")
    Traceback (most recent call last):
    ...
    tinyqml.classical.nas.ConstraintSyntaxError: cannot read the constraint 'peak_sram<20KB'; accepted: ...
    """
    if not isinstance(text, str):
        raise ConstraintSyntaxError(f"a constraint string is expected, got {type(text).__name__}; {_FORM}")
    m = _CONSTRAINT.match(text)
    if m is None:
        raise ConstraintSyntaxError(f"cannot read the constraint {text!r}; {_FORM}")
    name, op, number, suffix = m.groups()
    value = float(number) * _SUFFIX[suffix]
    if not math.isfinite(value):
        raise ConstraintSyntaxError(f"the bound of {text!r} is not finite; {_FORM}")
    bound: float = int(value) if value.is_integer() and abs(value) < 2 ** 53 else value
    return Constraint(name, max=bound) if op == "<=" else Constraint(name, min=bound)


def parse_constraints(items: str | Iterable[Constraint | str]) -> tuple[Constraint, ...]:
    """Constraints from strings (``"macs<=200k,params<=20k"`` or a list of them) and/or Constraint objects.

    >>> parse_constraints("macs<=200k, params<=20k")
    (Constraint(cost='macs', max=200000, min=None), Constraint(cost='params', max=20000, min=None))
    """
    if isinstance(items, str):
        items = [part for part in items.split(",") if part.strip()]
    if isinstance(items, Constraint):
        items = [items]
    try:
        entries = list(items)
    except TypeError:
        raise ConstraintSyntaxError(f"constraints must be a string or a sequence of strings / Constraint "
                                    f"objects, got {type(items).__name__}") from None
    return tuple(c if isinstance(c, Constraint) else parse_constraint(c) for c in entries)


@dataclass(frozen=True)
class StrategyComparison:
    """Searches of several strategies at one budget, one set of constraints and the same seeds."""

    runs: Mapping[str, tuple[NASResult, ...]]
    seeds: tuple[int, ...]
    n_trials: int
    constraints: tuple[Constraint, ...]

    def _runs(self, name: str) -> tuple[NASResult, ...]:
        if name not in self.runs:
            raise NASError(f"no strategy {name!r} in this comparison; accepted: {', '.join(self.runs)}")
        return self.runs[name]

    def best_scores(self, name: str) -> tuple[float, ...]:
        """The best feasible score of each seed."""
        return tuple(r.best_score for r in self._runs(name))

    def mean(self, name: str) -> float:
        return statistics.fmean(self.best_scores(name))

    def std(self, name: str) -> float:
        """Sample standard deviation over seeds (0 for one seed)."""
        scores = self.best_scores(name)
        return statistics.stdev(scores) if len(scores) > 1 else 0.0

    def curves(self, name: str) -> list[list[float]]:
        """The best-so-far curve of each seed."""
        return [r.best_so_far() for r in self._runs(name)]

    def mean_curve(self, name: str) -> list[float]:
        """The best-so-far curves averaged over the seeds that have a feasible trial by then."""
        out = []
        for column in zip(*self.curves(name)):
            values = [v for v in column if not math.isnan(v)]
            out.append(statistics.fmean(values) if values else math.nan)
        return out

    def wins(self, name: str, other: str) -> int:
        """Seeds on which ``name`` found a strictly better feasible score than ``other``."""
        return sum(a > b for a, b in zip(self.best_scores(name), self.best_scores(other)))

    def _baseline(self, baseline: str | None) -> str:
        if baseline is None:
            return "random" if "random" in self.runs else list(self.runs)[-1]
        self._runs(baseline)
        return baseline

    def table(self, baseline: str | None = None) -> str:
        """A markdown table: best feasible score per strategy (mean, std, per seed) and the ratio of its mean
        to the ``baseline``'s (``"random"`` when present)."""
        base = self._baseline(baseline)
        head = (f"| strategy | mean best | std | per seed {list(self.seeds)} | mean / {base} | wins vs {base} |\n"
                "|---|---|---|---|---|---|")
        rows = [head]
        for name in self.runs:
            ratio = self.mean(name) / self.mean(base) if self.mean(base) != 0 else math.nan
            seeds = ", ".join(f"{s:.4g}" for s in self.best_scores(name))
            rows.append(f"| {name} | {self.mean(name):.4g} | {self.std(name):.3g} | {seeds} | {ratio:.3f} | "
                        f"{self.wins(name, base)}/{len(self.seeds)} |")
        return "\n".join(rows) + f"\n\n{self.n_trials} trials per run; constraints: {_describe(self.constraints)}"

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """Best-so-far curves (each seed thin, the mean thick) of every strategy, saved to ``path``."""
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for i, name in enumerate(self.runs):
            for curve in self.curves(name):
                ax.plot(range(1, len(curve) + 1), curve, c=f"C{i}", lw=0.7, alpha=0.4)
            mean = self.mean_curve(name)
            ax.plot(range(1, len(mean) + 1), mean, c=f"C{i}", lw=2, label=f"{name} (mean of {len(self.seeds)})")
        ax.set_xlabel("trials")
        ax.set_ylabel("best feasible score")
        ax.set_title(title or f"best so far, {_describe(self.constraints)}")
        ax.legend()
        return save_figure(fig, plt, path)


def compare_strategies(score: Score, config: SupernetConfig, costs: CostModel,
                       constraints: Iterable[Constraint | str], n_trials: int, seeds: Sequence[int] = (0, 1, 2),
                       strategies: Mapping[str, Strategy] | None = None, storage: str = ":memory:",
                       study_name: str = "nas-compare") -> StrategyComparison:
    """Run :func:`search_architecture` for every strategy and seed at the same budget and constraints.

    ``strategies`` defaults to ``{"evolution": DEFAULT_STRATEGY, "random": RANDOM_STRATEGY}``. Scores and
    costs are cached across the runs (an architecture is scored once however many runs visit it).

    >>> from tinyqml.classical.arch import SupernetConfig
    >>> cfg = SupernetConfig()
    >>> cmp = compare_strategies(lambda a: sum(a.expands), cfg, analytic_costs(cfg), ["macs<=500k"], 20, seeds=(0, 1))
    >>> sorted(cmp.runs), len(cmp.best_scores("random")), cmp.table().startswith("| strategy")
    (['evolution', 'random'], 2, True)
    """
    limits = _checked(score, config, costs, constraints)
    strategies = dict(strategies) if strategies is not None else {"evolution": DEFAULT_STRATEGY,
                                                                 "random": RANDOM_STRATEGY}
    if not strategies or any(not isinstance(k, str) or not isinstance(v, Strategy) for k, v in strategies.items()):
        raise NASError("strategies must be a non-empty mapping of names to tinyqml.search Strategy objects")
    seeds = tuple(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise NASError(f"seeds must be distinct ints (at least one), got {seeds!r}")
    scorer, cheap = _cached_score(score, config), cached_costs(costs, config)
    runs = {name: tuple(search_architecture(scorer, config, cheap, limits,
                                            NASSearchConfig(n_trials, strategy, seed, storage,
                                                            f"{study_name}-{name}-seed{seed}"))
                        for seed in seeds)
            for name, strategy in strategies.items()}
    return StrategyComparison(runs, seeds, n_trials, limits)


def _value_of(key: str | Callable[[Any], float]) -> Callable[[Any], float]:
    if callable(key):
        return key
    if not isinstance(key, str):
        raise NASError(f"objective and cost must be names or callables, got {key!r}")

    def get(trial: Any) -> float:
        if key == "score":
            return float(trial.score)
        if key not in trial.costs:
            raise NASError(f"trial {trial.number} has no cost {key!r}; accepted: score, {', '.join(trial.costs)}")
        return float(trial.costs[key])

    return get


def pareto_front(trials: Iterable[Any], objective: str | Callable[[Any], float] = "score",
                 cost: str | Callable[[Any], float] = "macs") -> list[Any]:
    """The trials no other trial beats on both axes (``objective`` maximized, ``cost`` minimized), sorted by
    cost. A name reads a :class:`NASTrial` (``"score"`` or a cost name); a callable reads anything.
    Trials at the same point are all kept.

    >>> pts = [(0.9, 300), (0.8, 100), (0.85, 300), (0.95, 500), (0.7, 120)]
    >>> pareto_front(pts, objective=lambda p: p[0], cost=lambda p: p[1])
    [(0.8, 100), (0.9, 300), (0.95, 500)]
    """
    obj, cst = _value_of(objective), _value_of(cost)
    points = [(obj(t), cst(t), t) for t in trials]

    def dominated(p: tuple[float, float, Any]) -> bool:
        return any(q[0] >= p[0] and q[1] <= p[1] and (q[0] > p[0] or q[1] < p[1]) for q in points)

    front = [p for p in points if not dominated(p)]
    return [p[2] for p in sorted(front, key=lambda p: (p[1], -p[0]))]


def plot_pareto_nas(results: NASResult | Mapping[str, NASResult] | Sequence[NASResult], path: str | Path,
                    cost: str = "macs", title: str | None = None) -> list[NASTrial]:
    """Every evaluated architecture (score against ``cost``; infeasible ones as grey crosses), the Pareto
    front of the feasible ones over all ``results`` and the constraints on ``cost`` as lines; saves to
    ``path`` and returns the front.

    :func:`tinyqml.search.plot_pareto` draws a two-objective optuna study; a NAS study has one objective
    with the costs recorded beside it, infeasible trials and a constraint line, so it is drawn here.
    """
    named = _named(results)
    trials = [t for r in named.values() for t in r.trials]
    missing = [t.number for t in trials if cost not in t.costs]
    if missing:
        accepted = sorted(set.intersection(*(set(t.costs) for t in trials)))
        raise NASError(f"trial {missing[0]} has no cost {cost!r} to plot; accepted: {', '.join(accepted)}")
    front = pareto_front([t for t in trials if t.feasible], "score", cost)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (name, r) in enumerate(named.items()):
        ok = [t for t in r.trials if t.feasible]
        bad = [t for t in r.trials if not t.feasible]
        ax.scatter([t.costs[cost] for t in ok], [t.score for t in ok], s=14, c=f"C{i}", alpha=0.6, label=name)
        if bad:
            ax.scatter([t.costs[cost] for t in bad], [t.score for t in bad], s=14, c="0.6", marker="x")
    ax.plot([t.costs[cost] for t in front], [t.score for t in front], "o-", c="k", ms=4, label="Pareto front")
    _constraint_lines(ax, [c for r in named.values() for c in r.constraints], cost)
    ax.set_xlabel(cost)
    ax.set_ylabel("score")
    ax.set_title(title or f"score vs {cost}")
    ax.legend(fontsize=8)
    save_figure(fig, plt, path)
    return front


def _named(results: Any) -> dict[str, NASResult]:
    if isinstance(results, NASResult):
        named = {"trials": results}
    elif isinstance(results, Mapping):
        named = dict(results)
    else:
        named = {f"run {i}": r for i, r in enumerate(results)}
    if not named or any(not isinstance(r, NASResult) for r in named.values()):
        raise NASError("results must be a NASResult, a mapping of names to NASResult or a sequence of them")
    return named


def _constraint_lines(ax: Any, constraints: Sequence[Constraint], cost: str) -> None:
    drawn = set()
    for c in constraints:
        for bound, op in ((c.max, "<="), (c.min, ">=")):
            if c.cost == cost and bound is not None and (op, bound) not in drawn:
                drawn.add((op, bound))
                ax.axvline(bound, ls="--", c="C3", lw=1, label=f"{cost}{op}{bound:g}")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
