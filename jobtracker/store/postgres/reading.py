"""A job's view, for the primary's store and a standby's read-only view alike: its state through
a `batch_read.BatchReader`, with the row errors a SUCCESS body shows read from a pool."""

from __future__ import annotations

import asyncpg

from jobtracker.domain.state import JobState, RowError, Status
from jobtracker.store.base import JobView
from jobtracker.store.postgres.batch_read import BatchReader
from jobtracker.store.postgres.commit import once_more_if_cut
from jobtracker.store.postgres.driver import driver_errors
from jobtracker.store.postgres.plan import storable

_SELECT_ERRORS = "SELECT row, email, error FROM job_errors WHERE job_id = $1 ORDER BY row LIMIT $2"


async def read_job(
    reader: BatchReader, pool: asyncpg.Pool, job_id: str, errors_limit: int
) -> JobView | None:
    """The projection of one job, read by a query that started after this call; row errors are
    read only for a SUCCESS body (no second await on the polling path)."""
    if not storable(job_id):
        return None
    state = await reader.state(job_id)
    if state is None or not lists_errors(state):
        return None if state is None else JobView(state)
    return await with_errors(pool, state, errors_limit)


def lists_errors(state: JobState) -> bool:
    """Whether `state`'s body lists row errors (a SUCCESS that has any), which are read apart."""
    return state.status is Status.SUCCESS and state.failed > 0


async def with_errors(
    pool: asyncpg.Pool, state: JobState | None, errors_limit: int
) -> JobView | None:
    """`state`'s view, with its first `errors_limit` row errors when its body lists them, read
    from `pool`."""
    if state is None:
        return None
    if not lists_errors(state):
        return JobView(state)
    job_id = state.job_id
    async with driver_errors("reading a job"):
        rows = await once_more_if_cut(
            pool, lambda: pool.fetch(_SELECT_ERRORS, job_id, errors_limit)
        )
    return JobView(state, tuple(RowError(*r) for r in rows))
