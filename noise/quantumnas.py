"""QuantumNAS: noise-adaptive co-search of a sub-circuit and its qubit mapping, then gate pruning.

QuantumNAS (Wang et al., HPCA 2022) finds a variational circuit that stays accurate on a
noisy device in four steps, all on the shared search engine :mod:`tinyqml.search`:

1. **SuperCircuit training** (:func:`train_supercircuit`): one weight vector of a
   :class:`~tinyqml.qml.supercircuit.SuperLayer` (encoder + weight-shared ``U3 + CU3``
   blocks with elastic depth and width, front sampling) is trained noise-free with a
   different sub-circuit every step, each differing from the previous one in at most
   ``restrict`` choices (restricted sampling).
2. **Co-search** (:class:`CoSearch`): the space is the SuperCircuit's choices plus one
   :class:`~tinyqml.search.Choice` of physical qubit per logical qubit
   (:func:`co_search_space`); the sampler only proposes mappings onto distinct qubits
   (:func:`distinct_mapping`, the ``feasible`` predicate of the
   :class:`~tinyqml.search.EvolutionSampler`). A candidate keeps the weights it
   *inherits* from the SuperCircuit: encoder + sub-circuit are transpiled onto the
   backend with that ``initial_layout`` (:func:`map_circuit`) and scored by the
   validation accuracy of the exact noisy ``<Z>`` on the final layout (density
   matrices under the calibrated :class:`~tinyqml.noise.NoiseModel`, readout errors
   included; :func:`noisy_expectations`). The study runs with
   :func:`~tinyqml.search.run_search` (resumable, SQLite by default); costs of the mapped
   circuit (:func:`mapped_costs`: gates, depth, two_qubit, params, esp) are recorded per
   trial and can be constrained or used as a second objective.
3. **Training from scratch** (:func:`fit`): the winner, re-initialised, as a plain
   :class:`~tinyqml.qml.QuantumLayer`.
4. **Iterative gate pruning** (:func:`prune_gates`): one group per gate
   (:func:`~tinyqml.qml.prune.gate_target`) on the shared :class:`~tinyqml.search.Pruner`,
   an AGP or iterative schedule, identity-distance or magnitude importance, fine-tuning
   between steps; optionally the sparsest state within a tolerance of the unpruned
   validation score (:func:`noisy_validator`: squashed, mapped, under the noise model) is
   kept; then :func:`~tinyqml.qml.prune.squash_circuit` compiles the pruned gates away.

Every random draw comes from an explicit seed (``torch.Generator`` for initial weights
and batch orders, ``random.Random`` for sub-circuit sampling, the sampler's seed, the
transpiler's seed), so a configuration always gives the same result on one machine.

>>> import tinyqml.qml as tq
>>> from tinyqml.qml.supercircuit import SuperCircuit, SuperCircuitConfig
>>> sc = SuperCircuit(SuperCircuitConfig(n_wires=2, n_blocks=1))
>>> space = co_search_space(sc, n_physical=3)
>>> space.names
('blocks', 'u3[0]', 'cu3[0]', 'q[0]', 'q[1]')
>>> ok, cfg = distinct_mapping(sc), {"blocks": 1, "u3[0]": 2, "cu3[0]": 1}
>>> ok({**cfg, "q[0]": 2, "q[1]": 0}), ok({**cfg, "q[0]": 1, "q[1]": 1})
(True, False)
"""

from __future__ import annotations

import copy
import logging
import math
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import optuna
import torch
from torch import nn

from tinyqml.noise.costs import esp
from tinyqml.noise.model import NoiseModel
from tinyqml.noise.simulate import expval as noisy_expval
from tinyqml.qml import gates as G
from tinyqml.qml import measure as QM
from tinyqml.qml.circuit import Circuit, Op, Param
from tinyqml.qml.costs import CIRCUIT_COSTS
from tinyqml.qml.errors import TinyQMLError
from tinyqml.qml.layer import QuantumLayer
from tinyqml.qml.prune import compact_weights, gate_target, identity_distance, squash_circuit
from tinyqml.qml.supercircuit import SuperCircuit, SuperLayer
from tinyqml.qml.transpiler import Layout, transpile, lower_for_transpile
from tinyqml.search import (
    AGP,
    Choice,
    Constraint,
    CostModel,
    Evolution,
    EvolutionConfig,
    Iterative,
    Magnitude,
    Pruner,
    SearchConfig,
    SearchSpace,
    Strategy,
    per_block,
    run_search,
    squash,
)
from tinyqml.search.evolution import VIOLATIONS_ATTR
from tinyqml.search.study import storage_url

Tensor = torch.Tensor
log = logging.getLogger(__name__)

__all__ = [
    "QuantumNASError", "TrainConfig", "SuperTrainConfig", "SearchSettings", "PruneConfig", "MAPPING_PREFIX",
    "co_search_space", "mapping_of", "sub_config", "distinct_mapping", "phase_free", "MappedCircuit",
    "map_circuit", "mapped_costs", "noisy_expectations", "noisy_accuracy", "aer_accuracy", "accuracy", "fit",
    "train_supercircuit", "scratch_layer", "CoSearch", "CoSearchResult", "best_trial", "clean_validator",
    "noisy_validator", "PruneResult", "prune_gates", "hea_with_budget",
]

