"""Migration 0007's data step: the old `events` table copied into the lean `log`, in batches.

Each batch is one transaction that starts after the highest position already copied, so a copy
cut short (a crash, a kill) goes on from there the next time the file is opened. Positions stay
the same: the projection's `updated_position`, the change feed's cursors and webhook cursors all
point at them.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from jobtracker.domain.stored import form_code, pack_event_id, pack_time, positional_data
from jobtracker.store.migrate import migrate_sqlite

log = logging.getLogger(__name__)

#: Events copied per transaction.
BATCH = 50_000
LEAN_LOG = "0007_lean_log"

_READ = (
    "SELECT position, job_id, version, event_id, type, schema_version, data, recorded_at "
    "FROM events WHERE position > ? ORDER BY position LIMIT ?"
)
_WRITE = (
    "INSERT INTO log (position, job_key, version, event_id, type, at, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the log file's missing migrations, with their data steps; their names."""
    return migrate_sqlite(conn, "sqlite", {LEAN_LOG: copy_batch})


def copy_batch(conn: sqlite3.Connection, batch: int = BATCH) -> int:
    """Inside a write transaction: copy the next `batch` events; how many were copied."""
    (done,) = conn.execute("SELECT coalesce(max(position), 0) FROM log").fetchone()
    rows = conn.execute(_READ, (done, batch)).fetchall()
    if not rows:
        return 0
    keys = _job_keys(conn, [row[1] for row in rows])
    # Events of one commit share their time stamp: convert each distinct one once.
    at = functools.lru_cache(maxsize=1024)(pack_time)
    conn.executemany(_WRITE, [_lean(row, keys, at) for row in rows])
    (last,) = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
    log.info("lean log: copied events up to position %d of %d", rows[-1][0], last)
    return len(rows)


def _job_keys(conn: sqlite3.Connection, job_ids: Sequence[str]) -> dict[str, int]:
    """Each job's key, adding the jobs seen for the first time in order of appearance."""
    distinct = list(dict.fromkeys(job_ids))
    conn.executemany("INSERT OR IGNORE INTO log_jobs (job_id) VALUES (?)",
                     [(job_id,) for job_id in distinct])
    found = conn.execute(
        "SELECT job_id, job_key FROM log_jobs WHERE job_id IN (SELECT value FROM json_each(?))",
        (orjson.dumps(distinct).decode(),),
    )
    return dict(found)


def _lean(row: Sequence[Any], keys: dict[str, int], at: Any) -> tuple[Any, ...]:
    position, job_id, version, event_id, kind, schema, data, recorded_at = row
    return (position, keys[job_id], version, pack_event_id(event_id, bytearray),
            form_code(kind, schema), at(recorded_at), positional_data(kind, schema, data))
