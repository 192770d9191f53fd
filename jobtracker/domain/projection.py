"""The fold: how each event changes a job, and what the seed's GET body looks like.

Everything here is pure. The same `fold` serves live appends and replay, so a replayed projection
is the live one by construction. Row uniqueness is decided from `recorded`, the set of row marks the
store already holds for the rows in question, so a job with a million rows never has to sit in
memory to be checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any, NoReturn

import attrs

from jobtracker.domain.errors import (
    EventIdReused,
    InvalidInput,
    JobFinished,
    RowAlreadyReported,
    RowsExceedTotal,
)
from jobtracker.domain.events import (
    FIELDS_OK,
    CancelRequested,
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
from jobtracker.domain.state import JobState, Progress, RowError, RowMark, Status

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


def fold(
    state: JobState, event: Event, recorded: Set[RowMark] = frozenset(), where: str = ""
) -> Step:
    """Apply one event to a job; raise our own error, naming the field, if it may not apply."""
    draft = Draft(state)
    marks: list[RowMark] = []
    row_errors: list[RowError] = []
    apply_event(draft, event, recorded, frozenset(), marks, row_errors, where)
    return Step(draft.freeze(), marks[0] if marks else None, row_errors[0] if row_errors else None)


def fold_batch(
    state: JobState,
    events: Iterable[Event],
    recorded: Set[RowMark] = frozenset(),
    *,
    first_index: int = 0,
    indices: Sequence[int] | None = None,
) -> Batch:
    """Fold events in order; a row claimed earlier in the batch counts as recorded."""
    draft = Draft(state)
    marks: list[RowMark] = []
    row_errors: list[RowError] = []
    claimed: set[RowMark] = set()
    for n, event in enumerate(events):
        index = indices[n] if indices is not None else first_index + n
        apply_event(draft, event, recorded, claimed, marks, row_errors, index)
    return Batch(draft.freeze(), tuple(marks), tuple(row_errors))


# The fold runs once per event on every append and a million times per replayed job, so it works
# on one mutable draft per call and builds a single frozen `JobState` at the end, instead of
# several `attrs.evolve` per event. Only this module and replay's fold (`logfold.py`) see drafts.
class Draft:
    """A job's state in the middle of a fold."""

    __slots__ = (
        "base", "cancel_requested", "emails_failed", "emails_sent", "error", "external_count",
        "failed", "internal_count", "progress", "status", "successful", "version",
    )

    def __init__(self, state: JobState) -> None:
        self.base = state
        self.status = state.status
        self.version = state.version
        self.progress = state.progress
        self.successful = state.successful
        self.failed = state.failed
        self.internal_count = state.internal_count
        self.external_count = state.external_count
        self.emails_sent = state.emails_sent
        self.emails_failed = state.emails_failed
        self.error = state.error
        self.cancel_requested = state.cancel_requested

    def freeze(self) -> JobState:
        """The draft as a frozen state."""
        base = self.base
        # Positional, in `JobState`'s field order: a call with 15 keywords costs 40% more, and
        # this runs once per append (a field out of order fails every fold test).
        return JobState(
            base.job_id,
            base.owner,
            self.status,
            self.version,
            base.label,
            base.expected_total,
            self.progress,
            self.successful,
            self.failed,
            self.internal_count,
            self.external_count,
            self.emails_sent,
            self.emails_failed,
            self.error,
            self.cancel_requested,
        )


Where = str | int


def _prefix(where: Where) -> str:
    """An error message's field prefix; an index is only formatted when something is wrong."""
    return where if isinstance(where, str) else f"events[{where}]."


# The fold runs once per row event. A NamedTuple's own constructor is a Python function; the tuple
# one builds the same mark in C at half the cost. An enum member read off its class goes through
# a descriptor (80 ns); read from a module constant it costs a tenth of that.
_new_mark = tuple.__new__
_SUCCESS, _FAILURE, _PROGRESS = Status.SUCCESS, Status.FAILURE, Status.PROGRESS


