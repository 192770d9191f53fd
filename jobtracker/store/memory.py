"""The in-memory store: the reference implementation and the test fake."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from jobtracker.errors import JobIdTaken, JobNotFound
from jobtracker.events import Created, NewEvent, RecordedEvent, new_event_id
from jobtracker.projection import AppendPlan, plan_append, start
from jobtracker.state import JobState, RowError, RowMark
from jobtracker.store.base import ApiKey, AppendResult, JobChange, JobView, utc_now


class MemoryStore:
    """Everything in dicts; a whole append happens between two awaits, so it is atomic."""

    def __init__(self) -> None:
        self._log: list[RecordedEvent] = []
        self._by_event_id: dict[str, RecordedEvent] = {}
        self._jobs: dict[str, JobState] = {}
        self._marks: dict[str, set[RowMark]] = {}
        self._errors: dict[str, dict[int, RowError]] = {}
        self._keys: dict[str, ApiKey] = {}
        self._keys_by_hash: dict[str, ApiKey] = {}
        self._wakers: list[Callable[[], None]] = []

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
        state = start(job_id, created)
        self._record(job_id, 1, NewEvent(event_id=new_event_id(), event=created))
        self._jobs[job_id] = state
        self._marks[job_id] = set()
        self._errors[job_id] = {}
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
        for wake in self._wakers:
            wake()
        return AppendResult(len(plan.new), plan.duplicates, plan.batch.state.version)

    def _apply(self, job_id: str, plan: AppendPlan) -> None:
        for offset, item in enumerate(plan.new):
            self._record(job_id, plan.first_version + offset, item)
        self._jobs[job_id] = plan.batch.state
        self._marks[job_id].update(plan.batch.marks)
        self._errors[job_id].update((e.row, e) for e in plan.batch.row_errors)

    def _record(self, job_id: str, version: int, item: NewEvent) -> None:
        recorded = RecordedEvent(
            job_id=job_id,
            version=version,
            position=len(self._log) + 1,
            event_id=item.event_id,
            recorded_at=utc_now(),
            event=item.event,
        )
        self._log.append(recorded)
        self._by_event_id[item.event_id] = recorded

    async def get_job(self, job_id: str, errors_limit: int) -> JobView | None:
        """The job's state and its first row errors."""
        state = self._jobs.get(job_id)
        if state is None:
            return None
        errors = sorted(self._errors[job_id].values(), key=lambda e: e.row)[:errors_limit]
        return JobView(state, tuple(errors))

    async def read_job_events(
        self, job_id: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        """One job's history, oldest first."""
        mine = (e for e in self._log if e.job_id == job_id and e.version > after_version)
        return [e for _, e in zip(range(limit), mine, strict=False)]

    async def read_log(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """The log in position order."""
        return self._log[after_position : after_position + limit]

    async def changes_since(self, after_position: int, limit: int = 1000) -> list[JobChange]:
        """Jobs with events after `after_position`."""
        latest: dict[str, JobChange] = {}
        for event in self._log[after_position : after_position + limit]:
            latest.pop(event.job_id, None)
            latest[event.job_id] = JobChange(event.job_id, event.version, event.position)
        return list(latest.values())

    async def last_position(self) -> int:
        """The newest position."""
        return len(self._log)

    def on_append(self, wake: Callable[[], None]) -> bool:
        """Every append happens in this process: call `wake` after each."""
        self._wakers.append(wake)
        return True

    async def add_key(self, key: ApiKey) -> None:
        """Store a key record."""
        self._keys[key.key_id] = self._keys_by_hash[key.key_hash] = key

    async def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash."""
        return self._keys_by_hash.get(key_hash)

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


