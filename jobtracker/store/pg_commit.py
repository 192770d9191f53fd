"""The PostgreSQL append path: group commit, the pure fold checked under row locks, one write.

Concurrent appends that reach one process are committed together. The usual group takes one round
trip: each request is planned with `plan_append` against the state its predecessors in the group
left, starting from the jobs' states as this process's last commit left them (read when it has
none), and one statement, its own transaction, locks the jobs' rows in job-id order, checks that
no job moved on since, and writes every new event, row mark, row error and job row. When a job
did move on, or the fold refuses a request, the group goes the transactional way: lock the rows,
read, plan, write, COMMIT. Each request is acknowledged only after its commit. A request the fold
refuses never touches the database, so it cannot sink its neighbours. Both ways leave re-sent
event ids and rows reported twice to the database's unique keys: such a write aborts, and the
group is redone one request per SAVEPOINT with everything read, so only the request at fault
hears about it (and a re-send is answered as duplicates).

Driver exceptions are not translated here: they reach the caller's `await`, which sits inside the
store's one translation (`postgres.unavailable`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, TypeAlias, TypeVar

import asyncpg
import attrs
import orjson
from asyncpg.pool import PoolConnectionProxy

from jobtracker.codec import STORED_FORMS, decode_stored, encode_fields
from jobtracker.errors import InvalidInput, JobNotFound, JobtrackerError
from jobtracker.events import Event, NewEvent
from jobtracker.projection import AppendPlan, plan_append, rows_touched
from jobtracker.state import JobState, RowMark
from jobtracker.store.base import AppendResult
from jobtracker.store.pg_sql import (
    APPEND_CHANNEL,
    LOCK_AND_READ,
    LOCK_JOBS,
    POSITION_LOCK,
    READ_JOBS,
    WRITE_GROUP,
)
from jobtracker.store.rows import Remembered, state_from_row, state_to_row

log = logging.getLogger(__name__)

#: A group stops growing past this many events or requests (one request may be bigger on its own).
MAX_GROUP_EVENTS = 10_000
MAX_GROUP_REQUESTS = 256
#: A burst is split over idle lanes only into groups of at least this many requests (about where
#: planning a share takes as long as one group's round trip and commit on the server).
MIN_SHARE = 8
#: A connection of our own or one lent by the pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
#: Errors after which a fresh connection may well succeed: the server restarted or cut us off
#: (a connection cut while idle can also surface as asyncpg's protocol-state InternalClientError).
CONNECTION_LOST = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.InternalClientError,
    ConnectionResetError,
)
T = TypeVar("T")


def was_cut(exc: BaseException, conn: Conn) -> bool:
    """Whether `exc` means the connection was cut. A cut shows as whatever the driver was doing
    when it noticed (an InterfaceError from inside a transaction, say), so the connection itself
    is asked too."""
    if isinstance(exc, CONNECTION_LOST):
        return True
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        # The pool detaches a borrowed connection's proxy as soon as the connection closes, and
        # the proxy then refuses every call: closed, so cut.
        return True


#: What a request ends with: its result, or the error to raise in its caller.
Outcome: TypeAlias = AppendResult | BaseException
#: Runs inside the append transaction just before COMMIT (a test seam for commit-order races).
BeforeCommit = Callable[[], Awaitable[None]]
#: Hears the newest position after each COMMIT that wrote events (wakes local waiters).
AfterCommit = Callable[[int], None]


class AppendRequest(NamedTuple):
    """One caller's batch, with each event's fields already encoded for the log."""

    job_id: str
    items: Sequence[NewEvent]
    data: dict[str, str]


def prepare(job_id: str, items: Sequence[NewEvent]) -> AppendRequest:
    """Encode a batch up front, so text PostgreSQL cannot store fails this request alone."""
    if not storable(job_id):
        raise JobNotFound()
    data: dict[str, str] = {}
    for index, item in enumerate(items):
        if not storable(item.event_id):
            raise InvalidInput(f"events[{index}].event_id: must be valid UTF-8 text without NUL")
        try:
            data[item.event_id] = encode_fields(item.event)
        except orjson.JSONEncodeError:
            raise InvalidInput(f"events[{index}]: text must be valid UTF-8") from None
    return AppendRequest(job_id, items, data)


def storable(text: str) -> bool:
    """Whether PostgreSQL can store `text` (valid UTF-8, no NUL)."""
    if not text.isascii():  # a flag on the string: ASCII text is UTF-8 without encoding it
        try:
            text.encode()
        except UnicodeEncodeError:
            return False
    return "\x00" not in text


@attrs.frozen
class Reads:
    """What planning a group needs, read while holding its jobs' row locks."""

    states: dict[str, JobState]
    known: dict[str, tuple[str, Event]]
    recorded: dict[str, set[RowMark]]


