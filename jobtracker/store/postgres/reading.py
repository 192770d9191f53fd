"""A job's view read from one pool: the primary's store and a standby's read-only view share it."""

from __future__ import annotations

import asyncpg

from jobtracker.domain.state import RowError, Status
from jobtracker.store.base import JobView
from jobtracker.store.postgres.commit import once_more_if_cut
from jobtracker.store.postgres.driver import driver_errors
from jobtracker.store.postgres.plan import storable
from jobtracker.store.postgres.sql import SELECT_JOB
from jobtracker.store.rows import state_from_row

_SELECT_ERRORS = "SELECT row, email, error FROM job_errors WHERE job_id = $1 ORDER BY row LIMIT $2"


async def read_job(pool: asyncpg.Pool, job_id: str, errors_limit: int) -> JobView | None:
    """The projection of one job; row errors are read only for a SUCCESS body."""
    if not storable(job_id):
        return None
    async with driver_errors("reading a job"):
        row = await once_more_if_cut(pool, lambda: pool.fetchrow(SELECT_JOB, job_id))
        if row is None:
            return None
        state = state_from_row(tuple(row))
        if state.status is not Status.SUCCESS or state.failed == 0:
            return JobView(state)
        rows = await once_more_if_cut(
            pool, lambda: pool.fetch(_SELECT_ERRORS, job_id, errors_limit)
        )
    return JobView(state, tuple(RowError(*r) for r in rows))
