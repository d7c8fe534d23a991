"""Tests of tinyqml.classical.pruning: exact sparsity counts, scopes, per-layer dicts, schedules,
masks through fine-tuning, 2:4, sensitivity scans, reports, plots and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tinyqml.classical.data import load_digits_data
from tinyqml.classical.errors import LayerNotFoundError
from tinyqml.classical.models import SmallCNN, SmallCNNConfig
from tinyqml.classical.pruning import (
    FineGrainedConfig,
    FineGrainedPruner,
    baked_copy,
    safe_squash,
    NMPattern,
    layer_sensitivity,
    plot_sensitivity,
    plot_sparsity,
    prunable_layers,
    satisfies_nm,
    sparsity_report,
    weight_targets,
)
from tinyqml.classical.train import TrainConfig, evaluate, train
from tinyqml.search import AGP, Iterative, PruningError, has_mask
from tinyqml.search.masks import original

TINY = SmallCNNConfig(widths=(4, 8, 8))
NAMES = ["features.0", "features.3", "features.7", "head.1"]


def _net(seed=0):
    return SmallCNN(TINY, seed=seed)


def _zeros(m: nn.Module) -> int:
    return int((m.weight == 0).sum())


def test_prunable_layers_are_named_as_in_named_modules():
    net = _net()
    assert list(prunable_layers(net)) == NAMES
    assert [t.label for t in weight_targets(net, exclude=("features.0",))] == NAMES[1:]


def test_global_scope_exact_count_and_smallest_weights():
    net = _net()
    w = torch.cat([m.weight.detach().abs().flatten() for m in prunable_layers(net).values()])
    FineGrainedPruner(net, FineGrainedConfig(sparsity=0.8, scope="global")).apply()
    rep = sparsity_report(net)
    assert rep.total == w.numel() and rep.zeros == math.floor(0.8 * w.numel() + 0.5)
    kept = torch.cat([m.weight.detach().abs().flatten() for m in prunable_layers(net).values()])
    assert float(w[kept == 0].max()) <= float(w[kept != 0].min())


def test_local_scope_prunes_every_layer_to_the_same_sparsity():
    net = _net()
    FineGrainedPruner(net, FineGrainedConfig(sparsity=0.6, scope="local")).apply()
    for row in sparsity_report(net).layers:
        assert row.zeros == math.floor(0.6 * row.total + 0.5)


def test_per_layer_dict():
    net = _net()
    pruner = FineGrainedPruner(net, FineGrainedConfig(sparsity={"features.3": 0.5, "head.1": 0.9}))
    pruner.apply()
    by = {r.name: r for r in sparsity_report(net).layers}
    assert by["features.3"].zeros == 144 and by["head.1"].zeros == math.floor(0.9 * 1280 + 0.5)
    assert by["features.0"].zeros == 0 and not has_mask(net.features[0], "weight")
    assert pruner.sparsity() == pytest.approx((144 + 1152) / (288 + 1280))


def test_schedule_paces_every_layer_to_its_target():
    net = _net()
    sched = Iterative(0.8, stages=4, stage_length=10)
    pruner = FineGrainedPruner(net, FineGrainedConfig(sparsity={"features.3": 0.4, "features.7": 0.8}), sched)
    assert pruner.step(0) == pytest.approx(0.25)
    assert _zeros(net.features[3]) == math.floor(0.1 * 288 + 0.5)
    assert _zeros(net.features[7]) == math.floor(0.2 * 576 + 0.5)
    pruner.step(35)
    assert _zeros(net.features[3]) == math.floor(0.4 * 288 + 0.5)
    assert _zeros(net.features[7]) == math.floor(0.8 * 576 + 0.5)


def test_agp_during_fine_tuning_keeps_masks_and_reaches_the_target():
    data = load_digits_data()
    net = _net()
    train(net, data, TrainConfig(epochs=3, lr=0.01, batch_size=64))
    dense = evaluate(net, data.x_test, data.y_test)
    steps = 4 * math.ceil(len(data.y_train) / 64)
    pruner = FineGrainedPruner(net, FineGrainedConfig(sparsity=0.7), AGP(0.7, start=0, end=steps // 2, frequency=5))
    pruner.step(0)
    seen = []

    def hook(step):
        pruner.on_step(step)
        seen.append(sparsity_report(net).sparsity)

    train(net, data, TrainConfig(epochs=4, lr=0.005, batch_size=64), on_step=hook)
    assert all(b >= a for a, b in zip(seen, seen[1:]))  # never revived
    assert seen[-1] == pytest.approx(0.7, abs=1e-3)
    for t in pruner.targets:  # the optimizer saw the originals; they are zero where masked
        assert bool((original(t.module, "weight")[t.mask.mask == 0] == 0).all())
    assert evaluate(net, data.x_test, data.y_test) > dense - 15
    pruner.squash()
    assert not any(has_mask(m, "weight") for m in prunable_layers(net).values())
    assert sparsity_report(net).sparsity == pytest.approx(0.7, abs=1e-3)


def test_two_to_four_pattern_in_every_group():
    net = _net()
    pruner = FineGrainedPruner(net, FineGrainedConfig(sparsity=0.5, pattern=NMPattern(2, 4),
                                                      exclude=("features.0",)))
    pruner.apply()
    for name in NAMES[1:]:
        w = net.get_submodule(name).weight
        groups = w.movedim(1, -1).reshape(-1, 4)
        assert bool(((groups != 0).sum(1) == 2).all()), name
        assert satisfies_nm(w)
    assert pruner.sparsity() == 0.5
    with pytest.raises(PruningError, match="not a multiple of 4"):  # features.0 has one input channel
        FineGrainedPruner(_net(), FineGrainedConfig(sparsity=0.5, pattern=NMPattern(2, 4)))


def test_layer_sensitivity_leaves_the_model_unchanged(tmp_path):
    net = _net().eval()
    x = torch.rand(16, 1, 8, 8)
    ref = net(x).detach()
    calls = []

    def score():
        calls.append(1)
        with torch.no_grad():
            return float((net(x) - ref).abs().mean())

    scan = layer_sensitivity(net, score, [0.0, 0.5, 0.9], layers=["features.3", "head.1"])
    assert list(scan) == ["features.3", "head.1"] and len(calls) == 6
    assert scan["features.3"][0] == (0.0, 0.0) and scan["features.3"][2][1] > scan["features.3"][1][1] > 0
    assert not any(has_mask(m, "weight") for m in prunable_layers(net).values())
    assert torch.equal(net(x), ref)
    path = plot_sensitivity(scan, tmp_path / "sens.png", ylabel="output change")
    assert path.stat().st_size > 0


def test_sensitivity_keeps_existing_masks():
    net = _net()
    pruner = FineGrainedPruner(net, FineGrainedConfig(sparsity={"features.3": 0.5}))
    pruner.apply()
    layer_sensitivity(net, lambda: 0.0, [0.9], layers=["features.3", "features.7"])
    assert has_mask(net.features[3], "weight") and _zeros(net.features[3]) == 144
    assert not has_mask(net.features[7], "weight")


def test_report_table_and_plot(tmp_path):
    net = _net()
    FineGrainedPruner(net, FineGrainedConfig(sparsity=0.5, scope="local")).apply()
    rep = sparsity_report(net)
    table = rep.table()
    assert "| features.3 | Conv2d | 288 | 144 | 0.500 |" in table and table.splitlines()[-1].startswith("| all")
    assert plot_sparsity(rep, tmp_path / "s.png").stat().st_size > 0


def test_unknown_layer_names_list_the_valid_ones():
    with pytest.raises(LayerNotFoundError, match=r"'features\.9'.*features\.0.*head\.1"):
        FineGrainedPruner(_net(), FineGrainedConfig(sparsity={"features.9": 0.5}))
    with pytest.raises(LayerNotFoundError, match="features.1"):  # a BatchNorm is not prunable
        weight_targets(_net(), ["features.1"])
    with pytest.raises(LayerNotFoundError):
        layer_sensitivity(_net(), lambda: 0.0, [0.5], layers=["nope"])


@pytest.mark.parametrize("kwargs", [{"sparsity": 1.0}, {"sparsity": -0.1}, {"sparsity": {"head.1": 1.2}},
                                    {"sparsity": {}}, {"scope": "layer"}, {"pattern": (2, 4)},
                                    {"sparsity": 0.6, "pattern": NMPattern(2, 4)},
                                    {"sparsity": {"head.1": 0.5}, "layers": ("head.1",)}])
def test_bad_config(kwargs):
    with pytest.raises(PruningError):
        FineGrainedConfig(**kwargs)


def test_bad_pruner_input():
    with pytest.raises(PruningError, match="FineGrainedConfig"):
        FineGrainedPruner(_net(), {"sparsity": 0.5})
    with pytest.raises(PruningError, match="Schedule"):
        FineGrainedPruner(_net(), FineGrainedConfig(), schedule=lambda t: 0.5)
    with pytest.raises(PruningError, match="fraction"):
        FineGrainedPruner(_net(), FineGrainedConfig()).prune_to(1.5)
    with pytest.raises(PruningError, match="nn.Module"):
        prunable_layers("net")
    with pytest.raises(PruningError, match="no layer left"):
        weight_targets(_net(), exclude=tuple(NAMES))
    with pytest.raises(PruningError, match="sparsity"):
        layer_sensitivity(_net(), lambda: 0.0, [1.0])
    with pytest.raises(PruningError, match="SparsityReport"):
        plot_sparsity(_net(), "x.png")
    with pytest.raises(PruningError, match="non-empty"):
        plot_sensitivity({}, "x.png")


def test_baked_copy_leaves_the_original_masked():
    net = _net()
    pruner = FineGrainedPruner(net, FineGrainedConfig(sparsity=0.5))
    pruner.apply()
    x = torch.rand(2, 1, 8, 8)
    ref = net.eval()(x)
    copy_ = baked_copy(net)
    assert not any(has_mask(m, "weight") for m in prunable_layers(copy_).values())
    assert all(has_mask(m, "weight") for m in prunable_layers(net).values())
    assert torch.equal(copy_(x), ref) and torch.equal(net(x), ref)
    assert sparsity_report(copy_).zeros == sparsity_report(net).zeros


def test_squash_leaves_earlier_deep_copies_working():
    import copy

    net = _net()
    pruner = FineGrainedPruner(net, FineGrainedConfig(sparsity=0.5))
    pruner.apply()
    twin = copy.deepcopy(net)
    pruner.squash()
    x = torch.rand(2, 1, 8, 8)
    assert all(has_mask(m, "weight") for m in prunable_layers(twin).values())
    assert torch.equal(twin.eval()(x), net.eval()(x))
    safe_squash(twin)
    assert not has_mask(twin.features[0], "weight")
