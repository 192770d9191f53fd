"""Writing prepared events straight into SQLite's lean log, for benchmarks that fill a file fast.

Rows come as the old layout held them, (job_id, version, event_id, type, schema_version, JSON
object, recorded_at), and are stored as the store stores them (`domain/stored.py`); a `created`
event's job is filed in the inventory (`job_index`, `job_labels`) as the store's creating write
files it (`store/sqlite/group.file_created`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import orjson

from jobtracker.domain.stored import form_code, pack_event_id, pack_time, positional_data
from jobtracker.store.sqlite.group import file_created

_INSERT = "INSERT INTO log (job_key, version, event_id, type, data, at) VALUES (?, ?, ?, ?, ?, ?)"


def write_rows(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> int:
    """Write `rows` in order, adding their jobs to `log_jobs` as they first appear; how many."""
    rows = list(rows)
    job_ids = list(dict.fromkeys(row[0] for row in rows))
    conn.executemany("INSERT OR IGNORE INTO log_jobs (job_id) VALUES (?)",
                     [(job_id,) for job_id in job_ids])
    keys = dict(conn.execute(
        "SELECT job_id, job_key FROM log_jobs WHERE job_id IN (SELECT value FROM json_each(?))",
        (orjson.dumps(job_ids).decode(),)))
    conn.executemany(_INSERT, [
        (keys[job_id], version, pack_event_id(event_id, bytearray), form_code(kind, schema),
         positional_data(kind, schema, data), pack_time(recorded_at))
        for job_id, version, event_id, kind, schema, data, recorded_at in rows])
    created = [(job_id, orjson.loads(data), recorded_at)
               for job_id, _, _, kind, _, data, recorded_at in rows if kind == "created"]
    file_created(conn, [(job_id, fields["owner"], fields.get("labels"), at)
                        for job_id, fields, at in created])
    return len(rows)
