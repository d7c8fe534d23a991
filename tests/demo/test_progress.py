"""Tests of the main job's progress callback (:mod:`tinyqml.demo.progress`)."""

from __future__ import annotations

from tinyqml.demo.progress import Stage, silent


def test_stage_counts_up_to_its_total_and_finish_jumps_there() -> None:
    seen = []
    stage = Stage(lambda *a: seen.append(a), "s", 3)
    stage.advance(2)
    stage.advance(5)  # never past the total
    stage.finish()  # already there: no extra call
    assert seen == [("s", 0, 3), ("s", 2, 3), ("s", 3, 3)]
    early = Stage(lambda *a: seen.append(a), "e", 4)
    early.finish()
    assert seen[-2:] == [("e", 0, 4), ("e", 4, 4)]


def test_a_zero_total_is_one_step_and_silent_ignores_everything() -> None:
    seen = []
    Stage(lambda *a: seen.append(a), "z", 0).finish()
    assert seen == [("z", 0, 1), ("z", 1, 1)]
    assert silent("x", 1, 2) is None
