"""The embedded default store: one SQLite file in WAL mode.

`SqliteLog` is the synchronous core (the SDK's direct transport uses it as is). `SqliteStore` wraps
it for asyncio the way datasette does: every write goes to one writer thread and runs inside
`BEGIN IMMEDIATE`, so writers never deadlock on a lock upgrade; point reads (GET, key lookup) run on
the event loop, where a primary-key lookup costs less than a hop to a thread; paged reads go to a
reader thread of their own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
import sqlite_utils

from jobtracker.codec import decode_fields, encode_fields
from jobtracker.errors import JobIdTaken, JobNotFound, StoreUnavailable
from jobtracker.events import Created, Event, NewEvent, RecordedEvent, new_event_id
from jobtracker.migrate import migrate_sqlite
from jobtracker.projection import AppendPlan, plan_append, rows_touched, start
from jobtracker.state import JobState, RowError, RowMark, Status
from jobtracker.store.base import ApiKey, AppendResult, JobView, utc_now
from jobtracker.store.rows import JOB_COLUMNS, state_from_row, state_to_row
from jobtracker.store.walwatch import WalWatch

T = TypeVar("T")

_SELECT_JOB = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE job_id = ?"  # noqa: S608
_UPSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}, updated_position) "  # noqa: S608
    f"VALUES ({', '.join('?' * (len(JOB_COLUMNS) + 1))}) "
    "ON CONFLICT (job_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*JOB_COLUMNS[1:], "updated_position"))
)
_INSERT_EVENT = (
    "INSERT INTO events (job_id, version, event_id, type, data, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_EVENT_COLUMNS = "job_id, version, position, event_id, recorded_at, type, data"


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL, durable commits."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: an acknowledged append survives power loss, not only a process crash.
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _recorded_event(row: Sequence[Any]) -> RecordedEvent:
    job_id, version, position, event_id, recorded_at, kind, data = row
    event = decode_fields(kind, data)
    return RecordedEvent(job_id, version, position, event_id, recorded_at, event)


class SqliteLog:
    """The SQLite store's synchronous core: one connection, one transaction per write."""

    def __init__(self, path: str, *, clock: Callable[[], str] = utc_now) -> None:
        self.path = path
        self.conn = connect(path)
        self.db = sqlite_utils.Database(self.conn)
        self._clock = clock

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def migrate(self) -> list[str]:
        """Apply pending migrations; return their names."""
        return migrate_sqlite(self.conn)

    @contextmanager
    def _immediate(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _state(self, job_id: str) -> JobState | None:
        row = self.conn.execute(_SELECT_JOB, (job_id,)).fetchone()
        return None if row is None else state_from_row(row)

    def _save_state(self, state: JobState) -> None:
        (position,) = self.conn.execute("SELECT last_insert_rowid()").fetchone()
        self.conn.execute(_UPSERT_JOB, (*state_to_row(state), position))

    def create_job(self, job_id: str, created: Created) -> tuple[JobState, bool]:
        """Create a job durably, or return the owner's existing one."""
        with self._immediate():
            existing = self._state(job_id)
            if existing is not None:
                if existing.owner != created.owner:
                    raise JobIdTaken(f"job_id: {job_id!r} is already used by another API key")
                return existing, False
            state = start(job_id, created)
            self._insert_events(job_id, 1, [NewEvent(new_event_id(), created)])
            self._save_state(state)
            return state, True

    def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Validate the batch with the fold and write it with its projection, or write nothing."""
        with self._immediate():
            state = self._state(job_id)
            if state is None:
                raise JobNotFound()
            known = self._known(items)
            recorded = self._recorded(job_id, rows_touched(item.event for item in items))
            plan = plan_append(state, items, known, recorded)
            if plan.new:
                self._write_plan(job_id, plan)
            return AppendResult(len(plan.new), plan.duplicates, plan.batch.state.version)

    def _known(self, items: Sequence[NewEvent]) -> dict[str, tuple[str, Event]]:
        ids = orjson.dumps([item.event_id for item in items]).decode()
        rows = self.conn.execute(
            "SELECT event_id, job_id, type, data FROM events "
            "WHERE event_id IN (SELECT value FROM json_each(?))",
            (ids,),
        )
        return {eid: (job_id, decode_fields(kind, data)) for eid, job_id, kind, data in rows}

    def _recorded(self, job_id: str, rows: set[int]) -> set[RowMark]:
        if not rows:
            return set()
        found = self.conn.execute(
            "SELECT row, kind FROM job_rows "
            "WHERE job_id = ? AND row IN (SELECT value FROM json_each(?))",
            (job_id, orjson.dumps(sorted(rows)).decode()),
        )
        return {RowMark(row, kind) for row, kind in found}

    def _insert_events(self, job_id: str, first_version: int, items: Sequence[NewEvent]) -> None:
        now = self._clock()
        self.conn.executemany(
            _INSERT_EVENT,
            [
                (job_id, version, it.event_id, it.event.TYPE, encode_fields(it.event), now)
                for version, it in enumerate(items, start=first_version)
            ],
        )

    def _write_plan(self, job_id: str, plan: AppendPlan) -> None:
        self._insert_events(job_id, plan.first_version, plan.new)
        self.conn.executemany(
            "INSERT INTO job_rows (job_id, row, kind) VALUES (?, ?, ?)",
            [(job_id, mark.row, mark.kind) for mark in plan.batch.marks],
        )
        self.conn.executemany(
            "INSERT INTO job_errors (job_id, row, email, error) VALUES (?, ?, ?, ?)",
            [(job_id, e.row, e.email, e.error) for e in plan.batch.row_errors],
        )
        self._save_state(plan.batch.state)

    def get_job(self, job_id: str, errors_limit: int) -> JobView | None:
        """The projection of one job; row errors are read only for a SUCCESS body."""
        state = self._state(job_id)
        if state is None:
            return None
        if state.status is not Status.SUCCESS or state.failed == 0:
            return JobView(state)
        rows = self.conn.execute(
            "SELECT row, email, error FROM job_errors WHERE job_id = ? ORDER BY row LIMIT ?",
            (job_id, errors_limit),
        )
        return JobView(state, tuple(RowError(*row) for row in rows))

    def read_job_events(
        self, job_id: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        """One job's history, oldest first."""
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events "  # noqa: S608
            "WHERE job_id = ? AND version > ? ORDER BY version LIMIT ?",
            (job_id, after_version, limit),
        )
        return [_recorded_event(row) for row in rows]

    def read_log(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """The log in position order."""
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events "  # noqa: S608
            "WHERE position > ? ORDER BY position LIMIT ?",
            (after_position, limit),
        )
        return [_recorded_event(row) for row in rows]

    def add_key(self, key: ApiKey) -> None:
        """Store a key record."""
        with self._immediate():
            self.conn.execute(
                "INSERT INTO api_keys (key_id, name, scope, key_hash, created_at, revoked_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key.key_id, key.name, key.scope, key.key_hash, key.created_at, key.revoked_at),
            )

    def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash."""
        row = self.conn.execute(
            "SELECT key_id, name, scope, key_hash, created_at, revoked_at "
            "FROM api_keys WHERE key_hash = ?",
            (key_hash,),
        ).fetchone()
        return None if row is None else ApiKey(*row)

    def data_version(self) -> int:
        """A number that moves whenever another connection, in any process, commits a change."""
        (version,) = self.conn.execute("PRAGMA data_version").fetchone()
        return int(version)

    def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""
        return [ApiKey(**row) for row in self.db["api_keys"].rows_where(order_by="created_at")]

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key; False when there is none with that id."""
        with self._immediate():
            self.conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (self._clock(), key_id),
            )
            found = self.conn.execute("SELECT 1 FROM api_keys WHERE key_id = ?", (key_id,))
            return found.fetchone() is not None


