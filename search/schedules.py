"""Sparsity schedules: pure functions of the step (one object drives nets and circuits alike).

>>> OneShot(0.5)(0), Iterative(0.8, stages=4, stage_length=10)(25)
(0.5, 0.6000000000000001)
>>> agp = AGP(final=0.9, start=0, end=100, frequency=10)
>>> [round(agp(t), 3) for t in (0, 50, 100, 200)]
[0.0, 0.787, 0.9, 0.9]
"""

from __future__ import annotations

from dataclasses import dataclass

from tinyqml.search.errors import PruningError

__all__ = ["Schedule", "OneShot", "Iterative", "AGP", "check_sparsity"]


def check_sparsity(s: float, name: str = "sparsity") -> float:
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
        raise PruningError(f"{name} must be a number in [0, 1), got {s!r}")
    return float(s)


class Schedule:
    """``schedule(step) -> target sparsity``."""

    def __call__(self, step: int) -> float:  # pragma: no cover - subclasses override
        raise TypeError(f"{type(self).__name__} does not define a schedule")


@dataclass(frozen=True)
class OneShot(Schedule):
    """All of ``sparsity`` at step ``at`` (none before)."""

    sparsity: float
    at: int = 0

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity)

    def __call__(self, step: int) -> float:
        return self.sparsity if step >= self.at else 0.0


@dataclass(frozen=True)
class Iterative(Schedule):
    """``final`` in ``stages`` equal increments, one every ``stage_length`` steps."""

    final: float
    stages: int = 5
    stage_length: int = 1

    def __post_init__(self) -> None:
        check_sparsity(self.final, "final")
        if not isinstance(self.stages, int) or self.stages < 1 or not isinstance(self.stage_length, int) \
                or self.stage_length < 1:
            raise PruningError(f"Iterative needs stages >= 1 and stage_length >= 1, got {self.stages}, "
                               f"{self.stage_length}")

    def __call__(self, step: int) -> float:
        k = min(self.stages, max(0, step) // self.stage_length + 1)
        return self.final * k / self.stages


@dataclass(frozen=True)
class AGP(Schedule):
    """Automated gradual pruning (Zhu & Gupta 2017): ``s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))**3``,
    updated every ``frequency`` steps between ``start`` and ``end``."""

    final: float
    start: int = 0
    end: int = 100
    frequency: int = 1
    initial: float = 0.0

    def __post_init__(self) -> None:
        check_sparsity(self.final, "final")
        check_sparsity(self.initial, "initial")
        if self.end <= self.start or self.frequency < 1:
            raise PruningError(f"AGP needs end > start and frequency >= 1, got start={self.start}, "
                               f"end={self.end}, frequency={self.frequency}")

    def __call__(self, step: int) -> float:
        if step < self.start:
            return self.initial
        if step >= self.end:
            return self.final
        t = self.start + (step - self.start) // self.frequency * self.frequency
        frac = (t - self.start) / (self.end - self.start)
        return self.initial + (self.final - self.initial) * (1 - (1 - frac) ** 3)
