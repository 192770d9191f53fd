"""Listing a key's jobs and pruning finished ones, on PostgreSQL (CONTRACT.md, "Inventory").

A listing reads one range of an index, newest first, and stops at the page's end: its cost does
not grow with the number of jobs the key has. Without a label filter that range is the key's part
of `job_index`; with one, the key's part of `job_labels` for the first label (far fewer rows), the
other labels checked per job against the index row's labels. A status filter is checked per job
on the way. Both tables are filled by `file_created_job` when a job is created (migration 0011).

A prune is one short transaction per batch, and takes no lock an append to another job waits for:
it never takes the position lock (it draws no positions), it locks only the rows of the jobs it
removes (skipping any a writer holds), and every row it deletes belongs to those jobs. Only an
append to a job being pruned (which has finished, so the append is refused anyway) waits for the
batch to commit, with the rest of its commit group; batches are kept to `MAX_BATCH_EVENTS` events
so that wait stays short. Prunes run one at a time (`PRUNE_LOCK`, held until COMMIT): tombstone
numbers then become visible in order, and `pruned_since` never skips one. Replay copes with the
holes a prune leaves in the log (`rebuild._not_pruned`).

Driver errors are not translated here: callers sit inside `postgres.driver_errors`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import orjson

from jobtracker.domain.listing import Cursor, JobQuery
from jobtracker.domain.state import Status
from jobtracker.store.base import JobListing, Pruned, Tombstone
from jobtracker.store.postgres.driver import PoolSide, recorded_at
from jobtracker.store.postgres.plan import Conn, storable
from jobtracker.store.postgres.sql import PRUNE_LOCK
from jobtracker.store.rows import JOB_COLUMNS, state_from_row

#: Events one prune batch deletes at most (but always one job, however big): the batch then
#: commits within a few tens of milliseconds (15-40 ms per 1,000 events on a busy two-core
#: machine), and an append to a job in it waits no longer.
MAX_BATCH_EVENTS = 2_000
#: How long a prune waits for another prune to commit, then for any row lock it meets.
PRUNE_QUEUE_WAIT = "5s"
PRUNE_LOCK_WAIT = "50ms"

_JOB = ", ".join(f"j.{column}" for column in JOB_COLUMNS)
_TERMINAL = [status.value for status in Status if status.is_terminal]


def log_moment(text: str) -> dt.datetime:
    """A log time (`YYYY-MM-DDTHH:MM:SS.ffffffZ`) as the moment it names."""
    return dt.datetime.fromisoformat(text)


def listing_query(
    owner: str, query: JobQuery, after: Cursor | None, limit: int
) -> tuple[str, list[Any]]:
    """The statement listing `owner`'s jobs matching `query`, newest first, and its arguments."""
    args: list[Any] = [owner]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    labels = list(query.labels)
    where = ["d.owner = $1"]
    if labels:  # driven by the first label's rows; the index row gives the labels
        key, value = labels.pop(0)
        source, labels_column = "job_labels d JOIN job_index i ON i.job_id = d.job_id", "i.labels"
        where += [f"d.key = {arg(key)}", f"d.value = {arg(value)}"]
    else:
        source, labels_column = "job_index d", "d.labels"
    if after is not None:
        below = f"{arg(log_moment(after.created_at))}::timestamptz, {arg(after.job_id)}::text"
        where.append(f'(d.created_at, d.job_id COLLATE "C") < ({below})')
    if query.created_after is not None:
        where.append(f"d.created_at > {arg(log_moment(query.created_after))}")
    if query.created_before is not None:
        where.append(f"d.created_at < {arg(log_moment(query.created_before))}")
    if query.statuses:
        where.append(f"j.status = ANY({arg([s.value for s in query.statuses])}::text[])")
    if labels:
        where.append(f"i.labels @> {arg(orjson.dumps(dict(labels)).decode())}::jsonb")
    sql = (
        f"SELECT {_JOB}, {labels_column}::text, d.created_at, e.recorded_at "  # noqa: S608
        f"FROM {source} JOIN jobs j ON j.job_id = d.job_id "
        "JOIN log e ON e.last_position = j.updated_position "
        f"WHERE {' AND '.join(where)} "
        f'ORDER BY d.created_at DESC, d.job_id COLLATE "C" DESC LIMIT {arg(limit)}'
    )
    return sql, args


def listed(row: asyncpg.Record) -> JobListing:
    """One row of `listing_query` as the store answers it."""
    *job, labels, created_at, updated_at = tuple(row)
    pairs = None if labels is None else tuple(sorted(orjson.loads(labels).items()))
    return JobListing(state_from_row(job), pairs, recorded_at(created_at), recorded_at(updated_at))


