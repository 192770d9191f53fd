"""The one small interface every store implements, and the records it trades in."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import attrs

from jobtracker.domain.control import Deadline
from jobtracker.domain.events import Created, LabelPairs, NewEvent, RecordedEvent
from jobtracker.domain.listing import Cursor, JobQuery
from jobtracker.domain.projection import AppendPlan
from jobtracker.domain.state import JobState, RowError
from jobtracker.store.webhooks import WebhookStore


@attrs.frozen
class AppendResult:
    """What an append did: events written, exact re-sends ignored, the job's version after."""

    appended: int
    duplicates: int
    version: int
    #: The owner asked the job to stop: the worker should wind down (see `Cancelled`).
    cancel_requested: bool = False


def result_of(plan: AppendPlan) -> AppendResult:
    """What an append that wrote `plan` answers."""
    state = plan.batch.state
    return AppendResult(len(plan.new), plan.duplicates, state.version, state.cancel_requested)


@attrs.frozen
class JobView:
    """A job as GET shows it: its state and the first row errors, in row order."""

    state: JobState
    errors: tuple[RowError, ...] = ()


@attrs.frozen
class JobChange:
    """A job that changed in the log: its newest version and the position of that event."""

    job_id: str
    version: int
    position: int


@attrs.frozen
class JobListing:
    """A job as a listing shows it: its state, its labels, when it was created and last changed
    (log times; a finished job's last change is its ending)."""

    state: JobState
    labels: LabelPairs | None
    created_at: str
    updated_at: str

    @property
    def cursor(self) -> Cursor:
        """Where the page after this job starts."""
        return Cursor(self.created_at, self.state.job_id)


@attrs.frozen
class Tombstone:
    """What stays of a pruned job: its id (never given out again), its owner, when it ended."""

    job_id: str
    owner: str
    finished_at: str


@attrs.frozen
class Pruned:
    """What a prune removed (or, dry, would remove): jobs and their events."""

    jobs: int = 0
    events: int = 0


def expired_id(job_id: str) -> str:
    """Why a pruned job's id cannot be created again (409)."""
    return f"job_id: {job_id!r} belonged to a job that expired; an id is never used twice"


def _sorted_ids(key_ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(key_ids)))


@attrs.frozen
class ApiKey:
    """A stored API key: never the secret, only its hash."""

    key_id: str
    name: str
    scope: str
    key_hash: str
    created_at: str
    revoked_at: str | None = None
    #: A worker key's binding: the jobs of every owner (a platform-internal key) ...
    all_owners: bool = False
    #: ... or only the jobs of these owner keys (their ids, sorted).
    owners: tuple[str, ...] = attrs.field(default=(), converter=_sorted_ids)

    @property
    def active(self) -> bool:
        """Whether the key still opens doors."""
        return self.revoked_at is None

    @property
    def bound(self) -> bool:
        """A worker key limited to some owners' jobs: every other job id must look alike to it."""
        return self.scope == "worker" and not self.all_owners

    def acts_for(self, owner: str) -> bool:
        """Whether this is a worker key that may report on (and create) the jobs of `owner`."""
        return self.scope == "worker" and (self.all_owners or owner in self.owners)


