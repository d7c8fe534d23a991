"""The quantum half of the main job: noise-aware QuantumNAS against a hardware-efficient ansatz.

For the 4-class digits (0-3, 16 pooled pixels, :func:`tinyqml.qml.datasets.digits4`) on a
5-qubit calibrated fake backend (``FakeQuitoV2`` by default, offline):

1. a weight-shared SuperCircuit (U3 + CU3 blocks, elastic depth and width) is trained
   noise-free with restricted sampling;
2. the sub-circuit and its qubit mapping are co-searched with the shared engine's evolution,
   each candidate scored by its exact noisy validation accuracy under the backend's
   calibrated :class:`~tinyqml.noise.NoiseModel` (inherited weights);
3. the winner is trained from scratch, then its gates are pruned iteratively with fine-tuning
   (the sparsest state within ``max_drop`` of the unpruned noisy validation score is kept);
4. a hardware-efficient ansatz with the winner's parameter count (RY/RZ layers + CX ring on
   Qiskit's default layout) is trained the same way;
5. every model is run on Qiskit Aer with the backend's noise model (``shots`` per image,
   readout errors on) at each noise scale in ``scales``, and noiselessly.

All of it lives in :mod:`tinyqml.noise.quantumnas`; this module only wires it together with
seeds, a progress callback and a result record.

>>> QuantumDemoConfig(trials=0)
Traceback (most recent call last):
...
tinyqml.demo.errors.DemoConfigError: QuantumDemoConfig.trials must be an integer >= 1, got 0
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from tinyqml.demo.progress import ProgressFn, Stage, silent
from tinyqml.demo.errors import MAX_SEED, DemoConfigError, check_int

logger = logging.getLogger(__name__)

__all__ = ["DemoConfigError", "QuantumDemoConfig", "QUANTUM_FAST", "QuantumRow", "QuantumDemoResult",
           "run_quantum", "load_backend"]

#: the models compared, in table order
HEA, SEARCHED, PRUNED = "HEA baseline (RY/RZ + CX ring, default layout)", "QuantumNAS: searched + mapped", \
    "QuantumNAS: searched + mapped + pruned"


#: SuperCircuit epochs on the largest circuit before sampling starts
WARMUP_EPOCHS = 2
#: the largest device the demo accepts (its noisy simulation holds density matrices of the used qubits)
MAX_QUBITS = 7


@dataclass(frozen=True)
class QuantumDemoConfig:
    """Sizes of the quantum half (the defaults are the full ``tinyqml demo``).

    ``blocks``: SuperCircuit blocks; ``super_epochs``: its training epochs (after 2 on the largest
    circuit); ``trials``/``population``: the co-search; ``epochs``: training from scratch (winner and
    baseline); ``sparsity``/``prune_epochs``/``settle_epochs``/``max_drop``: gate pruning;
    ``n_test``/``shots``/``scales``: the Aer evaluation."""

    backend: str = "FakeQuitoV2"
    blocks: int = 4
    super_epochs: int = 100
    trials: int = 150
    population: int = 12
    epochs: int = 40
    sparsity: float = 0.5
    prune_epochs: int = 12
    settle_epochs: int = 3
    max_drop: float = 0.02
    n_test: int = 216
    shots: int = 1024
    scales: tuple[float, ...] = (1.0, 4.0)
    seed: int = 0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name in ("blocks", "super_epochs", "trials", "epochs", "prune_epochs", "n_test", "shots"):
            check_int(owner, name, getattr(self, name))
        check_int(owner, "population", self.population, 2)
        check_int(owner, "settle_epochs", self.settle_epochs, 0)
        check_int(owner, "seed", self.seed, 0, MAX_SEED)
        if not 0.0 <= self.sparsity < 1.0:
            raise DemoConfigError(f"{owner}.sparsity must be in [0, 1), got {self.sparsity!r}")
        if not 0.0 <= self.max_drop <= 1.0:
            raise DemoConfigError(f"{owner}.max_drop must be in [0, 1], got {self.max_drop!r}")
        if not self.scales or any(not s > 0 for s in self.scales):
            raise DemoConfigError(f"{owner}.scales must be noise scales > 0, got {self.scales!r}")


#: about half a minute: tests, tutorials and ``tinyqml demo --fast``
QUANTUM_FAST = QuantumDemoConfig(blocks=2, super_epochs=3, trials=8, population=4, epochs=3, prune_epochs=2,
                                 settle_epochs=1, n_test=48, shots=256)


@dataclass(frozen=True)
class QuantumRow:
    """One evaluated model: test accuracies (noiseless, Aer per scale) and its transpiled circuit's size."""

    name: str
    noiseless: float
    aer: dict[float, float]
    params: int
    gates: int
    two_qubit: int
    depth: int


