"""Tests of tinyqml.search.schedules."""

from __future__ import annotations

import pytest

from tinyqml.search.errors import PruningError
from tinyqml.search.schedules import AGP, Iterative, OneShot


def test_one_shot_and_iterative():
    assert [OneShot(0.3, at=5)(t) for t in (0, 4, 5, 9)] == [0.0, 0.0, 0.3, 0.3]
    it = Iterative(0.6, stages=3, stage_length=2)
    assert [round(it(t), 6) for t in range(8)] == [0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.6, 0.6]


def test_agp_is_cubic_monotone_and_stepwise():
    agp = AGP(final=0.8, start=10, end=50, frequency=5, initial=0.1)
    vals = [agp(t) for t in range(0, 70)]
    assert vals[0] == 0.1 and vals[50] == pytest.approx(0.8) and vals[69] == pytest.approx(0.8)
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    assert agp(12) == agp(10) and agp(15) > agp(14)
    assert agp(30) == pytest.approx(0.8 + (0.1 - 0.8) * (1 - 0.5) ** 3)


@pytest.mark.parametrize("make", [
    lambda: OneShot(1.0), lambda: OneShot(-0.1), lambda: Iterative(0.5, stages=0),
    lambda: AGP(0.5, start=10, end=10), lambda: AGP(0.5, frequency=0), lambda: AGP(True),
])
def test_bad_schedules(make):
    with pytest.raises(PruningError):
        make()
