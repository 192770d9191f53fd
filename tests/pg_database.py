"""A throwaway PostgreSQL database per test run, and a fresh schema per test inside it.

The server comes from $JOBTRACKER_TEST_POSTGRES (default: the local one). Outside CI an unreachable
server skips the PostgreSQL tests with the reason; with CI=true it fails them, so a CI machine
without PostgreSQL can never pass by running less.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from jobtracker.store.postgres.sql import APPEND_CHANNEL

T = TypeVar("T")

TEST_SERVER_ENV = "JOBTRACKER_TEST_POSTGRES"
DEFAULT_TEST_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    """The administrative URL tests create their database through."""
    return os.environ.get(TEST_SERVER_ENV) or DEFAULT_TEST_SERVER


def with_path(url: str, path: str, query: str = "") -> str:
    """`url` pointing at another database (and query)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even while a test's loop exists."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(server_url(), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _in_database(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def unique_name(prefix: str) -> str:
    """A name no other test run picks: the pid and a random suffix."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


_run: dict[str, str] = {}


def run_database() -> str:
    """This run's own database, made on first use and dropped at exit.

    Without a server the calling test is skipped, or failed under CI=true.
    """
    if "url" not in _run and "unreachable" not in _run:
        name = unique_name("jobtracker_test")
        try:
            run_sync(_admin(f'CREATE DATABASE "{name}"'))
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            _run["unreachable"] = (
                f"PostgreSQL at {server_url()} is unreachable ({exc}); set {TEST_SERVER_ENV}"
            )
        else:
            _run["url"] = with_path(server_url(), f"/{name}")
            atexit.register(_drop_database, name)
    if "unreachable" in _run:
        if os.environ.get("CI") == "true":
            pytest.fail(_run["unreachable"], pytrace=False)
        pytest.skip(_run["unreachable"])
    return _run["url"]


async def create_database(prefix: str) -> tuple[str, str]:
    """A database of a test's own: its name and URL (drop it with `drop_database`)."""
    name = unique_name(prefix)
    await _admin(f'CREATE DATABASE "{name}"')
    return name, with_path(server_url(), f"/{name}")


async def drop_database(name: str) -> None:
    """Drop a test's own database, whoever is still connected."""
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_database(name: str) -> None:
    # At exit no loop runs any more, and executors refuse new work: plain asyncio.run.
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_database() -> str:
    """This run's own database (see `run_database`)."""
    return run_database()


def new_schema_url(database_url: str) -> str:
    """Create an empty schema in the test database; the URL whose search_path is that schema."""
    schema = unique_name("t")
    run_sync(_in_database(database_url, f'CREATE SCHEMA "{schema}"'))
    return with_path(database_url, urlsplit(database_url).path, f"search_path={schema}")


def drop_schema(url: str) -> None:
    """Drop the schema a `new_schema_url` URL points at, with everything in it."""
    schema = urlsplit(url).query.removeprefix("search_path=")
    run_sync(_in_database(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


async def listeners(url: str, channel: str = APPEND_CHANNEL) -> set[int]:
    """Sessions of this database whose LISTEN on `channel` has completed: a NOTIFY committed from
    now on reaches them (the listener's own state, as the server reports it)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'idle' AND query ILIKE $1",
            f"LISTEN %{channel}%",
        )
    finally:
        await conn.close()
    return {row["pid"] for row in rows}