async def lock_and_read(
    conn: Conn, requests: Sequence[AppendRequest], *, careful: bool
) -> Reads:
    """Lock the jobs' rows and read their states; `careful` also reads which of the batches'
    event ids the log holds and which of their rows have an outcome (the fast path leaves both
    to the unique keys, see `commit_group`).

    One round trip. The careful read takes a second one if a writer committed to these jobs while
    we waited for their locks (see `pg_sql.LOCK_AND_READ`), to see what it wrote; the fast read
    only reads the rows it locks, which come back in their newest version.
    """
    job_ids = sorted({request.job_id for request in requests})
    if not careful:
        rows = await conn.fetch(LOCK_JOBS, job_ids)
        return Reads({row[0]: state_from_row(tuple(row)) for row in rows}, {}, {})
    event_ids = [item.event_id for request in requests for item in request.items]
    pairs = sorted(_rows_reported(requests))
    args = (job_ids, event_ids, [job for job, _ in pairs], [row for _, row in pairs])
    found = await conn.fetchrow(LOCK_AND_READ, *args)
    states = _states(found)
    if not _current(found, states):
        log.debug("a writer committed while we waited for its lock; reading again")
        found = await conn.fetchrow(LOCK_AND_READ, *args)
        states = _states(found)
    return Reads(states, _known(found), _recorded(found))


def _rows_reported(requests: Sequence[AppendRequest]) -> set[tuple[str, int]]:
    return {
        (request.job_id, row)
        for request in requests
        for row in rows_touched(item.event for item in request.items)
    }


def _states(found: asyncpg.Record | None) -> dict[str, JobState]:
    rows = orjson.loads(found["states"]) if found and found["states"] else []
    return {row[0]: state_from_row(row) for row in rows}


def _current(found: asyncpg.Record | None, states: dict[str, JobState]) -> bool:
    seen = orjson.loads(found["seen"]) if found and found["seen"] else {}
    return all(seen.get(job_id) == state.version for job_id, state in states.items())


def _known(found: asyncpg.Record | None) -> dict[str, tuple[str, Event]]:
    if found is None or found["known_ids"] is None:
        return {}
    columns = (
        found["known_ids"],
        found["known_jobs"],
        found["known_types"],
        found["known_schemas"],
        found["known_data"],
    )
    return {
        event_id: (job_id, decode_stored(kind, schema, data))
        for event_id, job_id, kind, schema, data in zip(*columns, strict=True)
    }


def _recorded(found: asyncpg.Record | None) -> dict[str, set[RowMark]]:
    marks: dict[str, set[RowMark]] = {}
    if found is not None and found["mark_jobs"] is not None:
        columns = (found["mark_jobs"], found["mark_rows"], found["mark_kinds"])
        for job_id, row, kind in zip(*columns, strict=True):
            marks.setdefault(job_id, set()).add(RowMark(row, kind))
    return marks


def plan_group(
    requests: Sequence[AppendRequest],
    states: dict[str, JobState],
    known: dict[str, tuple[str, Event]],
    recorded: dict[str, set[RowMark]],
) -> list[AppendPlan | JobtrackerError]:
    """Plan each request in order, as if those before it were already written (updates states)."""
    plans: list[AppendPlan | JobtrackerError] = []
    for request in requests:
        state = states.get(request.job_id)
        if state is None:
            plans.append(JobNotFound())
            continue
        prior = {
            item.event_id: known[item.event_id] for item in request.items if item.event_id in known
        }
        marks = recorded.setdefault(request.job_id, set())
        try:
            plan = plan_append(state, request.items, prior, marks)
        except JobtrackerError as exc:
            plans.append(exc)
            continue
        states[request.job_id] = plan.batch.state
        marks.update(plan.batch.marks)
        known.update((item.event_id, (request.job_id, item.event)) for item in plan.new)
        plans.append(plan)
    return plans


