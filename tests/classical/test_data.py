"""Tests of tinyqml.classical.data: the digits split, scaling and seeded loaders."""

from __future__ import annotations

import pytest
import torch

from tinyqml.classical.data import DigitsConfig, load_digits_data, make_loader
from tinyqml.classical.errors import CompressionError


def test_split_sizes_scaling_and_dtypes():
    data = load_digits_data()
    sizes = [len(data.y_train), len(data.y_val), len(data.y_test)]
    assert sum(sizes) == 1797 and sizes[2] == 360
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape[1:]) == (1, 8, 8)
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert data.image_shape == (1, 8, 8) and data.n_classes == 10


def test_split_is_stratified_disjoint_and_seeded():
    a, b, c = load_digits_data(), load_digits_data(), load_digits_data(DigitsConfig(seed=1))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_test, c.y_test)
    counts = torch.bincount(a.y_test, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # 20% of ~180 per class
    flat = lambda x: {tuple(r.tolist()) for r in x.flatten(1)}  # noqa: E731
    # a few digits are exact duplicates in the raw data; nearly all test images are unseen
    assert len(flat(a.x_test) & flat(a.x_train)) <= 5


def test_no_validation_split():
    data = load_digits_data(DigitsConfig(val=0.0))
    assert len(data.y_val) == 0 and len(data.y_train) == 1797 - 360


def test_loader_order_follows_the_generator():
    data = load_digits_data()
    first = lambda seed: next(iter(make_loader(data.x_train, data.y_train, 32, torch.Generator().manual_seed(seed))))[1]  # noqa: E731
    assert torch.equal(first(0), first(0)) and not torch.equal(first(0), first(1))
    plain = make_loader(data.x_val, data.y_val, 100, shuffle=False)
    assert torch.equal(next(iter(plain))[1], data.y_val[:100])


@pytest.mark.parametrize("kwargs", [{"val": 1.5}, {"test": 0.0}, {"val": 0.5, "test": 0.5}, {"seed": "0"},
                                    {"val": True}])
def test_bad_config(kwargs):
    with pytest.raises(CompressionError):
        DigitsConfig(**kwargs)


def test_bad_loader_input():
    x, y = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(CompressionError, match="Generator"):
        make_loader(x, y, 2)
    with pytest.raises(CompressionError, match="batch_size"):
        make_loader(x, y, 0, torch.Generator())
    with pytest.raises(CompressionError, match="length"):
        make_loader(x, y[:3], 2, torch.Generator())
    with pytest.raises(CompressionError, match="DigitsConfig"):
        load_digits_data({"val": 0.1})


@pytest.mark.parametrize("seed", [-1, 2 ** 32, 2 ** 62])
def test_seed_outside_the_range_of_scikit_learn(seed):
    # scikit-learn's random_state takes 0 .. 2**32-1: refused here with the named error, not its traceback later
    with pytest.raises(CompressionError, match=r"DigitsConfig\.seed must be an int in 0\.\.4294967295"):
        DigitsConfig(seed=seed)


def test_largest_seed_loads():
    data = load_digits_data(DigitsConfig(seed=2 ** 32 - 1))
    assert len(data.y_test) == 360
