"""Named exceptions raised by tinyqml.classical (each also a :class:`ValueError`).

>>> issubclass(UnsupportedLayerError, CompressionError) and issubclass(CompressionError, ValueError)
True
"""

from __future__ import annotations

__all__ = [
    "CompressionError", "UnsupportedLayerError", "CalibrationError", "AlreadyQuantizedError",
    "LayerNotFoundError", "ExportError",
]


class CompressionError(ValueError):
    """Base of every tinyqml.classical error."""


class UnsupportedLayerError(CompressionError):
    """A layer type (or a use of it) that the tool at hand does not handle; the message names it."""


class CalibrationError(CompressionError):
    """Bad calibration data: an empty set, a wrong shape, values that are not finite."""


class AlreadyQuantizedError(CompressionError):
    """Quantizing a model (or a layer) that is already quantized."""


class LayerNotFoundError(CompressionError, KeyError):
    """A layer name that the model does not have; the message lists the names it has."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class ExportError(CompressionError):
    """A model that cannot be written in the requested format (the message says why)."""
