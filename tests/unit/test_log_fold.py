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
from jobtracker.domain.logfold import DENSE_ROWS, LogFold
from jobtracker.domain.projection import fold, start
from jobtracker.domain.state import JobState, RowMark
from jobtracker.domain.stored import encode_data

#: Few rows, so that second outcomes and totals run out; some past the bitmap; some not rows.
ROWS = st.one_of(st.integers(0, 6), st.sampled_from([-1, True, DENSE_ROWS, DENSE_ROWS + 70,
                                                     MAX_INT, MAX_INT + 1]))
EMAILS = st.sampled_from(["a@uni.edu", "b@uni.edu", "", "nul\x00", "x" * 321])
ERRORS = st.sampled_from(["bad", "", "y" * 4001])
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
ODD_ROWS = st.sampled_from([
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
])
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


def fast(rows: list[StoredRow], cuts: list[int]) -> Any:
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
    return {
        state.job_id: (state, set(marks), [e for e in errors if e[0] == state.job_id])
        for state, _, marks in finished
    } if len(states) == len(finished) else "a job finished twice"


@settings(max_examples=400, deadline=None)
@given(st.lists(JOB, min_size=1, max_size=3), st.lists(st.integers(0, 2), max_size=60),
       st.lists(st.integers(0, 60), max_size=4))
def test_replay_fold_equals_the_projection_fold(
    jobs: list[tuple[Any, ...]], order: list[int], cuts: list[int]
) -> None:
    """For arbitrary histories over interleaved jobs, read in chunks of any size, replay's fold
    gives each job the state, marks and row errors `projection.fold` gives it, or refuses the
    log exactly when `projection.fold` refuses one of its events."""
    expected: dict[str, Any] = {}
    histories: list[list[StoredRow]] = []
    for n, (total, middle, ending, after) in enumerate(jobs):
        job_id = f"job-{n}"
        items = [*middle, *([ending] if ending else []), *after]
        expected[job_id] = reference(job_id, total, items)
        created = stored(Created(owner="k", total=total))
        histories.append([(job_id, version, 0, *item)
                          for version, item in enumerate([created, *items], start=1)])
    rows = interleave(histories, order)
    got = fast(rows, cuts)
    if "refused" in expected.values():
        assert got == "refused"
    else:
        assert got == expected


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
