"""Replay: rebuild projections from the log alone, verify them, or look back to a past position.

The fold applies the live path's own rules (`domain/logfold.py` hands every event it does not
apply inline to `projection.apply_event`, and a property test holds the two together), so a
replayed projection equals the live one, and `verify` checks that it does. Memory stays bounded:
the log is read in chunks, a finished job is written out and forgotten, and an open job keeps
only its state and a bitmap of the rows it has seen.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import attrs

from jobtracker.domain.errors import JobNotFound
from jobtracker.domain.logfold import LogFold
from jobtracker.domain.state import RowError, RowMark
from jobtracker.store.base import JobView
from jobtracker.store.rebuild import (
    Comparison,
    JobDiff,
    LogEntry,
    ProjectionRows,
    Rebuildable,
    TailFolder,
)

#: Events read per scan: large enough to amortize a round trip, small enough to stay bounded.
CHUNK = 50_000
#: Events folded between two turns of the event loop: while a chunk is folded, the scan of the
#: next one (PostgreSQL: its rows arriving on a socket) and the write of the last one move on.
SLICE = 5_000
#: Chunks whose rows may wait for a write still going before the fold waits for it.
WRITE_BEHIND = 4
#: Callback told how many more events were folded.
Progress = Callable[[int], None]


class Replayer:
    """Folds log entries, chunk by chunk, into the rows of a projection (`logfold` folds)."""

    def __init__(self) -> None:
        self._fold = LogFold()

    @property
    def events(self) -> int:
        """Events folded so far."""
        return self._fold.events

    @property
    def jobs(self) -> int:
        """Jobs seen so far."""
        return self._fold.jobs

    @property
    def statuses(self) -> Counter[str]:
        """Jobs finished (or drained) so far, by status."""
        return self._fold.statuses

    def feed(self, entries: Sequence[LogEntry]) -> None:
        """Fold part of a chunk; what is ready waits for the call to `fold` that ends the chunk."""
        self._fold.fold(entries)

    def fold(self, entries: Sequence[LogEntry]) -> ProjectionRows:
        """Fold a chunk of the log (position order); return what is ready to be written.

        Given no entries it drains: every job still open is returned, as it stands.
        """
        if entries:
            self._fold.fold(entries)
        else:
            self._fold.drain()
        finished, errors = self._fold.take()
        return ProjectionRows(
            states=[(state, position) for state, position, _ in finished],
            marks=[(state.job_id, marks) for state, _, marks in finished if marks],
            errors=errors,
        )


@attrs.frozen
class ReplayReport:
    """What a replay did."""

    events: int
    jobs: int
    position: int
    seconds: float
    statuses: dict[str, int]
    comparison: Comparison | None = None

    @property
    def rate(self) -> float:
        """Events folded per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _ignore(count: int) -> None:
    """A progress callback that shows nothing."""


async def _fill(
    store: Rebuildable,
    area: str,
    replayer: Replayer,
    *,
    job_id: str | None,
    upto: int | None,
    progress: Progress,
    chunk: int,
) -> tuple[int, int]:
    """Fold the log into `area` as far as it goes now; return the (position, version) reached.

    Three chunks are in flight: the next one being read, this one being folded, the rows of
    those before it being written; a store with threads (SQLite) overlaps its I/O with the fold.
    The fold does not wait for a write: while one is still going, the rows of the chunks folded
    meanwhile wait for the next (up to `WRITE_BEHIND` chunks' worth). A write is a transaction
    of several round trips, each needing a turn of the event loop that the fold hands out
    only between slices (PostgreSQL): fewer, larger writes keep the fold from stalling.
    """
    position = version = 0

    def scan() -> asyncio.Future[Sequence[LogEntry]]:
        return asyncio.ensure_future(
            store.scan_log(position, chunk, job_id=job_id, after_version=version, upto=upto)
        )

    reading, writing = scan(), None
    waiting, behind = ProjectionRows(), 0
    try:
        while entries := await reading:
            _, version, position, *_ = entries[-1]
            reading = scan()
            _merge(waiting, await _fold_in_slices(replayer, entries))
            behind += 1
            progress(len(entries))
            if writing is not None and (writing.done() or behind >= WRITE_BEHIND):
                await writing  # done, or the rows waiting are many: its outcome, or its error
                writing = None
            if writing is None:
                writing = asyncio.ensure_future(store.write_area(area, waiting))
                waiting, behind = ProjectionRows(), 0
        if writing is not None:
            await writing
        if behind:
            await store.write_area(area, waiting)
    finally:
        for pending in (reading, writing):
            if pending is not None and not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
    return position, version


def _merge(into: ProjectionRows, rows: ProjectionRows) -> None:
    into.states.extend(rows.states)
    into.marks.extend(rows.marks)
    into.errors.extend(rows.errors)


async def _fold_in_slices(replayer: Replayer, entries: Sequence[LogEntry]) -> ProjectionRows:
    """`replayer.fold(entries)`, giving the event loop a turn every `SLICE` events."""
    *head, last = [entries[low:low + SLICE] for low in range(0, len(entries), SLICE)]
    for part in head:
        replayer.feed(part)
        await asyncio.sleep(0)
    return replayer.fold(last)


