"""The store contract: every store keeps the log and the projection exactly alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from jobtracker.domain.errors import (
    EventIdReused,
    InvalidInput,
    JobFinished,
    JobIdTaken,
    JobNotFound,
    RowAlreadyReported,
    RowsExceedTotal,
)
from jobtracker.domain.events import (
    MAX_INT,
    Created,
    EmailSent,
    Event,
    Failed,
    NewEvent,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
)
from jobtracker.domain.state import Progress, Status
from jobtracker.store import Store, replay

MakeJob = Callable[..., Awaitable[str]]


def new(event_id: str, event: Event) -> NewEvent:
    return NewEvent(event_id=event_id, event=event)


async def log_of(store: Store, job_id: str) -> list[tuple[int, str, str]]:
    return [(e.version, e.event_id, e.event.TYPE) for e in await store.read_job_events(job_id)]


async def test_created_job_reads_pending_at_version_one(store: Store, make_job: MakeJob) -> None:
    """A job is PENDING, durably recorded by a `created` event, as soon as it exists."""
    job_id = await make_job(total=50)
    view = await store.get_job(job_id, 1000)
    assert view is not None
    assert (view.state.status, view.state.version, view.state.expected_total) == (
        Status.PENDING,
        1,
        50,
    )
    assert [t for _, _, t in await log_of(store, job_id)] == ["created"]


async def test_unknown_job_reads_as_none_never_pending(store: Store) -> None:
    """An id nobody created is not a PENDING job."""
    assert await store.get_job("nobody-made-this", 1000) is None


async def test_create_is_idempotent_for_the_owner(store: Store, make_job: MakeJob) -> None:
    """Creating the same id twice by its owner returns the existing job and writes nothing."""
    await make_job("same")
    state, is_new = await store.create_job("same", Created(owner="key_owner"))
    assert (is_new, state.version) == (False, 1)
    assert len(await log_of(store, "same")) == 1


async def test_create_with_another_owners_id_is_refused(store: Store, make_job: MakeJob) -> None:
    """A job id belongs to the key that created it."""
    await make_job("taken")
    with pytest.raises(JobIdTaken):
        await store.create_job("taken", Created(owner="key_thief"))


async def test_append_assigns_versions_without_holes(store: Store, make_job: MakeJob) -> None:
    """Versions go 1, 2, 3… and positions strictly increase in the log."""
    job_id = await make_job()
    await store.append(job_id, [new("a", Started())])
    await store.append(job_id, [new("b", ProgressReported(1, 2)), new("c", Succeeded())])
    assert [v for v, _, _ in await log_of(store, job_id)] == [1, 2, 3, 4]
    positions = [e.position for e in await store.read_log()]
    assert positions == sorted(set(positions))


async def test_append_to_unknown_job_is_refused(store: Store) -> None:
    """Events for a job that was never created are refused, not silently kept."""
    with pytest.raises(JobNotFound):
        await store.append("ghost", [new("a", Started())])
    assert await store.read_log() == []


async def test_duplicate_event_id_is_recorded_once(store: Store, make_job: MakeJob) -> None:
    """A re-sent event (same id, same content) is acknowledged as a duplicate and not counted."""
    job_id = await make_job()
    event = new("row-1", RowSucceeded(1, "a@uni.edu", internal=True))
    first = await store.append(job_id, [event])
    again = await store.append(job_id, [event, event])
    assert (first.appended, first.duplicates) == (1, 0)
    assert (again.appended, again.duplicates, again.version) == (0, 2, 2)
    view = await store.get_job(job_id, 1000)
    assert view is not None
    assert view.state.successful == 1


@pytest.mark.parametrize("event_id", [
    "0190f2a8-7c4e-7b1a-9d3e-5f6a7b8c9d0e",  # the SDK's form (SQLite keeps its 16 bytes)
    "0190F2A8-7C4E-7B1A-9D3E-5F6A7B8C9D0E",  # a UUID in capitals: kept as given
    "batch-7:row-1", "{0190f2a8-7c4e-7b1a-9d3e-5f6a7b8c9d0e}", "x" * 128,
])
async def test_every_form_of_event_id_is_recorded_once(
    store: Store, make_job: MakeJob, event_id: str
) -> None:
    """A re-send deduplicates whatever the id looks like, and reads back exactly as sent."""
    job_id = await make_job()
    event = new(event_id, RowSucceeded(1, "a@uni.edu", internal=True))
    await store.append(job_id, [event])
    again = await store.append(job_id, [event])
    assert (again.appended, again.duplicates, again.version) == (0, 1, 2)
    (recorded,) = await store.read_job_events(job_id, after_version=1)
    assert recorded.event_id == event_id


async def test_a_uuid_in_capitals_is_another_id_than_in_lowercase(
    store: Store, make_job: MakeJob
) -> None:
    """Ids are compared as the text sent: the capitalised form of a recorded UUID names another
    event (here a second outcome for the row: refused as such, not as a re-send)."""
    job_id = await make_job()
    lower = "0190f2a8-7c4e-7b1a-9d3e-5f6a7b8c9d0e"
    await store.append(job_id, [new(lower, EmailSent(1, "a@uni.edu"))])
    with pytest.raises(RowAlreadyReported):
        await store.append(job_id, [new(lower.upper(), EmailSent(1, "a@uni.edu"))])
    other = await store.append(job_id, [new(lower.upper(), Started())])
    assert (other.appended, other.version) == (1, 3)


async def test_event_id_reused_with_other_content_is_refused(
    store: Store, make_job: MakeJob
) -> None:
    """An idempotency key names one event; reusing it for another is a conflict."""
    job_id = await make_job()
    await store.append(job_id, [new("k", RowSucceeded(1, "a@uni.edu", internal=True))])
    with pytest.raises(EventIdReused, match="event_id"):
        await store.append(job_id, [new("k", RowSucceeded(2, "b@uni.edu", internal=True))])


@pytest.mark.parametrize("terminal", [Succeeded(), Failed("Achievement not found")])
async def test_event_after_terminal_is_refused_and_nothing_written(
    store: Store, make_job: MakeJob, terminal: Event
) -> None:
    """SUCCESS and FAILURE absorb: later events are refused, exact re-sends acknowledged."""
    job_id = await make_job()
    await store.append(job_id, [new("end", terminal)])
    before = await store.read_log()
    with pytest.raises(JobFinished):
        await store.append(job_id, [new("late", Started())])
    resent = await store.append(job_id, [new("end", terminal)])
    assert (resent.appended, resent.duplicates) == (0, 1)
    assert await store.read_log() == before


async def test_second_outcome_for_a_row_is_refused(store: Store, make_job: MakeJob) -> None:
    """One outcome per row: a retry that reports the row again under a new id is refused."""
    job_id = await make_job()
    await store.append(job_id, [new("a", RowSucceeded(7, "a@uni.edu", internal=True))])
    with pytest.raises(RowAlreadyReported, match="row 7"):
        await store.append(job_id, [new("b", RowFailed(7, "a@uni.edu", "boom"))])
    with pytest.raises(RowAlreadyReported):
        await store.append(
            job_id,
            [new("c", EmailSent(8, "x@y.z")), new("d", EmailSent(8, "x@y.z"))],
        )
    view = await store.get_job(job_id, 1000)
    assert view is not None
    assert (view.state.successful, view.state.failed, view.state.emails_sent) == (1, 0, 0)


#: Rows on every edge a store might pack marks by: the first, around 64-row words (bit 63 is a
#: signed integer's sign), and the largest row number there is.
EDGE_ROWS = [0, 1, 62, 63, 64, 65, 127, 128, 4095, 4096, MAX_INT - 64, MAX_INT - 1, MAX_INT]


async def test_each_row_keeps_its_one_outcome_at_any_row_number(
    store: Store, make_job: MakeJob
) -> None:
    """Rows on word edges and the largest row number get one outcome and one e-mail outcome each;
    a second of either is refused, and their neighbours stay free."""
    job_id = await make_job()
    taken = EDGE_ROWS[::2]
    await store.append(job_id, [new(f"ok-{row}", RowSucceeded(row, "a@uni.edu", internal=True))
                                for row in taken])
    await store.append(job_id, [new(f"mail-{row}", EmailSent(row, "a@uni.edu"))
                                for row in taken])
    for row in taken:
        with pytest.raises(RowAlreadyReported, match=f"row {row} "):
            await store.append(job_id, [new(f"again-{row}", RowFailed(row, "a@uni.edu", "x"))])
        with pytest.raises(RowAlreadyReported, match=f"row {row} "):
            await store.append(job_id, [new(f"mail-again-{row}", EmailSent(row, "a@uni.edu"))])
    free = EDGE_ROWS[1::2]
    await store.append(job_id, [new(f"late-{row}", RowFailed(row, "a@uni.edu", "x"))
                                for row in free])
    view = await store.get_job(job_id, 1000)
    assert view is not None
    assert (view.state.successful, view.state.failed, view.state.emails_sent) == (
        len(taken), len(free), len(taken))
    comparison = (await replay.verify(store)).comparison
    assert comparison is not None
    assert (comparison.differing, comparison.diffs) == (0, ())


async def test_batch_with_one_bad_event_writes_nothing(store: Store, make_job: MakeJob) -> None:
    """A batch is all-or-nothing: the bad event's index and field are named."""
    job_id = await make_job()
    before = await store.read_log()
    batch = [
        new("a", Started()),
        new("b", RowSucceeded(1, "a@uni.edu", internal=True)),
        new("c", ProgressReported(current=5, total=3)),
    ]
    with pytest.raises(InvalidInput, match=r"events\[2\]\.current"):
        await store.append(job_id, batch)
    assert await store.read_log() == before
    view = await store.get_job(job_id, 1000)
    assert view is not None
    assert view.state.status is Status.PENDING


