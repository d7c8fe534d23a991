"""Named cost functions of circuits for the search engine's constraints.

>>> import tinyqml.qml as tq
>>> from tinyqml.search import Constraint
>>> c = tq.CircuitBuilder(3).h(0).cx(0, 1).cx(1, 2).ry(2, tq.weight(0)).build()
>>> CIRCUIT_COSTS.evaluate(c)
{'depth': 4.0, 'gates': 4.0, 'params': 1.0, 'two_qubit': 2.0}
>>> CIRCUIT_COSTS.feasible(c, [Constraint("two_qubit", max=1)])
False
"""

from __future__ import annotations

from tinyqml.qml.circuit import Circuit
from tinyqml.qml.errors import CircuitFormatError
from tinyqml.search import CostModel

__all__ = ["CIRCUIT_COSTS", "circuit_costs"]


def _circuit(c: object) -> Circuit:
    if not isinstance(c, Circuit):
        raise CircuitFormatError(f"circuit costs measure a tinyqml Circuit, got {type(c).__name__}")
    return c


def circuit_costs() -> CostModel:
    """Gate count, depth, two-qubit gate count and number of distinct trainable weights read."""
    return CostModel({
        "gates": lambda c: len(_circuit(c).ops),
        "depth": lambda c: _circuit(c).depth,
        "two_qubit": lambda c: _circuit(c).two_qubit_count,
        "params": lambda c: len({p.index[0] for op in _circuit(c).ops for p in op.params if p.kind == "weight"}),
    })


#: the default circuit cost model
CIRCUIT_COSTS = circuit_costs()