FIND_TOMBSTONE = "SELECT job_id, owner, finished_at FROM job_tombstones WHERE job_id = $1"
PRUNED_SINCE = "SELECT seq, job_id FROM job_tombstones WHERE seq > $1 ORDER BY seq LIMIT $2"
SWAPS_SINCE = "SELECT seq, job_id FROM projection_swaps WHERE seq > $1 ORDER BY seq LIMIT $2"
# Both numbers become visible in order (one prune at a time; a swap under the position lock), so
# nothing numbered below them can still commit.
FORGET_CURSORS = (
    "SELECT (SELECT coalesce(max(seq), 0) FROM job_tombstones), "
    "(SELECT coalesce(max(seq), 0) FROM projection_swaps)"
)

# Finished jobs whose last event is older than $1 (one created after it cannot be among them).
_DUE = """
SELECT j.job_id, j.owner, j.version, i.created_at, e.recorded_at AS finished_at
FROM job_index i
JOIN jobs j ON j.job_id = i.job_id
JOIN log e ON e.last_position = j.updated_position
WHERE i.created_at < $1 AND e.recorded_at < $1 AND j.status = ANY($2::text[])
"""
COUNT_DUE = f"SELECT count(*), coalesce(sum(version), 0) FROM ({_DUE}) AS due"  # noqa: S608
# The oldest due jobs, locked (a job a writer holds waits for the next batch), cut where the
# batch would pass $4 events; each leaves a tombstone, numbered oldest first.
_CHOOSE = f"""
WITH locked AS MATERIALIZED (
    {_DUE} ORDER BY i.created_at LIMIT $3 FOR UPDATE OF j SKIP LOCKED
), chosen AS MATERIALIZED (
    SELECT * FROM (
        SELECT *, sum(version) OVER (ORDER BY created_at, job_id) AS running FROM locked
    ) AS counted
    WHERE running - version < $4
), stones AS (
    INSERT INTO job_tombstones (job_id, owner, finished_at)
    SELECT job_id, owner, finished_at FROM chosen ORDER BY created_at, job_id
)
SELECT job_id, version FROM chosen
"""  # noqa: S608
# Everything of the jobs $1, in one statement (one snapshot: the labels are read from the index
# rows it deletes). The log's trigger lets the events go because their tombstones are there; the
# ids go with their batches.
_CLEAR = """
WITH labels_gone AS (
    DELETE FROM job_labels AS l
    USING job_index AS i, jsonb_each_text(i.labels) AS label
    WHERE i.job_id = ANY($1::text[]) AND l.owner = i.owner AND l.key = label.key
      AND l.value = label.value AND l.created_at = i.created_at AND l.job_id = i.job_id
), batches_gone AS (
    DELETE FROM log WHERE job_key IN (SELECT job_key FROM log_jobs WHERE job_id = ANY($1::text[]))
    RETURNING uuids, texts
), ids_gone AS (
    DELETE FROM log_ids WHERE event_id IN (
        SELECT log_uuid(e.event_id) FROM batches_gone AS b, log_entry_ids(b.uuids, b.texts) AS e)
), text_ids_gone AS (
    DELETE FROM log_text_ids WHERE event_id IN (
        SELECT e.event_id FROM batches_gone AS b, log_entry_ids(b.uuids, b.texts) AS e)
), marks_gone AS (
    DELETE FROM job_row_bits WHERE job_id = ANY($1::text[])
), errors_gone AS (
    DELETE FROM job_errors WHERE job_id = ANY($1::text[])
), deadlines_gone AS (
    DELETE FROM job_deadlines WHERE job_id = ANY($1::text[])
), index_gone AS (
    DELETE FROM job_index WHERE job_id = ANY($1::text[])
)
DELETE FROM jobs WHERE job_id = ANY($1::text[])
"""
_KEYS_GONE = "DELETE FROM log_jobs WHERE job_id = ANY($1::text[])"
# One prune at a time; then no row lock is waited for long (the simple protocol: one round trip).
_QUEUE = (
    f"SET LOCAL lock_timeout = '{PRUNE_QUEUE_WAIT}'; SELECT pg_advisory_xact_lock({PRUNE_LOCK}); "
    f"SET LOCAL lock_timeout = '{PRUNE_LOCK_WAIT}'"
)


