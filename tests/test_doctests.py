"""Run the docstring examples of every tinyqml module as doctests."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tinyqml


def _modules() -> list[str]:
    names = ["tinyqml"]
    for area in ("qml", "noise", "classical", "search"):
        pkg = importlib.import_module(f"tinyqml.{area}")
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + ".")]
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest failure(s) in {name}"