def utc_now() -> str:
    """The time stamps the log records: ISO 8601, UTC, microseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@attrs.frozen
class Relation:
    """One table or index of a store, and the bytes it takes on disk."""

    name: str
    #: The table an index belongs to; a table's own name for a table.
    table: str
    is_index: bool
    bytes: int


@attrs.frozen
class StorageStats:
    """What a store holds and what it costs on disk (`jobtracker stats`).

    `log_bytes` is the event log with its indexes; `total_bytes` everything the store keeps
    (for SQLite the database file itself, for PostgreSQL every table of the store's schema).
    """

    events: int
    jobs: int
    total_bytes: int
    log_bytes: int
    relations: tuple[Relation, ...] = ()

    def per_event(self, size: int) -> float | None:
        """`size` over the number of events; None for an empty log."""
        return size / self.events if self.events else None


class Store(Protocol):
    """Where the log, the projection and the keys live.

    Every write is one transaction: an append validates the batch with the fold against the job's
    current state, writes the new events and the projection together, or writes nothing.
    """

    @property
    def webhooks(self) -> WebhookStore:
        """Webhook subscriptions and their deliveries (`store/webhooks.py`)."""

    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None:
        """Release connections and threads."""

    async def create_job(self, job_id: str, created: Created) -> tuple[JobState, bool]:
        """Create a job durably; return it and whether it is new (False: the owner's own retry)."""

    async def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Append a batch atomically and idempotently, updating the projection in the same write."""

    async def get_job(self, job_id: str, errors_limit: int) -> JobView | None:
        """The projection of one job, with at most `errors_limit` row errors."""

    async def read_job_events(
        self, job_id: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        """One job's history, oldest first."""

    async def read_job_errors(
        self, job_id: str, after_row: int = -1, limit: int = 1000
    ) -> list[RowError]:
        """One job's row errors with a row above `after_row`, in row order."""

    async def read_log(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """The whole log in position order, for tailing readers and replay."""

    async def changes_since(self, after_position: int, limit: int = 1000) -> list[JobChange]:
        """Jobs with events after `after_position`, one entry per job, oldest change first.

        A change feed polls this: it must never skip an event a reader has not seen yet.
        """

    async def last_position(self) -> int:
        """The newest position in the log (0 when empty)."""

    def on_append(self, wake: Callable[[], None]) -> bool:
        """Call `wake` on the event loop when any process may have appended; False if unable.

        Only a hint: whoever is woken re-reads the store. Stores that return False are polled.
        """

    # Operations (`server/health.py`, `server/metrics.py`): cheap enough for every probe and scrape.

    async def job_counts(self) -> dict[str, int]:
        """How many jobs have each status; a SQL store keeps them as jobs change (no count)."""

    async def missing_migrations(self) -> list[str]:
        """The migrations this version knows that the store has not applied ([] when current)."""

    def on_commit_group(self, observe: Callable[[int], None]) -> None:
        """Call `observe` with the number of appends each commit wrote (the group's size)."""

    async def add_key(self, key: ApiKey) -> None:
        """Store a new key record."""

    async def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not."""

    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not."""

    async def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke a key at once; False when no such key exists."""

    # Job control: every job created is watched until it ends (`domain/control.py`). Heartbeats
    # and the watch's schedule live beside the projection, never in the log.

    async def due_deadlines(self, now: float, limit: int) -> list[Deadline]:
        """Watched jobs whose next check is at or before `now` (epoch seconds), soonest first."""

    async def settle_deadlines(self, next_checks: Mapping[str, float | None]) -> None:
        """Move each job's next check to the time given, or stop watching it (None)."""

    async def record_heartbeats(self, beats: Mapping[str, float]) -> None:
        """Note the newest heartbeat (epoch seconds) of each watched job; writes no event."""

    async def check_by(self, job_id: str, at: float) -> None:
        """Look at a watched job no later than `at` (a cancel's grace running out)."""

    # Inventory (CONTRACT.md, "Inventory"): listing a key's jobs, and retention.

    async def list_jobs(
        self, owner: str, query: JobQuery, after: Cursor | None, limit: int
    ) -> list[JobListing]:
        """`owner`'s jobs matching `query`, newest first (by creation time, then job id),
        strictly below `after` when given; at most `limit`."""

    async def find_tombstone(self, job_id: str) -> Tombstone | None:
        """The tombstone a pruned job left, if this id belonged to one."""

    async def prune(self, finished_before: str, limit: int, *, dry_run: bool = False) -> Pruned:
        """Remove up to `limit` jobs that finished before `finished_before` (a log time) with their
        events, row marks and errors, leaving each a tombstone, in one short transaction.
        Dry: count every such job and its events, remove nothing. Call again until it removes
        nothing."""

    async def pruned_since(self, after_seq: int, limit: int = 1000) -> list[tuple[int, str]]:
        """Jobs pruned after the tombstone numbered `after_seq`, as (number, job id), oldest
        first: a server forgets what it holds of them in memory."""

    async def forget_cursors(self) -> tuple[int, int]:
        """The newest tombstone's number and the newest replay swap's (0: none yet): where a
        server starts watching both (`pruned_since`, `swaps_since`)."""

    async def swaps_since(self, after_seq: int, limit: int = 1000) -> list[tuple[int, str | None]]:
        """Replays made live after the swap numbered `after_seq`, as (number, the job replayed or
        None for every job), oldest first: a server forgets the bodies it holds of those jobs."""

    async def storage_stats(self) -> StorageStats:
        """Events, jobs, and the bytes each table and index takes (`jobtracker stats`)."""
