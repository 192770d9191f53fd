"""SQLite's watch over unfinished jobs: the `job_deadlines` table (migration 0005).

One row per watched job, indexed by its next check, so a sweep reads only the rows that are due.
Every function runs inside the caller's transaction on the caller's connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from jobtracker.domain.control import Deadline, cancel_event_id
from jobtracker.domain.events import Created
from jobtracker.domain.state import Status
from jobtracker.domain.stored import pack_event_id, unpack_time
from jobtracker.store.deadlines import epoch_of, new_watch

_INSERT = (
    "INSERT OR IGNORE INTO job_deadlines "
    "(job_id, heartbeat_timeout, timeout, timeout_at, heartbeat_at, next_check) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_DUE = """
SELECT d.job_id, j.status, j.cancel_requested, d.heartbeat_timeout, d.timeout, d.timeout_at,
       d.heartbeat_at,
       (SELECT e.at FROM log e WHERE e.position = j.updated_position)
FROM job_deadlines d LEFT JOIN jobs j ON j.job_id = d.job_id
WHERE d.next_check <= ?
ORDER BY d.next_check
LIMIT ?
"""
_CANCEL_ASKED = "SELECT at FROM log WHERE event_id = ?"


def watch(conn: sqlite3.Connection, job_id: str, created: Created, now: float) -> None:
    """Start watching a job created at `now` (in the creating transaction)."""
    w = new_watch(created, now)
    conn.execute(
        _INSERT, (job_id, w.heartbeat_timeout, w.timeout, w.timeout_at, w.heartbeat_at,
                  w.next_check),
    )


def due(conn: sqlite3.Connection, now: float, limit: int) -> list[Deadline]:
    """Watched jobs whose next check is at or before `now`, soonest first."""
    found = []
    for job_id, status, cancel, heartbeat, timeout, timeout_at, beat_at, last_at in conn.execute(
        _DUE, (now, limit)
    ):
        asked = None
        if cancel:
            row = conn.execute(_CANCEL_ASKED, (pack_event_id(cancel_event_id(job_id), bytearray),))
            asked = _epoch(row.fetchone())
        found.append(Deadline(
            job_id, None if status is None else Status(status), bool(cancel), heartbeat,
            timeout, timeout_at, beat_at, _epoch((last_at,)), asked,
        ))
    return found


def _epoch(row: tuple[int | str | None] | None) -> float | None:
    """A stored time (the first column of `row`, if any) as epoch seconds."""
    return None if row is None or row[0] is None else epoch_of(unpack_time(row[0]))


def settle(conn: sqlite3.Connection, next_checks: Mapping[str, float | None]) -> None:
    """Move next checks, or stop watching (None)."""
    conn.executemany(
        "DELETE FROM job_deadlines WHERE job_id = ?",
        [(job_id,) for job_id, at in next_checks.items() if at is None],
    )
    conn.executemany(
        "UPDATE job_deadlines SET next_check = ? WHERE job_id = ?",
        [(at, job_id) for job_id, at in next_checks.items() if at is not None],
    )


def record_heartbeats(conn: sqlite3.Connection, beats: Mapping[str, float]) -> None:
    """Keep the newest heartbeat of each watched job."""
    conn.executemany(
        "UPDATE job_deadlines SET heartbeat_at = max(coalesce(heartbeat_at, 0), ?) "
        "WHERE job_id = ?",
        [(at, job_id) for job_id, at in beats.items()],
    )


def check_by(conn: sqlite3.Connection, job_id: str, at: float) -> None:
    """Look at the job no later than `at`."""
    conn.execute(
        "UPDATE job_deadlines SET next_check = min(next_check, ?) WHERE job_id = ?", (at, job_id)
    )
