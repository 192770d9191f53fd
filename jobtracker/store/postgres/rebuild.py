# ruff: noqa: S608 -- identifiers are built only from fixed table names, the projection's schema
# (as PostgreSQL names it, quoted by `_ident`) and a checked area name; values are bound.
"""The PostgreSQL side of replay: scan the log in chunks, fill scratch tables, make them live.

A scratch area `x` is three tables beside the live ones, `jobs__x`, `job_row_bits__x` and
`job_errors__x`, created `LIKE` the live tables but without their indexes, so filling them is a
plain COPY (the marks' table keeps its key: a job's marks arrive in parts, ORed into its 64-row
chunks). Making an area live changes the live tables in place, only where they differ (a swap by
renaming would need ACCESS EXCLUSIVE locks, which an appender holding a share lock on one table
while it waits for another would turn into a deadlock). Readers never wait: they see the old rows
until COMMIT, then the new ones.

Locks, and why no append is lost. Appenders lock their jobs' rows, then draw positions under the
position advisory lock, which they hold until COMMIT (`sql.write_group`); every transaction
that changes the log or the projection takes it before committing.
- A full swap locks the three live tables IN EXCLUSIVE MODE (appenders in flight finish, new ones
  wait, readers go on), then takes the position lock: the log is final. It folds what was appended
  since the scan, writes the differences, and commits; waiting appenders then fold onto them.
- A one-job swap takes that job's row lock, then the position lock (the order appenders use).
- A comparison takes the position lock alone: while it holds it, nothing that changes the log or
  the projection can commit, yet readers, and appenders' work up to their commit, go on.
- A prune (store/postgres/inventory.py) draws no positions and takes no position lock: it only
  ever removes whole finished jobs, leaving tombstones, which the swap and the comparison skip
  (`_not_pruned`).
Those transactions lift the session's lock and statement timeouts (`driver.no_time_limits`): a
swap may queue behind appenders, then rightly take long. Appenders that meet its locks time out
and are answered 503 instead (the SDK retries them).
Driver errors are not translated here: callers sit inside `postgres.driver_errors`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import attrs

from jobtracker.domain.errors import InvalidInput
from jobtracker.domain.state import RowError, RowMark, Status
from jobtracker.store.base import JobView
from jobtracker.store.postgres import lean, row_bits
from jobtracker.store.postgres.driver import no_time_limits
from jobtracker.store.postgres.plan import Conn
from jobtracker.store.postgres.sql import POSITION_LOCK
from jobtracker.store.rebuild import Comparison, JobDiff, LogEntry, ProjectionRows, TailFolder
from jobtracker.store.rows import JOB_COLUMNS, state_from_row, state_to_row

PROJECTION_TABLES = ("jobs", "job_row_bits", "job_errors")
#: Scratch tables that keep the live table's key: marks are ORed into their chunks by it.
_KEYED = frozenset({"job_row_bits"})
_AREA_NAME = re.compile(r"[a-z][a-z_]{0,19}")
_JOB_ROW = (*JOB_COLUMNS, "updated_position")
_ERROR_ROW = ("job_id", "row", "email", "error")
#: Events folded per scan while catching up under the lock.
_TAIL_CHUNK = 20_000
#: Marks and errors shown per side for each differing job.
_SHOWN = 5


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check(area: str) -> str:
    if not _AREA_NAME.fullmatch(area):
        raise InvalidInput(f"area: {area!r} is not a scratch area name")
    return area


@attrs.frozen
class Tables:
    """The projection's schema, and the names of its live and scratch tables in it."""

    schema: str

    def live(self, base: str) -> str:
        """A live table, schema-qualified."""
        return f"{_ident(self.schema)}.{_ident(base)}"

    def area(self, base: str, area: str) -> str:
        """A scratch table, schema-qualified."""
        return f"{_ident(self.schema)}.{_ident(f'{base}__{_check(area)}')}"


async def tables(conn: Conn) -> Tables:
    """Where the live projection is: the schema `jobs` resolves to on this connection."""
    schema = await conn.fetchval(
        "SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE c.oid = 'jobs'::regclass"
    )
    return Tables(str(schema))


