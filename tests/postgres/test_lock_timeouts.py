"""Another session's lock on `jobs` bounds a request's wait: 503 with Retry-After, never a hang."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from jobtracker.domain.errors import StoreUnavailable
from jobtracker.domain.events import Created, NewEvent, ProgressReported, Started
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store.keys import issue_key
from jobtracker.store.postgres import PostgresStore
from jobtracker.store.postgres.driver import DEFAULT_TIMEOUTS

AiohttpClient = Callable[..., Awaitable[TestClient]]
#: The default lock timeout, in seconds.
LOCK_TIMEOUT = float(dict(DEFAULT_TIMEOUTS)["lock_timeout"].removesuffix("s"))


@pytest.fixture
async def holder(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """Another session on the test schema, for holding locks."""
    conn = await asyncpg.connect(pg_url)
    yield conn
    await conn.close()


async def events_of(conn: asyncpg.Connection, job_id: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM events WHERE job_id = $1", job_id))


async def timed(call: Awaitable[Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


async def test_a_locked_jobs_table_answers_503_with_retry_after_instead_of_hanging(
    aiohttp_client: AiohttpClient, pg_url: str, holder: asyncpg.Connection
) -> None:
    """Under a lock on `jobs` a GET and an append answer 503 in time, write nothing, then work."""
    store = PostgresStore(pg_url, pool_size=4)
    client = await aiohttp_client(create_app(Settings(), store=store))
    headers = {"X-API-Key": (await issue_key(store, "owner")).secret}
    url = "/api/v1/jobs/locked"
    assert (await client.post("/api/v1/jobs", json={"job_id": "locked"}, headers=headers)).ok
    # the app now knows the job's owner: a later append goes straight to the commit lanes
    assert (await client.post(f"{url}/events", json=[{"type": "started"}], headers=headers)).ok
    batch = [{"type": "progress", "current": 1, "total": 2, "event_id": "under-lock"}]

    locked = holder.transaction()
    await locked.start()
    await holder.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
    read, read_took = await timed(client.get(url, headers=headers))
    append, append_took = await timed(client.post(f"{url}/events", json=batch, headers=headers))
    written = await events_of(holder, "locked")
    await locked.rollback()

    for answer, took in ((read, read_took), (append, append_took)):
        assert answer.status == 503
        assert answer.headers["Retry-After"] == "1"
        assert "lock timeout" in (await answer.json())["detail"]
        assert LOCK_TIMEOUT - 0.1 < took < LOCK_TIMEOUT + 2
    assert written == 2  # created and started: nothing of the refused batch
    print(f"\n503 under the lock: GET {read_took:.2f} s, append {append_took:.2f} s")
    assert (await client.get(url, headers=headers)).status == 200
    again = await client.post(f"{url}/events", json=batch, headers=headers)
    assert (await again.json())["appended"] == 1  # the re-send is new: the 503 wrote nothing


async def test_a_row_lock_times_out_that_jobs_append_in_the_urls_lock_timeout(
    pg_url: str, holder: asyncpg.Connection
) -> None:
    """`?lock_timeout=` bounds an append to a row-locked job: it writes nothing; others go on."""
    store = PostgresStore(f"{pg_url}&lock_timeout=200ms", pool_size=2)
    await store.open()
    try:
        for job_id in ("held", "free"):
            await store.create_job(job_id, Created(owner="key_a"))
        locked = holder.transaction()
        await locked.start()
        await holder.execute("SELECT 1 FROM jobs WHERE job_id = 'held' FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="lock timeout"):
            await store.append("held", [NewEvent("held-1", Started())])
        assert time.monotonic() - started < 0.2 + 2
        assert (await store.append("free", [NewEvent("free-1", Started())])).appended == 1
        assert await events_of(holder, "held") == 1
        await locked.rollback()
        batch = [NewEvent("held-1", Started()), NewEvent("held-2", ProgressReported(1, 2, None))]
        assert (await store.append("held", batch)).appended == 2
    finally:
        await store.close()
