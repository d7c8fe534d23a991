"""The estimated success probability (ESP) of a circuit under a noise model, as a search cost.

``ESP = prod_gates (1 - e_g) * prod_measured (1 - r_q)`` where ``e_g`` is the average gate
infidelity of the errors that follow gate ``g`` in the model and ``r_q`` the mean readout
flip probability of qubit ``q`` (QuantumNAS's estimate of how often a run is error free).

>>> import tinyqml.qml as tq
>>> from tinyqml.noise import NoiseModel, Depolarizing, ReadoutError
>>> nm = NoiseModel().add("CX", Depolarizing(0.03, 2)).with_readout(1, ReadoutError(0.1, 0.0))
>>> c = tq.CircuitBuilder(2).h(0).cx(0, 1).build()
>>> round(esp(c, nm), 6)                       # (1 - 0.03 * 15/16 * 4/5) * (1 - 0.05)
0.928625
>>> esp_costs(nm, wires=[0, 1]).evaluate(c)["esp"] == esp(c, nm, [0, 1])
True
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from tinyqml.noise.channels import average_gate_fidelity, compose
from tinyqml.noise.model import NoiseModel
from tinyqml.noise.specs import ErrorSpec
from tinyqml.qml.circuit import Circuit
from tinyqml.qml.errors import CircuitFormatError
from tinyqml.search import CostModel

__all__ = ["esp", "esp_costs"]


@lru_cache(maxsize=4096)
def _infidelity(specs: tuple[ErrorSpec, ...]) -> float:
    chans = [s.channel() for s in specs]
    return 1.0 - average_gate_fidelity(compose(*chans) if len(chans) > 1 else chans[0])


def esp(circuit: Circuit, noise_model: NoiseModel, wires: Sequence[int] | None = None) -> float:
    """Estimated success probability of ``circuit`` measured on ``wires`` (default: all)."""
    if not isinstance(circuit, Circuit):
        raise CircuitFormatError(f"esp needs a tinyqml Circuit, got {type(circuit).__name__}")
    out = 1.0
    for op in circuit.ops:
        specs = tuple(noise_model.errors_for(op.gate.name, op.wires))
        if specs:
            out *= 1.0 - _infidelity(specs)
    measured = range(circuit.n_wires) if wires is None else wires
    for e in noise_model.readout_errors(list(measured)):
        if e is not None:
            out *= 1.0 - (e.p0_given_1 + e.p1_given_0) / 2
    return out


def esp_costs(noise_model: NoiseModel, wires: Sequence[int] | None = None) -> CostModel:
    """A :class:`~tinyqml.search.CostModel` with ``"esp"`` (constrain it with ``min=``)."""
    return CostModel({"esp": lambda c: esp(c, noise_model, wires)})
