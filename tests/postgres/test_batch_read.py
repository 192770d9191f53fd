"""GETs coalesced into one query per round trip (`store/postgres/batch_read`): each read gets its
own job, sees every append acknowledged before it was issued, and survives cuts, driver errors,
cancelled neighbours and the store closing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from jobtracker.domain.errors import StoreUnavailable
from jobtracker.domain.events import Created, NewEvent, RowSucceeded, Started
from jobtracker.domain.state import JobState
from jobtracker.store.postgres import PostgresStore
from jobtracker.store.postgres.batch_read import READER_NAME, BatchReader
from tests.postgres.conftest import OpenStore


class HeldConnection(asyncpg.Connection):  # type: ignore[type-arg]
    """A real connection whose next `fetch`, once `hold` is armed, runs its query and then keeps
    the rows until the test lets them go: a batch whose query has started and is still in flight
    (its answer not yet delivered)."""

    hold: asyncio.Event | None = None
    ran: asyncio.Event | None = None

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        rows: list[Any] = await super().fetch(query, *args, **kwargs)
        hold, ran = self.hold, self.ran
        if hold is not None and ran is not None:
            self.hold = self.ran = None  # only this one fetch is held
            ran.set()
            await hold.wait()
        return rows


class Held:
    """The lanes' connections, and a switch that holds the next query one of them sends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connections: list[HeldConnection] = []
        self._armed: tuple[asyncio.Event, asyncio.Event] | None = None

    async def connect(self) -> HeldConnection:
        conn: HeldConnection = await asyncpg.connect(self.url, connection_class=HeldConnection)
        self.connections.append(conn)
        if self._armed is not None:
            conn.hold, conn.ran = self._armed
        return conn

    def arm(self) -> tuple[asyncio.Event, asyncio.Event]:
        """Hold the next fetch on any lane: (release, started)."""
        self._armed = asyncio.Event(), asyncio.Event()
        for conn in self.connections:
            conn.hold, conn.ran = self._armed
        return self._armed

    def disarm(self) -> None:
        self._armed = None
        for conn in self.connections:
            conn.hold = conn.ran = None


MakeReader = Callable[..., Awaitable[tuple[BatchReader, Held]]]


@pytest.fixture
async def make_reader(pg_url: str) -> AsyncIterator[MakeReader]:
    """Batch readers on the test schema through `Held` connections; closed after the test."""
    made: list[BatchReader] = []

    async def make(lanes: int = 1) -> tuple[BatchReader, Held]:
        held = Held(pg_url)
        reader = BatchReader(held.connect, lanes=lanes)
        made.append(reader)
        return reader, held

    yield make
    for reader in made:
        await reader.close()


async def _job_with_rows(store: PostgresStore, job_id: str, rows: int) -> None:
    await store.create_job(job_id, Created(owner="key_a", total=1000))
    await store.append(job_id, [NewEvent(f"{job_id}-start", Started()), *(
        NewEvent(f"{job_id}-{row}", RowSucceeded(row, f"r{row}@uni.edu", True))
        for row in range(1, rows + 1)
    )])


async def _append_row(store: PostgresStore, job_id: str, row: int) -> None:
    await store.append(job_id, [NewEvent(f"{job_id}-{row}", RowSucceeded(row, "x@uni.edu", True))])


async def _wait_until_started(started: asyncio.Event) -> None:
    await asyncio.wait_for(started.wait(), 5)


def _rows(state: JobState | None) -> tuple[str, int] | None:
    return None if state is None else (state.job_id, state.successful)


