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

from jobtracker.codec import decode_stored, encode_fields, stored_version
from jobtracker.errors import JobIdTaken, JobNotFound, JobtrackerError, StoreUnavailable
from jobtracker.events import Created, Event, NewEvent, RecordedEvent, new_event_id
from jobtracker.fswatch import FolderWatch, watch_folder
from jobtracker.migrate import migrate_sqlite
from jobtracker.projection import AppendPlan, plan_append, rows_touched, start
from jobtracker.state import JobState, RowError, RowMark, Status
from jobtracker.store import sqlite_rebuild
from jobtracker.store.base import ApiKey, AppendResult, JobChange, JobView, utc_now
from jobtracker.store.group import AppendRequest, GroupCommitter, Outcome
from jobtracker.store.rebuild import Comparison, LogEntry, ProjectionRows, TailFolder
from jobtracker.store.rows import JOB_COLUMNS, state_from_row, state_to_row
from jobtracker.store.sqlite_group import NotPlain, write_together
from jobtracker.store.walwatch import WalWatch

T = TypeVar("T")

_SELECT_JOB = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE job_id = ?"  # noqa: S608
_UPSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}, updated_position) "  # noqa: S608
    # last_insert_rowid(): the position of the newest event (job_rows and job_errors are WITHOUT
    # ROWID tables, whose inserts leave it alone).
    f"VALUES ({', '.join('?' * len(JOB_COLUMNS))}, last_insert_rowid()) "
    "ON CONFLICT (job_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*JOB_COLUMNS[1:], "updated_position"))
)
_INSERT_EVENT = (
    "INSERT INTO events (job_id, version, event_id, type, schema_version, data, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_EVENT_COLUMNS = "job_id, version, position, event_id, recorded_at, type, schema_version, data"


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL, durable commits."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: an acknowledged append survives power loss, not only a process crash.
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _recorded_event(row: Sequence[Any]) -> RecordedEvent:
    job_id, version, position, event_id, recorded_at, kind, schema_version, data = row
    event = decode_stored(kind, schema_version, data)
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
        """Write the projection; must follow the events' insert, whose last position it keeps."""
        self.conn.execute(_UPSERT_JOB, state_to_row(state))

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
            outcome = self._append_in_savepoint(job_id, items)
        if isinstance(outcome, JobtrackerError):
            raise outcome
        return outcome

    def append_group(self, requests: Sequence[AppendRequest]) -> list[Outcome]:
        """Write many appends in one transaction (one durable commit), each in a savepoint.

        A request the fold refuses is rolled back to its savepoint and answered with its own
        error; the others commit together. A plain group (the usual one) skips the savepoints
        and is written a table at a time (`sqlite_group`).
        """
        with self._immediate():
            self.conn.execute("SAVEPOINT append_group")
            try:
                outcomes: list[Outcome] = [*write_together(self.conn, requests, self._clock())]
            except (NotPlain, sqlite3.IntegrityError):
                self.conn.execute("ROLLBACK TO append_group")
                outcomes = [self._append_in_savepoint(job_id, items) for job_id, items in requests]
            self.conn.execute("RELEASE append_group")
            return outcomes

    def _append_in_savepoint(self, job_id: str, items: Sequence[NewEvent]) -> Outcome:
        self.conn.execute("SAVEPOINT append_request")
        try:
            outcome: Outcome = self._append_in_transaction(job_id, items)
        except (JobtrackerError, sqlite3.Error) as exc:
            self.conn.execute("ROLLBACK TO append_request")
            outcome = exc if isinstance(exc, JobtrackerError) else _store_error(exc)
        self.conn.execute("RELEASE append_request")
        return outcome

    def _append_in_transaction(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Inside the `append_request` savepoint: the common case first, then the careful one.

        The common case is a batch of events the log has never seen, for rows with no outcome yet:
        planned as if nothing were recorded, and written. The unique keys catch what that
        assumption missed (a re-sent event id, a row already reported); then the savepoint is
        undone and the batch is planned again from what the log holds. A refusal of the quick
        plan goes the same way, since a re-send may explain it. The answers are the same either
        way; the common case just skips two lookups.
        """
        state = self._state(job_id)
        if state is None:
            raise JobNotFound()
        try:
            return self._write_plan(job_id, plan_append(state, items, {}, frozenset()))
        except (JobtrackerError, sqlite3.IntegrityError):
            self.conn.execute("ROLLBACK TO append_request")
        known = self._known(items)
        recorded = self._recorded(job_id, rows_touched(item.event for item in items))
        return self._write_plan(job_id, plan_append(state, items, known, recorded))

    def _known(self, items: Sequence[NewEvent]) -> dict[str, tuple[str, Event]]:
        ids = orjson.dumps([item.event_id for item in items]).decode()
        rows = self.conn.execute(
            "SELECT event_id, job_id, type, schema_version, data FROM events "
            "WHERE event_id IN (SELECT value FROM json_each(?))",
            (ids,),
        )
        return {
            eid: (job_id, decode_stored(kind, schema, data))
            for eid, job_id, kind, schema, data in rows
        }

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
                (
                    job_id,
                    version,
                    it.event_id,
                    it.event.TYPE,
                    stored_version(it.event),
                    encode_fields(it.event),
                    now,
                )
                for version, it in enumerate(items, start=first_version)
            ],
        )

    def _write_plan(self, job_id: str, plan: AppendPlan) -> AppendResult:
        # Statements are skipped when they have nothing to write: under group commit each one
        # is a round trip through the GIL for the writer thread.
        if plan.new:
            self._insert_events(job_id, plan.first_version, plan.new)
        if plan.batch.marks:
            self.conn.executemany(
                "INSERT INTO job_rows (job_id, row, kind) VALUES (?, ?, ?)",
                [(job_id, mark.row, mark.kind) for mark in plan.batch.marks],
            )
        if plan.batch.row_errors:
            self.conn.executemany(
                "INSERT INTO job_errors (job_id, row, email, error) VALUES (?, ?, ?, ?)",
                [(job_id, e.row, e.email, e.error) for e in plan.batch.row_errors],
            )
        if plan.new:
            self._save_state(plan.batch.state)
        return AppendResult(len(plan.new), plan.duplicates, plan.batch.state.version)

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

    def read_job_errors(
        self, job_id: str, after_row: int = -1, limit: int = 1000
    ) -> list[RowError]:
        """One job's row errors in row order, read by primary-key range."""
        rows = self.conn.execute(
            "SELECT row, email, error FROM job_errors "
            "WHERE job_id = ? AND row > ? ORDER BY row LIMIT ?",
            (job_id, after_row, limit),
        )
        return [RowError(*row) for row in rows]

    def read_log(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """The log in position order."""
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events "  # noqa: S608
            "WHERE position > ? ORDER BY position LIMIT ?",
            (after_position, limit),
        )
        return [_recorded_event(row) for row in rows]

    def changes_since(self, after_position: int, limit: int = 1000) -> list[JobChange]:
        """Jobs with events after `after_position`; SQLite commits in position order, so no gaps."""
        rows = self.conn.execute(
            "SELECT job_id, max(version), max(position) FROM "
            "(SELECT job_id, version, position FROM events WHERE position > ? "
            "ORDER BY position LIMIT ?) GROUP BY job_id ORDER BY max(position)",
            (after_position, limit),
        )
        return [JobChange(*row) for row in rows]

    def last_position(self) -> int:
        """The newest position (0 when empty)."""
        return sqlite_rebuild.last_position(self.conn)

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


class _Echoes:
    """Wake now, and once more after each delay: at most one echo pending per delay.

    The write inotify reports may be the commit frame itself, made visible to readers a moment
    later through the shared-memory index (mmap writes raise no inotify event), so we look now and
    again shortly after. One commit writes several pages, each a hint of its own: only the first
    hint of a burst looks at once, and the echoes already pending cover the rest, so a commit
    costs a few looks, not one or three per page.
    """

    def __init__(self, wake: Callable[[], None], delays: tuple[float, ...]) -> None:
        self._wake = wake
        self._pending: dict[float, asyncio.TimerHandle | None] = dict.fromkeys(delays)
        self._first = min(delays)

    def __call__(self) -> None:
        if self._pending[self._first] is None:
            self._wake()
        loop = asyncio.get_running_loop()
        for delay, handle in self._pending.items():
            if handle is None:
                self._pending[delay] = loop.call_later(delay, self._echo, delay)

    def _echo(self, delay: float) -> None:
        self._pending[delay] = None
        self._wake()


class SqliteStore:
    """The SQLite store for asyncio: one writer thread, point reads on the loop.

    With `group_commit` (the default) appends that arrive while the writer is busy share one
    transaction and one durable commit; without it every append commits alone.
    """

    def __init__(
        self, path: str, *, clock: Callable[[], str] = utc_now, group_commit: bool = True
    ) -> None:
        self.path = path
        self._clock = clock
        self.group_commit = group_commit
        self.committer = GroupCommitter(self._commit_group)
        self._writer: _Thread | None = None
        self._bulk_reader: _Thread | None = None
        self._reader: SqliteLog | None = None
        self._seen_mark: object = None
        self._watches: list[FolderWatch] = []
        self._seen_position = 0
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
        await self.committer.close()
        for watch in self._watches:
            watch.close()
        self._watches.clear()
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
        """See `SqliteLog.append`; grouped with concurrent appends when `group_commit` is on."""
        if self.group_commit:
            return await self.committer.append(job_id, items)
        return await self._write(lambda log: log.append(job_id, items))

    async def _commit_group(self, requests: list[AppendRequest]) -> list[Outcome]:
        return await self._write(lambda log: log.append_group(requests))

    async def get_job(self, job_id: str, errors_limit: int) -> JobView | None:
        """See `SqliteLog.get_job`; runs on the loop."""
        return self._point_read(lambda log: log.get_job(job_id, errors_limit))

    async def read_job_events(
        self, job_id: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        """See `SqliteLog.read_job_events`."""
        return await self._bulk_read(lambda log: log.read_job_events(job_id, after_version, limit))

    async def read_job_errors(
        self, job_id: str, after_row: int = -1, limit: int = 1000
    ) -> list[RowError]:
        """See `SqliteLog.read_job_errors`."""
        return await self._bulk_read(lambda log: log.read_job_errors(job_id, after_row, limit))

    async def read_log(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """See `SqliteLog.read_log`."""
        return await self._bulk_read(lambda log: log.read_log(after_position, limit))

    async def changes_since(self, after_position: int, limit: int = 1000) -> list[JobChange]:
        """See `SqliteLog.changes_since`; runs on the loop.

        A change feed calls this on every wake-up: the commit mark (`_change_mark`) tells without
        a query whether anyone committed since the last look, and only then is the log read.
        """
        reader = self._open(self._reader)
        mark = _translated(lambda: self._change_mark(reader))
        if mark is not None and mark == self._seen_mark and after_position >= self._seen_position:
            return []
        changes = _translated(lambda: reader.changes_since(after_position, limit))
        if len(changes) < limit:  # read to the end: nothing new until the mark moves
            self._seen_mark = mark
            self._seen_position = max([after_position, *(c.position for c in changes)])
        return changes

    async def last_position(self) -> int:
        """See `SqliteLog.last_position`."""
        return self._point_read(lambda log: log.last_position())

    def on_append(self, wake: Callable[[], None]) -> bool:
        """Watch the folder for writes to the database's WAL (any process's commit) with inotify."""
        db = Path(self.path)
        names = {db.name, f"{db.name}-wal"}
        watch = watch_folder(str(db.parent), names, _Echoes(wake, (0.005, 0.05)))
        if watch is None:
            return False
        self._watches.append(watch)
        return True

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

    # Replay (see `jobtracker.store.rebuild.Rebuildable`): scans on the reader thread, every
    # write (and the swap with its catch-up) on the writer thread.

    async def scan_log(
        self,
        after_position: int,
        limit: int,
        *,
        job_id: str | None = None,
        after_version: int = 0,
        upto: int | None = None,
    ) -> list[LogEntry]:
        """See `Rebuildable.scan_log`."""
        return await self._bulk_read(
            lambda log: sqlite_rebuild.scan_log(
                log.conn, after_position, limit, job_id, after_version, upto
            )
        )

    async def reset_area(self, area: str) -> None:
        """See `Rebuildable.reset_area`."""
        await self._write(lambda log: sqlite_rebuild.reset_area(log.conn, area))

    async def write_area(self, area: str, rows: ProjectionRows) -> None:
        """See `Rebuildable.write_area`."""
        await self._write(lambda log: sqlite_rebuild.write_area(log.conn, area, rows))

    async def swap_in(
        self,
        area: str,
        fold_tail: TailFolder,
        *,
        after_position: int,
        after_version: int = 0,
        job_id: str | None = None,
    ) -> int:
        """See `Rebuildable.swap_in`."""
        return await self._write(
            lambda log: sqlite_rebuild.swap_in(
                log.conn, area, fold_tail, after_position, after_version, job_id
            )
        )

    async def compare_area(
        self,
        area: str,
        fold_tail: TailFolder,
        *,
        after_position: int,
        after_version: int = 0,
        job_id: str | None = None,
        limit: int = 20,
    ) -> Comparison:
        """See `Rebuildable.compare_area`."""
        return await self._write(
            lambda log: sqlite_rebuild.compare_area(
                log.conn, area, fold_tail, after_position, after_version, job_id, limit
            )
        )

    async def area_view(self, area: str, job_id: str, errors_limit: int) -> JobView | None:
        """See `Rebuildable.area_view`."""
        return await self._bulk_read(
            lambda log: sqlite_rebuild.area_view(log.conn, area, job_id, errors_limit)
        )

    async def drop_area(self, area: str) -> None:
        """See `Rebuildable.drop_area`."""
        await self._write(lambda log: sqlite_rebuild.drop_area(log.conn, area))


def _store_error(exc: sqlite3.Error) -> StoreUnavailable:
    """A driver error as our own: the one place SQLite errors cross over."""
    error = StoreUnavailable(f"SQLite store error: {exc}")
    error.__cause__ = exc
    return error


def _translated(call: Callable[[], T]) -> T:
    """Run `call`, raising a driver error as our own."""
    try:
        return call()
    except sqlite3.Error as exc:
        raise _store_error(exc) from exc


#: `_translated` for users of `SqliteLog` outside this module (the SDK's direct transport).
translated = _translated