async def test_rows_beyond_the_declared_total_are_refused(store: Store, make_job: MakeJob) -> None:
    """Counters cannot exceed the total the job was created with."""
    job_id = await make_job(total=1)
    await store.append(job_id, [new("a", RowSucceeded(1, "a@uni.edu", internal=True))])
    with pytest.raises(RowsExceedTotal):
        await store.append(job_id, [new("b", RowSucceeded(2, "b@uni.edu", internal=True))])


async def test_projection_counts_rows_and_lists_errors_in_row_order(
    store: Store, make_job: MakeJob
) -> None:
    """Counters come from row events; errors are listed by row whatever the arrival order."""
    job_id = await make_job()
    await store.append(
        job_id,
        [
            new("f2", RowFailed(37, "duplicado@test.com", "Calificacion invalida")),
            new("s1", RowSucceeded(1, "a@uni.edu", internal=True)),
            new("s2", RowSucceeded(2, "b@gmail.com", internal=False)),
            new("f1", RowFailed(12, "invalido@test", "Invalid email: invalido@test")),
            new("e1", EmailSent(1, "a@uni.edu")),
            new("done", Succeeded()),
        ],
    )
    view = await store.get_job(job_id, 1000)
    assert view is not None
    state = view.state
    assert (state.successful, state.failed, state.internal_count, state.external_count) == (
        2,
        2,
        1,
        1,
    )
    assert [e.row for e in view.errors] == [12, 37]
    limited = await store.get_job(job_id, 1)
    assert limited is not None
    assert [e.row for e in limited.errors] == [12]