def sqlite_path(path: str) -> str:
    """Make sure the folder of a database file exists; return the path."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


class _Thread:
    """One thread that owns one connection: SQLite connections stay on the thread that made them."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._log: SqliteLog | None = None

    async def _submit(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, _translated, call)

    async def start(self, make: Callable[[], SqliteLog]) -> SqliteLog:
        self._log = await self._submit(make)
        return self._log

    async def run(self, call: Callable[[SqliteLog], T]) -> T:
        log = self._log
        if log is None:
            raise StoreUnavailable("The SQLite store is not open")
        return await self._submit(lambda: call(log))

    async def stop(self) -> None:
        if self._log is not None:
            await self._submit(self._log.close)
            self._log = None
        self._pool.shutdown(wait=True)


class KeyCache:
    """Key lookups remembered while the database is unchanged, so a revocation counts at once.

    The caller passes, with every lookup, a mark that moves on any commit by any process (the
    wal-index header, else `PRAGMA data_version` of the reader connection); a new mark clears the
    cache. Simple and plainly correct, at the price of one real lookup per key after each write.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._seen: object = None
        self._keys: dict[str, ApiKey] = {}

    def find(
        self, key_hash: str, mark: object, lookup: Callable[[str], ApiKey | None]
    ) -> ApiKey | None:
        """The key with this hash, from memory while `mark` stays put (None: unknown, forget)."""
        if mark is None or mark != self._seen:
            self._keys.clear()
            self._seen = mark
        key = self._keys.get(key_hash)
        if key is None:
            key = lookup(key_hash)
            # Only keys that exist are remembered: random guesses must not fill memory.
            if key is not None and len(self._keys) < self._limit:
                self._keys[key_hash] = key
        return key


class SqliteStore:
    """The SQLite store for asyncio: one writer thread, point reads on the loop."""

    def __init__(self, path: str, *, clock: Callable[[], str] = utc_now) -> None:
        self.path = path
        self._clock = clock
        self._writer: _Thread | None = None
        self._bulk_reader: _Thread | None = None
        self._reader: SqliteLog | None = None
        self._keys = KeyCache()
        self._watch: WalWatch | None = None

    async def open(self) -> None:
        """Open the writer (migrating first), then the readers."""
        path = sqlite_path(self.path)
        self._writer = _Thread("jobtracker-sqlite-writer")
        await self._writer.start(lambda: SqliteLog(path, clock=self._clock))
        await self._writer.run(lambda log: log.migrate())
        self._bulk_reader = _Thread("jobtracker-sqlite-reader")
        await self._bulk_reader.start(lambda: SqliteLog(path))
        self._reader = reader = _translated(lambda: SqliteLog(path))
        # A new reader starts with an empty key cache. It reads once before the wal-index is
        # mapped: from then on its open connection keeps the -shm file in place.
        self._keys = KeyCache()
        _translated(reader.data_version)
        self._watch = WalWatch.open(path)

    async def close(self) -> None:
        """Close every connection and stop the threads; closing twice is harmless."""
        for thread in (self._writer, self._bulk_reader):
            if thread is not None:
                await thread.stop()
        if self._watch is not None:
            self._watch.close()
        if self._reader is not None:
            self._reader.close()
        self._writer = self._bulk_reader = self._reader = self._watch = None

    def _open(self, part: T | None) -> T:
        if part is None:
            raise StoreUnavailable("The SQLite store is not open")
        return part

    async def _write(self, call: Callable[[SqliteLog], T]) -> T:
        return await self._open(self._writer).run(call)

    async def _bulk_read(self, call: Callable[[SqliteLog], T]) -> T:
        return await self._open(self._bulk_reader).run(call)

    def _point_read(self, call: Callable[[SqliteLog], T]) -> T:
        reader = self._open(self._reader)
        return _translated(lambda: call(reader))

    async def create_job(self, job_id: str, created: Created) -> tuple[JobState, bool]:
        """See `SqliteLog.create_job`."""
        return await self._write(lambda log: log.create_job(job_id, created))

    async def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """See `SqliteLog.append`."""
        return await self._write(lambda log: log.append(job_id, items))

    async def get_job(self, job_id: str, errors_limit: int) -> JobView | None:
        """See `SqliteLog.get_job`; runs on the loop."""
        return self._point_read(lambda log: log.get_job(job_id, errors_limit))

    async def read_job_events(
        self, job_id: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        """See `SqliteLog.read_job_events`."""
        return await self._bulk_read(lambda log: log.read_job_events(job_id, after_version, limit))

    async def read_log(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """See `SqliteLog.read_log`."""
        return await self._bulk_read(lambda log: log.read_log(after_position, limit))

    async def add_key(self, key: ApiKey) -> None:
        """See `SqliteLog.add_key`."""
        await self._write(lambda log: log.add_key(key))

    async def find_key(self, key_hash: str) -> ApiKey | None:
        """See `SqliteLog.find_key`; runs on the loop, remembered while nothing changes."""
        return self._point_read(
            lambda log: self._keys.find(key_hash, self._change_mark(log), log.find_key)
        )

    def _change_mark(self, log: SqliteLog) -> object:
        """What moves on any commit: the wal-index header if mapped, else data_version."""
        return self._watch.header() if self._watch is not None else log.data_version()

    async def list_keys(self) -> list[ApiKey]:
        """See `SqliteLog.list_keys`."""
        return await self._bulk_read(lambda log: log.list_keys())

    async def revoke_key(self, key_id: str) -> bool:
        """See `SqliteLog.revoke_key`."""
        return await self._write(lambda log: log.revoke_key(key_id))


def _translated(call: Callable[[], T]) -> T:
    """Run `call`, turning a driver error into our own: the one place SQLite errors cross over."""
    try:
        return call()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"SQLite store error: {exc}") from exc
