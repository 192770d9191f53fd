"""What a store offers replay: a fast scan of the log and scratch projections it can swap in.

Replay (`jobtracker.store.replay`) owns the fold and every decision; a store only moves rows.
A scratch *area* is an empty copy of the projection (jobs, row marks, row errors) under a short
name; replay fills it, then the store either swaps it in for the live projection or compares the
two. The two steps that must see the very end of the log, `swap_in` and `compare_area`, run
under the store's write lock: they feed the events appended since the last scan to `fold_tail`,
write what it returns, and only then swap or compare, so nothing appended meanwhile is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from jobtracker.domain.codec import StoredRow
from jobtracker.domain.logfold import ErrorRow, RowMarks
from jobtracker.domain.state import JobState, RowError, RowMark
from jobtracker.store.base import JobView

#: One event as replay reads it, as the log stores it (the fold decodes it):
#: (job_id, version, position, type, schema_version, data).
LogEntry = StoredRow
#: Row marks to store, one finished job's at a time: (job_id, all its marks).
MarkGroup = tuple[str, RowMarks]


@attrs.frozen
class ProjectionRows:
    """Part of a rebuilt projection: job states (with their last position), marks and errors.

    A job's marks come whole, once, with its state; its row errors as the fold meets them.
    """

    states: list[tuple[JobState, int]] = attrs.field(factory=list)
    marks: list[MarkGroup] = attrs.field(factory=list)
    errors: list[ErrorRow] = attrs.field(factory=list)


#: Folds the entries it is given and returns the rows to write; given no entries, it returns
#: every job it still holds (the end of the log was reached).
TailFolder = Callable[[Sequence[LogEntry]], ProjectionRows]


@attrs.frozen
class JobDiff:
    """How one job's live projection differs from the one rebuilt from its log."""

    job_id: str
    #: The job's projection row, column by column (None: the job is missing on that side).
    live: Mapping[str, Any] | None
    rebuilt: Mapping[str, Any] | None
    #: The first few row marks and row errors present on one side only.
    marks_only_live: tuple[RowMark, ...] = ()
    marks_only_rebuilt: tuple[RowMark, ...] = ()
    errors_only_live: tuple[RowError, ...] = ()
    errors_only_rebuilt: tuple[RowError, ...] = ()


@attrs.frozen
class Comparison:
    """What `compare_area` found: how many jobs differ, the first of them in detail."""

    position: int
    differing: int
    diffs: tuple[JobDiff, ...] = ()


@runtime_checkable
class Rebuildable(Protocol):
    """The store side of replay; the memory, SQLite and PostgreSQL stores implement it."""

    async def last_position(self) -> int:
        """The highest position in the log now (0 when it is empty)."""

    async def scan_log(
        self,
        after_position: int,
        limit: int,
        *,
        job_id: str | None = None,
        after_version: int = 0,
        upto: int | None = None,
    ) -> Sequence[LogEntry]:
        """At most `limit` entries in position order, after `after_position` and up to `upto`.

        With `job_id`, only that job's, after `after_version`. An entry is never returned while
        one with a lower position may still commit: replay never goes back.
        """

    async def reset_area(self, area: str) -> None:
        """Make the scratch projection `area` exist and be empty."""

    async def write_area(self, area: str, rows: ProjectionRows) -> None:
        """Add rows to `area` (each job state is written once)."""

    async def swap_in(
        self,
        area: str,
        fold_tail: TailFolder,
        *,
        after_position: int,
        after_version: int = 0,
        job_id: str | None = None,
    ) -> int:
        """Under the write lock: fold the rest of the log into `area`, then make it live.

        With `job_id`, only that job's rows are replaced. Returns the last position folded.
        """

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
        """Under the write lock: fold the rest of the log into `area`, then diff it with live."""

    async def area_view(self, area: str, job_id: str, errors_limit: int) -> JobView | None:
        """One job of `area` as GET would show it."""

    async def drop_area(self, area: str) -> None:
        """Forget `area`."""
