"""Fine-grained (weight-level) pruning of a net's Conv/Linear weights on the shared engine of ``tinyqml.search``.

Every prunable layer (``Conv1d``/``Conv2d``/``Linear``, named as in ``named_modules()``)
gets a :class:`~tinyqml.search.Target` with ``Element`` granularity: its weight becomes
``original * mask`` (one mask parametrization), so a fine-tuning optimizer cannot
revive a pruned weight. :class:`FineGrainedPruner` ranks by magnitude (or any
importance) through :class:`~tinyqml.search.Pruner`, with ``scope="global"`` (one
ranking over all layers) or ``"local"`` (each layer to the same sparsity), a per-layer
sparsity dict, or an N:M pattern (2:4, :class:`~tinyqml.search.nm.NMPruner`). A
schedule (``OneShot``, ``Iterative``, ``AGP``) sets the pace: at step ``t`` each layer
is at ``schedule(t) / schedule's final value`` of its target. ``squash`` bakes the masks.
:func:`layer_sensitivity` runs the engine's ``sensitivity_scan`` per layer;
:func:`sparsity_report`, :func:`plot_sensitivity` and :func:`plot_sparsity` show the result.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
>>> pruner = FineGrainedPruner(net, FineGrainedConfig(sparsity=0.75, scope="global"))
>>> pruner.apply(); sparsity_report(net).zeros, sparsity_report(net).total
(144, 192)
>>> nm = FineGrainedPruner(net, FineGrainedConfig(sparsity=0.5, pattern=NMPattern(2, 4), layers=("0", "2")))
>>> nm.apply(); [satisfies_nm(net.get_submodule(n).weight) for n in ("0", "2")]
[True, True]
>>> _ = nm.squash(); type(net[0].weight).__name__
'Parameter'
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from torch import nn

from tinyqml.classical.errors import LayerNotFoundError
from tinyqml.classical.figures import save_figure
from tinyqml.search import Element, Importance, Pruner, PruningError, Schedule, Target, has_mask, sensitivity_scan
from tinyqml.search import squash as squash_masks
from tinyqml.search.nm import NMPattern, NMPruner, satisfies_nm
from tinyqml.search.schedules import check_sparsity

__all__ = ["PRUNABLE", "prunable_layers", "weight_targets", "FineGrainedConfig", "FineGrainedPruner",
           "layer_sensitivity", "LayerSparsity", "SparsityReport", "sparsity_report", "plot_sensitivity",
           "plot_sparsity", "baked_copy", "safe_squash", "NMPattern", "satisfies_nm"]

#: the layer types whose ``weight`` fine-grained pruning masks
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's Conv/Linear modules by ``named_modules()`` name, in model order."""
    if not isinstance(model, nn.Module):
        raise PruningError(f"pruning needs an nn.Module, got {type(model).__name__}")
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def _resolve(model: nn.Module, names: Sequence[str] | None, exclude: Sequence[str] = ()) -> dict[str, nn.Module]:
    layers = prunable_layers(model)
    for name in (*(names or ()), *exclude):
        if name not in layers:
            raise LayerNotFoundError(f"no prunable layer {name!r} in {type(model).__name__}; its Conv/Linear "
                                     f"layers: {list(layers)}")
    chosen = {n: layers[n] for n in (names if names is not None else layers) if n not in exclude}
    if not chosen:
        raise PruningError(f"no layer left to prune in {type(model).__name__} (layers {list(layers)}, "
                           f"excluded {list(exclude)})")
    return chosen


