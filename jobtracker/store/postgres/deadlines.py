"""PostgreSQL's watch over unfinished jobs: the `job_deadlines` table (migration 0006).

One row per watched job, indexed by its next check, so a sweep reads only the rows that are due
(an index range scan, however many jobs are running). Heartbeats and the sweep's reschedules are
small batched statements; none of them touches `jobs` or the log, so none waits for an append.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from jobtracker.domain.control import Deadline, cancel_event_id
from jobtracker.domain.events import Created
from jobtracker.domain.state import Status
from jobtracker.store.deadlines import new_watch
from jobtracker.store.postgres.driver import PoolSide
from jobtracker.store.postgres.plan import Conn

WATCH = (
    "INSERT INTO job_deadlines "
    "(job_id, heartbeat_timeout, timeout, timeout_at, heartbeat_at, next_check) "
    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (job_id) DO NOTHING"
)
DUE = """
SELECT d.job_id, j.status, j.cancel_requested, d.heartbeat_timeout, d.timeout, d.timeout_at,
       d.heartbeat_at, extract(epoch FROM e.recorded_at) AS last_event_at
FROM job_deadlines d
LEFT JOIN jobs j ON j.job_id = d.job_id
LEFT JOIN log_jobs k ON k.job_id = d.job_id
-- a job's newest event ends the newest of its batches
LEFT JOIN log e ON e.job_key = k.job_key AND e.last_version = j.version
WHERE d.next_check <= $1
ORDER BY d.next_check
LIMIT $2
"""
SETTLE = """
WITH gone AS (
    DELETE FROM job_deadlines WHERE job_id = ANY($1::text[])
)
UPDATE job_deadlines d SET next_check = s.at
FROM unnest($2::text[], $3::float8[]) AS s(job_id, at)
WHERE d.job_id = s.job_id
"""
HEARTBEATS = """
UPDATE job_deadlines d SET heartbeat_at = greatest(coalesce(d.heartbeat_at, 0), s.at)
FROM unnest($1::text[], $2::float8[]) AS s(job_id, at)
WHERE d.job_id = s.job_id
"""
# The batch holding the event of that id (its time is the batch's).
CANCEL_ASKED = """
SELECT extract(epoch FROM b.recorded_at)
FROM (SELECT coalesce((SELECT position FROM log_ids WHERE event_id = log_uuid($1)),
                      (SELECT position FROM log_text_ids WHERE event_id = $1)) AS position) AS x
CROSS JOIN LATERAL (
    SELECT recorded_at FROM log WHERE last_position >= x.position ORDER BY last_position LIMIT 1
) AS b
"""
CHECK_BY = "UPDATE job_deadlines SET next_check = least(next_check, $2) WHERE job_id = $1"


async def watch(conn: Conn, job_id: str, created: Created, now: float) -> None:
    """Start watching a job created at `now` (in the creating transaction)."""
    w = new_watch(created, now)
    await conn.execute(
        WATCH, job_id, w.heartbeat_timeout, w.timeout, w.timeout_at, w.heartbeat_at, w.next_check
    )


def _deadline(row: asyncpg.Record, asked: object) -> Deadline:
    status, last = row["status"], row["last_event_at"]
    return Deadline(
        row["job_id"], None if status is None else Status(status), bool(row["cancel_requested"]),
        row["heartbeat_timeout"], row["timeout"], row["timeout_at"], row["heartbeat_at"],
        None if last is None else float(last), None if asked is None else float(str(asked)),
    )


async def due(conn: Conn, now: float, limit: int) -> list[Deadline]:
    """Watched jobs whose next check is at or before `now`, soonest first (a cancel's time is
    read by its event's id, for the few jobs one is pending on)."""
    found = []
    for row in await conn.fetch(DUE, now, limit):
        asked = None
        if row["cancel_requested"]:
            asked = await conn.fetchval(CANCEL_ASKED, cancel_event_id(row["job_id"]))
        found.append(_deadline(row, asked))
    return found


async def settle(conn: Conn, next_checks: Mapping[str, float | None]) -> None:
    """Move next checks, or stop watching (None), in one statement."""
    gone = [job_id for job_id, at in next_checks.items() if at is None]
    moved = [(job_id, at) for job_id, at in next_checks.items() if at is not None]
    await conn.execute(
        SETTLE, gone, [job_id for job_id, _ in moved], [at for _, at in moved]
    )


async def record_heartbeats(conn: Conn, beats: Mapping[str, float]) -> None:
    """Keep the newest heartbeat of each watched job, in one statement."""
    await conn.execute(HEARTBEATS, list(beats), list(beats.values()))


async def check_by(conn: Conn, job_id: str, at: float) -> None:
    """Look at the job no later than `at`."""
    await conn.execute(CHECK_BY, job_id, at)


class DeadlineSide(PoolSide):
    """The `Store` methods of job control for `PostgresStore`, which supplies `_open_pool`."""

    async def due_deadlines(self, now: float, limit: int) -> list[Deadline]:
        """See `Store.due_deadlines`."""
        return await self._on_connection("reading due jobs", lambda c: due(c, now, limit))

    async def settle_deadlines(self, next_checks: Mapping[str, float | None]) -> None:
        """See `Store.settle_deadlines`."""
        await self._on_connection("rescheduling checks", lambda c: settle(c, next_checks))

    async def record_heartbeats(self, beats: Mapping[str, float]) -> None:
        """See `Store.record_heartbeats`."""
        await self._on_connection("recording heartbeats", lambda c: record_heartbeats(c, beats))

    async def check_by(self, job_id: str, at: float) -> None:
        """See `Store.check_by`."""
        await self._on_connection("scheduling a check", lambda c: check_by(c, job_id, at))
