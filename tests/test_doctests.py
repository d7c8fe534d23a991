"""Run the docstring examples of every tinyqml module as doctests."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tinyqml


#: top-level packages of the optional extras; modules that need them skip when absent
OPTIONAL = {"pennylane", "qiskit", "qiskit_aer", "qiskit_ibm_runtime", "qiskit_qasm3_import", "openqasm3", "qulacs"}


def _modules() -> list[str]:
    # every module of the import package: the top-level ones (cli, classifier, commands, demo, ...)
    # and the four areas, whose folders lie elsewhere (package-dir mapping)
    names = ["tinyqml"] + [m.name for m in pkgutil.walk_packages(tinyqml.__path__, prefix="tinyqml.")]
    for area in ("qml", "noise", "classical", "search"):
        pkg = importlib.import_module(f"tinyqml.{area}")
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + ".")]
    return sorted(set(names))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:  # a module built on an optional extra (pennylane, qiskit)
        if exc.name and exc.name.split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs the optional package {exc.name}")
        raise
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest failure(s) in {name}"
