"""The ``tinyqml`` subcommands, one module each.

Every module has ``register(sub)``, which adds its sub-parser (with a description, an
epilog of examples and ``func`` set to its runner) to the parser of :mod:`tinyqml.cli`.
Modules import their heavy dependencies (torch, qiskit, optuna) inside the runner, so
``tinyqml --help`` stays fast.
"""

from __future__ import annotations

from tinyqml.commands import bench, codegen, demo, nas, noise, prune, quantize, search, train

#: registration order = the order ``tinyqml --help`` lists them
COMMANDS = (demo, train, search, prune, quantize, codegen, bench, noise, nas)

__all__ = ["COMMANDS"]
