"""tinyqml: efficient machine learning on small and noisy hardware."""

__version__ = "0.1.0"

__all__ = ["__version__"]