async def test_event_id_repeated_in_one_batch_with_other_content_is_refused(
    store: Store, make_job: MakeJob
) -> None:
    """Within one batch too, one event id names one event: a second meaning is a 409 conflict."""
    job_id = await make_job()
    batch = [new("k", Started()), new("k", Succeeded())]
    with pytest.raises(EventIdReused, match=r"events\[1\]\.event_id"):
        await store.append(job_id, batch)
    assert len(await log_of(store, job_id)) == 1


async def test_event_id_recorded_on_one_job_is_refused_on_another(
    store: Store, make_job: MakeJob
) -> None:
    """An event id names one event of one job: the very same event re-sent to another job is a
    conflict (409), not a duplicate, and that job's log does not move."""
    await make_job("job-a")
    await make_job("job-b")
    event = new("k", RowSucceeded(1, "a@uni.edu", internal=True))
    await store.append("job-a", [event])
    with pytest.raises(EventIdReused, match="event_id"):
        await store.append("job-b", [event])
    with pytest.raises(EventIdReused, match=r"events\[1\]\.event_id"):
        await store.append("job-b", [new("fresh", Started()), event])
    assert [t for _, _, t in await log_of(store, "job-b")] == ["created"]
    view = await store.get_job("job-b", 10)
    assert view is not None
    assert (view.state.version, view.state.successful) == (1, 0)