def weight_targets(model: nn.Module, names: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> list[Target]:
    """One ``Element`` :class:`Target` per chosen layer's weight (all Conv/Linear by default), labelled by name."""
    return [Target(m, "weight", Element(), label=n) for n, m in _resolve(model, names, exclude).items()]


@dataclass(frozen=True)
class FineGrainedConfig:
    """What to prune: the final ``sparsity`` (a number, or ``{layer name: sparsity}`` for those layers
    alone), the ``scope`` of a single number, which ``layers`` (default: all Conv/Linear) minus
    ``exclude``, and an optional N:M ``pattern`` (then ``sparsity`` is at most ``1 - n/m``)."""

    sparsity: float | Mapping[str, float] = 0.9
    scope: str = "global"
    layers: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    pattern: NMPattern | None = None

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, Mapping):
            if not self.sparsity:
                raise PruningError("a per-layer sparsity dict needs at least one layer")
            for name, s in self.sparsity.items():
                check_sparsity(s, f"sparsity of {name!r}")
            if self.layers is not None:
                raise PruningError("give the layers either as the keys of a sparsity dict or as layers=, not both")
        else:
            check_sparsity(self.sparsity)
        if self.scope not in ("local", "global"):
            raise PruningError(f"scope must be 'local' or 'global', got {self.scope!r}")
        if self.pattern is not None and not isinstance(self.pattern, NMPattern):
            raise PruningError(f"pattern must be an NMPattern or None, got {type(self.pattern).__name__}")
        for s in self._values():
            if self.pattern is not None and s > self.pattern.sparsity + 1e-12:
                raise PruningError(f"a {self.pattern.n}:{self.pattern.m} pattern removes at most "
                                   f"{self.pattern.sparsity:g} of the weights, asked for {s:g}")

    def _values(self) -> list[float]:
        return list(self.sparsity.values()) if isinstance(self.sparsity, Mapping) else [self.sparsity]


def _final(schedule: Schedule) -> float:
    final = float(schedule(2**62))
    if not final > 0:
        raise PruningError(f"the schedule {schedule!r} never prunes (its final sparsity is {final})")
    return final


class FineGrainedPruner:
    """Masks ``model``'s weights to ``config`` through the search engine's pruners; ``units`` holds
    ``(pruner, target sparsity)`` pairs (one global/local pruner, or one per layer of a dict)."""

    def __init__(self, model: nn.Module, config: FineGrainedConfig = FineGrainedConfig(),
                 schedule: Schedule | None = None, importance: Importance | None = None) -> None:
        if not isinstance(config, FineGrainedConfig):
            raise PruningError(f"config must be a FineGrainedConfig, got {type(config).__name__}")
        if schedule is not None and not isinstance(schedule, Schedule):
            raise PruningError(f"schedule must be a Schedule (OneShot, Iterative, AGP), got {schedule!r}")
        self.model, self.config, self.schedule = model, config, schedule
        self.final = _final(schedule) if schedule is not None else 1.0
        if isinstance(config.sparsity, Mapping):
            groups = [([t], float(config.sparsity[t.label]))
                      for t in weight_targets(model, list(config.sparsity), config.exclude)]
        else:
            groups = [(weight_targets(model, config.layers, config.exclude), float(config.sparsity))]
        self.units = [(self._pruner(targets, importance), s) for targets, s in groups]

    def _pruner(self, targets: list[Target], importance: Importance | None) -> Pruner:
        if self.config.pattern is not None:
            return NMPruner(targets, self.config.pattern, importance)
        return Pruner(targets, importance, scope=self.config.scope)

    @property
    def targets(self) -> list[Target]:
        return [t for p, _ in self.units for t in p.targets]

    def prune_to(self, fraction: float) -> None:
        """Bring every layer to ``fraction`` (in [0, 1]) of its target sparsity."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise PruningError(f"fraction must be in [0, 1], got {fraction!r}")
        for pruner, s in self.units:
            if pruner.current != s * fraction:
                pruner.prune_to(s * fraction)

    def apply(self) -> None:
        """Prune all the way to the configured sparsity at once."""
        self.prune_to(1.0)

    def step(self, step: int) -> float:
        """Follow the schedule at ``step`` (one-shot without a schedule); returns the fraction of the target."""
        fraction = 1.0 if self.schedule is None else min(1.0, float(self.schedule(step)) / self.final)
        self.prune_to(fraction)
        return fraction

    def on_step(self, step: int) -> None:
        """For ``train(on_step=...)``: follow the schedule, then zero the masked originals."""
        self.step(step)
        self.reapply()

    def reapply(self) -> None:
        for pruner, _ in self.units:
            pruner.reapply()

    def sparsity(self) -> float:
        """The fraction of all targeted weights that are masked now."""
        masked = sum(int((t.mask.mask == 0).sum()) for t in self.targets)
        return masked / max(1, sum(t.mask.mask.numel() for t in self.targets))

    def squash(self) -> nn.Module:
        """Bake the masks into the weights (plain parameters again, pruned entries exactly 0)."""
        return safe_squash(self.model)


def baked_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with its masks baked in; ``model`` keeps its masks (see :func:`safe_squash`)."""
    if not isinstance(model, nn.Module):
        raise PruningError(f"baked_copy needs an nn.Module, got {type(model).__name__}")
    return safe_squash(copy.deepcopy(model))


