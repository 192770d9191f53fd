"""The embedded default store: one SQLite file in WAL mode, for asyncio.

`SqliteStore` wraps the synchronous core (`log.SqliteLog`) the way datasette does: one
writer connection with a thread of its own, whose appends are grouped (`GroupCommitter`); point
reads (GET, key lookup) run on the event loop, where a primary-key lookup costs less than a hop to
a thread; paged reads go to a reader thread of their own.

A group of appends is folded and written on the event loop and only committed (the fsync) on the
writer thread. Folding on the writer thread made it share the GIL with a busy loop: every SQLite
call released the GIL and then queued to take it back, and the writer, the one thread every group
waits for, spent more of its time queued than working. Big groups, which would hold up the loop,
still go to the thread whole.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from jobtracker.domain.control import Deadline
from jobtracker.domain.errors import StoreUnavailable
from jobtracker.domain.events import Created, NewEvent, RecordedEvent
from jobtracker.domain.listing import Cursor, JobQuery
from jobtracker.domain.state import JobState, RowError
from jobtracker.store.base import (
    ApiKey,
    AppendResult,
    JobChange,
    JobListing,
    JobView,
    Pruned,
    StorageStats,
    Tombstone,
    utc_now,
)
from jobtracker.store.group import (
    AppendRequest,
    CreateOutcome,
    CreateRequest,
    Creation,
    GroupCommitter,
    Outcome,
)
from jobtracker.store.sqlite import deadlines, inventory, stats
from jobtracker.store.sqlite.fswatch import FolderWatch, watch_folder
from jobtracker.store.sqlite.group import NotPlain
from jobtracker.store.sqlite.log import SqliteLog, sqlite_path
from jobtracker.store.sqlite.log import translated as _translated
from jobtracker.store.sqlite.replaying import ReplaySide
from jobtracker.store.sqlite.walwatch import WalWatch
from jobtracker.store.sqlite.webhooks import SqliteWebhooks, webhooks_path
from jobtracker.store.webhooks import WebhookStore

T = TypeVar("T")


#: Groups with more events than this are folded on the writer thread. On the event loop a group
#: costs about 50 us per request and 5 us per event, during which no other request is served; at
#: most 128 events keeps that under about 6 ms.
INLINE_EVENTS = 128


class _Thread:
    """One thread for one connection; the writer's connection is also used from the loop, never
    while its thread runs a call (`SqliteStore._writing`)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._log: SqliteLog | None = None

    async def _submit(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, _translated, call)

    async def start(self, make: Callable[[], SqliteLog]) -> SqliteLog:
        self._log = await self._submit(make)
        return self._log

    @property
    def log(self) -> SqliteLog:
        if self._log is None:
            raise StoreUnavailable("The SQLite store is not open")
        return self._log

    async def run(self, call: Callable[[SqliteLog], T]) -> T:
        log = self.log
        return await self._submit(lambda: call(log))

    async def run_to_end(self, call: Callable[[SqliteLog], T]) -> T:
        """`run`, except that a cancelled caller still waits for the call to finish on the
        thread: the connection is not free before then.

        The wait is on the thread's own future, never on a task: a loop shutting down cancels
        every task, and a task cancelled that way would end the wait while the thread still runs.
        """
        log = self.log
        done = asyncio.wrap_future(self._pool.submit(_translated, lambda: call(log)))
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            while not done.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({done})
            raise

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


