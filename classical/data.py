"""The 10-class 8×8 digits as image tensors for small CNNs (scikit-learn's bundled set, no download).

:func:`load_digits_data` splits scikit-learn's 1797 handwritten digits into stratified
train / validation / test sets with a fixed seed (:class:`DigitsConfig`), scales the
pixels from ``[0, 16]`` to ``[0, 1]`` (a fixed map, nothing is fitted on the data)
and returns float32 images ``[N, 1, 8, 8]`` with int64 labels ``0..9``
(:class:`DigitsData`). :func:`make_loader` batches tensors with an explicit
``torch.Generator`` for the shuffle.

>>> import torch
>>> data = load_digits_data(DigitsConfig(val=0.15, test=0.2, seed=0))
>>> tuple(data.x_train.shape), tuple(data.x_val.shape), tuple(data.x_test.shape)
((1167, 1, 8, 8), (270, 1, 8, 8), (360, 1, 8, 8))
>>> data.x_train.dtype, float(data.x_train.max()), data.n_classes
(torch.float32, 1.0, 10)
>>> loader = make_loader(data.x_train, data.y_train, 256, torch.Generator().manual_seed(0))
>>> [tuple(x.shape) for x, _ in loader][-1]
(143, 1, 8, 8)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from tinyqml.classical.errors import CompressionError

__all__ = ["DigitsConfig", "DigitsData", "load_digits_data", "make_loader", "DIGIT_MAX", "MAX_SEED"]

#: largest pixel value in scikit-learn's digits (pixels are divided by it)
DIGIT_MAX = 16.0
#: the largest split seed: scikit-learn's ``random_state`` takes 0 .. 2**32-1
MAX_SEED = 2 ** 32 - 1


@dataclass(frozen=True)
class DigitsConfig:
    """Fractions of all images held out for validation and test, and the split's seed (``0 .. 2**32-1``)."""

    val: float = 0.15
    test: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("val", "test"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise CompressionError(f"DigitsConfig.{name} must be a fraction in [0, 1), got {v!r}")
        if self.test <= 0 or self.val + self.test >= 0.9:
            raise CompressionError(f"DigitsConfig needs test > 0 and val + test < 0.9, got val={self.val}, "
                                   f"test={self.test}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise CompressionError(f"DigitsConfig.seed must be an int in 0..{MAX_SEED} (2**32-1, scikit-learn's "
                                   f"random_state), got {self.seed!r}")


@dataclass(frozen=True, eq=False)
class DigitsData:
    """Images ``[N, 1, 8, 8]`` (float32 in [0, 1]) and labels ``[N]`` (int64) of each split."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_classes(self) -> int:
        return 10

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(x.reshape(-1, 1, 8, 8) / DIGIT_MAX, dtype=torch.float32)
    return images, torch.as_tensor(y, dtype=torch.int64)


def load_digits_data(config: DigitsConfig = DigitsConfig()) -> DigitsData:
    """scikit-learn's digits, split stratified by class with ``config.seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not isinstance(config, DigitsConfig):
        raise CompressionError(f"config must be a DigitsConfig, got {type(config).__name__}")
    bunch = load_digits()
    x, y = bunch.data, bunch.target
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=config.test, stratify=y,
                                                      random_state=config.seed)
    if config.val > 0:
        val = config.val / (1 - config.test)
        x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=val, stratify=y_rest,
                                                          random_state=config.seed)
    else:
        x_train, y_train, x_val, y_val = x_rest, y_rest, x_rest[:0], y_rest[:0]
    return DigitsData(*_tensors(x_train, y_train), *_tensors(x_val, y_val), *_tensors(x_test, y_test))


def make_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> DataLoader:
    """Batches of ``(x, y)``; shuffled with ``generator`` (required when ``shuffle``)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CompressionError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(x) != len(y):
        raise CompressionError(f"x and y differ in length: {len(x)} and {len(y)}")
    if shuffle and not isinstance(generator, torch.Generator):
        raise CompressionError("a shuffled loader needs an explicit torch.Generator (generator=...)")
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      generator=generator if shuffle else None)