def _write_args(
    planned: Sequence[tuple[AppendRequest, AppendPlan]],
) -> tuple[str, str, str, list[tuple[Any, ...]]]:
    """The group's events, row marks and row errors as one JSON document per table, and its job
    rows as `job_write` values (see `pg_sql.WRITE_GROUP`)."""
    # Plain loops rather than generators: this runs for every request of every group.
    events: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    final: dict[str, JobState] = {}
    for request, plan in planned:
        job_id = request.job_id
        data = request.data
        version = plan.first_version
        for item in plan.new:
            kind, schema, _ = STORED_FORMS[type(item.event)]
            events.append(
                {"job_id": job_id, "version": version, "event_id": item.event_id, "type": kind,
                 "schema_version": schema, "data": orjson.Fragment(data[item.event_id])}
            )
            version += 1
        batch = plan.batch
        for row, mark_kind in batch.marks:
            marks.append({"job_id": job_id, "row": row, "kind": mark_kind})
        for e in batch.row_errors:
            errors.append({"job_id": job_id, "row": e.row, "email": e.email, "error": e.error})
        final[job_id] = batch.state
    return (
        orjson.dumps(events).decode(),
        orjson.dumps(marks).decode(),
        orjson.dumps(errors).decode(),
        [state_to_row(state) for state in final.values()],
    )


async def write_plans(
    conn: Conn, planned: Sequence[tuple[AppendRequest, AppendPlan]], started: dict[str, int]
) -> int | None:
    """Write the plans' events, marks, errors and job rows in one statement if every job is still
    at the version its plan was folded from (`started`); the newest position, or None when a job
    had moved on and nothing was written."""
    job_ids = sorted({request.job_id for request, _ in planned})
    versions = [started[job_id] for job_id in job_ids]
    written = await conn.fetchrow(
        WRITE_GROUP, POSITION_LOCK, APPEND_CHANNEL, *_write_args(planned), job_ids, versions
    )
    if written is None or not written["unchanged"]:
        return None
    return int(written["head"])


async def _plan_and_write(
    conn: Conn, requests: Sequence[AppendRequest], *, careful: bool
) -> tuple[list[Outcome], int]:
    """Inside a transaction: lock, read, plan and write."""
    reads = await lock_and_read(conn, requests, careful=careful)
    started = _versions(reads.states)
    plans = plan_group(requests, reads.states, reads.known, reads.recorded)
    if not careful and any(isinstance(plan, JobtrackerError) for plan in plans):
        # A refusal planned without marks may not be the one the fold gives first with them
        # (a row reported twice outranks a full total), and a re-sent batch may explain it (its
        # terminal event is what made the job terminal): plan again with everything read.
        reads = await lock_and_read(conn, requests, careful=True)
        started = _versions(reads.states)
        plans = plan_group(requests, reads.states, reads.known, reads.recorded)
    planned = [
        (request, plan)
        for request, plan in zip(requests, plans, strict=True)
        if isinstance(plan, AppendPlan) and plan.new
    ]
    head = await write_plans(conn, planned, started) if planned else 0
    if head is None:
        raise RuntimeError("a job's row changed while this transaction held its lock")
    return [_outcome(plan) for plan in plans], head


def _versions(states: dict[str, JobState]) -> dict[str, int]:
    return {job_id: state.version for job_id, state in states.items()}


def _outcome(plan: AppendPlan | JobtrackerError) -> Outcome:
    if isinstance(plan, JobtrackerError):
        return plan
    return AppendResult(len(plan.new), plan.duplicates, plan.batch.state.version)


#: Write errors one request can cause without breaking the transaction's connection.
_REQUEST_ERRORS = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError)


def _plan_unread(
    requests: Sequence[AppendRequest], states: dict[str, JobState], jobs: int
) -> list[AppendPlan] | None:
    """Every request's plan, folded as if the log held none of the group's event ids and none of
    its rows had an outcome (see `commit_group`); None if the fold refused one or one is empty.

    When each request is for a job of its own (`jobs` distinct ids), nothing one request does
    can change another's plan, so each is folded alone, without `plan_group`'s bookkeeping of
    what the group's earlier requests claimed: this runs for every request of every group.
    """
    if jobs < len(requests):
        plans = plan_group(requests, states, {}, {})
        fresh = [plan for plan in plans if isinstance(plan, AppendPlan) and plan.new]
        return fresh if len(fresh) == len(plans) else None
    planned: list[AppendPlan] = []
    for request in requests:
        state = states.get(request.job_id)
        if state is None:
            return None
        try:
            plan = plan_append(state, request.items, _NONE_KNOWN)
        except JobtrackerError:
            return None
        if not plan.new:
            return None
        states[request.job_id] = plan.batch.state
        planned.append(plan)
    return planned


_NONE_KNOWN: Mapping[str, tuple[str, Event]] = MappingProxyType({})


