"""Replay: rebuild projections from the log alone, verify them, or look back to a past position.

The fold is the live path's own (`projection.start` and `projection.fold_batch`), so a replayed
projection equals the live one by construction, and `verify` checks that it does. Memory stays
bounded: the log is read in chunks, a finished job is written out and forgotten, and an open
job keeps only its state and a bitmap of the rows it has seen.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence, Set
from contextlib import contextmanager

import attrs

from jobtracker.domain.errors import JobNotFound, JobtrackerError, UnreadableLog
from jobtracker.domain.events import Created, Event
from jobtracker.domain.projection import fold_batch, start
from jobtracker.domain.state import JobState, RowError, RowMark
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
#: Rows below this are kept as bits (2**26 rows = 8 MiB per kind at most); rarer, larger row
#: numbers go in a set.
DENSE_ROWS = 1 << 26
#: Callback told how many more events were folded.
Progress = Callable[[int], None]


class RowMarks(Set[RowMark]):
    """One job's row marks in little memory: a bit per row and kind, a set for huge row numbers."""

    __slots__ = ("_count", "_email", "_far", "_outcome")

    def __init__(self) -> None:
        self._outcome = bytearray()
        self._email = bytearray()
        self._far: set[RowMark] = set()
        self._count = 0

    def __contains__(self, mark: object) -> bool:
        row: int
        kind: str
        row, kind = mark  # type: ignore[misc]
        if row >= DENSE_ROWS:
            return mark in self._far
        bits = self._outcome if kind == "outcome" else self._email
        byte = row >> 3
        return byte < len(bits) and bool(bits[byte] >> (row & 7) & 1)

    def add(self, mark: RowMark) -> None:
        """Record a mark (the fold has already refused a second one for the same row)."""
        self.update((mark,))

    def update(self, marks: Sequence[RowMark]) -> None:
        """Record many marks; one call per batch, not per mark, on replay's hot path."""
        outcome, email = self._outcome, self._email
        for mark in marks:
            row, kind = mark
            if row >= DENSE_ROWS:
                self._far.add(mark)
                continue
            bits = outcome if kind == "outcome" else email
            byte = row >> 3
            if byte >= len(bits):
                bits.extend(bytes(max(byte + 1 - len(bits), len(bits))))
            bits[byte] |= 1 << (row & 7)
        self._count += len(marks)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[RowMark]:
        for kind, bits in (("outcome", self._outcome), ("email", self._email)):
            for byte, value in enumerate(bits):
                for bit in range(8):
                    if value >> bit & 1:
                        yield RowMark(byte * 8 + bit, kind)  # type: ignore[arg-type]
        yield from self._far


class _OpenJob:
    """A job the replay has seen but that has not finished yet."""

    __slots__ = ("marks", "position", "state")

    def __init__(self, state: JobState, position: int) -> None:
        self.state = state
        self.position = position
        self.marks = RowMarks()


class Replayer:
    """Folds log entries, chunk by chunk, into the rows of a projection."""

    def __init__(self) -> None:
        self._open: dict[str, _OpenJob] = {}
        self.events = 0
        self.jobs = 0
        self.statuses: Counter[str] = Counter()

    def fold(self, entries: Sequence[LogEntry]) -> ProjectionRows:
        """Fold a chunk of the log (position order); return what is ready to be written.

        Given no entries it drains: every job still open is returned, as it stands.
        """
        if not entries:
            return self._drain()
        rows = ProjectionRows()
        groups: dict[str, list[LogEntry]] = {}
        for entry in entries:
            group = groups.get(entry[0])
            if group is None:
                groups[entry[0]] = group = []
            group.append(entry)
        for job_id, group in groups.items():
            self._fold_job(job_id, group, rows)
        self.events += len(entries)
        return rows

    def _fold_job(self, job_id: str, group: list[LogEntry], rows: ProjectionRows) -> None:
        job = self._open.get(job_id)
        events: list[Event] = [entry[3] for entry in group]
        if job is None:
            job = self._open_job(job_id, group[0])
            del events[0]
        # Versions rise with positions within a job and never repeat, so a right first and
        # last version mean none is missing in between.
        first = job.state.version + 1
        if events and (group[-len(events)][1], group[-1][1]) != (first, first + len(events) - 1):
            raise UnreadableLog(
                f"job {job_id}: positions {group[0][2]}-{group[-1][2]} hold versions "
                f"{group[-len(events)][1]}-{group[-1][1]} where {first}-{first + len(events) - 1} "
                "should follow: the log has a gap"
            )
        try:
            batch = fold_batch(job.state, events, job.marks)
        except JobtrackerError as exc:
            raise UnreadableLog(
                f"job {job_id}: the events at positions {group[0][2]}-{group[-1][2]} "
                f"cannot be folded: {exc.detail}"
            ) from None
        job.marks.update(batch.marks)
        if batch.marks:
            rows.marks.append((job_id, batch.marks))
        rows.errors.extend([(job_id, *error) for error in batch.row_errors])
        job.state = batch.state
        job.position = group[-1][2]
        if batch.state.status.is_terminal:
            self._close(job_id, rows)

    def _open_job(self, job_id: str, first: LogEntry) -> _OpenJob:
        _, version, position, event = first
        if version != 1 or not isinstance(event, Created):
            raise UnreadableLog(
                f"job {job_id}: the replay has no state for it at position {position} "
                f"(version {version}): its history lacks a 'created' event, or goes on "
                "after the job finished"
            )
        job = self._open[job_id] = _OpenJob(start(job_id, event), position)
        self.jobs += 1
        return job

    def _close(self, job_id: str, rows: ProjectionRows) -> None:
        job = self._open.pop(job_id)
        rows.states.append((job.state, job.position))
        self.statuses[job.state.status.value] += 1

    def _drain(self) -> ProjectionRows:
        rows = ProjectionRows()
        for job_id in list(self._open):
            self._close(job_id, rows)
        return rows


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

    Three chunks are in flight: the next one being read, this one being folded, the previous one
    being written; a store with threads (SQLite) overlaps its I/O with the fold.
    """
    position = version = 0

    def scan() -> asyncio.Future[list[LogEntry]]:
        return asyncio.ensure_future(
            store.scan_log(position, chunk, job_id=job_id, after_version=version, upto=upto)
        )

    reading, writing = scan(), None
    try:
        while entries := await reading:
            _, version, position, _ = entries[-1]
            reading = scan()
            rows = replayer.fold(entries)
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(store.write_area(area, rows))
            progress(len(entries))
        if writing is not None:
            await writing
    finally:
        for pending in (reading, writing):
            if pending is not None and not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
    return position, version


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
