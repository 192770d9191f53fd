"""Replay's fold over stored rows (`domain/logfold.py`) says exactly what `projection.fold` says."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobtracker.domain.codec import StoredRow, decode_stored, encode_fields, stored_version
from jobtracker.domain.errors import JobtrackerError, UnreadableLog
from jobtracker.domain.events import (
    MAX_INT,
    CancelRequested,
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
from jobtracker.domain.logfold import DENSE_ROWS, Batch, BatchedRows, LogFold
from jobtracker.domain.projection import fold, start
from jobtracker.domain.state import JobState, RowMark
from jobtracker.domain.stored import encode_data, form_code

#: Few rows, so that second outcomes and totals run out; some past the bitmap; some not rows.
ROWS = st.one_of(st.integers(0, 6), st.sampled_from([-1, True, DENSE_ROWS, DENSE_ROWS + 70,
                                                     MAX_INT, MAX_INT + 1]))
EMAILS = st.sampled_from(["a@uni.edu", "b@uni.edu", "", "nul\x00", "x" * 321])
ERRORS = st.sampled_from(["bad", "", "y" * 4001, "nul\x00"])
STATUSES = st.one_of(st.none(), st.sampled_from(["", "half way", "nul\x00", "z" * 4001]))
#: Events as workers and the server write them, bad ones included (the log should hold none,
#: but the fold must refuse them the same way whichever path it takes).
EVENTS = st.one_of(
    st.just(Started()),
    st.builds(ProgressReported, current=st.integers(-1, 5), total=st.integers(0, 6),
              status=STATUSES),
    st.builds(RowSucceeded, row=ROWS, email=EMAILS, internal=st.booleans()),
    st.builds(RowFailed, row=ROWS, email=EMAILS, error=ERRORS),
    st.builds(EmailSent, row=ROWS, email=EMAILS),
    st.builds(EmailFailed, row=ROWS, email=EMAILS, error=ERRORS),
    st.just(CancelRequested()),
    st.just(Created(owner="k")),
)
ENDINGS = st.sampled_from([Succeeded(), Failed("gave up"), Failed("lost", reason="worker_lost")])
#: Stored forms the inline path must leave to the full decoder: older shapes, extra or missing
#: keys or values, JSON that is neither object nor array, another type written as a row's.
ODD_STORED = [
    ("row_failed", 1, '{"row": 1, "email": "a@uni.edu", "message": "old shape"}'),
    ("row_failed", 1, '{"row": 2, "email": "a@uni.edu", "error": "v1, today\'s keys"}'),
    ("row_succeeded", 1, '{"row": 3, "email": "a@uni.edu", "internal": true, "extra": 1}'),
    ("row_succeeded", 1, '{"row": 4, "email": "a@uni.edu"}'),
    ("row_succeeded", 1, '{"row": 5, "email": "a@uni.edu", "internal": 1}'),
    ("row_succeeded", 1, "[1, 2, 3]"),
    ("email_sent", 1, '{"row": 1, "email": "a@uni.edu", "extra": 1}'),
    ("email_failed", 1, '{"row": 1, "email": "a@uni.edu", "reason": "x"}'),
    ("progress", 1, '{"current": 1, "total": 2}'),
    ("progress", 1, '{"current": 1, "total": 2, "state": null}'),
    ("progress", 2, '{"current": 1, "total": 2, "status": null}'),
    ("teleported", 1, "{}"),
    ("row_failed", 1, '[1, "a@uni.edu", "old shape, positional"]'),
    ("row_succeeded", 1, '[1, "a@uni.edu"]'),
    ("row_succeeded", 1, '[1, "a@uni.edu", 2]'),
    ("row_succeeded", 1, '[1, "a@uni.edu", true]'),
    ("row_succeeded", 1, '[1, "a@uni.edu", [1]]'),
    ("email_sent", 1, '[1, "a@uni.edu", "extra"]'),
    ("progress", 1, "[1]"),
    ("progress", 1, '[1, 2, null, "extra"]'),
    ("progress", 1, '[3, 2]'),
]
ODD_ROWS = st.sampled_from(ODD_STORED)
#: (kind, schema_version, data): one stored event.
Stored = tuple[str, int, str]


def stored(event: Event) -> Stored:
    return event.TYPE, stored_version(event), encode_fields(event)


def positional(event: Event) -> Stored:
    """As SQLite's lean log stores it: the fields as an array (`domain/stored.py`)."""
    return event.TYPE, stored_version(event), encode_data(event)


