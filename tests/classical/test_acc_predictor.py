"""Tests of tinyqml.classical.acc_predictor: the MLP accuracy predictor over arch encodings."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import kendalltau, spearmanr

from tinyqml.classical.acc_predictor import (
    AccuracyPredictor,
    AccuracyPredictorConfig,
    RankCorrelation,
    rank_correlation,
    split_rank_correlation,
)
from tinyqml.classical.arch import NASError, SupernetConfig, encode, encoding_size, sample_arch

CFG = SupernetConfig()
SMALL = AccuracyPredictorConfig(hidden=(32,), epochs=40)


def _synthetic_target(seed: int = 123):
    """A fixed random linear function of the encoding plus 40 random pairwise interactions."""
    g = torch.Generator().manual_seed(seed)
    n = encoding_size(CFG)
    w = torch.randn(n, generator=g).tolist()
    pairs = torch.randint(n, (40, 2), generator=g).tolist()
    pw = torch.randn(40, generator=g).tolist()

    def target(arch):
        x = encode(arch, CFG)
        return sum(a * b for a, b in zip(x, w)) + sum(x[i] * x[j] * v for (i, j), v in zip(pairs, pw))

    return target


def _archs(n: int, seed: int = 7):
    g = torch.Generator().manual_seed(seed)
    return [sample_arch(CFG, g) for _ in range(n)]


def test_predictor_ranks_held_out_archs_of_a_synthetic_target():
    archs = _archs(400)
    target = _synthetic_target()
    split = split_rank_correlation(archs, [target(a) for a in archs], CFG, AccuracyPredictorConfig(epochs=100))
    assert (split.n_train, split.n_test) == (300, 100)
    assert split.test.spearman > 0.8 and split.test.kendall > 0.6
    assert split.train.spearman >= split.test.spearman
    fresh = _archs(100, seed=99)  # archs the split never saw
    assert split.predictor.rank_correlation(fresh, [target(a) for a in fresh]).spearman > 0.8


def test_an_untrained_predictor_does_not_rank_the_target():
    archs = _archs(100)
    pred = AccuracyPredictor(CFG, AccuracyPredictorConfig(epochs=1, lr=1e-6)).fit(archs[:2], [0.0, 1.0])
    rho = pred.rank_correlation(archs, [_synthetic_target()(a) for a in archs]).spearman
    assert abs(rho) < 0.5  # the held-out bound above is not met by chance


def test_fit_is_seeded_and_leaves_the_global_rng_alone():
    archs = _archs(60)
    accs = [_synthetic_target()(a) for a in archs]
    state = torch.random.get_rng_state()
    a = AccuracyPredictor(CFG, SMALL).fit(archs, accs).predict(archs)
    b = AccuracyPredictor(CFG, SMALL).fit(archs, accs).predict(archs)
    assert torch.equal(state, torch.random.get_rng_state())
    assert a == b
    other = AccuracyPredictorConfig(hidden=(32,), epochs=40, seed=1)
    assert AccuracyPredictor(CFG, other).fit(archs, accs).predict(archs) != a


def test_refit_starts_from_the_seeded_initialisation():
    archs = _archs(40)
    accs = [float(sum(x.depths)) for x in archs]
    pred = AccuracyPredictor(CFG, SMALL).fit(archs, [-v for v in accs]).fit(archs, accs)
    assert pred.predict(archs) == AccuracyPredictor(CFG, SMALL).fit(archs, accs).predict(archs)


def test_predictions_are_in_target_units_and_the_predictor_is_a_score():
    archs = _archs(80)
    accs = [0.7 + 0.02 * sum(x.depths) for x in archs]
    pred = AccuracyPredictor(CFG, AccuracyPredictorConfig(hidden=(32,), epochs=150)).fit(archs, accs)
    out = pred.predict(archs)
    assert max(abs(p - y) for p, y in zip(out, accs)) < 0.02
    assert pred(archs[0]) == out[0]
    assert pred.losses[-1] < pred.losses[0]


def test_save_and_load_round_trip(tmp_path):
    archs = _archs(50)
    accs = [float(x.resolution) for x in archs]
    pred = AccuracyPredictor(CFG, SMALL).fit(archs, accs)
    path = pred.save(tmp_path / "sub" / "pred.pt")
    loaded = AccuracyPredictor.load(path)
    assert loaded.config == SMALL and loaded.supernet == CFG and loaded.fitted
    assert loaded.predict(archs) == pred.predict(archs)
    restored = AccuracyPredictor(CFG, SMALL).load_state_dict(pred.state_dict())
    assert restored.predict(archs[:3]) == pred.predict(archs[:3])


def test_loading_checks_the_supernet_shape_and_file(tmp_path):
    pred = AccuracyPredictor(CFG, SMALL).fit(_archs(10), list(range(10)))
    other = SupernetConfig(resolutions=(12, 16))
    with pytest.raises(NASError, match="another supernet"):
        AccuracyPredictor(other, SMALL).load_state_dict(pred.state_dict())
    with pytest.raises(NASError, match="hidden"):
        AccuracyPredictor(CFG, AccuracyPredictorConfig(hidden=(8,))).load_state_dict(pred.state_dict())
    bad = tmp_path / "bad.pt"
    bad.write_text("not a predictor")
    with pytest.raises(NASError, match="cannot read"):
        AccuracyPredictor.load(bad)
    with pytest.raises(NASError, match="cannot read"):
        AccuracyPredictor.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("archs, accs, fragment", [
    (_archs(3), [0.1, 0.2], "pair up"),
    ([], [], "no architectures"),
    (_archs(3), [0.1, math.nan, 0.3], r"accuracies\[1\] is nan"),
    (_archs(3), [0.1, math.inf, 0.3], "finite"),
    (_archs(3), [0.1, "0.2", 0.3], "finite numbers"),
    (_archs(1), [0.1], "at least 2"),
])
def test_fit_rejects_bad_pairs(archs, accs, fragment):
    with pytest.raises(NASError, match=fragment):
        AccuracyPredictor(CFG, SMALL).fit(archs, accs)


def test_archs_of_another_supernet_are_named():
    two_stages = SupernetConfig(stages=((16, 2), (24, 2)))
    foreign = sample_arch(two_stages, torch.Generator().manual_seed(0))
    pred = AccuracyPredictor(CFG, SMALL)
    with pytest.raises(NASError, match=r"archs\[1\] is not an architecture of this supernet"):
        pred.fit([CFG.smallest(), foreign], [0.1, 0.2])
    with pytest.raises(NASError, match="single Arch"):
        pred.fit(CFG.smallest(), [0.1])


def test_predict_needs_a_fitted_predictor():
    with pytest.raises(NASError, match="not fitted"):
        AccuracyPredictor(CFG, SMALL).predict([CFG.smallest()])


@pytest.mark.parametrize("kwargs, fragment", [
    ({"hidden": (0,)}, "hidden"), ({"epochs": 0}, "epochs"), ({"lr": 0.0}, "lr"), ({"lr": math.nan}, "lr"),
    ({"weight_decay": -1.0}, "weight_decay"), ({"batch_size": 0}, "batch_size"), ({"seed": 1.5}, "seed"),
])
def test_config_is_checked(kwargs, fragment):
    with pytest.raises(NASError, match=fragment):
        AccuracyPredictorConfig(**kwargs)


def test_config_is_frozen_and_a_linear_model_is_accepted():
    cfg = AccuracyPredictorConfig(hidden=[])
    assert cfg.hidden == ()
    with pytest.raises(AttributeError):
        cfg.epochs = 3  # type: ignore[misc]
    with pytest.raises(NASError, match="SupernetConfig"):
        AccuracyPredictor("cfg")  # type: ignore[arg-type]


def test_rank_correlation_matches_scipy_with_ties():
    p, m = [1, 2, 2, 4, 5, 3], [10, 30, 20, 40, 40, 5]
    r = rank_correlation(p, m)
    assert isinstance(r, RankCorrelation) and r.n == 6
    assert r.spearman == pytest.approx(spearmanr(p, m).statistic)
    assert r.kendall == pytest.approx(kendalltau(p, m).statistic)
    assert rank_correlation([1, 2, 3], [3, 2, 1]).spearman == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 3], [1, 5, 9]).kendall == pytest.approx(1.0)


@pytest.mark.parametrize("p, m, fragment", [
    ([1.0], [1.0], "at least 2"), ([1, 1, 1], [1, 2, 3], "constant"), ([1, 2], [1, 2, 3], "pair up"),
    ([1, math.nan], [1, 2], "finite"),
])
def test_rank_correlation_rejects_bad_input(p, m, fragment):
    with pytest.raises(NASError, match=fragment):
        rank_correlation(p, m)


def test_split_checks_its_fraction_and_size():
    archs = _archs(10)
    with pytest.raises(NASError, match="test_fraction"):
        split_rank_correlation(archs, list(range(10)), CFG, SMALL, test_fraction=1.0)
    with pytest.raises(NASError, match="fewer than 2"):
        split_rank_correlation(archs[:4], list(range(4)), CFG, SMALL, test_fraction=0.1)
