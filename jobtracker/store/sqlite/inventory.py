"""Listing a key's jobs and pruning finished ones, on SQLite (CONTRACT.md, "Inventory").

A listing reads one range of an index, newest first, and stops at the page's end: its cost does
not grow with the number of jobs the key has. Without a label filter that range is the key's part
of `job_index`; with one, the key's part of `job_labels` for the first label (far fewer rows), the
other labels checked per job. A status filter is checked per job on the way.

A prune is one short write transaction per batch: readers (WAL) never wait for it, and an append
waits at most one batch. The pages it frees go on SQLite's free list, and new appends take them
before the file grows.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from jobtracker.domain.errors import InvalidInput
from jobtracker.domain.listing import Cursor, JobQuery
from jobtracker.domain.state import Status
from jobtracker.domain.stored import micros_of, unpack_time
from jobtracker.store.base import JobListing, Pruned, Tombstone, utc_now
from jobtracker.store.rows import JOB_COLUMNS, state_from_row

_JOB = ", ".join(f"j.{column}" for column in JOB_COLUMNS)
_TERMINAL = (Status.SUCCESS.value, Status.FAILURE.value)


def list_jobs(
    conn: sqlite3.Connection, owner: str, query: JobQuery, after: Cursor | None, limit: int
) -> list[JobListing]:
    """`owner`'s jobs matching `query`, newest first, strictly below `after`."""
    sql, params = _listing_sql(owner, query, after, limit)
    return [
        JobListing(state_from_row(row[:-3]), _labels(row[-3]), row[-2], unpack_time(row[-1]))
        for row in conn.execute(sql, params)
    ]


def _labels(text: str | None) -> tuple[tuple[str, str], ...] | None:
    return None if text is None else tuple(sorted(orjson.loads(text).items()))


def _listing_sql(
    owner: str, query: JobQuery, after: Cursor | None, limit: int
) -> tuple[str, list[Any]]:
    labels = list(query.labels)
    where, params = ["d.owner = ?"], list[Any]([owner])
    if labels:  # driven by the first label's rows; the index row gives the labels
        key, value = labels.pop(0)
        source = "job_labels d JOIN job_index i ON i.job_id = d.job_id"
        where += ["d.key = ?", "d.value = ?"]
        params += [key, value]
    else:
        source = "job_index d"
    if after is not None:
        where.append("(d.created_at, d.job_id) < (?, ?)")
        params += [after.created_at, after.job_id]
    if query.created_after is not None:
        where.append("d.created_at > ?")
        params.append(query.created_after)
    if query.created_before is not None:
        where.append("d.created_at < ?")
        params.append(query.created_before)
    if query.statuses:
        where.append(f"j.status IN ({', '.join('?' * len(query.statuses))})")
        params += [status.value for status in query.statuses]
    for key, value in labels:
        where.append(
            "EXISTS (SELECT 1 FROM job_labels l WHERE l.owner = d.owner AND l.key = ? "
            "AND l.value = ? AND l.created_at = d.created_at AND l.job_id = d.job_id)"
        )
        params += [key, value]
    params.append(limit)
    labels_column = "i.labels" if query.labels else "d.labels"
    sql = (
        f"SELECT {_JOB}, {labels_column}, d.created_at, e.at "  # noqa: S608
        f"FROM {source} JOIN jobs j ON j.job_id = d.job_id "
        "JOIN log e ON e.position = j.updated_position "
        f"WHERE {' AND '.join(where)} ORDER BY d.created_at DESC, d.job_id DESC LIMIT ?"
    )
    return sql, params


def find_tombstone(conn: sqlite3.Connection, job_id: str) -> Tombstone | None:
    """The tombstone a pruned job left."""
    row = conn.execute(
        "SELECT job_id, owner, finished_at FROM job_tombstones WHERE job_id = ?", (job_id,)
    ).fetchone()
    return None if row is None else Tombstone(*row)


# ?4 is the cutoff in the log's microseconds; a time kept as text (one that did not convert
# exactly) is compared as text.
_CANDIDATES = (
    "SELECT j.job_id, j.owner, e.at, j.version "
    "FROM job_index i JOIN jobs j ON j.job_id = i.job_id "
    "JOIN log e ON e.position = j.updated_position "
    "WHERE i.created_at < ?1 AND j.status IN (?2, ?3) "
    "AND CASE typeof(e.at) WHEN 'integer' THEN e.at < ?4 ELSE e.at < ?1 END "
    "ORDER BY i.created_at"
)


