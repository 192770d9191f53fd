"""What the server keeps in memory because it never changes: finished bodies and job owners.

A SUCCESS or FAILURE body never changes, and neither does the key that owns a job. Only such facts
go in, so nothing here is ever stale, with one exception: retention may remove a finished job,
and every server then forgets it (`server/retention.py` watches the store's tombstones).
Both maps are bounded, least recently used out first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

import attrs

V = TypeVar("V")

#: 64 MiB: tens of thousands of typical bodies, a few hundred of the largest (1,000 errors listed).
DEFAULT_BUDGET = 64 * 1024 * 1024


@attrs.frozen
class FinishedBody:
    """What a GET of a finished job needs: who may read it, the bytes to send, their ETag."""

    owner: str
    body: bytes
    etag: str


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
        """Drop the job's value: retention removed the job (the one fact that does change)."""
        self._entries.pop(job_id, None)


class FinishedBodies(_Recent[FinishedBody]):
    """A least-recently-used map from job id to its finished body, within a byte budget."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        super().__init__()
        self._budget = budget
        self._used = 0

    def put(self, job_id: str, entry: FinishedBody) -> None:
        """Hold a finished job's body (a body bigger than the whole budget is not held)."""
        size = len(entry.body)
        if size > self._budget or job_id in self._entries:
            return
        self._entries[job_id] = entry
        self._used += size
        while self._used > self._budget:
            _, evicted = self._entries.popitem(last=False)
            self._used -= len(evicted.body)

    def forget(self, job_id: str) -> None:
        """Drop a pruned job's body."""
        entry = self._entries.pop(job_id, None)
        if entry is not None:
            self._used -= len(entry.body)


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
