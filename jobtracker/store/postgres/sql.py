"""The PostgreSQL store's SQL: the statements that carry its guarantees, with the reasons."""

from __future__ import annotations

import functools

from jobtracker.store.rows import JOB_COLUMNS

#: Serializes migrations when several processes open a fresh database at once.
MIGRATION_LOCK = 0x6A6F6274_0002

#: The session-wide advisory lock key that serializes position assignment (see `write_group`).
POSITION_LOCK = 0x6A6F6274_0001
#: Serializes prunes (store/postgres/inventory.py), so tombstones become visible in `seq` order.
PRUNE_LOCK = 0x6A6F6274_0003
#: The LISTEN/NOTIFY channel that hints "the log grew"; the payload is the newest position.
APPEND_CHANNEL = "jobtracker_appended"
#: The channel a trigger announces every key change on (migration 0002): caches drop that key.
KEYS_CHANNEL = "jobtracker_keys"

SELECT_JOB_COLUMNS = ", ".join(JOB_COLUMNS)
SELECT_JOB = f"SELECT {SELECT_JOB_COLUMNS} FROM jobs WHERE job_id = $1"  # noqa: S608
# A pruned job's id is never given out again (migration 0007): nothing is inserted for an id
# with a tombstone, and the creator then finds no job row either.
INSERT_JOB = (
    f"INSERT INTO jobs ({SELECT_JOB_COLUMNS}, updated_position) "  # noqa: S608
    f"SELECT {', '.join(f'${n}' for n in range(1, len(JOB_COLUMNS) + 1))}, 0 "
    "WHERE NOT EXISTS (SELECT 1 FROM job_tombstones WHERE job_id = $1) "
    "ON CONFLICT (job_id) DO NOTHING RETURNING job_id"
)
# Takes the position lock the way `write_group`'s statement does; its comment there says why. It
# writes no event for an id with a tombstone: `INSERT_JOB` may have waited for a prune deleting a
# job of that id and then inserted after it committed; this later statement sees the prune's
# tombstone.
# Its one event's id comes packed ($5) exactly when it is a canonical UUID
# (`stored.pack_event_id`), so the form alone says which id table it goes to.
# It also files the job in the inventory (`file_created_job`, migration 0011, which the `events`
# view's insert calls too): this statement writes the store's every `created` event, and a
# trigger on `log` doing it (migration 0010, dropped by 0011) cost every append its WHEN.
INSERT_CREATED = """
WITH position_lock AS MATERIALIZED (SELECT pg_advisory_xact_lock($1) AS held),
allowed AS MATERIALIZED (
    SELECT nextval('log_position') AS position FROM position_lock
    WHERE NOT EXISTS (SELECT 1 FROM job_tombstones WHERE job_id = $3)
), added_key AS (
    INSERT INTO log_jobs (job_id) SELECT $3 FROM allowed
    ON CONFLICT (job_id) DO NOTHING RETURNING job_key
), job_key AS MATERIALIZED (
    SELECT job_key FROM added_key UNION ALL SELECT job_key FROM log_jobs WHERE job_id = $3
), created AS (
    INSERT INTO log (job_key, last_version, last_position, types, uuids, texts, data)
    SELECT job_key.job_key, 1, allowed.position, $4, $5, $6, $7 FROM allowed, job_key
    RETURNING last_position AS position, uuids, texts, recorded_at, data
), ids AS (
    INSERT INTO log_ids (event_id, position)
    SELECT encode(uuids, 'hex')::uuid, position FROM created WHERE uuids IS NOT NULL
), text_ids AS (
    INSERT INTO log_text_ids (event_id, position)
    SELECT texts[1], position FROM created WHERE texts IS NOT NULL
), saved AS (
    UPDATE jobs SET updated_position = created.position FROM created WHERE jobs.job_id = $3
)
SELECT position, pg_notify($2, position::text), file_created_job($3, data::jsonb, recorded_at)
FROM created
"""


