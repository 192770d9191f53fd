"""Planning a group of appends on PostgreSQL: encode, lock and read, fold, and one write.

`plan_group` folds each request with the pure `plan_append` against the state its predecessors
in the group left; `write_plans` sends the whole group's events, row marks, row errors and job
rows in one statement that checks, under the jobs' row locks, that none moved on meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeAlias

import asyncpg
import attrs
import orjson
from asyncpg.pool import PoolConnectionProxy

from jobtracker.domain.codec import decode_stored
from jobtracker.domain.errors import InvalidInput, JobNotFound, JobtrackerError
from jobtracker.domain.events import Event, NewEvent
from jobtracker.domain.projection import AppendPlan, plan_append, rows_touched
from jobtracker.domain.state import JobState, RowMark
from jobtracker.domain.stored import encode_data, form_of
from jobtracker.store.postgres import lean, row_bits
from jobtracker.store.postgres.sql import (
    APPEND_CHANNEL,
    ERRORS,
    LOCK_AND_READ,
    LOCK_JOBS,
    MARKS,
    ONE_JOB,
    POSITION_LOCK,
    write_group,
)
from jobtracker.store.rows import state_from_row, state_to_row

log = logging.getLogger(__name__)

#: A connection of our own or one lent by the pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class AppendRequest(NamedTuple):
    """One caller's batch, with each event's fields already encoded for the log (the positional
    form of `domain/stored.py`)."""

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
            data[item.event_id] = encode_data(item.event)
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
    to the constraints, see `commit_group`).

    One round trip. The careful read takes a second one if a writer committed to these jobs while
    we waited for their locks (see `sql.LOCK_AND_READ`), to see what it wrote; the fast read
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
    columns = (found["known_ids"], found["known_jobs"], found["known_types"], found["known_data"])
    known: dict[str, tuple[str, Event]] = {}
    for event_id, job_id, form, data in zip(*columns, strict=True):
        kind, schema = form_of(int(form) if form.isdigit() else form)
        known[event_id] = (job_id, decode_stored(kind, schema, data))
    return known


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


class WriteArgs(NamedTuple):
    """A group's parameters of `sql.write_group`, $3 to $6, $9 and $10, and its shape (marks
    and errors are None when it has none, and its shape says so)."""

    batches: str
    marks: str | None
    errors: str | None
    jobs: list[tuple[Any, ...]]
    total: int
    heads: list[int]
    shape: int


def _write_args(planned: Sequence[tuple[AppendRequest, AppendPlan]]) -> WriteArgs:
    """The group's events (a `log` row per request, see `lean.batch`), row marks (as bits) and row
    errors as one JSON document per table, and its job rows as `job_write` values with each one's
    newest event counted from the group's first (see `sql.write_group`)."""
    # Plain loops rather than generators: this runs for every request of every group.
    batches: list[dict[str, Any]] = []
    marks: row_bits.Bits = {}
    errors: list[dict[str, Any]] = []
    final: dict[str, JobState] = {}
    heads: dict[str, int] = {}
    shape = 0
    upto = 0
    for request, plan in planned:
        job_id = request.job_id
        upto += len(plan.new)
        row, form = lean.batch(job_id, plan.first_version, plan.new, request.data, upto)
        batches.append(row)
        shape |= form
        batch = plan.batch
        row_bits.add(marks, job_id, batch.marks)
        for e in batch.row_errors:
            errors.append({"job_id": job_id, "row": e.row, "email": e.email, "error": e.error})
        final[job_id] = batch.state
        heads[job_id] = upto
    if len(final) == 1:
        shape |= ONE_JOB
    if marks:
        shape |= MARKS
    if errors:
        shape |= ERRORS
    return WriteArgs(
        orjson.dumps(batches).decode(),
        orjson.dumps(row_bits.as_json(marks)).decode() if marks else None,
        orjson.dumps(errors).decode() if errors else None,
        [state_to_row(state) for state in final.values()],
        upto,
        [heads[job_id] for job_id in final],
        shape,
    )


async def write_plans(
    conn: Conn, planned: Sequence[tuple[AppendRequest, AppendPlan]], started: dict[str, int]
) -> int | None:
    """Write the plans' events, marks, errors and job rows in one statement if every job is still
    at the version its plan was folded from (`started`); the newest position, or None when a job
    had moved on and nothing was written."""
    job_ids = sorted({request.job_id for request, _ in planned})
    versions = [started[job_id] for job_id in job_ids]
    args = _write_args(planned)
    written = await conn.fetchrow(
        write_group(args.shape), POSITION_LOCK, APPEND_CHANNEL, args.batches, args.marks,
        args.errors, args.jobs, job_ids, versions, args.total, args.heads,
    )
    if written is None:
        # The statement's one row is missing only where a parameter the shape leaves out was
        # sent (`sql.write_group`): a bug here, never a job that moved on, so never retried.
        raise RuntimeError(f"the write statement of shape {args.shape} returned no row")
    if not written["unchanged"]:
        return None
    return int(written["head"])