#: Events a worker may well send: valid on their own, though a row may be reported twice or
#: past the total.
GOOD_EVENTS = st.one_of(
    st.builds(ProgressReported, current=st.integers(0, 3), total=st.integers(3, 5)),
    st.builds(RowSucceeded, row=st.integers(0, 20), email=st.just("a@uni.edu"),
              internal=st.booleans()),
    st.builds(RowFailed, row=st.integers(0, 20), email=st.just("a@uni.edu"), error=st.just("e")),
    st.builds(EmailSent, row=st.integers(0, 20), email=st.just("a@uni.edu")),
    st.builds(EmailFailed, row=st.integers(0, 20), email=st.just("a@uni.edu"),
              error=st.just("bounced")),
)
#: Mostly good events, so that most histories fold through; bad and odd ones now and then.
HISTORY_ITEM = st.one_of(*[GOOD_EVENTS.map(stored)] * 4, *[GOOD_EVENTS.map(positional)] * 4,
                         EVENTS.map(stored), EVENTS.map(positional), ODD_ROWS)
#: Per job: its total, then its stored events (maybe an ending, maybe more after it).
JOB = st.tuples(
    st.none() | st.integers(0, 6) | st.integers(7, 30),
    st.lists(HISTORY_ITEM, max_size=14),
    st.none() | ENDINGS.map(stored) | ENDINGS.map(positional),
    st.sampled_from([[], [], []]) | st.lists(HISTORY_ITEM, min_size=1, max_size=1),
)

#: The same with most events as PostgreSQL's lean log holds them (positional), so that long runs
#: of a batch take the inline path.
LEAN_JOB = st.tuples(
    st.none() | st.integers(0, 6) | st.integers(7, 30),
    st.lists(st.one_of(*[GOOD_EVENTS.map(positional)] * 8, EVENTS.map(stored),
                       EVENTS.map(positional), ODD_ROWS), max_size=20),
    st.none() | ENDINGS.map(stored) | ENDINGS.map(positional),
    st.sampled_from([[], [], []]) | st.lists(HISTORY_ITEM, min_size=1, max_size=1),
)


def reference(job_id: str, total: int | None, items: list[Stored]) -> Any:
    """What `projection.fold` makes of one job's stored history, event by event; or 'refused'."""
    state = start(job_id, Created(owner="k", total=total))
    marks: set[RowMark] = set()
    errors: list[tuple[Any, ...]] = []
    try:
        for kind, schema, data in items:
            step = fold(state, decode_stored(kind, schema, data), marks)
            state = step.state
            if step.mark is not None:
                marks.add(step.mark)
            if step.row_error is not None:
                errors.append((job_id, *step.row_error))
    except JobtrackerError:
        return "refused"
    return state, marks, errors


def interleave(jobs: list[list[StoredRow]], order: list[int]) -> list[StoredRow]:
    """The jobs' rows merged in an order drawn by the test, each job's own order kept."""
    queues = [list(rows) for rows in jobs]
    merged: list[StoredRow] = []
    for pick in order:
        live = [queue for queue in queues if queue]
        if live:
            merged.append(live[pick % len(live)].pop(0))
    merged.extend(row for queue in queues for row in queue)
    return [(job_id, version, position, *rest)
            for position, (job_id, version, _, *rest) in enumerate(merged, start=1)]


def _batch(run: list[StoredRow]) -> Batch:
    codes = [form_code(kind, schema) for _, _, _, kind, schema, _ in run]
    plain = all(isinstance(code, int) and 1 <= code <= 255 for code in codes)
    forms = bytes(codes) if plain else [(kind, schema) for _, _, _, kind, schema, _ in run]  # type: ignore[arg-type]
    job_id, version, position = run[0][:3]
    return job_id, version, position, forms, [row[5] for row in run]


