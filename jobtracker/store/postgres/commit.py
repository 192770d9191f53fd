"""The PostgreSQL append path: group commit, the pure fold checked under row locks, one write.

Concurrent appends that reach one process are committed together. The usual group takes one round
trip: each request is planned with `plan_append` against the state its predecessors in the group
left, starting from the jobs' states as this process's last commit left them (read when it has
none), and one statement, its own transaction, locks the jobs' rows in job-id order, checks that
no job moved on since, and writes every new event, row mark, row error and job row. When a job
did move on, or the fold refuses a request, the group goes the transactional way: lock the rows,
read, plan, write, COMMIT. Each request is acknowledged only after its commit. A request the fold
refuses never touches the database, so it cannot sink its neighbours. Both ways leave re-sent
event ids and rows reported twice to the database's constraints: such a write aborts, and the
group is redone one request per SAVEPOINT with everything read, so only the request at fault
hears about it (and a re-send is answered as duplicates).

Driver exceptions are not translated here: they reach the caller's `await`, which sits inside the
store's one translation (`postgres.unavailable`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TypeAlias, TypeVar

import asyncpg

from jobtracker.domain.errors import JobtrackerError
from jobtracker.domain.events import Event
from jobtracker.domain.projection import AppendPlan, plan_append
from jobtracker.domain.state import JobState
from jobtracker.store.base import AppendResult, result_of
from jobtracker.store.postgres.plan import (
    AppendRequest,
    Conn,
    lock_and_read,
    plan_group,
    write_plans,
)
from jobtracker.store.postgres.row_bits import RowMarkedTwice
from jobtracker.store.postgres.sql import (
    READ_JOBS,
)
from jobtracker.store.rows import Remembered, state_from_row

log = logging.getLogger(__name__)

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
    return result_of(plan)


#: Write errors one request can cause without breaking the transaction's connection.
_REQUEST_ERRORS = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError, RowMarkedTwice)


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
    then write and commit with `sql.write_group` outside any transaction, so it is its own.

    None when this cannot answer for the group and wrote nothing: a request was refused (the
    careful path names the right refusal) or a job had moved on since its state was read. A
    write refused by a constraint (a re-sent batch, a row reported twice) raises, as it does in
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
    # unique keys on the event ids (`log_ids`, `log_text_ids`) and job_row_bits' check (no bit
    # set twice, see `sql.write_group`) refuse exactly the writes those reads would have
    # prevented, so a plan made without them is right whenever its write succeeds. A re-sent
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


