"""Tests of tinyqml.qml.costs."""

from __future__ import annotations

import pytest

import tinyqml.qml as tq
from tinyqml.qml.costs import CIRCUIT_COSTS
from tinyqml.qml.errors import CircuitFormatError
from tinyqml.search import Constraint, UnknownConstraintError


def test_costs_of_a_circuit():
    c = tq.templates.u3cu3(3, 2)
    costs = CIRCUIT_COSTS.evaluate(c)
    assert costs == {"gates": 12.0, "depth": float(c.depth), "two_qubit": 6.0, "params": 36.0}
    assert CIRCUIT_COSTS.feasible(c, [Constraint("gates", max=12), Constraint("two_qubit", min=6)])


def test_params_counts_distinct_weights_even_when_sparse():
    c = tq.CircuitBuilder(1).rx(0, tq.weight(7)).ry(0, tq.weight(7)).rz(0, tq.weight(2)).build()
    assert CIRCUIT_COSTS.cost("params", c) == 2


def test_unknown_cost_and_wrong_candidate():
    with pytest.raises(UnknownConstraintError, match="did you mean 'depth'"):
        CIRCUIT_COSTS.check([Constraint("dept", max=3)])
    with pytest.raises(CircuitFormatError, match="measure a tinyqml Circuit"):
        CIRCUIT_COSTS.evaluate({"depth": 3})