def batched(rows: list[StoredRow], splits: list[int]) -> BatchedRows:
    """The rows as PostgreSQL's lean log holds them: runs of one job's consecutive events (cut
    also where the test says), each event's form as a byte where all of a run's have one."""
    cuts = {split % (len(rows) + 1) for split in splits}
    batches: list[Batch] = []
    run: list[StoredRow] = []
    for index, row in enumerate(rows):
        if run and (index in cuts or row[0] != run[-1][0] or row[1] != run[-1][1] + 1):
            batches.append(_batch(run))
            run = []
        run.append(row)
    if run:
        batches.append(_batch(run))
    return BatchedRows(batches)


def fast(rows: list[StoredRow] | BatchedRows, cuts: list[int]) -> Any:
    """What replay's fold makes of the rows, fed in chunks cut where the test says."""
    folder = LogFold()
    edges = sorted({0, len(rows), *(cut % (len(rows) + 1) for cut in cuts)})
    try:
        for low, high in itertools.pairwise(edges):
            folder.fold(rows[low:high])
        folder.drain()
    except UnreadableLog:
        return "refused"
    finished, errors = folder.take()
    states: dict[str, JobState] = {state.job_id: state for state, _, _ in finished}
    last = {state.job_id: position for state, position, _ in finished}
    if last != {row[0]: row[2] for row in rows}:  # each job's state is written at its last event
        return {"positions": last}
    return {
        state.job_id: (state, set(marks), [e for e in errors if e[0] == state.job_id])
        for state, _, marks in finished
    } if len(states) == len(finished) else "a job finished twice"


def _histories(jobs: list[tuple[Any, ...]]) -> tuple[dict[str, Any], list[list[StoredRow]]]:
    expected: dict[str, Any] = {}
    histories: list[list[StoredRow]] = []
    for n, (total, middle, ending, after) in enumerate(jobs):
        job_id = f"job-{n}"
        items = [*middle, *([ending] if ending else []), *after]
        expected[job_id] = reference(job_id, total, items)
        created = stored(Created(owner="k", total=total))
        histories.append([(job_id, version, 0, *item)
                          for version, item in enumerate([created, *items], start=1)])
    return expected, histories


def _check(expected: dict[str, Any], got: Any) -> None:
    if "refused" in expected.values():
        assert got == "refused"
    else:
        assert got == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(JOB, min_size=1, max_size=3), st.lists(st.integers(0, 2), max_size=60),
       st.lists(st.integers(0, 60), max_size=4))
def test_replay_fold_equals_the_projection_fold(
    jobs: list[tuple[Any, ...]], order: list[int], cuts: list[int]
) -> None:
    """For arbitrary histories over interleaved jobs, read in chunks of any size, replay's fold
    gives each job the state, marks and row errors `projection.fold` gives it, or refuses the
    log exactly when `projection.fold` refuses one of its events."""
    expected, histories = _histories(jobs)
    _check(expected, fast(interleave(histories, order), cuts))


@settings(max_examples=400, deadline=None)
@given(st.lists(JOB | LEAN_JOB, min_size=1, max_size=3),
       st.lists(st.integers(0, 2), max_size=60),
       st.lists(st.integers(0, 60), max_size=4), st.lists(st.integers(0, 60), max_size=6),
       st.booleans())
def test_the_batch_fold_equals_the_projection_fold(
    jobs: list[tuple[Any, ...]], order: list[int], cuts: list[int], splits: list[int],
    together: bool,
) -> None:
    """The same over the log as PostgreSQL keeps it, in batches of one job's events: batches
    cut at any point, chunks cut inside batches, jobs interleaved or each in long runs; and the
    batches read as the rows they hold."""
    expected, histories = _histories(jobs)
    rows = interleave(histories, order if together else [0] * len(order))
    batches = batched(rows, splits)
    assert list(batches) == rows
    edges = sorted({0, len(rows), *(cut % (len(rows) + 1) for cut in cuts)})
    for low, high in itertools.pairwise(edges):
        assert list(batches[low:high]) == rows[low:high]
        assert [batches[i] for i in range(low, high)] == rows[low:high]
    _check(expected, fast(batches, cuts))


def test_a_missing_version_is_named_as_a_gap() -> None:
    """A job's versions must follow one another: a missing one stops replay, naming the job."""
    created = stored(Created(owner="k"))
    rows: list[StoredRow] = [("j", 1, 1, *created), ("j", 3, 2, *stored(Started()))]
    with pytest.raises(UnreadableLog, match=r"job j: position 2 holds version 3 .* gap"):
        LogFold().fold(rows)