async def scan_log(
    conn: Conn,
    after_position: int,
    limit: int,
    job_id: str | None = None,
    after_version: int = 0,
    upto: int | None = None,
) -> Sequence[LogEntry]:
    """See `Rebuildable.scan_log`.

    Positions are drawn only under the position lock, held until COMMIT, so any position this
    statement sees has every lower one committed or rolled back already: a prefix is final.
    """
    if job_id is None:
        rows = await conn.fetch(lean.REPLAY_LOG_PAGE, after_position, limit)
        return lean.replay_rows(rows, after_position, limit, by_version=False, upto=upto)
    rows = await conn.fetch(lean.REPLAY_JOB_PAGE, after_version, limit, job_id)
    return lean.replay_rows(rows, after_version, limit, by_version=True, upto=upto)


async def reset_area(conn: Conn, area: str) -> None:
    """Create the area's tables empty, like the live ones (without their indexes)."""
    names = await tables(conn)
    async with conn.transaction():
        for base in PROJECTION_TABLES:
            indexes = "" if base in _KEYED else " EXCLUDING INDEXES"
            await conn.execute(f"DROP TABLE IF EXISTS {names.area(base, area)}")
            await conn.execute(
                f"CREATE TABLE {names.area(base, area)} "
                f"(LIKE {names.live(base)} INCLUDING ALL{indexes})"
            )


async def drop_area(conn: Conn, area: str) -> None:
    """Drop the area's tables."""
    names = await tables(conn)
    scratch = ", ".join(names.area(base, area) for base in PROJECTION_TABLES)
    await conn.execute(f"DROP TABLE IF EXISTS {scratch}")


async def _insert(conn: Conn, names: Tables, area: str, rows: ProjectionRows) -> None:
    table = f"{{}}__{_check(area)}"
    if rows.marks:
        bits: row_bits.Bits = {
            (job_id, kind, chunk): word
            for job_id, marks in rows.marks
            for kind, chunk, word in marks.words()
        }
        await conn.execute(
            f"INSERT INTO {names.area('job_row_bits', area)} AS b "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) "
            "ON CONFLICT (job_id, kind, chunk) DO UPDATE SET bits = b.bits | excluded.bits",
            *row_bits.as_columns(bits),
        )
    if rows.errors:
        await conn.copy_records_to_table(
            table.format("job_errors"), schema_name=names.schema, columns=_ERROR_ROW,
            records=rows.errors,
        )
    if rows.states:
        await conn.copy_records_to_table(
            table.format("jobs"), schema_name=names.schema, columns=_JOB_ROW,
            records=[(*state_to_row(state), position) for state, position in rows.states],
        )


async def write_area(conn: Conn, area: str, rows: ProjectionRows) -> None:
    """Add rows to the area in one transaction, without waiting for its flush to disk.

    A scratch area lost in a crash is simply rebuilt; the swap that makes it live is a commit of
    its own, at the connection's usual durability.
    """
    names = await tables(conn)
    async with conn.transaction():
        await no_time_limits(conn)
        await conn.execute("SET LOCAL synchronous_commit TO OFF")
        await _insert(conn, names, area, rows)


async def _catch_up(
    conn: Conn,
    names: Tables,
    area: str,
    fold_tail: TailFolder,
    after_position: int,
    after_version: int,
    job_id: str | None,
) -> int:
    """Inside the caller's locked transaction: fold every event not yet folded, then drain."""
    while entries := await scan_log(conn, after_position, _TAIL_CHUNK, job_id, after_version):
        await _insert(conn, names, area, fold_tail(entries))
        _, after_version, after_position, *_ = entries[-1]
    await _insert(conn, names, area, fold_tail(()))
    return after_position


#: Each projection table's key: a live row whose key the rebuilt table lacks, or holds with
#: other values, is replaced.
_KEYS = {
    "jobs": ("job_id",),
    "job_row_bits": ("job_id", "kind", "chunk"),
    "job_errors": ("job_id", "row"),
}


