"""Where a study lives: in memory, an embedded SQLite file, or a PostgreSQL server shared by many workers.

:func:`open_storage` turns a storage string into an optuna storage: ``":memory:"`` (one process),
a bare path or ``sqlite:///path`` (an embedded file; several local processes may share it), or any
SQLAlchemy URL such as ``postgresql://user@host:5432/db`` (any number of processes on any number of
machines). File and server storages get optuna's **heartbeat**: a running trial records a heartbeat
every ``interval`` seconds; a worker that finds a trial silent for ``grace`` seconds (its process was
killed, its machine lost) marks it failed and — through optuna's ``RetryFailedTrialCallback`` —
enqueues a copy with the same parameters, so the crashed evaluation is retried by whoever asks next.

>>> import optuna
>>> open_storage(":memory:") is None
True
>>> s = open_storage("sqlite:///:memory:", HeartbeatConfig(interval=1, grace=3))
>>> isinstance(s, optuna.storages.RDBStorage), s.heartbeat_interval, s.grace_period
(True, 1, 3)
>>> HeartbeatConfig(interval=5, grace=2)
Traceback (most recent call last):
...
tinyqml.search.errors.SearchError: HeartbeatConfig.grace (2 s) must exceed the heartbeat interval (5 s)
"""

from __future__ import annotations

import contextlib
import datetime
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import optuna

from tinyqml.search.errors import SearchError

__all__ = ["HeartbeatConfig", "DEFAULT_STORAGE", "storage_url", "open_storage", "quiet_optuna_warnings", "redact_url"]

#: where studies live unless told otherwise (an embedded SQLite file)
DEFAULT_STORAGE = "sqlite:///runs/search.db"


