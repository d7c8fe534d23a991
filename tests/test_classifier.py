"""Tests of the 4-qubit digits classifier (:mod:`tinyqml.classifier`)."""

from __future__ import annotations

import dataclasses

import pytest

import tinyqml
from tinyqml.classifier import FAST_CONFIG, ClassifierConfig, train_classifier


def test_train_classifier_is_deterministic() -> None:
    config = dataclasses.replace(FAST_CONFIG, layers=2, epochs=1)
    a, b = train_classifier(config), train_classifier(config)
    assert a.history[0].loss == b.history[0].loss and a.test_accuracy == b.test_accuracy
    assert a.model.quantum.weights.detach().equal(b.model.quantum.weights.detach())


@pytest.mark.parametrize("kwargs", [{"layers": 0}, {"epochs": 0}, {"lr": 0.0}, {"classes": (0,)},
                                    {"classes": (0, 1, 2, 3, 4)}, {"diff_method": "magic"}])
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(tinyqml.qml.TinyQMLError):
        ClassifierConfig(**kwargs)


@pytest.mark.slow
def test_full_classifier_reaches_80_percent() -> None:
    result = train_classifier(ClassifierConfig())
    assert result.test_accuracy >= 0.80, result.history[-1]
