"""The 4-class digits quantum classifier shared by the CLI, the tutorials and the tests.

Model (4 qubits, QuantumNAS / TorchQuantum style):

- encoding ``4x4_ryzxy``: the 16 pooled pixel angles of :func:`tinyqml.qml.datasets.digits4`
  enter as RY on wires 0-3 (features 0-3), then RZ (4-7), RX (8-11) and RY (12-15);
- ansatz: ``layers`` repetitions of a trainable U3 on every wire followed by a CNOT ring
  ``CX(0,1) CX(1,2) CX(2,3) CX(3,0)``;
- logits: ``logit_scale * <Z_i>`` on wire ``i`` for class ``i`` (``<Z>`` lies in
  ``[-1, 1]``, so a fixed scale lets the softmax become confident);
- cross-entropy loss, Adam with a cosine learning-rate decay, adjoint gradients.

Every random draw (initial weights, batch order) comes from an explicit, seeded
``torch.Generator``, so a config always gives the same result on the same machine.

>>> from tinyqml.classifier import ClassifierConfig, train_classifier
>>> result = train_classifier(ClassifierConfig(layers=1, epochs=1, batch_size=128))
>>> len(result.history), 0.0 <= result.test_accuracy <= 1.0
(1, True)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

import tinyqml.qml as tq
from tinyqml.qml.datasets import DigitsSplit, digits4

logger = logging.getLogger(__name__)

#: qubits of the classifier (one ``<Z>`` logit per wire)
N_WIRES = 4
#: rotation gate of each encoding layer in ``4x4_ryzxy`` (4 features per layer)
ENCODING_4X4_RYZXY = ("RY", "RZ", "RX", "RY")

__all__ = [
    "ClassifierConfig", "EpochStats", "ClassifierResult", "DigitsClassifier", "FAST_CONFIG",
    "encoder_4x4_ryzxy", "u3_ring_ansatz", "classifier_circuit", "train_classifier", "accuracy",
]


@dataclass(frozen=True)
class ClassifierConfig:
    """Hyper-parameters of :func:`train_classifier` (the defaults are the full run).

    >>> ClassifierConfig().layers, FAST_CONFIG.epochs
    (8, 3)
    """

    layers: int = 8
    epochs: int = 20
    lr: float = 0.05
    batch_size: int = 32
    seed: int = 0
    logit_scale: float = 5.0
    classes: tuple[int, ...] = (0, 1, 2, 3)
    split_seed: int = 0
    diff_method: str = "adjoint"

    def __post_init__(self) -> None:
        for name in ("layers", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise tq.ParameterError(f"ClassifierConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise tq.ParameterError(f"ClassifierConfig.lr must be > 0, got {self.lr}")
        if not 2 <= len(self.classes) <= N_WIRES:
            raise tq.ParameterError(f"the classifier has {N_WIRES} outputs: give 2..{N_WIRES} classes, "
                                    f"got {self.classes}")
        if self.diff_method not in tq.DIFF_METHODS:
            raise tq.DiffMethodError(f"unknown diff_method {self.diff_method!r}; "
                                     f"choose one of {', '.join(tq.DIFF_METHODS)}")


#: a few-second configuration for tests, tutorials' fast mode and ``tinyqml train qnn --fast``
FAST_CONFIG = ClassifierConfig(layers=4, epochs=3, lr=0.1)


@dataclass(frozen=True)
class EpochStats:
    """Metrics after one epoch: mean training loss and accuracies on the full train/test sets."""

    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float
    seconds: float


@dataclass(frozen=True)
class ClassifierResult:
    """What :func:`train_classifier` returns: the trained model and its history."""

    config: ClassifierConfig
    model: "DigitsClassifier"
    history: tuple[EpochStats, ...]
    seconds: float
    n_train: int
    n_test: int

    @property
    def train_accuracy(self) -> float:
        return self.history[-1].train_accuracy

    @property
    def test_accuracy(self) -> float:
        return self.history[-1].test_accuracy


def encoder_4x4_ryzxy(n_wires: int = N_WIRES) -> tq.Circuit:
    """RY, RZ, RX, RY layers reading features ``0..4*n_wires-1`` (layer ``k`` reads ``k*n .. k*n+n-1``).

    >>> c = encoder_4x4_ryzxy()
    >>> c.n_inputs, [op.name for op in c.ops[::4]]
    (16, ['RY', 'RZ', 'RX', 'RY'])
    """
    b = tq.CircuitBuilder(n_wires)
    for k, gate in enumerate(ENCODING_4X4_RYZXY):
        for w in range(n_wires):
            b.append(gate, w, tq.feature(k * n_wires + w))
    return b.build()


def u3_ring_ansatz(n_wires: int, layers: int, weight_offset: int = 0) -> tq.Circuit:
    """``layers`` × (U3 on every wire, then a CNOT ring); weights ``weight_offset ..``.

    >>> c = u3_ring_ansatz(4, 2)
    >>> c.n_weights, c.gate_counts
    (24, {'U': 8, 'CX': 8})
    """
    b = tq.CircuitBuilder(n_wires)
    k = weight_offset
    for _ in range(layers):
        for w in range(n_wires):
            b.u(w, tq.weight(k), tq.weight(k + 1), tq.weight(k + 2))
            k += 3
        for w in range(n_wires):
            b.cx(w, (w + 1) % n_wires)
    return b.build()


def classifier_circuit(layers: int, n_wires: int = N_WIRES) -> tq.Circuit:
    """The full classifier circuit: the ``4x4_ryzxy`` encoder then the U3 + CNOT-ring ansatz.

    >>> classifier_circuit(8)
    Circuit(4 wires, 80 ops, depth 44)
    """
    return encoder_4x4_ryzxy(n_wires) + u3_ring_ansatz(n_wires, layers)


class DigitsClassifier(nn.Module):
    """``logit_scale * <Z_i>`` of the classifier circuit, for the first ``n_classes`` wires.

    >>> model = DigitsClassifier(ClassifierConfig(layers=1))
    >>> model(torch.zeros(3, 16)).shape
    torch.Size([3, 4])
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        circuit = classifier_circuit(config.layers)
        observables = [tq.Z(i) for i in range(len(config.classes))]
        self.quantum = tq.QuantumLayer(circuit, observables, diff_method=config.diff_method, seed=config.seed)
        self.logit_scale = config.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.quantum(x)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows of ``x`` whose arg-max logit equals ``y`` (no gradients)."""
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).double().mean())


def _run_epoch(model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
               data: DigitsSplit, batch_size: int, gen: torch.Generator) -> float:
    order = torch.randperm(len(data.y_train), generator=gen)
    total = 0.0
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach()) * len(idx)
    return total / len(order)


def train_classifier(config: ClassifierConfig = ClassifierConfig(),
                     on_epoch: Callable[[EpochStats], None] | None = None,
                     data: DigitsSplit | None = None) -> ClassifierResult:
    """Train the digits classifier; ``on_epoch`` is called with each epoch's :class:`EpochStats`.

    ``data`` defaults to ``digits4(config.classes, seed=config.split_seed)``.
    """
    data = digits4(config.classes, seed=config.split_seed) if data is None else data
    model = DigitsClassifier(config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps = config.epochs * math.ceil(len(data.y_train) / config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(config.seed)
    history: list[EpochStats] = []
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        loss = _run_epoch(model, opt, sched, data, config.batch_size, gen)
        stats = EpochStats(epoch, loss, accuracy(model, data.x_train, data.y_train),
                           accuracy(model, data.x_test, data.y_test), time.perf_counter() - start)
        logger.info("epoch %d/%d loss %.4f train %.3f test %.3f", epoch, config.epochs, stats.loss,
                    stats.train_accuracy, stats.test_accuracy)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return ClassifierResult(config, model, tuple(history), time.perf_counter() - start,
                            len(data.y_train), len(data.y_test))
