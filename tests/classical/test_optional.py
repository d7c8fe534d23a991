"""Tests of tinyqml.classical.optional: optional imports fail with what to install."""

from __future__ import annotations

import pytest

from tinyqml.classical.errors import ExportError
from tinyqml.classical.optional import ONNX_INSTALL, TFLITE_INSTALL, require


def test_present_module_is_returned():
    assert require("math", "arithmetic", "nothing").sqrt(4.0) == 2.0


def test_missing_module_says_what_needs_it_and_how_to_install():
    with pytest.raises(ExportError, match=r"ONNX export needs the no_such_pkg package: pip install onnx"):
        require("no_such_pkg.sub", "ONNX export", ONNX_INSTALL)
    assert "tflite-micro" in TFLITE_INSTALL
