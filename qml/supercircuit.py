"""QuantumNAS's SuperCircuit: weight-shared ``U3 + CU3`` blocks with elastic depth and width.

The largest circuit is :func:`tinyqml.qml.templates.u3cu3`-shaped: ``n_blocks`` blocks of a
``U3`` on every wire followed by a ``CU3`` on every pair of the entangler. A
*sub-circuit* keeps the first ``blocks`` blocks and, in block ``b``, the ``U3`` gates on
the first ``u3[b]`` wires and the first ``cu3[b]`` ``CU3`` gates (front sampling). Every
gate of every sub-circuit reads the same weights as in the largest circuit, so one
weight vector is trained for all of them (:class:`SuperLayer`), and a sub-circuit
inherits its weights for evaluation or fine-tuning (:meth:`SuperLayer.inherit`).
The choices form a :class:`~tinyqml.search.SearchSpace` for the shared search engine.

>>> import random, torch
>>> sc = SuperCircuit(SuperCircuitConfig(n_wires=4, n_blocks=3))
>>> sc.n_weights, sc.space.names[:3]
(72, ('blocks', 'u3[0]', 'u3[1]'))
>>> cfg = {**sc.largest(), "blocks": 2, "u3[1]": 2, "cu3[1]": 1}
>>> sc.build(cfg).gate_counts
{'U': 6, 'CU': 5}
>>> sc.sample(random.Random(0), previous=cfg, restrict=1) != cfg
True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from tinyqml.qml import measure as M
from tinyqml.qml.circuit import Circuit, CircuitBuilder, weight
from tinyqml.qml.errors import ParameterError
from tinyqml.qml.layer import QuantumLayer
from tinyqml.qml.prune import compact_weights
from tinyqml.qml.simulate import expval
from tinyqml.qml.templates import entangler_pairs
from tinyqml.search import IntRange, SearchSpace, per_block

__all__ = ["SuperCircuitConfig", "SuperCircuit", "SuperLayer"]


@dataclass(frozen=True)
class SuperCircuitConfig:
    """The largest circuit: wires, blocks and the ``CU3`` entangling pattern."""

    n_wires: int
    n_blocks: int
    entangler: str = "ring"

    def __post_init__(self) -> None:
        for f in ("n_wires", "n_blocks"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ParameterError(f"SuperCircuitConfig.{f} must be a positive integer, got {v!r}")


class SuperCircuit:
    """The design space of sub-circuits of a weight-shared ``U3 + CU3`` circuit."""

    def __init__(self, config: SuperCircuitConfig) -> None:
        if not isinstance(config, SuperCircuitConfig):
            raise ParameterError(f"SuperCircuit needs a SuperCircuitConfig, got {type(config).__name__}")
        self.config = config
        self.pairs = entangler_pairs(config.entangler, config.n_wires) if config.n_wires > 1 else ()
        n, p, nb = config.n_wires, len(self.pairs), config.n_blocks
        self.block_weights = 3 * (n + p)
        self.space = SearchSpace.of(IntRange("blocks", 1, nb), *per_block("u3", nb, IntRange("u3", 1, n)),
                                    *per_block("cu3", nb, IntRange("cu3", 0, p)))
        self._cache: dict[tuple, Circuit] = {}

    @property
    def n_weights(self) -> int:
        return self.config.n_blocks * self.block_weights

    def largest(self) -> dict[str, Any]:
        """The configuration of the whole circuit."""
        return {d.name: d.values[-1] for d in self.space.dims}

    def key(self, config: Mapping[str, Any]) -> tuple:
        """The configuration with the choices of unused blocks dropped (equal keys: equal circuits)."""
        cfg = self.space.check(config)
        nb = cfg["blocks"]
        return (nb,) + tuple((cfg[f"u3[{b}]"], cfg[f"cu3[{b}]"]) for b in range(nb))

    def build(self, config: Mapping[str, Any]) -> Circuit:
        """The sub-circuit of ``config`` (weights indexed as in the largest circuit)."""
        key = self.key(config)
        if key not in self._cache:
            n = self.config.n_wires
            b = CircuitBuilder(n)
            for blk, (n_u3, n_cu3) in enumerate(key[1:]):
                base = blk * self.block_weights
                for w in range(n_u3):
                    k = base + 3 * w
                    b.u(w, weight(k), weight(k + 1), weight(k + 2))
                for j, (c, t) in enumerate(self.pairs[:n_cu3]):
                    k = base + 3 * (n + j)
                    b.cu(c, t, weight(k), weight(k + 1), weight(k + 2))
            self._cache[key] = b.build()
        return self._cache[key]

    def sample(self, rng: random.Random, previous: Mapping[str, Any] | None = None,
               restrict: int | None = None) -> dict[str, Any]:
        """A random sub-circuit; with ``previous`` and ``restrict=k``, one that differs from
        ``previous`` in at most ``k`` choices (QuantumNAS's restricted sampling)."""
        if previous is None or restrict is None:
            return self.space.sample(rng)
        if not isinstance(restrict, int) or restrict < 1:
            raise ParameterError(f"restrict must be a positive integer, got {restrict!r}")
        out = dict(self.space.check(previous))
        for name in rng.sample(list(self.space.names), k=min(restrict, len(self.space.names))):
            options = [v for v in self.space[name].values if v != out[name]]
            if options:
                out[name] = rng.choice(options)
        return out


class SuperLayer(nn.Module):
    """An encoder followed by any sub-circuit of a :class:`SuperCircuit`, one shared weight vector.

    ``forward(x, config)`` runs the sub-circuit of ``config`` (default: the largest).
    """

    def __init__(self, encoder: Circuit, supercircuit: SuperCircuit, observables: Sequence[M.Observable],
                 diff_method: str = "adjoint", seed: int = 0, init_scale: float = 2 * math.pi) -> None:
        super().__init__()
        if not isinstance(encoder, Circuit) or encoder.n_weights:
            raise ParameterError("the encoder must be a tinyqml Circuit without trainable weights")
        if encoder.n_wires > supercircuit.config.n_wires:
            raise ParameterError(f"the encoder has {encoder.n_wires} wires, the SuperCircuit "
                                 f"{supercircuit.config.n_wires}")
        self.encoder, self.supercircuit = encoder, supercircuit
        self.observables = tuple(observables)
        self.diff_method = diff_method
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.Parameter(torch.rand(supercircuit.n_weights, generator=gen, dtype=torch.float64)
                                    * init_scale)

    def circuit(self, config: Mapping[str, Any] | None = None) -> Circuit:
        """Encoder + the sub-circuit of ``config``."""
        sub = self.supercircuit.build(config or self.supercircuit.largest())
        return Circuit(max(self.encoder.n_wires, sub.n_wires), self.encoder.ops + sub.ops)

    def forward(self, x: torch.Tensor, config: Mapping[str, Any] | None = None) -> torch.Tensor:
        c = self.circuit(config)
        return expval(c, self.observables, weights=self.weights[: c.n_weights], inputs=x.to(torch.float64),
                      diff_method=self.diff_method)

    def inherit(self, config: Mapping[str, Any] | None = None, seed: int = 0) -> QuantumLayer:
        """A standalone :class:`QuantumLayer` of the sub-circuit with the inherited weights
        (renumbered densely)."""
        c = self.circuit(config)
        dense, w = compact_weights(c, self.weights.detach()[: c.n_weights])
        layer = QuantumLayer(dense, self.observables, diff_method=self.diff_method, seed=seed)
        with torch.no_grad():
            layer.weights.copy_(w)
        return layer
