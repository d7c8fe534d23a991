"""Small, deterministic data sets for quantum-classifier demos.

:func:`digits4` turns scikit-learn's bundled 8×8 handwritten digits (no download)
into a few-class problem with 16 features, the size a 4-qubit circuit can encode
with four rotation layers:

1. keep the requested classes (default digits 0, 1, 2, 3);
2. average-pool the 8×8 image in ``pool × pool`` blocks (``pool=2`` gives 4×4 = 16
   features, read row by row);
3. map pixel intensities to rotation angles: the raw values lie in ``[0, 16]``,
   so ``angle = value / 16 * π`` puts every feature in ``[0, π]``. The map is fixed
   (it does not look at the data), so train and test are scaled identically and
   nothing leaks from the test set;
4. split into train and test, stratified by class, with a fixed seed.

>>> from tinyqml.qml.datasets import digits4
>>> data = digits4()
>>> tuple(data.x_train.shape), tuple(data.x_test.shape)
((504, 16), (216, 16))
>>> data.classes, data.n_features
((0, 1, 2, 3), 16)
>>> bool(data.x_train.min() >= 0) and bool(data.x_train.max() <= 3.1416)
True
>>> data.y_train.unique().tolist()  # labels are 0..len(classes)-1
[0, 1, 2, 3]
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tinyqml.qml.errors import ShapeError

logger = logging.getLogger(__name__)

#: side length of scikit-learn's digit images
DIGIT_SIDE = 8
#: largest pixel value in scikit-learn's digits
DIGIT_MAX = 16.0

__all__ = ["DigitsSplit", "digits4", "pool_images", "to_angles", "DIGIT_SIDE", "DIGIT_MAX"]


@dataclass(frozen=True)
class DigitsSplit:
    """A stratified train/test split of pooled digit images.

    ``x_*`` are float64 angles ``[N, n_features]`` in ``[0, π]``; ``y_*`` are int64
    labels ``0 .. len(classes) - 1`` where label ``k`` stands for digit ``classes[k]``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[int, ...]

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def _check_classes(classes: Sequence[int]) -> tuple[int, ...]:
    cls = tuple(int(c) for c in classes)
    if len(cls) < 2:
        raise ShapeError(f"digits4 needs at least two classes, got {cls}")
    if len(set(cls)) != len(cls) or any(c < 0 or c > 9 for c in cls):
        raise ShapeError(f"classes must be distinct digits 0..9, got {cls}")
    return cls


def pool_images(images: np.ndarray, pool: int) -> np.ndarray:
    """Average-pool square images ``[N, S, S]`` in ``pool × pool`` blocks → ``[N, (S/pool)**2]``.

    >>> import numpy as np
    >>> pool_images(np.arange(16.0).reshape(1, 4, 4), 2)
    array([[ 2.5,  4.5, 10.5, 12.5]])
    """
    n, side, side2 = images.shape
    if side != side2:
        raise ShapeError(f"pool_images needs square images, got {side}x{side2}")
    if pool < 1 or side % pool:
        raise ShapeError(f"pool must be a positive divisor of {side}, got {pool}")
    k = side // pool
    blocks = images.reshape(n, k, pool, k, pool).mean(axis=(2, 4))
    return blocks.reshape(n, k * k)


def to_angles(pixels: np.ndarray, max_value: float = DIGIT_MAX) -> np.ndarray:
    """Map pixel values in ``[0, max_value]`` to angles in ``[0, π]``.

    >>> to_angles(np.array([0.0, 8.0, 16.0])).round(4)
    array([0.    , 1.5708, 3.1416])
    """
    return np.clip(pixels / max_value, 0.0, 1.0) * math.pi


def _load_raw(classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    keep = np.isin(bunch.target, classes)
    lookup = {c: k for k, c in enumerate(classes)}
    labels = np.array([lookup[int(t)] for t in bunch.target[keep]], dtype=np.int64)
    return bunch.images[keep].astype(np.float64), labels


def digits4(classes: Sequence[int] = (0, 1, 2, 3), pool: int = 2, test_size: float = 0.3,
            seed: int = 0) -> DigitsSplit:
    """scikit-learn digits as a stratified split of pooled, angle-scaled features.

    Args:
        classes: digits to keep; label ``k`` means digit ``classes[k]``.
        pool: average-pooling block size (``2`` → 4×4 = 16 features, ``1`` → 64, ``4`` → 4).
        test_size: fraction of samples in the test set, in ``(0, 1)``.
        seed: ``random_state`` of the stratified split (same seed → same split).

    >>> a, b = digits4(classes=(3, 7), seed=1), digits4(classes=(3, 7), seed=1)
    >>> bool(torch.equal(a.x_test, b.x_test))
    True
    """
    from sklearn.model_selection import train_test_split

    cls = _check_classes(classes)
    if not 0.0 < test_size < 1.0:
        raise ShapeError(f"test_size must be in (0, 1), got {test_size}")
    images, labels = _load_raw(cls)
    x = to_angles(pool_images(images, pool))
    x_tr, x_te, y_tr, y_te = train_test_split(x, labels, test_size=test_size, stratify=labels, random_state=seed)
    logger.debug("digits4: classes=%s pool=%d train=%d test=%d", cls, pool, len(y_tr), len(y_te))
    return DigitsSplit(
        x_train=torch.from_numpy(np.ascontiguousarray(x_tr)), y_train=torch.from_numpy(y_tr),
        x_test=torch.from_numpy(np.ascontiguousarray(x_te)), y_test=torch.from_numpy(y_te), classes=cls,
    )
