"""Tests of tinyqml.search.storage: in memory, SQLite files, a PostgreSQL server, and servers that do not answer."""

from __future__ import annotations

import socket
import time
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from tinyqml.search.errors import SearchError
from tinyqml.search.storage import (
    DEFAULT_STORAGE,
    HeartbeatConfig,
    _engine_kwargs,
    _safe,
    open_storage,
    quiet_optuna_warnings,
    storage_url,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
FAST = HeartbeatConfig(interval=1, grace=3, max_retry=2)


def _round_trip(storage: str) -> None:
    """A study created on ``storage`` keeps a trial that a second, independent storage object reads back."""
    study = optuna.create_study(study_name="rt", storage=open_storage(storage, FAST), direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0) + t.suggest_int("n", 1, 3), n_trials=2)
    again = optuna.load_study(study_name="rt", storage=open_storage(storage, FAST))
    trials = again.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert again.best_trial.params == study.best_trial.params
    assert again.best_value == pytest.approx(study.best_value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- HeartbeatConfig

def test_heartbeat_defaults_and_validation():
    hb = HeartbeatConfig()
    assert (hb.interval, hb.grace, hb.max_retry) == (2, 10, 3)
    assert HeartbeatConfig(interval=1, grace=2, max_retry=None).max_retry is None
    for bad in ({"interval": 0}, {"interval": True}, {"interval": 1.5}, {"grace": -1}, {"interval": 5, "grace": 5},
                {"max_retry": -1}, {"max_retry": True}, {"max_retry": 1.0}):
        with pytest.raises(SearchError, match="HeartbeatConfig"):
            HeartbeatConfig(**bad)


# ---------------------------------------------------------------- storage_url

def test_storage_url_forms(tmp_path):
    assert storage_url(":memory:") is None
    assert storage_url("sqlite:///:memory:") == "sqlite:///:memory:"
    path = tmp_path / "deep" / "er" / "s.db"
    assert storage_url(str(path)) == f"sqlite:///{path}"
    assert path.parent.is_dir()  # the folder of a SQLite file is created
    assert storage_url(f"sqlite:///{tmp_path}/x/y.db") == f"sqlite:///{tmp_path}/x/y.db"
    assert (tmp_path / "x").is_dir()
    pg = "postgresql://u:p@db.example:5432/studies"
    assert storage_url(pg) == pg
    assert DEFAULT_STORAGE.startswith("sqlite:///")
    for bad in ("", None, 3):
        with pytest.raises(SearchError, match="storage must be"):
            storage_url(bad)


# ---------------------------------------------------------------- open_storage: memory and SQLite

def test_memory_is_none():
    assert open_storage(":memory:") is None
    assert open_storage(":memory:", None) is None


def test_sqlite_memory_has_heartbeat():
    s = open_storage("sqlite:///:memory:", FAST)
    assert isinstance(s, optuna.storages.RDBStorage)
    assert (s.heartbeat_interval, s.grace_period) == (1, 3)
    assert s.heartbeat_stale_trial_callback is not None


def test_sqlite_file_heartbeat_and_round_trip(tmp_path):
    path = tmp_path / "runs" / "s.db"
    s = open_storage(str(path), FAST)
    assert isinstance(s, optuna.storages.RDBStorage)
    assert (s.heartbeat_interval, s.grace_period) == (1, 3)
    assert path.exists()
    _round_trip(str(path))


def test_sqlite_without_heartbeat(tmp_path):
    s = open_storage(f"sqlite:///{tmp_path}/s.db", None)
    assert isinstance(s, optuna.storages.RDBStorage)
    assert s.heartbeat_interval is None and s.grace_period is None


def test_bad_heartbeat_type(tmp_path):
    with pytest.raises(SearchError, match="heartbeat must be a HeartbeatConfig"):
        open_storage(str(tmp_path / "s.db"), {"interval": 1})


def test_sqlite_waits_for_the_file_lock_and_servers_ping():
    assert _engine_kwargs("sqlite:///x.db")["connect_args"]["timeout"] >= 10
    pg = _engine_kwargs("postgresql://u@h/db")
    assert pg["pool_pre_ping"] is True
    assert 0 < pg["connect_args"]["connect_timeout"] <= 30  # a silent server fails instead of hanging
    assert "connect_args" not in _engine_kwargs("postgresql://u@h/db?connect_timeout=3")  # the URL's own wins


# ---------------------------------------------------------------- PostgreSQL

def test_postgresql_heartbeat_and_round_trip(postgres_storage):
    s = open_storage(postgres_storage, FAST)
    assert isinstance(s, optuna.storages.RDBStorage)
    assert (s.heartbeat_interval, s.grace_period) == (1, 3)
    assert s.heartbeat_stale_trial_callback is not None
    _round_trip(postgres_storage)


def test_postgresql_databases_are_per_test(postgres_storage):
    # the fixture gives every test its own empty database: no study of another test is visible
    assert optuna.get_all_study_names(open_storage(postgres_storage, FAST)) == []


def test_unreachable_server_names_the_url_without_its_password():
    url = f"postgresql://u:secret@127.0.0.1:{_closed_port()}/x"
    t0 = time.monotonic()
    with pytest.raises(SearchError) as err:
        open_storage(url, FAST)
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "secret" not in msg
    assert "postgresql://u:***@127.0.0.1:" in msg


@pytest.mark.slow
def test_silent_server_times_out():
    # a server that accepts the connection and never answers (a hung or blackholed host) fails in seconds
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # never accepted: the kernel completes the handshake, nothing ever answers
    try:
        url = f"postgresql://u:secret@127.0.0.1:{srv.getsockname()[1]}/x"
        t0 = time.monotonic()
        with pytest.raises(SearchError, match=r"u:\*\*\*@127\.0\.0\.1") as err:
            open_storage(url, FAST)
        assert time.monotonic() - t0 < 30
        assert "secret" not in str(err.value)
    finally:
        srv.close()


# ---------------------------------------------------------------- helpers

def test_safe_masks_passwords():
    assert _safe("postgresql://u:secret@h:5432/db") == repr("postgresql://u:***@h:5432/db")
    assert _safe("postgresql://u:p@ss@h/db") == repr("postgresql://u:***@h/db")  # '@' inside the password
    assert _safe("postgresql://u@h/db") == repr("postgresql://u@h/db")
    assert _safe("sqlite:///runs/s.db") == repr("sqlite:///runs/s.db")
    assert _safe("runs/s.db") == repr("runs/s.db")


def test_quiet_optuna_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_optuna_warnings():
            warnings.warn("experimental", optuna.exceptions.ExperimentalWarning)
        assert caught == []
        warnings.warn("experimental", optuna.exceptions.ExperimentalWarning)
        assert [type(w.message) for w in caught] == [optuna.exceptions.ExperimentalWarning]