async def _make_live(conn: Conn, names: Tables, area: str, job_id: str | None) -> None:
    """Inside the locked transaction: change the live tables, row by row, into the area's.

    Only rows that differ are written, so a rebuild of a sound projection writes nothing. Job rows
    that exist on both sides are UPDATEd, never deleted and inserted again: an appender waiting
    for a job's row lock then reads the new version of that row, not a deleted one. A job pruned
    since the area read its events is not brought back (`_not_pruned`).
    """
    where, args = ("", ()) if job_id is None else (" WHERE job_id = $1", (job_id,))
    for base, key in _KEYS.items():
        live, rebuilt = names.live(base), names.area(base, area)
        changed = f"(SELECT * FROM {rebuilt}{where} EXCEPT SELECT * FROM {live}{where})"
        same_key = " AND ".join(f"l.{column} = d.{column}" for column in key)
        if base == "jobs":
            columns = ", ".join(_JOB_ROW[1:])
            values = ", ".join(f"d.{column}" for column in _JOB_ROW[1:])
            await conn.execute(
                f"UPDATE {live} AS l SET ({columns}) = ({values}) FROM {changed} AS d "
                f"WHERE {same_key}",
                *args,
            )
        await conn.execute(
            f"DELETE FROM {live} AS l USING (SELECT * FROM {live}{where} "
            f"EXCEPT SELECT * FROM {rebuilt}{where}) AS d WHERE {same_key}",
            *args,
        )
        await conn.execute(
            f"INSERT INTO {live} SELECT * FROM {changed} AS d WHERE {_not_pruned(names)}", *args
        )


def _not_pruned(names: Tables) -> str:
    """Rows `d` of jobs without a tombstone: what of a scratch area may go live, or differ.

    A prune deletes from the log, so an area may hold jobs pruned after it read their events;
    those are no difference. The live tables lose a pruned job whole, in the prune's one
    transaction, which the swap's table locks (or a comparison's one statement) see whole or not
    at all; so a live row of a pruned job is still a difference."""
    return (
        f"NOT EXISTS (SELECT 1 FROM {names.live('job_tombstones')} AS t "
        "WHERE t.job_id = d.job_id)"
    )


async def _lock_position(conn: Conn) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", POSITION_LOCK)


async def swap_in(
    conn: Conn,
    area: str,
    fold_tail: TailFolder,
    after_position: int,
    after_version: int = 0,
    job_id: str | None = None,
) -> int:
    """Catch up and make the area live in one transaction, under the locks appends take."""
    names = await tables(conn)
    async with conn.transaction():
        await no_time_limits(conn)  # it waits for appenders in flight, then works under the locks
        if job_id is None:
            # Not the position lock first: appenders waiting for it would hold these tables.
            live = ", ".join(names.live(base) for base in PROJECTION_TABLES)
            await conn.execute(f"LOCK TABLE {live} IN EXCLUSIVE MODE")
        else:
            await conn.execute(
                f"SELECT 1 FROM {names.live('jobs')} WHERE job_id = $1 FOR UPDATE", job_id
            )
        await _lock_position(conn)
        last = await _catch_up(conn, names, area, fold_tail, after_position, after_version, job_id)
        await _make_live(conn, names, area, job_id)
        # What tells every server that the projection changed under it (migration 0012). Its
        # number is drawn under the position lock, held to COMMIT: swaps become visible in order.
        await conn.execute(
            f"INSERT INTO {_ident(names.schema)}.projection_swaps (job_id) VALUES ($1)", job_id
        )
    await drop_area(conn, area)
    return last


async def _differing_jobs(conn: Conn, names: Tables, area: str, job_id: str | None) -> list[str]:
    where = "" if job_id is None else " WHERE job_id = $1"
    parts: list[str] = []
    for base in PROJECTION_TABLES:
        live, rebuilt = names.live(base), names.area(base, area)
        for one, other, kept in ((live, rebuilt, "true"), (rebuilt, live, _not_pruned(names))):
            parts.append(
                f"SELECT job_id FROM (SELECT * FROM {one}{where} "
                f"EXCEPT SELECT * FROM {other}{where}) AS d WHERE {kept}"
            )
    query = " UNION ".join(parts) + " ORDER BY job_id"
    rows = await conn.fetch(query) if job_id is None else await conn.fetch(query, job_id)
    return [row[0] for row in rows]