async def prune_in(conn: Conn, finished_before: dt.datetime, limit: int) -> Pruned:
    """Inside the caller's transaction: remove up to `limit` of the oldest jobs finished before
    `finished_before` (fewer if they hold more than `MAX_BATCH_EVENTS` events), each leaving a
    tombstone first (the log's trigger refuses otherwise)."""
    await conn.execute(_QUEUE)
    chosen = await conn.fetch(_CHOOSE, finished_before, _TERMINAL, limit, MAX_BATCH_EVENTS)
    if chosen:
        job_ids = [row["job_id"] for row in chosen]
        await conn.execute(_CLEAR, job_ids)
        # After the log's rows: its trigger finds their tombstones through these keys.
        await conn.execute(_KEYS_GONE, job_ids)
    return Pruned(len(chosen), sum(int(row["version"]) for row in chosen))


async def prune(conn: Conn, finished_before: dt.datetime, limit: int) -> Pruned:
    """`prune_in` a transaction of its own."""
    async with conn.transaction():
        return await prune_in(conn, finished_before, limit)


# PostgreSQL reuses the space of deleted rows only once VACUUM has passed. Autovacuum does it in
# time where it is on (the default); a prune run does it too when it ends, so retention keeps the
# database's size steady even where autovacuum is off or slow to notice. Plain VACUUM takes no
# lock that appends or reads wait on. ANALYZE: the planner's row counts drop with the prune.
_VACUUM = (
    "VACUUM (ANALYZE) log, log_ids, log_text_ids, log_jobs, job_row_bits, job_errors, "
    "job_deadlines, job_index, job_labels, jobs"
)


async def reclaim(conn: Conn) -> None:
    """VACUUM what a prune deletes from, outside any transaction and without a time limit."""
    await conn.execute("SET statement_timeout = 0")
    try:
        await conn.execute(_VACUUM)
    finally:
        await conn.execute("RESET statement_timeout")


class InventorySide(PoolSide):
    """The `Store` methods of inventory for `PostgresStore`, which supplies `_open_pool`."""

    #: Events pruned since the last VACUUM: a prune run's last call (it finds nothing more)
    #: reclaims their space.
    _unvacuumed = 0

    async def list_jobs(
        self, owner: str, query: JobQuery, after: Cursor | None, limit: int
    ) -> list[JobListing]:
        """See `Store.list_jobs`."""
        if not all(storable(text) for pair in query.labels for text in pair):
            return []  # no label PostgreSQL cannot store is on any job
        sql, args = listing_query(owner, query, after, limit)
        rows = await self._on_connection("listing jobs", lambda conn: conn.fetch(sql, *args))
        return [listed(row) for row in rows]

    async def find_tombstone(self, job_id: str) -> Tombstone | None:
        """See `Store.find_tombstone`."""
        if not storable(job_id):
            return None
        row = await self._on_connection(
            "reading a tombstone", lambda conn: conn.fetchrow(FIND_TOMBSTONE, job_id)
        )
        if row is None:
            return None
        return Tombstone(row["job_id"], row["owner"], recorded_at(row["finished_at"]))

    async def prune(self, finished_before: str, limit: int, *, dry_run: bool = False) -> Pruned:
        """See `Store.prune`: one short transaction per batch (see this module's docstring)."""
        cutoff = log_moment(finished_before)
        if not dry_run:
            done = await self._on_connection("pruning", lambda conn: prune(conn, cutoff, limit))
            if done.jobs:
                self._unvacuumed += done.events
            elif self._unvacuumed:
                await self._on_connection("reclaiming pruned space", reclaim)
                self._unvacuumed = 0
            return done
        row = await self._on_connection(
            "counting jobs to prune", lambda conn: conn.fetchrow(COUNT_DUE, cutoff, _TERMINAL)
        )
        return Pruned() if row is None else Pruned(int(row[0]), int(row[1]))

    async def pruned_since(self, after_seq: int, limit: int = 1000) -> list[tuple[int, str]]:
        """See `Store.pruned_since`."""
        rows = await self._on_connection(
            "reading tombstones", lambda conn: conn.fetch(PRUNED_SINCE, after_seq, limit)
        )
        return [(int(seq), job_id) for seq, job_id in rows]

    async def forget_cursors(self) -> tuple[int, int]:
        """See `Store.forget_cursors`."""
        row = await self._on_connection(
            "reading the newest tombstone", lambda conn: conn.fetchrow(FORGET_CURSORS)
        )
        assert row is not None  # a SELECT without FROM returns one row
        return int(row[0]), int(row[1])

    async def swaps_since(self, after_seq: int, limit: int = 1000) -> list[tuple[int, str | None]]:
        """See `Store.swaps_since`."""
        rows = await self._on_connection(
            "reading replay swaps", lambda conn: conn.fetch(SWAPS_SINCE, after_seq, limit)
        )
        return [(int(seq), job_id) for seq, job_id in rows]
