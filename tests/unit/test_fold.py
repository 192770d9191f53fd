"""The pure fold: transition rules and the properties every history keeps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobtracker.domain.errors import InvalidInput, JobFinished, RowAlreadyReported, RowsExceedTotal
from jobtracker.domain.events import (
    Created,
    EmailFailed,
    EmailSent,
    Event,
    Failed,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
)
from jobtracker.domain.projection import Batch, fold, fold_batch, job_body, start
from jobtracker.domain.state import JobState, RowMark, Status
from tests.strategies import chunked, histories


def fresh(total: int | None = None) -> JobState:
    return start("job", Created(owner="key_a", total=total))


def fold_one_by_one(state: JobState, events: list[Event]) -> Batch:
    marks: list[RowMark] = []
    errors = []
    for event in events:
        step = fold(state, event, set(marks))
        state = step.state
        marks += [step.mark] if step.mark else []
        errors += [step.row_error] if step.row_error else []
    return Batch(state, tuple(marks), tuple(errors))


@given(histories())
def test_one_batch_equals_event_by_event(events: list[Event]) -> None:
    """Folding a history in one batch gives exactly what folding it event by event gives."""
    assert fold_batch(fresh(), events) == fold_one_by_one(fresh(), events)


@given(st.data())
def test_any_chunking_gives_the_same_projection(data: st.DataObject) -> None:
    """However a worker's flushes cut the history into batches, the projection is the same."""
    events = data.draw(histories())
    state, marks = fresh(), frozenset[RowMark]()
    for chunk in data.draw(chunked(events)):
        batch = fold_batch(state, chunk, marks)
        state, marks = batch.state, marks | set(batch.marks)
    assert state == fold_batch(fresh(), events).state


@given(histories())
def test_counters_come_from_row_events_and_always_add_up(events: list[Event]) -> None:
    """successful + failed == total and internal + external == successful, from the rows alone."""
    state = fold_batch(fresh(), events).state
    successes = [e for e in events if isinstance(e, RowSucceeded)]
    assert state.successful == len(successes)
    assert state.failed == sum(isinstance(e, RowFailed) for e in events)
    assert state.internal_count == sum(e.internal for e in successes)
    assert state.internal_count + state.external_count == state.successful
    assert state.emails_sent + state.emails_failed == sum(
        isinstance(e, EmailSent | EmailFailed) for e in events
    )
    assert state.version == len(events) + 1
    if state.status is Status.SUCCESS:
        result = job_body(state)["result"]
        assert result["total"] == result["successful"] + result["failed"]


def test_row_event_implies_started_and_progress() -> None:
    """A row reported before any `started` moves the job straight to PROGRESS."""
    state = fold(fresh(), RowSucceeded(1, "a@uni.edu", internal=False)).state
    assert state.status is Status.PROGRESS


def test_started_after_progress_does_not_go_back() -> None:
    """A retried task saying `started` again does not move a job back from PROGRESS."""
    state = fold(fresh(), ProgressReported(1, 10)).state
    assert fold(state, Started()).state.status is Status.PROGRESS


@pytest.mark.parametrize("terminal", [Succeeded(), Failed("x")])
def test_terminal_states_absorb(terminal: Event) -> None:
    """After SUCCESS or FAILURE no event applies."""
    state = fold(fresh(), terminal).state
    with pytest.raises(JobFinished, match="already"):
        fold(state, Started())


def test_second_email_outcome_for_a_row_is_refused() -> None:
    """One e-mail outcome per row: sent then failed is a contradiction."""
    step = fold(fresh(), EmailSent(3, "a@b.c"))
    with pytest.raises(RowAlreadyReported, match="e-mail"):
        fold(step.state, EmailFailed(3, "a@b.c", "bounce"), {step.mark} if step.mark else set())


def test_rows_cannot_exceed_the_declared_total() -> None:
    """A job created with total 1 refuses a second row outcome."""
    state = fold(fresh(total=1), RowFailed(1, "a@b.c", "bad")).state
    with pytest.raises(RowsExceedTotal, match="total 1"):
        fold(state, RowFailed(2, "b@b.c", "bad"))


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (ProgressReported(current=6, total=5), "current"),
        (ProgressReported(current=-1, total=5), "current"),
        (RowSucceeded(row=-2, email="a@b.c", internal=True), "row"),
        (RowFailed(row=1, email="", error="x"), "email"),
        (RowFailed(row=1, email="a@b.c", error="nul\x00byte"), "error"),
        (Failed(error="x" * 5000), "error"),
        (Created(owner="key"), "type"),
    ],
)
def test_invalid_fields_are_refused_naming_the_field(event: Event, field: str) -> None:
    """Each bad field is refused with an error that names it, inside a batch by its index."""
    with pytest.raises(InvalidInput, match=rf"events\[1\]\.{field}"):
        fold_batch(fresh(), [Started(), event])


def test_progress_body_is_derived_from_rows_when_no_progress_was_sent() -> None:
    """Rows without a `progress` event still show how far the job got."""
    state = fold_batch(fresh(total=50), [RowSucceeded(n, "a@b.c", True) for n in range(3)]).state
    assert job_body(state)["progress"] == {
        "current": 3,
        "total": 50,
        "status": "Procesando fila 3 de 50",
    }


def test_success_body_caps_errors_and_says_so() -> None:
    """Past the cap, the body lists the first errors and tells how many there are."""
    events: list[Event] = [RowFailed(n, "a@b.c", "bad") for n in range(5)]
    batch = fold_batch(fresh(), [*events, Succeeded()])
    result = job_body(batch.state, batch.row_errors[:2], errors_cap=2)["result"]
    assert [e["row"] for e in result["errors"]] == [0, 1]
    assert (result["errors_total"], result["errors_truncated"]) == (5, True)
