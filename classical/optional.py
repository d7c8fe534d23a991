"""Optional dependencies, imported on first use with an error that says what to install.

>>> require("json", "reading JSON", "nothing").__name__
'json'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tinyqml.classical.errors import ExportError

__all__ = ["require", "TFLITE_INSTALL", "ONNX_INSTALL"]

TFLITE_INSTALL = "pip install tflite-micro flatbuffers  (or: pip install 'tinyqml[classical]')"
ONNX_INSTALL = "pip install onnx onnxruntime  (or: pip install 'tinyqml[classical]')"


def require(name: str, purpose: str, install: str) -> ModuleType:
    """``import name``, or an :class:`ExportError` saying that ``purpose`` needs it and how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ExportError(f"{purpose} needs the {name.split('.')[0]} package: {install}") from exc