def test_an_event_after_the_job_finished_is_named() -> None:
    """A finished job takes nothing more: an event after its end stops replay, naming the job."""
    rows: list[StoredRow] = [("j", 1, 1, *stored(Created(owner="k"))),
                             ("j", 2, 2, *stored(Succeeded())), ("j", 3, 3, *stored(Started()))]
    with pytest.raises(UnreadableLog, match=r"job j: .*after the job finished"):
        LogFold().fold(rows)


def test_marks_as_words_hold_every_row_once() -> None:
    """The 64-row words a finished job's marks are written as name exactly its marked rows."""
    rows: list[StoredRow] = [("j", 1, 1, *stored(Created(owner="k")))]
    marked = [0, 63, 64, 200, DENSE_ROWS + 5]
    for version, row in enumerate(marked, start=2):
        rows.append(("j", version, version, *stored(EmailSent(row, "a@uni.edu"))))
    folder = LogFold()
    folder.fold(rows)
    folder.drain()
    [(_, _, marks)], _ = folder.take()
    words = sorted(marks.words())
    assert [(kind, chunk) for kind, chunk, _ in words] == [
        ("email", 0), ("email", 1), ("email", 3), ("email", (DENSE_ROWS + 5) >> 6)]
    rows_back = sorted((chunk << 6) + bit for _, chunk, word in words
                       for bit in range(64) if word >> bit & 1)
    assert rows_back == marked


def test_a_batch_after_a_gap_is_named() -> None:
    """A batch whose first version does not follow the job's last stops replay, naming it."""
    created, started = stored(Created(owner="k")), stored(Started())
    batches = batched([("j", 1, 1, *created), ("j", 2, 2, *started),
                       ("j", 4, 3, *stored(EmailSent(0, "a@uni.edu")))], [])
    assert len(batches.batches) == 2
    with pytest.raises(UnreadableLog, match=r"job j: position 3 holds version 4 .* gap"):
        LogFold().fold(batches)


def test_a_batch_going_on_after_the_end_is_named() -> None:
    """Events after `succeeded` in the same batch stop replay, naming the job."""
    rows: list[StoredRow] = [("j", 1, 1, *stored(Created(owner="k"))),
                             ("j", 2, 2, *positional(EmailSent(0, "a@uni.edu"))),
                             ("j", 3, 3, *stored(Succeeded())),
                             ("j", 4, 4, *positional(EmailSent(1, "a@uni.edu")))]
    batches = batched(rows, [])
    assert len(batches.batches) == 1
    with pytest.raises(UnreadableLog, match=r"job j: .*after the job finished"):
        LogFold().fold(batches)


def test_a_batch_past_the_total_is_refused() -> None:
    """A job of 2 rows takes 2 outcomes from one batch and refuses a third (the inline run
    counts what it applied)."""
    rows: list[StoredRow] = [("j", 1, 1, *stored(Created(owner="k", total=2)))]
    for version, row in enumerate([0, 1], start=2):
        rows.append(("j", version, version, *positional(RowSucceeded(row, "a@uni.edu", False))))
    folder = LogFold()
    folder.fold(batched(rows, []))
    folder.drain()
    [(state, position, _)], _ = folder.take()
    assert (state.successful, state.external_count, state.version, position) == (2, 2, 3, 3)
    rows.append(("j", 4, 4, *positional(RowFailed(2, "a@uni.edu", "e"))))
    with pytest.raises(UnreadableLog, match="job j"):
        LogFold().fold(batched(rows, []))


@pytest.mark.parametrize("odd", ODD_STORED)
def test_an_odd_row_inside_a_batch_is_folded_as_projection_fold_says(odd: Stored) -> None:
    """Each odd stored form, in the middle of a batch of outcomes the inline run takes, gets the
    full path's answer (applied or refused), and the run goes on after it."""
    good = [positional(RowSucceeded(row, "a@uni.edu", internal=row == 0)) for row in (0, 8, 9)]
    items = [good[0], odd, good[1], good[2], positional(EmailSent(9, "a@uni.edu"))]
    expected = reference("j", 10, items)
    created = stored(Created(owner="k", total=10))
    rows = [("j", version, version, *item)
            for version, item in enumerate([created, *items], start=1)]
    _check({"j": expected}, fast(batched(rows, []), []))
