"""Writing the classical tools' matplotlib figures: one place for the layout, resolution and clean-up.

>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt, tempfile, pathlib
>>> fig, ax = plt.subplots()
>>> save_figure(fig, plt, pathlib.Path(tempfile.mkdtemp()) / "sub" / "f.png").name
'f.png'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["save_figure"]


def save_figure(fig: Any, plt: Any, path: str | Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (folders created) at 120 dpi, close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