async def test_label_progress_report_and_error_are_kept_word_for_word(store: Store) -> None:
    """What is said in words is kept as said: the job's label, its latest progress report with
    its text, and the error it failed with."""
    await store.create_job("worded", Created(owner="key_owner", total=10, label="Q3 diplomas"))
    await store.append("worded", [new("p", ProgressReported(3, 10, "Sending batch 1 of 4"))])
    running = await store.get_job("worded", 10)
    assert running is not None
    assert (running.state.label, running.state.progress) == (
        "Q3 diplomas", Progress(3, 10, "Sending batch 1 of 4"))
    await store.append("worded", [new("f", Failed("SMTP server refused the login"))])
    failed = await store.get_job("worded", 10)
    assert failed is not None
    assert (failed.state.status, failed.state.error, failed.state.label) == (
        Status.FAILURE, "SMTP server refused the login", "Q3 diplomas")


async def test_retried_batch_with_new_events_counts_each_and_names_them_by_place(
    store: Store, make_job: MakeJob
) -> None:
    """A retried batch that carries new events too: the re-sent event is a duplicate, the new
    ones are appended, and a refusal names the event by its place in the batch as sent."""
    job_id = await make_job()
    first = new("a", RowSucceeded(1, "a@uni.edu", internal=True))
    await store.append(job_id, [first])
    again = await store.append(job_id, [first, new("b", RowSucceeded(2, "b@uni.edu", False))])
    assert (again.appended, again.duplicates, again.version) == (1, 1, 3)
    with pytest.raises(RowAlreadyReported, match=r"^events\[2\]\.row: row 2 of job job-1 "):
        await store.append(job_id, [first, new("c", Started()),
                                    new("d", RowFailed(2, "b@uni.edu", "late"))])


async def test_refusals_say_which_event_which_row_and_why(store: Store, make_job: MakeJob) -> None:
    """A second outcome, a second e-mail outcome and a row beyond the total are each refused
    with the event's place, the row and the rule it breaks."""
    job_id = await make_job(total=1)
    await store.append(job_id, [new("ok", RowSucceeded(4, "a@uni.edu", internal=True)),
                                new("mail", EmailSent(4, "a@uni.edu"))])
    refusals = [
        ([new("x", Started()), new("y", RowFailed(4, "a@uni.edu", "bad"))],
         "events[1].row: row 4 of job job-1 already has an outcome"),
        ([new("z", EmailSent(4, "a@uni.edu"))],
         "events[0].row: row 4 of job job-1 already has an e-mail outcome"),
        ([new("w", RowSucceeded(5, "b@uni.edu", internal=True))],
         "events[0].row: job job-1 was created with total 1; row 5 would be outcome number 2"),
    ]
    for batch, detail in refusals:
        with pytest.raises((RowAlreadyReported, RowsExceedTotal)) as refused:
            await store.append(job_id, batch)
        assert refused.value.detail == detail
