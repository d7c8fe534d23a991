"""Training, evaluation and checkpoints of small classifiers, deterministic on CPU.

:func:`train` runs ``config.epochs`` epochs of minibatch training (shuffled by a
generator seeded with ``config.seed``; dropout draws under the same seed) with the
optimizer of :class:`TrainConfig` (:class:`Optimizer`), cosine learning-rate decay
and cross-entropy, or any ``loss``. With a ``teacher`` the loss is called as
``loss(student_logits, teacher_logits, targets)`` (default
:class:`~tinyqml.classical.distill.KDLoss`) and the teacher runs in eval mode without
gradients. ``on_step(step)`` is called after every optimizer step (``step`` counts
from 1): pruning hooks in there (``pruner.step`` for a schedule, ``pruner.reapply``).
:func:`evaluate` is the accuracy in % (eval mode, no gradients). Checkpoints are state
dicts read back with ``torch.load(..., weights_only=True)``.

>>> import torch
>>> from tinyqml.classical.data import load_digits_data
>>> from tinyqml.classical.models import SmallCNN, SmallCNNConfig
>>> data = load_digits_data()
>>> net = SmallCNN(SmallCNNConfig(widths=(4, 8, 8)), seed=0)
>>> history = train(net, data, TrainConfig(epochs=2, lr=0.01, batch_size=64))
>>> len(history.loss), history.steps, evaluate(net, data.x_test, data.y_test) > 50
(2, 38, True)
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from tinyqml.classical.data import make_loader
from tinyqml.classical.distill import KDLoss
from tinyqml.classical.errors import CompressionError

logger = logging.getLogger(__name__)

__all__ = ["Optimizer", "TrainConfig", "TrainHistory", "train", "evaluate", "predict", "save_checkpoint",
           "load_checkpoint"]


class Optimizer(enum.Enum):
    """The optimizer :func:`train` builds (``momentum`` applies to SGD)."""

    SGD = "sgd"
    ADAM = "adam"
    ADAMW = "adamw"


@dataclass(frozen=True)
class TrainConfig:
    """Epochs, learning rate (cosine-decayed to 0 when ``cosine``), batch size, weight decay, seed."""

    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    seed: int = 0
    optimizer: Optimizer = Optimizer.ADAM
    momentum: float = 0.9
    cosine: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "seed" else 1):
                raise CompressionError(f"TrainConfig.{name} must be a{' non-negative' if name == 'seed' else ' positive'}"
                                       f" int, got {v!r}")
        for name in ("lr", "weight_decay", "momentum"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise CompressionError(f"TrainConfig.{name} must be a finite number >= 0, got {v!r}")
        if not self.lr > 0:
            raise CompressionError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if not isinstance(self.optimizer, Optimizer):
            raise CompressionError(f"TrainConfig.optimizer must be an Optimizer member, got {self.optimizer!r}")


@dataclass(frozen=True)
class TrainHistory:
    """Mean training loss and validation accuracy (%, ``nan`` without validation data) per epoch."""

    loss: tuple[float, ...]
    val_accuracy: tuple[float, ...]
    steps: int


class _Data(Protocol):
    x_train: torch.Tensor
    y_train: torch.Tensor


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer is Optimizer.SGD:
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer is Optimizer.ADAMW:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _check_data(data: object) -> None:
    for name in ("x_train", "y_train"):
        if not isinstance(getattr(data, name, None), torch.Tensor):
            raise CompressionError(f"data must have tensors x_train and y_train (a DigitsData), got "
                                   f"{type(data).__name__}")


def _epochs(config: TrainConfig):
    if not config.progress:
        return range(config.epochs)
    from tqdm.auto import trange

    return trange(config.epochs, desc="train", leave=False)


def train(model: nn.Module, data: _Data, config: TrainConfig = TrainConfig(),
          loss: Callable[..., torch.Tensor] | None = None, teacher: nn.Module | None = None,
          on_step: Callable[[int], object] | None = None) -> TrainHistory:
    """Train ``model`` in place on ``data.x_train, data.y_train``; returns the per-epoch history."""
    if not isinstance(model, nn.Module):
        raise CompressionError(f"train needs an nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise CompressionError(f"config must be a TrainConfig, got {type(config).__name__}")
    _check_data(data)
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise CompressionError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
    loss_fn = loss if loss is not None else (KDLoss() if teacher is not None else F.cross_entropy)
    if teacher is not None:
        teacher.eval()
    x_val, y_val = getattr(data, "x_val", None), getattr(data, "y_val", None)
    has_val = isinstance(x_val, torch.Tensor) and len(x_val) > 0
    losses, accs, step = [], [], 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        loader = make_loader(data.x_train, data.y_train, config.batch_size, torch.Generator().manual_seed(config.seed))
        opt = _optimizer(model, config)
        total = config.epochs * len(loader)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total) if config.cosine else None
        for epoch in _epochs(config):
            model.train()
            running = 0.0
            for x, y in loader:
                logits = model(x)
                if teacher is not None:
                    value = loss_fn(logits, _teacher_logits(teacher, x), y)
                else:
                    value = loss_fn(logits, y)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                step += 1
                running += float(value.detach()) * len(y)
                if on_step is not None:
                    on_step(step)
            losses.append(running / len(data.y_train))
            accs.append(evaluate(model, x_val, y_val) if has_val else math.nan)
            logger.info("epoch %d/%d loss %.4f val %.2f%%", epoch + 1, config.epochs, losses[-1], accs[-1])
    model.eval()
    return TrainHistory(tuple(losses), tuple(accs), step)


def _teacher_logits(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return teacher(x)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted labels (argmax of the logits) in eval mode; the model's mode is restored."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise CompressionError(f"x must be a batch tensor [N, ...], got {type(x).__name__}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]) \
                if len(x) else torch.zeros(0, dtype=torch.int64)
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Accuracy of ``model`` on ``(x, y)`` in %."""
    if not isinstance(y, torch.Tensor) or len(y) != len(x) or len(y) == 0:
        raise CompressionError(f"evaluate needs non-empty x and y of equal length, got {len(x)} and "
                               f"{len(y) if isinstance(y, torch.Tensor) else type(y).__name__}")
    return 100.0 * float((predict(model, x, batch_size) == y).float().mean())


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write ``model.state_dict()`` (masks included when the model is masked) to ``path``."""
    if not isinstance(model, nn.Module):
        raise CompressionError(f"save_checkpoint needs an nn.Module, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a :func:`save_checkpoint` file into ``model`` (same architecture, same masks); tensors only."""
    path = Path(path)
    if not path.is_file():
        raise CompressionError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load: UnpicklingError, RuntimeError, EOFError, struct.error, KeyError, ...
        raise CompressionError(f"cannot read a checkpoint from {path}: torch cannot read it as a file of tensors "
                               f"and plain values ({type(exc).__name__})") from exc
    if not isinstance(state, dict):
        raise CompressionError(f"{path} does not hold a state dict")
    missing, unexpected = _key_diff(model, state)
    if missing or unexpected:
        raise CompressionError(f"checkpoint {path.name} does not fit this model: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]} (masked and unmasked models differ in keys: "
                               f"attach the same masks, or squash, before saving)")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # shape mismatches: a model pruned to other widths
        raise CompressionError(f"checkpoint {path.name} does not fit this model: {exc}") from exc
    return model


def _key_diff(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    mine = set(model.state_dict())
    return sorted(mine - set(state)), sorted(set(state) - mine)
