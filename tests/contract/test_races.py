"""Races with one defined winner: whoever loses gets a clear error and nothing half-written."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from jobtracker.domain.errors import JobFinished, JobIdTaken, NotAuthenticated, RowAlreadyReported
from jobtracker.domain.events import Created, Failed, NewEvent, RowFailed, RowSucceeded, Succeeded
from jobtracker.store import Store
from jobtracker.store.keys import authenticate, issue_key

MakeJob = Callable[..., Awaitable[str]]


async def test_concurrent_creators_of_one_id_have_one_owner(store: Store) -> None:
    """Eight keys create the same job id at once: one owns it, the others are told it is taken."""
    outcomes = await asyncio.gather(
        *(store.create_job("contested", Created(owner=f"key_{n}")) for n in range(8)),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, tuple) and o[1]]
    assert len(winners) == 1
    assert all(isinstance(o, JobIdTaken) for o in outcomes if o not in winners)
    view = await store.get_job("contested", 10)
    assert view is not None
    assert view.state.owner == winners[0][0].owner
    assert len(await store.read_job_events("contested")) == 1


async def test_concurrent_terminal_events_have_one_winner(store: Store, make_job: MakeJob) -> None:
    """`succeeded` and `failed` at once: exactly one is recorded, the other is refused."""
    job_id = await make_job()
    outcomes = await asyncio.gather(
        store.append(job_id, [NewEvent("win-s", Succeeded())]),
        store.append(job_id, [NewEvent("win-f", Failed("gave up"))]),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 1
    assert isinstance(refused[0], JobFinished)
    assert [e.version for e in await store.read_job_events(job_id)] == [1, 2]


async def test_concurrent_outcomes_for_one_row_have_one_winner(
    store: Store, make_job: MakeJob
) -> None:
    """Two workers report row 5 at once: one outcome is counted, the other refused."""
    job_id = await make_job()
    outcomes = await asyncio.gather(
        store.append(job_id, [NewEvent("a", RowSucceeded(5, "a@uni.edu", internal=True))]),
        store.append(job_id, [NewEvent("b", RowFailed(5, "a@uni.edu", "duplicate"))]),
        return_exceptions=True,
    )
    assert sum(isinstance(o, RowAlreadyReported) for o in outcomes) == 1
    view = await store.get_job(job_id, 10)
    assert view is not None
    assert view.state.successful + view.state.failed == 1


async def test_concurrent_writers_to_one_job_count_exactly(store: Store, make_job: MakeJob) -> None:
    """32 writers, 10 rows each, all at once: every row counted once, versions without holes."""
    job_id = await make_job()

    async def writer(w: int) -> None:
        for r in range(10):
            row = w * 10 + r
            await store.append(job_id, [NewEvent(f"w{row}", RowSucceeded(row, "x@y.z", True))])

    await asyncio.gather(*(writer(w) for w in range(32)))
    view = await store.get_job(job_id, 10)
    assert view is not None
    assert (view.state.successful, view.state.version) == (320, 321)
    versions = [e.version for e in await store.read_job_events(job_id, limit=1000)]
    assert versions == list(range(1, 322))


async def test_revocation_during_use_wins_from_the_next_request_on(store: Store) -> None:
    """Requests racing a revocation may pass; every request after it has returned fails."""
    issued = await issue_key(store, "racing")

    async def use() -> bool:
        try:
            await authenticate(store, issued.secret)
        except NotAuthenticated:
            return False
        return True

    racing = asyncio.gather(*(use() for _ in range(20)))
    await store.revoke_key(issued.record.key_id)
    await racing
    assert not any(await asyncio.gather(*(use() for _ in range(20))))


async def test_retried_batches_among_new_ones_count_once_and_the_new_ones_commit(
    store: Store, make_job: MakeJob
) -> None:
    """Re-sent batches (a retry after a lost answer) arriving together with new batches, for
    the same jobs and others: the re-sent events are duplicates, every new event is counted."""
    jobs = [await make_job(f"job-{n}") for n in range(4)]
    sent = {
        job_id: [NewEvent(f"{job_id}-r{row}", RowSucceeded(row, "x@y.z", True)) for row in range(3)]
        for job_id in jobs
    }
    for job_id in jobs[:2]:
        await store.append(job_id, sent[job_id])

    fresh = {job_id: [NewEvent(f"{job_id}-r9", RowFailed(9, "bad", "Invalid email: bad"))]
             for job_id in jobs}
    calls = [store.append(job_id, sent[job_id]) for job_id in jobs]
    calls += [store.append(job_id, fresh[job_id]) for job_id in jobs]
    results = await asyncio.gather(*calls)

    assert [(r.appended, r.duplicates) for r in results[:4]] == [(0, 3), (0, 3), (3, 0), (3, 0)]
    assert [(r.appended, r.duplicates) for r in results[4:]] == [(1, 0)] * 4
    for job_id in jobs:
        view = await store.get_job(job_id, 10)
        assert view is not None
        assert (view.state.successful, view.state.failed, view.state.version) == (3, 1, 5)


async def test_a_second_outcome_among_concurrent_batches_is_refused_alone(
    store: Store, make_job: MakeJob
) -> None:
    """Arriving together: a re-sent batch, a batch that reports a row a second time, and a new
    batch. Only the second outcome is refused (409, naming the row); the re-send is duplicates,
    the new batch is counted."""
    for job_id in ("job-a", "job-b", "job-c"):
        await make_job(job_id)
    first = [NewEvent("a-1", RowSucceeded(1, "x@y.z", True))]
    await store.append("job-a", first)
    await store.append("job-b", [NewEvent("b-1", RowSucceeded(1, "x@y.z", True))])

    resent, twice, fresh = await asyncio.gather(
        store.append("job-a", first),
        store.append("job-b", [NewEvent("b-2", RowFailed(1, "x@y.z", "second outcome"))]),
        store.append("job-c", [NewEvent("c-1", RowSucceeded(1, "x@y.z", True))]),
        return_exceptions=True,
    )

    assert not isinstance(resent, BaseException)
    assert (resent.appended, resent.duplicates) == (0, 1)
    assert isinstance(twice, RowAlreadyReported)
    assert "row 1" in twice.detail
    assert not isinstance(fresh, BaseException)
    assert (fresh.appended, fresh.duplicates) == (1, 0)
    counts: dict[str, tuple[int, int, int]] = {}
    for job_id in ("job-a", "job-b", "job-c"):
        view = await store.get_job(job_id, 10)
        assert view is not None
        counts[job_id] = (view.state.successful, view.state.failed, view.state.version)
    assert counts == {"job-a": (1, 0, 2), "job-b": (1, 0, 2), "job-c": (1, 0, 2)}
