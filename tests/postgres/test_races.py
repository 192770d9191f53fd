"""Concurrent writers on one database: exact counters, one winner, nothing half-written."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from jobtracker.domain.errors import EventIdReused, JobFinished, RowAlreadyReported
from jobtracker.domain.events import (
    Created,
    Event,
    Failed,
    NewEvent,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
)
from jobtracker.domain.state import Status
from jobtracker.store.base import AppendResult
from jobtracker.store.postgres import PostgresStore
from jobtracker.store.postgres.sql import APPEND_CHANNEL
from tests.conditions import until, until_async
from tests.postgres.conftest import OpenStore
from tests.postgres.test_gap import CommitGate, blocked_on_a_position

WRITERS = 32
ROWS_PER_WRITER = 10


def row_event(row: int) -> NewEvent:
    if row % 7 == 0:
        return NewEvent(f"row-{row}", RowFailed(row, f"r{row}@uni.edu", "Invalid email"))
    return NewEvent(f"row-{row}", RowSucceeded(row, f"r{row}@uni.edu", internal=row % 2 == 0))


async def write_rows(store: PostgresStore, writer: int) -> None:
    """One writer: its rows one append at a time, each re-sent once as a retry would."""
    for row in range(writer * ROWS_PER_WRITER, (writer + 1) * ROWS_PER_WRITER):
        await store.append("busy", [row_event(row)])
        again = await store.append("busy", [row_event(row)])
        assert (again.appended, again.duplicates) == (0, 1)


async def test_thirty_two_concurrent_writers_end_with_exact_counters(
    open_store: OpenStore,
) -> None:
    """32 writers over four stores (grouped and not) on one job: each row counted exactly once."""
    stores = [await open_store(group_commit=n % 2 == 0) for n in range(4)]
    await stores[0].create_job("busy", Created(owner="key_a", total=WRITERS * ROWS_PER_WRITER))
    await asyncio.gather(*(write_rows(stores[w % 4], w) for w in range(WRITERS)))
    rows = range(WRITERS * ROWS_PER_WRITER)
    failed = [r for r in rows if r % 7 == 0]
    view = await stores[1].get_job("busy", 10_000)
    assert view is not None
    state = view.state
    assert (state.successful, state.failed) == (len(rows) - len(failed), len(failed))
    assert state.internal_count == len([r for r in rows if r % 7 and r % 2 == 0])
    assert state.version == len(rows) + 1
    history = await stores[2].read_job_events("busy", 0, 10_000)
    assert [e.version for e in history] == list(range(1, len(rows) + 2))
    assert sorted(e.event_id for e in history[1:]) == sorted(f"row-{r}" for r in rows)
    await stores[3].append("busy", [NewEvent("done", Succeeded())])
    done = await stores[3].get_job("busy", 10_000)
    assert done is not None
    assert [e.row for e in done.errors] == failed


@pytest.mark.parametrize("grouped", [True, False])
async def test_concurrent_succeeded_and_failed_exactly_one_wins(
    open_store: OpenStore, grouped: bool
) -> None:
    """Two workers end a job at once: one wins, the other hears JobFinished, nothing else lands."""
    first = await open_store(group_commit=grouped)
    second = await open_store(group_commit=grouped)
    for n in range(20):
        job_id = f"contested-{n}"
        await first.create_job(job_id, Created(owner="key_a"))
        await first.append(job_id, [NewEvent(f"start-{n}", Started())])
        endings: list[Event] = [Succeeded(), Failed("Achievement not found")]
        results = await asyncio.gather(
            first.append(job_id, [NewEvent(f"ok-{n}", endings[0])]),
            second.append(job_id, [NewEvent(f"ko-{n}", endings[1])]),
            return_exceptions=True,
        )
        winners = [i for i, r in enumerate(results) if isinstance(r, AppendResult)]
        losers = [r for r in results if isinstance(r, JobFinished)]
        assert len(winners) == 1
        assert len(losers) == 1
        history = await second.read_job_events(job_id)
        assert [e.event.TYPE for e in history] == ["created", "started", endings[winners[0]].TYPE]
        view = await second.get_job(job_id, 10)
        assert view is not None
        assert view.state.status is (Status.SUCCESS, Status.FAILURE)[winners[0]]


async def test_event_id_raced_onto_two_jobs_is_refused_once_and_spares_its_group(
    open_store: OpenStore, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An event id recorded for one job while another process writes it to another: a conflict.

    The losing process plans before the winner commits, so only its write can notice; the group it
    sat in is redone request by request and its neighbour's append still succeeds.
    """
    gate = CommitGate()
    holder = await open_store(before_commit=gate)
    loser = await open_store()
    for job_id in ("job-x", "job-y", "job-z"):
        await holder.create_job(job_id, Created(owner="key_a"))
    caplog.set_level(logging.INFO, logger="jobtracker.store.postgres.commit")
    gate.arm()
    held = asyncio.create_task(holder.append("job-x", [NewEvent("shared", Started())]))
    await gate.reached.wait()
    raced = asyncio.create_task(loser.append("job-y", [NewEvent("shared", Started())]))
    neighbour = asyncio.create_task(loser.append("job-z", [NewEvent("fine", Started())]))
    probe = await asyncpg.connect(pg_url)
    try:  # both plan without seeing "shared", then wait for the position lock
        await until_async(lambda: blocked_on_a_position(probe), "the loser never waited")
    finally:
        gate.release.set()
        await probe.close()
    assert (await held).appended == 1
    with pytest.raises(EventIdReused, match="shared"):
        await raced
    assert (await neighbour).appended == 1
    assert "one request per savepoint" in caplog.text
    assert [e.job_id for e in await loser.read_log() if e.event_id == "shared"] == ["job-x"]
    assert [e.event_id for e in await loser.read_job_events("job-y")][1:] == []


