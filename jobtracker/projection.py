"""The fold: how each event changes a job, and what the seed's GET body looks like.

Everything here is pure. The same `fold` serves live appends and replay, so a replayed projection
is the live one by construction. Row uniqueness is decided from `recorded`, the set of row marks the
store already holds for the rows in question, so a job with a million rows never has to sit in
memory to be checked.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any

import attrs

from jobtracker.errors import (
    EventIdReused,
    InvalidInput,
    JobFinished,
    RowAlreadyReported,
    RowsExceedTotal,
)
from jobtracker.events import (
    Created,
    EmailFailed,
    EmailSent,
    Event,
    Failed,
    NewEvent,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
    check_fields,
)
from jobtracker.state import JobState, Progress, RowError, RowKind, RowMark, Status

#: How many row errors a GET body lists before it points to `/errors` instead.
DEFAULT_ERRORS_CAP = 1000


@attrs.frozen
class Step:
    """One event folded: the new state and the facts the store must keep beside it."""

    state: JobState
    mark: RowMark | None = None
    row_error: RowError | None = None


@attrs.frozen
class Batch:
    """Several events folded in order."""

    state: JobState
    marks: tuple[RowMark, ...] = ()
    row_errors: tuple[RowError, ...] = ()


@attrs.frozen
class AppendPlan:
    """What an append writes: the events new to the log (versions follow `first_version`)."""

    batch: Batch
    new: tuple[NewEvent, ...]
    duplicates: int

    @property
    def first_version(self) -> int:
        """The version the first new event gets."""
        return self.batch.state.version - len(self.new) + 1


def start(job_id: str, created: Created) -> JobState:
    """The state a `created` event opens a job with (version 1, PENDING)."""
    check_fields(created)
    return JobState(
        job_id=job_id,
        owner=created.owner,
        status=Status.PENDING,
        version=1,
        label=created.label,
        expected_total=created.total,
    )


#: A job's state while events are folded into it: `JobState`'s fields, by name. Mutable, so a
#: 1,000-event batch builds one `JobState` at the end instead of several per event.
_Tally = dict[str, Any]


def fold(
    state: JobState, event: Event, recorded: Set[RowMark] = frozenset(), where: str = ""
) -> Step:
    """Apply one event to a job; raise our own error, naming the field, if it may not apply."""
    tally = attrs.asdict(state, recurse=False)
    mark, row_error = _apply(tally, event, recorded, where)
    return Step(JobState(**tally), mark, row_error)


def _apply(
    tally: _Tally, event: Event, recorded: Set[RowMark], where: str
) -> tuple[RowMark | None, RowError | None]:
    """The transition rules, on a tally; returns the row mark and row error the event adds."""
    status: Status = tally["status"]
    if status.is_terminal:
        raise JobFinished(
            f"Job {tally['job_id']} is already {status.value}; it accepts no more events"
        )
    check_fields(event, where)
    tally["version"] += 1
    match event:  # row and e-mail events first: they are nearly all of a large job's events
        case RowSucceeded() | RowFailed():
            return _apply_row(tally, event, recorded, where)
        case EmailSent() | EmailFailed():
            mark = _claim(tally, event.row, "email", recorded, where)
            tally["status"] = Status.PROGRESS
            counter = "emails_sent" if isinstance(event, EmailSent) else "emails_failed"
            tally[counter] += 1
            return mark, None
        case Created():
            raise InvalidInput(f"{where}type: 'created' is written by job creation, not appended")
        case Started():
            if status is Status.PENDING:
                tally["status"] = Status.STARTED
        case ProgressReported(current=current, total=total, status=text):
            tally["status"] = Status.PROGRESS
            tally["progress"] = Progress(current=current, total=total, status=text)
        case Succeeded():
            tally["status"] = Status.SUCCESS
        case Failed(error=error):
            tally["status"] = Status.FAILURE
            tally["error"] = error
        case _:  # pragma: no cover
            raise InvalidInput(f"{where}type: unknown event {event!r}")
    return None, None


def _claim(
    tally: _Tally, row: int, kind: RowKind, recorded: Set[RowMark], where: str
) -> RowMark:
    mark = RowMark(row, kind)
    if mark in recorded:
        what = "an outcome" if kind == "outcome" else "an e-mail outcome"
        raise RowAlreadyReported(
            f"{where}row: row {row} of job {tally['job_id']} already has {what}"
        )
    return mark


def _apply_row(
    tally: _Tally, event: RowSucceeded | RowFailed, recorded: Set[RowMark], where: str
) -> tuple[RowMark, RowError | None]:
    mark = _claim(tally, event.row, "outcome", recorded, where)
    expected = tally["expected_total"]
    processed = tally["successful"] + tally["failed"]
    if expected is not None and processed >= expected:
        raise RowsExceedTotal(
            f"{where}row: job {tally['job_id']} was created with total {expected}; "
            f"row {event.row} would be outcome number {processed + 1}"
        )
    tally["status"] = Status.PROGRESS
    if isinstance(event, RowFailed):
        tally["failed"] += 1
        return mark, RowError(row=event.row, email=event.email, error=event.error)
    tally["internal_count" if event.internal else "external_count"] += 1
    tally["successful"] += 1
    return mark, None


@functools.lru_cache(maxsize=10_000)
def _where(index: int) -> str:
    """The prefix naming event `index` of a batch in an error's detail (made once per index)."""
    return f"events[{index}]."


