"""Run the docstring examples of every tinyqml module as doctests."""

from __future__ import annotations

import doctest
import importlib

import pytest

from testkit import OPTIONAL, package_modules


@pytest.mark.parametrize("name", package_modules())
def test_docstring_examples(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:  # a module built on an optional extra (pennylane, qiskit)
        if exc.name and exc.name.split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs the optional package {exc.name}")
        raise
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest failure(s) in {name}"
