"""What the server keeps in memory to answer a GET without reading the store.

A SUCCESS or FAILURE body never changes, and neither does the key that owns a job. Such facts
never go stale, with two exceptions, both watched in the store by every server
(`server/inventory.Retention`): retention may remove a finished job (its tombstone), and a replay
may repair a projection that had gone wrong (its swap), after which every body held of the jobs
it replayed is dropped. A running job's body does change, so `RunningBodies` holds one only on a
store that can say, before every GET and for about a microsecond, which jobs moved since it last
asked. Every map is bounded, least recently used out first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, runtime_checkable

import attrs
from multidict import CIMultiDict

from jobtracker.store.base import ApiKey, JobChange, JobView

V = TypeVar("V")

#: 64 MiB: tens of thousands of typical bodies, a few hundred of the largest (1,000 errors listed).
DEFAULT_BUDGET = 64 * 1024 * 1024


def body_headers(etag: str) -> CIMultiDict[str]:
    """The headers of a job body's 200: built once per body held, copied for each answer (a
    copy skips folding each name's case again, about 1% of a GET)."""
    return CIMultiDict({"Content-Type": "application/json", "ETag": etag,
                        "Cache-Control": "no-cache"})


@attrs.frozen
class FinishedBody:
    """What a GET of a finished job needs: who may read it, the bytes to send, their ETag."""

    owner: str
    body: bytes
    etag: str
    #: `body_headers(etag)`: never sent itself (aiohttp adds to what it is given), only copied.
    headers: CIMultiDict[str] = attrs.field(
        default=attrs.Factory(lambda held: body_headers(held.etag), takes_self=True), eq=False
    )


@attrs.frozen
class RunningBody:
    """An unfinished job's GET as last read: its view (owner, status, pace), bytes and ETag."""

    view: JobView
    body: bytes
    etag: str
    #: `body_headers(etag)`, as `FinishedBody.headers`.
    headers: CIMultiDict[str] = attrs.field(
        default=attrs.Factory(lambda held: body_headers(held.etag), takes_self=True), eq=False
    )

    @property
    def owner(self) -> str:
        """The key that owns the job."""
        return self.view.state.owner


#: What `_Bodies` holds: an encoded body with what a GET needs beside it.
B = TypeVar("B", FinishedBody, RunningBody)


class _Recent(Generic[V]):
    """A map from job id to a value, least recently used first (subclasses decide what to evict)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, job_id: str) -> V | None:
        """The job's value if it is held here."""
        entry = self._entries.get(job_id)
        if entry is not None:
            self._entries.move_to_end(job_id)
        return entry

    def forget(self, job_id: str) -> None:
        """Drop the job's value: retention removed the job, or a replay may have changed it."""
        self._entries.pop(job_id, None)

    def forget_replayed(self, job_id: str | None) -> None:
        """Drop what a replay of `job_id` (None: of every job) may have changed."""
        if job_id is None:
            self.clear()
        else:
            self.forget(job_id)

    def clear(self) -> None:
        """Drop everything."""
        self._entries.clear()


class _Bodies(_Recent[B]):
    """A least-recently-used map from job id to an encoded body, within a byte budget (a body
    bigger than the whole budget is not held)."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        super().__init__()
        self._budget = budget
        self._used = 0

    def _hold(self, job_id: str, entry: B) -> None:
        size = len(entry.body)
        if size > self._budget:
            return
        self.forget(job_id)
        self._entries[job_id] = entry
        self._used += size
        while self._used > self._budget:
            _, evicted = self._entries.popitem(last=False)
            self._used -= len(evicted.body)

    def forget(self, job_id: str) -> None:
        """Drop the job's body."""
        entry = self._entries.pop(job_id, None)
        if entry is not None:
            self._used -= len(entry.body)

    def clear(self) -> None:
        """Drop every body."""
        self._entries.clear()
        self._used = 0


class FinishedBodies(_Bodies[FinishedBody]):
    """Finished jobs' bodies: they never change, so one held is never replaced (a prune or a
    replay are the only ways out but eviction)."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        super().__init__(budget)
        #: Moves at each replay swap: a body read before one may be what it repaired.
        self.replays = 0

    def put(self, job_id: str, entry: FinishedBody, replays: int) -> None:
        """Hold a finished job's body, read when `replays` was current, unless one is held
        already or a replay has been made live since."""
        if replays == self.replays and job_id not in self._entries:
            self._hold(job_id, entry)

    def forget_replayed(self, job_id: str | None) -> None:
        """See `_Recent.forget_replayed`; bodies read before it are not held after it either."""
        self.replays += 1
        super().forget_replayed(job_id)


#: Job owners held: a few MB, far more jobs than are ever being reported at once.
DEFAULT_OWNERS = 100_000


class JobOwners(_Recent[str]):
    """Which key owns each job, for jobs this server has seen: appends skip the job read.

    A worker posts many small batches to one job; its ownership check, done once, holds for
    every later batch (a job's owner is fixed at creation and jobs are never deleted).
    """

    def __init__(self, limit: int = DEFAULT_OWNERS) -> None:
        super().__init__()
        self._limit = limit

    def put(self, job_id: str, owner: str) -> None:
        """Remember a job's owner."""
        self._entries[job_id] = owner
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)


#: Running bodies held: a typical one is about 150 bytes.
DEFAULT_RUNNING_BUDGET = 16 * 1024 * 1024
#: Events read per look at the log when catching up.
CATCH_UP_BATCH = 1000
#: Keys the gate remembers; only keys that exist and are active are.
DEFAULT_KEYS = 10_000


