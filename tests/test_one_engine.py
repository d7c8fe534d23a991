"""The issue's proof that search and pruning are one engine for nets and circuits.

The *same* pruning schedule object drives a small CNN and a variational circuit, and the
*same* search strategy object searches a circuit space and a net space.
"""

from __future__ import annotations

import optuna
import torch
from torch import nn

import tinyqml.qml as tq
from tinyqml.qml.costs import CIRCUIT_COSTS
from tinyqml.qml.prune import gate_target, identity_distance, squash_circuit
from tinyqml.qml.supercircuit import SuperCircuit, SuperCircuitConfig
from tinyqml.search import (
    AGP,
    Channel,
    Constraint,
    CostModel,
    Evolution,
    EvolutionConfig,
    IntRange,
    Pruner,
    SearchConfig,
    SearchSpace,
    Target,
    per_block,
    run_search,
    squash,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
SCHEDULE = AGP(final=0.5, start=0, end=4, frequency=1)
STRATEGY = Evolution(EvolutionConfig(population=5, parents=2))


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 4))


def _circuit_layer() -> tq.QuantumLayer:
    c = tq.encoders.angle(4, "Y") + tq.templates.u3cu3(4, 2)
    return tq.QuantumLayer(c, [tq.Z(i) for i in range(4)], seed=0)


def test_one_schedule_prunes_a_cnn_and_a_circuit():
    cnn, layer = _cnn(), _circuit_layer()
    cnn_pruner = Pruner([Target(cnn[0], granularity=Channel()), Target(cnn[2], granularity=Channel())],
                        schedule=SCHEDULE)
    qml_pruner = Pruner([gate_target(layer)], importance=identity_distance(layer.circuit), schedule=SCHEDULE)
    assert cnn_pruner.schedule is qml_pruner.schedule
    x_img = torch.rand(2, 1, 8, 8)
    x_q = torch.rand(2, 4, dtype=torch.float64)
    for step in range(5):
        cnn_pruner.step(step)
        qml_pruner.step(step)
        cnn(x_img).sum().backward()
        layer(x_q).sum().backward()
    for p in (cnn_pruner, qml_pruner):
        assert abs(p.sparsity() - SCHEDULE(4)) < 0.05
    assert int((cnn[0].weight.flatten(1) == 0).all(1).sum()) == 4  # whole channels
    small, _ = squash_circuit(layer.circuit, layer.weights)
    assert len(small) < len(layer.circuit)  # pruned gates compile away
    squash(cnn)
    assert isinstance(cnn[0].weight, nn.Parameter)


def test_one_strategy_searches_a_circuit_space_and_a_net_space():
    sc = SuperCircuit(SuperCircuitConfig(n_wires=3, n_blocks=3))
    net_space = SearchSpace.of(IntRange("depth", 1, 4), *per_block("channels", 4, IntRange("c", 4, 32, step=4)))

    def net_params(cfg):
        chans = [1] + [cfg[f"channels[{i}]"] for i in range(cfg["depth"])]
        return sum(9 * a * b for a, b in zip(chans, chans[1:]))

    circuit_study = run_search(
        lambda cfg, t: -abs(CIRCUIT_COSTS.cost("gates", sc.build(cfg)) - 9), sc.space,
        SearchConfig(n_trials=15, storage=":memory:", seed=0, progress=False, strategy=STRATEGY,
                     study_name="circuits"),
        costs=CIRCUIT_COSTS, constraints=[Constraint("two_qubit", max=4)], build=sc.build)
    net_study = run_search(
        lambda cfg, t: cfg["depth"] * 10 - net_params(cfg) / 1000, net_space,
        SearchConfig(n_trials=15, storage=":memory:", seed=0, progress=False, strategy=STRATEGY, study_name="nets"),
        costs=CostModel({"params": net_params}), constraints=[Constraint("params", max=6000)])
    assert all(sc.build(t.params).two_qubit_count <= 4 for t in circuit_study.trials)
    assert all(net_params(t.params) <= 6000 for t in net_study.trials)
    assert circuit_study.best_value > -3 and net_study.best_params["depth"] >= 2