async def test_concurrent_reads_of_many_jobs_each_get_their_own_job(
    open_store: OpenStore, make_reader: MakeReader
) -> None:
    """Reads of 30 jobs (each job a different number of rows), several per job, in a shuffled
    order and queued behind a query in flight so they all share the next batch: each read gets
    its own job, and a job that does not exist is None, not a neighbour."""
    store = await open_store()
    jobs = {f"job-{n:02d}": n for n in range(30)}
    for job_id, rows in jobs.items():
        await _job_with_rows(store, job_id, rows)
    reader, held = await make_reader(lanes=1)
    release, started = held.arm()
    in_flight = asyncio.create_task(reader.state("job-00"))
    await _wait_until_started(started)
    asked = [*jobs, *jobs, *jobs, "no-such-job"]
    random.Random(24).shuffle(asked)
    reads = [asyncio.create_task(reader.state(job_id)) for job_id in asked]
    await asyncio.sleep(0.05)
    release.set()
    answers = await asyncio.gather(*reads)
    assert [_rows(state) for state in answers] == [
        None if job_id == "no-such-job" else (job_id, jobs[job_id]) for job_id in asked
    ]
    assert _rows(await in_flight) == ("job-00", 0)
    # The same through the store, on its own lanes, without holding anything.
    views = await asyncio.gather(*(store.get_job(job_id, 10) for job_id in asked))
    assert [None if v is None else (v.state.job_id, v.state.successful) for v in views] == [
        None if job_id == "no-such-job" else (job_id, jobs[job_id]) for job_id in asked
    ]


@pytest.mark.parametrize("lanes", [1, 2])
async def test_a_read_issued_after_an_append_was_acknowledged_shows_it_while_an_older_query_is_in_flight(  # noqa: E501
    open_store: OpenStore, make_reader: MakeReader, lanes: int
) -> None:
    """A batch's query has run (before the append) and its answer is still in flight when
    another store's append is acknowledged; a read issued then must not share that answer: it
    shows the append. The read issued before the append may show either."""
    writer = await open_store()
    await _job_with_rows(writer, "job", 1)
    reader, held = await make_reader(lanes=lanes)
    assert _rows(await reader.state("job")) == ("job", 1)  # every lane used so far connected
    release, started = held.arm()
    older = asyncio.create_task(reader.state("job"))
    await _wait_until_started(started)
    held.disarm()
    await _append_row(writer, "job", 2)  # acknowledged: committed
    newer = asyncio.create_task(reader.state("job"))
    await asyncio.sleep(0.05)  # with two lanes the other one answers meanwhile
    release.set()
    assert _rows(await older) == ("job", 1)  # its query ran before the append
    assert _rows(await newer) == ("job", 2)


async def test_reads_cancelled_while_waiting_leave_the_others_their_answers(
    open_store: OpenStore, make_reader: MakeReader
) -> None:
    """Clients that leave (their reads cancelled, in the batch in flight and in the next one,
    several of them reading the same job as reads that stay) take nothing from anyone else."""
    store = await open_store()
    await _job_with_rows(store, "a", 3)
    await _job_with_rows(store, "b", 5)
    reader, held = await make_reader(lanes=1)
    release, started = held.arm()
    in_flight = [asyncio.create_task(reader.state(job_id)) for job_id in ["a", "a", "b"]]
    await _wait_until_started(started)
    queued = [asyncio.create_task(reader.state(job_id)) for job_id in ["a", "b"] * 4]
    await asyncio.sleep(0)
    gone = [in_flight[0], *queued[::2]]  # one "a" in flight, every queued "a"
    for task in gone:
        task.cancel()
    release.set()
    assert _rows(await in_flight[1]) == ("a", 3)
    assert _rows(await in_flight[2]) == ("b", 5)
    assert [_rows(await task) for task in queued[1::2]] == [("b", 5)] * 4
    assert all(task.cancelled() for task in gone)
    assert _rows(await reader.state("a")) == ("a", 3)