class SqliteStore(ReplaySide):
    """The SQLite store for asyncio: one writer thread, point reads on the loop.

    With `group_commit` (the default) appends that arrive while the writer is busy share one
    transaction and one durable commit; without it every append commits alone.
    """

    def __init__(
        self, path: str, *, clock: Callable[[], str] = utc_now, group_commit: bool = True
    ) -> None:
        self.path = path
        self._clock = clock
        most = None if group_commit else 1
        self.committer: GroupCommitter[AppendRequest, AppendResult] = GroupCommitter(
            self._commit_group, most=most
        )
        self.creator: GroupCommitter[CreateRequest, Creation] = GroupCommitter(
            self._create_group, most=most, what="job creations"
        )
        #: Held for every use of the writer connection, from its thread or from the loop.
        self._writing = asyncio.Lock()
        self._writer: _Thread | None = None
        self._bulk_reader: _Thread | None = None
        self._reader: SqliteLog | None = None
        self._seen_mark: object = None
        self._watches: list[FolderWatch] = []
        self._seen_position = 0
        self._keys = KeyCache()
        self._watch: WalWatch | None = None
        #: Webhook subscriptions and deliveries, in a file of their own beside the log's.
        self._webhooks = SqliteWebhooks(webhooks_path(path))
        self.webhooks: WebhookStore = self._webhooks

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
        await self._webhooks.open()

    async def close(self) -> None:
        """Close every connection and stop the threads; closing twice is harmless."""
        await self.committer.close()
        await self.creator.close()
        # A write under way finishes first; one that comes later finds the store closed, instead
        # of using the connection while its thread closes it.
        async with self._writing:
            threads, self._writer, self._bulk_reader = (self._writer, self._bulk_reader), None, None
        for watch in self._watches:
            watch.close()
        self._watches.clear()
        for thread in threads:
            if thread is not None:
                await thread.stop()
        if self._watch is not None:
            self._watch.close()
        if self._reader is not None:
            self._reader.close()
        self._reader = self._watch = None
        await self._webhooks.close()

    def _open(self, part: T | None) -> T:
        if part is None:
            raise StoreUnavailable("The SQLite store is not open")
        return part

    async def _write(self, call: Callable[[SqliteLog], T]) -> T:
        async with self._writing:
            return await self._open(self._writer).run_to_end(call)

    async def _bulk_read(self, call: Callable[[SqliteLog], T]) -> T:
        return await self._open(self._bulk_reader).run(call)

    def _point_read(self, call: Callable[[SqliteLog], T]) -> T:
        reader = self._open(self._reader)
        return _translated(lambda: call(reader))

    async def create_job(self, job_id: str, created: Created) -> tuple[JobState, bool]:
        """See `SqliteLog.create_job`; in a group with whatever other creations are waiting, or
        alone without `group_commit`."""
        return await self.creator.submit((job_id, created))

    async def _create_group(self, requests: list[CreateRequest]) -> list[CreateOutcome]:
        return await self._write(lambda log: log.create_jobs(requests))

    async def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Validate and write a batch (see `Store.append`), in a group with whatever other appends
        are waiting, or alone without `group_commit`."""
        return await self.committer.submit((job_id, items))

    async def _commit_group(self, requests: list[AppendRequest]) -> list[Outcome]:
        """Fold and write a group on the loop, commit it on the writer thread (see the module)."""
        if sum(len(items) for _, items in requests) > INLINE_EVENTS:
            return await self._write(lambda log: log.append_group(requests))
        async with self._writing:
            writer = self._open(self._writer)  # after the lock: `close` may have run meanwhile
            try:
                return await self._commit_on_loop(writer, writer.log.write_group_quickly, requests)
            except NotPlain:
                pass  # rolled back: the careful path plans from what the log holds
            return await self._commit_on_loop(writer, writer.log.write_group_carefully, requests)

    @staticmethod
    async def _commit_on_loop(
        writer: _Thread,
        write: Callable[[list[AppendRequest]], list[Outcome]],
        requests: list[AppendRequest],
    ) -> list[Outcome]:
        """One transaction: BEGIN (on the thread if another process is writing), `write` on the
        loop, COMMIT on the thread; rolled back if anything fails."""
        log = writer.log
        try:
            if not _translated(log.begin_now):
                await writer.run_to_end(lambda log: log.begin())
            outcomes = _translated(lambda: write(requests))
        except BaseException:
            _translated(log.rollback)
            raise
        await writer.run_to_end(lambda log: log.commit())
        return outcomes

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
        """See `SqliteLog.changes_since` and `jobs_moved_since`; runs on the loop."""
        return self.jobs_moved_since(after_position, limit)

    def jobs_moved_since(self, after_position: int, limit: int = 1000) -> list[JobChange]:
        """`changes_since` without a coroutine, for callers that ask on every request.

        A change feed asks on every wake-up, a GET before it serves a body it holds: the commit
        mark (`_change_mark`) tells without a query whether anyone committed since the last look,
        and only then is the log read. Only an empty answer proves the log was read to its end
        (`limit` counts events, and one job's many events make one change).
        """
        reader = self._open(self._reader)
        mark = _translated(lambda: self._change_mark(reader))
        if mark is not None and mark == self._seen_mark and after_position >= self._seen_position:
            return []
        changes = _translated(lambda: reader.changes_since(after_position, limit))
        if not changes:  # read to the end: nothing new until the mark moves
            self._seen_mark = mark
            self._seen_position = after_position
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

    async def job_counts(self) -> dict[str, int]:
        """See `SqliteLog.job_counts`; a point read on the loop."""
        return self._point_read(lambda log: log.job_counts())

    async def missing_migrations(self) -> list[str]:
        """See `SqliteLog.missing_migrations`; a point read on the loop."""
        return self._point_read(lambda log: log.missing_migrations())

    def on_commit_group(self, observe: Callable[[int], None]) -> None:
        """Tell `observe` the size of every group of appends committed (see `GroupCommitter`)."""
        self.committer.observe = observe

    async def add_key(self, key: ApiKey) -> None:
        """See `SqliteLog.add_key`."""
        await self._write(lambda log: log.add_key(key))

    async def find_key(self, key_hash: str) -> ApiKey | None:
        """See `SqliteLog.find_key`; runs on the loop, remembered while nothing changes."""
        return self._point_read(
            lambda log: self._keys.find(key_hash, self._change_mark(log), log.find_key)
        )

    async def get_key(self, key_id: str) -> ApiKey | None:
        """See `SqliteLog.get_key`; a point read on the loop."""
        return self._point_read(lambda log: log.get_key(key_id))

    async def due_deadlines(self, now: float, limit: int) -> list[Deadline]:
        """See `Store.due_deadlines`; on the reader thread."""
        return await self._bulk_read(lambda log: deadlines.due(log.conn, now, limit))

    async def settle_deadlines(self, next_checks: Mapping[str, float | None]) -> None:
        """See `Store.settle_deadlines`."""
        await self._write(lambda log: log.in_transaction(deadlines.settle, next_checks))

    async def record_heartbeats(self, beats: Mapping[str, float]) -> None:
        """See `Store.record_heartbeats`: one transaction for every heartbeat of a second."""
        await self._write(lambda log: log.in_transaction(deadlines.record_heartbeats, beats))

    async def check_by(self, job_id: str, at: float) -> None:
        """See `Store.check_by`."""
        await self._write(lambda log: log.in_transaction(deadlines.check_by, job_id, at))

    async def list_jobs(
        self, owner: str, query: JobQuery, after: Cursor | None, limit: int
    ) -> list[JobListing]:
        """See `Store.list_jobs` (`sqlite/inventory.py`); on the reader thread."""
        return await self._bulk_read(
            lambda log: inventory.list_jobs(log.conn, owner, query, after, limit)
        )

    async def find_tombstone(self, job_id: str) -> Tombstone | None:
        """See `Store.find_tombstone`; a point read on the loop."""
        return self._point_read(lambda log: inventory.find_tombstone(log.conn, job_id))

    async def prune(self, finished_before: str, limit: int, *, dry_run: bool = False) -> Pruned:
        """See `Store.prune`: one write transaction per batch."""
        if dry_run:
            return await self._bulk_read(
                lambda log: inventory.count_prunable(log.conn, finished_before)
            )
        return await self._write(
            lambda log: log.in_transaction(inventory.prune, finished_before, limit)
        )

    async def pruned_since(self, after_seq: int, limit: int = 1000) -> list[tuple[int, str]]:
        """See `Store.pruned_since`; a point read on the loop."""
        return self._point_read(lambda log: inventory.pruned_since(log.conn, after_seq, limit))

    async def forget_cursors(self) -> tuple[int, int]:
        """See `Store.forget_cursors`; a point read on the loop (two index lookups)."""
        return self._point_read(lambda log: inventory.forget_cursors(log.conn))

    async def swaps_since(self, after_seq: int, limit: int = 1000) -> list[tuple[int, str | None]]:
        """See `Store.swaps_since`; a point read on the loop."""
        return self._point_read(lambda log: inventory.swaps_since(log.conn, after_seq, limit))

    async def storage_stats(self) -> StorageStats:
        """See `Store.storage_stats`: it reads every page's header, so off the loop."""
        return await self._bulk_read(lambda log: stats.storage_stats(log.conn))

    def commit_marker(self) -> Callable[[], object]:
        """A function returning what moves on any commit by any process (None: cannot tell, count
        it as moved). On the loop before every request answered from memory: with the wal-index
        mapped it is the header's read itself (no SQLite call, nothing to translate)."""
        watch = self._watch
        if watch is not None:
            return watch.header
        return lambda: _translated(lambda: self._change_mark(self._open(self._reader)))

    def _change_mark(self, log: SqliteLog) -> object:
        """What moves on any commit: the wal-index header if mapped, else data_version."""
        return self._watch.header() if self._watch is not None else log.data_version()

    async def list_keys(self) -> list[ApiKey]:
        """See `SqliteLog.list_keys`."""
        return await self._bulk_read(lambda log: log.list_keys())

    async def revoke_key(self, key_id: str) -> bool:
        """See `SqliteLog.revoke_key`."""
        return await self._write(lambda log: log.revoke_key(key_id))