@dataclass(frozen=True)
class HeartbeatConfig:
    """Seconds between heartbeats of a running trial, seconds of silence after which it is stale (failed),
    and how many times a stale trial is retried with the same parameters (``None``: without limit)."""

    interval: int = 2
    grace: int = 10
    max_retry: int | None = 3

    def __post_init__(self) -> None:
        for name in ("interval", "grace"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SearchError(f"HeartbeatConfig.{name} must be a positive int (seconds), got {v!r}")
        if self.grace <= self.interval:
            raise SearchError(f"HeartbeatConfig.grace ({self.grace} s) must exceed the heartbeat interval "
                              f"({self.interval} s)")
        if self.max_retry is not None and (isinstance(self.max_retry, bool) or not isinstance(self.max_retry, int)
                                           or self.max_retry < 0):
            raise SearchError(f"HeartbeatConfig.max_retry must be an int >= 0 or None, got {self.max_retry!r}")


def storage_url(storage: str) -> str | None:
    """An optuna storage URL for ``storage`` (``None``: in memory); a bare path is a SQLite file."""
    if storage == ":memory:":
        return None
    if not isinstance(storage, str) or not storage:
        raise SearchError(f"storage must be a URL, a SQLite file path or ':memory:', got {storage!r}")
    if "://" not in storage:
        storage = f"sqlite:///{storage}"
    if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        path = Path(storage[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
    return storage


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # several local processes: wait for the file lock
    kw: dict = {"pool_pre_ping": True}  # a server: reconnect after a dropped connection
    if url.startswith("postgresql") and "connect_timeout" not in url:
        kw["connect_args"] = {"connect_timeout": 10}  # a silent server fails in seconds instead of hanging
    return kw


def open_storage(storage: str, heartbeat: HeartbeatConfig | None = HeartbeatConfig()) -> optuna.storages.BaseStorage | None:
    """The optuna storage of ``storage`` (``None`` for ``":memory:"``), with the heartbeat and the retry
    of stale trials unless ``heartbeat`` is ``None``. A server that cannot be reached is a
    :class:`~tinyqml.search.errors.SearchError` naming the URL (without its password)."""
    url = storage_url(storage)
    if url is None:
        return None
    if heartbeat is not None and not isinstance(heartbeat, HeartbeatConfig):
        raise SearchError(f"heartbeat must be a HeartbeatConfig or None, got {type(heartbeat).__name__}")
    kw = {}
    if heartbeat is not None:
        kw = {"heartbeat_interval": heartbeat.interval, "grace_period": heartbeat.grace,
              "heartbeat_stale_trial_callback": _retry_callback(heartbeat.max_retry)}
    _check_host(url)
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            with quiet_optuna_warnings():
                return _HeartbeatStorage(url, engine_kwargs=_engine_kwargs(url), **kw)
        except ImportError as exc:  # optuna reports a missing driver as ImportError
            raise SearchError(f"the storage {_safe(url)} needs its database driver ({exc}); for PostgreSQL "
                              f"install tinyqml[distributed] (psycopg)") from exc
        except Exception as exc:  # sqlalchemy.exc.OperationalError and friends: say which server
            if _schema_race(exc) and attempt + 1 < _SCHEMA_ATTEMPTS:
                time.sleep(0.2 * (attempt + 1))  # another worker is creating the tables right now
                continue
            raise SearchError(f"cannot open the storage {_safe(url)}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


#: tries to open a storage whose schema other workers are creating at the same moment
_SCHEMA_ATTEMPTS = 8


def _schema_race(exc: Exception) -> bool:
    """True for the errors of two processes creating optuna's tables at once (SQLite or PostgreSQL)."""
    text = str(exc).lower()
    return any(s in text for s in ("already exists", "duplicate key", "unique constraint", "database is locked"))


class _HeartbeatStorage(optuna.storages.RDBStorage):
    """optuna's RDB storage whose stale trials also include a running trial that never recorded a
    heartbeat (its worker died between creating the trial and starting the heartbeat thread) once it is
    older than the grace period; optuna skips those, and they would hold a study open forever."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = list(super()._get_stale_trial_ids(study_id))
        grace = self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 1)
        limit = datetime.datetime.now() - datetime.timedelta(seconds=grace)  # optuna stamps starts with now()
        for t in self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if t._trial_id in stale or t.datetime_start is None or t.datetime_start > limit:
                continue
            if not self._has_heartbeat(t._trial_id):
                stale.append(t._trial_id)
        return stale

    def _has_heartbeat(self, trial_id: int) -> bool:
        from optuna.storages._rdb import models

        session = self.scoped_session()
        try:
            return session.query(models.TrialHeartbeatModel).filter(
                models.TrialHeartbeatModel.trial_id == trial_id).first() is not None
        finally:
            session.close()


@contextlib.contextmanager
def quiet_optuna_warnings() -> Iterator[None]:
    """Silence optuna's ExperimentalWarning (the heartbeat API is marked experimental) inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _retry_callback(max_retry: int | None) -> object:
    """optuna's callback that re-enqueues a stale trial with its parameters (renamed in optuna 4.9)."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with quiet_optuna_warnings():
        return cls(max_retry=max_retry)


#: a password given as a query parameter (``?password=...``, libpq's spelling)
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def redact_url(url: str) -> str:
    """``url`` with its password (``user:PASSWORD@host`` or a ``password=`` query parameter) replaced by
    ``***``: what log lines, progress lines and error messages show of a storage URL.

    Everything between the user name and the last ``@`` is masked, so a password holding ``@`` or ``/``
    never shows, whichever way a driver would split it.

    >>> redact_url("postgresql://tinyqml:secret@db.example.org:5432/tinyqml")
    'postgresql://tinyqml:***@db.example.org:5432/tinyqml'
    >>> redact_url("postgresql://db.example.org/tinyqml?user=tinyqml&password=secret&connect_timeout=5")
    'postgresql://db.example.org/tinyqml?user=tinyqml&password=***&connect_timeout=5'
    >>> redact_url("sqlite:///runs/search.db")
    'sqlite:///runs/search.db'
    """
    out = str(url)
    if "://" in out and "@" in out:
        scheme, rest = out.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        out = f"{scheme}://{user}{':***' if ':' in cred else ''}@{host}"
    return _QUERY_PASSWORD.sub(r"\1***", out)


def _safe(url: str) -> str:
    """``url`` with any password replaced by ``***``, quoted (``repr``)."""
    return repr(redact_url(url))


def _check_host(url: str) -> None:
    """Refuse a server URL whose host, as SQLAlchemy reads it, holds an ``@``: a password with a raw ``@``
    (SQLAlchemy ends the password at the first ``@``, so the rest of it would become the host name, and the
    driver's error would print it)."""
    if url.startswith("sqlite"):
        return
    try:
        from sqlalchemy.engine import make_url

        host = make_url(url).host
    except Exception as exc:  # sqlalchemy.exc.ArgumentError and friends; their text may hold the URL
        raise SearchError(f"cannot parse the storage URL {_safe(url)} ({type(exc).__name__}); accepted: "
                          f"dialect[+driver]://user:password@host[:port]/database with a numeric port") from exc
    if host and "@" in host:
        raise SearchError(f"the storage URL {_safe(url)} holds a raw '@' in its user name or password (the rest "
                          f"would be read as the host name); percent-encode it as %40")
