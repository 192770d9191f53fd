"""Job reads coalesced into one query per round trip, on connections of their own.

Read-your-writes across processes forbids answering a GET from memory (another process's NOTIFY
arrives after its writer has been acknowledged), so every GET must be answered by a query that
*started after the GET arrived*. Within that rule the reads of one process can still share a
query: GETs queue in one pending batch; an idle lane takes the whole batch, deduplicated, and
sends one `WHERE job_id = ANY($1)`; GETs arriving while it is in flight join the next batch,
never the one in flight (its query may have started before they arrived). Each job's row is
decoded once per batch, whatever the number of GETs waiting for it.

A lane keeps one connection outside the pool, so a read costs no pool acquire and release (the
pool's bookkeeping measured about as much as the query). A lane whose connection was cut
reconnects and sends the batch once more (`lanes.LaneConnection`, as the commit lanes do); any
other driver error reaches every GET of the batch, each translated by `driver.unavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeAlias

import asyncpg

from jobtracker.domain.errors import StoreUnavailable
from jobtracker.domain.state import JobState
from jobtracker.store.postgres.driver import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    DRIVER_ERRORS,
    unavailable,
)
from jobtracker.store.postgres.lanes import Connect, LaneConnection
from jobtracker.store.postgres.sql import READ_JOBS
from jobtracker.store.rows import state_from_row

_CLOSED = "The PostgreSQL store was closed while reading"

#: Lanes each store reads through. With one, GETs arriving during a round trip wait for it to end
#: before theirs starts (at most one round trip more); a second would start them at once, but
#: splits the batches: on the benchmark's 2-core machine one lane answered 7% more running-job
#: GETs than two (11.7k against 11.0k req/s; 19 against 15 GETs a query), every query costing
#: the server's one core its driver work. `BatchReader(lanes=N)` takes more.
READ_LANES = 1
#: The lanes' `application_name`, which `pg_stat_activity` shows.
READER_NAME = "jobtracker reads"

#: What a waiting read is given: the job's state, None (no such job), or the batch's failure.
Outcome: TypeAlias = JobState | BaseException | None
#: The next batch: each job id with the futures of the reads waiting for it.
Batch: TypeAlias = dict[str, list["asyncio.Future[Outcome]"]]


async def connect_reader(url: str) -> asyncpg.Connection[asyncpg.Record]:
    """A read lane's connection to `url`, named so that `pg_stat_activity` tells it apart."""
    return await asyncpg.connect(
        url, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT,
        server_settings={"application_name": READER_NAME},
    )


class BatchReader:
    """Coalesced job reads over `lanes` connections made by `connect` (see the module doc)."""

    def __init__(self, connect: Connect, lanes: int = READ_LANES) -> None:
        # Kept: `asyncio.get_running_loop()` makes a getpid() system call (CPython's fork check).
        self._loop = asyncio.get_running_loop()
        self._pending: Batch = {}
        self._ready = asyncio.Event()
        self._lanes = [_Lane(connect) for _ in range(lanes)]
        self._tasks = [asyncio.create_task(self._serve(lane)) for lane in self._lanes]
        self._closed = False

    async def state(self, job_id: str) -> JobState | None:
        """The job's state as of a query that started after this call; None if there is none."""
        if self._closed:
            raise StoreUnavailable("The PostgreSQL store is not open")
        future: asyncio.Future[Outcome] = self._loop.create_future()
        waiting = self._pending.get(job_id)
        if waiting is None:
            self._pending[job_id] = [future]
        else:
            waiting.append(future)
        self._ready.set()
        # Each read has a future of its own: a read cancelled here (its client left) cancels only
        # that future, which the lane then skips; the batch and its other reads go on.
        outcome = await future
        if outcome is None or isinstance(outcome, JobState):
            return outcome
        if isinstance(outcome, DRIVER_ERRORS):
            raise unavailable(outcome, "reading a job") from outcome
        raise outcome

    async def close(self) -> None:
        """Stop the lanes, close their connections; reads still waiting hear the store closed."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for lane in self._lanes:
            await lane.close()
        _settle_all(self._pending, StoreUnavailable(_CLOSED))
        self._pending = {}

    async def _serve(self, lane: _Lane) -> None:
        """Take the whole pending batch whenever there is one, answer it, look again."""
        while True:
            while not self._pending:
                self._ready.clear()
                await self._ready.wait()
            batch, self._pending = self._pending, {}
            await lane.answer(batch)


class _Lane:
    """One read connection (`lanes.LaneConnection`: connected on its first batch, and again,
    reading once more, after a cut)."""

    def __init__(self, connect: Connect) -> None:
        self._conn = LaneConnection(connect)

    async def answer(self, batch: Batch) -> None:
        """Read every job of `batch` in one query and hand each waiting read its outcome."""
        job_ids = list(batch)
        try:
            rows = await self._conn.run(lambda conn: conn.fetch(READ_JOBS, job_ids))
        except asyncio.CancelledError:
            _settle_all(batch, StoreUnavailable(_CLOSED))
            raise
        except Exception as exc:  # every read of the batch hears it (translated if the driver's)
            _settle_all(batch, exc)
        else:
            states = {row[0]: state_from_row(tuple(row)) for row in rows}
            _settle(batch, states.get)

    async def close(self) -> None:
        """Drop the connection (at store close); harmless without one."""
        await self._conn.close()


def _settle(batch: Batch, outcome_of: Callable[[str], Outcome]) -> None:
    """Give every read of `batch` still waiting its job's outcome (cancelled ones are done)."""
    for job_id, waiting in batch.items():
        outcome = outcome_of(job_id)
        for future in waiting:
            if not future.done():
                future.set_result(outcome)


def _settle_all(batch: Batch, outcome: Outcome) -> None:
    """Give every read of `batch` still waiting the same outcome."""
    _settle(batch, lambda _: outcome)
