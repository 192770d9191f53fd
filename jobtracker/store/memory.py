"""The in-memory store: the reference implementation and the test fake."""

from __future__ import annotations

import bisect
import heapq
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import attrs

from jobtracker.domain.codec import encode_fields, stored_version
from jobtracker.domain.control import Deadline, cancel_event_id
from jobtracker.domain.errors import JobIdTaken, JobNotFound
from jobtracker.domain.events import Created, LabelPairs, NewEvent, RecordedEvent, new_event_id
from jobtracker.domain.listing import Cursor, JobQuery
from jobtracker.domain.projection import AppendPlan, plan_append, start
from jobtracker.domain.state import JobState, RowError, RowMark, Status
from jobtracker.store.base import (
    ApiKey,
    AppendResult,
    JobChange,
    JobListing,
    JobView,
    Pruned,
    StorageStats,
    Tombstone,
    expired_id,
    result_of,
    utc_now,
)
from jobtracker.store.deadlines import Watch, epoch_of, new_watch
from jobtracker.store.rebuild import (
    Comparison,
    JobDiff,
    LogEntry,
    ProjectionRows,
    TailFolder,
)
from jobtracker.store.rows import JOB_COLUMNS, state_to_row
from jobtracker.store.webhooks import MemoryWebhooks

T = TypeVar("T")


@attrs.define
class _Projection:
    """Jobs, their row marks and their row errors: the live projection or a scratch area."""

    jobs: dict[str, JobState] = attrs.field(factory=dict)
    marks: dict[str, set[RowMark]] = attrs.field(factory=dict)
    errors: dict[str, dict[int, RowError]] = attrs.field(factory=dict)

    def add(self, rows: ProjectionRows) -> None:
        """Write replay's rows."""
        for job_id, marks in rows.marks:
            self.marks.setdefault(job_id, set()).update(marks)
        for job_id, row, email, error in rows.errors:
            self.errors.setdefault(job_id, {})[row] = RowError(row, email, error)
        for state, _ in rows.states:
            self.jobs[state.job_id] = state
            self.marks.setdefault(state.job_id, set())
            self.errors.setdefault(state.job_id, {})

    def take_job(self, other: _Projection, job_id: str) -> None:
        """Replace one job's part with `other`'s."""
        _take(self.jobs, other.jobs, job_id)
        _take(self.marks, other.marks, job_id)
        _take(self.errors, other.errors, job_id)

    def job_ids(self) -> set[str]:
        """Every job this projection knows of."""
        return set(self.jobs) | {j for j, m in self.marks.items() if m} | {
            j for j, e in self.errors.items() if e
        }


def _take(mine: dict[str, T], theirs: dict[str, T], job_id: str) -> None:
    mine.pop(job_id, None)
    if job_id in theirs:
        mine[job_id] = theirs[job_id]


def _row_of(state: JobState | None) -> dict[str, object] | None:
    return None if state is None else dict(zip(JOB_COLUMNS, state_to_row(state), strict=True))


def _diff(live: _Projection, rebuilt: _Projection, job_id: str) -> JobDiff | None:
    state_a, state_b = live.jobs.get(job_id), rebuilt.jobs.get(job_id)
    marks_a, marks_b = live.marks.get(job_id, set()), rebuilt.marks.get(job_id, set())
    errors_a = set(live.errors.get(job_id, {}).values())
    errors_b = set(rebuilt.errors.get(job_id, {}).values())
    if (state_a, marks_a, errors_a) == (state_b, marks_b, errors_b):
        return None
    return JobDiff(
        job_id=job_id,
        live=_row_of(state_a),
        rebuilt=_row_of(state_b),
        marks_only_live=tuple(sorted(marks_a - marks_b)[:5]),
        marks_only_rebuilt=tuple(sorted(marks_b - marks_a)[:5]),
        errors_only_live=tuple(sorted(errors_a - errors_b)[:5]),
        errors_only_rebuilt=tuple(sorted(errors_b - errors_a)[:5]),
    )


