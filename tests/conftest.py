"""Fixtures shared by the whole suite: a PostgreSQL server for the distributed-search tests.

``make test`` starts a throwaway server on loopback (``.ci/postgres start``), passes its URL as
``TINYQML_TEST_POSTGRES_URL`` and stops it afterwards. Without that variable the PostgreSQL tests skip,
unless ``TINYQML_REQUIRE_POSTGRES`` is set (CI sets it): then they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

URL_VAR = "TINYQML_TEST_POSTGRES_URL"
REQUIRE_VAR = "TINYQML_REQUIRE_POSTGRES"
HOW = "run `make test`, or `.ci/postgres start` and export TINYQML_TEST_POSTGRES_URL=$(.ci/postgres url)"


def _unavailable(reason: str) -> None:
    """Skip (or, when PostgreSQL is required, fail) with ``reason``."""
    if os.environ.get(REQUIRE_VAR):
        pytest.fail(f"{reason} ({REQUIRE_VAR} is set, so PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def _connect(url: str, timeout: int = 5) -> Any:
    """An autocommit DB-API connection to ``url`` (psycopg2, else psycopg 3), failing within ``timeout`` seconds."""
    dsn = urlunsplit(urlsplit(url)._replace(scheme="postgresql"))  # drop a SQLAlchemy driver suffix (+psycopg2)
    try:
        import psycopg2 as driver
    except ModuleNotFoundError:
        try:
            import psycopg as driver  # type: ignore[no-redef]
        except ModuleNotFoundError:
            _unavailable("no PostgreSQL driver (psycopg2 or psycopg): pip install -e '.[distributed]'")
    conn = driver.connect(dsn, connect_timeout=timeout)
    conn.autocommit = True
    return conn


def _with_database(url: str, name: str) -> str:
    """``url`` pointing at the database ``name`` (same server, same credentials)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of the test server (``TINYQML_TEST_POSTGRES_URL``), checked to answer."""
    url = os.environ.get(URL_VAR, "").strip()
    if not url:
        _unavailable(f"no PostgreSQL server for the tests: {URL_VAR} is not set; {HOW}")
    try:
        _connect(url).close()
    except Exception as exc:  # the driver's OperationalError: the variable names a server that does not answer
        pytest.fail(f"{URL_VAR}={url!r} does not answer: {type(exc).__name__}: {str(exc).strip()}; {HOW}",
                    pytrace=False)
    return url


@pytest.fixture
def postgres_storage(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server for one test (dropped afterwards): its URL."""
    name = f"tinyqml_t_{secrets.token_hex(6)}"
    conn = _connect(postgres_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    try:
        yield _with_database(postgres_url, name)
    finally:
        conn = _connect(postgres_url)
        try:
            with conn.cursor() as cur:  # FORCE: end the connections that workers or pools of the test left open
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()


# -- the tinyqml console script ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tinyqml_command() -> list[str]:
    """The installed ``tinyqml`` console script next to this interpreter, else ``python -m tinyqml.cli``."""
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "tinyqml"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tinyqml.cli"]


@pytest.fixture(scope="session")
def cli_run(tinyqml_command: list[str]):  # type: ignore[no-untyped-def]
    """``cli_run(*args)`` runs ``tinyqml *args`` in a subprocess (2 minutes at most) and returns the result."""
    import subprocess

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*tinyqml_command, *args], capture_output=True, text=True, timeout=timeout)

    return run