def apply_event(
    draft: Draft,
    event: Event,
    recorded: Set[RowMark],
    claimed: set[RowMark] | frozenset[RowMark],
    marks: list[RowMark],
    row_errors: list[RowError],
    where: Where,
) -> None:
    """The transition rules: apply one event to `draft`, or raise naming the field.

    Row events are handled inline (no helper calls): they are nearly every event of a big job.
    """
    status = draft.status
    if status is _SUCCESS or status is _FAILURE:
        raise JobFinished(
            f"Job {draft.base.job_id} is already {status.value}; it accepts no more events"
        )
    kind = type(event)
    try:
        valid = FIELDS_OK[kind](event)
    except (KeyError, TypeError):
        valid = False
    if not valid:
        check_fields(event, _prefix(where))
    draft.version += 1
    if kind is RowSucceeded or kind is RowFailed:
        mark = _new_mark(RowMark, (event.row, "outcome"))  # type: ignore[union-attr]
        if mark in claimed or mark in recorded:
            _refuse_second(draft, mark, where)
        expected = draft.base.expected_total
        if expected is not None and draft.successful + draft.failed >= expected:
            _refuse_beyond_total(draft, mark.row, where)
        if kind is RowSucceeded:
            draft.successful += 1
            if event.internal:  # type: ignore[union-attr]
                draft.internal_count += 1
            else:
                draft.external_count += 1
        else:
            draft.failed += 1
            row_errors.append(RowError(event.row, event.email, event.error))  # type: ignore[union-attr]
    elif kind is EmailSent or kind is EmailFailed:
        mark = _new_mark(RowMark, (event.row, "email"))  # type: ignore[union-attr]
        if mark in claimed or mark in recorded:
            _refuse_second(draft, mark, where)
        if kind is EmailSent:
            draft.emails_sent += 1
        else:
            draft.emails_failed += 1
    else:
        _apply_other(draft, event, where)
        return
    draft.status = _PROGRESS
    if type(claimed) is set:
        claimed.add(mark)
    marks.append(mark)


def _refuse_second(draft: Draft, mark: RowMark, where: Where) -> NoReturn:
    what = "an outcome" if mark.kind == "outcome" else "an e-mail outcome"
    raise RowAlreadyReported(
        f"{_prefix(where)}row: row {mark.row} of job {draft.base.job_id} already has {what}"
    )


def _refuse_beyond_total(draft: Draft, row: int, where: Where) -> NoReturn:
    done = draft.successful + draft.failed
    raise RowsExceedTotal(
        f"{_prefix(where)}row: job {draft.base.job_id} was created with total "
        f"{draft.base.expected_total}; row {row} would be outcome number {done + 1}"
    )


def _apply_other(draft: Draft, event: Event, where: Where) -> None:
    """Events that carry no row: they move the status, the progress report or the error."""
    if isinstance(event, Started):
        if draft.status is Status.PENDING:
            draft.status = Status.STARTED
    elif isinstance(event, ProgressReported):
        draft.status = Status.PROGRESS
        draft.progress = Progress(current=event.current, total=event.total, status=event.status)
    elif isinstance(event, Succeeded):
        draft.status = Status.SUCCESS
    elif isinstance(event, Failed):
        draft.status = Status.FAILURE
        draft.error = event.error
    elif isinstance(event, CancelRequested):
        draft.cancel_requested = True
    elif isinstance(event, Created):
        raise InvalidInput(
            f"{_prefix(where)}type: 'created' is written by job creation, not appended"
        )
    else:  # pragma: no cover
        raise InvalidInput(f"{_prefix(where)}type: unknown event {event!r}")


def plan_append(
    state: JobState,
    items: Sequence[NewEvent],
    known: Mapping[str, tuple[str, Event]],
    recorded: Set[RowMark] = frozenset(),
) -> AppendPlan:
    """Decide what an append writes: drop exact re-sends, refuse reused ids, fold the rest.

    `known` maps each event id of `items` that is already in the log to its (job id, event).
    """
    if not known and (len(items) == 1 or len({item.event_id for item in items}) == len(items)):
        # The usual append (new ids, each once): nothing to drop, every index is its own.
        return AppendPlan(fold_batch(state, [item.event for item in items], recorded),
                          tuple(items), 0)
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
            # One idempotency key naming two events is the same conflict within a batch as
            # against the log: 409 either way.
            raise EventIdReused(
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
    if state.cancel_requested and not state.status.is_terminal:
        body["cancel_requested"] = True  # an extension: absent from every seed body
    return body


def rows_touched(events: Iterable[Event]) -> set[int]:
    """The row numbers a batch reports on: the only marks the store must look up for it."""
    return {
        event.row
        for event in events
        if isinstance(event, RowSucceeded | RowFailed | EmailSent | EmailFailed)
    }
