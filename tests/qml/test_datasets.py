"""Tests of tinyqml.qml.datasets (scikit-learn digits, pooled and angle-scaled)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tinyqml.qml.datasets import DigitsSplit, digits4, pool_images, to_angles
from tinyqml.qml.errors import ShapeError, TinyQMLError


@pytest.fixture(scope="module")
def split() -> DigitsSplit:
    return digits4()


def test_shapes_and_dtypes(split: DigitsSplit) -> None:
    assert split.x_train.shape == (504, 16) and split.x_test.shape == (216, 16)
    assert split.y_train.shape == (504,) and split.y_test.shape == (216,)
    assert split.x_train.dtype == torch.float64 and split.y_train.dtype == torch.int64
    assert split.n_features == 16 and split.n_classes == 4 and split.classes == (0, 1, 2, 3)


def test_features_are_angles_in_0_pi(split: DigitsSplit) -> None:
    for x in (split.x_train, split.x_test):
        assert float(x.min()) >= 0.0 and float(x.max()) <= math.pi
    assert float(split.x_train.max()) == pytest.approx(math.pi)  # some 2x2 block is fully inked


def test_classes_balanced_and_stratified(split: DigitsSplit) -> None:
    train, test = split.y_train.bincount(), split.y_test.bincount()
    assert train.tolist() == [125, 127, 124, 128] and test.tolist() == [53, 55, 53, 55]
    total = train + test
    share = test.double() / total.double()
    assert torch.allclose(share, torch.full_like(share, 0.3), atol=0.01)


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    a, b, c = digits4(seed=5), digits4(seed=5), digits4(seed=6)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.x_test, c.x_test)


def test_features_match_manual_pooling() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    image = bunch.images[bunch.target == 0][0]
    expected = image.reshape(4, 2, 4, 2).mean(axis=(1, 3)).reshape(16) / 16 * np.pi
    split = digits4(classes=(0, 1), test_size=0.5, seed=0)
    rows = torch.cat([split.x_train, split.x_test]).numpy()
    assert np.isclose(rows, expected, atol=1e-12).all(axis=1).any()


def test_labels_follow_class_order() -> None:
    split = digits4(classes=(7, 3), seed=0)
    assert split.classes == (7, 3) and sorted(split.y_train.unique().tolist()) == [0, 1]
    assert len(split.y_train) + len(split.y_test) == 179 + 183  # 7s and 3s in load_digits


@pytest.mark.parametrize("pool, n_features", [(1, 64), (2, 16), (4, 4), (8, 1)])
def test_pool_sizes(pool: int, n_features: int) -> None:
    assert digits4(pool=pool).n_features == n_features


def test_pool_images_and_to_angles() -> None:
    img = np.arange(16.0).reshape(1, 4, 4)
    assert pool_images(img, 2).tolist() == [[2.5, 4.5, 10.5, 12.5]]
    assert to_angles(np.array([-1.0, 0.0, 16.0, 20.0])).tolist() == [0.0, 0.0, math.pi, math.pi]


@pytest.mark.parametrize("kwargs", [
    {"classes": (1,)}, {"classes": (1, 1)}, {"classes": (0, 10)}, {"pool": 3}, {"pool": 0},
    {"test_size": 0.0}, {"test_size": 1.0},
])
def test_bad_arguments_raise_named_errors(kwargs: dict) -> None:
    with pytest.raises(ShapeError):
        digits4(**kwargs)
    with pytest.raises(TinyQMLError):
        digits4(**kwargs)


def test_split_is_frozen(split: DigitsSplit) -> None:
    with pytest.raises(AttributeError):
        split.x_train = torch.zeros(1)  # type: ignore[misc]