#: A group's shape, bits of `write_group`'s `shape`: the statement leaves out what a group does
#: not need, as the server sets up every part of a plan on each execution whether or not rows
#: pass through it (for a one-event append, that set-up costs more than the rows).
#: How the group's batches hold their event ids (`lean.batch`): which id tables it fills, how.
PACKED_IDS = 1  #: a batch of canonical UUIDs, packed: every id goes to `log_ids`
TEXT_IDS = 2  #: a batch kept as text without a canonical UUID: every id to `log_text_ids`
ROUTED_IDS = 4  #: a batch kept as text with a canonical UUID among its ids: each routed by form
ONE_JOB = 8  #: the group writes to one job: its row is locked, checked and updated by itself
MARKS = 16  #: the group sets row marks ($4; without this bit $4 is NULL)
ERRORS = 32  #: the group records row errors ($5; without this bit $5 is NULL)

# Each id table's insert, by how the batches hold their ids. The packed and plain text forms go
# in as they are; only a batch mixing canonical UUIDs with other ids has each id routed by its
# form (`log_uuid`, a regex per id).
_PACKED_INSERT = """
    INSERT INTO log_ids (event_id, position)
    SELECT encode(substring(l.uuids FROM 16 * g + 1 FOR 16), 'hex')::uuid, l.before + g + 1
    FROM new_batches AS l, generate_series(0, length(l.uuids) / 16 - 1) AS g"""
_TEXT_INSERT = """
    INSERT INTO log_text_ids (event_id, position)
    SELECT t.id, l.before + t.n
    FROM new_batches AS l, unnest(l.texts) WITH ORDINALITY AS t(id, n)"""
_ROUTED_INSERTS = _PACKED_INSERT + """
    UNION ALL
    SELECT log_uuid(t.id), l.before + t.n
    FROM new_batches AS l, unnest(l.texts) WITH ORDINALITY AS t(id, n)
    WHERE log_uuid(t.id) IS NOT NULL
), new_text_ids AS (""" + _TEXT_INSERT + """
    WHERE log_uuid(t.id) IS NULL"""  # noqa: S608 -- fixed SQL only


def _id_inserts(shape: int) -> str:
    if shape & ROUTED_IDS:
        return f"new_ids AS ({_ROUTED_INSERTS}\n), "
    parts = []
    if shape & PACKED_IDS:
        parts.append(f"new_ids AS ({_PACKED_INSERT}\n), ")
    if shape & TEXT_IDS:
        parts.append(f"new_text_ids AS ({_TEXT_INSERT}\n), ")
    return "".join(parts)


_MARKS_INSERT = """new_marks AS (
    INSERT INTO job_row_bits AS b (job_id, kind, chunk, bits)
    SELECT m.* FROM position_lock,
        json_to_recordset($4::json) AS m(job_id text, kind text, chunk bigint, bits bigint)
    ON CONFLICT (job_id, kind, chunk) DO UPDATE
    SET bits = CASE WHEN b.bits & excluded.bits = 0 THEN b.bits | excluded.bits ELSE 0 END
), """
_ERRORS_INSERT = """new_errors AS (
    INSERT INTO job_errors (job_id, row, email, error)
    SELECT r.* FROM position_lock,
        json_to_recordset($5::json) AS r(job_id text, row bigint, email text, error text)
), """
# A group of one job locks, checks and updates its row without matching it in arrays.
_LOCK_JOBS = """locked AS MATERIALIZED (
    SELECT job_id, version FROM jobs WHERE job_id = ANY($7::text[]) ORDER BY job_id FOR UPDATE
), unchanged AS MATERIALIZED (
    SELECT count(*) = cardinality($7::text[]) AS ok
    FROM locked JOIN unnest($7::text[], $8::bigint[]) AS x(job_id, version) USING (job_id, version)
)"""
_LOCK_ONE_JOB = """locked AS MATERIALIZED (
    SELECT version FROM jobs WHERE job_id = ($7::text[])[1] FOR UPDATE
), unchanged AS MATERIALIZED (
    SELECT coalesce((SELECT version = ($8::bigint[])[1] FROM locked), false) AS ok
)"""
_JOB_ROWS = "unnest($6::job_write[]) WITH ORDINALITY AS s"
_ONE_JOB_ROW = "(SELECT (($6::job_write[])[1]).*, 1 AS ordinality) AS s"