@dataclass(frozen=True)
class QuantumDemoResult:
    """What :func:`run_quantum` returns (accuracies are fractions in [0, 1])."""

    config: QuantumDemoConfig
    backend: str
    n_qubits: int
    rows: tuple[QuantumRow, ...]
    winner: dict[str, Any]
    trials: tuple[dict[str, Any], ...]
    pruning: dict[str, Any]
    n_train: int
    n_val: int
    n_test: int
    seconds: dict[str, float] = field(default_factory=dict)
    #: the trained models by row name (``QuantumLayer``; not written to results.json)
    layers: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def row(self, name: str) -> QuantumRow:
        return next(r for r in self.rows if r.name == name)


def load_backend(name: str) -> Any:
    """The calibrated fake backend ``name`` (:func:`tinyqml.noise.calibration.fake_backend`: ``FakeQuitoV2``,
    ``quito``, ...), checked to have 4 to 7 qubits (4 logical qubits, density matrices of the device)."""
    from tinyqml.noise.calibration import fake_backend

    backend = fake_backend(name)
    if not 4 <= backend.num_qubits <= MAX_QUBITS:
        raise DemoConfigError(f"the quantum demo maps 4 qubits onto a small device: {name!r} has "
                              f"{backend.num_qubits} qubits, pick one with 4..{MAX_QUBITS} (FakeQuitoV2, "
                              f"FakeManilaV2, FakeLimaV2, FakeBelemV2 have 5)")
    return backend


def _split(data: Any, seed: int) -> tuple[torch.Tensor, ...]:
    perm = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed))
    n_val = len(perm) // 4
    return (data.x_train[perm[n_val:]], data.y_train[perm[n_val:]], data.x_train[perm[:n_val]],
            data.y_train[perm[:n_val]])


def _epoch_stage(progress: ProgressFn, name: str, total: int) -> Any:
    stage = Stage(progress, name, total)
    return lambda *_: stage.advance()


@dataclass(frozen=True)
class _Setup:
    """What every step of the quantum half shares: the device, its noise model, the data splits, the
    encoder and the observables."""

    backend: Any
    noise: Any
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    encoder: Any
    observables: list[Any]


def _setup(config: QuantumDemoConfig, backend: Any) -> _Setup:
    from tinyqml.classifier import encoder_4x4_ryzxy
    from tinyqml.noise import NoiseModel
    from tinyqml.qml.datasets import digits4
    import tinyqml.qml as tq

    backend = load_backend(config.backend) if backend is None else backend
    data = digits4((0, 1, 2, 3), seed=config.seed)
    return _Setup(backend, NoiseModel.from_backend(backend), *_split(data, config.seed),
                  data.x_test[:config.n_test], data.y_test[:config.n_test], encoder_4x4_ryzxy(),
                  [tq.Z(i) for i in range(4)])


def _supercircuit(s: _Setup, config: QuantumDemoConfig, progress: ProgressFn) -> Any:
    from tinyqml.noise import quantumnas as qn
    from tinyqml.qml.supercircuit import SuperCircuit, SuperCircuitConfig, SuperLayer

    sc = SuperCircuit(SuperCircuitConfig(n_wires=4, n_blocks=config.blocks))
    layer = SuperLayer(s.encoder, sc, s.observables, seed=config.seed)
    cfg = qn.SuperTrainConfig(epochs=config.super_epochs, warmup_epochs=WARMUP_EPOCHS, restrict=2, seed=config.seed)
    qn.train_supercircuit(layer, s.x_train, s.y_train, cfg, on_epoch=_epoch_stage(
        progress, "quantum: train the SuperCircuit", cfg.warmup_epochs + cfg.epochs))
    return layer


def _train_and_prune(s: _Setup, super_layer: Any, found: Any, config: QuantumDemoConfig,
                     progress: ProgressFn) -> tuple[Any, Any, Any]:
    """The winner trained from scratch, its pruned copy, and the HEA baseline with the winner's budget."""
    from tinyqml.noise import quantumnas as qn
    import tinyqml.qml as tq

    train_cfg = qn.TrainConfig(epochs=config.epochs, lr=0.05, seed=config.seed)
    winner = qn.scratch_layer(super_layer, found.config, seed=config.seed)
    qn.fit(winner, s.x_train, s.y_train, train_cfg,
           on_epoch=_epoch_stage(progress, "quantum: train the winner", config.epochs))
    prune_cfg = qn.PruneConfig(sparsity=config.sparsity, schedule="iterative", stages=4,
                               prune_epochs=config.prune_epochs, settle_epochs=config.settle_epochs,
                               max_drop=config.max_drop, seed=config.seed)
    validate = qn.noisy_validator(s.backend, s.noise, found.mapping, s.x_val, s.y_val, 4, seed=config.seed)
    pruned = qn.prune_gates(copy.deepcopy(winner), s.x_train, s.y_train, prune_cfg, validate,
                            on_epoch=_epoch_stage(progress, "quantum: prune gates", prune_cfg.epochs))
    hea = tq.QuantumLayer(s.encoder + qn.hea_with_budget(4, winner.circuit.n_weights), s.observables,
                          seed=config.seed)
    qn.fit(hea, s.x_train, s.y_train, train_cfg,
           on_epoch=_epoch_stage(progress, "quantum: train the HEA baseline", config.epochs))
    return winner, pruned, hea


