"""Tests of tinyqml.classical.distill: the KD loss against a hand computation, gradients, recovery."""

from __future__ import annotations

import math

import pytest
import torch

from tinyqml.classical.data import load_digits_data
from tinyqml.classical.distill import KDConfig, KDLoss, kd_loss
from tinyqml.classical.errors import CompressionError
from tinyqml.classical.models import SmallCNN, SmallCNNConfig
from tinyqml.classical.pruning import FineGrainedConfig, FineGrainedPruner
from tinyqml.classical.train import TrainConfig, evaluate, train


def _by_hand(s, t, y, temp, alpha):
    total = 0.0
    for srow, trow, label in zip(s.tolist(), t.tolist(), y.tolist()):
        zs = [math.exp(v / temp) for v in srow]
        zt = [math.exp(v / temp) for v in trow]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        kl = sum(a * math.log(a / b) for a, b in zip(pt, ps))
        ce = -math.log(math.exp(srow[label]) / sum(math.exp(v) for v in srow))
        total += alpha * temp * temp * kl + (1 - alpha) * ce
    return total / len(y)


@pytest.mark.parametrize("temp,alpha", [(1.0, 0.5), (4.0, 0.9), (2.5, 0.0), (3.0, 1.0)])
def test_matches_a_hand_computation(temp, alpha):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 3, 1, 2, 3])
    want = _by_hand(s, t, y, temp, alpha)
    cfg = KDConfig(temperature=temp, alpha=alpha)
    assert float(kd_loss(s, t, y, cfg)) == pytest.approx(want, rel=1e-5)
    assert float(KDLoss(cfg)(s, t, y)) == pytest.approx(want, rel=1e-5)


def test_gradient_reaches_the_student_only():
    s = torch.randn(3, 5, requires_grad=True)
    t = torch.randn(3, 5, requires_grad=True)
    kd_loss(s, t, torch.tensor([0, 1, 2])).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0 and t.grad is None


def test_kd_recovers_a_pruned_student():
    data = load_digits_data()
    teacher = SmallCNN(SmallCNNConfig(widths=(8, 16, 16)), seed=0)
    train(teacher, data, TrainConfig(epochs=5, lr=0.01, batch_size=64))
    dense = evaluate(teacher, data.x_test, data.y_test)
    student = SmallCNN(SmallCNNConfig(widths=(8, 16, 16)), seed=0)
    student.load_state_dict(teacher.state_dict())
    pruner = FineGrainedPruner(student, FineGrainedConfig(sparsity=0.85))
    pruner.apply()
    pruned = evaluate(student, data.x_test, data.y_test)
    train(student, data, TrainConfig(epochs=3, lr=0.005, batch_size=64), loss=KDLoss(KDConfig(4.0, 0.9)),
          teacher=teacher, on_step=pruner.on_step)
    recovered = evaluate(student, data.x_test, data.y_test)
    assert pruned < dense - 10  # 85% one-shot hurts
    assert recovered > pruned + 30 and recovered > dense - 8
    assert pruner.sparsity() == pytest.approx(0.85, abs=1e-3)


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"temperature": -1.0}, {"alpha": 1.5}, {"alpha": True}])
def test_bad_config(kwargs):
    with pytest.raises(CompressionError):
        KDConfig(**kwargs)


def test_bad_shapes():
    with pytest.raises(CompressionError, match="logits"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(CompressionError, match="targets"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(CompressionError, match="KDConfig"):
        KDLoss({"alpha": 0.5})