def _cutoffs(finished_before: str) -> tuple[str, str, str, int]:
    micros = micros_of(finished_before)
    if micros is None:
        raise InvalidInput(f"finished_before: {finished_before!r} is not a log time stamp")
    return (finished_before, *_TERMINAL, micros)


def count_prunable(conn: sqlite3.Connection, finished_before: str) -> Pruned:
    """How many jobs (and their events: a job's version is its event count) a prune would take."""
    jobs, events = conn.execute(
        f"SELECT count(*), coalesce(sum(version), 0) FROM ({_CANDIDATES})",  # noqa: S608
        _cutoffs(finished_before),
    ).fetchone()
    return Pruned(jobs, events)


# Every table that holds something of a job, keyed by its id (`job_labels` is keyed by owner
# first, and is cleared from the index's copy of the labels before the index goes).
_CLEAR = (
    "DELETE FROM job_labels WHERE (owner, key, value, created_at, job_id) IN ("
    "SELECT i.owner, l.key, l.value, i.created_at, i.job_id "
    "FROM job_index i, json_each(i.labels) l "
    "WHERE i.job_id IN (SELECT value FROM json_each(?1)))",
    "DELETE FROM log WHERE job_key IN (SELECT job_key FROM log_jobs "
    "WHERE job_id IN (SELECT value FROM json_each(?1)))",
    "DELETE FROM log_jobs WHERE job_id IN (SELECT value FROM json_each(?1))",
    "DELETE FROM job_row_bits WHERE job_id IN (SELECT value FROM json_each(?1))",
    "DELETE FROM job_errors WHERE job_id IN (SELECT value FROM json_each(?1))",
    "DELETE FROM job_deadlines WHERE job_id IN (SELECT value FROM json_each(?1))",
    "DELETE FROM job_index WHERE job_id IN (SELECT value FROM json_each(?1))",
    "DELETE FROM jobs WHERE job_id IN (SELECT value FROM json_each(?1))",
)


def prune(conn: sqlite3.Connection, finished_before: str, limit: int) -> Pruned:
    """Inside a write transaction: remove up to `limit` of the oldest jobs finished before
    `finished_before`, each leaving a tombstone first (the log's trigger refuses otherwise)."""
    chosen = conn.execute(f"{_CANDIDATES} LIMIT ?5", (*_cutoffs(finished_before), limit)).fetchall()
    if not chosen:
        return Pruned()
    now = utc_now()
    conn.executemany(
        "INSERT INTO job_tombstones (job_id, owner, finished_at, pruned_at) VALUES (?, ?, ?, ?)",
        [(job_id, owner, unpack_time(finished), now) for job_id, owner, finished, _ in chosen],
    )
    ids = orjson.dumps([job_id for job_id, *_ in chosen]).decode()
    for statement in _CLEAR:
        conn.execute(statement, (ids,))
    return Pruned(len(chosen), sum(version for *_, version in chosen))


def pruned_since(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[tuple[int, str]]:
    """Tombstones numbered after `after_seq`, oldest first."""
    return conn.execute(
        "SELECT seq, job_id FROM job_tombstones WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    ).fetchall()


def forget_cursors(conn: sqlite3.Connection) -> tuple[int, int]:
    """The newest tombstone's and replay swap's numbers (0 for none)."""
    tombstone, swap = conn.execute(_FORGET_CURSORS).fetchone()
    return int(tombstone), int(swap)


_FORGET_CURSORS = (
    "SELECT (SELECT coalesce(max(seq), 0) FROM job_tombstones), "
    "(SELECT coalesce(max(seq), 0) FROM projection_swaps)"
)


def swaps_since(
    conn: sqlite3.Connection, after_seq: int, limit: int
) -> list[tuple[int, str | None]]:
    """Replay swaps numbered after `after_seq`, oldest first."""
    return conn.execute(
        "SELECT seq, job_id FROM projection_swaps WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    ).fetchall()