@contextmanager
def _quiet_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: replay makes millions of short-lived, acyclic objects,
    and each collection would walk all of them again (it costs a third of the run otherwise)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _counting(replayer: Replayer, progress: Progress) -> TailFolder:
    def fold_tail(entries: Sequence[LogEntry]) -> ProjectionRows:
        progress(len(entries))
        return replayer.fold(entries)

    return fold_tail


def _report(replayer: Replayer, position: int, began: float, **extra: object) -> ReplayReport:
    return ReplayReport(
        events=replayer.events,
        jobs=replayer.jobs,
        position=position,
        seconds=time.perf_counter() - began,
        statuses=dict(replayer.statuses),
        **extra,  # type: ignore[arg-type]
    )


async def rebuild(
    store: Rebuildable,
    *,
    job_id: str | None = None,
    progress: Progress = _ignore,
    chunk: int = CHUNK,
) -> ReplayReport:
    """Rebuild every projection (or one job's) from the log and swap it in atomically."""
    began = time.perf_counter()
    area = "rebuild"
    await store.reset_area(area)
    replayer = Replayer()
    # Outside the lock, only up to where the log ends now: under a steady stream of appends
    # "until the log ends" might never come. The lock's catch-up folds the rest.
    end = await store.last_position()
    with _quiet_gc():
        position, version = await _fill(
            store, area, replayer, job_id=job_id, upto=end, progress=progress, chunk=chunk
        )
    if job_id is not None and replayer.jobs == 0:
        await store.drop_area(area)
        raise JobNotFound(f"Job not found: {job_id}")
    last = await store.swap_in(
        area,
        _counting(replayer, progress),
        after_position=position,
        after_version=version,
        job_id=job_id,
    )
    return _report(replayer, last, began)


async def verify(
    store: Rebuildable,
    *,
    job_id: str | None = None,
    progress: Progress = _ignore,
    chunk: int = CHUNK,
    limit: int = 20,
) -> ReplayReport:
    """Rebuild into a scratch area and compare it with the live projection; change nothing."""
    began = time.perf_counter()
    area = "verify"
    await store.reset_area(area)
    replayer = Replayer()
    try:
        end = await store.last_position()
        with _quiet_gc():
            position, version = await _fill(
                store, area, replayer, job_id=job_id, upto=end, progress=progress, chunk=chunk
            )
        comparison = await store.compare_area(
            area,
            _counting(replayer, progress),
            after_position=position,
            after_version=version,
            job_id=job_id,
            limit=limit,
        )
    finally:
        await store.drop_area(area)
    return _report(replayer, comparison.position, began, comparison=comparison)


async def rebuild_at(
    store: Rebuildable, upto: int, *, progress: Progress = _ignore, chunk: int = CHUNK
) -> ReplayReport:
    """Fold the whole log up to position `upto`: the report counts the jobs by status then.

    The projection is built in the scratch area 'at', dropped again before this returns (a
    database holds no leftovers); the live projection is left alone, appends keep folding onto it.
    """
    began = time.perf_counter()
    await store.reset_area("at")
    replayer = Replayer()
    try:
        with _quiet_gc():
            position, _ = await _fill(
                store, "at", replayer, job_id=None, upto=upto, progress=progress, chunk=chunk
            )
        replayer.fold(())  # the jobs still open at `upto` are counted too
    finally:
        await store.drop_area("at")
    return _report(replayer, position, began)


async def job_at(store: Rebuildable, job_id: str, upto: int, errors_limit: int) -> JobView:
    """One job as it stood at position `upto`."""
    area = "at_job"
    await store.reset_area(area)
    try:
        replayer = Replayer()
        await _fill(store, area, replayer, job_id=job_id, upto=upto, progress=_ignore, chunk=CHUNK)
        await store.write_area(area, replayer.fold(()))
        view = await store.area_view(area, job_id, errors_limit)
    finally:
        await store.drop_area(area)
    if view is None:
        raise JobNotFound(f"Job not found at position {upto}: {job_id}")
    return view


def describe(diff: JobDiff) -> list[str]:
    """A readable account of how one job's live projection differs from its log."""
    lines = [f"job {diff.job_id}:"]
    if diff.live is None:
        lines.append("  missing from the live projection, though the log has it")
    elif diff.rebuilt is None:
        lines.append("  in the live projection, though the log has no such job")
    else:
        lines.extend(
            f"  {column}: live {value!r}, log says {diff.rebuilt.get(column)!r}"
            for column, value in diff.live.items()
            if value != diff.rebuilt.get(column)
        )
    for label, items in (
        ("row marks only in the live projection", diff.marks_only_live),
        ("row marks only in the log", diff.marks_only_rebuilt),
        ("row errors only in the live projection", diff.errors_only_live),
        ("row errors only in the log", diff.errors_only_rebuilt),
    ):
        if items:
            lines.append(f"  {label}: " + ", ".join(_item(item) for item in items))
    return lines


def _item(item: RowMark | RowError) -> str:
    if isinstance(item, RowMark):
        return f"row {item.row} ({item.kind})"
    return f"row {item.row} ({item.email}: {item.error})"
