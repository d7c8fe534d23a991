"""Tests of tinyqml.noise.quantumnas: SuperCircuit training, the sub-circuit + mapping co-search
(distinct qubits, inherited weights, resumable), pruning with fine-tuning, the baseline ansatz."""

from __future__ import annotations

import copy
import math

import optuna
import pytest
import torch

import tinyqml.qml as tq
from tinyqml.noise import NoiseModel
from tinyqml.noise.quantumnas import (
    CoSearch,
    PruneConfig,
    QuantumNASError,
    SearchSettings,
    SuperTrainConfig,
    TrainConfig,
    accuracy,
    aer_accuracy,
    clean_validator,
    co_search_space,
    distinct_mapping,
    fit,
    hea_with_budget,
    map_circuit,
    mapped_costs,
    mapping_of,
    noisy_accuracy,
    noisy_expectations,
    noisy_validator,
    phase_free,
    prune_gates,
    scratch_layer,
    sub_config,
    train_supercircuit,
)
from tinyqml.qml.supercircuit import SuperCircuit, SuperCircuitConfig, SuperLayer
from tinyqml.search import Constraint, Evolution, EvolutionConfig, RandomSearch, UnknownConstraintError

pytest.importorskip("qiskit_aer")
fake_provider = pytest.importorskip("qiskit_ibm_runtime.fake_provider")

optuna.logging.set_verbosity(optuna.logging.WARNING)

N_WIRES, N_BLOCKS = 4, 2
SMALL = Evolution(EvolutionConfig(population=3, parents=2))


def _encoder() -> tq.Circuit:
    return tq.encoders.angle(N_WIRES, "Y")


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, N_WIRES, generator=g, dtype=torch.float64) * math.pi
    y = x.argmax(dim=1)  # the largest angle's wire: learnable from <Z_i>
    return x, y


@pytest.fixture(scope="module")
def backend():
    return fake_provider.FakeQuitoV2()


@pytest.fixture(scope="module")
def noise_model(backend):
    return NoiseModel.from_backend(backend)


@pytest.fixture(scope="module")
def trained():
    sc = SuperCircuit(SuperCircuitConfig(n_wires=N_WIRES, n_blocks=N_BLOCKS))
    layer = SuperLayer(_encoder(), sc, [tq.Z(i) for i in range(N_WIRES)], seed=0)
    x, y = _data(48, 0)
    train_supercircuit(layer, x, y, SuperTrainConfig(epochs=2, batch_size=16, seed=0))
    return layer


def _search(trained, backend, noise_model, **kw) -> CoSearch:
    xv, yv = _data(24, 1)
    settings = dict(n_trials=5, strategy=SMALL, seed=0, storage=":memory:")
    settings.update(kw.pop("settings", {}))
    return CoSearch(trained, backend, noise_model, xv, yv, N_WIRES, SearchSettings(**settings), **kw)


# ---------------------------------------------------------------------------- the space


def test_space_is_the_supercircuit_choices_plus_one_qubit_per_logical_qubit():
    sc = SuperCircuit(SuperCircuitConfig(n_wires=3, n_blocks=2))
    space = co_search_space(sc, n_physical=5)
    assert space.names[: len(sc.space.names)] == sc.space.names
    assert space.names[len(sc.space.names):] == ("q[0]", "q[1]", "q[2]")
    assert space["q[1]"].values == (0, 1, 2, 3, 4)
    cfg = {**sc.largest(), "q[0]": 4, "q[1]": 0, "q[2]": 2}
    assert mapping_of(sc, cfg) == (4, 0, 2) and sub_config(sc, cfg) == sc.largest()
    ok = distinct_mapping(sc)
    assert ok(cfg) and not ok({**cfg, "q[2]": 4})
    with pytest.raises(QuantumNASError, match="at least as many"):
        co_search_space(sc, n_physical=2)


def test_search_proposes_only_distinct_mappings(trained, backend, noise_model):
    for strategy, n in ((SMALL, 6), (RandomSearch(), 3)):
        search = _search(trained, backend, noise_model, settings={"n_trials": n, "strategy": strategy})
        result = search.run()
        done = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert len(done) == n
        for t in done:
            m = mapping_of(trained.supercircuit, t.params)
            assert len(set(m)) == N_WIRES and t.user_attrs["mapping"] == list(m)
        assert len(set(result.mapping)) == N_WIRES
        assert result.score == max(t.values[0] for t in done)
        keys = [search._key(t.params) for t in done]
        assert len(set(keys)) == len(keys)   # novel: no circuit + mapping scored twice


