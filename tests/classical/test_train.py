"""Tests of tinyqml.classical.train: learning, determinism, callbacks, teachers, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tinyqml.classical.data import load_digits_data
from tinyqml.classical.errors import CompressionError
from tinyqml.classical.models import SmallCNN, SmallCNNConfig
from tinyqml.classical.train import (
    Optimizer,
    TrainConfig,
    evaluate,
    load_checkpoint,
    predict,
    save_checkpoint,
    train,
)
from tinyqml.search import Target

DATA = load_digits_data()
TINY = SmallCNNConfig(widths=(4, 8, 8))
FAST = TrainConfig(epochs=2, lr=0.01, batch_size=128)


def _net(seed=0):
    return SmallCNN(TINY, seed=seed)


def test_training_learns_and_records_history():
    net = _net()
    before = evaluate(net, DATA.x_test, DATA.y_test)
    hist = train(net, DATA, TrainConfig(epochs=4, lr=0.01, batch_size=64))
    after = evaluate(net, DATA.x_test, DATA.y_test)
    assert after > 80 and after > before + 30
    assert len(hist.loss) == len(hist.val_accuracy) == 4 and hist.loss[-1] < hist.loss[0]
    assert hist.steps == 4 * math.ceil(len(DATA.y_train) / 64)
    assert not net.training  # left in eval mode


@pytest.mark.parametrize("opt", list(Optimizer))
def test_deterministic_with_a_fixed_seed(opt):
    cfg = TrainConfig(epochs=1, lr=0.01, batch_size=128, optimizer=opt, weight_decay=1e-4)
    a, b = _net(), _net()
    train(a, DATA, cfg)
    train(b, DATA, cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    c = _net()
    train(c, DATA, TrainConfig(epochs=1, lr=0.01, batch_size=128, optimizer=opt, weight_decay=1e-4, seed=1))
    assert not torch.equal(a.head[-1].weight, c.head[-1].weight)


def test_on_step_is_called_after_every_step_and_masks_hold():
    net = _net()
    target = Target(net.features[3], "weight")
    with torch.no_grad():
        target.mask.mask[:, :4] = 0
    seen = []
    hist = train(net, DATA, FAST, on_step=seen.append)
    assert seen == list(range(1, hist.steps + 1))
    assert bool((net.features[3].weight[:, :4] == 0).all())


def test_custom_loss_and_teacher():
    teacher = _net(1)
    train(teacher, DATA, FAST)
    calls = []

    def loss(s, t, y):
        calls.append(t.requires_grad)
        return nn.functional.cross_entropy(s, t.argmax(1))  # the teacher's labels, not the data's

    student = _net(2)
    train(student, DATA, TrainConfig(epochs=2, lr=0.01, batch_size=64), loss=loss, teacher=teacher)
    assert calls and not any(calls) and not teacher.training
    agree = (predict(student, DATA.x_test) == predict(teacher, DATA.x_test)).float().mean()
    assert float(agree) > 0.5  # the student imitates the teacher
    train(student, DATA, TrainConfig(epochs=1, lr=0.01, batch_size=128), teacher=teacher)  # default KD loss


def test_progress_bar_runs(capsys):
    train(_net(), DATA, TrainConfig(epochs=1, batch_size=256, progress=True))


def test_predict_and_evaluate():
    net = _net()
    net.train()
    p = predict(net, DATA.x_test, batch_size=50)
    assert p.shape == DATA.y_test.shape and p.dtype == torch.int64 and net.training  # mode restored
    acc = evaluate(net, DATA.x_test, DATA.y_test)
    assert acc == pytest.approx(100 * float((p == DATA.y_test).float().mean()))
    assert evaluate(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), DATA.x_test[:0].new_zeros(1, 1, 8, 8),
                    torch.tensor([0])) in (0.0, 100.0)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    net = _net()
    train(net, DATA, FAST)
    path = save_checkpoint(net, tmp_path / "ck" / "net.pt")
    fresh = load_checkpoint(_net(5), path)
    x = DATA.x_test[:16]
    assert torch.equal(fresh.eval()(x), net.eval()(x))
    masked = _net()
    Target(masked.features[0]).mask.mask[0] = 0
    p2 = save_checkpoint(masked, tmp_path / "masked.pt")
    other = _net(3)
    Target(other.features[0])
    load_checkpoint(other, p2)
    assert bool((other.features[0].weight[0] == 0).all())


def test_checkpoint_errors(tmp_path):
    net = _net()
    with pytest.raises(CompressionError, match="no checkpoint"):
        load_checkpoint(net, tmp_path / "missing.pt")
    masked = _net()
    Target(masked.features[0])
    path = save_checkpoint(masked, tmp_path / "m.pt")
    with pytest.raises(CompressionError, match="missing"):
        load_checkpoint(net, path)
    wide = save_checkpoint(SmallCNN(SmallCNNConfig(widths=(4, 8, 16))), tmp_path / "w.pt")
    with pytest.raises(CompressionError, match="does not fit"):
        load_checkpoint(net, wide)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CompressionError, match="state dict"):
        load_checkpoint(net, tmp_path / "list.pt")


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"lr": 0.0}, {"lr": float("nan")}, {"batch_size": 1.5},
                                    {"optimizer": "adam"}, {"weight_decay": -1.0}, {"seed": -1}])
def test_bad_config(kwargs):
    with pytest.raises(CompressionError):
        TrainConfig(**kwargs)


def test_bad_train_input():
    with pytest.raises(CompressionError, match="nn.Module"):
        train("net", DATA)
    with pytest.raises(CompressionError, match="x_train"):
        train(_net(), (DATA.x_train, DATA.y_train))
    with pytest.raises(CompressionError, match="TrainConfig"):
        train(_net(), DATA, {"epochs": 1})
    with pytest.raises(CompressionError, match="teacher"):
        train(_net(), DATA, FAST, teacher="dense")
    with pytest.raises(CompressionError, match="equal length"):
        evaluate(_net(), DATA.x_test, DATA.y_test[:3])
