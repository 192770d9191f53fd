"""The SDK's retry budget against real PostgreSQL: it rides out an outage longer than the old
budget, over HTTP and straight into the store, and a budget that runs out raises with the events
kept. The outage is another session's row lock on the job, with a short `lock_timeout`."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

import jobtracker
from jobtracker.domain.errors import StoreUnavailable
from jobtracker.sdk.worker import RetryPolicy
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store.keys import issue_key
from jobtracker.store.postgres import PostgresStore
from tests.pg_database import drop_schema, new_schema_url, run_sync
from tests.sdk.conftest import ServerThread

#: Each blocked append gives up after this long and is answered StoreUnavailable (503 over HTTP).
LOCK_WAIT = 0.1
#: The longest the SDK's old default kept retrying: 8 tries, each blocked LOCK_WAIT, with pauses
#: doubling from 0.05 s, capped at 2 s, between them.
OLD_BUDGET = sum(min(2.0, 0.05 * 2**n) for n in range(7)) + 8 * LOCK_WAIT


@pytest.fixture
def pg_url(postgres_database: str) -> Iterator[str]:
    """An empty schema, reached with a short lock timeout."""
    url = new_schema_url(postgres_database)
    yield f"{url}&lock_timeout={int(LOCK_WAIT * 1000)}ms"
    drop_schema(url)


@pytest.fixture(params=["http", "store"])
def tracker_url(request: pytest.FixtureRequest, pg_url: str) -> Iterator[str]:
    """What the SDK connects to: a server on the schema, or the schema itself."""
    if request.param == "store":
        yield pg_url
        return
    server = ServerThread(create_app(Settings(store_url=pg_url)))
    server.start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


@pytest.fixture
def owner_key(pg_url: str) -> str:
    """An owner key on the schema."""

    async def issue() -> str:
        store = PostgresStore(pg_url, pool_size=1)
        await store.open()
        try:
            return (await issue_key(store, "owner")).secret
        finally:
            await store.close()

    return run_sync(issue())


@pytest.fixture
async def watcher(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A session that looks on: who waits for whom, and what got written."""
    conn = await asyncpg.connect(pg_url)
    yield conn
    await conn.close()


@pytest.fixture
async def holder(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A session that will hold the job's row lock."""
    conn = await asyncpg.connect(pg_url)
    yield conn
    await conn.close()


def create_job(url: str, key: str) -> str:
    with jobtracker.connect(url, api_key=key) as tracker:
        return tracker.create_job(total=2)


async def lock_row(holder: asyncpg.Connection, job_id: str) -> asyncpg.transaction.Transaction:
    """Hold the job's row lock (appends wait for it) until the returned transaction ends."""
    locked = holder.transaction()
    await locked.start()
    await holder.execute("SELECT 1 FROM jobs WHERE job_id = $1 FOR UPDATE", job_id)
    return locked


async def blocked_tries(watcher: asyncpg.Connection, holder: asyncpg.Connection) -> set[object]:
    """The statements waiting for the holder right now, one per try."""
    rows = await watcher.fetch(
        "SELECT pid, query_start FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        holder.get_server_pid(),
    )
    return {(row["pid"], row["query_start"]) for row in rows}


async def job_row(watcher: asyncpg.Connection, job_id: str) -> tuple[str, int, int]:
    """The job's status and version, and its events in the log."""
    row = await watcher.fetchrow(
        "SELECT status, version, (SELECT count(*) FROM events WHERE job_id = $1) FROM jobs "
        "WHERE job_id = $1",
        job_id,
    )
    assert row is not None
    return row[0], row[1], row[2]


def report(url: str, key: str, job_id: str) -> None:
    """A worker with the default retry policy: two rows, then SUCCESS."""
    with jobtracker.connect(url, api_key=key) as tracker, tracker.job(job_id) as job:
        job.started()
        job.row_succeeded(1, "ana@uni.edu", internal=True)
        job.row_failed(2, "invalido@test", "Invalid email: invalido@test")
        job.succeeded()


async def test_default_budget_rides_out_an_outage_longer_than_the_old_budget(
    tracker_url: str, owner_key: str, holder: asyncpg.Connection, watcher: asyncpg.Connection
) -> None:
    """Appends refused for longer than the old retry budget still land, each event once."""
    job_id = await asyncio.to_thread(create_job, tracker_url, owner_key)
    locked = await lock_row(holder, job_id)
    worker = asyncio.ensure_future(asyncio.to_thread(report, tracker_url, owner_key, job_id))
    tries: set[object] = set()
    give_up_at = time.monotonic() + 30
    while not tries:
        assert time.monotonic() < give_up_at, "the worker never waited for the lock"
        if worker.done():
            await worker  # it ended without ever waiting for the lock: show why
            pytest.fail("the worker finished without meeting the lock")
        tries |= await blocked_tries(watcher, holder)
    outage_began = time.monotonic()
    while time.monotonic() - outage_began < OLD_BUDGET + 0.5:
        assert not worker.done(), "the worker gave up, or got through the lock"
        tries |= await blocked_tries(watcher, holder)
        await asyncio.sleep(0.02)
    await locked.rollback()
    outage = time.monotonic() - outage_began
    await asyncio.wait_for(worker, 30)
    assert await job_row(watcher, job_id) == ("SUCCESS", 5, 5)
    print(f"\nrode out {outage:.1f} s of refusals ({len(tries)} tries seen blocked; "
          f"the old budget was at most {OLD_BUDGET:.2f} s), done "
          f"{time.monotonic() - outage_began - outage:.2f} s after the lock went")


def report_with_a_tiny_budget(
    url: str, key: str, job_id: str, gave_up: threading.Event, released: threading.Event
) -> tuple[StoreUnavailable, float]:
    """A worker whose flush gives up after 0.3 s; once the lock is gone it flushes again."""
    tiny = RetryPolicy(give_up_after=0.3)
    with (
        jobtracker.connect(url, api_key=key, max_delay=3600, retry=tiny) as tracker,
        tracker.job(job_id) as job,
    ):
        job.started()
        job.row_succeeded(1, "ana@uni.edu", internal=True)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as failure:
            job.flush()
        took = time.monotonic() - started
        gave_up.set()
        released.wait(30)
        job.flush()  # the events kept from the failed flush, under their first ids
        job.succeeded()
    return failure.value, took


async def test_a_budget_that_runs_out_raises_store_unavailable_and_keeps_the_events(
    tracker_url: str, owner_key: str, holder: asyncpg.Connection, watcher: asyncpg.Connection
) -> None:
    """`flush()` raises StoreUnavailable after `give_up_after`; the next flush writes the rest."""
    job_id = await asyncio.to_thread(create_job, tracker_url, owner_key)
    locked = await lock_row(holder, job_id)
    gave_up, released = threading.Event(), threading.Event()
    worker = asyncio.ensure_future(asyncio.to_thread(
        report_with_a_tiny_budget, tracker_url, owner_key, job_id, gave_up, released
    ))
    assert await asyncio.to_thread(gave_up.wait, 30)
    assert await job_row(watcher, job_id) == ("PENDING", 1, 1)
    await locked.rollback()
    released.set()
    failure, took = await asyncio.wait_for(worker, 30)
    assert "lock timeout" in failure.detail
    assert 0.3 <= took < 0.3 + LOCK_WAIT + 2
    assert await job_row(watcher, job_id) == ("SUCCESS", 4, 4)
    print(f"\nflush gave up after {took:.2f} s: {failure.detail}")
