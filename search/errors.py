"""Named exceptions raised by tinyqml.search (each also a :class:`ValueError`).

``tinyqml.search`` is generic and imports no other tinyqml area, so it has its own base.

>>> issubclass(UnknownConstraintError, SearchError) and issubclass(SearchError, ValueError)
True
"""

from __future__ import annotations

__all__ = ["SearchError", "SearchSpaceError", "UnknownConstraintError", "ConstraintError", "InfeasibleError",
           "PruningError"]


class SearchError(ValueError):
    """Base of every tinyqml.search error."""


class SearchSpaceError(SearchError):
    """A malformed search space or a configuration outside it."""


class UnknownConstraintError(SearchError):
    """A constraint that names a cost the cost model does not define (never silently ignored)."""


class ConstraintError(SearchError):
    """A malformed constraint (a bound that is not a finite number, a cost that returns no number)."""


class InfeasibleError(SearchError):
    """No configuration that satisfies the constraints could be drawn (loosen them or enlarge the space)."""


class PruningError(SearchError):
    """Bad pruning input: a sparsity outside [0, 1), a parameter that does not exist, a mask of the wrong shape."""