@functools.cache
def write_group(shape: int) -> str:
    """The append statement for a group of `shape` (bits of `PACKED_IDS`, `TEXT_IDS`,
    `ROUTED_IDS`, `ONE_JOB`, `MARKS`, `ERRORS`)."""
    updated = ", ".join(JOB_COLUMNS[1:])
    values = ", ".join(f"s.{column}" for column in JOB_COLUMNS[1:])
    one_job = shape & ONE_JOB
    # A parameter the statement leaves out is still named once, so the server can type it.
    unused = [f"${n}::json IS NULL" for n, bit in ((4, MARKS), (5, ERRORS)) if not shape & bit]
    # Gap safety. A tailing reader keeps one cursor, the last position it saw, so positions must
    # become visible in increasing order: a transaction that drew position 7 must never commit
    # after one that drew 8, or a reader could see 8, move past 7 and never look back. We make
    # that impossible by drawing positions only while holding a transaction-scoped advisory lock,
    # which PostgreSQL releases after the commit is visible. The lock is taken in the same
    # statement that inserts (`base` draws the group's $9 positions from `log_position` as one
    # range, `nextval` then `setval` past it, from `position_lock`'s row, so only after the lock
    # is held; a one-event group skips the `setval`, which writes WAL and makes the next
    # `nextval` write it too; each request's events are a `log` row of consecutive positions in
    # that range, see migration 0010) to keep the serialized stretch to this statement plus
    # COMMIT; everything before it (reads, the fold) runs in parallel. We chose this over reading
    # below pg_snapshot_xmin because that orders by transaction id, not position, and a tailing
    # reader's cursor is one integer.
    #
    # The plans were folded from job states read before this statement (or remembered from this
    # process's last commit), so it first locks those jobs' rows, in job-id order as `LOCK_JOBS`
    # does, and writes only if every job is still at the version its plan started from ($7, $8:
    # job ids and versions). With the rows locked and unchanged the plan is exactly what folding
    # under the lock makes; otherwise nothing is written and `unchanged` says so. Row locks are
    # always taken before the position lock, never the other way round, so lock waits cannot
    # form a cycle. Sent outside a transaction, the statement is its own transaction: it commits
    # without another round trip, and the position lock is held only while the server inserts
    # and commits, never while a Python process gets round to sending COMMIT.
    #
    # Marks are ORed into their jobs' 64-row chunks (migration 0009, `row_bits`). A mark for a
    # row that has one of that kind already leaves its chunk 0, which the table's CHECK refuses:
    # the whole write fails with an integrity error, as a unique key on one row per mark failed
    # it, and the caller redoes the group with the marks read (`commit.commit_group`). One
    # document holds each chunk of the group once, so no row is upserted twice in the statement.
    #
    # A re-sent event id fails the write on the unique key of `log_ids` or `log_text_ids`, as it
    # failed on `events.event_id` before: ids are unique over the whole log, not per job.
    #
    # Events, marks and row errors travel as one JSON document per table ($3 to $5), not as one
    # array per column: asyncpg checks every element of an array parameter against the collection
    # ABCs, which for a batch of 1000 events cost more Python time than the fold. Job rows ($6)
    # are one per request, and reading their 16 fields out of JSON cost the server about 2.5 us a
    # job, a sixth of all it spends on a one-event request: they come as an array of the row type
    # `job_write` (migration 0003), which asyncpg sends in binary and the server reads without
    # parsing. Only our own column names and fixed SQL are interpolated below.
    #
    # The server sets up every node of the plan on each execution, and for a one-event request
    # that setup costs more than the rows: so the caller sends what it already knows (the group's
    # event count $9; each job row's newest event, counted from the range's start, $10) rather
    # than the statement working it out from the events, and what a group does not need is left
    # out of its statement (`shape`): id tables it does not touch, marks, errors, and the arrays
    # that match many jobs' rows. Set-up dominates: a one-event append's statement went from
    # 938k server instructions to 823k this way (benchmark `pg-append-instructions`).
    return f"""
WITH {_LOCK_ONE_JOB if one_job else _LOCK_JOBS}, position_lock AS MATERIALIZED (
    SELECT pg_advisory_xact_lock($1) AS held FROM unchanged WHERE ok
), base AS MATERIALIZED (
    SELECT CASE WHEN $9 = 1 THEN nextval('log_position') - 1
        ELSE setval('log_position', nextval('log_position') + $9 - 1) - $9 END AS p
    FROM position_lock
), new_batches AS (
    INSERT INTO log (job_key, last_version, last_position, types, uuids, texts, data)
    SELECT (SELECT k.job_key FROM log_jobs AS k WHERE k.job_id = b.job_id), b.last_version,
        base.p + b.upto, decode(b.types, 'hex'), decode(b.uuids, 'hex'), b.texts, b.data
    FROM base, json_to_recordset($3::json) AS b(
        job_id text, last_version bigint, upto bigint, types text, uuids text, texts text[],
        data text
    )
    RETURNING uuids, texts, last_position - length(types) AS before
), {_id_inserts(shape)}{_MARKS_INSERT if shape & MARKS else ""}{
    _ERRORS_INSERT if shape & ERRORS else ""}saved AS (
    UPDATE jobs
    SET ({updated}, updated_position) = ({values}, base.p + ($10::bigint[])[s.ordinality])
    FROM base, {_ONE_JOB_ROW if one_job else _JOB_ROWS}
    WHERE jobs.job_id = s.job_id
)
SELECT (SELECT ok FROM unchanged) AS unchanged, head,
    CASE WHEN head IS NOT NULL THEN pg_notify($2, head::text) END AS notified
FROM (SELECT (SELECT p FROM base) + $9 AS head) AS h{
    " WHERE " + " AND ".join(unused) if unused else ""}
"""  # noqa: S608