#: the mapping dimensions are named ``q[0]``, ``q[1]``, ... (physical qubit of logical qubit i)
MAPPING_PREFIX = "q"


class QuantumNASError(TinyQMLError, ValueError):
    """A bad QuantumNAS setting: a non-positive epoch count or learning rate, a mapping
    onto repeated or missing qubits, more logical qubits than the backend has, a
    sparsity outside ``[0, 1)``, an unknown schedule, importance or objective."""


# --------------------------------------------------------------------------- configs


def _positive_int(owner: str, name: str, v: Any, minimum: int = 1) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise QuantumNASError(f"{owner}.{name} must be an integer >= {minimum}, got {v!r}")


def _positive_float(owner: str, name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise QuantumNASError(f"{owner}.{name} must be a finite number > 0, got {v!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Noise-free training of a classifier ``logit_scale * <Z_i>``: Adam, cosine decay, cross-entropy.

    >>> TrainConfig(epochs=0)
    Traceback (most recent call last):
    ...
    tinyqml.noise.quantumnas.QuantumNASError: TrainConfig.epochs must be an integer >= 1, got 0
    """

    epochs: int = 20
    lr: float = 0.05
    batch_size: int = 32
    seed: int = 0
    logit_scale: float = 5.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _positive_int(owner, "epochs", self.epochs)
        _positive_int(owner, "batch_size", self.batch_size)
        _positive_int(owner, "seed", self.seed, 0)
        _positive_float(owner, "lr", self.lr)
        _positive_float(owner, "logit_scale", self.logit_scale)


@dataclass(frozen=True)
class SuperTrainConfig(TrainConfig):
    """SuperCircuit training: ``warmup_epochs`` on the largest circuit, then one sampled
    sub-circuit per step, at most ``restrict`` choices away from the previous one
    (``None``: unrestricted uniform sampling). With ``largest_every=k`` every ``k``-th step
    after the warm-up trains the largest circuit instead (the "sandwich rule" of
    Once-for-All/BigNAS; off by default, QuantumNAS samples only)."""

    restrict: int | None = 2
    warmup_epochs: int = 1
    largest_every: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.restrict is not None:
            _positive_int("SuperTrainConfig", "restrict", self.restrict)
        if self.largest_every is not None:
            _positive_int("SuperTrainConfig", "largest_every", self.largest_every)
        _positive_int("SuperTrainConfig", "warmup_epochs", self.warmup_epochs, 0)


@dataclass(frozen=True)
class SearchSettings:
    """The evolutionary co-search.

    Attributes:
        n_trials: trials wanted (a rerun with the same storage continues).
        strategy: the search engine's strategy (constraint-aware evolution by default;
            ``Evolution`` and ``RandomSearch`` only propose distinct mappings, with the
            others a proposal that repeats a qubit is pruned).
        seed: the sampler's seed.
        storage: an optuna storage URL, a SQLite path or ``":memory:"``.
        study_name: the study's name in the storage.
        secondary: ``None`` (one objective, validation accuracy) or a cost of
            :func:`mapped_costs` as a second objective (``"esp"`` maximized, the others
            minimized).
        transpile_seed: ``seed_transpiler`` of every mapping.
        optimization_level: Qiskit's preset level (0 or 1 keep tinyqml's references).
        novel: the predicate also turns down a proposal whose circuit and mapping a trial
            of the study already scored (configurations that differ only in the choices
            of unused blocks are one circuit), so every trial evaluates a new candidate;
            after ``max_repeats`` refusals in a row a repeat is let through.
    """

    n_trials: int = 40
    strategy: Strategy = Evolution(EvolutionConfig(population=10, parents=4))
    seed: int = 0
    storage: str = "sqlite:///runs/quantumnas.db"
    study_name: str = "quantumnas"
    secondary: str | None = None
    transpile_seed: int = 0
    optimization_level: int = 1
    novel: bool = True
    max_repeats: int = 100

    def __post_init__(self) -> None:
        _positive_int("SearchSettings", "n_trials", self.n_trials)
        _positive_int("SearchSettings", "max_repeats", self.max_repeats)
        _positive_int("SearchSettings", "seed", self.seed, 0)
        _positive_int("SearchSettings", "transpile_seed", self.transpile_seed, 0)
        if self.optimization_level not in (0, 1):
            raise QuantumNASError(f"SearchSettings.optimization_level must be 0 or 1 (levels 2-3 merge rotations "
                                  f"of different weights), got {self.optimization_level!r}")
        if not isinstance(self.strategy, Strategy):
            raise QuantumNASError(f"SearchSettings.strategy must be a tinyqml.search Strategy, "
                                  f"got {type(self.strategy).__name__}")
        if self.secondary is not None and self.secondary not in _COST_NAMES:
            raise QuantumNASError(f"SearchSettings.secondary must be None or one of {', '.join(_COST_NAMES)}, "
                                  f"got {self.secondary!r}")

    @property
    def directions(self) -> tuple[str, ...]:
        if self.secondary is None:
            return ("maximize",)
        return ("maximize", "maximize" if self.secondary == "esp" else "minimize")


@dataclass(frozen=True)
class PruneConfig:
    """Iterative gate pruning with fine-tuning.

    Attributes:
        sparsity: final fraction of the (trainable) gates removed.
        schedule: ``"agp"`` (automated gradual pruning) or ``"iterative"`` (equal steps).
        stages: steps of the iterative schedule.
        prune_epochs: epochs over which the sparsity rises to ``sparsity`` (schedule step
            ``e + 1`` before epoch ``e``, so the last of them runs at ``sparsity``);
            ``settle_epochs`` more fine-tune at the final sparsity.
        importance: ``"identity"`` (distance of the angles from the identity, modulo
            their periods) or ``"magnitude"`` (``|w|``).
        max_drop: with a validation function (:func:`clean_validator`,
            :func:`noisy_validator`), keep the sparsest state (checked after every epoch)
            whose validation accuracy is at most ``max_drop`` below the unpruned layer's
            (``None``: keep the final state whatever it costs).
        lr, batch_size, seed, logit_scale: the fine-tuning (as :class:`TrainConfig`).
    """

    sparsity: float = 0.5
    schedule: str = "agp"
    stages: int = 4
    prune_epochs: int = 8
    settle_epochs: int = 4
    importance: str = "identity"
    max_drop: float | None = None
    lr: float = 0.02
    batch_size: int = 32
    seed: int = 0
    logit_scale: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)) \
                or not 0 <= self.sparsity < 1:
            raise QuantumNASError(f"PruneConfig.sparsity must be a number in [0, 1), got {self.sparsity!r}")
        if self.schedule not in ("agp", "iterative"):
            raise QuantumNASError(f"PruneConfig.schedule must be 'agp' or 'iterative', got {self.schedule!r}")
        if self.importance not in ("identity", "magnitude"):
            raise QuantumNASError(f"PruneConfig.importance must be 'identity' or 'magnitude', "
                                  f"got {self.importance!r}")
        if self.max_drop is not None and (isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float))
                                          or not 0 <= self.max_drop <= 1):
            raise QuantumNASError(f"PruneConfig.max_drop must be None or a number in [0, 1], got {self.max_drop!r}")
        _positive_int("PruneConfig", "stages", self.stages)
        _positive_int("PruneConfig", "prune_epochs", self.prune_epochs)
        _positive_int("PruneConfig", "settle_epochs", self.settle_epochs, 0)
        _positive_int("PruneConfig", "batch_size", self.batch_size)
        _positive_int("PruneConfig", "seed", self.seed, 0)
        _positive_float("PruneConfig", "lr", self.lr)
        _positive_float("PruneConfig", "logit_scale", self.logit_scale)

    @property
    def epochs(self) -> int:
        return self.prune_epochs + self.settle_epochs

    def schedule_fn(self) -> AGP | Iterative:
        """The search engine's schedule of sparsity per epoch."""
        if self.schedule == "agp":
            return AGP(final=float(self.sparsity), start=0, end=self.prune_epochs, frequency=1)
        length = max(1, self.prune_epochs // self.stages)
        return Iterative(final=float(self.sparsity), stages=self.stages, stage_length=length)


# --------------------------------------------------------------------------- the co-search space


def _mapping_names(n_logical: int) -> tuple[str, ...]:
    return tuple(f"{MAPPING_PREFIX}[{i}]" for i in range(n_logical))


def co_search_space(supercircuit: SuperCircuit, n_physical: int) -> SearchSpace:
    """The SuperCircuit's choices followed by ``q[i]``: the physical qubit of logical qubit ``i``."""
    n = supercircuit.config.n_wires
    if not isinstance(n_physical, int) or isinstance(n_physical, bool) or n_physical < n:
        raise QuantumNASError(f"the SuperCircuit has {n} logical qubits; the backend needs at least as many "
                              f"physical qubits, got {n_physical!r}")
    mapping = per_block(MAPPING_PREFIX, n, Choice(tuple(range(n_physical))))
    return SearchSpace(supercircuit.space.dims + mapping)


def sub_config(supercircuit: SuperCircuit, config: Mapping[str, Any]) -> dict[str, Any]:
    """The sub-circuit part of a co-search configuration."""
    return {n: config[n] for n in supercircuit.space.names}


def mapping_of(supercircuit: SuperCircuit, config: Mapping[str, Any]) -> tuple[int, ...]:
    """The mapping part (physical qubit per logical qubit) of a co-search configuration."""
    names = _mapping_names(supercircuit.config.n_wires)
    missing = [n for n in names if n not in config]
    if missing:
        raise QuantumNASError(f"the configuration has no mapping entries {missing}")
    return tuple(int(config[n]) for n in names)


def distinct_mapping(supercircuit: SuperCircuit) -> Callable[[Mapping[str, Any]], bool]:
    """The ``feasible`` predicate: every logical qubit on a different physical qubit."""

    def ok(config: Mapping[str, Any]) -> bool:
        m = mapping_of(supercircuit, config)
        return len(set(m)) == len(m)

    return ok


# --------------------------------------------------------------------------- mapping onto a backend


#: ``U``, ``CU`` and ``P`` as ``RZ``/``RY``/``CX`` of one reference each (two CX per ``CU``),
#: what :func:`tinyqml.qml.transpile` does to every circuit before Qiskit sees it
phase_free = lower_for_transpile


@dataclass(frozen=True, eq=False)
class MappedCircuit:
    """A logical circuit compiled onto a backend's physical qubits.

    ``physical`` reads the same weight and feature indices as ``logical``; read logical
    qubit ``v`` on wire ``layout.final[v]``. ``mapping`` is the requested initial layout
    (``None``: Qiskit's default layout).
    """

    logical: Circuit
    physical: Circuit
    layout: Layout
    mapping: tuple[int, ...] | None

    @property
    def gates(self) -> int:
        return len(self.physical.ops)

    @property
    def depth(self) -> int:
        return self.physical.depth

    @property
    def two_qubit(self) -> int:
        return self.physical.two_qubit_count

    @property
    def params(self) -> int:
        """Distinct trainable weights the circuit reads."""
        return len({p.index[0] for op in self.logical.ops for p in op.params if p.kind == "weight"})

    def observables(self, n_outputs: int) -> list[QM.PauliString]:
        """``Z`` on the physical wires of logical qubits ``0 .. n_outputs - 1``."""
        return [QM.Z(self.layout.final[i]) for i in range(n_outputs)]


def map_circuit(circuit: Circuit, backend: Any, mapping: Sequence[int] | None = None,
                optimization_level: int = 1, seed: int = 0) -> MappedCircuit:
    """Transpile ``circuit`` onto ``backend`` starting from ``mapping`` (physical qubit of each
    logical qubit; ``None``: Qiskit's default layout), after :func:`phase_free`."""
    if mapping is not None:
        mapping = tuple(int(q) for q in mapping)
        n_phys = getattr(backend, "num_qubits", None)
        if len(mapping) != circuit.n_wires or len(set(mapping)) != len(mapping) \
                or (isinstance(n_phys, int) and any(not 0 <= q < n_phys for q in mapping)):
            raise QuantumNASError(f"a mapping needs {circuit.n_wires} distinct physical qubits "
                                  f"(0..{n_phys - 1 if isinstance(n_phys, int) else '?'}), got {list(mapping)}")
    physical, layout = transpile(phase_free(circuit), backend, initial_layout=mapping,
                                 optimization_level=optimization_level, seed=seed)
    return MappedCircuit(circuit, physical, layout, mapping)


_COST_NAMES = ("depth", "esp", "gates", "params", "two_qubit")


def mapped_costs(noise_model: NoiseModel | None = None) -> CostModel:
    """Costs of a :class:`MappedCircuit`: ``gates``, ``depth``, ``two_qubit`` of the physical
    circuit (:data:`~tinyqml.qml.costs.CIRCUIT_COSTS`), ``params`` (distinct weights) and,
    with a noise model, ``esp`` (estimated success probability, readout on the final layout)."""
    costs: dict[str, Callable[[Any], float]] = {
        name: (lambda m, name=name: CIRCUIT_COSTS.cost(name, _mapped(m).physical))
        for name in ("gates", "depth", "two_qubit")
    }
    costs["params"] = lambda m: _mapped(m).params
    if noise_model is not None:
        costs["esp"] = lambda m: esp(_mapped(m).physical, noise_model, _mapped(m).layout.final)
    return CostModel(costs)


def _mapped(m: Any) -> MappedCircuit:
    if not isinstance(m, MappedCircuit):
        raise QuantumNASError(f"these costs measure a MappedCircuit, got {type(m).__name__}")
    return m


# --------------------------------------------------------------------------- evaluation


def noisy_expectations(mapped: MappedCircuit, weights: Any, x: Tensor, noise_model: NoiseModel,
                       n_outputs: int, readout: bool = True) -> Tensor:
    """Exact noisy ``<Z>`` ``[B, n_outputs]`` of logical qubits ``0..n_outputs-1`` (density
    matrices under ``noise_model``, through its readout errors unless ``readout=False``)."""
    w = torch.as_tensor(weights).detach().to(torch.float64)[: mapped.physical.n_weights]
    with torch.no_grad():
        return noisy_expval(mapped.physical, mapped.observables(n_outputs), noise_model, weights=w,
                            inputs=x.to(torch.float64), readout=readout)


def accuracy(scores: Tensor, y: Tensor) -> float:
    """Fraction of rows whose arg-max score is the label."""
    if scores.dim() != 2 or y.shape != scores.shape[:1]:
        raise QuantumNASError(f"accuracy needs scores [B, C] and labels [B], got {list(scores.shape)} and "
                              f"{list(y.shape)}")
    return float((scores.argmax(dim=1) == y).double().mean())


def noisy_accuracy(mapped: MappedCircuit, weights: Any, x: Tensor, y: Tensor, noise_model: NoiseModel,
                   n_outputs: int, readout: bool = True) -> float:
    """Accuracy of the arg-max noisy ``<Z>`` (see :func:`noisy_expectations`)."""
    return accuracy(noisy_expectations(mapped, weights, x, noise_model, n_outputs, readout), y)


def aer_accuracy(mapped: MappedCircuit, weights: Any, x: Tensor, y: Tensor, noise_model: NoiseModel | None,
                 n_outputs: int, shots: int = 1024, seed: int = 0, readout: bool = True,
                 options: Mapping[str, Any] | None = None) -> float:
    """Accuracy on Qiskit Aer (density-matrix method) with ``shots`` per row, the model's gate
    and readout errors, measuring the final wires of logical qubits ``0..n_outputs-1``."""
    from tinyqml.noise.aer import aer_expectations

    w = torch.as_tensor(weights).detach().to(torch.float64)[: mapped.physical.n_weights]
    z = aer_expectations(mapped.physical, w, x, noise_model, shots=shots, seed=seed,
                         wires=list(mapped.layout.final[:n_outputs]), readout=readout, options=options)
    return accuracy(z, y)


# --------------------------------------------------------------------------- training


def _loader(n: int, batch_size: int, gen: torch.Generator) -> list[Tensor]:
    order = torch.randperm(n, generator=gen)
    return [order[lo:lo + batch_size] for lo in range(0, n, batch_size)]


def _check_data(x: Tensor, y: Tensor) -> None:
    if x.dim() != 2 or y.dim() != 1 or len(x) != len(y) or len(y) < 1:
        raise QuantumNASError(f"training needs x [N, F] and labels [N], got {list(x.shape)} and {list(y.shape)}")


def fit(layer: nn.Module, x: Tensor, y: Tensor, config: TrainConfig = TrainConfig(),
        on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``layer`` (``layer(x) -> <Z>``) on logits ``logit_scale * layer(x)``; returns the
    mean loss per epoch. Batch orders come from a generator seeded with ``config.seed``."""
    if not isinstance(config, TrainConfig):
        raise QuantumNASError(f"config must be a TrainConfig, got {type(config).__name__}")
    return _train(lambda xb, _step: layer(xb), layer.parameters(), x, y, config, on_epoch)


def _train(forward: Callable[[Tensor, int], Tensor], params: Any, x: Tensor, y: Tensor, config: Any,
           on_epoch: Callable[[int, float], None] | None, epochs: int | None = None,
           before_epoch: Callable[[int], None] | None = None, after_step: Callable[[], None] | None = None
           ) -> list[float]:
    _check_data(x, y)
    epochs = config.epochs if epochs is None else epochs
    params = list(params)
    opt = torch.optim.Adam(params, lr=config.lr)
    steps = epochs * math.ceil(len(y) / config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    gen = torch.Generator().manual_seed(config.seed)
    x = x.to(torch.float64)
    history: list[float] = []
    step = 0
    for epoch in range(epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        total = 0.0
        for idx in _loader(len(y), config.batch_size, gen):
            loss = nn.functional.cross_entropy(config.logit_scale * forward(x[idx], step), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
            total += float(loss.detach()) * len(idx)
            step += 1
        history.append(total / len(y))
        log.info("epoch %d/%d loss %.4f", epoch + 1, epochs, history[-1])
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return history


def train_supercircuit(layer: SuperLayer, x: Tensor, y: Tensor, config: SuperTrainConfig = SuperTrainConfig(),
                       on_epoch: Callable[[int, float], None] | None = None) -> list[dict[str, Any]]:
    """Train the shared weights of ``layer``: ``warmup_epochs`` on the largest circuit, then
    a sub-circuit per step by restricted sampling (``random.Random(config.seed)``).
    Returns the sequence of sampled sub-circuit configurations (one per step)."""
    if not isinstance(layer, SuperLayer):
        raise QuantumNASError(f"train_supercircuit needs a SuperLayer, got {type(layer).__name__}")
    if not isinstance(config, SuperTrainConfig):
        raise QuantumNASError(f"config must be a SuperTrainConfig, got {type(config).__name__}")
    sc = layer.supercircuit
    rng = random.Random(config.seed)
    largest = sc.largest()
    per_epoch = math.ceil(len(y) / config.batch_size)
    warm_steps = config.warmup_epochs * per_epoch
    sampled: list[dict[str, Any]] = []
    state = {"cfg": largest}

    def forward(xb: Tensor, step: int) -> Tensor:
        if step < warm_steps or (config.largest_every and (step - warm_steps) % config.largest_every == 0):
            cfg = largest
        else:
            cfg = sc.sample(rng, previous=state["cfg"], restrict=config.restrict)
        state["cfg"] = cfg
        sampled.append(cfg)
        return layer(xb, cfg)

    _train(forward, layer.parameters(), x, y, config, on_epoch, epochs=config.warmup_epochs + config.epochs)
    return sampled


def scratch_layer(layer: SuperLayer, config: Mapping[str, Any], seed: int = 0) -> QuantumLayer:
    """Encoder + the sub-circuit of ``config`` (weights numbered densely) as a new
    :class:`~tinyqml.qml.QuantumLayer` with fresh weights seeded by ``seed`` (to train the
    winner from scratch). ``config`` may be a co-search configuration (its mapping is ignored)."""
    if not isinstance(layer, SuperLayer):
        raise QuantumNASError(f"scratch_layer needs a SuperLayer, got {type(layer).__name__}")
    sub = sub_config(layer.supercircuit, config)
    dense, _ = compact_weights(layer.circuit(sub), layer.weights.detach()[: layer.circuit(sub).n_weights])
    return QuantumLayer(dense, layer.observables, diff_method=layer.diff_method, seed=seed)


# --------------------------------------------------------------------------- the co-search


@dataclass(frozen=True, eq=False)
class CoSearchResult:
    """The study, the winning configuration and its parts."""

    study: optuna.Study
    config: dict[str, Any]
    sub_config: dict[str, Any]
    mapping: tuple[int, ...]
    score: float
    costs: dict[str, float]

    @property
    def n_trials(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


class CoSearch:
    """Evolutionary co-search of a sub-circuit of ``layer`` and its mapping onto ``backend``.

    Args:
        layer: a trained :class:`~tinyqml.qml.supercircuit.SuperLayer` (its weights are
            inherited, never changed).
        backend: a Qiskit ``BackendV2`` (e.g. ``FakeQuitoV2()``).
        noise_model: the calibrated model scores are computed under (e.g.
            ``NoiseModel.from_backend(backend)``).
        x_val, y_val: the validation set of the score.
        n_outputs: classes read as ``<Z>`` of logical qubits ``0..n_outputs-1``.
        settings: :class:`SearchSettings`.
        constraints: bounds on :func:`mapped_costs` (checked before the search starts).
    """

    def __init__(self, layer: SuperLayer, backend: Any, noise_model: NoiseModel, x_val: Tensor, y_val: Tensor,
                 n_outputs: int, settings: SearchSettings = SearchSettings(),
                 constraints: Sequence[Constraint] = ()) -> None:
        if not isinstance(layer, SuperLayer):
            raise QuantumNASError(f"CoSearch needs a SuperLayer, got {type(layer).__name__}")
        if not isinstance(noise_model, NoiseModel):
            raise QuantumNASError(f"noise_model must be a tinyqml NoiseModel, got {type(noise_model).__name__}")
        if not isinstance(settings, SearchSettings):
            raise QuantumNASError(f"settings must be SearchSettings, got {type(settings).__name__}")
        _check_data(x_val, y_val)
        _positive_int("CoSearch", "n_outputs", n_outputs)
        if n_outputs > layer.supercircuit.config.n_wires:
            raise QuantumNASError(f"n_outputs={n_outputs} exceeds the {layer.supercircuit.config.n_wires} "
                                  f"logical qubits")
        self.layer, self.backend, self.noise_model = layer, backend, noise_model
        self.x_val, self.y_val, self.n_outputs, self.settings = x_val, y_val, n_outputs, settings
        self.supercircuit = layer.supercircuit
        self.space = co_search_space(self.supercircuit, int(backend.num_qubits))
        self.costs = mapped_costs(noise_model)
        self.constraints = self.costs.check(constraints)
        self._distinct = distinct_mapping(self.supercircuit)
        self._mapped: dict[tuple, MappedCircuit] = {}
        self._scores: dict[tuple, float] = {}
        self._seen: set[tuple] = set()
        self._refused = 0

    def _key(self, config: Mapping[str, Any]) -> tuple:
        sc = self.supercircuit
        return sc.key(sub_config(sc, config)), mapping_of(sc, config)

    def candidate(self, config: Mapping[str, Any]) -> MappedCircuit:
        """Encoder + the sub-circuit of ``config`` mapped with its mapping (cached); weights
        indexed as in the SuperCircuit."""
        key = self._key(config)
        if key not in self._mapped:
            circuit = self.layer.circuit(sub_config(self.supercircuit, config))
            self._mapped[key] = map_circuit(circuit, self.backend, key[1], self.settings.optimization_level,
                                            self.settings.transpile_seed)
        return self._mapped[key]

    def feasible(self, config: Mapping[str, Any]) -> bool:
        """Distinct qubits, every constraint met and (``settings.novel``) a candidate the
        study has not scored yet: the sampler's predicate."""
        if not self._distinct(config):
            return False
        if self.settings.novel and self._key(config) in self._seen and self._refused < self.settings.max_repeats:
            self._refused += 1
            return False
        return not self.constraints or self.costs.feasible(self.candidate(config), self.constraints)

    def score(self, config: Mapping[str, Any]) -> float:
        """Validation accuracy of the candidate with the inherited weights under the noise model."""
        if not self._distinct(config):
            raise QuantumNASError(f"mapping {list(mapping_of(self.supercircuit, config))} repeats a qubit")
        key = self._key(config)
        if key not in self._scores:
            self._scores[key] = noisy_accuracy(self.candidate(config), self.layer.weights, self.x_val,
                                               self.y_val, self.noise_model, self.n_outputs)
        return self._scores[key]

    def objective(self, config: dict[str, Any], trial: optuna.Trial) -> float | tuple[float, float]:
        if not self._distinct(config):
            log.info("trial %d: mapping %s repeats a qubit, pruned", trial.number,
                     list(mapping_of(self.supercircuit, config)))
            raise optuna.TrialPruned()
        acc = self.score(config)
        self._seen.add(self._key(config))
        self._refused = 0
        m = self.candidate(config)
        trial.set_user_attr("mapping", list(mapping_of(self.supercircuit, config)))
        trial.set_user_attr("final_layout", list(m.layout.final))
        log.info("trial %d: accuracy %.3f, %d gates, depth %d, mapping %s", trial.number, acc, m.gates, m.depth,
                 list(mapping_of(self.supercircuit, config)))
        if self.settings.secondary is None:
            return acc
        return acc, self.costs.cost(self.settings.secondary, m)

    def sampler(self) -> optuna.samplers.BaseSampler:
        """The strategy's sampler over the co-search space, with :meth:`feasible` as its predicate."""
        return self.settings.strategy.sampler(self.space, self.feasible, self.settings.seed)

    def run(self, progress: bool = False) -> CoSearchResult:
        """Run (or continue) the study; the winner is the feasible trial with the best
        validation accuracy (ties: fewer physical gates, then the earlier trial)."""
        s = self.settings
        cfg = SearchConfig(n_trials=s.n_trials, directions=s.directions, storage=s.storage,
                           study_name=s.study_name, seed=s.seed, progress=progress, strategy=s.strategy)
        self._seen = self._scored_before(cfg)
        self._refused = 0
        study = run_search(self.objective, self.space, cfg, sampler=self.sampler(), costs=self.costs,
                           constraints=self.constraints, build=self.candidate)
        best = best_trial(study)
        config = dict(best.params)
        return CoSearchResult(study, config, sub_config(self.supercircuit, config),
                              mapping_of(self.supercircuit, config), float(best.values[0]),
                              dict(best.user_attrs.get("costs", {})))


    def _scored_before(self, cfg: SearchConfig) -> set[tuple]:
        """Candidates the completed trials of a stored study (being continued) already scored."""
        url = storage_url(cfg.storage)
        if url is None:
            return set()
        try:
            study = optuna.load_study(study_name=cfg.study_name, storage=url)
        except KeyError:  # no such study yet
            return set()
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return {self._key(t.params) for t in done if self.space.contains(t.params)}


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The feasible completed trial with the highest first objective (ties: fewer physical
    gates, then the earlier trial)."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))

    def violation(t: optuna.trial.FrozenTrial) -> float:
        v = t.user_attrs.get(VIOLATIONS_ATTR)
        return max([0.0] + [float(a) for a in v]) if v else 0.0

    feasible = [t for t in done if violation(t) <= 0]
    if not feasible:
        raise QuantumNASError(f"no feasible trial among the {len(done)} completed ones; loosen the constraints")
    return min(feasible, key=lambda t: (-t.values[0], t.user_attrs.get("costs", {}).get("gates", 0.0), t.number))


# --------------------------------------------------------------------------- pruning


@dataclass(frozen=True, eq=False)
class PruneResult:
    """The pruned, squashed layer and its record: loss and sparsity per epoch, the
    validation scores (with ``max_drop``) before pruning and after every epoch, and the
    epoch whose state was kept (``None``: the unpruned one)."""

    layer: QuantumLayer
    sparsity: float
    history: list[float] = field(default_factory=list)
    sparsities: list[float] = field(default_factory=list)
    gates_before: int = 0
    gates_after: int = 0
    val_accuracies: list[float] = field(default_factory=list)
    val_before: float | None = None
    kept_epoch: int | None = None


def clean_validator(x_val: Tensor, y_val: Tensor) -> Callable[[QuantumLayer], float]:
    """Noise-free validation accuracy of a (masked) layer."""
    _check_data(x_val, y_val)

    def validate(layer: QuantumLayer) -> float:
        with torch.no_grad():
            return accuracy(layer(x_val), y_val)

    return validate


def noisy_validator(backend: Any, noise_model: NoiseModel, mapping: Sequence[int] | None, x_val: Tensor,
                    y_val: Tensor, n_outputs: int, optimization_level: int = 1,
                    seed: int = 0) -> Callable[[QuantumLayer], float]:
    """Validation accuracy of a (masked) layer on the device: its identity gates squashed
    away, transpiled with ``mapping`` (:func:`map_circuit`), exact noisy ``<Z>`` under
    ``noise_model`` with readout errors (:func:`noisy_accuracy`)."""
    _check_data(x_val, y_val)

    def validate(layer: QuantumLayer) -> float:
        small, w = squash_circuit(layer.circuit, layer.weights.detach())
        mapped = map_circuit(small, backend, mapping, optimization_level, seed)
        return noisy_accuracy(mapped, w, x_val, y_val, noise_model, n_outputs)

    return validate


def prune_gates(layer: QuantumLayer, x: Tensor, y: Tensor, config: PruneConfig = PruneConfig(),
                validate: Callable[[QuantumLayer], float] | None = None,
                on_epoch: Callable[[int, float], None] | None = None) -> PruneResult:
    """Iteratively prune whole gates of ``layer`` while fine-tuning it, then compile them away.

    The shared :class:`~tinyqml.search.Pruner` masks one group per gate
    (:func:`~tinyqml.qml.prune.gate_target`) to the schedule's sparsity at the start of
    every epoch; masked angles are zero, so the gate is the identity. With
    ``config.max_drop`` and ``validate`` (:func:`clean_validator`, :func:`noisy_validator`
    or any ``layer -> accuracy``), the state after each epoch is scored and the sparsest
    one within ``max_drop`` of the unpruned layer's score is kept.
    At the end the masks are baked in (:func:`~tinyqml.search.squash`) and
    :func:`~tinyqml.qml.prune.squash_circuit` drops every identity gate. ``layer`` is
    modified in place; the result holds a new, smaller :class:`~tinyqml.qml.QuantumLayer`
    with the same outputs as the masked one.
    """
    if not isinstance(layer, QuantumLayer):
        raise QuantumNASError(f"prune_gates needs a QuantumLayer, got {type(layer).__name__}")
    if not isinstance(config, PruneConfig):
        raise QuantumNASError(f"config must be a PruneConfig, got {type(config).__name__}")
    if config.max_drop is not None and validate is None:
        raise QuantumNASError("PruneConfig.max_drop needs a validate function (clean_validator, noisy_validator)")
    circuit = layer.circuit
    importance = identity_distance(circuit) if config.importance == "identity" else Magnitude()
    pruner = Pruner([gate_target(layer)], importance=importance, schedule=config.schedule_fn())
    sparsities: list[float] = []
    val: list[float] = []

    def val_accuracy() -> float:
        return float(validate(layer))  # type: ignore[misc]

    base = val_accuracy() if config.max_drop is not None else None
    kept: dict[str, Any] = {"epoch": None, "sparsity": 0.0, "state": copy.deepcopy(layer.state_dict())}

    def before_epoch(epoch: int) -> None:
        pruner.step(min(epoch + 1, config.prune_epochs))
        pruner.reapply()
        sparsities.append(pruner.sparsity())
        log.info("pruning epoch %d: %.2f of the gates masked", epoch + 1, sparsities[-1])

    def after_epoch(epoch: int, loss: float) -> None:
        if base is not None:
            val.append(val_accuracy())
            if val[-1] >= base - config.max_drop and sparsities[-1] >= kept["sparsity"]:  # type: ignore[operator]
                kept.update(epoch=epoch, sparsity=sparsities[-1], state=copy.deepcopy(layer.state_dict()))
        if on_epoch is not None:
            on_epoch(epoch, loss)

    history = _train(lambda xb, _step: layer(xb), layer.parameters(), x, y, config, after_epoch,
                     epochs=config.epochs, before_epoch=before_epoch, after_step=pruner.reapply)
    if base is not None:
        layer.load_state_dict(kept["state"])
        log.info("keeping epoch %s: %.2f of the gates masked (validation %.3f, unpruned %.3f)",
                 kept["epoch"], pruner.sparsity(), val[kept["epoch"]] if kept["epoch"] is not None else base, base)
    final = pruner.sparsity()
    squash(layer)
    small, w = squash_circuit(circuit, layer.weights.detach())
    out = QuantumLayer(small, layer.observables, diff_method=layer.diff_method, seed=config.seed)
    with torch.no_grad():
        out.weights.copy_(w)
    return PruneResult(out, final, history, sparsities, len(circuit.ops), len(small.ops), val, base,
                       kept["epoch"] if base is not None else config.epochs - 1)


# --------------------------------------------------------------------------- baseline


def hea_with_budget(n_wires: int, n_params: int, rotations: Sequence[str] = ("RY", "RZ"),
                    entangler: str = "ring") -> Circuit:
    """A hardware-efficient ansatz with exactly ``n_params`` weights: the layers of
    :func:`~tinyqml.qml.templates.hardware_efficient`, the last one cut after the
    ``n_params``-th rotation (its CX pattern kept).

    >>> hea_with_budget(4, 10).gate_counts, hea_with_budget(4, 10).n_weights
    ({'RY': 6, 'RZ': 4, 'CX': 8}, 10)
    """
    from tinyqml.qml.templates import hardware_efficient

    _positive_int("hea_with_budget", "n_params", n_params)
    per_layer = len(rotations) * n_wires
    full = hardware_efficient(n_wires, math.ceil(n_params / per_layer), rotations=rotations, entangler=entangler)
    kept = tuple(op for op in full.ops if all(p.kind != "weight" or p.index[0] < n_params for p in op.params))
    return Circuit(n_wires, kept)
