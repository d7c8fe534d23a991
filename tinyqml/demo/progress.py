"""How the main job reports progress: one callback, ``progress(stage, done, total)``.

The library never prints; the CLI turns these calls into progress bars (one per stage),
a test can collect them. ``done`` rises from 0 to ``total`` within a stage.

>>> seen = []
>>> stage = Stage(lambda *a: seen.append(a), "train", 2)
>>> stage.advance(); stage.advance()
>>> seen
[('train', 0, 2), ('train', 1, 2), ('train', 2, 2)]
"""

from __future__ import annotations

from typing import Callable

__all__ = ["ProgressFn", "Stage", "silent"]

#: ``progress(stage, done, total)``
ProgressFn = Callable[[str, int, int], None]


def silent(stage: str, done: int, total: int) -> None:
    """The default callback: report nothing."""
    del stage, done, total


class Stage:
    """One stage of the job: announced at 0 of ``total`` on creation, ``advance`` counts up (never past
    ``total``), ``finish`` jumps to the end (for loops that stop early)."""

    def __init__(self, progress: ProgressFn, name: str, total: int) -> None:
        self.progress, self.name, self.total, self.done = progress, name, max(1, int(total)), 0
        progress(name, 0, self.total)

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        self.progress(self.name, self.done, self.total)

    def finish(self) -> None:
        if self.done < self.total:
            self.advance(self.total - self.done)