async def test_one_event_id_sent_for_two_jobs_in_one_burst_is_written_once(
    open_store: OpenStore,
) -> None:
    """Two requests arriving together carry one event id for two jobs: the first is written, the
    second is refused as a reused id, and the rest of the burst is written."""
    store = await open_store()
    for job_id in ("first", "second", "third"):
        await store.create_job(job_id, Created(owner="key_a"))
    results = await asyncio.gather(
        store.append("first", [NewEvent("same", Started())]),
        store.append("second", [NewEvent("same", Started())]),
        store.append("third", [NewEvent("other", Started())]),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["AppendResult", "EventIdReused", "AppendResult"]
    assert [e.job_id for e in await store.read_log() if e.event_id == "same"] == ["first"]
    assert [e.event_id for e in await store.read_job_events("second")][1:] == []
    assert [e.event_id for e in await store.read_job_events("third")][1:] == ["other"]


async def test_refused_request_does_not_sink_its_group(open_store: OpenStore) -> None:
    """Requests committed together: a refused one fails alone, the others are written."""
    store = await open_store()
    await store.create_job("open", Created(owner="key_a"))
    await store.create_job("closed", Created(owner="key_a"))
    await store.append("closed", [NewEvent("end", Succeeded())])
    results = await asyncio.gather(
        store.append("open", [NewEvent("a", Started())]),
        store.append("closed", [NewEvent("late", Started())]),
        store.append("ghost", [NewEvent("b", Started())]),
        store.append("open", [NewEvent("c", RowSucceeded(1, "a@uni.edu", internal=True))]),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == [
        "AppendResult",
        "JobFinished",
        "JobNotFound",
        "AppendResult",
    ]
    assert [e.event_id for e in await store.read_job_events("open")][1:] == ["a", "c"]


async def test_same_row_reported_by_racing_workers_gets_exactly_one_outcome(
    open_store: OpenStore,
) -> None:
    """Eight workers report row 1 at once under different event ids: one outcome, seven refusals."""
    stores = [await open_store(group_commit=n % 2 == 0) for n in range(4)]
    await stores[0].create_job("one-row", Created(owner="key_a"))
    for attempt in range(10):
        results = await asyncio.gather(
            *(
                stores[w % 4].append(
                    "one-row",
                    [NewEvent(f"try-{attempt}-{w}", RowSucceeded(attempt, "a@uni.edu", True))],
                )
                for w in range(8)
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(r, AppendResult) for r in results) == 1
        assert sum(isinstance(r, RowAlreadyReported) for r in results) == 7
    view = await stores[1].get_job("one-row", 10)
    assert view is not None
    assert (view.state.successful, view.state.version) == (10, 11)


async def test_groups_for_different_jobs_commit_side_by_side_and_each_job_keeps_its_order(
    open_store: OpenStore,
) -> None:
    """A burst over several jobs is split into groups committed at the same time (one lane
    waits in COMMIT while another writes); every job's batches still get versions in the order
    they were sent, and every answer is its own."""
    peak = 0
    held = False

    async def hold_the_first_commit() -> None:
        # Inside the transaction, holding the position lock: another lane can be planning and
        # waiting for that lock, not past it, so count the groups the committer has in flight.
        # The first commit waits for a second group to be taken; no group may make a third.
        nonlocal peak, held
        if not held:
            held = True
            await until(lambda: store.groups_in_flight == 2, "no second group was taken")
        peak = max(peak, store.groups_in_flight)

    store = await open_store(before_commit=hold_the_first_commit)
    jobs = [f"lane-{n}" for n in range(6)]
    for job_id in jobs:
        await store.create_job(job_id, Created(owner="key_a"))
    sends = [(job_id, row) for row in range(8) for job_id in jobs]
    answers = await asyncio.gather(*(
        store.append(job_id, [NewEvent(f"{job_id}-{row}", RowSucceeded(row, "a@uni.edu",
                                                                       internal=True))])
        for job_id, row in sends
    ))
    assert peak == 2
    assert [a.version for a in answers] == [row + 2 for _, row in sends]
    for job_id in jobs:
        history = await store.read_job_events(job_id)
        assert [e.event_id for e in history[1:]] == [f"{job_id}-{row}" for row in range(8)]


async def test_job_written_by_another_process_since_is_appended_at_the_next_version(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes take turns on one job: each last saw the job before the other's append, yet
    every append lands at the next version with exact counters. The stale state is caught by the
    write's version check and planned again, never by a clash on the log's keys."""
    stores = [await open_store(), await open_store(group_commit=False)]
    await stores[0].create_job("shared", Created(owner="key_a"))
    caplog.set_level(logging.INFO, logger="jobtracker.store.postgres.commit")
    answers = [
        await stores[row % 2].append(
            "shared", [NewEvent(f"row-{row}", RowSucceeded(row, "a@uni.edu", internal=True))]
        )
        for row in range(20)
    ]
    assert [a.version for a in answers] == list(range(2, 22))
    for store in stores:
        view = await store.get_job("shared", 10)
        assert view is not None
        assert (view.state.successful, view.state.internal_count) == (20, 20)
    assert "one request per savepoint" not in caplog.text


async def test_a_burst_from_a_few_writers_is_committed_as_one_group(
    open_store: OpenStore, pg_url: str
) -> None:
    """Eight appends arriving together, one per job, cost one commit, not one per lane."""
    store = await open_store()
    jobs = [f"burst-{n}" for n in range(8)]
    for job_id in jobs:
        await store.create_job(job_id, Created(owner="key_a"))
    heard: list[str] = []
    listener = await asyncpg.connect(pg_url)
    try:
        await listener.add_listener(APPEND_CHANNEL, lambda *args: heard.append(args[-1]))
        answers = await asyncio.gather(*(
            store.append(job_id, [NewEvent(f"{job_id}-go", Started())]) for job_id in jobs
        ))
        # Notifications reach a listener in commit order: once a marker sent after the burst is
        # heard, every notification of the burst has been.
        await listener.execute("SELECT pg_notify($1, 'marker')", APPEND_CHANNEL)
        await until(lambda: "marker" in heard, "the marker never came back")
    finally:
        await listener.close()
    assert [a.appended for a in answers] == [1] * 8
    assert len(heard) == 2, f"{len(heard) - 1} commits for one burst"
