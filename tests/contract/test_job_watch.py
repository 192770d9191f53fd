"""Every store's watch over unfinished jobs: due rows only, and no periodic look at PENDING jobs."""

from __future__ import annotations

import time

from jobtracker.domain import control
from jobtracker.domain.events import Created, NewEvent, Started, Succeeded, new_event_id
from jobtracker.store import Store


async def due_ids(store: Store, at: float) -> set[str]:
    return {job.job_id for job in await store.due_deadlines(at, 100)}


async def settle_as_the_reaper_would(store: Store, now: float) -> None:
    due = await store.due_deadlines(now, 100)
    verdicts = {job.job_id: control.decide(job, now) for job in due}
    await store.settle_deadlines({
        job_id: verdict.at if isinstance(verdict, control.Recheck) else None
        for job_id, verdict in verdicts.items()
    })


async def test_a_pending_job_is_looked_at_again_only_once_it_starts(store: Store) -> None:
    """After its first look a PENDING job drops out of the sweeps; starting brings it back
    due one heartbeat timeout later."""
    await store.create_job("waiting", Created(owner="o", heartbeat_timeout=5))
    now = time.time()
    assert await due_ids(store, now + 6) == {"waiting"}
    await settle_as_the_reaper_would(store, now + 6)
    assert await due_ids(store, now + 3600) == set()
    await store.append("waiting", [NewEvent(new_event_id(), Started())])
    started = time.time()
    assert await due_ids(store, started + 4) == set()
    assert await due_ids(store, started + 6) == {"waiting"}


async def test_a_job_finished_straight_from_pending_is_forgotten_soon(store: Store) -> None:
    """A job that never ran and finished is due at once, and the sweep stops watching it."""
    await store.create_job("quick", Created(owner="o", heartbeat_timeout=600))
    await store.append("quick", [NewEvent(new_event_id(), Succeeded())])
    now = time.time() + 1
    assert await due_ids(store, now) == {"quick"}
    await settle_as_the_reaper_would(store, now)
    assert await due_ids(store, now + 10 * 86_400) == set()


async def test_only_due_jobs_are_read(store: Store) -> None:
    """A sweep reads the jobs whose check has come, soonest first, and no others."""
    for n, timeout in enumerate((30, 10, 20)):
        await store.create_job(f"job-{n}", Created(owner="o", timeout=timeout))
    now = time.time()
    due = await store.due_deadlines(now + 25, 100)
    assert [job.job_id for job in due] == ["job-1", "job-2"]
    assert [job.timeout for job in due] == [10, 20]
