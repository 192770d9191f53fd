"""Every store lets a reader wait for the log to grow instead of hammering it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from jobtracker.domain.events import NewEvent, Started
from jobtracker.store import Store
from jobtracker.store.waiting import wait_for_append
from tests.conditions import until_async
from tests.pg_database import listeners

MakeJob = Callable[..., Awaitable[str]]


async def listening(postgres_url: str) -> bool:
    """Whether a session of the test database listens for appends."""
    return bool(await listeners(postgres_url))


async def test_waiting_reader_wakes_when_an_event_is_appended(
    store: Store, make_job: MakeJob, postgres_url: str | None
) -> None:
    """A reader waiting past the newest position returns once an append lands, then reads it."""
    job_id = await make_job()
    head = (await store.read_log())[-1].position
    waiting = asyncio.create_task(wait_for_append(store, head, timeout=30))
    await asyncio.sleep(0)  # the waiter's first look: nothing past the head yet
    if postgres_url is not None:  # woken by NOTIFY: it listens before it waits
        await until_async(lambda: listening(postgres_url), "the waiter never listened")
    assert not waiting.done()
    await store.append(job_id, [NewEvent("go", Started())])
    assert await asyncio.wait_for(waiting, 10) is True
    assert [e.event_id for e in await store.read_log(head)] == ["go"]


async def test_waiting_reader_gives_up_after_its_timeout(store: Store, make_job: MakeJob) -> None:
    """With nothing appended, the wait ends with False when its time is up."""
    await make_job()
    head = (await store.read_log())[-1].position
    assert await wait_for_append(store, head, timeout=0.3) is False
    assert await wait_for_append(store, head - 1, timeout=0.3) is True