def safe_squash(model: nn.Module) -> nn.Module:
    """The engine's ``squash`` (which gives every parametrized module its own class first: a deep copy of a
    parametrized module shares torch's injected class with the original, and removing one's
    parametrization would strip the other's ``weight`` property)."""
    return squash_masks(model)


def layer_sensitivity(model: nn.Module, evaluate: Callable[[], float], sparsities: Sequence[float],
                      layers: Sequence[str] | None = None,
                      importance: Importance | None = None) -> dict[str, list[tuple[float, float]]]:
    """``{layer: [(sparsity, evaluate())...]}`` pruning one layer at a time (the engine's
    ``sensitivity_scan``); the model is left as it was (masks it added are removed)."""
    for s in sparsities:
        check_sparsity(s)
    chosen = _resolve(model, layers)
    fresh = [m for m in chosen.values() if not has_mask(m, "weight")]
    try:
        targets = [Target(m, "weight", Element(), label=n) for n, m in chosen.items()]
        return sensitivity_scan(targets, evaluate, list(sparsities), importance)
    finally:
        for m in fresh:
            safe_squash(m)  # the scan restored an all-ones mask: the weight is unchanged


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    kind: str
    zeros: int
    total: int

    @property
    def sparsity(self) -> float:
        return self.zeros / max(1, self.total)


@dataclass(frozen=True)
class SparsityReport:
    """Zero weights per Conv/Linear layer (masked or squashed alike) and over all of them."""

    layers: tuple[LayerSparsity, ...]

    @property
    def zeros(self) -> int:
        return sum(r.zeros for r in self.layers)

    @property
    def total(self) -> int:
        return sum(r.total for r in self.layers)

    @property
    def sparsity(self) -> float:
        return self.zeros / max(1, self.total)

    def table(self) -> str:
        """A markdown table: layer, type, weights, zeros, sparsity."""
        rows = ["| layer | type | weights | zeros | sparsity |", "|---|---|---:|---:|---:|"]
        rows += [f"| {r.name} | {r.kind} | {r.total} | {r.zeros} | {r.sparsity:.3f} |" for r in self.layers]
        rows.append(f"| all | | {self.total} | {self.zeros} | {self.sparsity:.3f} |")
        return "\n".join(rows)


def sparsity_report(model: nn.Module) -> SparsityReport:
    """The fraction of exactly-zero weights of every Conv/Linear layer of ``model``."""
    rows = []
    for name, m in prunable_layers(model).items():
        w = m.weight.detach()
        rows.append(LayerSparsity(name, type(m).__name__.removeprefix("Parametrized"), int((w == 0).sum()),
                                  w.numel()))
    return SparsityReport(tuple(rows))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sensitivity(scan: Mapping[str, Sequence[tuple[float, float]]], path: str | Path,
                     ylabel: str = "accuracy (%)", title: str = "sensitivity per layer") -> Path:
    """One curve per layer of a :func:`layer_sensitivity` result, score against sparsity; a PNG at ``path``."""
    if not scan:
        raise PruningError("plot_sensitivity needs a non-empty scan")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in scan.items():
        ax.plot([s for s, _ in rows], [v for _, v in rows], "o-", ms=3, label=name)
    ax.set_xlabel("sparsity of the layer alone")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return save_figure(fig, plt, path)


def plot_sparsity(report: SparsityReport, path: str | Path, title: str = "sparsity per layer") -> Path:
    """Bars of each layer's sparsity (its weight count in the label); a PNG at ``path``."""
    if not isinstance(report, SparsityReport):
        raise PruningError(f"plot_sparsity needs a SparsityReport, got {type(report).__name__}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = [f"{r.name}\n({r.total})" for r in report.layers]
    ax.bar(labels, [r.sparsity for r in report.layers], color="C0")
    ax.axhline(report.sparsity, color="C3", ls="--", label=f"overall {report.sparsity:.2f}")
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of zero weights")
    ax.set_title(title)
    ax.legend()
    ax.tick_params(axis="x", labelsize=7)
    return save_figure(fig, plt, path)
