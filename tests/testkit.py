"""Helpers that several test files share (on ``sys.path`` through pytest's ``pythonpath = ["tests"]``).

- :func:`package_modules`: every module of the import package ``tinyqml``;
- :func:`time_limit`: a wall-clock limit on a block (fuzzing: no case may hang);
- :func:`load_test_module`: another test file as a module, to share its strategies or mutators.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import pkgutil
import signal
from pathlib import Path
from types import ModuleType
from typing import Iterator

import tinyqml

#: top-level packages of the optional extras; modules that need them are skipped when these are absent
OPTIONAL = {"pennylane", "qiskit", "qiskit_aer", "qiskit_ibm_runtime", "qiskit_qasm3_import", "openqasm3", "qulacs"}


def package_modules() -> list[str]:
    """Every module of the import package: the top-level ones (cli, classifier, commands, demo, ...) and the
    four areas, whose folders lie elsewhere (package-dir mapping)."""
    names = ["tinyqml"] + [m.name for m in pkgutil.walk_packages(tinyqml.__path__, prefix="tinyqml.")]
    for area in ("qml", "noise", "classical", "search"):
        pkg = importlib.import_module(f"tinyqml.{area}")
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + ".")]
    return sorted(set(names))


class TimeLimitExceeded(BaseException):
    """A block ran past its limit (a BaseException, so that no ``except Exception`` in the code under test
    hides it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`TimeLimitExceeded` in the main thread after ``seconds`` of wall-clock time (SIGALRM; no
    limit where SIGALRM is missing)."""
    if not hasattr(signal, "setitimer"):  # pragma: no cover - Windows
        yield
        return

    def fire(signum, frame):  # type: ignore[no-untyped-def]
        raise TimeLimitExceeded(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def load_test_module(path: Path, name: str) -> ModuleType:
    """The test file ``path`` as a module named ``name`` (its tests are not collected again)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
