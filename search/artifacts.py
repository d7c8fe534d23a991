"""Heavy artefacts shared by the workers of a study: written once, atomically, loaded with ``weights_only``.

A distributed search often needs one expensive object before any trial runs: a trained supernet, a
trained SuperCircuit, a fitted predictor. :func:`shared_artifact` makes it exactly once per folder:

- the file exists: it is loaded (:func:`load_weights`: ``torch.load(..., weights_only=True)``, so a
  file planted in a shared folder cannot run code; tensors, dicts, lists, tuples, numbers and strings
  only);
- it does not: the process takes an exclusive lock (``fcntl.flock`` on ``path + ".lock"``), looks
  again (another process may have built it while this one waited), and only then calls ``build()``
  and writes the result with :func:`save_atomic`. Concurrent processes on one machine therefore
  build it once; processes of other machines that share the folder over NFS (where ``flock`` may not
  reach across machines) at worst build it twice, and never read a partial file.

:func:`save_atomic` writes to a temporary file in the same folder, checks that it loads back with
``weights_only=True`` (an object that the workers could not load is refused before it is published),
``fsync`` s it and renames it over ``path`` (``os.replace``, atomic on POSIX): readers see the old
file, no file, or the whole new one, never half of it; a failed ``build`` or ``save`` leaves nothing.

>>> import tempfile, torch
>>> folder = tempfile.mkdtemp()
>>> calls = []
>>> def build():
...     calls.append(1)
...     return {"w": torch.ones(2)}
>>> a = shared_artifact(f"{folder}/net.pt", build)
>>> b = shared_artifact(f"{folder}/net.pt", build)  # already there: loaded, not built
>>> len(calls), b["w"].tolist()
(1, [1.0, 1.0])
>>> load_weights(f"{folder}/missing.pt")
Traceback (most recent call last):
...
tinyqml.search.artifacts.ArtifactError: no artefact at '.../missing.pt'
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from tinyqml.search.errors import SearchError

__all__ = ["ArtifactError", "save_atomic", "load_weights", "shared_artifact", "lock_path"]

log = logging.getLogger(__name__)

#: what ``torch.load(weights_only=True)`` accepts, for the error messages
ACCEPTED = "tensors and dicts, lists, tuples, ints, floats, bools, strings or None of them (a state_dict)"


class ArtifactError(SearchError):
    """A shared artefact that is missing, corrupt, not loadable with ``weights_only=True``, or not writable."""


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of the artefact ``path`` (``path + ".lock"``)."""
    p = Path(path)
    return p.with_name(p.name + ".lock")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable, where the file system allows it: some cannot open or fsync a
    directory; the file itself is already fsynced and in place, so that only costs durability on a crash."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        log.debug("cannot open %s to fsync it: %s", folder, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        log.debug("cannot fsync the folder %s: %s", folder, exc)
    finally:
        os.close(fd)


def _refusal_reason(exc: BaseException) -> str:
    """What torch's weights_only ``UnpicklingError`` refused (``Unsupported operand 0``, ``Unsupported global:
    GLOBAL io.open was not an allowed global by default``), without its advice to load with
    ``weights_only=False`` or to allowlist the global."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return rest.split(". Please use", 1)[0].rstrip(".") or type(exc).__name__
    for line in lines:  # older torch: the reason on a line of its own
        if line.startswith(("Trying to load", "Unsupported")):
            return line.rstrip(".")
    return type(exc).__name__


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused an object
        raise ArtifactError(f"{str(path)!r} holds objects that weights_only=True refuses (accepted: {ACCEPTED}): "
                            f"{_refusal_reason(exc)}") from exc
    except Exception as exc:  # truncated or not torch's: RuntimeError, EOFError, struct.error, KeyError, ...
        raise ArtifactError(f"cannot read the artefact {str(path)!r} (corrupt or not written by torch.save): "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def save_atomic(state: Any, path: str | os.PathLike) -> Path:
    """Write ``state`` (a state_dict: see :data:`ACCEPTED`) to ``path`` atomically; returns the path.

    ``torch.save`` into a temporary file of the same folder, check it loads with ``weights_only=True``,
    ``fsync``, ``os.replace`` onto ``path``. On any failure the temporary file is removed and ``path``
    is left as it was (absent or the previous complete file)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ArtifactError(f"cannot write the artefact {str(path)!r}: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        _load(tmp)  # what the workers will do: refuse it now rather than in every worker
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from the other users of a shared folder
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, ArtifactError):
            raise ArtifactError(f"not saving {str(path)!r}: {exc}") from exc
        if isinstance(exc, (OSError, pickle.PicklingError, TypeError, AttributeError)):
            raise ArtifactError(f"cannot write the artefact {str(path)!r}: {type(exc).__name__}: {exc}") from exc
        raise
    _fsync_dir(path.parent)
    return path


def load_weights(path: str | os.PathLike) -> Any:
    """The object saved at ``path``, read with ``torch.load(path, weights_only=True, map_location="cpu")``;
    :class:`ArtifactError` when the file is missing, corrupt or holds anything but :data:`ACCEPTED`."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"no artefact at {str(path)!r}")
    return _load(path)


def shared_artifact(path: str | os.PathLike, build: Callable[[], Any]) -> Any:
    """The artefact at ``path``: loaded if it exists, else built once under an exclusive file lock and
    saved atomically (see the module's description); returns what :func:`load_weights` reads back, so
    the builder and every other process get the same object."""
    import fcntl

    if not callable(build):
        raise ArtifactError(f"build must be a callable returning a state_dict, got {type(build).__name__}")
    path = Path(path)
    if path.is_file():
        return load_weights(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path(path), "a+b")
    except OSError as exc:
        raise ArtifactError(f"cannot create the lock of the artefact {str(path)!r}: {exc}") from exc
    with lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if path.is_file():  # built by another process while this one waited for the lock
                log.info("artefact %s was built by another process", path)
                return load_weights(path)
            log.info("building the artefact %s", path)
            save_atomic(build(), path)
            return load_weights(path)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