def _lock_and_read_sql() -> str:
    states = ", ".join(JOB_COLUMNS)
    # One round trip for everything planning needs. The FOR UPDATE rows come back in their newest
    # version (after waiting for any writer holding them, locked in job-id order so two groups
    # never deadlock), but in READ COMMITTED the rest of the statement reads the snapshot taken
    # when it started. `seen` is that snapshot's version of each job: when it equals the locked
    # version, no writer touched those jobs in between, and the events and row marks read here
    # are current (every write of marks bumps its job's version). When they differ, the caller
    # reads again in a new statement, which now sees everything committed before our locks.
    return f"""
WITH locked AS MATERIALIZED (
    SELECT {states} FROM jobs WHERE job_id = ANY($1::text[]) ORDER BY job_id FOR UPDATE
), seen AS MATERIALIZED (
    SELECT job_id, version FROM jobs WHERE job_id = ANY($1::text[])
)
SELECT
    (SELECT json_agg(json_build_array({states})) FROM locked) AS states,
    (SELECT json_object_agg(job_id, version) FROM seen) AS seen,
    known.*, marks.*
FROM (
    SELECT array_agg(f.event_id) AS known_ids, array_agg(k.job_id) AS known_jobs,
           array_agg(CASE WHEN b.odd_types IS NULL THEN get_byte(b.types, b.i - 1)::text
                          ELSE split_part(b.odd_types, E'\\n', b.i) END) AS known_types,
           array_agg(split_part(b.data, E'\\n', b.i)) AS known_data
    FROM (
        -- An id lives in one table by its form: a canonical UUID only in `log_ids`.
        SELECT id AS event_id, CASE WHEN u.key IS NOT NULL
            THEN (SELECT position FROM log_ids WHERE event_id = u.key)
            ELSE (SELECT position FROM log_text_ids WHERE event_id = id) END AS position
        FROM unnest($2::text[]) AS id, LATERAL (SELECT log_uuid(id) AS key) AS u
    ) AS f
    CROSS JOIN LATERAL (
        SELECT *, (f.position - last_position + length(types))::int AS i FROM log
        WHERE last_position >= f.position ORDER BY last_position LIMIT 1
    ) AS b
    JOIN log_jobs AS k ON k.job_key = b.job_key
) AS known, (
    SELECT array_agg(q.job_id) AS mark_jobs, array_agg(q.row) AS mark_rows,
           array_agg(b.kind) AS mark_kinds
    FROM unnest($3::text[], $4::bigint[]) AS q(job_id, row)
    JOIN job_row_bits AS b ON b.job_id = q.job_id AND b.chunk = q.row >> 6
    WHERE b.bits & ((1::bigint) << (q.row & 63)::int) <> 0
) AS marks
"""  # noqa: S608


LOCK_AND_READ = _lock_and_read_sql()
#: The fast path's read: the jobs' rows, locked in job-id order (so two groups never deadlock).
LOCK_JOBS = (
    f"SELECT {SELECT_JOB_COLUMNS} FROM jobs WHERE job_id = ANY($1::text[]) "  # noqa: S608
    "ORDER BY job_id FOR UPDATE"
)
#: The jobs' rows without locking them (`write_group` checks their versions under the row locks).
READ_JOBS = f"SELECT {SELECT_JOB_COLUMNS} FROM jobs WHERE job_id = ANY($1::text[])"  # noqa: S608