class MemoryStore:
    """Everything in dicts; a whole append happens between two awaits, so it is atomic."""

    def __init__(self) -> None:
        #: Webhook subscriptions and deliveries: the reference implementation.
        self.webhooks = MemoryWebhooks()
        self._log: list[RecordedEvent] = []
        self._by_event_id: dict[str, RecordedEvent] = {}
        self._live = _Projection()
        self._jobs = self._live.jobs
        self._marks = self._live.marks
        self._errors = self._live.errors
        self._areas: dict[str, _Projection] = {}
        self._keys: dict[str, ApiKey] = {}
        self._keys_by_hash: dict[str, ApiKey] = {}
        self._wakers: list[Callable[[], None]] = []
        self._watches: dict[str, Watch] = {}
        self._last_event_at: dict[str, str] = {}
        #: Each job's creation time and labels (the listing's index), and pruned jobs.
        self._created: dict[str, tuple[str, LabelPairs | None]] = {}
        self._tombstones: dict[str, tuple[int, Tombstone]] = {}
        #: Replay swaps, oldest first: the job replayed, or None for all (`swaps_since` numbers
        #: them from 1).
        self._swaps: list[str | None] = []
        #: Positions of `_log` (a prune leaves holes) and the next one to give out.
        self._positions: list[int] = []
        self._next_position = 1

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    async def create_job(self, job_id: str, created: Created) -> tuple[JobState, bool]:
        """Create a job, or return the owner's existing one."""
        existing = self._jobs.get(job_id)
        if existing is not None:
            if existing.owner != created.owner:
                raise JobIdTaken(f"job_id: {job_id!r} is already used by another API key")
            return existing, False
        if job_id in self._tombstones:
            raise JobIdTaken(expired_id(job_id))
        state = start(job_id, created)
        self._record(job_id, 1, NewEvent(event_id=new_event_id(), event=created))
        self._created[job_id] = (self._last_event_at[job_id], created.labels)
        self._jobs[job_id] = state
        self._marks[job_id] = set()
        self._errors[job_id] = {}
        self._watches[job_id] = new_watch(created, time.time())
        return state, True

    async def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Plan with the fold, then apply the plan; nothing changes if planning raises."""
        state = self._jobs.get(job_id)
        if state is None:
            raise JobNotFound()
        known = {
            item.event_id: (prior.job_id, prior.event)
            for item in items
            if (prior := self._by_event_id.get(item.event_id)) is not None
        }
        plan = plan_append(state, items, known, self._marks[job_id])
        self._apply(job_id, plan)
        self._watch_start(job_id, state.status, plan.batch.state.status)
        for wake in self._wakers:
            wake()
        return result_of(plan)

    def _apply(self, job_id: str, plan: AppendPlan) -> None:
        for offset, item in enumerate(plan.new):
            self._record(job_id, plan.first_version + offset, item)
        self._jobs[job_id] = plan.batch.state
        self._marks[job_id].update(plan.batch.marks)
        self._errors[job_id].update((e.row, e) for e in plan.batch.row_errors)

    def _watch_start(self, job_id: str, before: Status, after: Status) -> None:
        """What the SQL stores' trigger does: a job leaving PENDING is looked at in time."""
        watch = self._watches.get(job_id)
        if watch is None or before is not Status.PENDING or after is Status.PENDING:
            return
        wait = 0 if after.is_terminal else watch.heartbeat_timeout
        watch.next_check = min(watch.next_check, time.time() + wait)

    def _record(self, job_id: str, version: int, item: NewEvent) -> None:
        recorded = RecordedEvent(
            job_id=job_id,
            version=version,
            position=self._next_position,
            event_id=item.event_id,
            recorded_at=utc_now(),
            event=item.event,
        )
        self._log.append(recorded)
        self._positions.append(recorded.position)
        self._next_position += 1
        self._by_event_id[item.event_id] = recorded
        self._last_event_at[job_id] = recorded.recorded_at

    async def due_deadlines(self, now: float, limit: int) -> list[Deadline]:
        """Watched jobs whose next check is due, soonest first."""
        due = sorted((w.next_check, job_id) for job_id, w in self._watches.items()
                     if w.next_check <= now)
        return [self._deadline(job_id) for _, job_id in due[:limit]]

    def _deadline(self, job_id: str) -> Deadline:
        watch, state = self._watches[job_id], self._jobs.get(job_id)
        asked = self._by_event_id.get(cancel_event_id(job_id))
        return Deadline(
            job_id, state.status if state else None, bool(state and state.cancel_requested),
            watch.heartbeat_timeout, watch.timeout, watch.timeout_at, watch.heartbeat_at,
            epoch_of(self._last_event_at.get(job_id)),
            epoch_of(asked.recorded_at) if asked else None,
        )

    async def settle_deadlines(self, next_checks: Mapping[str, float | None]) -> None:
        """Move each job's next check, or stop watching it."""
        for job_id, at in next_checks.items():
            if at is None:
                self._watches.pop(job_id, None)
            elif job_id in self._watches:
                self._watches[job_id].next_check = at

    async def record_heartbeats(self, beats: Mapping[str, float]) -> None:
        """Note each watched job's newest heartbeat."""
        for job_id, at in beats.items():
            watch = self._watches.get(job_id)
            if watch is not None:
                watch.heartbeat_at = max(watch.heartbeat_at or 0.0, at)

    async def check_by(self, job_id: str, at: float) -> None:
        """Look at the job no later than `at`."""
        watch = self._watches.get(job_id)
        if watch is not None:
            watch.next_check = min(watch.next_check, at)

    async def get_job(self, job_id: str, errors_limit: int) -> JobView | None:
        """The job's state and its first row errors."""
        state = self._jobs.get(job_id)
        if state is None:
            return None
        if state.status is not Status.SUCCESS or state.failed == 0:
            return JobView(state)  # only a SUCCESS body lists errors, as in the SQL stores
        errors = heapq.nsmallest(errors_limit, self._errors[job_id].values())
        return JobView(state, tuple(errors))

    async def read_job_events(
        self, job_id: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        """One job's history, oldest first."""
        mine = (e for e in self._log if e.job_id == job_id and e.version > after_version)
        return [e for _, e in zip(range(limit), mine, strict=False)]

    async def read_job_errors(
        self, job_id: str, after_row: int = -1, limit: int = 1000
    ) -> list[RowError]:
        """One job's row errors in row order."""
        found = sorted(e for e in self._errors.get(job_id, {}).values() if e.row > after_row)
        return found[:limit]

    def _after(self, position: int, limit: int) -> list[RecordedEvent]:
        start = bisect.bisect_right(self._positions, position)
        return self._log[start : start + limit]

    async def read_log(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """The log in position order."""
        return self._after(after_position, limit)

    async def changes_since(self, after_position: int, limit: int = 1000) -> list[JobChange]:
        """Jobs with events after `after_position`."""
        latest: dict[str, JobChange] = {}
        for event in self._after(after_position, limit):
            latest.pop(event.job_id, None)
            latest[event.job_id] = JobChange(event.job_id, event.version, event.position)
        return list(latest.values())

    def on_append(self, wake: Callable[[], None]) -> bool:
        """Every append happens in this process: call `wake` after each."""
        self._wakers.append(wake)
        return True

    async def job_counts(self) -> dict[str, int]:
        """Jobs by status, counted each time: memory:// holds only what a test or a demo makes."""
        return dict(Counter(state.status.value for state in self._jobs.values()))

    async def missing_migrations(self) -> list[str]:
        """None: there is no schema."""
        return []

    def on_commit_group(self, observe: Callable[[int], None]) -> None:
        """Never called: every append applies alone, with no commit to share."""

    async def add_key(self, key: ApiKey) -> None:
        """Store a key record."""
        self._keys[key.key_id] = self._keys_by_hash[key.key_hash] = key

    async def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash."""
        return self._keys_by_hash.get(key_hash)

    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id."""
        return self._keys.get(key_id)

    async def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""
        return list(self._keys.values())

    async def revoke_key(self, key_id: str) -> bool:
        """Mark a key revoked."""
        key = self._keys.get(key_id)
        if key is None:
            return False
        if key.active:
            revoked = attrs.evolve(key, revoked_at=utc_now())
            self._keys[key_id] = self._keys_by_hash[key.key_hash] = revoked
        return True

    # Replay (see `jobtracker.store.rebuild.Rebuildable`). Nothing below awaits between reading
    # the end of the log and swapping, so no append can slip in between.

    async def last_position(self) -> int:
        """The highest position in the log."""
        return self._next_position - 1

    def _scan(
        self, after_position: int, limit: int, job_id: str | None, after_version: int, upto: int
    ) -> list[LogEntry]:
        if job_id is None:
            chosen = [e for e in self._after(after_position, limit) if e.position <= upto]
        else:
            mine = (
                e for e in self._log
                if e.job_id == job_id and e.version > after_version and e.position <= upto
            )
            chosen = [e for _, e in zip(range(limit), mine, strict=False)]
        return [
            (e.job_id, e.version, e.position, e.event.TYPE, stored_version(e.event),
             encode_fields(e.event))
            for e in chosen
        ]

    async def scan_log(
        self,
        after_position: int,
        limit: int,
        *,
        job_id: str | None = None,
        after_version: int = 0,
        upto: int | None = None,
    ) -> list[LogEntry]:
        """Log entries in position order."""
        ceiling = self._next_position - 1 if upto is None else upto
        return self._scan(after_position, limit, job_id, after_version, ceiling)

    async def reset_area(self, area: str) -> None:
        """A fresh, empty scratch projection."""
        self._areas[area] = _Projection()

    async def write_area(self, area: str, rows: ProjectionRows) -> None:
        """Add replay's rows to the area."""
        self._areas[area].add(rows)

    def _catch_up(
        self, area: str, fold_tail: TailFolder, position: int, version: int, job_id: str | None
    ) -> int:
        while entries := self._scan(position, 10_000, job_id, version, self._next_position - 1):
            self._areas[area].add(fold_tail(entries))
            _, version, position, *_ = entries[-1]
        self._areas[area].add(fold_tail(()))
        for job_id in self._tombstones:  # pruned since the area read their events
            self._areas[area].take_job(_Projection(), job_id)
        return position

    async def swap_in(
        self,
        area: str,
        fold_tail: TailFolder,
        *,
        after_position: int,
        after_version: int = 0,
        job_id: str | None = None,
    ) -> int:
        """Catch up, then make the area live."""
        last = self._catch_up(area, fold_tail, after_position, after_version, job_id)
        rebuilt = self._areas.pop(area)
        if job_id is None:
            self._live = rebuilt
        else:
            self._live.take_job(rebuilt, job_id)
        self._swaps.append(job_id)
        self._jobs, self._marks, self._errors = self._live.jobs, self._live.marks, self._live.errors
        return last

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
        """Catch up, then diff the area with the live projection."""
        last = self._catch_up(area, fold_tail, after_position, after_version, job_id)
        rebuilt = self._areas[area]
        jobs = {job_id} if job_id is not None else self._live.job_ids() | rebuilt.job_ids()
        diffs = [d for j in sorted(jobs) if (d := _diff(self._live, rebuilt, j)) is not None]
        return Comparison(position=last, differing=len(diffs), diffs=tuple(diffs[:limit]))

    async def area_view(self, area: str, job_id: str, errors_limit: int) -> JobView | None:
        """One job of the area."""
        part = self._areas[area]
        state = part.jobs.get(job_id)
        if state is None:
            return None
        errors = sorted(part.errors.get(job_id, {}).values())[:errors_limit]
        return JobView(state, tuple(errors))

    async def drop_area(self, area: str) -> None:
        """Forget the area."""
        self._areas.pop(area, None)

    # Inventory.

    async def list_jobs(
        self, owner: str, query: JobQuery, after: Cursor | None, limit: int
    ) -> list[JobListing]:
        """The owner's matching jobs, newest first."""
        found = []
        for job_id, (created_at, labels) in self._created.items():
            state = self._jobs.get(job_id)
            if state is None or state.owner != owner:
                continue
            if after is not None and (created_at, job_id) >= (after.created_at, after.job_id):
                continue
            if _matches(query, state, labels, created_at):
                found.append(JobListing(state, labels, created_at, self._last_event_at[job_id]))
        found.sort(key=lambda j: (j.created_at, j.state.job_id), reverse=True)
        return found[:limit]

    async def find_tombstone(self, job_id: str) -> Tombstone | None:
        """The pruned job's tombstone."""
        held = self._tombstones.get(job_id)
        return None if held is None else held[1]

    async def prune(self, finished_before: str, limit: int, *, dry_run: bool = False) -> Pruned:
        """Remove finished jobs (or count them, dry) with everything but a tombstone."""
        chosen = [
            state for job_id, state in self._jobs.items()
            if state.status.is_terminal and self._last_event_at[job_id] < finished_before
        ]
        if not dry_run:
            chosen = chosen[:limit]
        gone = {state.job_id for state in chosen}
        if dry_run or not gone:
            return Pruned(len(chosen), sum(state.version for state in chosen))
        for state in chosen:
            seq = len(self._tombstones) + 1
            ended = self._last_event_at.pop(state.job_id)
            self._tombstones[state.job_id] = (seq, Tombstone(state.job_id, state.owner, ended))
            for part in (self._jobs, self._marks, self._errors, self._created, self._watches):
                part.pop(state.job_id, None)
        kept = [e for e in self._log if e.job_id not in gone]
        for event in self._log:
            if event.job_id in gone:
                del self._by_event_id[event.event_id]
        self._log, self._positions = kept, [e.position for e in kept]
        return Pruned(len(chosen), sum(state.version for state in chosen))

    async def pruned_since(self, after_seq: int, limit: int = 1000) -> list[tuple[int, str]]:
        """Pruned jobs after tombstone `after_seq`."""
        found = sorted((seq, job_id) for job_id, (seq, _) in self._tombstones.items()
                       if seq > after_seq)
        return found[:limit]

    async def forget_cursors(self) -> tuple[int, int]:
        """The newest tombstone's and swap's numbers."""
        return max((seq for seq, _ in self._tombstones.values()), default=0), len(self._swaps)

    async def swaps_since(self, after_seq: int, limit: int = 1000) -> list[tuple[int, str | None]]:
        """Replay swaps after swap `after_seq`."""
        seqs = range(after_seq + 1, min(len(self._swaps), after_seq + limit) + 1)
        return [(seq, self._swaps[seq - 1]) for seq in seqs]

    async def storage_stats(self) -> StorageStats:
        """Counts only: memory:// keeps nothing on disk."""
        return StorageStats(len(self._log), len(self._jobs), 0, 0)


def _matches(query: JobQuery, state: JobState, labels: LabelPairs | None, created_at: str) -> bool:
    if query.statuses and state.status not in query.statuses:
        return False
    if query.created_after is not None and created_at <= query.created_after:
        return False
    if query.created_before is not None and created_at >= query.created_before:
        return False
    held = dict(labels or ())
    return all(held.get(key) == value for key, value in query.labels)
