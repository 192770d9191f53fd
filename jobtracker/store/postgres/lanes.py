"""The PostgreSQL group committer: requests queue up, lanes take them a group at a time.

Each lane commits on a connection of its own (see `commit.commit_group`); a burst is split over
idle lanes only when each share is big enough to be worth a round trip of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias, TypeVar

import asyncpg

from jobtracker.domain.events import NewEvent
from jobtracker.store.base import AppendResult
from jobtracker.store.postgres.commit import (
    CONNECTION_LOST,
    AfterCommit,
    BeforeCommit,
    Outcome,
    commit_group,
    no_pause,
    once_more_if_cut,
    was_cut,
)
from jobtracker.store.postgres.plan import (
    AppendRequest,
    Conn,
    prepare,
)
from jobtracker.store.rows import Remembered

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A group stops growing past this many events or requests (one request may be bigger on its own).
MAX_GROUP_EVENTS = 10_000
MAX_GROUP_REQUESTS = 256
#: A burst is split over idle lanes only into groups of at least this many requests (about where
#: planning a share takes as long as one group's round trip and commit on the server).
MIN_SHARE = 8

#: Groups in flight at once. One group's round trips (BEGIN, lock and read, write, COMMIT) leave
#: the database idle while Python plans and answers, and Python idle while the database works;
#: with two lanes one group's reads and planning overlap the other's write and COMMIT (positions
#: are still drawn one transaction at a time, under the position lock).
LANES = 2
#: Opens a connection of a lane's own.
Connect: TypeAlias = "Callable[[], Awaitable[asyncpg.Connection[asyncpg.Record]]]"


class LaneConnection:
    """A lane's own connection, opened when first needed and again after a cut (the commit lanes'
    and the GETs' read lanes, `batch_read`).

    A lane commits group after group; borrowing from the pool for each would add the pool's
    bookkeeping to every group and make lanes queue behind readers for a connection.
    """

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None

    async def run(self, call: Callable[[Conn], Awaitable[T]]) -> T:
        """`call` on this lane's connection; once more on a new one if the connection was cut
        (safe for appends: they are idempotent by event id)."""
        for attempt in (1, 2):
            conn = await self._open()
            try:
                return await call(conn)
            except BaseException as exc:
                # Whatever escaped (a cut, a command timeout, a cancellation) may have left the
                # connection inside a transaction or a cancel: the next call gets a fresh one.
                cut = was_cut(exc, conn)
                self._conn = None
                conn.terminate()
                if attempt == 2 or not cut or not isinstance(exc, Exception):
                    raise
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _open(self) -> asyncpg.Connection[asyncpg.Record]:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._connect()
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()


_Waiting: TypeAlias = tuple[AppendRequest, "asyncio.Future[AppendResult]"]


class GroupCommitter:
    """Queues appends and commits what has gathered as groups, up to `LANES` groups at a time.

    Groups in flight never share a job: a job's requests commit in the order they arrived, and two
    lanes never wait on each other's row locks. Each lane commits on a connection of its own
    (opened with `connect`). With `grouped=False` every append runs its own transaction on a
    pooled connection (the reference the group-commit benchmark compares with).

    A lane is idle (asleep until woken), looking (about to take a group) or committing. An append
    wakes an idle lane only when no lane is looking and its job is in no group in flight: a lane
    that finishes a group always looks again, so it takes what queued meanwhile, and waking a
    second lane for the same requests would only cost it a wake-up to find nothing.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        connect: Connect,
        *,
        grouped: bool = True,
        before_commit: BeforeCommit = no_pause,
        after_commit: AfterCommit | None = None,
        lanes: int = LANES,
    ) -> None:
        self._pool = pool
        self._connect = connect
        self._grouped = grouped
        self._before_commit = before_commit
        self._after_commit = after_commit
        self._lanes = lanes
        self._pending: list[_Waiting] = []
        self._remembered = Remembered()
        self._busy: set[str] = set()  # jobs in a group being committed
        self._in_flight = 0
        self._looking = 0  # lanes running that will take a group before they sleep
        self._idle: list[asyncio.Future[None]] = []
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        #: Told the size of each group once it is committed (the server's metrics).
        self.observe: Callable[[int], None] | None = None

    def start(self) -> None:
        """Start the committing lanes (grouped mode only)."""
        if self._grouped and not self._tasks:
            self._stopping = False
            self._looking = self._lanes
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._lane()) for _ in range(self._lanes)]

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._tasks:
            self._stopping = True
            self._wake_all()
            await asyncio.gather(*self._tasks)
            self._tasks = []

    @property
    def in_flight(self) -> int:
        """Groups being committed right now."""
        return self._in_flight

    async def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Commit one batch (with whatever else is waiting); its result once COMMIT returned."""
        request = prepare(job_id, items)
        if not self._tasks:
            (outcome,) = await self._commit([request])
            return _unwrap(outcome)
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if not self._looking and job_id not in self._busy:
            self._wake_one()
        return await future

    def _wake_one(self) -> bool:
        """Wake one idle lane (it counts as looking from now); False if none was idle."""
        while self._idle:
            waiter = self._idle.pop()
            if not waiter.done():  # a lane cancelled while idle left its waiter done
                self._looking += 1
                waiter.set_result(None)
                return True
        return False

    def _wake_all(self) -> None:
        while self._wake_one():
            pass

    async def _commit(
        self, requests: Sequence[AppendRequest], lane: LaneConnection | None = None
    ) -> list[Outcome]:
        if lane is not None:
            outcomes, head = await lane.run(
                lambda conn: commit_group(conn, requests, self._before_commit, self._remembered)
            )
        else:
            outcomes, head = await once_more_if_cut(
                self._pool, lambda: self._commit_on_a_connection(requests)
            )
        if head and self._after_commit is not None:
            self._after_commit(head)
        if self.observe is not None:
            self.observe(len(requests))
        return outcomes

    async def _commit_on_a_connection(
        self, requests: Sequence[AppendRequest]
    ) -> tuple[list[Outcome], int]:
        async with self._pool.acquire() as conn:
            try:
                return await commit_group(conn, requests, self._before_commit, self._remembered)
            except Exception as exc:
                if was_cut(exc, conn) and not isinstance(exc, CONNECTION_LOST):
                    # Named as the cut it is, so `once_more_if_cut` redoes it.
                    raise asyncpg.ConnectionDoesNotExistError(str(exc)) from exc
                raise

    async def _lane(self) -> None:
        lane = LaneConnection(self._connect)
        try:
            await self._run_lane(lane)
        finally:
            await lane.close()

    async def _run_lane(self, lane: LaneConnection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # One pass of the loop first: appenders woken by the answers just given (or by the
            # same wake-up as this lane) queue their next request, and the group takes them all.
            await asyncio.sleep(0)
            self._looking -= 1
            group = self._take_group()
            if not group:
                if self._stopping and not self._pending:
                    return
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            jobs = {request.job_id for request, _ in group}
            self._busy |= jobs
            self._in_flight += 1
            if not self._looking and any(r.job_id not in self._busy for r, _ in self._pending):
                self._wake_one()  # the rest is another lane's share
            try:
                await self._commit_and_answer(group, lane)
            finally:
                self._busy -= jobs
                self._in_flight -= 1
                if self._stopping:
                    self._wake_all()  # idle lanes may have been waiting for these jobs to free
            self._looking += 1

    def _take_group(self) -> list[_Waiting]:
        """The next group: every waiting request of this lane's share of the free jobs.

        A burst big enough is split evenly over the idle lanes, so it becomes groups that overlap
        (one planned while another commits) instead of one group and an idle lane. A small one is
        not: each group costs a round trip and a commit of its own, and splitting a handful of
        requests would double those for almost no overlap. All of a job's waiting requests go in
        one group, in arrival order.
        """
        free: dict[str, None] = {}
        queued = 0
        for request, _ in self._pending:
            if request.job_id not in self._busy:
                free.setdefault(request.job_id)
                queued += 1
        if not free:
            return []
        shares = max(1, min(self._lanes - self._in_flight, queued // MIN_SHARE))
        share = set(list(free)[: -(-len(free) // shares)])
        group: list[_Waiting] = []
        rest: list[_Waiting] = []
        size = 0
        for waiting in self._pending:
            request = waiting[0]
            fits = len(group) < MAX_GROUP_REQUESTS and size < MAX_GROUP_EVENTS
            if request.job_id in share and (fits or not group):
                group.append(waiting)
                size += len(request.items)
            else:
                rest.append(waiting)
        self._pending = rest
        return group

    async def _commit_and_answer(self, group: list[_Waiting], lane: LaneConnection) -> None:
        try:
            outcomes = await self._commit([request for request, _ in group], lane)
        except Exception as exc:
            outcomes = [exc] * len(group)
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():  # the caller gave up waiting; the batch may still have committed
                continue
            if isinstance(outcome, AppendResult):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)


def _unwrap(outcome: Outcome) -> AppendResult:
    if isinstance(outcome, AppendResult):
        return outcome
    raise outcome