def test_scores_use_the_inherited_weights(trained, backend, noise_model):
    search = _search(trained, backend, noise_model)
    sc = trained.supercircuit
    cfg = {**sc.largest(), "blocks": 2, "u3[1]": 2, "cu3[0]": 3, "cu3[1]": 1, "q[0]": 3, "q[1]": 1, "q[2]": 0,
           "q[3]": 2}
    child = trained.inherit(sub_config(sc, cfg))
    direct = map_circuit(child.circuit, backend, mapping_of(sc, cfg), seed=0)
    z_direct = noisy_expectations(direct, child.weights, search.x_val, noise_model, N_WIRES)
    z_search = noisy_expectations(search.candidate(cfg), trained.weights, search.x_val, noise_model, N_WIRES)
    assert torch.allclose(z_direct, z_search, atol=1e-10)
    assert search.score(cfg) == noisy_accuracy(direct, child.weights, search.x_val, search.y_val, noise_model,
                                               N_WIRES)
    assert search.candidate(cfg).layout.initial == (3, 1, 0, 2)
    # noise matters: the noisy outputs are not the noiseless ones
    with torch.no_grad():
        clean = child(search.x_val)
    assert not torch.allclose(clean, z_direct, atol=1e-3)
    with pytest.raises(QuantumNASError, match="repeats a qubit"):
        search.score({**cfg, "q[1]": 3})


def test_study_is_resumable(trained, backend, noise_model, tmp_path):
    storage = f"sqlite:///{tmp_path / 'nas.db'}"
    first = _search(trained, backend, noise_model, settings={"n_trials": 3, "storage": storage}).run()
    before = [t.params for t in first.study.trials]
    again = _search(trained, backend, noise_model, settings={"n_trials": 5, "storage": storage}).run()
    assert again.n_trials == 5
    assert [t.params for t in again.study.trials[:3]] == before
    same = _search(trained, backend, noise_model, settings={"n_trials": 5, "storage": storage}).run()
    assert same.n_trials == 5 and same.config == again.config
    search = _search(trained, backend, noise_model, settings={"n_trials": 7, "storage": storage})
    keys = [search._key(t.params) for t in search.run().study.trials]
    assert len(set(keys)) == len(keys) == 7   # the continued study knows what was scored before


def test_constraints_and_costs_are_recorded_and_respected(trained, backend, noise_model):
    limit = Constraint("two_qubit", max=12)
    search = _search(trained, backend, noise_model, constraints=[limit], settings={"n_trials": 4})
    result = search.run()
    for t in result.study.trials:
        costs = t.user_attrs["costs"]
        assert set(costs) == {"depth", "esp", "gates", "params", "two_qubit"}
        assert costs["two_qubit"] <= 12 and 0 < costs["esp"] < 1
    assert result.costs["two_qubit"] <= 12
    with pytest.raises(UnknownConstraintError, match="two_qubit"):
        _search(trained, backend, noise_model, constraints=[Constraint("two_qbit", max=3)])


def test_two_objectives_keep_the_most_accurate_winner(trained, backend, noise_model):
    result = _search(trained, backend, noise_model, settings={"n_trials": 4, "secondary": "gates"}).run()
    assert len(result.study.directions) == 2
    done = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert all(t.values[1] == t.user_attrs["costs"]["gates"] for t in done)
    assert result.score == max(t.values[0] for t in done)


# ---------------------------------------------------------------------------- mapping


def test_phase_free_is_exact_up_to_a_global_phase():
    c = (tq.CircuitBuilder(3).ry(0, tq.feature(0)).ry(2, tq.feature(1))
         .u(0, tq.weight(0), tq.weight(1), tq.weight(2)).cu(0, 2, tq.weight(3), tq.weight(4), tq.weight(5))
         .cu(2, 1, tq.weight(6, scale=2.0), tq.weight(6), tq.weight(7, offset=0.3)).p(1, tq.weight(8)).build())
    g = torch.Generator().manual_seed(3)
    w = torch.rand(9, generator=g, dtype=torch.float64) * 2 * math.pi
    x = torch.rand(5, 2, generator=g, dtype=torch.float64) * math.pi
    a, b = tq.statevector(c, w, x), tq.statevector(phase_free(c), w, x)
    assert torch.allclose((a.conj() * b).sum(1).abs(), torch.ones(5, dtype=torch.float64), atol=1e-12)
    assert phase_free(c).gate_counts.get("CX") == 4 and "CU" not in phase_free(c).gate_counts


