"""A group of appends written with a handful of statements, whatever its size.

Under group commit one transaction holds many small requests. Written one by one, each costs about
six statements (savepoint, state, events, row marks, projection, release), every one a trip
through the sqlite3 module with the GIL held. Nearly every group is plain: new events for rows
with no outcome yet. For that case the whole group is planned in Python first, each request on the
state the previous one left, and then written with one `executemany` per table. Anything unusual
(a refusal, a re-sent event id, a row reported twice) makes `write_together` give up, and the
caller undoes it and takes the careful path, one savepoint per request.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from jobtracker.codec import encode_fields, stored_version
from jobtracker.errors import JobtrackerError
from jobtracker.projection import plan_append
from jobtracker.state import JobState
from jobtracker.store.base import AppendResult
from jobtracker.store.group import AppendRequest
from jobtracker.store.rows import JOB_COLUMNS, state_from_row, state_to_row

_SELECT_JOBS = (
    f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs "  # noqa: S608
    "WHERE job_id IN (SELECT value FROM json_each(?))"
)
# The job's newest event is the one at its version: its position is what the projection keeps.
_UPSERT_JOB_AT_VERSION = (
    f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}, updated_position) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(JOB_COLUMNS))}, "
    "(SELECT position FROM events WHERE job_id = ? AND version = ?)) "
    "ON CONFLICT (job_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*JOB_COLUMNS[1:], "updated_position"))
)
#: One event row; `sqlite_log` writes single appends with it too.
INSERT_EVENT = (
    "INSERT INTO events (job_id, version, event_id, type, schema_version, data, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class NotPlain(Exception):
    """The group needs the careful path: some request is not a plain append of new events."""


def write_together(
    conn: sqlite3.Connection, requests: Sequence[AppendRequest], now: str
) -> list[AppendResult]:
    """Plan every request, then write the group; raises `NotPlain` (or an IntegrityError a
    unique key raised) when the careful path must decide. The caller undoes any partial write."""
    states = _states(conn, {job_id for job_id, _ in requests})
    events: list[tuple[Any, ...]] = []
    marks: list[tuple[str, int, str]] = []
    errors: list[tuple[str, int, str, str]] = []
    results: list[AppendResult] = []
    for job_id, items in requests:
        state = states.get(job_id)
        if state is None:
            raise NotPlain(job_id)
        try:
            plan = plan_append(state, items, {}, frozenset())
        except JobtrackerError as exc:  # a re-send may explain a refusal: the careful path sees
            raise NotPlain(job_id) from exc
        events.extend(
            (job_id, version, it.event_id, it.event.TYPE, stored_version(it.event),
             encode_fields(it.event), now)
            for version, it in enumerate(plan.new, start=plan.first_version)
        )
        marks.extend((job_id, mark.row, mark.kind) for mark in plan.batch.marks)
        errors.extend((job_id, e.row, e.email, e.error) for e in plan.batch.row_errors)
        states[job_id] = plan.batch.state
        results.append(AppendResult(len(plan.new), plan.duplicates, plan.batch.state.version))
    _write(conn, events, marks, errors, states)
    return results


def _states(conn: sqlite3.Connection, job_ids: set[str]) -> dict[str, JobState]:
    found = conn.execute(_SELECT_JOBS, (orjson.dumps(sorted(job_ids)).decode(),))
    return {row[0]: state_from_row(row) for row in found}


def _write(
    conn: sqlite3.Connection,
    events: list[tuple[Any, ...]],
    marks: list[tuple[str, int, str]],
    errors: list[tuple[str, int, str, str]],
    states: dict[str, JobState],
) -> None:
    if not events:
        return  # every request was all duplicates of itself: nothing to write
    conn.executemany(INSERT_EVENT, events)
    if marks:
        conn.executemany("INSERT INTO job_rows (job_id, row, kind) VALUES (?, ?, ?)", marks)
    if errors:
        conn.executemany(
            "INSERT INTO job_errors (job_id, row, email, error) VALUES (?, ?, ?, ?)", errors
        )
    touched = {row[0] for row in events}
    conn.executemany(
        _UPSERT_JOB_AT_VERSION,
        [(*state_to_row(states[job_id]), job_id, states[job_id].version) for job_id in touched],
    )