async def commit_in_one_statement(
    conn: Conn, requests: Sequence[AppendRequest], remembered: Remembered
) -> tuple[list[Outcome], int] | None:
    """The usual case in one round trip: plan from the jobs' remembered (or freshly read) states,
    then write and commit with `WRITE_GROUP` outside any transaction, so it is its own.

    None when this cannot answer for the group and wrote nothing: a request was refused (the
    careful path names the right refusal) or a job had moved on since its state was read. A
    write refused by a unique key (a re-sent batch, a row reported twice) raises, as it does in
    a transaction.
    """
    job_ids = sorted({request.job_id for request in requests})
    states = remembered.states(job_ids)
    missing = [job_id for job_id in job_ids if job_id not in states]
    if missing:
        rows = await conn.fetch(READ_JOBS, missing)
        states.update((row[0], state_from_row(tuple(row))) for row in rows)
    started = _versions(states)
    plans = _plan_unread(requests, states, len(job_ids))
    if plans is None:
        return None
    planned = list(zip(requests, plans, strict=True))
    try:
        head = await write_plans(conn, planned, started)
    except BaseException:
        remembered.forget(job_ids)
        raise
    if head is None:
        remembered.forget(job_ids)
        return None
    remembered.keep(states)
    return [_outcome(plan) for plan in plans], head


async def commit_group(
    conn: Conn,
    requests: Sequence[AppendRequest],
    before_commit: BeforeCommit,
    remembered: Remembered | None = None,
) -> tuple[list[Outcome], int]:
    """Commit a group; each request's outcome, and the newest position.

    With `remembered`, the group is first tried as one statement (`commit_in_one_statement`). A
    `before_commit` hook needs a transaction to pause in, so with one every group takes the
    transactional path.
    """
    # The fast paths plan as if the log held none of the batches' event ids and none of their
    # rows had an outcome: the usual case, and reading both would cost a lookup per event. The
    # unique keys on events.event_id and job_rows refuse exactly the writes those reads would
    # have prevented, so a plan made without them is right whenever its write succeeds. A re-sent
    # batch (a retry after a lost answer) or a row reported twice fails that write, and the redo
    # below plans with both reads, counts the duplicates and names the row.
    try:
        if remembered is not None and before_commit is no_pause:
            done = await commit_in_one_statement(conn, requests, remembered)
            if done is not None:
                return done
        async with conn.transaction():
            outcomes, head = await _plan_and_write(conn, requests, careful=False)
            await before_commit()
        return outcomes, head
    except _REQUEST_ERRORS as exc:
        # A conflicting transaction has committed by the time its conflict is reported, so the
        # redo plans against it and answers the request at fault with our own error.
        log.info("group of %d redone one request per savepoint: %s", len(requests), exc)
    async with conn.transaction():
        # every row lock first, in job-id order, as on the fast path
        await lock_and_read(conn, requests, careful=False)
        outcomes, head = await _one_savepoint_each(conn, requests)
        await before_commit()
    return outcomes, head


async def _one_savepoint_each(
    conn: Conn, requests: Sequence[AppendRequest]
) -> tuple[list[Outcome], int]:
    outcomes: list[Outcome] = []
    newest = 0
    for request in requests:
        try:
            async with conn.transaction():  # a SAVEPOINT: a failure here undoes this request only
                (outcome,), head = await _plan_and_write(conn, [request], careful=True)
        except _REQUEST_ERRORS as exc:
            outcomes.append(exc)
            continue
        newest = max(newest, head)
        outcomes.append(outcome)
    return outcomes, newest


async def once_more_if_cut(pool: asyncpg.Pool, call: Callable[[], Awaitable[T]]) -> T:
    """Run `call`; if its connection was cut under it, once more on fresh connections.

    A cut usually hits every pooled connection at once (a server restart), so all are replaced.
    Safe for reads, and for appends because they are idempotent by event id: if the first try
    did commit, the second reports its events as duplicates.
    """
    try:
        return await call()
    except CONNECTION_LOST:
        await pool.expire_connections()
        return await call()


async def no_pause() -> None:
    """The default `BeforeCommit`: commit at once."""
    return None


#: Groups in flight at once. One group's round trips (BEGIN, lock and read, write, COMMIT) leave
#: the database idle while Python plans and answers, and Python idle while the database works;
#: with two lanes one group's reads and planning overlap the other's write and COMMIT (positions
#: are still drawn one transaction at a time, under the position lock).
LANES = 2
#: Opens a connection of a lane's own.
Connect: TypeAlias = "Callable[[], Awaitable[asyncpg.Connection[asyncpg.Record]]]"


class _LaneConnection:
    """A lane's own connection, opened when first needed and again after a cut.

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
        self, requests: Sequence[AppendRequest], lane: _LaneConnection | None = None
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
        lane = _LaneConnection(self._connect)
        try:
            await self._run_lane(lane)
        finally:
            await lane.close()

    async def _run_lane(self, lane: _LaneConnection) -> None:
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

    async def _commit_and_answer(self, group: list[_Waiting], lane: _LaneConnection) -> None:
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
