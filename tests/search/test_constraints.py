"""Tests of tinyqml.search.constraints: named costs, unknown names refused."""

from __future__ import annotations

import math

import pytest

from tinyqml.search.constraints import Constraint, CostModel
from tinyqml.search.errors import ConstraintError, UnknownConstraintError

COSTS = CostModel({"gates": lambda c: c["n"] * 3, "depth": lambda c: c["n"], "esp": lambda c: 0.99 ** c["n"]})


def test_violations_follow_optunas_sign_convention():
    limits = [Constraint("gates", max=30), Constraint("esp", min=0.95)]
    assert COSTS.violations({"n": 10}, limits) == (0.0, pytest.approx(0.95 - 0.99 ** 10))
    assert COSTS.feasible({"n": 5}, limits)
    assert not COSTS.feasible({"n": 11}, limits)
    both = Constraint("depth", max=5, min=2)
    assert both.violation(1) == 1 and both.violation(7) == 2 and both.violation(3) < 0


def test_unknown_constraint_name_is_an_error_with_a_suggestion():
    with pytest.raises(UnknownConstraintError, match="unknown cost 'gate' .*did you mean 'gates'.*accepted: depth, esp, gates"):
        COSTS.check([Constraint("gate", max=3)])
    with pytest.raises(UnknownConstraintError, match="unknown cost 'latency'"):
        COSTS.violations({"n": 1}, [Constraint("latency", max=3)])


def test_evaluate_and_union():
    assert COSTS.evaluate({"n": 2}, ["gates", "depth"]) == {"gates": 6.0, "depth": 2.0}
    more = COSTS | CostModel({"params": lambda c: 7})
    assert more.names == ("depth", "esp", "gates", "params")


@pytest.mark.parametrize("make, fragment", [
    (lambda: Constraint("a"), "needs max= or min="),
    (lambda: Constraint("a", max=math.inf), "finite number"),
    (lambda: Constraint("a", max="3"), "finite number"),
    (lambda: Constraint("", max=1), "needs a cost name"),
    (lambda: CostModel({}), "non-empty mapping"),
    (lambda: CostModel({"a": 3}), "to a callable"),
])
def test_bad_constraints(make, fragment):
    with pytest.raises(ConstraintError, match=fragment):
        make()


def test_cost_returning_garbage_is_named():
    bad = CostModel({"x": lambda c: "many", "y": lambda c: float("nan")})
    with pytest.raises(ConstraintError, match="returned 'many', not a number"):
        bad.cost("x", None)
    with pytest.raises(ConstraintError, match="returned NaN"):
        bad.cost("y", None)