class RunningBodies(_Bodies[RunningBody]):
    """A least-recently-used map from job id to its running body, within a byte budget; what
    `CommitGate` lets a GET use."""

    def __init__(self, budget: int = DEFAULT_RUNNING_BUDGET) -> None:
        super().__init__(budget)

    def put(self, entry: RunningBody) -> None:
        """Hold a job's body in place of the one held (if any)."""
        self._hold(entry.view.state.job_id, entry)


@runtime_checkable
class MarkedStore(Protocol):
    """A store that marks every commit by any process and says which jobs moved, both on the loop
    and without a query while nobody committed (SQLite: its wal-index header)."""

    def commit_marker(self) -> Callable[[], object]:
        """A function returning what moves on any commit (None: cannot tell), until it closes."""

    def jobs_moved_since(self, after_position: int, limit: int = 1000) -> list[JobChange]:
        """Jobs with events after `after_position` (`Store.changes_since`, synchronously)."""


@runtime_checkable
class KeyAnnouncingStore(Protocol):
    """A store that announces every change to any key, by any process (PostgreSQL: NOTIFY)."""

    def on_key_change(self, forget: Callable[[], None]) -> None:
        """Call `forget` on every change, and when changes stop being heard."""

    @property
    def key_changes_heard(self) -> bool:
        """Whether changes are heard now."""


class CommitGate:
    """What a request may take from memory although it changes: running bodies and keys.

    Every request that uses them first calls `look`, which reads the store's commit mark (about a
    microsecond); when it moved, the keys are forgotten and so is the body of every job the log
    shows moved since the last look. An append (or a revocation) acknowledged to any process
    before the request arrived has moved the mark by then, so nothing it changed is served
    stale. On a store that is not a `MarkedStore` it holds no bodies; on a `KeyAnnouncingStore`
    it remembers keys while changes are heard and forgets them at each announcement, as the
    store's own key cache does (a revocation counts once announced, not at its commit).
    """

    def __init__(self, key_limit: int = DEFAULT_KEYS) -> None:
        self.running = RunningBodies()
        self._store: MarkedStore | None = None
        self._read_mark: Callable[[], object] | None = None
        self._announcer: KeyAnnouncingStore | None = None
        self._mark: object = None
        #: The log position up to which every moved job's body has been forgotten.
        self._cursor = 0
        #: Moves on every look that found the mark moved: what was read before may be stale.
        self._generation = 0
        #: Active keys by secret as of the last look: cleared on every change, never replaced (a
        #: GET handler holds this very dict and reads it without a call).
        self.keys: dict[str, ApiKey] = {}
        self._key_limit = key_limit

    def start(self, store: object, position: int) -> None:
        """Remember from now on, if `store` is a `MarkedStore` whose log ends at `position`."""
        if isinstance(store, MarkedStore):
            self._store, self._cursor, self._mark = store, position, None
            self._read_mark = store.commit_marker()
        elif isinstance(store, KeyAnnouncingStore):
            self._announcer = store
            store.on_key_change(self._keys_changed)

    def stop(self) -> None:
        """Remember nothing more (the store is closing)."""
        self._store = self._read_mark = self._announcer = None
        self.keys.clear()
        self.running.clear()

    def look(self) -> int:
        """Forget whatever changed since the last look; return a ticket for `hold` and
        `remember_key`, which keep only what was read after the latest look."""
        read_mark = self._read_mark
        if read_mark is None:  # no bodies held; keys, if any, are forgotten when announced
            return self._generation
        mark = read_mark()
        if mark is None or mark != self._mark:  # on every GET: the usual case takes no call more
            self._catch_up(mark)
        return self._generation

    def _catch_up(self, mark: object) -> None:
        """Someone committed: forget the keys, and the bodies of the jobs the log shows moved."""
        store = self._store
        assert store is not None  # set with `_read_mark`
        self._generation += 1
        self.keys.clear()
        while changes := store.jobs_moved_since(self._cursor, CATCH_UP_BATCH):
            for change in changes:
                self.running.forget(change.job_id)
                self._cursor = max(self._cursor, change.position)
        self._mark = mark

    def _keys_changed(self) -> None:
        self._generation += 1
        self.keys.clear()

    def forget_replayed(self, job_id: str | None) -> None:
        """A replay of `job_id` (None: every job) was made live: drop the bodies it may have
        changed, and refuse those read before now (a replay moves no log position, so a look
        does not see it)."""
        self._generation += 1
        self.running.forget_replayed(job_id)

    def body(self, job_id: str) -> RunningBody | None:
        """The job's body as of the last look, if held."""
        return self.running.get(job_id)

    def hold(self, ticket: int, entry: RunningBody) -> None:
        """Hold a body read after the look that gave `ticket`, unless a later look found
        changes (they may be this job's)."""
        if ticket == self._generation and self._store is not None:
            self.running.put(entry)

    def key(self, secret: str) -> ApiKey | None:
        """The active key behind `secret` as of the last look, if remembered."""
        return self.keys.get(secret)

    def remember_key(self, ticket: int, secret: str, key: ApiKey) -> None:
        """Remember an active key read after the look that gave `ticket` (see `hold`), where the
        store tells when keys change."""
        if ticket != self._generation:
            return
        announcer = self._announcer
        told = self._store is not None or (announcer is not None and announcer.key_changes_heard)
        if told and len(self.keys) < self._key_limit:
            self.keys[secret] = key