def fold_batch(
    state: JobState,
    events: Iterable[Event],
    recorded: Set[RowMark] = frozenset(),
    *,
    first_index: int = 0,
    indices: Sequence[int] | None = None,
) -> Batch:
    """Fold events in order; a row claimed earlier in the batch counts as recorded."""
    marks: list[RowMark] = []
    row_errors: list[RowError] = []
    claimed = set(recorded)
    tally = attrs.asdict(state, recurse=False)
    for n, event in enumerate(events):
        index = indices[n] if indices is not None else first_index + n
        mark, row_error = _apply(tally, event, claimed, _where(index))
        if mark is not None:
            marks.append(mark)
            claimed.add(mark)
        if row_error is not None:
            row_errors.append(row_error)
    return Batch(JobState(**tally), tuple(marks), tuple(row_errors))


def plan_append(
    state: JobState,
    items: Sequence[NewEvent],
    known: Mapping[str, tuple[str, Event]],
    recorded: Set[RowMark] = frozenset(),
) -> AppendPlan:
    """Decide what an append writes: drop exact re-sends, refuse reused ids, fold the rest.

    `known` maps each event id of `items` that is already in the log to its (job id, event).
    """
    fresh: dict[str, tuple[int, NewEvent]] = {}
    duplicates = 0
    for index, item in enumerate(items):
        prior = known.get(item.event_id)
        twin = fresh.get(item.event_id)
        if prior is None and twin is None:
            fresh[item.event_id] = (index, item)
            continue
        if prior is not None and prior != (state.job_id, item.event):
            raise EventIdReused(
                f"events[{index}].event_id: {item.event_id!r} was already recorded "
                "with different content"
            )
        if twin is not None and twin[1].event != item.event:
            raise InvalidInput(
                f"events[{index}].event_id: {item.event_id!r} repeats events[{twin[0]}] "
                "with different content"
            )
        duplicates += 1
    if not fresh:
        return AppendPlan(Batch(state), (), duplicates)
    indices = [index for index, _ in fresh.values()]
    new = tuple(item for _, item in fresh.values())
    batch = fold_batch(state, (item.event for item in new), recorded, indices=indices)
    return AppendPlan(batch, new, duplicates)


def replay(job_id: str, events: Iterable[Event]) -> Batch:
    """Rebuild one job from its whole history, `created` first."""
    iterator = iter(events)
    first = next(iterator, None)
    if not isinstance(first, Created):
        raise InvalidInput(f"job {job_id}: history does not start with a 'created' event")
    return fold_batch(start(job_id, first), iterator, first_index=1)


def progress_body(state: JobState) -> dict[str, Any]:
    """The seed's `progress` object: the latest report as sent, or one derived from the rows."""
    progress = state.progress
    if progress is None:
        done = state.rows_processed
        total = state.expected_total if state.expected_total is not None else done
        progress = Progress(current=done, total=total)
    text = progress.status
    if text is None:
        text = f"Procesando fila {progress.current} de {progress.total}"
    return {"current": progress.current, "total": progress.total, "status": text}


def result_body(
    state: JobState, errors: Sequence[RowError], errors_cap: int = DEFAULT_ERRORS_CAP
) -> dict[str, Any]:
    """The seed's `result` object; `errors` are the job's first row errors in row order."""
    listed = errors[:errors_cap]
    result: dict[str, Any] = {
        "total": state.rows_processed,
        "successful": state.successful,
        "failed": state.failed,
        "errors": [{"row": e.row, "email": e.email, "error": e.error} for e in listed],
        "emails_sent": state.emails_sent,
        "emails_failed": state.emails_failed,
        "internal_count": state.internal_count,
        "external_count": state.external_count,
    }
    if state.failed > len(listed):
        result["errors_total"] = state.failed
        result["errors_truncated"] = True
    return result


def job_body(
    state: JobState, errors: Sequence[RowError] = (), errors_cap: int = DEFAULT_ERRORS_CAP
) -> dict[str, Any]:
    """The GET body for a job, exactly the seed's shape for its status."""
    body: dict[str, Any] = {"job_id": state.job_id, "status": state.status.value}
    if state.status is Status.PROGRESS:
        body["progress"] = progress_body(state)
    elif state.status is Status.SUCCESS:
        body["result"] = result_body(state, errors, errors_cap)
    elif state.status is Status.FAILURE:
        body["error"] = state.error
    return body


def rows_touched(events: Iterable[Event]) -> set[int]:
    """The row numbers a batch reports on: the only marks the store must look up for it."""
    return {
        event.row
        for event in events
        if isinstance(event, RowSucceeded | RowFailed | EmailSent | EmailFailed)
    }