async def _job_row(conn: Conn, table: str, job_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {', '.join(_JOB_ROW)} FROM {table} WHERE job_id = $1",
                              job_id)
    return None if row is None else dict(zip(_JOB_ROW, row, strict=True))


async def _only_in(
    conn: Conn, columns: str, one: str, other: str, job_id: str
) -> list[tuple[Any, ...]]:
    """Up to `_SHOWN` rows of `columns` of the job that `one` holds and `other` lacks."""
    rows = await conn.fetch(
        f"SELECT {columns} FROM {one} WHERE job_id = $1 "
        f"EXCEPT SELECT {columns} FROM {other} WHERE job_id = $1 ORDER BY 1 LIMIT {_SHOWN}",
        job_id,
    )
    return [tuple(row) for row in rows]


async def _job_diff(conn: Conn, names: Tables, area: str, job_id: str) -> JobDiff:
    # Marks are compared row by row, not chunk by chunk, so the differing ones can be named.
    marks_live = row_bits.EXPAND.format(table=names.live("job_row_bits"))
    marks_new = row_bits.EXPAND.format(table=names.area("job_row_bits", area))
    errors_live, errors_new = names.live("job_errors"), names.area("job_errors", area)
    marks, errors = "row, kind", "row, email, error"
    return JobDiff(
        job_id=job_id,
        live=await _job_row(conn, names.live("jobs"), job_id),
        rebuilt=await _job_row(conn, names.area("jobs", area), job_id),
        marks_only_live=tuple(
            RowMark(*r) for r in await _only_in(conn, marks, marks_live, marks_new, job_id)
        ),
        marks_only_rebuilt=tuple(
            RowMark(*r) for r in await _only_in(conn, marks, marks_new, marks_live, job_id)
        ),
        errors_only_live=tuple(
            RowError(*r) for r in await _only_in(conn, errors, errors_live, errors_new, job_id)
        ),
        errors_only_rebuilt=tuple(
            RowError(*r) for r in await _only_in(conn, errors, errors_new, errors_live, job_id)
        ),
    )


async def compare_area(
    conn: Conn,
    area: str,
    fold_tail: TailFolder,
    after_position: int,
    after_version: int = 0,
    job_id: str | None = None,
    limit: int = 20,
) -> Comparison:
    """Catch up, then diff the area with the live projection while nothing can commit."""
    names = await tables(conn)
    async with conn.transaction():
        await no_time_limits(conn)
        await conn.execute("SET LOCAL synchronous_commit TO OFF")
        await _lock_position(conn)
        last = await _catch_up(conn, names, area, fold_tail, after_position, after_version,
                               job_id)
        differing = await _differing_jobs(conn, names, area, job_id)
        diffs = tuple([await _job_diff(conn, names, area, job) for job in differing[:limit]])
    return Comparison(position=last, differing=len(differing), diffs=diffs)


async def area_view(conn: Conn, area: str, job_id: str, errors_limit: int) -> JobView | None:
    """One job of the area, as GET shows it."""
    names = await tables(conn)
    row = await conn.fetchrow(
        f"SELECT {', '.join(JOB_COLUMNS)} FROM {names.area('jobs', area)} WHERE job_id = $1",
        job_id,
    )
    if row is None:
        return None
    state = state_from_row(tuple(row))
    if state.status is not Status.SUCCESS:
        return JobView(state)
    errors = await conn.fetch(
        f"SELECT row, email, error FROM {names.area('job_errors', area)} "
        "WHERE job_id = $1 ORDER BY row LIMIT $2",
        job_id, errors_limit,
    )
    return JobView(state, tuple(RowError(*e) for e in errors))