async def test_a_read_after_the_read_connection_was_killed_still_answers(
    open_store: OpenStore, pg_url: str
) -> None:
    """pg_terminate_backend on the store's read connections: the next reads (of a job that has
    moved on meanwhile) reconnect and answer it, none answers an error."""
    store = await open_store()
    await _job_with_rows(store, "job", 2)
    await asyncio.gather(*(store.get_job("job", 10) for _ in range(8)))
    killer = await asyncpg.connect(pg_url)
    try:
        killed = await killer.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = $1",
            READER_NAME,
        )
    finally:
        await killer.close()
    assert killed >= 1
    await _append_row(store, "job", 3)
    views = await asyncio.gather(*(store.get_job("job", 10) for _ in range(8)))
    assert [None if v is None else v.state.successful for v in views] == [3] * 8


async def test_reads_whose_connection_is_killed_mid_query_are_read_again_on_a_new_one(
    open_store: OpenStore, pg_url: str
) -> None:
    """The read connections are terminated while their query waits (behind another session's
    lock on the jobs table): the batch is sent once more on a fresh connection, and its reads
    answer once the lock goes, none of them an error."""
    store = await open_store()
    await _job_with_rows(store, "job", 2)
    await store.get_job("job", 10)
    locker, killer = await asyncpg.connect(pg_url), await asyncpg.connect(pg_url)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
            reads = [asyncio.create_task(store.get_job(job_id, 10)) for job_id in ["job"] * 3]
            # Asked outside the locker's transaction, which would see one snapshot of the stats.
            waiting = await until_waiting(killer)
            killed = await killer.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM unnest($1::int[]) AS pid", waiting
            )
            assert killed >= 1
            await asyncio.sleep(0.2)  # the batch is read again, and waits for the lock again
    finally:
        await locker.close()
        await killer.close()
    views = await asyncio.gather(*reads)
    assert [None if v is None else v.state.successful for v in views] == [2] * 3


async def until_waiting(conn: asyncpg.Connection) -> list[int]:  # type: ignore[type-arg]
    """The read connections waiting for a lock, once there is one."""
    for _ in range(100):
        pids = [row[0] for row in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
            "AND datname = current_database() AND wait_event_type = 'Lock'",
            READER_NAME,
        )]
        if pids:
            return pids
        await asyncio.sleep(0.01)
    raise AssertionError("no read connection ever waited for the lock")


async def test_a_driver_error_fails_that_batch_as_unavailable_and_the_next_read_answers(
    open_store: OpenStore, pg_url: str
) -> None:
    """Another session holds the jobs table locked past the reads' lock timeout: every read of
    that batch is refused as the store unavailable (a 503, not a 500), and once the lock goes the
    next reads answer on the same lanes."""
    store = await open_store()
    await _job_with_rows(store, "job", 2)
    locker = await asyncpg.connect(pg_url)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
            outcomes = await asyncio.gather(
                *(store.get_job(job_id, 10) for job_id in ["job", "job", "other"]),
                return_exceptions=True,
            )
    finally:
        await locker.close()
    assert [type(outcome) for outcome in outcomes] == [StoreUnavailable] * 3
    assert all("lock timeout" in str(outcome) for outcome in outcomes)
    view = await store.get_job("job", 10)
    assert view is not None
    assert view.state.successful == 2


async def test_closing_the_store_ends_its_reads_with_unavailable(
    open_store: OpenStore, make_reader: MakeReader
) -> None:
    """Reads in flight and queued when the reader closes hear that the store is unavailable;
    reads after that are refused the same way, and no lane is left running."""
    store = await open_store()
    await _job_with_rows(store, "job", 1)
    reader, held = await make_reader(lanes=2)
    _, started = held.arm()  # never released: the reader closes under it
    in_flight = asyncio.create_task(reader.state("job"))
    await _wait_until_started(started)
    queued = asyncio.create_task(reader.state("job"))
    await asyncio.sleep(0)
    await reader.close()
    for task in [in_flight, queued]:
        with pytest.raises(StoreUnavailable):
            await task
    with pytest.raises(StoreUnavailable):
        await reader.state("job")
    assert all(conn.is_closed() for conn in held.connections)
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.get_job("job", 10)
