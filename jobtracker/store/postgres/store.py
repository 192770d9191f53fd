"""The PostgreSQL store: one database shared by many workers and many API servers.

asyncpg with a connection pool. Appends go through `lanes` and `commit` (group commit, the pure
fold inside the transaction, gap-safe positions); job creation, reads and keys are single
statements here. LISTEN/NOTIFY only hints that the log grew: `wait_for_append` always re-reads
the store and polls when no hint comes, so a lost notification costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import asyncpg
import orjson

from jobtracker.domain.errors import InvalidInput, JobIdTaken, StoreUnavailable
from jobtracker.domain.events import Created, NewEvent, RecordedEvent, new_event_id
from jobtracker.domain.projection import start
from jobtracker.domain.state import JobState, RowError
from jobtracker.domain.stored import encode_data, pack_event_id
from jobtracker.store.base import (
    ApiKey,
    AppendResult,
    JobChange,
    JobView,
    StorageStats,
    expired_id,
    utc_now,
)
from jobtracker.store.migrate import missing_migrations
from jobtracker.store.postgres import deadlines, lean, stats
from jobtracker.store.postgres.batch_read import BatchReader, connect_reader
from jobtracker.store.postgres.commit import BeforeCommit, no_pause, once_more_if_cut
from jobtracker.store.postgres.deadlines import DeadlineSide
from jobtracker.store.postgres.driver import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    DEFAULT_POOL_SIZE,
    DRIVER_ERRORS,
    driver_errors,
    keep_session,
    migrate_postgres,
    pool_size_from,
    redacted,
    unavailable,
    with_timeouts,
)
from jobtracker.store.postgres.inventory import InventorySide
from jobtracker.store.postgres.keys import KeyCache
from jobtracker.store.postgres.lanes import GroupCommitter
from jobtracker.store.postgres.listen import AppendHints
from jobtracker.store.postgres.plan import storable
from jobtracker.store.postgres.reading import read_job
from jobtracker.store.postgres.replaying import ReplaySide
from jobtracker.store.postgres.sql import (
    APPEND_CHANNEL,
    INSERT_CREATED,
    INSERT_JOB,
    POSITION_LOCK,
    SELECT_JOB,
)
from jobtracker.store.postgres.webhooks import PostgresWebhooks
from jobtracker.store.rows import state_from_row, state_to_row

T = TypeVar("T")
_KEY_COLUMNS = "key_id, name, scope, key_hash, created_at, revoked_at"
# A key with its binding (migration 0004), in one read: the binding must not cost a second lookup.
_SELECT_KEY = (
    f"SELECT {_KEY_COLUMNS}, all_owners, "  # noqa: S608
    "array(SELECT owner_key_id FROM worker_key_owners AS bound "
    "WHERE bound.key_id = api_keys.key_id) FROM api_keys"
)


def _encoded(created: Created) -> str:
    try:
        return encode_data(created)
    except orjson.JSONEncodeError:
        raise InvalidInput("created: text must be valid UTF-8") from None


def _api_key(row: asyncpg.Record) -> ApiKey:
    key_id, name, scope, key_hash, created_at, revoked_at, all_owners, owners = row
    return ApiKey(
        key_id, name, scope, key_hash, created_at, revoked_at,
        all_owners=all_owners, owners=owners,
    )


class PostgresStore(ReplaySide, DeadlineSide, InventorySide):
    """The PostgreSQL store: a pool of connections, group-committed appends, gap-safe positions."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int | None = None,
        group_commit: bool = True,
        poll_interval: float = 1.0,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        without_size, from_url = pool_size_from(url)
        self.url = with_timeouts(without_size)
        self._pool_size = pool_size or from_url or DEFAULT_POOL_SIZE
        self._group_commit = group_commit
        self._poll_interval = poll_interval
        self._before_commit = before_commit
        self._pool: asyncpg.Pool | None = None
        self._committer: GroupCommitter | None = None
        self._hints: AppendHints | None = None
        self._key_cache: KeyCache | None = None
        self._reader: BatchReader | None = None
        self._observe_groups: Callable[[int], None] | None = None
        #: Webhook subscriptions and deliveries, on the same pool.
        self.webhooks = PostgresWebhooks(self._open_pool)

    async def open(self) -> None:
        """Connect the pool, migrate, start the group committer."""
        async with driver_errors(f"connecting to {redacted(self.url)}"):
            pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                reset=keep_session,
            )
        try:
            async with driver_errors("migrating"), pool.acquire() as conn:
                await migrate_postgres(conn)
        except BaseException:
            pool.terminate()  # a store that failed to open holds no connections
            raise
        self._pool = pool
        self._reader = BatchReader(functools.partial(connect_reader, self.url))
        self._hints = AppendHints(self.url, self._poll_interval)
        self._key_cache = KeyCache(self.url, self._poll_interval)
        self._committer = GroupCommitter(
            pool,
            self._connect,
            grouped=self._group_commit,
            before_commit=self._before_commit or no_pause,
            after_commit=self._appended,
        )
        self._committer.observe = self._observe_groups
        self._committer.start()

    async def close(self) -> None:
        """Commit what is queued, close the listener and the pool; closing twice is harmless."""
        committer, pool, hints = self._committer, self._pool, self._hints
        key_cache, self._key_cache = self._key_cache, None
        reader, self._reader = self._reader, None
        self._committer = self._pool = self._hints = None
        async with driver_errors("closing"):
            if reader is not None:
                await reader.close()
            if key_cache is not None:
                await key_cache.close()
            if committer is not None:
                await committer.stop()
            if hints is not None:
                await hints.close()
            if pool is not None:
                await pool.close()

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        """A connection outside the pool (the group committer's lanes keep one each)."""
        return await asyncpg.connect(
            self.url, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT
        )

    @property
    def groups_in_flight(self) -> int:
        """Append groups being committed right now (tests and benchmarks watch the lanes)."""
        return 0 if self._committer is None else self._committer.in_flight

    def _open_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("The PostgreSQL store is not open")
        return self._pool

    async def _fetch(self, where: str, query: str, *args: Any) -> list[asyncpg.Record]:
        pool = self._open_pool()
        async with driver_errors(where):
            return await once_more_if_cut(pool, lambda: pool.fetch(query, *args))

    async def _fetchrow(self, where: str, query: str, *args: Any) -> asyncpg.Record | None:
        pool = self._open_pool()
        async with driver_errors(where):
            return await once_more_if_cut(pool, lambda: pool.fetchrow(query, *args))

    async def create_job(self, job_id: str, created: Created) -> tuple[JobState, bool]:
        """Create a job durably, or return the owner's existing one."""
        if not storable(job_id):
            raise InvalidInput("job_id: must be valid UTF-8 text without NUL")
        state = start(job_id, created)
        data = _encoded(created)
        pool = self._open_pool()
        async with driver_errors("creating a job"), pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(INSERT_JOB, *state_to_row(state)) is None:
                # Taken: ON CONFLICT waited for the other creator to commit, so its row is here;
                # no row: the id has a tombstone (`INSERT_JOB` inserts nothing for one).
                row = await conn.fetchrow(SELECT_JOB, job_id)
                if row is None:
                    raise JobIdTaken(expired_id(job_id))
                existing = state_from_row(tuple(row))
                if existing.owner != created.owner:
                    raise JobIdTaken(f"job_id: {job_id!r} is already used by another API key")
                return existing, False
            event_id = pack_event_id(new_event_id())
            written = await conn.fetchval(
                INSERT_CREATED,
                POSITION_LOCK,
                APPEND_CHANNEL,
                job_id,
                bytes([lean.CODES[Created]]),
                event_id if isinstance(event_id, bytes) else None,
                None if isinstance(event_id, bytes) else [event_id],
                data,
            )
            if written is None:  # a prune took a job of this id while we waited for it
                raise JobIdTaken(expired_id(job_id))
            await deadlines.watch(conn, job_id, created, time.time())
        self._appended(0)
        return state, True

    async def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Validate the batch with the fold and write it with its projection, or write nothing."""
        committer = self._committer
        if committer is None:
            raise StoreUnavailable("The PostgreSQL store is not open")
        # Not `driver_errors`: an async context manager costs an async generator, its hooks and
        # a weak reference per call, and this runs once per request on the group-commit path.
        try:
            return await committer.append(job_id, items)
        except DRIVER_ERRORS as exc:
            raise unavailable(exc, "appending") from exc

    async def get_job(self, job_id: str, errors_limit: int) -> JobView | None:
        """The projection of one job, read by a query that started after this call (so whatever
        any process had committed by then shows); row errors are read only for a SUCCESS body."""
        if self._reader is None:
            raise StoreUnavailable("The PostgreSQL store is not open")
        return await read_job(self._reader, self._open_pool(), job_id, errors_limit)

    async def read_job_events(
        self, job_id: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        """One job's history, oldest first."""
        if not storable(job_id):
            return []
        rows = await self._fetch(
            "reading a job's events", lean.JOB_PAGE, after_version, limit, job_id
        )
        return lean.recorded_events(rows, after_version, limit, by_version=True)

    async def read_job_errors(
        self, job_id: str, after_row: int = -1, limit: int = 1000
    ) -> list[RowError]:
        """One job's row errors with a row above `after_row`, in row order."""
        if not storable(job_id):
            return []
        rows = await self._fetch(
            "reading row errors",
            "SELECT row, email, error FROM job_errors "
            "WHERE job_id = $1 AND row > $2 ORDER BY row LIMIT $3",
            job_id,
            after_row,
            limit,
        )
        return [RowError(*row) for row in rows]

    async def read_log(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """The log in position order; safe to tail (positions become visible in order)."""
        rows = await self._fetch("reading the log", lean.LOG_PAGE, after_position, limit)
        return lean.recorded_events(rows, after_position, limit, by_version=False)

    async def changes_since(self, after_position: int, limit: int = 1000) -> list[JobChange]:
        """Jobs with events after `after_position`, oldest change first, one entry per job.

        Never skips an event: positions become visible in order (see `sql.write_group`).
        """
        rows = await self._fetch("reading changes", lean.LOG_HEADS, after_position, limit)
        return [JobChange(*head) for head in lean.heads(rows, after_position, limit)]

    async def last_position(self) -> int:
        """The newest position in the log, 0 when it is empty."""
        row = await self._fetchrow(
            "reading the log head",
            "SELECT coalesce(max(last_position), 0) AS head FROM log",
        )
        return int(row["head"]) if row is not None else 0

    def on_append(self, wake: Callable[[], None]) -> bool:
        """Call `wake` when any process may have appended: our commits, and NOTIFY from others."""
        self._open_hints().subscribe(wake)
        return True

    async def wait_for_append(self, after_position: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until the log holds an event past `after_position`; False if `timeout` passed first.

        `timeout` is a parameter (not `asyncio.timeout`) because running out is an answer, not an
        error. Notifications only cut the wait short: the answer always comes from reading the
        store, and without them (listener down, notification lost) it polls every `poll_interval`.
        """
        hints = self._open_hints()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = hints.changed()  # taken before reading, so a later append still wakes us
            if await self.last_position() > after_position:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await hints.ensure_listening()
            with suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, self._poll_interval))

    def _open_hints(self) -> AppendHints:
        if self._hints is None:
            raise StoreUnavailable("The PostgreSQL store is not open")
        return self._hints

    def _appended(self, head: int) -> None:
        if self._hints is not None:
            self._hints.wake()

    async def job_counts(self) -> dict[str, int]:
        """Jobs by status: `current_job_counts()` (migration 0005) folds the changes the triggers
        noted since the last read into the counts, so a read costs those changes, not a count."""
        rows = await self._fetch("reading job counts", "SELECT * FROM current_job_counts()")
        return {status: int(count) for status, count in rows}

    async def storage_stats(self) -> StorageStats:
        """See `Store.storage_stats`."""
        return await self._on_connection("reading storage sizes", stats.storage_stats)

    async def missing_migrations(self) -> list[str]:
        """The migrations of this version not applied to the database."""
        rows = await self._fetch("reading the schema version", "SELECT name FROM schema_migrations")
        return missing_migrations("postgres", (row["name"] for row in rows))

    def on_commit_group(self, observe: Callable[[int], None]) -> None:
        """Tell `observe` the size of every group of appends committed (see `lanes`)."""
        self._observe_groups = observe
        if self._committer is not None:
            self._committer.observe = observe

    async def add_key(self, key: ApiKey) -> None:
        """Store a key record and its binding, in one statement."""
        await self._fetch(
            "adding a key",
            f"WITH added AS (INSERT INTO api_keys ({_KEY_COLUMNS}, all_owners) "  # noqa: S608
            "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING key_id) "
            "INSERT INTO worker_key_owners (key_id, owner_key_id) "
            "SELECT added.key_id, owner FROM added, unnest($8::text[]) AS owner",
            key.key_id,
            key.name,
            key.scope,
            key.key_hash,
            key.created_at,
            key.revoked_at,
            key.all_owners,
            list(key.owners),
        )

    async def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not; from memory while no key change is announced."""
        if self._key_cache is None:
            raise StoreUnavailable("The PostgreSQL store is not open")
        return await self._key_cache.find(key_hash, self._read_key)

    def on_key_change(self, forget: Callable[[], None]) -> None:
        """Call `forget` whenever any process may have changed a key, and when changes can no
        longer be heard (`key_changes_heard`): a server's memory of keys follows this store's."""
        if self._key_cache is None:
            raise StoreUnavailable("The PostgreSQL store is not open")
        self._key_cache.subscribe(forget)

    @property
    def key_changes_heard(self) -> bool:
        """Whether a change to any key reaches `on_key_change` now (the listener is up)."""
        return self._key_cache is not None and self._key_cache.heard

    async def _read_key(self, key_hash: str) -> ApiKey | None:
        row = await self._fetchrow("reading a key", f"{_SELECT_KEY} WHERE key_hash = $1", key_hash)
        return None if row is None else _api_key(row)

    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not (read from the database)."""
        row = await self._fetchrow("reading a key", f"{_SELECT_KEY} WHERE key_id = $1", key_id)
        return None if row is None else _api_key(row)

    async def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""
        rows = await self._fetch("listing keys", f"{_SELECT_KEY} ORDER BY created_at, key_id")
        return [_api_key(row) for row in rows]

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke a key at once; False when there is none with that id."""
        if self._key_cache is not None:
            self._key_cache.forget()  # our own cache need not wait for the announcement
        row = await self._fetchrow(
            "revoking a key",
            "WITH revoked AS (UPDATE api_keys SET revoked_at = $2 "
            "WHERE key_id = $1 AND revoked_at IS NULL) "
            "SELECT EXISTS (SELECT 1 FROM api_keys WHERE key_id = $1) AS found",
            key_id,
            utc_now(),
        )
        return bool(row and row["found"])