def _pruning_record(pruned: Any) -> dict[str, Any]:
    return {"gates_before": pruned.gates_before, "gates_after": pruned.gates_after, "sparsity": pruned.sparsity,
            "kept_epoch": pruned.kept_epoch, "val_before": pruned.val_before,
            "val_accuracies": list(pruned.val_accuracies), "sparsities": list(pruned.sparsities),
            "loss": list(pruned.history)}


def run_quantum(config: QuantumDemoConfig = QuantumDemoConfig(), progress: ProgressFn = silent,
                storage: str = ":memory:", backend: Any = None) -> QuantumDemoResult:
    """Run the quantum half; the co-search study goes to ``storage`` (a SQLite URL keeps it for
    ``optuna-dashboard``); ``backend`` is the loaded ``config.backend`` when the caller has it."""
    from tinyqml.noise.quantumnas import map_circuit

    clock = _Clock()
    s = _setup(config, backend)
    super_layer = _supercircuit(s, config, progress)
    clock.lap("supercircuit")
    found = _co_search(super_layer, s.backend, s.noise, s.x_val, s.y_val, config, progress, storage)
    clock.lap("search")
    winner, pruned, hea = _train_and_prune(s, super_layer, found, config, progress)
    clock.lap("training")
    models = {HEA: (hea, None), SEARCHED: (winner, found.mapping), PRUNED: (pruned.layer, found.mapping)}
    mapped = {name: (layer, map_circuit(layer.circuit, s.backend, mapping, seed=config.seed))
              for name, (layer, mapping) in models.items()}
    rows = _evaluate(mapped, s.x_test, s.y_test, s.noise, config, progress)
    clock.lap("evaluation")
    return QuantumDemoResult(
        config=config, backend=s.backend.name, n_qubits=s.backend.num_qubits, rows=rows,
        winner={"blocks": super_layer.supercircuit.key(found.sub_config), "mapping": list(found.mapping),
                "val_score": found.score, "params": winner.circuit.n_weights, "costs": found.costs},
        trials=tuple(_trials(found.study)), pruning=_pruning_record(pruned), n_train=len(s.y_train),
        n_val=len(s.y_val), n_test=len(s.y_test), seconds=clock.seconds,
        layers={name: layer for name, (layer, _) in models.items()})


class _Clock:
    """Seconds per named step (``lap`` closes the step that started at the previous lap)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self._t = now - self._t, now


def _co_search(super_layer: Any, backend: Any, nm: Any, xv: torch.Tensor, yv: torch.Tensor,
               config: QuantumDemoConfig, progress: ProgressFn, storage: str) -> Any:
    from tinyqml.noise.quantumnas import CoSearch, SearchSettings
    from tinyqml.search import Evolution, EvolutionConfig

    stage = Stage(progress, "quantum: co-search circuit + mapping", config.trials)

    class _Counted(CoSearch):
        def objective(self, cfg: dict[str, Any], trial: Any) -> Any:  # one progress step per scored trial
            value = super().objective(cfg, trial)
            stage.advance()
            return value

    strategy = Evolution(EvolutionConfig(population=config.population, parents=min(4, config.population)))
    settings = SearchSettings(n_trials=config.trials, strategy=strategy, seed=config.seed, storage=storage,
                              study_name=f"demo-quantumnas-{config.backend}-seed{config.seed}",
                              transpile_seed=config.seed)
    found = _Counted(super_layer, backend, nm, xv, yv, 4, settings).run()
    stage.finish()
    return found


def _evaluate(models: dict[str, Any], x: torch.Tensor, y: torch.Tensor, nm: Any, config: QuantumDemoConfig,
              progress: ProgressFn) -> tuple[QuantumRow, ...]:
    from tinyqml.noise.quantumnas import accuracy, aer_accuracy

    stage = Stage(progress, "quantum: evaluate on Aer", len(models) * len(config.scales))
    rows = []
    for k, (name, (layer, mapped)) in enumerate(models.items()):
        with torch.no_grad():
            clean = accuracy(layer(x), y)
        aer = {}
        for j, scale in enumerate(config.scales):
            aer[scale] = aer_accuracy(mapped, layer.weights, x, y, nm.scaled(scale), 4, shots=config.shots,
                                      seed=(1000 * config.seed + 10 * k + j) % 2**32)
            stage.advance()
        rows.append(QuantumRow(name, clean, aer, mapped.params, mapped.gates, mapped.two_qubit, mapped.depth))
    return tuple(rows)


def _trials(study: Any) -> list[dict[str, Any]]:
    return [{"number": t.number, "value": float(t.values[0]), "two_qubit": t.user_attrs.get("costs", {}).get("two_qubit"),
             "gates": t.user_attrs.get("costs", {}).get("gates")} for t in study.trials if t.values is not None]