def test_mapping_is_respected_and_keeps_the_state(backend):
    sc = SuperCircuit(SuperCircuitConfig(n_wires=N_WIRES, n_blocks=3))
    c = _encoder() + sc.build(sc.largest())
    m = map_circuit(c, backend, (0, 1, 3, 4), seed=0)
    assert m.layout.initial == (0, 1, 3, 4) and m.physical.n_wires == 5
    w = torch.rand(c.n_weights, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.rand(3, N_WIRES, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(tq.probs(m.physical, w, x, wires=m.layout.final), tq.probs(c, w, x), atol=1e-10)
    # two CX per CU3 when no routing is needed: the chain 0-1-3-4 carries the CU3s (0,1), (1,2), (2,3)
    chain = sc.build({**sc.largest(), "blocks": 1, "cu3[0]": 3})
    assert map_circuit(chain, backend, (0, 1, 3, 4)).two_qubit == 6
    with pytest.raises(QuantumNASError, match="distinct physical qubits"):
        map_circuit(c, backend, (0, 1, 1, 4))
    costs = mapped_costs().evaluate(m)
    assert costs["params"] == c.n_weights and costs["gates"] == m.gates and "esp" not in costs


# ---------------------------------------------------------------------------- training


def test_supercircuit_training_is_seeded_and_restricted():
    sc = SuperCircuit(SuperCircuitConfig(n_wires=3, n_blocks=2))
    x, y = _data(20, 2)
    x, y = x[:, :3], x[:, :3].argmax(1)
    runs = []
    for _ in range(2):
        layer = SuperLayer(tq.encoders.angle(3, "Y"), sc, [tq.Z(i) for i in range(3)], seed=1)
        cfgs = train_supercircuit(layer, x, y, SuperTrainConfig(epochs=2, batch_size=5, warmup_epochs=1,
                                                                restrict=1, seed=4))
        runs.append((layer.weights.detach().clone(), cfgs))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    cfgs = runs[0][1]
    assert len(cfgs) == 3 * 4 and all(c == sc.largest() for c in cfgs[:4])
    for a, b in zip(cfgs[3:], cfgs[4:]):
        assert sum(a[k] != b[k] for k in a) <= 1


def test_fit_reduces_the_loss_and_scratch_layers_are_fresh(trained):
    cfg = {**trained.supercircuit.largest(), "blocks": 1, "q[0]": 0, "q[1]": 1, "q[2]": 2, "q[3]": 3}
    layer = scratch_layer(trained, cfg, seed=5)
    assert layer.circuit == trained.inherit(sub_config(trained.supercircuit, cfg)).circuit
    assert not torch.allclose(layer.weights, trained.inherit(sub_config(trained.supercircuit, cfg)).weights)
    x, y = _data(32, 3)
    losses = fit(layer, x, y, TrainConfig(epochs=4, batch_size=8, lr=0.1, seed=0))
    assert len(losses) == 4 and losses[-1] < losses[0]


# ---------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("schedule, importance", [("agp", "identity"), ("iterative", "magnitude")])
def test_pruning_removes_gates_and_squash_keeps_the_outputs(schedule, importance):
    c = _encoder() + tq.templates.u3cu3(N_WIRES, 1)
    layer = tq.QuantumLayer(c, [tq.Z(i) for i in range(N_WIRES)], seed=2)
    x, y = _data(32, 4)
    cfg = PruneConfig(sparsity=0.5, schedule=schedule, importance=importance, stages=2, prune_epochs=2,
                      settle_epochs=1, batch_size=8, seed=0)
    result = prune_gates(layer, x, y, cfg)
    assert result.sparsity == pytest.approx(0.5)
    assert result.sparsities[-1] == pytest.approx(0.5) and result.sparsities == sorted(result.sparsities)
    assert result.gates_before == len(c.ops) and result.gates_after == len(c.ops) - 4
    assert result.layer.circuit.n_weights == c.n_weights // 2
    with torch.no_grad():
        assert torch.allclose(result.layer(x), layer(x), atol=1e-10)   # layer: masks baked in
    assert type(layer.weights).__name__ == "Parameter"


def test_pruning_keeps_the_sparsest_state_within_max_drop():
    c = _encoder() + tq.templates.u3cu3(N_WIRES, 1)
    layer = tq.QuantumLayer(c, [tq.Z(i) for i in range(N_WIRES)], seed=2)
    x, y = _data(16, 7)

    def validate(m):  # one point lost per pruned gate
        w = m.weights.detach().view(-1, 3)
        return 1.0 - 0.1 * int((w == 0).all(dim=1).sum())

    cfg = PruneConfig(sparsity=0.5, prune_epochs=8, settle_epochs=0, max_drop=0.15, batch_size=8)
    result = prune_gates(layer, x, y, cfg, validate)
    assert result.val_before == 1.0 and len(result.val_accuracies) == cfg.epochs
    assert result.sparsities[result.kept_epoch] == result.sparsity == pytest.approx(1 / 8)
    assert result.gates_after == len(c.ops) - 1
    assert max(result.sparsities) == pytest.approx(0.5)
    with pytest.raises(QuantumNASError, match="validate"):
        prune_gates(layer, x, y, cfg)
    x_val, y_val = _data(8, 8)
    clean = clean_validator(x_val, y_val)
    with torch.no_grad():
        assert clean(result.layer) == accuracy(result.layer(x_val), y_val)


def test_noisy_validator_scores_the_squashed_mapped_circuit(backend, noise_model):
    c = _encoder() + tq.templates.u3cu3(N_WIRES, 1)
    layer = tq.QuantumLayer(c, [tq.Z(i) for i in range(N_WIRES)], seed=2)
    with torch.no_grad():
        layer.weights[:3] = 0.0   # the first U3 is the identity
    x_val, y_val = _data(10, 9)
    score = noisy_validator(backend, noise_model, (0, 1, 3, 4), x_val, y_val, N_WIRES)(layer)
    small = tq.Circuit(N_WIRES, c.ops[:N_WIRES] + c.ops[N_WIRES + 1:])
    from tinyqml.qml.prune import compact_weights
    dense, w = compact_weights(small, layer.weights.detach())
    assert score == noisy_accuracy(map_circuit(dense, backend, (0, 1, 3, 4)), w, x_val, y_val, noise_model, N_WIRES)


def test_pruned_circuits_are_smaller_on_the_device(backend):
    c = _encoder() + tq.templates.u3cu3(N_WIRES, 1)
    layer = tq.QuantumLayer(c, [tq.Z(i) for i in range(N_WIRES)], seed=2)
    x, y = _data(16, 5)
    pruned = prune_gates(copy.deepcopy(layer), x, y, PruneConfig(sparsity=0.5, prune_epochs=1, settle_epochs=0))
    big = map_circuit(layer.circuit, backend, (0, 1, 3, 4))
    small = map_circuit(pruned.layer.circuit, backend, (0, 1, 3, 4))
    assert small.gates < big.gates and small.params < big.params


# ---------------------------------------------------------------------------- baseline and evaluation


def test_hea_with_budget_has_exactly_the_budget():
    for n in (1, 7, 8, 20, 45):
        c = hea_with_budget(4, n)
        assert c.n_weights == n
    assert hea_with_budget(4, 8, entangler="linear").gate_counts == {"RY": 4, "RZ": 4, "CX": 3}
    with pytest.raises(QuantumNASError, match="n_params"):
        hea_with_budget(4, 0)


def test_aer_accuracy_agrees_with_the_exact_noisy_accuracy(trained, backend, noise_model):
    cfg = {**trained.supercircuit.largest(), "blocks": 1, "cu3[0]": 1}
    child = trained.inherit(cfg)
    m = map_circuit(child.circuit, backend, (0, 1, 3, 4))
    x, y = _data(12, 6)
    z = noisy_expectations(m, child.weights, x, noise_model, N_WIRES)
    exact = accuracy(z, y)
    shots = aer_accuracy(m, child.weights, x, y, noise_model, N_WIRES, shots=4096, seed=0)
    margin = (z.sort(dim=1).values[:, -1] - z.sort(dim=1).values[:, -2]).min()
    if margin > 0.1:  # no row close to a tie: shot noise cannot flip a prediction
        assert shots == exact
    assert abs(shots - exact) <= 0.25


def test_bad_settings_raise_named_errors():
    with pytest.raises(QuantumNASError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(QuantumNASError, match="restrict"):
        SuperTrainConfig(restrict=0)
    with pytest.raises(QuantumNASError, match="sparsity"):
        PruneConfig(sparsity=1.0)
    with pytest.raises(QuantumNASError, match="schedule"):
        PruneConfig(schedule="cubic")
    with pytest.raises(QuantumNASError, match="importance"):
        PruneConfig(importance="taylor")
    with pytest.raises(QuantumNASError, match="max_drop"):
        PruneConfig(max_drop=-0.1)
    with pytest.raises(QuantumNASError, match="secondary"):
        SearchSettings(secondary="latency")
    with pytest.raises(QuantumNASError, match="optimization_level"):
        SearchSettings(optimization_level=3)
    with pytest.raises(QuantumNASError, match="Strategy"):
        SearchSettings(strategy="evolution")  # type: ignore[arg-type]
    with pytest.raises(QuantumNASError, match="accuracy needs"):
        accuracy(torch.zeros(3), torch.zeros(3))
