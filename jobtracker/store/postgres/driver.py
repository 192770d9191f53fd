"""Where the PostgreSQL driver meets the store: error translation, the URL, sessions, migrations.

Every asyncpg failure becomes `StoreUnavailable` here (`driver_errors`, `unavailable`), so no
driver exception crosses into the server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from jobtracker.domain.errors import ConfigError, StoreUnavailable
from jobtracker.store.migrate import DATA_STEP_MARK, Migration, migrations
from jobtracker.store.postgres import lean
from jobtracker.store.postgres.plan import Conn
from jobtracker.store.postgres.sql import (
    MIGRATION_LOCK,
)

#: Every driver failure we turn into `StoreUnavailable` (connection refused arrives as OSError).
DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

#: Connections each store's pool may open (the LISTENers, the group committer's lanes and the
#: GETs' read lane, `batch_read.READ_LANES`, have their own); `?pool_size=N` in the URL changes it.
DEFAULT_POOL_SIZE = 10
#: Seconds to connect, and for any one statement, on the pool's and the commit lanes' connections.
CONNECT_TIMEOUT = 10
COMMAND_TIMEOUT = 60
POOL_SIZE_PARAM = "pool_size"
#: How long any statement may wait for a lock, and run, unless the URL sets them
#: (`?lock_timeout=5s&statement_timeout=30s`, PostgreSQL's own settings and units; 0 is no limit).
#: Every connection starts with them, so a request held up by another session's lock is answered
#: 503 (`StoreUnavailable`, which the SDK retries) instead of waiting without end.
DEFAULT_TIMEOUTS = (("lock_timeout", "2s"), ("statement_timeout", "5s"))


@asynccontextmanager
async def driver_errors(where: str) -> AsyncIterator[None]:
    """Where PostgreSQL errors cross over: a driver error becomes `StoreUnavailable`."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise unavailable(exc, where) from exc


def unavailable(exc: BaseException, where: str) -> StoreUnavailable:
    """The one translation of a driver error: `driver_errors` raises it, and so does the append
    path, which spells the same boundary as a plain `except` (see `PostgresStore.append`)."""
    detail = str(exc) or type(exc).__name__
    return StoreUnavailable(f"PostgreSQL store error while {where}: {detail}")


def pool_size_from(url: str) -> tuple[str, int | None]:
    """Take our own `pool_size=N` out of the URL's query (the rest are server settings)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    sizes = [value for key, value in query if key == POOL_SIZE_PARAM]
    if not sizes:
        return url, None
    if not sizes[-1].isdigit() or int(sizes[-1]) < 1:
        raise ConfigError(f"store URL: {POOL_SIZE_PARAM} must be a whole number >= 1")
    rest = urlencode([(key, value) for key, value in query if key != POOL_SIZE_PARAM])
    return urlunsplit(parts._replace(query=rest)), int(sizes[-1])


def with_timeouts(url: str) -> str:
    """The URL with our `DEFAULT_TIMEOUTS` for those it does not set itself."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {key for key, _ in query}
    missing = [(key, value) for key, value in DEFAULT_TIMEOUTS if key not in given]
    return urlunsplit(parts._replace(query=urlencode([*query, *missing])))


async def no_time_limits(conn: Conn) -> None:
    """Inside a transaction: lift the session's lock and statement timeouts until it ends.

    For migrations and replay, whose statements may rightly run long or wait behind appenders.
    """
    await conn.execute("SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0")


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def recorded_at(value: dt.datetime) -> str:
    """A `timestamptz` in the log's text form (the same as SQLite's: ISO 8601, UTC, `Z`)."""
    text = value.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


#: A migration's Python step (`migrate_postgres`'s `steps`): inside a transaction the runner
#: opened, move one batch of data; how many rows it moved (0: nothing is left). `last` is True in
#: the final transaction, which must first lock the source against writers.
DataStep = Callable[[Conn, bool], Awaitable[int]]


def _data_steps() -> dict[str, DataStep]:
    return {lean.LEAN_LOG: lean.copy_batch}


async def migrate_postgres(conn: Conn, steps: Mapping[str, DataStep] | None = None) -> list[str]:
    """Apply what is missing, each migration in one transaction with its record; their names.

    A transaction-level advisory lock makes a second process wait for the first, then find the
    record and skip: two servers starting on a fresh database never apply anything twice. A
    migration with a data step moves its data in batches first, each a transaction of its own,
    so an interrupted one resumes where it stopped (`store.migrate.DATA_STEP_MARK`).
    """
    steps = _data_steps() if steps is None else steps
    done: list[str] = []
    for migration in migrations("postgres"):
        step = steps.get(migration.name)
        if step is None and DATA_STEP_MARK in migration.sql:
            raise ConfigError(f"migration {migration.name} needs its data step")
        if step is not None:
            if await _with_data_step(conn, migration, step):
                done.append(migration.name)
            continue
        async with _migrating(conn) as applied:
            if migration.name in applied:
                continue
            await conn.execute(migration.sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", migration.name)
        done.append(migration.name)
    return done


@asynccontextmanager
async def _migrating(conn: Conn) -> AsyncIterator[set[str]]:
    """A migration transaction under the migration lock; the names applied so far."""
    async with conn.transaction():
        await no_time_limits(conn)
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        rows = await conn.fetch("SELECT name FROM schema_migrations")
        yield {row[0] for row in rows}


async def _with_data_step(conn: Conn, migration: Migration, step: DataStep) -> bool:
    """Apply a migration with a data step; False if it was applied already (by anyone)."""
    before, _, after = migration.sql.partition(DATA_STEP_MARK)
    async with _migrating(conn) as applied:
        if migration.name in applied:
            return False
        await conn.execute(before)  # safe to run again: it runs before every resumed attempt
    while True:
        async with _migrating(conn) as applied:
            if migration.name in applied:
                return False
            moved = await step(conn, False)
        if not moved:
            break
    async with _migrating(conn) as applied:
        if migration.name in applied:
            return False
        while await step(conn, True):
            pass
        await conn.execute(after)
        await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", migration.name)
    return True


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing to send to the server.

    asyncpg's default reset runs `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`,
    one more round trip for every checkout, which on a busy store costs about as much as the
    query itself. We never leave session state on a pooled connection: our advisory locks and
    settings are transaction-scoped (`pg_advisory_xact_lock`, `SET LOCAL`), the listeners have
    connections of their own, and we declare no cursors outside a transaction. asyncpg still
    rolls back a transaction left open before it calls this.
    """


T = TypeVar("T")


class PoolSide:
    """A part of `PostgresStore` (its job control, replay and inventory methods) that runs calls
    on a pooled connection; the store supplies `_open_pool`."""

    def _open_pool(self) -> asyncpg.Pool:
        raise NotImplementedError  # the store's own

    async def _on_connection(self, where: str, call: Callable[[Conn], Awaitable[T]]) -> T:
        """`call` on a connection of the pool, its driver errors ours (naming `where`)."""
        pool = self._open_pool()
        async with driver_errors(where), pool.acquire() as conn:
            return await call(conn)
